"""Recognising the TRL preference format of a dataset from its columns (after an optional `columns` mapping)."""

from datasets import Dataset, Value

from pcrm.data.report import LoadReport
from pcrm.errors import PcrmError

PAIR_FIELDS = ("chosen", "rejected")
RANKED_FIELDS = ("responses", "scores")
SCORE_FIELDS = ("score_chosen", "score_rejected")
COLUMN_TARGETS = ("prompt", *PAIR_FIELDS, *RANKED_FIELDS, *SCORE_FIELDS)
FORMATS_HELP = (
    "need 'chosen' and 'rejected' (optionally 'prompt', 'score_chosen', 'score_rejected') "
    "or 'responses' and 'scores' (optionally 'prompt'); map other names with columns/--columns"
)


def parse_columns(columns, where: str) -> dict[str, str]:
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


def rename_columns(dataset: Dataset, columns, where: str) -> Dataset:
    """The data's columns renamed to the expected names `columns` maps them to (see `parse_columns`)."""
    mapping = {column: target for target, column in parse_columns(columns, where).items() if column != target}
    if not mapping:
        return dataset
    missing = [f"{c!r} (for {t!r})" for c, t in mapping.items() if c not in dataset.column_names]
    if missing:
        raise PcrmError(f"{where}: column {', '.join(missing)} not found; found {sorted(dataset.column_names)}")
    clashing = [t for t in mapping.values() if t in dataset.column_names and t not in mapping]
    if clashing:  # an existing column of the target name is replaced by the mapped one
        dataset = dataset.remove_columns(clashing)
    return dataset.rename_columns(mapping)


def preference_kind(dataset: Dataset, where: str) -> str:
    """ "pairs" (`chosen`, `rejected`) or "ranked" (`responses`, `scores`)."""
    columns = set(dataset.column_names)
    if all(f in columns for f in PAIR_FIELDS):
        return "pairs"
    if all(f in columns for f in RANKED_FIELDS):
        return "ranked"
    raise PcrmError(
        f"{where}: missing columns (unrecognised preference format): {FORMATS_HELP}; found {sorted(columns)}"
    )


def has_scores(dataset: Dataset) -> bool:
    return all(f in dataset.column_names for f in SCORE_FIELDS)


def feature_kind(feature) -> str:
    """ "text", "messages" (a list of dicts) or "other", for a column's feature."""
    from datasets import LargeList, List

    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        return "text"
    if isinstance(feature, (list, List, LargeList)):
        inner = feature[0] if isinstance(feature, list) else feature.feature
        if isinstance(inner, dict):
            return "messages"
    return "other"


def prompt_is_implicit(dataset: Dataset) -> bool:
    """Whether some rows' prompt must be extracted from chosen/rejected (TRL's `maybe_extract_prompt`):
    no `prompt` column, or a text prompt next to conversational responses (or mixed types)."""
    if "prompt" not in dataset.column_names:
        return True
    kinds = {feature_kind(dataset.features[c]) for c in ("prompt", *PAIR_FIELDS)}
    return not (kinds == {"text"} or kinds == {"messages"})


def describe(dataset: Dataset, kind: str, columns, report: LoadReport) -> None:
    """The format the columns show, and an explicit prompt's column (an implicit one is described once extracted)."""
    names = dataset.column_names
    if kind == "ranked":
        report.layout = "ranked (prompt, responses, scores)"
        feature = dataset.features["responses"]
        feature = feature[0] if isinstance(feature, list) else getattr(feature, "feature", feature)
    else:
        report.layout = "pairs with scores" if has_scores(dataset) else "pairs"
        feature = dataset.features["chosen"]
    report.style = (
        "conversational (messages, rendered with the chat template)"
        if feature_kind(feature) == "messages"
        else "standard (text)"
    )
    column = parse_columns(columns, "").get("prompt", "prompt")
    if "prompt" not in names:
        report.prompt = "no prompt" if kind == "ranked" else ""
    elif kind == "ranked" or not prompt_is_implicit(dataset):
        report.prompt = f"explicit prompt (column {column!r})"
    elif feature_kind(dataset.features["prompt"]) == "messages" and feature_kind(feature) == "text":
        report.prompt = f"explicit prompt (column {column!r}, messages rendered with the chat template)"
