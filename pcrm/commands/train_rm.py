"""`pcrm train-rm`: train a reward model with the ranking loss, PCRM, or a scale control.

The trainer is `pcrm.trainers.reward.PCRMRewardTrainer`; this command checks the options and the
output folder, trains, saves a standard reward-model folder plus `pcrm_config.json`, and scores
the held-out pairs.
"""

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from pcrm.constraints import METHODS as PRIOR_METHODS
from pcrm.constraints import PriorOptions
from pcrm.errors import PcrmError
from pcrm.io import versions, write_json
from pcrm.trainers.reward import RM_METHODS

PRECISIONS = ("fp32", "bf16", "fp16")
SAMPLERS = ("group_by_length", "random", "sequential")


@dataclass
class Config:
    """Train a reward model on comparison pairs with the ranking (BT) loss, PCRM, or a scale control."""

    method: str = field(default="cosine", metadata={"help": f"loss: {', '.join(RM_METHODS)} (PCRM priors: {', '.join(PRIOR_METHODS)})"})
    model: str = field(default="minilm", metadata={"help": "backbone: bundled name (minilm, smollm2), local dir or Hub id"})
    data: str = field(default="hh-rlhf-harmless", metadata={"help": "bundled dataset name or file/directory"})
    split: str = field(default="train", metadata={"help": "training split"})
    eval_data: str | None = field(default=None, metadata={"help": "held-out data (default: the test split of the bundled data)"})
    eval_split: str = field(default="test", metadata={"help": "held-out split"})
    output: str = field(default="runs/rm", metadata={"help": "output directory (a save_pretrained reward model)"})
    max_pairs: int | None = field(default=None, metadata={"help": "train on a seeded random subset of this many pairs"})
    max_length: int = field(default=256, metadata={"help": "tokens per sequence; longer ones lose the prompt's start (counted)"})
    learning_rate: float = field(default=5e-5, metadata={"help": "peak learning rate"})
    epochs: float = field(default=1.0, metadata={"help": "training epochs"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many optimizer steps (-1: use --epochs)"})
    batch_size: int = field(default=8, metadata={"help": "pairs per device per step"})
    gradient_accumulation: int = field(default=1, metadata={"help": "gradient accumulation steps"})
    scheduler: str = field(default="cosine", metadata={"help": "learning-rate schedule (transformers name)"})
    warmup_ratio: float = field(default=0.05, metadata={"help": "fraction of steps for linear warm-up"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    precision: str = field(default="fp32", metadata={"help": f"training precision: {', '.join(PRECISIONS)}"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for memory"})
    sampler: str = field(default="group_by_length", metadata={"help": f"batch order: {', '.join(SAMPLERS)} (group_by_length: less padding)"})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank through peft (0: full fine-tuning)"})
    lower_margin: float = field(default=1.0, metadata={"help": "m₀ of --method lower-margin: −log σ(m − m₀)"})
    center_coefficient: float = field(default=0.01, metadata={"help": "c of --method center: + c·(r_w + r_l)²"})
    save_steps: int = field(default=50, metadata={"help": "checkpoint every N steps"})
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in --output"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing --output"})
    eval_batch_size: int = field(default=32, metadata={"help": "batch size for held-out scoring"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})

    seed: int = field(default=0, metadata={"help": "seed of the initialisation, data order, pair subset and --method random"})
    prior: PriorOptions = field(default_factory=PriorOptions, metadata={"help": "options of the prior (--beta1 ... --encoder)"})

    def __post_init__(self):
        if self.method not in RM_METHODS:
            raise PcrmError(f"--method must be one of {', '.join(RM_METHODS)}, got {self.method!r}")
        self.prior_config()  # validates the prior's options
        if self.sampler not in SAMPLERS:
            raise PcrmError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.precision not in PRECISIONS:
            raise PcrmError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        positive = {"learning_rate": self.learning_rate, "batch_size": self.batch_size, "max_length": self.max_length,
                    "gradient_accumulation": self.gradient_accumulation, "save_steps": self.save_steps, "epochs": self.epochs}
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise PcrmError(f"--{name.replace('_', '-')} must be > 0, got {value}")
        if self.max_pairs is not None and self.max_pairs < 2:
            raise PcrmError(f"--max-pairs must be >= 2, got {self.max_pairs}")
        if self.center_coefficient < 0 or self.lora_r < 0:
            raise PcrmError("--center-coefficient and --lora-r must be >= 0")

    def prior_config(self):
        """The `ConstraintConfig` of this run's prior (None for methods without one)."""
        return self.prior.resolve(self.method, self.seed)


def _check_output(config: Config) -> Path:
    output = Path(config.output)
    if output.exists() and any(output.iterdir()) and not (config.overwrite or config.resume):
        raise PcrmError(f"--output {output} exists and is not empty (pass --overwrite to replace it, or --resume)")
    if config.overwrite and not config.resume and output.exists():
        import shutil

        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    return output


def _last_checkpoint(checkpoints: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not checkpoints.is_dir():
        return None
    return get_last_checkpoint(str(checkpoints))


def _last_checkpoint(checkpoints: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not checkpoints.is_dir():
        return None
    return get_last_checkpoint(str(checkpoints))


def train(config: Config, callbacks: list | None = None) -> dict:
    """Train, save a standard reward-model directory plus `pcrm_config.json`, and evaluate on held-out pairs."""
    from accelerate import PartialState

    from pcrm.evaluation.reward_models import evaluate_heldout
    from pcrm.trainers.reward import build_trainer

    state = PartialState(cpu=not torch.cuda.is_available())  # under `accelerate launch`, joins the process group
    if state.is_main_process:
        _check_output(config)
    state.wait_for_everyone()
    output = Path(config.output)
    trainer, tokenizer, facts = build_trainer(config, callbacks)
    resume_from = _last_checkpoint(output / "checkpoints") if config.resume else None
    if config.resume and resume_from is None:
        raise PcrmError(f"--resume: no checkpoint found in {output / 'checkpoints'}")
    if not config.resume and state.is_main_process:
        (output / "train_log.jsonl").unlink(missing_ok=True)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - start
    if not trainer.accelerator.is_main_process:
        return {}
    model = trainer.model
    if config.lora_r:
        model = model.merge_and_unload()
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    heldout = evaluate_heldout(model, tokenizer, config)
    result = {
        "method": config.method,
        **_prior_record(config),
        "config": asdict(config),
        **facts,
        "train_seconds": seconds,
        "steps": trainer.state.global_step,
        "final_train_log": _last_log(trainer),
        "heldout": heldout,
        "versions": versions(),
    }
    write_json(output / "pcrm_config.json", result)
    print(format_result(result))
    return result


def _last_log(trainer) -> dict:
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    return logs[-1] if logs else {}


def _prior_record(config: Config) -> dict:
    """β1..β3, unit and encoder of the run's prior (what `pcrm evaluate` reads back); None without a prior."""
    prior = config.prior_config()
    return {key: getattr(prior, key) if prior else None for key in ("beta1", "beta2", "beta3", "unit", "encoder")}


def format_result(result: dict) -> str:
    h = result["heldout"]
    return (
        f"{result['method']}: {result['train_pairs']} pairs ({result['truncated_pairs']} truncated), "
        f"{result['steps']} steps in {result['train_seconds']:.0f} s | held-out ({h['pairs']} pairs): "
        f"accuracy {h['accuracy']:.3f}, margin mean {h['margin_mean']:.3f} std {h['margin_std']:.3f} "
        f"p95 {h['margin_p95']:.3f}, above δ (length/cosine) {h['frac_above_delta_length']:.3f}/{h['frac_above_delta_cosine']:.3f}"
    )


def run(config: Config) -> dict:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return train(config)
