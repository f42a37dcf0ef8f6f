"""`pcrm reproduce`: the paper's reward-model comparison on the bundled data, end to end.

Trains every method for every seed (a finished run is reused, so an interrupted
reproduction continues where it stopped), evaluates all reward models on the held-out
split, and writes a report with mean ± std over seeds.
"""

import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from pcrm.data.options import COLUMNS_HELP, DATA_CONFIG_HELP
from pcrm.errors import PcrmError
from pcrm.io import write_json
from pcrm.trainers.reward import RM_METHODS

FULL_METHODS = ["bt", "length", "cosine", "fixed", "random", "lower-margin", "center"]
QUICK_METHODS = ["bt", "cosine"]
SUMMARY_KEYS = (
    "accuracy",
    "margin_mean",
    "margin_std",
    "margin_p95",
    "frac_above_delta_length",
    "frac_above_delta_cosine",
)


@dataclass
class Config:
    """Train BT, PCRM (length, cosine), the fixed/random-δ ablations and the two scale controls
    over several seeds on the bundled data; evaluate them and write the report."""

    output: str = field(default="runs/reproduce", metadata={"help": "directory for models, metrics and the report"})
    quick: bool = field(
        default=False,
        metadata={"help": f"one seed, methods {' and '.join(QUICK_METHODS)} (about 10 minutes on 2 CPU cores)"},
    )
    methods: list[str] = field(
        default_factory=list, metadata={"help": f"methods to train, repeatable (default: {', '.join(FULL_METHODS)})"}
    )
    seeds: list[int] = field(default_factory=list, metadata={"help": "seeds, repeatable (default: 0 1 2; --quick: 0)"})
    model: str = field(default="minilm", metadata={"help": "reward-model backbone"})
    data: str = field(default="hh-rlhf-harmless", metadata={"help": "dataset with train and test splits"})
    data_config: str | None = field(default=None, metadata={"help": DATA_CONFIG_HELP})
    columns: str | None = field(default=None, metadata={"help": COLUMNS_HELP})
    max_length: int = field(default=128, metadata={"help": "tokens per sequence"})
    learning_rate: float = field(default=1e-4, metadata={"help": "peak learning rate"})
    epochs: float = field(default=1.0, metadata={"help": "training epochs"})
    max_pairs: int | None = field(default=None, metadata={"help": "train on a subset of this many pairs"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def __post_init__(self):
        self.methods = self.methods or (QUICK_METHODS if self.quick else FULL_METHODS)
        self.seeds = self.seeds or ([0] if self.quick else [0, 1, 2])
        for method in self.methods:
            if method not in RM_METHODS:
                raise PcrmError(f"--methods must be among {', '.join(RM_METHODS)}, got {method!r}")
        from pcrm.preflight import check_at_least, check_numbers, check_positive

        check_numbers(self)
        check_positive(self, "learning_rate", "epochs")
        check_at_least(self, 2, "max_length", "max_pairs")
        if min(self.seeds) < 0:
            raise PcrmError(f"--seeds must be >= 0, got {min(self.seeds)}")


def train_all(config: Config) -> list[Path]:
    """Train one reward model per (method, seed), reusing (or resuming) one trained with the same settings; one
    trained with other settings (say another --learning-rate) is trained again."""
    from pcrm.outputs import MARKER, last_complete_checkpoint, read_record, settings_of
    from pcrm.pipelines import reward as train_rm

    trainer_fields = {f.name for f in fields(train_rm.Config)} - {"output"}
    shared = {f.name: getattr(config, f.name) for f in fields(Config) if f.name in trainer_fields}
    directories = []
    for seed in config.seeds:
        for method in config.methods:
            directory = Path(config.output) / "models" / f"{method}-seed{seed}"
            rm = train_rm.Config(**shared, method=method, seed=seed, output=str(directory))
            record = read_record(directory)
            same = record is not None and record.get("settings") == settings_of(rm, train_rm.RESUME_FREE)
            directories.append(directory)
            if same and (directory / "pcrm_config.json").exists() and not (directory / MARKER).exists():
                continue
            rm.resume = same and last_complete_checkpoint(directory / "checkpoints")[0] is not None
            rm.overwrite = not rm.resume and directory.exists()
            changed = " (settings changed: trained again)" if record is not None and not same else ""
            print(f"== training {method} (seed {seed}){changed}", flush=True)
            print(train_rm.format_result(train_rm.train_reward_model(rm)), flush=True)
    return directories


def summarize_seeds(directories: list[Path]) -> list[dict]:
    """Mean ± std over seeds of each method's held-out statistics (from pcrm_config.json)."""
    by_method: dict[str, list[dict]] = {}
    for directory in directories:
        trained = json.loads((directory / "pcrm_config.json").read_text())
        by_method.setdefault(trained["method"], []).append(
            {**trained["heldout"], "train_seconds": trained["train_seconds"]}
        )
    rows = []
    for method, runs in by_method.items():
        row = {"method": method, "seeds": len(runs)}
        for key in (*SUMMARY_KEYS, "train_seconds"):
            values = np.array([run[key] for run in runs], dtype=float)
            row[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
        rows.append(row)
    return rows


# Column labels of the summary keys (tables show these, summary.json keeps the keys).
LABELS = {
    "accuracy": "held-out accuracy",
    "margin_mean": "margin mean",
    "margin_std": "margin std",
    "margin_p95": "margin p95",
    "frac_above_delta_length": "margin > δ* (length)",
    "frac_above_delta_cosine": "margin > δ* (cosine)",
    "train_seconds": "training time (s)",
}


def format_rows(rows: list[dict]) -> list[dict]:
    """Rows as strings for tables, labelled columns: 'mean ± std' over several seeds, the value alone for one."""

    def cell(stat, seeds):
        return f"{stat['mean']:.3f} ± {stat['std']:.3f}" if seeds > 1 else f"{stat['mean']:.3f}"

    return [
        {
            "method": r["method"],
            "seeds": r["seeds"],
            **{LABELS[k]: cell(r[k], r["seeds"]) for k in (*SUMMARY_KEYS, "train_seconds")},
        }
        for r in rows
    ]


def format_table(rows: list[dict]) -> str:
    from pcrm.console import text_table

    return text_table(format_rows(rows))


def run(config: Config) -> dict:
    """Under `pcrm.outputs.OutputFolder` (lock, marker; a rerun continues this command's own folder, models keyed on
    their settings); a folder of anything else is refused."""
    from pcrm.io import versions
    from pcrm.outputs import OutputFolder

    start = time.perf_counter()
    folder = OutputFolder(config.output, "reproduce", rerun="continue", resumable=lambda work: True)  # stages kept
    folder.plan()
    with folder:
        summary = _reproduce(config, start)
        folder.commit({"kind": "reproduce", "config": summary["config"], "versions": versions()})
    print(f"finished in {summary['seconds']:.0f} s; report: {summary['report']}")
    return summary


def _reproduce(config: Config, start: float) -> dict:
    from pcrm.commands import evaluate as evaluation
    from pcrm.report import add_section, write_report

    output = Path(config.output)
    directories = train_all(config)
    rows = summarize_seeds(directories)
    print(format_table(rows))
    evaluation_dir = output / "evaluation"
    evaluation.evaluate(
        evaluation.Config(
            model=[str(d) for d in directories],
            data=[config.data],
            split="test",
            data_config=config.data_config,
            columns=config.columns,
            output=str(evaluation_dir),
            max_length=config.max_length,
            progress=config.progress,
        )
    )
    text = (
        f"Backbone {config.model}, {config.data}, max length {config.max_length}, lr {config.learning_rate}, "
        f"{config.epochs} epoch(s), seeds {config.seeds}. Held-out statistics, "
        + ("mean ± std over seeds." if len(config.seeds) > 1 else "one seed: no spread to show.")
    )
    title = "Reproduction: mean ± std over seeds" if len(config.seeds) > 1 else "Reproduction: one seed"
    add_section(evaluation_dir, title, rows=format_rows(rows), text=text)
    write_report(evaluation_dir, title="pcrm reproduction")
    summary = {
        "config": {f.name: getattr(config, f.name) for f in fields(Config)},
        "methods": rows,
        "seconds": time.perf_counter() - start,
        "report": str(evaluation_dir / "report.html"),
    }
    write_json(output / "summary.json", summary)
    return summary
