"""The DPO pipeline (`pcrm.train_dpo_policy`, behind `pcrm train-dpo`): data -> δ* -> `PcrmDPOTrainer` -> saved policy.

Align a policy with DPO, IPO or SLiC hinge, with PCRM's prior term (or without: --method dpo). The trainer is
`pcrm.trainers.dpo.PcrmDPOTrainer` (its docstring explains the default δ* on the implicit-reward scale); this
pipeline checks the options and the output folder, trains and saves a standard causal-LM folder plus
`pcrm_config.json`. It leaves the process as it found it: a torch process group the caller set up stays up, and
signal handlers are restored.
"""

import dataclasses
import math
import time
from dataclasses import asdict, dataclass, field

from pcrm.constraints import METHODS, PriorOptions
from pcrm.data.options import COLUMNS_HELP, DATA_CONFIG_HELP, DataOptions
from pcrm.errors import PcrmError, require
from pcrm.io import versions, write_json
from pcrm.losses import PAIR_LOSSES
from pcrm.pipelines.distributed import caller_process_group_kept
from pcrm.trainers.dpo import DPO_BETAS

PRECISIONS = ("fp32", "bf16", "fp16")
DPO_PRIOR = PriorOptions(fixed_delta=2.5, random_low=2.0, random_high=3.0)  # δ* on the implicit-reward scale


@dataclass
class DPOPolicyConfig:
    """Align a policy with DPO, IPO or SLiC hinge, with PCRM's prior term (or without: --method dpo)."""

    method: str = field(default="cosine", metadata={"help": f"prior of δ*: dpo (no prior), {', '.join(METHODS)}"})
    seed: int = field(default=0, metadata={"help": "seed of training, the pair subset and --method random"})
    batch_size: int = field(default=4, metadata={"help": "pairs per device step"})
    policy: str = field(
        default="smollm2", metadata={"help": "starting policy: bundled name, model directory or Hub id"}
    )
    data: str = field(default="hh-rlhf-harmless", metadata={"help": "bundled dataset name or file/directory"})
    split: str = field(default="train", metadata={"help": "split of the dataset"})
    data_config: str | None = field(default=None, metadata={"help": DATA_CONFIG_HELP})
    columns: str | None = field(default=None, metadata={"help": COLUMNS_HELP})
    max_pairs: int | None = field(default=None, metadata={"help": "train on a seeded random subset of this many pairs"})
    loss: str = field(default="sigmoid", metadata={"help": f"base loss on the margin: {', '.join(PAIR_LOSSES)}"})
    beta: float = field(default=0.1, metadata={"help": "β of the implicit reward β·log(π/π_ref)"})
    label_smoothing: float = field(default=0.0, metadata={"help": "label smoothing ε of both ranking terms"})
    learning_rate: float = field(
        default=5e-6, metadata={"help": "peak learning rate (cosine schedule, warm-up over the first tenth of steps)"}
    )
    epochs: float = field(default=1.0, metadata={"help": "training epochs"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many optimizer steps (-1: use --epochs)"})
    gradient_accumulation: int = field(default=2, metadata={"help": "gradient accumulation steps"})
    max_length: int = field(default=256, metadata={"help": "max tokens of prompt + response (the response end is cut)"})
    max_prompt_length: int | None = field(
        default=None, metadata={"help": "prompts are cut from the left to this many tokens (default: max-length/2)"}
    )
    precision: str = field(default="fp32", metadata={"help": f"{', '.join(PRECISIONS)} (bf16/fp16: mixed precision)"})
    lora: bool = field(default=False, metadata={"help": "train a LoRA adapter (merged into the saved policy)"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (alpha = 2·rank)"})
    precompute_ref: bool = field(default=True, metadata={"help": "compute reference log-probs once before training"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for memory"})
    save_steps: int = field(
        default=0,
        metadata={
            "help": "checkpoint (model + optimizer) every N optimizer steps into OUTPUT/checkpoints, "
            "for --resume (0: none)"
        },
    )
    resume: bool = field(default=False, metadata={"help": "resume from the last checkpoint in OUTPUT/checkpoints"})
    overwrite: bool = field(default=False, metadata={"help": "write into an existing output directory"})
    output: str = field(default="runs/dpo", metadata={"help": "directory of the aligned policy"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    prior: PriorOptions = field(
        default_factory=lambda: dataclasses.replace(DPO_PRIOR),
        metadata={"help": "options of the prior (--beta1 ... --encoder)"},
    )

    def __post_init__(self):
        from pcrm.preflight import check_at_least, check_numbers

        check_numbers(self)
        check_at_least(self, 1, "batch_size")
        if self.method not in ("dpo", *METHODS):
            raise PcrmError(f"--method must be one of dpo, {', '.join(METHODS)}, got {self.method!r}")
        self.prior_config()  # validates the prior's options
        checks = (
            (self.loss in PAIR_LOSSES, f"--loss must be one of {', '.join(PAIR_LOSSES)}, got {self.loss!r}"),
            (math.isfinite(self.beta) and self.beta > 0, f"--beta must be a finite number > 0, got {self.beta}"),
            (0 <= self.label_smoothing < 0.5, f"--label-smoothing must be in [0, 0.5), got {self.label_smoothing}"),
            (
                math.isfinite(self.learning_rate) and self.learning_rate > 0,
                f"--learning-rate must be > 0, got {self.learning_rate}",
            ),
            (math.isfinite(self.epochs) and self.epochs > 0, f"--epochs must be > 0, got {self.epochs}"),
            (
                self.max_steps == -1 or self.max_steps >= 1,
                f"--max-steps must be >= 1 (or -1: use --epochs), got {self.max_steps}",
            ),
            (
                self.gradient_accumulation >= 1,
                f"--gradient-accumulation must be >= 1, got {self.gradient_accumulation}",
            ),
            (self.max_length >= 4, f"--max-length must be >= 4, got {self.max_length}"),
            (
                0 < self.prompt_length < self.max_length,
                f"--max-prompt-length must be in [1, --max-length), got {self.prompt_length}",
            ),
            (self.max_pairs is None or self.max_pairs >= 1, f"--max-pairs must be >= 1, got {self.max_pairs}"),
            (
                self.precision in PRECISIONS,
                f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
            ),
            (self.lora_r >= 1, f"--lora-r must be >= 1, got {self.lora_r}"),
            (self.save_steps >= 0, f"--save-steps must be >= 0, got {self.save_steps}"),
            (not (self.resume and self.overwrite), "--resume and --overwrite exclude each other"),
        )
        require(checks)

    def prior_config(self):
        """The `ConstraintConfig` of this run's prior, βs defaulting to the DPO scale (None for --method dpo)."""
        return self.prior.resolve(self.method, self.seed, DPO_BETAS)

    @property
    def prompt_length(self) -> int:
        """--max-prompt-length, or half of --max-length when unset (derived: `dataclasses.replace` keeps it right)."""
        return self.max_prompt_length if self.max_prompt_length is not None else self.max_length // 2

    @property
    def data_options(self) -> DataOptions:
        """The training data (`--data`, `--split`, `--data-config`, `--columns`)."""
        return DataOptions(self.data, self.split, self.data_config, self.columns)


# Options that may change on --resume (they do not change what was trained so far).
RESUME_FREE = ("output", "overwrite", "resume", "max_steps", "epochs", "save_steps", "progress")


def preflight(config: DPOPolicyConfig) -> None:
    """Checks that read only (the policy, its length limit, the cache), before any file is written."""
    from pcrm.io import usable_cache_dir
    from pcrm.preflight import check_model

    check_model(config.policy, "causal", config.max_length, "--policy")
    usable_cache_dir()


def train_dpo_policy(config: DPOPolicyConfig) -> dict:
    """Train a policy with DPO (IPO, hinge) and PCRM's δ*, save a causal-LM folder plus `pcrm_config.json` in
    `config.output`, and return what `pcrm_config.json` records.

    The output folder is handled by `pcrm.outputs.OutputFolder` (lock, INCOMPLETE marker, --overwrite swapped in
    only on success, --resume from the newest complete checkpoint). A process group that came up during the call
    (`accelerate launch`) is ended at the end; one the caller set up is left as it was."""
    from pcrm.console import progress_bars
    from pcrm.outputs import OutputFolder, settings_of

    preflight(config)
    folder = OutputFolder(
        config.output, "train-dpo", settings_of(config, RESUME_FREE), overwrite=config.overwrite, resume=config.resume
    )
    folder.plan()  # all checks before the first write
    # progress_bars: also TRL's "Computing reference log probs"
    with caller_process_group_kept(), folder, progress_bars(config.progress):
        return _train(config, folder)


def _train(config: DPOPolicyConfig, folder) -> dict:
    from transformers import set_seed

    from pcrm.data import LoadReport
    from pcrm.models import load_tokenizer

    report = LoadReport()
    dataset = config.data_options.load(report=report)
    tokenizer = load_tokenizer(config.policy)
    dataset, data_info = _training_pairs(config, dataset, tokenizer, report)
    set_seed(config.seed)  # LoRA's initialisation and dropout: same seed, same policy
    trainer = _trainer(config, dataset, tokenizer, folder.work / "checkpoints")
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(folder.checkpoint) if config.resume else None)
    seconds = time.perf_counter() - start
    _save_policy(trainer, tokenizer, folder.work, config.lora)
    steps = [entry for entry in trainer.state.log_history if "loss/base" in entry]
    summary = {
        "kind": "policy",
        "method": config.method,
        "loss": config.loss,
        "beta": config.beta,
        "prior": asdict(config.prior_config()) if config.method != "dpo" else None,
        "config": asdict(config),
        "data": data_info,
        "train_seconds": seconds,
        "metrics": {**result.metrics, "last_step": steps[-1] if steps else {}},
        "versions": versions(),
    }
    folder.commit(summary)
    return summary


def _training_pairs(config: DPOPolicyConfig, dataset, tokenizer, report) -> tuple:
    """The training pairs with their δ* (`pcrm.trainers.dpo.prepare_pairs`) and what pcrm_config.json says of them."""
    from pcrm.console import print_data_summary
    from pcrm.trainers.dpo import prepare_pairs

    dataset, prepared = prepare_pairs(
        dataset,
        tokenizer,
        max_prompt_length=config.prompt_length,
        prior=config.prior_config(),
        max_pairs=config.max_pairs,
        seed=config.seed,
    )
    info = {"source": config.data, "split": config.split, **prepared}
    cut = f", {info['prompts_cut']} prompt(s) cut to {config.prompt_length} tokens" if info["prompts_cut"] else ""
    subset = f" (a seeded subset of {info['available']})" if info["pairs"] < info["available"] else ""
    print_data_summary(report, f"{info['pairs']} pairs for training{subset}{cut}")
    return dataset, info


def _trainer(config: DPOPolicyConfig, dataset, tokenizer, checkpoints):
    from pcrm.models import load_causal_lm
    from pcrm.trainers.dpo import DPO_PROGRESS_KEYS, PcrmDPOTrainer, lora_config, training_arguments
    from pcrm.trainers.progress import set_console
    from pcrm.trainers.schedule import FirstStepWarmup

    trainer = PcrmDPOTrainer(
        model=load_causal_lm(config.policy),
        args=training_arguments(config, checkpoints),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(config),
        callbacks=[FirstStepWarmup()],
    )
    set_console(trainer, config.progress, DPO_PROGRESS_KEYS)
    return trainer


def _save_policy(trainer, tokenizer, output, lora: bool) -> None:
    """The policy (a LoRA adapter merged in), its tokenizer and the training log."""
    policy = trainer.model.merge_and_unload() if lora else trainer.model
    policy.save_pretrained(output)
    tokenizer.save_pretrained(output)
    write_json(output / "log_history.json", trainer.state.log_history)


def format_result(summary: dict) -> str:
    """One line: pairs, steps, seconds, and the last step's accuracy and margin (every step is logged)."""
    last = summary["metrics"]["last_step"]
    return (
        f"{summary['method']}/{summary['loss']}: {summary['data']['pairs']} pairs, "
        f"{last.get('step', 0)} steps, {summary['train_seconds']:.0f} s; "
        f"last step: accuracy {last.get('rewards/accuracies', math.nan):.2f}, "
        f"margin {last.get('rewards/margins', math.nan):.3f}"
    )
