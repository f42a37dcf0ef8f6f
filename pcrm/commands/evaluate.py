"""`pcrm evaluate`: score reward models on preference data; write metrics.json and per-pair arrays.

Each response is scored once (ranked data is not expanded into pairs for scoring) and its
score cached under `cache_dir()/scores/`, so re-running costs a tokenizer load
(`pcrm.evaluation.reward_models` does the work; metrics in `pcrm.evaluation.metrics`).
"""

from dataclasses import dataclass, field
from pathlib import Path

from pcrm.errors import PcrmError
from pcrm.evaluation.reward_models import PRIORS, evaluate, format_table
from pcrm.evaluation.rewardbench import format_results as format_rewardbench


@dataclass
class Config:
    """Evaluate reward models on preference data: accuracy, rank correlation, score scale,
    margins against the priors' δ*, length bias and calibration, with bootstrap CIs."""

    model: list[str] = field(
        default_factory=list,
        metadata={"help": "reward model directory (required, no default; repeat to compare several)"},
    )
    data: list[str] = field(
        default_factory=lambda: ["hh-rlhf-harmless"],
        metadata={"help": "bundled dataset name or file/directory, repeatable (default: hh-rlhf-harmless)"},
    )
    split: str = field(default="test", metadata={"help": "split of bundled data or of a DatasetDict directory"})
    data_config: str | None = field(
        default=None, metadata={"help": "configuration name of a Hub/local dataset repository (load_dataset's name)"}
    )
    columns: str | None = field(
        default=None,
        metadata={
            "help": "map column names: chosen=good,rejected=bad,prompt=question (also responses, scores, score_chosen, score_rejected)"
        },
    )
    output: str = field(default="runs/evaluate", metadata={"help": "directory for metrics.json and scores/*.npz"})
    priors: list[str] = field(
        default_factory=lambda: list(PRIORS),
        metadata={
            "help": "priors whose δ* the margins are compared with, repeatable (default: length and cosine)",
            "choices": PRIORS,
        },
    )
    encoder: str = field(default="minilm", metadata={"help": "sentence encoder of the cosine prior"})
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "tokens per scored text, longer ones lose the prompt's start "
            "(default: the --max-length each model was trained with)"
        },
    )
    batch_size: int = field(default=32, metadata={"help": "scoring batch size"})
    device: str = field(default="auto", metadata={"help": "torch device for scoring: auto, cpu, cuda, ..."})
    bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples per confidence interval (0: no CIs)"})
    bins: int = field(default=10, metadata={"help": "reliability bins of the calibration metrics"})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    overwrite: bool = field(
        default=False, metadata={"help": "replace an existing --output of pcrm evaluate (only once this run succeeds)"}
    )

    def __post_init__(self):
        from pcrm.preflight import check_at_least, check_numbers

        check_numbers(self)
        check_at_least(self, 2, "max_length")  # one token is the end token alone: every text would score the same
        if not self.model:
            raise PcrmError("--model is required (a reward model directory; repeat it to compare several)")
        if not self.data:
            raise PcrmError("--data needs at least one dataset")
        for prior in self.priors:
            if prior not in PRIORS:
                raise PcrmError(f"--priors must be among {', '.join(PRIORS)}, got {prior!r}")
        for name in ("max_length", "batch_size", "bins"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise PcrmError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.bootstrap < 0:
            raise PcrmError(f"--bootstrap must be >= 0, got {self.bootstrap}")


def run(config: Config) -> dict:
    from dataclasses import asdict

    from pcrm.io import versions
    from pcrm.outputs import OutputFolder
    from pcrm.preflight import check_device, check_model

    check_device(config.device)
    for name in config.model:
        check_model(name, "reward", config.max_length)
    folder = OutputFolder(config.output, "evaluate", overwrite=config.overwrite)
    folder.plan()  # every check before the first write
    with folder:
        summary = evaluate(config, folder.work)
        folder.commit({"kind": "evaluate", "config": asdict(config), "versions": versions()})
    print(format_table(summary))
    if benchmark := format_rewardbench(summary):  # per-subset and section results of RewardBench-format data
        print(f"\n{benchmark}\n")
    print(f"wrote {Path(config.output) / 'metrics.json'}")
    return summary
