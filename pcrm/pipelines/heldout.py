"""The held-out pairs of a `train-rm` run (`heldout_split`): never silently the training pairs."""

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from pcrm.errors import PcrmError

if TYPE_CHECKING:
    from pcrm.data import LoadReport
    from pcrm.pipelines.reward import RewardModelConfig


def heldout_split(config: "RewardModelConfig") -> dict:
    """Where the held-out pairs come from, never silently the training pairs: `--eval-data` (its `--eval-split`), the
    `--eval-split` of `--data` when it has splits (or is sliced), else a seeded `--eval-fraction` of `--data`, held out
    of training; or none, said in one line. Returns {"train": the training source (None: --data), "pairs": the
    held-out Dataset or None, "record": what pcrm_config.json and the console say}."""
    from pcrm.data import LoadReport

    if config.eval_data or not _one_split(config.data) or "[" in config.eval_split:
        return _named_split(config, LoadReport())
    if config.eval_split != "test":
        raise PcrmError(
            f"--eval-split {config.eval_split}: {config.data} has no splits (one file); pass --eval-data, "
            "a slice such as --eval-split 'train[90%:]', or --eval-fraction"
        )
    return _seeded_fraction(config, LoadReport())


def _one_split(source: str) -> bool:
    """Data that has no named splits: a file, a glob, a remote file or a saved Dataset."""
    import glob

    path = Path(source).expanduser()
    return path.is_file() or (path / "state.json").is_file() or glob.has_magic(source) or "://" in source


def _named_split(config: "RewardModelConfig", report: "LoadReport") -> dict:
    """The `--eval-split` of `--eval-data`, else of `--data` (which must not be the training split)."""
    from pcrm.console import print_data_summary

    source = config.eval_data or config.data
    if config.eval_data is None and config.eval_split == config.split:
        raise PcrmError(
            f"--eval-split {config.eval_split} is the training split of {config.data}: held-out pairs must "
            "be others (another --eval-split, or --eval-data)"
        )
    pairs = dataclasses.replace(config.data_options, data=source, split=config.eval_split).load(report=report)
    print_data_summary(report, f"{len(pairs)} pairs held out for evaluation")
    return {
        "train": None,
        "pairs": pairs,
        "record": {"source": source, "split": config.eval_split, "pairs": len(pairs)},
    }


def _seeded_fraction(config: "RewardModelConfig", report: "LoadReport") -> dict:
    """A seeded `--eval-fraction` of the rows of `--data` (a ranked row stays whole), held out of training."""
    import numpy as np

    from pcrm.console import print_data_summary
    from pcrm.data import LoadReport, load_preferences

    rows = config.data_options.load(report=report, expand_ranked=False)
    held = round(len(rows) * config.eval_fraction)
    if held < 1 or len(rows) - held < 2:
        why = (
            "--eval-fraction 0"
            if config.eval_fraction == 0
            else f"too few rows ({len(rows)}) for --eval-fraction {config.eval_fraction}"
        )
        print(f"held-out: none ({why}; pass --eval-data for held-out metrics)", flush=True)
        return {"train": None, "pairs": None, "record": None}
    order = np.random.default_rng(config.seed).permutation(len(rows))
    train, pairs = (
        rows.select(sorted(order[held:])),
        load_preferences(rows.select(sorted(order[:held])), report=LoadReport()),
    )
    print_data_summary(report, f"{held} rows held out for evaluation (seeded {config.eval_fraction:.0%})")
    record = {
        "source": config.data,
        "split": config.split,
        "fraction": config.eval_fraction,
        "seed": config.seed,
        "rows": held,
        "pairs": len(pairs),
    }
    print(
        f"held-out: {held} of the {len(rows)} rows of {config.data} (--eval-fraction {config.eval_fraction}, seed "
        f"{config.seed}), not trained on; pass --eval-data for a separate held-out set",
        flush=True,
    )
    return {"train": train, "pairs": pairs, "record": record}
