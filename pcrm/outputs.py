"""One output-folder mechanism for the commands that train (train-rm, train-dpo, align).

* `--overwrite` never costs the previous output before the new run has succeeded: the run writes into a
  sibling folder `.NAME.pcrm-new`, and only `commit()` swaps it in (the old one goes to `.NAME.pcrm-old`,
  then is removed). A failed or interrupted `--overwrite` run leaves the previous output as it was.
* An advisory lock (`fcntl.flock` on the sibling file `.NAME.pcrm-lock`, holding the pid, removed by the holder at
  the end): a second run into the same output refuses with one line naming the holder.
* While a run writes, its folder holds the marker `INCOMPLETE`; `commit()` writes `pcrm_config.json`
  last (fsync'ed, mode 0644) and only then removes the marker.
* `--resume` continues from the newest *complete* checkpoint (`trainer_state.json` readable, weights and,
  unless only the model was saved, the optimizer present); checkpoints cut short (kill -9 mid-save) are
  skipped, named on stdout, and removed before training writes new ones.
* SIGTERM is turned into KeyboardInterrupt while a run holds its folder, so Ctrl-C and SIGTERM leave the same
  thing: a folder with the marker and its complete checkpoints, which both `--resume` and `--overwrite` accept.

Nothing is written before `open()`; `plan()` (run first) only reads, so every check fails before any file changes.
"""

import contextlib
import dataclasses
import errno
import json
import math
import os
import re
import shutil
import signal
from pathlib import Path

from pcrm.errors import PcrmError

MARKER = "INCOMPLETE"
FINAL = "pcrm_config.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
           "adapter_model.safetensors", "adapter_model.bin")


# -- option checks shared by the commands -------------------------------------------------------------


def check_numbers(config, option_prefix: str = "--") -> None:
    """Every float option (nested dataclasses included) finite; every `seed` >= 0."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            check_numbers(value, option_prefix)
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        option = option_prefix + f.name.replace("_", "-")
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise PcrmError(f"{option} must be a finite number, got {v}")
        if f.name == "seed" and isinstance(value, int) and value < 0:
            raise PcrmError(f"{option} must be >= 0, got {value}")


def check_scheduler(name: str) -> None:
    from transformers import SchedulerType

    names = [s.value for s in SchedulerType]
    if name not in names:
        raise PcrmError(f"--scheduler must be one of {', '.join(names)}, got {name!r}")


def model_length_limit(name: str) -> int | None:
    """The longest input a model accepts (position embeddings, else a sensible tokenizer limit); None if unknown."""
    from transformers import AutoConfig

    from pcrm.models import hub_kwargs, resolve_model

    path = resolve_model(name)
    limits = []
    try:
        model_config = AutoConfig.from_pretrained(path, **hub_kwargs(path))  # Hub unreachable: the cache, at once
    except (OSError, ValueError, KeyError) as err:
        raise PcrmError(f"{name}: cannot read the model config ({str(err).splitlines()[0]})") from None
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(model_config, key, None)
        if isinstance(value, int) and value > 0:
            limits.append(value)
            break
    tokenizer_config = Path(path) / "tokenizer_config.json"
    if tokenizer_config.is_file():
        try:
            value = json.loads(tokenizer_config.read_text(encoding="utf-8")).get("model_max_length")
        except (OSError, ValueError):
            value = None
        if isinstance(value, int) and 0 < value < 1_000_000:
            limits.append(value)
    return min(limits) if limits else None


def check_max_length(name: str, max_length: int, option: str = "--max-length") -> None:
    limit = model_length_limit(name)
    if limit is not None and max_length > limit:
        raise PcrmError(f"{option} {max_length} is above the limit of {name} ({limit} tokens)")


def check_backbone(name: str) -> None:
    """A train-rm backbone: a sequence classifier must have exactly one label (a 2-label model is a classifier, not an RM)."""
    from transformers import AutoConfig

    from pcrm.models import hub_kwargs, resolve_model

    try:
        model_config = AutoConfig.from_pretrained(resolve_model(name), **hub_kwargs(resolve_model(name)))
    except (OSError, ValueError, KeyError) as err:
        raise PcrmError(f"{name}: cannot read the model config ({str(err).splitlines()[0]})") from None
    architectures = model_config.architectures or []
    if any(a.endswith("ForSequenceClassification") for a in architectures) and model_config.num_labels != 1:
        raise PcrmError(f"{name}: a sequence classifier with {model_config.num_labels} labels, not a reward model "
                        "(need 1 label, or a base model without a classification head)")


def check_model_files(name: str) -> None:
    """Weight files of a local model directory readable (a truncated safetensors file fails here, not mid-run)."""
    from pcrm.models import resolve_model

    path = Path(resolve_model(name))
    if not path.is_dir():
        return
    for file in sorted(path.glob("*.safetensors")):
        try:
            with open(file, "rb") as f:
                header = f.read(8)
                size = int.from_bytes(header, "little") if len(header) == 8 else -1
                meta = json.loads(f.read(size)) if 0 < size < 100_000_000 else None
            end = max((v["data_offsets"][1] for k, v in (meta or {}).items() if k != "__metadata__"), default=0)
            if meta is None or file.stat().st_size < 8 + size + end:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise PcrmError(f"{file}: truncated or not a safetensors file") from None


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


# -- the output folder ---------------------------------------------------------------------------------


def _is_empty(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def _writable_ancestor(path: Path) -> Path:
    for parent in [path, *path.parents]:
        if parent.exists():
            return parent
    return Path("/")


class OutputFolder:
    """The output directory of one training run; see the module docstring.

    `plan()` checks (reads only) and decides where the run writes (`work`); `open()` takes the lock and
    writes the marker; `commit(summary)` writes pcrm_config.json and swaps; `close()` (or the context
    manager's exit) releases the lock and cleans up a work folder that holds nothing worth resuming.
    """

    def __init__(self, path: str | Path, overwrite: bool = False, resume: bool = False, checkpoint_dir: str | None = "checkpoints",
                 resumable=None):
        self.path = Path(path)
        self.overwrite, self.resume = overwrite, resume
        self.checkpoint_dir = checkpoint_dir
        self.resumable = resumable  # optional callable(work: Path) -> bool for runs whose checkpoints are not transformers'
        parent = self.path.parent
        self.new = parent / f".{self.path.name}.pcrm-new"
        self.old = parent / f".{self.path.name}.pcrm-old"
        self.lock_path = parent / f".{self.path.name}.pcrm-lock"
        self.work: Path | None = None
        self.checkpoint: Path | None = None
        self.skipped: list[Path] = []
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
        if self.resume:
            # an interrupted --overwrite run resumes in its sibling folder; otherwise in the output itself
            self.work = self.new if self._resumable(self.new) else self.path
            if not self._resumable(self.work):
                where = self.work / self.checkpoint_dir if self.checkpoint_dir else self.work
                cut = f" ({len(self.skipped)} cut short)" if self.skipped else ""
                raise PcrmError(f"--resume: {where}: no checkpoint to resume from{cut}")
        elif _is_empty(self.path):
            self.work = self.path
        elif self.overwrite:
            self.work = self.new
        else:
            raise PcrmError(f"--output {self.path} exists and is not empty (pass --overwrite to replace it, or --resume)")
        return self.work

    def _resumable(self, work: Path) -> bool:
        if self.resumable is not None:
            return work.is_dir() and self.resumable(work)
        self.checkpoint, self.skipped = last_complete_checkpoint(work / self.checkpoint_dir)
        return self.checkpoint is not None

    def _check_lock(self) -> None:
        import fcntl

        if not self.lock_path.exists():
            return
        try:
            with open(self.lock_path, "rb") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise PcrmError(self._busy_message()) from None
        except PermissionError:
            raise PcrmError(f"--output {self.path}: cannot read its lock file {self.lock_path}") from None

    def _busy_message(self) -> str:
        try:
            pid = self.lock_path.read_text().split()[0]
        except (OSError, IndexError):
            pid = "unknown"
        return f"--output {self.path} is in use by another pcrm run (pid {pid}); wait for it or choose another --output"

    # writes
    def open(self) -> "OutputFolder":
        import fcntl

        if self.work is None:
            self.plan()
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        while True:  # the lock file is removed by its last holder: lock the file that is at the path now
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            lock = os.fdopen(fd, "r+")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                raise PcrmError(self._busy_message()) from None
            try:
                if os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            lock.close()
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock
        self.plan()  # again, under the lock: another run may have finished meanwhile
        self._recover_swap()
        if self.work == self.new and not self.resume and self.new.exists():
            shutil.rmtree(self.new)  # a stale --overwrite run: replaced
        self._existed = self.work.exists()
        self._created = _is_empty(self.work)
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / MARKER).write_text(f"written by pid {os.getpid()}; complete when {FINAL} exists and this file does not\n")
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
            if self.old.exists():
                shutil.rmtree(self.old, ignore_errors=True)
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
        """Write pcrm_config.json (last, fsync'ed, 0644), drop the marker, swap the new output in. Returns the final path."""
        from pcrm.io import write_json

        write_json(self.work / FINAL, summary, fsync=True)
        (self.work / MARKER).unlink(missing_ok=True)
        _fsync_dir(self.work)
        if self.work != self.path:
            if self.old.exists():
                shutil.rmtree(self.old)
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
            if self._created and not self._worth_keeping():
                shutil.rmtree(self.work, ignore_errors=True)
                if self._existed:
                    self.work.mkdir(exist_ok=True)
        if self._lock is not None:
            with contextlib.suppress(OSError):
                self.lock_path.unlink()  # while still holding it (see open)
            self._lock.close()  # releases the flock
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


def is_enospc(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno == errno.ENOSPC
