"""What a pcrm command prints: its own lines and bars; the libraries' bars, load reports and chatter only with
`--verbose`; each warning once, with the count of its repeats at the end.

`quiet_imports` runs when pcrm is imported (DeepSpeed, when installed, announces "Setting accelerator to CPU" from
its import on every CPU machine); `quiet_libraries` when a command starts; `report_repeats` when it ends.
"""

import contextlib
import logging
import os
import sys
import warnings
from collections import Counter

# Messages that say nothing to a pcrm user, matched by their start (never a whole logger or category).
IMPORT_NOISE = ("Setting accelerator to CPU",)  # DeepSpeed's accelerator probe, at import
LIBRARY_NOISE = ("Token indices sequence length is longer than",)  # pcrm truncates itself (left side, counted)
LIBRARY_NOISE_CONTAINS = (" LOAD REPORT",)  # transformers' load table: e.g. a new score head MISSING, as expected


class _Drop(logging.Filter):
    """Drops records whose message starts with one of `starts` or contains one of `contains`."""

    def __init__(self, starts=(), contains=()):
        super().__init__()
        self.starts, self.contains = tuple(starts), tuple(contains)

    def filter(self, record):
        message = record.getMessage()
        return not (message.startswith(self.starts) or any(c in message for c in self.contains))


class _Once(logging.Filter):
    """Lets each (logger, level, message) through once and counts the repeats."""

    def __init__(self):
        super().__init__()
        self.counts = Counter()

    def filter(self, record):
        if not hasattr(record, "pcrm_first"):  # counted once, however many handlers see the record
            key = (record.levelname, record.getMessage())
            self.counts[key] += 1
            record.pcrm_first = self.counts[key] == 1
        return record.pcrm_first


_ONCE = _Once()
_WARNINGS = Counter()
_FILTERED: list = []  # (handler, filters) that quiet_libraries added: release_console takes them off again
_DATA_SEEN: dict = {}  # source -> the data-summary lines this command printed of it
_LIBRARIES_BEFORE: list = []  # transformers' verbosity and bars, datasets' bars before quiet_libraries


def quiet_imports() -> None:
    """Drop the import-time notices of optional libraries (idempotent); the libraries' own loggers keep working."""
    logger = logging.getLogger("DeepSpeed")
    if not any(isinstance(f, _Drop) for f in logger.filters):
        logger.addFilter(_Drop(IMPORT_NOISE))


def quiet_libraries(verbose: bool = False) -> None:
    """The console of a command: pcrm's lines as `pcrm: message`, every warning once; unless `verbose`, transformers
    only at ERROR level, no model-loading/saving or datasets bars, no load reports. (`--no-progress`, no bars at all,
    is `progress_bars(False)` around the command.)"""
    import datasets
    from transformers.utils import logging as hf_logging

    logging.basicConfig(format="pcrm: %(message)s", level=logging.WARNING)
    if not _LIBRARIES_BEFORE:
        _LIBRARIES_BEFORE.append(
            (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled())
        )
    _ONCE.counts.clear()  # counts per command
    _WARNINGS.clear()
    _DATA_SEEN.clear()
    for handler in [*logging.getLogger().handlers, *hf_logging._get_library_root_logger().handlers]:
        if _ONCE not in handler.filters:
            added = [_ONCE] + ([] if verbose else [_Drop(LIBRARY_NOISE, LIBRARY_NOISE_CONTAINS)])
            for f in added:
                handler.addFilter(f)
            _FILTERED.append((handler, added))
    warnings.showwarning = _show_once
    if verbose:
        hf_logging.set_verbosity_warning()
        return
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Loading weights", "Writing model shards"
    datasets.disable_progress_bars()  # "Flattening the indices"; pcrm turns its large-data bars on where it wants


_show = warnings.showwarning


def _show_once(message, category, filename, lineno, file=None, line=None):
    """`warnings.showwarning` that shows a (category, message) once, wherever it comes from, and counts the rest."""
    key = (category.__name__, str(message).splitlines()[0] if str(message) else "")
    _WARNINGS[key] += 1
    if _WARNINGS[key] == 1:
        _show(message, category, filename, lineno, file, line)


def report_repeats(file=None) -> list[str]:
    """One line per warning that came more than once ("pcrm: the warning above came 5 times: …"); the counts reset."""
    counts = [(f"{level.lower()}", text, n) for (level, text), n in _ONCE.counts.items() if n > 1]
    counts += [(category, text, n) for (category, text), n in _WARNINGS.items() if n > 1]
    lines = [f"pcrm: {n}× in all ({kind}): {_short(text)}" for kind, text, n in counts]
    for line in lines:
        print(line, file=file or sys.stderr)
    _ONCE.counts.clear()
    _WARNINGS.clear()
    if warnings.showwarning is _show_once:  # the command is over: warnings as Python shows them
        warnings.showwarning = _show
    return lines


def release_console() -> None:
    """Undo `quiet_libraries`' filters, warning hook and library settings when a command ends: the process's logging
    and bars are the caller's (a later command in the same process starts from them, as a fresh process would)."""
    while _FILTERED:
        handler, added = _FILTERED.pop()
        for f in added:
            handler.removeFilter(f)
    if _LIBRARIES_BEFORE:
        import datasets
        from transformers.utils import logging as hf_logging

        verbosity, hf_bars, datasets_bars = _LIBRARIES_BEFORE.pop()
        hf_logging.set_verbosity(verbosity)
        (hf_logging.enable_progress_bar if hf_bars else hf_logging.disable_progress_bar)()
        (datasets.enable_progress_bars if datasets_bars else datasets.disable_progress_bars)()
    _ONCE.counts.clear()
    _WARNINGS.clear()
    if warnings.showwarning is _show_once:
        warnings.showwarning = _show


def _short(text: str, width: int = 100) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


@contextlib.contextmanager
def progress_bars(show: bool):
    """Inside the block, with `show` False: no bars from pcrm's libraries either (transformers, datasets, and TRL's
    "Computing reference log probs", which only TQDM_DISABLE turns off), so `progress=False` holds from Python too.
    Everything is restored after the block; with `show` True the block changes nothing."""
    if show:
        yield
        return
    import datasets
    from transformers.utils import logging as hf_logging

    state = (hf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled(), os.environ.get("TQDM_DISABLE"))
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if state[0]:
            hf_logging.enable_progress_bar()
        if state[1]:
            datasets.enable_progress_bars()
        if state[2] is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = state[2]


def data_summary(
    report, use: str = "", truncated: int | None = None, max_length: int | None = None, seen: bool = False
) -> list[str]:
    """The data summary of a command (at most 4 lines) from a `pcrm.data.LoadReport`: the source, format and how the
    prompt was found; rows read, dropped (by reason) and flagged; what the command uses them for and how many were
    truncated. `seen`: the source was summarised above, so only the use line."""
    if seen:
        lines = [f"data: {report.source} (as above)"]
    else:
        found = ", ".join(filter(None, [report.layout, report.style, report.prompt]))
        counts = f"{report.rows} rows read"
        if report.dropped:
            counts += f", {sum(report.dropped.values())} dropped ({_reasons(report.dropped)})"
        if "pairs" in report.layout or not report.layout:
            counts += f"; {report.pairs} pairs"
        lines = [f"data: {report.source}: {found}", f"  {counts}"]
        if report.flagged:
            lines.append(f"  kept: {_reasons(report.flagged)}")
    if use or truncated:
        cut = f"{truncated} truncated at {max_length} tokens (the prompt's start cut)" if truncated else ""
        lines.append("  used: " + "; ".join(filter(None, [use, cut])))
    return lines if use or truncated or not seen else []


def _reasons(counts: dict) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in counts.items())


def print_data_summary(
    report, use: str = "", truncated: int | None = None, max_length: int | None = None, file=None
) -> list[str]:
    """Print `data_summary` once per source and command: a source summarised before gets only its use line, and not
    even that when the same line was printed (a multi-step command loading the same data again); return the lines."""
    seen = _DATA_SEEN.setdefault(report.source, set())
    lines = data_summary(report, use, truncated, max_length, seen=bool(seen))
    if seen and lines[-1:] and lines[-1] in seen:
        lines = []
    seen.update(lines)
    for line in lines:
        print(line, file=file or sys.stdout, flush=True)
    return lines


def text_table(rows: list[dict]) -> str:
    """An aligned plain-text table for the console: one dict of string cells per row, keys are the columns.
    (Its Markdown twin for files and reports is `pcrm.report.markdown_table`.)"""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [columns] + [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in cells)
