"""The advisory lock of an output: the sibling file `.NAME.pcrm-lock`, held by one pcrm run at a time.

`filelock.FileLock` (flock, the file opened without following a symbolic link) takes it; the holder writes its pid into
it, so that a refused run can name the holder, and removes the file at the end while it still holds it (a run that had
opened the removed file meanwhile retries on a new one). `check_free`, the probe run before anything is written, is
hand-written: filelock cannot look at a lock without creating its file, so it takes a shared flock on an existing one.
"""

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path

from filelock import FileLock, Timeout

from pcrm.errors import PcrmError

# Seconds a run waits for a held lock before refusing: long enough to step over a holder removing its file just now.
WAIT = 0.2


def lock_path(output: Path) -> Path:
    return output.parent / f".{output.name}.pcrm-lock"


def take_lock(output: Path) -> FileLock:
    """The held lock of `output`, our pid in it; refused with one line when another run holds it or it is a link."""
    path = lock_path(output)
    lock = FileLock(path, timeout=WAIT, mode=0o644, thread_local=False, fallback_to_soft=False, on_acquired=_write_pid)
    try:
        lock.acquire()
    except Timeout:
        raise PcrmError(_busy_message(path, output)) from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise PcrmError(_link_message(path, output)) from None
        raise
    return lock


def release_lock(lock: FileLock) -> None:
    with contextlib.suppress(OSError):
        os.unlink(lock.lock_file)  # while still holding it, so that nobody holds the removed file
    lock.release()


def check_free(output: Path) -> None:
    """Refuse with one line when another run holds the lock of `output` or its lock file is a link; writes nothing."""
    path = lock_path(output)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO planted there must not block
    except FileNotFoundError:
        return
    except PermissionError:
        raise PcrmError(f"--output {output}: cannot read its lock file {path}") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise PcrmError(_link_message(path, output)) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PcrmError(f"--output {output}: its lock file {path} is not a regular file (remove it, then run again)")
    with os.fdopen(fd, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared: two runs checking at once do not refuse each other
        except BlockingIOError:
            raise PcrmError(_busy_message(path, output)) from None


@contextlib.contextmanager
def holding(path: str | Path):
    """Hold the lock of an existing output while adding files to it (a report, a section); no marker, no swap."""
    path = Path(path)
    lock = take_lock(path)
    try:
        yield path
    finally:
        release_lock(lock)


def _write_pid(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _busy_message(path: Path, output: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd) as f:
            pid = f.read().split()[0]
    except (OSError, IndexError):
        pid = "unknown"
    return f"--output {output} is in use by another pcrm run (pid {pid}); wait for it or choose another --output"


def _link_message(path: Path, output: Path) -> str:
    return f"--output {output}: its lock file {path} is a symbolic link, not pcrm's (remove it, then run again)"
