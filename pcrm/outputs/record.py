"""The record of the pcrm command that wrote a folder: its command and the settings that cannot change on resume.

It is kept in the folder's `INCOMPLETE` marker while a run writes, then in `pcrm_config.json` under `output`.
"""

import dataclasses
import hashlib
import json
from pathlib import Path

MARKER = "INCOMPLETE"
FINAL = "pcrm_config.json"
RECORD = "output"  # the key of the record in pcrm_config.json


def settings_of(config, free=()) -> dict:
    """The options of `config` (nested option dataclasses flattened, as on the command line) except `free` ones."""
    flat = {}
    for key, value in dataclasses.asdict(config).items():
        flat.update(value if isinstance(value, dict) else {key: value})
    return {k: v for k, v in json.loads(json.dumps(flat, default=str)).items() if k not in free}


def make_record(command: str, settings: dict | None) -> dict:
    text = json.dumps(settings, sort_keys=True, default=str)
    return {"command": command, "settings": settings, "fingerprint": hashlib.sha256(text.encode()).hexdigest()[:16]}


def read_record(folder: Path) -> dict | None:
    """The record of the pcrm command that wrote `folder` (its marker while a run writes, else pcrm_config.json)."""
    for name, key in ((MARKER, None), (FINAL, RECORD)):
        path = folder / name
        if path.is_symlink() or not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        record = (data.get(key) if key else data) if isinstance(data, dict) else None
        if isinstance(record, dict) and isinstance(record.get("command"), str):
            return record
    return None


def changed_settings(saved: dict, now: dict) -> str:
    """The settings that differ, as options: `--method 'bt' (now 'length'), ...` (empty when none)."""
    changed = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    return ", ".join(f"--{k.replace('_', '-')} {saved.get(k)!r} (now {now.get(k)!r})" for k in changed)
