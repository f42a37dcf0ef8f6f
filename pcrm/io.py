"""Small file helpers: atomic writes so that nothing is ever half-written."""

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes, fsync: bool = False) -> None:
    """Write `data` to a temporary file beside `path`, then rename it into place (`fsync`: flushed to disk first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary, group-readable files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str, fsync: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def jsonl_lines(text: str) -> list[str]:
    """The non-blank lines of JSONL `text`, split on newlines only: `str.splitlines` also splits at U+2028, U+0085
    and other separators inside a JSON string, which `json.dumps(ensure_ascii=False)` writes raw (a sampled reply may
    hold one)."""
    return [line for line in text.split("\n") if line.strip()]


def write_json(path: str | Path, obj: Any, fsync: bool = False) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n", fsync=fsync)


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


_CACHE_STATE: dict = {}


def _warn(message: str) -> None:
    import sys

    print(f"pcrm: warning: {message}", file=sys.stderr, flush=True)


def usable_cache_dir() -> Path | None:
    """`cache_dir()` if it can be written (checked once per process and root), else None with a warning: no cache."""
    root = cache_dir()
    if str(root) not in _CACHE_STATE:
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=root, prefix=".probe.")
            os.close(fd)
            os.unlink(probe)
            _CACHE_STATE[str(root)] = True
        except OSError as err:
            _warn(f"cache {root} is not usable ({err.strerror or err}); running without a cache")
            _CACHE_STATE[str(root)] = False
    return root if _CACHE_STATE[str(root)] else None


def cache_path(kind: str, key: Any, suffix: str) -> Path | None:
    """`usable_cache_dir()/kind/<sha256 of key>.suffix` (the key includes pcrm's version), or None without a cache."""
    import hashlib

    from pcrm import __version__

    root = usable_cache_dir()
    if root is None:
        return None
    digest = hashlib.sha256(
        json.dumps({"pcrm": __version__, "key": key}, sort_keys=True, default=str).encode()
    ).hexdigest()[:24]
    return root / kind / f"{digest}{suffix}"


def read_cached_npz(path: Path | None, names: tuple[str, ...], check=None) -> dict | None:
    """The arrays `names` of a cache file, or None (missing, unreadable or failing `check(arrays)`: warned, redone)."""
    import numpy as np

    if path is None or not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as cached:
            arrays = {name: np.array(cached[name]) for name in names}
        if check is not None and not check(arrays):
            raise ValueError("unexpected shape or values")
        return arrays
    except Exception as err:  # a corrupt cache is never fatal
        first_line = str(err).splitlines()[0] if str(err) else ""
        _warn(f"ignoring the corrupt cache file {path} ({type(err).__name__}: {first_line}); recomputing")
        return None


def write_cache(write, path: Path | None, *args) -> None:
    """`write(path, *args)`; a warning instead of an error when the cache cannot be written (disk full, permissions)."""
    if path is None:
        return
    try:
        write(path, *args)
    except OSError as err:
        _warn(f"cannot write the cache file {path} ({err.strerror or err}); continuing without it")


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
