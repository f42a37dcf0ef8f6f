"""Preference data: the bundled real comparisons and a loader for data from anywhere `datasets` reads.

Every TRL preference format is recognised from the columns (after an optional `columns` mapping):

- pairs, explicit prompt: `prompt`, `chosen`, `rejected`, each a string (standard) or a list of
  `{"role", "content"}` messages (conversational);
- pairs, implicit prompt: `chosen`, `rejected` only; their shared prefix becomes the prompt, as
  TRL's `trl.data_utils.extract_prompt` does (for raw Anthropic HH strings the prompt ends at the
  last shared "\\n\\nAssistant:", so that the two replies are all that differ);
- pairs with scores: `score_chosen`, `score_rejected` are kept; a pair whose chosen score is lower is
  swapped, a tie is skipped (counted in a warning);
- ranked: `prompt`, `responses`, `scores`, expanded to all ordered pairs (ties skipped) unless
  `expand_ranked=False`.

Loading, validation and transformation run on Arrow (`Dataset.map`/`filter`, batched), never
through one Python list of every row.
"""

import contextlib
import glob as globlib
import hashlib
import json
import logging
import math
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict, Features, ReadInstruction, Value, load_dataset, load_from_disk

from pcrm.errors import PcrmError

logger = logging.getLogger("pcrm")
BUNDLED_DIR = Path(__file__).resolve().parent
BUNDLED = {"hh-rlhf-harmless": BUNDLED_DIR / "hh-rlhf-harmless"}
FILE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zip")
PAIR_FIELDS = ("chosen", "rejected")
RANKED_FIELDS = ("responses", "scores")
SCORE_FIELDS = ("score_chosen", "score_rejected")
COLUMN_TARGETS = ("prompt", *PAIR_FIELDS, *RANKED_FIELDS, *SCORE_FIELDS)
HH_ASSISTANT = "\n\nAssistant:"
# pandas' default missing-value strings (pandas._libs.parsers.STR_NA_VALUES): cells that read_csv would turn into NaN.
PANDAS_NA_STRINGS = (
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
)
# A visible character: not whitespace nor one that renders as nothing (zero-width space/joiners, direction
# marks, BOM, soft hyphen, ...); `search` stops at the first one, so typical texts cost O(1).
_VISIBLE = re.compile(
    "[^\\s\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0]"
)
PARALLEL_ROWS = 200_000  # below this, worker processes cost more than they save


@dataclass
class LoadReport:
    """What `load_preferences(..., report=LoadReport())` read and did (`pcrm.console.print_data_summary` prints it).

    Given a report, the loader records its counts here instead of logging them as warnings (the data summary of
    a command says them once)."""

    source: str = ""  # the data and split read
    layout: str = ""  # "pairs", "pairs with scores", "ranked", "RewardBench v1 pairs", ...
    style: str = ""  # "standard" (text) or "conversational" (lists of messages)
    prompt: str = ""  # how the prompt was found
    rows: int = 0  # rows read
    pairs: int = 0  # rows (pairs, or ranked rows when not expanded) returned
    dropped: dict = field(default_factory=dict)  # reason -> rows dropped
    flagged: dict = field(default_factory=dict)  # reason -> rows kept but suspicious, or changed (swapped)
    warn: bool = field(default=False, repr=False)  # also log the counts as warnings (the caller passed no report)


FORMATS_HELP = (
    "need 'chosen' and 'rejected' (optionally 'prompt', 'score_chosen', 'score_rejected') "
    "or 'responses' and 'scores' (optionally 'prompt'); map other names with columns/--columns"
)


def load_preferences(
    source: "str | Path | Dataset",
    split: str = "train",
    expand_ranked: bool = True,
    drop_empty: bool | None = None,
    config_name: str | None = None,
    columns: "str | dict[str, str] | None" = None,
    num_proc: int | None = None,
    report: LoadReport | None = None,
) -> Dataset:
    """Load and validate preference data.

    `source` is a bundled name (`hh-rlhf-harmless`), a JSONL/JSON/Parquet/CSV/Arrow file (optionally
    compressed), a glob of such files, a directory written by `save_to_disk`, a local dataset
    repository folder (e.g. `data/train-*.parquet`), or a Hugging Face Hub id (with `config_name`).
    `split` may be sliced (`train[:2000]`, `test[10%:]`); a single file or glob is one split, so only
    its slice applies. `columns` maps the expected names onto the data's (`{"chosen": "good"}` or
    `"chosen=good,rejected=bad,prompt=question"`). Ranked rows (`responses`, `scores`) are expanded
    to `prompt`/`chosen`/`rejected` pairs when `expand_ranked` (with `chosen_score`,
    `rejected_score` and `group` columns); otherwise returned validated as they are.
    An empty response is an error unless `drop_empty` (default: True for the bundled data,
    whose 3 pairs with an empty human-preferred reply are dropped with a logged warning).
    `num_proc` worker processes validate and transform (default: 2–4 from 200,000 rows).
    `report`: a `LoadReport` filled with what was read, found and dropped (then not logged as warnings).
    Raises `PcrmError` naming the file, row and field of any problem.
    """
    name = str(source) if not isinstance(source, Dataset) else (source.info.description or "dataset")
    with progress_bars(show=False):
        dataset, where = _load(source, name, split, config_name, columns)
    with progress_bars(show=len(dataset) >= 50_000):
        report = report if report is not None else LoadReport(warn=True)
        report.source = report.source or (f"{name} [{split}]" if name in BUNDLED else where)
        dataset = _prepare(dataset, name, where, expand_ranked, drop_empty, columns, num_proc, report)
        report.pairs = len(dataset)
        return dataset


def _prepare(
    dataset: Dataset,
    name: str,
    where: str,
    expand_ranked: bool,
    drop_empty: bool | None,
    columns,
    num_proc: int | None,
    report: "LoadReport",
) -> Dataset:
    if drop_empty is None:
        drop_empty = name in BUNDLED
    if len(dataset) == 0:
        raise PcrmError(f"{where}: the dataset is empty")
    if num_proc is None:
        num_proc = min(4, os.cpu_count() or 1) if len(dataset) >= PARALLEL_ROWS else None
    num_proc = num_proc if num_proc and num_proc > 1 else None
    report.rows = len(dataset)
    dataset = _rename(dataset, columns, where)
    kind = _kind(dataset, where)
    _describe(dataset, kind, columns, report)
    if drop_empty:
        dataset = _drop_empty_responses(dataset, where, kind, num_proc, report)
    if kind == "pairs" and _prompt_is_implicit(dataset):
        dataset = dataset.map(_extract_prompt_batch, batched=True, num_proc=num_proc, desc="Extracting prompts")
        report.prompt = report.prompt or _extraction(dataset)
    _validate(dataset, where, kind, num_proc, report)
    if "prompt" not in dataset.column_names:
        dataset = dataset.map(_empty_prompts_batch, batched=True, desc="Adding empty prompts")
    elif _has_nulls(dataset, "prompt"):
        dataset = dataset.map(_fill_prompts_batch, batched=True, num_proc=num_proc, desc="Filling prompts")
    if kind == "pairs" and all(f in dataset.column_names for f in SCORE_FIELDS):
        dataset = _order_by_scores(dataset, where, num_proc, report)
    if kind == "ranked" and expand_ranked:
        import pyarrow.compute as pc

        lengths = pc.list_value_length(dataset.with_format("arrow")["responses"]).fill_null(0).to_pylist()
        possible = sum(n * (n - 1) // 2 for n in lengths)
        dataset = dataset.map(
            _expand_ranked_batch,
            batched=True,
            with_indices=True,
            num_proc=num_proc,
            remove_columns=dataset.column_names,
            desc="Expanding ranked rows",
        )
        if len(dataset) == 0:
            raise PcrmError(f"{where}: ranked data has no pair with different scores")
        report.layout += ", expanded to ordered pairs"
        if possible > len(dataset):
            report.flagged["tied response pairs not expanded"] = possible - len(dataset)
    dataset.info.description = where
    return dataset


def _count(report: LoadReport, group: str, reason: str, n: int, message: str) -> None:
    counts = getattr(report, group)
    counts[reason] = counts.get(reason, 0) + n
    if report.warn:
        logger.warning("%s", message)


def _describe(dataset: Dataset, kind: str, columns, report: LoadReport) -> None:
    """The format the columns show, and an explicit prompt's column (an implicit one: `_extraction`, once extracted)."""
    names = dataset.column_names
    if kind == "ranked":
        report.layout = "ranked (prompt, responses, scores)"
        feature = dataset.features["responses"]
        feature = feature[0] if isinstance(feature, list) else getattr(feature, "feature", feature)
    else:
        report.layout = "pairs with scores" if all(f in names for f in SCORE_FIELDS) else "pairs"
        feature = dataset.features["chosen"]
    report.style = (
        "conversational (messages, rendered with the chat template)"
        if _feature_kind(feature) == "messages"
        else "standard (text)"
    )
    column = _parse_columns(columns, "").get("prompt", "prompt")
    if "prompt" not in names:
        report.prompt = "no prompt" if kind == "ranked" else ""
    elif kind == "ranked" or not _prompt_is_implicit(dataset):
        report.prompt = f"explicit prompt (column {column!r})"
    elif _feature_kind(dataset.features["prompt"]) == "messages" and _feature_kind(feature) == "text":
        report.prompt = f"explicit prompt (column {column!r}, messages rendered with the chat template)"


def _extraction(dataset: Dataset) -> str:
    """How the implicit prompts were found (`extract_prompt`): at the last shared HH turn, the shared start, or messages."""
    import pyarrow as pa
    import pyarrow.compute as pc

    prompts = dataset.with_format("arrow")["prompt"]
    if not (pa.types.is_string(prompts.type) or pa.types.is_large_string(prompts.type)):
        return "implicit prompt: the messages chosen and rejected share at the start"
    hh, empty = (pc.sum(pc.ends_with(prompts, HH_ASSISTANT)).as_py() or 0), (pc.sum(pc.equal(prompts, "")).as_py() or 0)
    turn = json.dumps(HH_ASSISTANT)
    if hh == len(prompts):
        text = f"implicit prompt, extracted at the last shared {turn}"
    elif hh:
        text = f"implicit prompt, extracted at the last shared {turn} ({hh} rows) or the longest shared start"
    else:
        text = "implicit prompt: the longest start chosen and rejected share"
    return text + (f" ({empty} with nothing shared: empty prompt)" if empty else "")


# --- reading -----------------------------------------------------------------------------------


def _load(source, name: str, split: str, config_name: str | None, columns) -> tuple[Dataset, str]:
    """The raw split as a Dataset and the label that errors name (the file, or the source and split)."""
    if isinstance(source, Dataset):
        return source, name
    base, slice_ = _parse_split(split, name)
    if name in BUNDLED:
        folder = BUNDLED[name]
        splits = sorted(p.stem for p in folder.glob("*.jsonl"))
        if base not in splits:
            raise PcrmError(f"{name}: unknown split {base!r} (available: {', '.join(splits)})")
        files = {s: str(folder / f"{s}.jsonl") for s in splits}
        return _load_files("json", files, split, folder / f"{base}.jsonl", columns), str(folder / f"{base}.jsonl")
    label = name if not slice_ else f"{name} [{split}]"
    if re.match(
        r"^[a-z][a-z0-9+.-]*://", name
    ):  # remote data files: hf://datasets/owner/name/file.jsonl.gz, https://...
        return _load_files(
            _file_format(Path(name)), {"train": name}, f"train{slice_}", Path(name), columns, name
        ), label
    path = Path(name).expanduser()
    if path.is_file():
        fmt = _file_format(path)
        if path.stat().st_size == 0:
            raise PcrmError(f"{path}: the dataset is empty")
        return _load_files(fmt, {"train": [str(path)]}, f"train{slice_}", path, columns), label
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            return _load_saved(path, base, split), label if (path / "state.json").exists() else f"{name} [{split}]"
        return _load_builder(
            str(path), config_name, split, name, csv=_folder_is_csv(path), columns=columns
        ), f"{name} [{split}]"
    if globlib.has_magic(name):
        files = sorted(f for f in globlib.glob(os.path.expanduser(name), recursive=True) if os.path.isfile(f))
        if not files:
            raise PcrmError(f"{name}: no file matches this pattern")
        formats = {_file_format(Path(f)) for f in files}
        if len(formats) > 1:
            raise PcrmError(f"{name}: the matching files mix formats ({', '.join(sorted(formats))})")
        return _load_files(formats.pop(), {"train": files}, f"train{slice_}", Path(files[0]), columns), label
    if _looks_like_path(name):
        raise PcrmError(f"{name}: no such file or directory, and not a bundled dataset ({', '.join(BUNDLED)})")
    return _load_builder(name, config_name, split, name, csv=False, columns=columns), f"{name} [{split}]"


def _parse_split(split: str, name: str) -> tuple[str, str]:
    match = re.fullmatch(r"\s*([\w.-]+)\s*(\[[^\]]*\])?\s*", str(split))
    if not match:
        raise PcrmError(
            f"{name}: cannot read split {split!r} (expected a name, optionally sliced: train, train[:2000], test[10%:])"
        )
    return match.group(1), match.group(2) or ""


def _looks_like_path(name: str) -> bool:
    """A missing local path rather than a Hub id (`owner/name` or `name`)."""
    return (
        name.startswith((".", "/", "~"))
        or "\\" in name
        or name.count("/") > 1
        or any(name.lower().endswith(s) for s in (*FILE_FORMATS, *COMPRESSIONS, ".txt", ".tsv"))
    )


def _file_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes = suffixes[:-1]
    fmt = FILE_FORMATS.get(suffixes[-1] if suffixes else "")
    if fmt is None:
        raise PcrmError(f"{path}: unknown format {path.suffix!r} (expected one of {', '.join(FILE_FORMATS)})")
    return fmt


def _folder_is_csv(path: Path) -> bool:
    found = {_safe_format(p) for p in list(path.glob("*.*")) + list(path.glob("data/**/*.*"))}
    found.discard(None)
    return found == {"csv"}


def _safe_format(path: Path) -> str | None:
    try:
        return _file_format(path)
    except PcrmError:
        return None


def _csv_kwargs(first_file: Path, columns) -> dict:
    """Read every column as text (keeping 'NA', 'None', ... as text; only empty cells are missing), scores as numbers."""
    import pandas as pd

    if not first_file.exists():  # a remote file: no header to peek at, so no per-column types
        return {"keep_default_na": False, "na_values": [""]}
    try:
        header = list(pd.read_csv(first_file, nrows=0).columns)
    except Exception as err:
        raise PcrmError(f"{first_file}: cannot read as csv ({_first_line(err)})") from None
    score_columns = set(SCORE_FIELDS) | {_parse_columns(columns, str(first_file)).get(f) for f in SCORE_FIELDS}
    features = Features({c: Value("float64") if c in score_columns else Value("string") for c in header})
    return {"features": features, "keep_default_na": False, "na_values": [""]}


def _check_utf8(files) -> None:
    """Text data files must be UTF-8 (the JSON reader would otherwise replace bad bytes silently)."""
    import codecs

    for file in files:
        if not os.path.isfile(file) or str(file).lower().endswith(
            COMPRESSIONS
        ):  # remote or compressed: datasets decodes
            continue
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = 0
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as err:
                    raise PcrmError(
                        f"{file}: not UTF-8 text (invalid byte 0x{block[err.start]:02x} at byte {offset + err.start})"
                    ) from None
                offset += len(block)


def _load_files(fmt: str, data_files: dict, split: str, first: Path, columns, label: str | None = None) -> Dataset:
    if fmt in ("json", "csv"):
        _check_utf8(f for files in data_files.values() for f in ([files] if isinstance(files, (str, Path)) else files))
    kwargs = _csv_kwargs(first, columns) if fmt == "csv" else {}
    try:
        dataset = load_dataset(fmt, data_files=data_files, split=split, **kwargs)
    except PcrmError:
        raise
    except Exception as err:
        if fmt == "json" and first.suffix.lower() in (".json", ".jsonl") and first.is_file():
            _locate_json_error(first)
        raise PcrmError(f"{label or first}: cannot read as {fmt} ({_first_line(err)})") from None
    if fmt == "json" and dataset.column_names == ["data"] and len(dataset) == 1:  # {"data": [rows]}
        dataset = load_dataset(fmt, data_files=data_files, split=split, field="data")
    if fmt == "csv":
        _warn_csv_na(dataset, first)
    return dataset


def _load_builder(path: str, config_name: str | None, split: str, name: str, csv: bool, columns) -> Dataset:
    """`datasets.load_dataset` on a dataset repository: a local folder or a Hub id."""
    kwargs = {}
    if csv:
        first = sorted(p for p in Path(path).rglob("*.csv"))[0]
        kwargs = _csv_kwargs(first, columns)
    try:
        dataset = load_dataset(path, config_name, split=split, **kwargs)
    except Exception as err:
        message = _first_line(err)
        unknown = re.search(r"Unknown split \"?'?([^\"'.]+)\"?'?\. Should be one of \[(.*)\]", message)
        if unknown:
            available = ", ".join(s.strip(" '\"") for s in unknown.group(2).split(","))
            raise PcrmError(f"{name}: unknown split {unknown.group(1)!r} (available: {available})") from None
        what = "local dataset folder" if Path(path).is_dir() else "bundled name, local file/folder, or Hub dataset"
        raise PcrmError(f"{name}: cannot load as a {what} ({message})") from None
    if isinstance(dataset, DatasetDict):  # split=None never reaches here; defensive
        raise PcrmError(f"{name}: name one split (available: {', '.join(dataset)})")
    if csv:
        _warn_csv_na(dataset, Path(path))
    return dataset


def _load_saved(path: Path, base: str, split: str) -> Dataset:
    try:
        data = load_from_disk(str(path))
    except Exception as err:
        raise PcrmError(f"{path}: not a Hugging Face dataset directory ({_first_line(err)})") from None
    if isinstance(data, DatasetDict):
        if base not in data:
            raise PcrmError(f"{path}: unknown split {base!r} (available: {', '.join(data)})")
        data = data[base]
    else:
        split = re.sub(r"^\s*[\w.-]+", base, split)
    try:
        instruction = ReadInstruction.from_spec(split).to_absolute({base: len(data)})[0]
    except Exception as err:
        raise PcrmError(f"{path}: cannot apply split {split!r} ({_first_line(err)})") from None
    if (instruction.from_, instruction.to) != (0, len(data)):
        data = data.select(range(instruction.from_, instruction.to))
    return data


def _locate_json_error(path: Path) -> None:
    """Name the line of a JSON/JSONL file that does not parse (only on the error path, streamed)."""
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            if err.msg != "Extra data":  # "Extra data": JSON lines in a .json file
                raise PcrmError(f"{path}: invalid JSON at line {err.lineno} ({err.msg})") from None
        else:
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise PcrmError(f"{path}: expected a JSON list of objects")
            return
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise PcrmError(f"{path}: line {line_number}: invalid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise PcrmError(f"{path}: line {line_number}: expected a JSON object")


def _warn_csv_na(dataset: Dataset, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    na = pa.array([s for s in PANDAS_NA_STRINGS if s])
    counts = {}
    for name in dataset.column_names:
        column = dataset.data.column(name)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            count = pc.sum(pc.is_in(column, value_set=na.cast(column.type))).as_py() or 0
            if count:
                counts[name] = count
    if counts:
        detail = ", ".join(f"{n} in {c!r}" for c, n in counts.items())
        logger.warning(
            "%s: %d cell(s) such as 'NA' or 'None' kept as text (pandas would read them as missing): %s",
            path,
            sum(counts.values()),
            detail,
        )


def _first_line(err: BaseException) -> str:
    while not str(err).strip() and err.__cause__ is not None:  # e.g. DatasetGenerationError -> its cause
        err = err.__cause__
    text = str(err).strip().splitlines()
    cause = err.__cause__
    detail = f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
    if cause is not None and str(cause).strip():
        detail += f"; {type(cause).__name__}: {str(cause).strip().splitlines()[0]}"
    return detail


# --- columns and formats -----------------------------------------------------------------------


def _parse_columns(columns, where: str) -> dict[str, str]:
    """`{"chosen": "good"}` or "chosen=good,rejected=bad" -> {expected name: the data's name}."""
    if not columns:
        return {}
    if isinstance(columns, str):
        mapping = {}
        for item in columns.split(","):
            if not item.strip():
                continue
            target, sep, column = item.partition("=")
            if not sep or not target.strip() or not column.strip():
                raise PcrmError(f"--columns: expected NAME=COLUMN pairs separated by commas, got {item.strip()!r}")
            mapping[target.strip()] = column.strip()
        columns = mapping
    unknown = sorted(set(columns) - set(COLUMN_TARGETS))
    if unknown:
        raise PcrmError(
            f"--columns: unknown name(s) {', '.join(map(repr, unknown))} (expected: {', '.join(COLUMN_TARGETS)})"
        )
    return dict(columns)


def _rename(dataset: Dataset, columns, where: str) -> Dataset:
    mapping = {column: target for target, column in _parse_columns(columns, where).items() if column != target}
    if not mapping:
        return dataset
    missing = [f"{c!r} (for {t!r})" for c, t in mapping.items() if c not in dataset.column_names]
    if missing:
        raise PcrmError(f"{where}: column {', '.join(missing)} not found; found {sorted(dataset.column_names)}")
    clashing = [t for t in mapping.values() if t in dataset.column_names and t not in mapping]
    if clashing:  # an existing column of the target name is replaced by the mapped one
        dataset = dataset.remove_columns(clashing)
    return dataset.rename_columns(mapping)


def _kind(dataset: Dataset, where: str) -> str:
    columns = set(dataset.column_names)
    if all(f in columns for f in PAIR_FIELDS):
        return "pairs"
    if all(f in columns for f in RANKED_FIELDS):
        return "ranked"
    raise PcrmError(
        f"{where}: missing columns (unrecognised preference format): {FORMATS_HELP}; found {sorted(columns)}"
    )


def _has_nulls(dataset: Dataset, column: str) -> bool:
    if dataset._indices is None:
        return dataset.data.column(column).null_count > 0
    return bool(len(dataset.filter(_prompt_is_null_batch, batched=True, input_columns=[column], keep_in_memory=True)))


def _prompt_is_null_batch(prompts):
    return [p is None for p in prompts]


def _fill_prompts_batch(batch):
    return {"prompt": ["" if p is None else p for p in batch["prompt"]]}


def _empty_prompts_batch(batch):
    return {"prompt": [""] * len(next(iter(batch.values())))}


def _feature_kind(feature) -> str:
    from datasets import LargeList, List

    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        return "text"
    if isinstance(feature, (list, List, LargeList)):
        inner = feature[0] if isinstance(feature, list) else feature.feature
        if isinstance(inner, dict):
            return "messages"
    return "other"


def _prompt_is_implicit(dataset: Dataset) -> bool:
    """Whether some rows' prompt must be extracted from chosen/rejected (TRL's `maybe_extract_prompt`):
    no `prompt` column, or a text prompt next to conversational responses (or mixed types)."""
    if "prompt" not in dataset.column_names:
        return True
    kinds = {_feature_kind(dataset.features[c]) for c in ("prompt", *PAIR_FIELDS)}
    return not (kinds == {"text"} or kinds == {"messages"})


def _is_conversational(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and "role" in value[0]


def extract_prompt(chosen, rejected) -> tuple[Any, Any, Any]:
    """(prompt, chosen reply, rejected reply) from two full conversations sharing their start.

    Mirrors TRL's `trl.data_utils.extract_prompt`: the longest shared prefix (of messages for
    conversational data, of characters for strings, a space before the first difference moved to
    the replies) becomes the prompt. Strings in Anthropic HH form ("\\n\\nHuman: ...
    \\n\\nAssistant: ...") are cut instead right after the last shared "\\n\\nAssistant:", at the
    turn boundary, so the prompt holds every shared turn and the replies only the replies.
    """
    if (
        not isinstance(chosen, (str, list))
        or not isinstance(rejected, (str, list))
        or type(chosen) is not type(rejected)
    ):
        return None, chosen, rejected  # validation names the bad field
    n = min(len(chosen), len(rejected))
    idx = 0
    while idx < n and chosen[idx] == rejected[idx]:
        idx += 1
    if isinstance(chosen, str):
        cut = chosen.rfind(HH_ASSISTANT, 0, idx)
        if cut >= 0:
            idx = cut + len(HH_ASSISTANT)
        elif idx == n:  # no difference within the shorter one: TRL leaves its last character to the replies
            idx = max(n - 1, 0)
        elif idx > 0 and chosen[idx - 1] == " ":
            idx -= 1
    elif idx == n:
        idx = max(n - 1, 0)
    return chosen[:idx], chosen[idx:], rejected[idx:]


def _extract_prompt_batch(batch):
    """TRL's `maybe_extract_prompt` per row: extract unless the row's prompt and chosen are both text or both messages."""
    prompts, chosen, rejected = [], [], []
    implicit = "prompt" not in batch
    given = [None] * len(batch["chosen"]) if implicit else batch["prompt"]
    for p, c, r in zip(given, batch["chosen"], batch["rejected"]):
        # A text prompt beside conversations: the conversations hold it (TRL's implicit form). A conversational
        # prompt beside text replies is the prompt itself (rendered to text with them), never dropped.
        if implicit or (not _is_conversational(p) and _is_conversational(c)):
            p, c, r = extract_prompt(c, r)
        prompts.append(p)
        chosen.append(c)
        rejected.append(r)
    return {"prompt": prompts, "chosen": chosen, "rejected": rejected}


# --- validation --------------------------------------------------------------------------------


class _RowError(Exception):
    pass


def _validate(dataset: Dataset, where: str, kind: str, num_proc: int | None, report: LoadReport) -> None:
    """Check every row on Arrow (batched, in `num_proc` workers); raise on the first bad row, warn with counts."""
    with_scores = kind == "pairs" and all(f in dataset.column_names for f in SCORE_FIELDS)
    fields = ["prompt"] if "prompt" in dataset.column_names else []
    fields += (
        list(PAIR_FIELDS) + (list(SCORE_FIELDS) if with_scores else []) if kind == "pairs" else list(RANKED_FIELDS)
    )
    problems = dataset.select_columns(fields).map(
        _inspect_batch,
        batched=True,
        with_indices=True,
        num_proc=num_proc,
        keep_in_memory=True,
        remove_columns=fields,
        fn_kwargs={"kind": kind},
        new_fingerprint=uuid.uuid4().hex,
        desc="Validating",
    )
    if len(problems) == 0:
        return
    problems = problems[:]
    kinds = np.asarray(problems["problem"])
    errors = np.flatnonzero(kinds == "error")
    if len(errors):
        indices = np.asarray(problems["index"])[errors]
        first = errors[np.argmin(indices)]
        more = f" ({len(errors) - 1} more row(s) with errors)" if len(errors) > 1 else ""
        raise PcrmError(f"{where}: row {int(indices.min())}: {problems['message'][int(first)]}{more}")
    identical = int(np.sum(kinds == "identical"))
    invisible = int(np.sum(kinds == "invisible"))
    if identical:
        _count(
            report,
            "flagged",
            "with identical responses",
            identical,
            f"{where}: {identical} pair(s) whose two responses are identical (no preference signal)",
        )
    if invisible:
        _count(
            report,
            "flagged",
            "with a response of invisible characters only",
            invisible,
            f"{where}: {invisible} pair(s) with a response that is empty apart from invisible characters "
            "(zero-width spaces, direction marks, ...)",
        )


def _inspect_batch(batch, indices, kind):
    out = {"index": [], "problem": [], "message": []}
    for j, index in enumerate(indices):
        row = {name: values[j] for name, values in batch.items()}
        try:
            problem = _check_row(row, kind)
        except _RowError as err:
            problem, message = "error", str(err)
        else:
            message = ""
        if problem:
            out["index"].append(index)
            out["problem"].append(problem)
            out["message"].append(message)
    return out


def _check_row(row: dict, kind: str) -> str | None:
    """Raise `_RowError` for a bad row; return 'identical'/'invisible' for a suspicious one."""
    if "prompt" in row and row["prompt"] is not None:
        _check_text(row["prompt"], "field 'prompt'", allow_empty=True, error=_RowError)
    if kind == "pairs":
        for field in PAIR_FIELDS:
            if row[field] is None or _is_nan(row[field]):
                raise _RowError(f"field {field!r} is missing")
            _check_text(row[field], f"field {field!r}", error=_RowError)
        for field in SCORE_FIELDS:
            if field in row:
                _check_number(row[field], f"field {field!r}")
        if row["chosen"] == row["rejected"]:
            return "identical"
        if _invisible_only(row["chosen"]) or _invisible_only(row["rejected"]):
            return "invisible"
        return None
    responses, scores = row["responses"], row["scores"]
    for field in RANKED_FIELDS:
        if row[field] is None:
            raise _RowError(f"field {field!r} is missing")
    if not isinstance(responses, list) or not isinstance(scores, list):
        raise _RowError("fields 'responses' and 'scores' must be lists")
    if len(responses) != len(scores):
        raise _RowError(f"{len(responses)} responses but {len(scores)} scores")
    for i, response in enumerate(responses):
        _check_text(response, f"field 'responses'[{i}]", error=_RowError)
    for i, score in enumerate(scores):
        _check_number(score, f"field 'scores'[{i}]")
    return "invisible" if any(_invisible_only(r) for r in responses) else None


def _check_number(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _RowError(f"{where} is not a finite number ({value!r})")


def _invisible_only(value: Any) -> bool:
    return _VISIBLE.search(as_text(value)) is None


def _drop_empty_responses(dataset: Dataset, where: str, kind: str, num_proc: int | None, report: LoadReport) -> Dataset:
    if kind != "pairs":
        return dataset
    kept = dataset.filter(
        _non_empty_batch,
        batched=True,
        input_columns=list(PAIR_FIELDS),
        num_proc=num_proc,
        desc="Dropping empty responses",
    )
    if len(kept) < len(dataset):
        _count(
            report,
            "dropped",
            "with an empty response",
            len(dataset) - len(kept),
            f"{where}: dropped {len(dataset) - len(kept)} pair(s) with an empty response",
        )
    if len(kept) == 0:
        raise PcrmError(f"{where}: every pair has an empty response")
    return kept


def _non_empty_batch(chosen, rejected):
    def empty(value: Any) -> bool:
        return (isinstance(value, str) and not value.strip()) or (isinstance(value, list) and not value)

    return [not (empty(c) or empty(r)) for c, r in zip(chosen, rejected)]


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _check_text(value: Any, where: str, allow_empty: bool = False, error: type = PcrmError) -> None:
    if isinstance(value, str):
        if not allow_empty and not value.strip():
            raise error(f"{where} is empty")
        return
    if isinstance(value, list) and value:
        for turn, message in enumerate(value):
            if not (isinstance(message, dict) and isinstance(message.get("role"), str)):
                raise error(f"{where}: message {turn} needs a string 'role'")
            if not isinstance(message.get("content"), str):
                raise error(f"{where}: message {turn} needs a string 'content'")
        if not allow_empty and not any(m["content"].strip() for m in value):
            raise error(f"{where} is empty")
        return
    if isinstance(value, list) and allow_empty:
        return
    if isinstance(value, list):
        raise error(f"{where} is empty")
    raise error(f"{where} must be a string or a list of messages, not {type(value).__name__}")


# --- scores and ranked data --------------------------------------------------------------------


def _order_by_scores(dataset: Dataset, where: str, num_proc: int | None, report: LoadReport) -> Dataset:
    """Swap pairs whose chosen score is lower; skip ties (counted in a warning)."""
    scores = dataset.select_columns(list(SCORE_FIELDS)).with_format("numpy")[:]
    chosen = np.asarray(scores["score_chosen"], dtype=np.float64)
    rejected = np.asarray(scores["score_rejected"], dtype=np.float64)
    ties = chosen == rejected
    swaps = int(np.sum(chosen < rejected))
    if swaps:
        _count(
            report,
            "flagged",
            "swapped (chosen scored lower)",
            swaps,
            f"{where}: swapped {swaps} pair(s) whose chosen score is lower than the rejected one",
        )
        dataset = dataset.map(_swap_batch, batched=True, num_proc=num_proc, desc="Ordering by scores")
    if ties.any():
        _count(
            report,
            "dropped",
            "with equal scores",
            int(ties.sum()),
            f"{where}: skipped {int(ties.sum())} pair(s) with equal scores",
        )
        dataset = dataset.select(np.flatnonzero(~ties))
        if len(dataset) == 0:
            raise PcrmError(f"{where}: every pair has equal scores")
    return dataset


def _swap_batch(batch):
    out = {k: list(batch[k]) for k in (*PAIR_FIELDS, *SCORE_FIELDS)}
    for j, (s_w, s_l) in enumerate(zip(batch["score_chosen"], batch["score_rejected"])):
        if s_w < s_l:
            out["chosen"][j], out["rejected"][j] = out["rejected"][j], out["chosen"][j]
            out["score_chosen"][j], out["score_rejected"][j] = s_l, s_w
    return out


def _expand_ranked_batch(batch, indices):
    rows = [
        {"prompt": p, "responses": r, "scores": s}
        for p, r, s in zip(batch["prompt"], batch["responses"], batch["scores"])
    ]
    pairs = expand_ranked_rows(rows)
    columns = {
        k: [pair[k] for pair in pairs] for k in ("prompt", "chosen", "rejected", "chosen_score", "rejected_score")
    }
    columns["group"] = [indices[pair["group"]] for pair in pairs]
    return columns


def expand_ranked_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Turn ranked rows into all ordered pairs (higher score = chosen); ties are skipped."""
    pairs = []
    for group, row in enumerate(rows):
        items = list(zip(row["responses"], row["scores"]))
        for i, (text_a, score_a) in enumerate(items):
            for text_b, score_b in items[i + 1 :]:
                if score_a == score_b:
                    continue
                (chosen, s_w), (rejected, s_l) = sorted(
                    [(text_a, score_a), (text_b, score_b)], key=lambda item: -item[1]
                )
                pairs.append(
                    {
                        "prompt": row["prompt"],
                        "chosen": chosen,
                        "rejected": rejected,
                        "chosen_score": float(s_w),
                        "rejected_score": float(s_l),
                        "group": group,
                    }
                )
    return pairs


# --- helpers used elsewhere --------------------------------------------------------------------


@contextlib.contextmanager
def progress_bars(show: bool):
    """`datasets` progress bars on or off inside the block (restored after); off for small data."""
    from datasets.utils import logging as ds_logging

    was_enabled = ds_logging.is_progress_bar_enabled()
    (ds_logging.enable_progress_bar if show else ds_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (ds_logging.enable_progress_bar if was_enabled else ds_logging.disable_progress_bar)()


def as_text(value: str | list[dict[str, str]]) -> str:
    """A response as plain text: strings unchanged, messages joined by their contents."""
    if isinstance(value, str):
        return value
    return "\n".join(message["content"] for message in value)


def fingerprint(
    dataset: Dataset, columns: tuple[str, ...] = ("prompt", "chosen", "rejected"), batch_size: int = 10_000
) -> str:
    """Content hash of the given columns (stable across processes, machines and load paths).

    Streams Arrow batches of the values (never the whole column at once); each value is hashed
    as its canonical JSON, so the same content hashes the same whether read from JSONL, Parquet,
    CSV or a Hub repository.
    """
    digest = hashlib.sha256()
    for column in columns:
        if column not in dataset.column_names:
            continue
        digest.update(column.encode())
        for batch in dataset.select_columns([column]).iter(batch_size=batch_size):
            values = batch[column]
            if all(type(v) is str for v in values):
                chunk = "\0".join(json.dumps(v, ensure_ascii=False) for v in values)
            else:
                chunk = "\0".join(json.dumps(v, ensure_ascii=False, sort_keys=True) for v in values)
            if values:
                digest.update(chunk.encode())
                digest.update(b"\0")
    return digest.hexdigest()[:16]


def verify_bundled_checksums(name: str = "hh-rlhf-harmless") -> None:
    """Check the vendored files against their SHA256SUMS."""
    folder = BUNDLED[name]
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        expected, filename = line.split()
        actual = hashlib.sha256((folder / filename).read_bytes()).hexdigest()
        if actual != expected:
            raise PcrmError(f"{folder / filename}: checksum mismatch (bundled data is corrupted)")
