"""`OutputFolder`: the output directory of one run, planned (reads only), held, committed; see `pcrm.outputs`."""

import contextlib
import json
import os
import shutil
import signal
import threading
from pathlib import Path

from pcrm.errors import PcrmError
from pcrm.io import write_json
from pcrm.outputs.checkpoints import last_complete_checkpoint
from pcrm.outputs.lock import check_free, lock_path, release_lock, take_lock
from pcrm.outputs.record import FINAL, MARKER, RECORD, changed_settings, make_record, read_record


class OutputFolder:
    """The output directory of one run of `command`; see `pcrm.outputs`.

    `settings`: what must not change on `--resume` (see `settings_of`; None: not checked). `plan()` checks (reads
    only) and decides where the run writes (`work`); `open()` takes the lock and writes the marker; `commit(summary)`
    writes pcrm_config.json and swaps; `close()` (or the context manager's exit) releases the lock and cleans up a
    work folder that holds nothing worth resuming. `resumable(work) -> bool` replaces the transformers checkpoint
    check for runs that save their own; `rerun="continue"` continues an existing output of this command in place.
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
        self.checkpoint_dir, self.resumable, self.rerun = checkpoint_dir, resumable, rerun
        self.new = self.path.parent / f".{self.path.name}.pcrm-new"
        self.old = self.path.parent / f".{self.path.name}.pcrm-old"
        self.lock_path = lock_path(self.path)
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
        self._check_writable()
        if self._lock is None:
            check_free(self.path)
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

    def _check_writable(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise PcrmError(f"--output {self.path}: exists and is not a directory")
        if self.path.is_dir() and not os.access(self.path, os.W_OK | os.X_OK):
            raise PcrmError(f"--output {self.path}: not writable")
        ancestor = _existing_ancestor(self.path.parent)
        if not ancestor.is_dir():
            raise PcrmError(f"--output {self.path}: {ancestor} is not a directory")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise PcrmError(f"--output {self.path}: {ancestor} is not writable")

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
            if what := changed_settings(saved, self.settings):
                raise PcrmError(
                    f"--resume: {self.path} was written with {what}; these cannot change on resume "
                    "(use the same options, --overwrite or another --output)"
                )

    def _resumable(self, work: Path) -> bool:
        if self.resumable is not None:
            return work.is_dir() and self.resumable(work)
        self.checkpoint, self.skipped = last_complete_checkpoint(work / self.checkpoint_dir)
        return self.checkpoint is not None

    # writes
    def open(self) -> "OutputFolder":
        if self.work is None:
            self.plan()
        self._lock = take_lock(self.path)
        try:
            return self._open_locked()
        except BaseException:  # __exit__ does not run when __enter__ raises: clean up and free the lock here
            self.close(failed=True)
            raise

    def _open_locked(self) -> "OutputFolder":
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
        if threading.current_thread() is not threading.main_thread():
            return

        def interrupt(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")

        self._old_sigterm = signal.signal(signal.SIGTERM, interrupt)

    def commit(self, summary: dict) -> Path:
        """Write pcrm_config.json (last, fsync'ed, 0644; with the record), drop the marker, swap the new output in."""
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
            release_lock(self._lock)
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


def _is_empty(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def _is_finished(path: Path) -> bool:
    return (path / FINAL).is_file() and not (path / MARKER).exists()


def _existing_ancestor(path: Path) -> Path:
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


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
