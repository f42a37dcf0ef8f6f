"""Scores into ordered pairs: scored pairs put the higher score first, ranked rows become all their ordered pairs;
ties carry no preference and are skipped."""

from typing import Any

import numpy as np
from datasets import Dataset

from pcrm.data.formats import PAIR_FIELDS, SCORE_FIELDS
from pcrm.data.report import LoadReport
from pcrm.errors import PcrmError


def order_by_scores(dataset: Dataset, where: str, num_proc: int | None, report: LoadReport) -> Dataset:
    """Swap pairs whose chosen score is lower; skip ties (counted in a warning)."""
    scores = dataset.select_columns(list(SCORE_FIELDS)).with_format("numpy")[:]
    chosen = np.asarray(scores["score_chosen"], dtype=np.float64)
    rejected = np.asarray(scores["score_rejected"], dtype=np.float64)
    ties = chosen == rejected
    swaps = int(np.sum(chosen < rejected))
    if swaps:
        message = f"{where}: swapped {swaps} pair(s) whose chosen score is lower than the rejected one"
        report.tally("flagged", "swapped (chosen scored lower)", swaps, message)
        dataset = dataset.map(_swap_batch, batched=True, num_proc=num_proc, desc="Ordering by scores")
    if ties.any():
        n = int(ties.sum())
        report.tally("dropped", "with equal scores", n, f"{where}: skipped {n} pair(s) with equal scores")
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


def expand_ranked_dataset(dataset: Dataset, where: str, num_proc: int | None, report: LoadReport) -> Dataset:
    """Ranked rows as `prompt`/`chosen`/`rejected` pairs with `chosen_score`, `rejected_score` and `group` (the row)."""
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
    return dataset


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
