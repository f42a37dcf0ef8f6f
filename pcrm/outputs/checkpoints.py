"""Which `checkpoint-N` folders of a run are complete, so that `--resume` continues from the newest one."""

import json
import re
from pathlib import Path

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
)


def checkpoint_is_complete(folder: Path) -> bool:
    """trainer_state.json (written last by transformers) parses, and weights and the optimizer are present."""
    state = folder / "trainer_state.json"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not any((folder / w).is_file() and (folder / w).stat().st_size > 0 for w in WEIGHTS):
        return False
    optimizer = folder / "optimizer.pt"
    return optimizer.is_file() and optimizer.stat().st_size > 0


def checkpoints(folder: Path) -> list[Path]:
    """`checkpoint-N` folders of `folder`, newest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def last_complete_checkpoint(folder: Path) -> tuple[Path | None, list[Path]]:
    """(newest complete checkpoint or None, the incomplete ones newer than it)."""
    skipped = []
    for path in checkpoints(folder):
        if checkpoint_is_complete(path):
            return path, skipped
        skipped.append(path)
    return None, skipped
