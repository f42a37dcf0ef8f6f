"""One output-folder mechanism for every command that writes a folder.

* Only pcrm's own folders are touched: an output holds a record of the command that wrote it (in its `INCOMPLETE`
  marker while a run writes, then in `pcrm_config.json`: command and the settings that cannot change on resume).
  An empty or absent folder is always fine; a non-empty one is refused unless it is the same command's and
  `--overwrite` or `--resume` is given, and `--resume` also needs the same settings (the changed ones are named).
* `--overwrite` never costs the previous output before the new run has succeeded: the run writes into a
  sibling folder `.NAME.pcrm-new`, and only `commit()` swaps it in (the old one goes to `.NAME.pcrm-old`,
  then is removed). A failed or interrupted `--overwrite` run leaves the previous output as it was.
* `--resume` of a finished output works on a copy (`.NAME.pcrm-new`, swapped in on success), so a failed resume
  leaves the finished output byte for byte; an unfinished one is resumed in place.
* An advisory lock (`fcntl.flock` on the sibling file `.NAME.pcrm-lock`, holding the pid, removed by the holder at
  the end): a second run into the same output refuses with one line naming the holder. The lock and the marker
  are opened without following symbolic links (`O_NOFOLLOW`, the marker `O_EXCL`): a planted link is refused.
* While a run writes, its folder holds the marker `INCOMPLETE`; `commit()` writes `pcrm_config.json`
  last (fsync'ed, mode 0644) and only then removes the marker.
* `--resume` continues from the newest *complete* checkpoint (`trainer_state.json` readable, weights and,
  unless only the model was saved, the optimizer present); checkpoints cut short (kill -9 mid-save) are
  skipped, named on stdout, and removed before training writes new ones.
* SIGTERM is turned into KeyboardInterrupt while a run holds its folder, so Ctrl-C and SIGTERM leave the same
  thing: a folder with the marker and its complete checkpoints, which both `--resume` and `--overwrite` accept.
* Commands whose stages are cached in their folder (reproduce, overoptimization: `rerun="continue"`) continue an
  existing folder of their own in place, and refuse any other.

Nothing is written before `open()`; `plan()` (run first) only reads, so every check fails before any file changes.
"""

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
import signal
from pathlib import Path

from pcrm.errors import PcrmError
from pcrm.preflight import (  # noqa: F401 (these checks moved there; importable from here too)
    check_backbone,
    check_max_length,
    check_model_files,
    check_numbers,
    check_scheduler,
    model_length_limit,
)

MARKER = "INCOMPLETE"
FINAL = "pcrm_config.json"
RECORD = "output"  # the key of the record in pcrm_config.json
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
)


# -- checkpoints ---------------------------------------------------------------------------------------


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


# -- the record of the command that wrote a folder -------------------------------------------------------


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


def _option(key: str) -> str:
    return "--" + key.replace("_", "-")


# -- the output folder ---------------------------------------------------------------------------------


def _is_empty(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def _is_finished(path: Path) -> bool:
    return (path / FINAL).is_file() and not (path / MARKER).exists()


def _writable_ancestor(path: Path) -> Path:
    for parent in [path, *path.parents]:
        if parent.exists():
            return parent
    return Path("/")


def _remove(path: Path) -> None:
    """Remove a folder pcrm made (a symbolic link in its place: the link only, never what it points to)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _create_exclusive(path: Path, text: str) -> None:
    """Write a new file at `path`, replacing a file there but never following a link planted there."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a link: the link itself
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _take_lock(lock_path: Path, output: Path):
    """The open, exclusively flock'ed lock file (holding our pid); refused with one line when held or a link."""
    import fcntl

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    while True:  # the lock file is removed by its last holder: lock the file that is at the path now
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise PcrmError(
                    f"--output {output}: its lock file {lock_path} is a symbolic link, not pcrm's "
                    "(remove it, then run again)"
                ) from None
            raise
        lock = os.fdopen(fd, "r+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise PcrmError(_busy_message(lock_path, output)) from None
        try:
            if os.stat(lock_path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        lock.close()
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def _release_lock(lock, lock_path: Path) -> None:
    with contextlib.suppress(OSError):
        lock_path.unlink()  # while still holding it (see _take_lock)
    lock.close()  # releases the flock


def _busy_message(lock_path: Path, output: Path) -> str:
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd) as f:
            pid = f.read().split()[0]
    except (OSError, IndexError):
        pid = "unknown"
    return f"--output {output} is in use by another pcrm run (pid {pid}); wait for it or choose another --output"


def _lock_path(path: Path) -> Path:
    return path.parent / f".{path.name}.pcrm-lock"


@contextlib.contextmanager
def holding(path: str | Path):
    """Hold the lock of an existing output while adding files to it (a report, a section); no marker, no swap."""
    path = Path(path)
    lock = _take_lock(_lock_path(path), path)
    try:
        yield path
    finally:
        _release_lock(lock, _lock_path(path))


class OutputFolder:
    """The output directory of one run of `command`; see the module docstring.

    `settings`: what must not change on `--resume` (see `settings_of`; None: not checked). `plan()` checks (reads
    only) and decides where the run writes (`work`); `open()` takes the lock and writes the marker; `commit(summary)`
    writes pcrm_config.json and swaps; `close()` (or the context manager's exit) releases the lock and cleans up a
    work folder that holds nothing worth resuming.
    """

    def __init__(
        self,
        path: str | Path,
        command: str,
        settings: dict | None = None,
        overwrite: bool = False,
        resume: bool = False,
        checkpoint_dir: str | None = "checkpoints",
        resumable=None,
        rerun: str = "refuse",
    ):
        self.path = Path(path)
        self.command, self.settings = command, settings
        self.overwrite, self.resume = overwrite, resume
        self.checkpoint_dir = checkpoint_dir
        self.resumable = (
            resumable  # optional callable(work: Path) -> bool: runs whose checkpoints are not transformers'
        )
        self.rerun = rerun  # "continue": an existing output of this command is continued in place (cached stages)
        parent = self.path.parent
        self.new = parent / f".{self.path.name}.pcrm-new"
        self.old = parent / f".{self.path.name}.pcrm-old"
        self.lock_path = _lock_path(self.path)
        self.work: Path | None = None
        self.checkpoint: Path | None = None
        self.resume_from: Path | None = None  # --resume: the folder whose checkpoints are resumed
        self.skipped: list[Path] = []
        self._copy = False  # --resume of a finished output: work on a copy
        self._lock = None
        self._created = self._existed = False
        self._committed = False
        self._old_sigterm = None

    # reads only
    def plan(self) -> Path:
        if self.path.exists() and not self.path.is_dir():
            raise PcrmError(f"--output {self.path}: exists and is not a directory")
        if self.path.is_dir() and not os.access(self.path, os.W_OK | os.X_OK):
            raise PcrmError(f"--output {self.path}: not writable")
        ancestor = _writable_ancestor(self.path.parent)
        if not ancestor.is_dir():
            raise PcrmError(f"--output {self.path}: {ancestor} is not a directory")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise PcrmError(f"--output {self.path}: {ancestor} is not writable")
        if self._lock is None:
            self._check_lock()
        if self.resume and self.overwrite:
            raise PcrmError("--resume and --overwrite exclude each other")
        self._copy = False
        if self.resume:
            self.work = self._plan_resume()
        elif _is_empty(self.path):
            self.work = self.path
        else:
            self._check_owner(self.path, "--overwrite" if self.overwrite else None)
            if not (self.overwrite or self.rerun == "continue"):
                raise PcrmError(
                    f"--output {self.path} exists and is not empty (pass --overwrite to replace it, or --resume)"
                )
            self.work = self.new if self.overwrite else self.path
        return self.work

    def _plan_resume(self) -> Path:
        # an interrupted --overwrite (or resume of a finished output) continues in its sibling folder
        if self.new.is_dir() and not self.new.is_symlink() and read_record(self.new) and self._resumable(self.new):
            self._check_owner(self.new, "--resume")
            self.resume_from = self.new
            return self.new
        if not _is_empty(self.path):
            self._check_owner(self.path, "--resume")
        if not (self.path.is_dir() and self._resumable(self.path)):
            where = self.path / self.checkpoint_dir if self.checkpoint_dir else self.path
            cut = f" ({len(self.skipped)} cut short)" if self.skipped else ""
            raise PcrmError(f"--resume: {where}: no checkpoint to resume from{cut}")
        self._copy, self.resume_from = _is_finished(self.path), self.path
        return self.new if self._copy else self.path

    def _check_owner(self, folder: Path, flag: str | None) -> None:
        """`folder` written by this command (and, for --resume, with the same settings); else one line."""
        record = read_record(folder)
        if record is None or record["command"] != self.command:
            who = f"pcrm {record['command']}" if record else "no pcrm command"
            accepts = f"{flag} accepts only an output of pcrm {self.command}; " if flag else ""
            raise PcrmError(
                f"--output {self.path} is not an output of pcrm {self.command} (written by {who}): "
                f"{accepts}choose another --output"
            )
        saved = record.get("settings")
        if flag == "--resume" and self.settings is not None and isinstance(saved, dict):
            changed = [k for k in sorted(set(saved) | set(self.settings)) if saved.get(k) != self.settings.get(k)]
            if changed:
                what = ", ".join(f"{_option(k)} {saved.get(k)!r} (now {self.settings.get(k)!r})" for k in changed)
                raise PcrmError(
                    f"--resume: {self.path} was written with {what}; these cannot change on resume "
                    "(use the same options, --overwrite or another --output)"
                )

    def _resumable(self, work: Path) -> bool:
        if self.resumable is not None:
            return work.is_dir() and self.resumable(work)
        self.checkpoint, self.skipped = last_complete_checkpoint(work / self.checkpoint_dir)
        return self.checkpoint is not None

    def _check_lock(self) -> None:
        import fcntl

        if self.lock_path.is_symlink():
            raise PcrmError(
                f"--output {self.path}: its lock file {self.lock_path} is a symbolic link, not pcrm's "
                "(remove it, then run again)"
            )
        if not self.lock_path.exists():
            return
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_NOFOLLOW)
        except PermissionError:
            raise PcrmError(f"--output {self.path}: cannot read its lock file {self.lock_path}") from None
        except FileNotFoundError:
            return
        with os.fdopen(fd, "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PcrmError(_busy_message(self.lock_path, self.path)) from None

    # writes
    def open(self) -> "OutputFolder":
        if self.work is None:
            self.plan()
        self._lock = _take_lock(self.lock_path, self.path)
        self.plan()  # again, under the lock: another run may have finished meanwhile
        self._recover_swap()
        if self.work == self.new and (self._copy or not self.resume) and (self.new.exists() or self.new.is_symlink()):
            _remove(self.new)  # a stale --overwrite run: replaced
        self._existed = self.work.exists()
        self._created = _is_empty(self.work) or self._copy
        if self._copy:  # --resume of a finished output: on a copy, so that a failure leaves it as it was
            shutil.copytree(self.path, self.new, symlinks=True)
            if self.checkpoint is not None:
                self.checkpoint = self.new / self.checkpoint.relative_to(self.path)
            self.skipped = [self.new / p.relative_to(self.path) for p in self.skipped]
        self.work.mkdir(parents=True, exist_ok=True)
        marker = {
            **make_record(self.command, self.settings),
            "pid": os.getpid(),
            "note": f"complete when {FINAL} exists and this file does not",
        }
        _create_exclusive(self.work / MARKER, json.dumps(marker, indent=2) + "\n")
        (self.work / FINAL).unlink(missing_ok=True)
        for path in self.skipped:
            print(f"--resume: skipping incomplete checkpoint {path}")
            shutil.rmtree(path, ignore_errors=True)
        if self.checkpoint is not None and self.resume:
            print(f"--resume: resuming from {self.checkpoint}", flush=True)
        self._install_sigterm()
        return self

    def _recover_swap(self) -> None:
        """A crash between the two renames of a swap leaves no output but `.pcrm-old`: put the right one back."""
        if self.path.exists() or not self.old.exists():
            if self.old.exists() or self.old.is_symlink():
                with contextlib.suppress(OSError):
                    _remove(self.old)
            return
        if (self.new / FINAL).exists() and not (self.new / MARKER).exists():
            os.rename(self.new, self.path)
            shutil.rmtree(self.old, ignore_errors=True)
        else:
            os.rename(self.old, self.path)

    def _install_sigterm(self) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return

        def interrupt(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")

        self._old_sigterm = signal.signal(signal.SIGTERM, interrupt)

    def commit(self, summary: dict) -> Path:
        """Write pcrm_config.json (last, fsync'ed, 0644; with the record), drop the marker, swap the new output in."""
        from pcrm.io import write_json

        write_json(self.work / FINAL, {**summary, RECORD: make_record(self.command, self.settings)}, fsync=True)
        (self.work / MARKER).unlink(missing_ok=True)
        _fsync_dir(self.work)
        if self.work != self.path:
            if self.old.exists() or self.old.is_symlink():
                _remove(self.old)
            if self.path.exists():
                os.rename(self.path, self.old)
            os.rename(self.work, self.path)
            _fsync_dir(self.path.parent)
            shutil.rmtree(self.old, ignore_errors=True)
        self._committed = True
        return self.path

    def close(self, failed: bool = False) -> None:
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None
        if failed and not self._committed and self.work is not None and self._lock is not None:
            if self._copy or (self._created and not self._worth_keeping()):
                shutil.rmtree(self.work, ignore_errors=True)
                if self._existed and not self._copy:
                    self.work.mkdir(exist_ok=True)
        if self._lock is not None:
            _release_lock(self._lock, self.lock_path)
            self._lock = None

    def _worth_keeping(self) -> bool:
        try:
            if self.resumable is not None:
                return self.resumable(self.work)
            return last_complete_checkpoint(self.work / self.checkpoint_dir)[0] is not None
        except OSError:
            return False

    def __enter__(self):
        return self.open()

    def __exit__(self, kind, value, traceback):
        self.close(failed=kind is not None)
        return False


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# What torch's and safetensors' errors say when the disk is full (they are RuntimeErrors, not OSError ENOSPC).
_ENOSPC_TEXT = (
    "No space left on device",
    "os error 28",
    "code: 28",
    "StorageFull",
    "file write failed",
    "unexpected pos",
)


def is_enospc(err: BaseException | None) -> bool:
    """A full disk: OSError ENOSPC, or a library's write error saying so, anywhere in the chain of causes."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        if not isinstance(err, OSError) and any(text in str(err) for text in _ENOSPC_TEXT):
            return True
        err = err.__cause__ or err.__context__
    return False
