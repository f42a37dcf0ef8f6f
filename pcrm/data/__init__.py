"""Preference data: the bundled real comparisons and a loader for user files.

Columns follow TRL's conventions: `prompt`, `chosen`, `rejected`, each a string or a
conversational list of `{"role", "content"}` messages. Ranked data (`prompt`, `responses`,
`scores`) is accepted too and can be expanded to all ordered pairs (ties skipped).
"""

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_from_disk

from pcrm.errors import PcrmError

logger = logging.getLogger("pcrm")
BUNDLED_DIR = Path(__file__).resolve().parent
BUNDLED = {"hh-rlhf-harmless": BUNDLED_DIR / "hh-rlhf-harmless"}
FILE_FORMATS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
PAIR_FIELDS = ("chosen", "rejected")
RANKED_FIELDS = ("responses", "scores")


def load_preferences(
    source: str | Path, split: str = "train", expand_ranked: bool = True, drop_empty: bool | None = None
) -> Dataset:
    """Load and validate preference data.

    `source` is a bundled name (`hh-rlhf-harmless`), a JSONL/JSON/Parquet/CSV file, or a
    directory written by `datasets.save_to_disk`. `split` picks the bundled split or the split
    of a `DatasetDict` directory. Ranked rows (`responses`, `scores`) are expanded to
    `prompt`/`chosen`/`rejected` pairs when `expand_ranked` (with `chosen_score`,
    `rejected_score` and `group` columns); otherwise returned validated as they are.
    An empty response is an error unless `drop_empty` (default: True for the bundled data,
    whose 3 pairs with an empty human-preferred reply are dropped with a logged warning).
    Raises `PcrmError` naming the file, row and field of any problem.
    """
    name = str(source)
    if drop_empty is None:
        drop_empty = name in BUNDLED
    if name in BUNDLED:
        path = BUNDLED[name] / f"{split}.jsonl"
        if not path.exists():
            splits = sorted(p.stem for p in BUNDLED[name].glob("*.jsonl"))
            raise PcrmError(f"{name}: unknown split {split!r} (available: {', '.join(splits)})")
        rows = _read_rows(path)
    else:
        path = Path(name)
        if not path.exists():
            raise PcrmError(f"{name}: no such file or directory, and not a bundled dataset ({', '.join(BUNDLED)})")
        rows = _read_dir(path, split) if path.is_dir() else _read_rows(path)
    if not rows:
        raise PcrmError(f"{path}: the dataset is empty")
    if drop_empty:
        rows = _drop_empty_responses(rows, path)
    kind = _validate(rows, path)
    if kind == "ranked" and expand_ranked:
        rows = expand_ranked_rows(rows)
        if not rows:
            raise PcrmError(f"{path}: ranked data has no pair with different scores")
    dataset = Dataset.from_list(rows)
    dataset.info.description = str(path)
    return dataset


def _read_rows(path: Path) -> list[dict[str, Any]]:
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise PcrmError(f"{path}: unknown format {path.suffix!r} (expected one of {', '.join(FILE_FORMATS)})")
    if fmt == "jsonl":
        rows = []
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
                rows.append(row)
        return rows
    if fmt == "json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise PcrmError(f"{path}: invalid JSON at line {err.lineno} ({err.msg})") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise PcrmError(f"{path}: expected a JSON list of objects")
        return data
    try:
        import pandas as pd

        frame = pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path, keep_default_na=True)
    except Exception as err:  # pandas/pyarrow raise many types for malformed files
        raise PcrmError(f"{path}: cannot read as {fmt} ({type(err).__name__}: {str(err).splitlines()[0]})") from None
    rows = frame.to_dict(orient="records")
    for row in rows:  # pandas gives numpy arrays for list cells
        for key, value in row.items():
            if hasattr(value, "tolist") and not isinstance(value, str):
                row[key] = value.tolist()
    return rows


def _read_dir(path: Path, split: str) -> list[dict[str, Any]]:
    try:
        data = load_from_disk(str(path))
    except Exception as err:
        raise PcrmError(f"{path}: not a Hugging Face dataset directory ({str(err).splitlines()[0]})") from None
    if isinstance(data, DatasetDict):
        if split not in data:
            raise PcrmError(f"{path}: unknown split {split!r} (available: {', '.join(data)})")
        data = data[split]
    return data.to_list()


def _validate(rows: list[dict[str, Any]], path: Path) -> str:
    """Check every row; return 'pairs' or 'ranked'."""
    columns = set(rows[0])
    if all(f in columns for f in PAIR_FIELDS):
        kind, fields = "pairs", PAIR_FIELDS
    elif all(f in columns for f in RANKED_FIELDS):
        kind, fields = "ranked", RANKED_FIELDS
    else:
        raise PcrmError(
            f"{path}: missing columns: need 'chosen' and 'rejected' (or 'responses' and 'scores'); found {sorted(columns)}"
        )
    for index, row in enumerate(rows):
        where = f"{path}: row {index}"
        for field in ("prompt", *fields):
            if field not in row or row[field] is None or _is_nan(row[field]):
                if field == "prompt":
                    row["prompt"] = ""
                    continue
                raise PcrmError(f"{where}: field {field!r} is missing")
        _check_text(row["prompt"], f"{where}: field 'prompt'", allow_empty=True)
        if kind == "pairs":
            for field in PAIR_FIELDS:
                _check_text(row[field], f"{where}: field {field!r}")
        else:
            responses, scores = row["responses"], row["scores"]
            if not isinstance(responses, list) or not isinstance(scores, list):
                raise PcrmError(f"{where}: fields 'responses' and 'scores' must be lists")
            if len(responses) != len(scores):
                raise PcrmError(f"{where}: {len(responses)} responses but {len(scores)} scores")
            for i, response in enumerate(responses):
                _check_text(response, f"{where}: field 'responses'[{i}]")
            for i, score in enumerate(scores):
                if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                    raise PcrmError(f"{where}: field 'scores'[{i}] is not a finite number ({score!r})")
    return kind


def _drop_empty_responses(rows: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    def empty(value: Any) -> bool:
        return (isinstance(value, str) and not value.strip()) or (isinstance(value, list) and not value)

    kept = [r for r in rows if not any(empty(r.get(f)) for f in PAIR_FIELDS)]
    if len(kept) < len(rows):
        logger.warning("%s: dropped %d pair(s) with an empty response", path, len(rows) - len(kept))
    if not kept:
        raise PcrmError(f"{path}: every pair has an empty response")
    return kept


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _check_text(value: Any, where: str, allow_empty: bool = False) -> None:
    if isinstance(value, str):
        if not allow_empty and not value.strip():
            raise PcrmError(f"{where} is empty")
        return
    if isinstance(value, list) and value:
        for turn, message in enumerate(value):
            if not (isinstance(message, dict) and isinstance(message.get("role"), str)):
                raise PcrmError(f"{where}: message {turn} needs a string 'role'")
            if not isinstance(message.get("content"), str):
                raise PcrmError(f"{where}: message {turn} needs a string 'content'")
        if not allow_empty and not any(m["content"].strip() for m in value):
            raise PcrmError(f"{where} is empty")
        return
    if isinstance(value, list) and allow_empty:
        return
    if isinstance(value, list):
        raise PcrmError(f"{where} is empty")
    raise PcrmError(f"{where} must be a string or a list of messages, not {type(value).__name__}")


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


def as_text(value: str | list[dict[str, str]]) -> str:
    """A response as plain text: strings unchanged, messages joined by their contents."""
    if isinstance(value, str):
        return value
    return "\n".join(message["content"] for message in value)


def fingerprint(dataset: Dataset, columns: tuple[str, ...] = ("prompt", "chosen", "rejected")) -> str:
    """Content hash of the given columns (stable across processes and machines)."""
    digest = hashlib.sha256()
    for column in columns:
        if column not in dataset.column_names:
            continue
        digest.update(column.encode())
        for value in dataset[column]:
            digest.update(json.dumps(value, ensure_ascii=False, sort_keys=True).encode())
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
