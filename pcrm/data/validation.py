"""Row checks: every row's fields are present, text or messages, and finite scores; the first bad row is an error
naming its row and field, suspicious ones are counted; empty responses dropped where asked."""

import math
import re
import uuid
from typing import Any

import numpy as np
from datasets import Dataset

from pcrm.data.content import as_text
from pcrm.data.formats import PAIR_FIELDS, RANKED_FIELDS, SCORE_FIELDS, has_scores
from pcrm.data.report import LoadReport
from pcrm.errors import PcrmError

# A visible character: not whitespace nor one that renders as nothing (zero-width space/joiners, direction
# marks, BOM, soft hyphen, ...); `search` stops at the first one, so typical texts cost O(1).
_VISIBLE = re.compile(
    "[^\\s\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0]"
)
# A suspicious row's problem -> (the reason counted, the warning), both kept in the data.
_FLAGS = {
    "identical": ("with identical responses", "{n} pair(s) whose two responses are identical (no preference signal)"),
    "invisible": (
        "with a response of invisible characters only",
        "{n} pair(s) with a response that is empty apart from invisible characters (zero-width spaces, direction "
        "marks, ...)",
    ),
}


class RowError(Exception):
    """A bad row (the loader adds the file and row)."""


def validate(dataset: Dataset, where: str, kind: str, num_proc: int | None, report: LoadReport) -> None:
    """Check every row on Arrow (batched, in `num_proc` workers); raise on the first bad row, warn with counts."""
    fields = ["prompt"] if "prompt" in dataset.column_names else []
    if kind == "pairs":
        fields += list(PAIR_FIELDS) + (list(SCORE_FIELDS) if has_scores(dataset) else [])
    else:
        fields += list(RANKED_FIELDS)
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
    for problem, (reason, message) in _FLAGS.items():
        n = int(np.sum(kinds == problem))
        if n:
            report.tally("flagged", reason, n, f"{where}: " + message.format(n=n))


def _inspect_batch(batch, indices, kind):
    out = {"index": [], "problem": [], "message": []}
    for j, index in enumerate(indices):
        row = {name: values[j] for name, values in batch.items()}
        try:
            problem = check_row(row, kind)
        except RowError as err:
            problem, message = "error", str(err)
        else:
            message = ""
        if problem:
            out["index"].append(index)
            out["problem"].append(problem)
            out["message"].append(message)
    return out


def check_row(row: dict, kind: str) -> str | None:
    """Raise `RowError` for a bad row; return 'identical'/'invisible' for a suspicious one."""
    if "prompt" in row and row["prompt"] is not None:
        check_text(row["prompt"], "field 'prompt'", allow_empty=True, error=RowError)
    if kind == "pairs":
        for field in PAIR_FIELDS:
            if row[field] is None or _is_nan(row[field]):
                raise RowError(f"field {field!r} is missing")
            check_text(row[field], f"field {field!r}", error=RowError)
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
            raise RowError(f"field {field!r} is missing")
    if not isinstance(responses, list) or not isinstance(scores, list):
        raise RowError("fields 'responses' and 'scores' must be lists")
    if len(responses) != len(scores):
        raise RowError(f"{len(responses)} responses but {len(scores)} scores")
    for i, response in enumerate(responses):
        check_text(response, f"field 'responses'[{i}]", error=RowError)
    for i, score in enumerate(scores):
        _check_number(score, f"field 'scores'[{i}]")
    return "invisible" if any(_invisible_only(r) for r in responses) else None


def check_text(value: Any, where: str, allow_empty: bool = False, error: type = PcrmError) -> None:
    """Raise `error` unless `value` is a (non-empty) string or list of `{"role", "content"}` string messages."""
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


def _check_number(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RowError(f"{where} is not a finite number ({value!r})")


def _invisible_only(value: Any) -> bool:
    return _VISIBLE.search(as_text(value)) is None


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def drop_empty_responses(dataset: Dataset, where: str, kind: str, num_proc: int | None, report: LoadReport) -> Dataset:
    """Pairs without an empty chosen or rejected response (ranked data is returned as it is)."""
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
        dropped = len(dataset) - len(kept)
        report.tally(
            "dropped", "with an empty response", dropped, f"{where}: dropped {dropped} pair(s) with an empty response"
        )
    if len(kept) == 0:
        raise PcrmError(f"{where}: every pair has an empty response")
    return kept


def _non_empty_batch(chosen, rejected):
    def empty(value: Any) -> bool:
        return (isinstance(value, str) and not value.strip()) or (isinstance(value, list) and not value)

    return [not (empty(c) or empty(r)) for c, r in zip(chosen, rejected)]
