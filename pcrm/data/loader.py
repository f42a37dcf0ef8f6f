"""`load_preferences`: open the source, then recognise, validate and normalise its rows, in that order."""

import contextlib
import os
from pathlib import Path

from datasets import Dataset

from pcrm.data.formats import describe, has_scores, preference_kind, prompt_is_implicit, rename_columns
from pcrm.data.pairs import expand_ranked_dataset, order_by_scores
from pcrm.data.prompts import extract_prompts, fill_prompts
from pcrm.data.report import LoadReport
from pcrm.data.sources import BUNDLED, load_source
from pcrm.data.validation import drop_empty_responses, validate
from pcrm.errors import PcrmError

PARALLEL_ROWS = 200_000  # below this, worker processes cost more than they save


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
        dataset, where = load_source(source, name, split, config_name, columns)
    with progress_bars(show=len(dataset) >= 50_000):
        report = report if report is not None else LoadReport(warn=True)
        report.source = report.source or (f"{name} [{split}]" if name in BUNDLED else where)
        drop_empty = name in BUNDLED if drop_empty is None else drop_empty
        dataset = _prepare(dataset, where, expand_ranked, drop_empty, columns, num_proc, report)
        report.pairs = len(dataset)
        return dataset


def _prepare(
    dataset: Dataset,
    where: str,
    expand_ranked: bool,
    drop_empty: bool,
    columns,
    num_proc: int | None,
    report: LoadReport,
) -> Dataset:
    if len(dataset) == 0:
        raise PcrmError(f"{where}: the dataset is empty")
    if num_proc is None:
        num_proc = min(4, os.cpu_count() or 1) if len(dataset) >= PARALLEL_ROWS else None
    num_proc = num_proc if num_proc and num_proc > 1 else None
    report.rows = len(dataset)
    dataset = rename_columns(dataset, columns, where)
    kind = preference_kind(dataset, where)
    describe(dataset, kind, columns, report)
    if drop_empty:
        dataset = drop_empty_responses(dataset, where, kind, num_proc, report)
    if kind == "pairs" and prompt_is_implicit(dataset):
        dataset = extract_prompts(dataset, num_proc, report)
    validate(dataset, where, kind, num_proc, report)
    dataset = fill_prompts(dataset, num_proc)
    if kind == "pairs" and has_scores(dataset):
        dataset = order_by_scores(dataset, where, num_proc, report)
    if kind == "ranked" and expand_ranked:
        dataset = expand_ranked_dataset(dataset, where, num_proc, report)
    dataset.info.description = where
    return dataset


@contextlib.contextmanager
def progress_bars(show: bool):
    """`datasets` progress bars on or off inside the block (restored after); off for small data."""
    from datasets.utils import logging as ds_logging

    show = show and not os.environ.get("TQDM_DISABLE")  # --no-progress (pcrm.console.progress_bars sets it)
    was_enabled = ds_logging.is_progress_bar_enabled()
    (ds_logging.enable_progress_bar if show else ds_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (ds_logging.enable_progress_bar if was_enabled else ds_logging.disable_progress_bar)()
