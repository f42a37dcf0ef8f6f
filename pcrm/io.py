"""Small file helpers: atomic writes so that nothing is ever half-written."""

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def cache_dir() -> Path:
    """Root of pcrm's on-disk cache (`$PCRM_CACHE`, default `~/.cache/pcrm`)."""
    root = os.environ.get("PCRM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "pcrm")
    return Path(root)


def write_npz(path: str | Path, arrays: dict) -> None:
    """`numpy.savez` of `arrays`, written atomically."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def slug(text: str) -> str:
    """`text` as a file name: characters other than letters, digits, '-', '_' and '.' become '_'."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip(".") or "_"


def unique_labels(names: list[str]) -> list[str]:
    """Short file-safe labels: the last path component, or more of the path where that is ambiguous."""
    parts = [[slug(p) for p in Path(n).parts if p not in ("/", ".")] or [slug(n)] for n in names]
    for depth in range(1, max(len(p) for p in parts) + 1):
        labels = ["-".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{label}-{i}" for i, label in enumerate(labels)]


def versions() -> dict:
    """Versions of pcrm and the libraries a run depends on (recorded in every output's pcrm_config.json)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from pcrm import __version__

    found = {"pcrm": __version__, "python": platform.python_version()}
    for package in ("torch", "transformers", "trl", "accelerate", "datasets", "peft", "sentence-transformers"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found
