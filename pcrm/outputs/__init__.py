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
* An advisory lock (`filelock` on the sibling file `.NAME.pcrm-lock`, holding the pid, removed by the holder at
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

Modules: `folder` (OutputFolder), `lock` (the lock), `record` (who wrote a folder), `checkpoints` (which are
complete), `disk_full` (is an error a full disk).
"""

from pcrm.outputs.checkpoints import WEIGHTS, checkpoint_is_complete, checkpoints, last_complete_checkpoint
from pcrm.outputs.disk_full import is_enospc
from pcrm.outputs.folder import OutputFolder
from pcrm.outputs.lock import holding
from pcrm.outputs.record import FINAL, MARKER, RECORD, make_record, read_record, settings_of

__all__ = [
    "FINAL",
    "MARKER",
    "RECORD",
    "WEIGHTS",
    "OutputFolder",
    "checkpoint_is_complete",
    "checkpoints",
    "holding",
    "is_enospc",
    "last_complete_checkpoint",
    "make_record",
    "read_record",
    "settings_of",
]
