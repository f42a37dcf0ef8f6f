"""The reward-model pipeline (`pcrm.train_reward_model`, behind `pcrm train-rm`): data -> constraints -> trainer ->
saved model -> held-out metrics.

The trainer is `pcrm.trainers.reward.PCRMRewardTrainer`; this pipeline checks the options and the output folder,
trains, saves a standard reward-model folder plus `pcrm_config.json`, and scores the held-out pairs. It leaves the
process as it found it: a torch process group the caller set up stays up, and signal handlers are restored.
"""

import dataclasses
import math
import time
from dataclasses import asdict, dataclass, field

import torch

from pcrm.constraints import METHODS as PRIOR_METHODS
from pcrm.constraints import PriorOptions
from pcrm.data.options import COLUMNS_HELP, DATA_CONFIG_HELP, DataOptions
from pcrm.errors import PcrmError, require
from pcrm.io import versions
from pcrm.models import save_reward_model
from pcrm.pipelines.distributed import caller_process_group_kept, refuse_fsdp_on_cpu, whole_model
from pcrm.pipelines.heldout import heldout_split
from pcrm.trainers.reward import RM_METHODS

PRECISIONS = ("fp32", "bf16", "fp16")
SAMPLERS = ("group_by_length", "random", "sequential")


@dataclass
class RewardModelConfig:
    """Train a reward model on comparison pairs with the ranking (BT) loss, PCRM, or a scale control."""

    method: str = field(
        default="cosine", metadata={"help": f"loss: {', '.join(RM_METHODS)} (PCRM priors: {', '.join(PRIOR_METHODS)})"}
    )
    model: str = field(
        default="minilm", metadata={"help": "backbone: bundled name (minilm, smollm2), local dir or Hub id"}
    )
    data: str = field(default="hh-rlhf-harmless", metadata={"help": "bundled dataset name or file/directory"})
    split: str = field(default="train", metadata={"help": "training split"})
    eval_data: str | None = field(
        default=None,
        metadata={
            "help": "held-out data (default: the --eval-split of --data when it has splits, "
            "else a seeded --eval-fraction of it)"
        },
    )
    eval_split: str = field(
        default="test",
        metadata={
            "help": "held-out split of --eval-data or --data (a slice such as "
            "train[90%%:] also applies to a single file)"
        },
    )
    eval_fraction: float = field(
        default=0.1,
        metadata={
            "help": "without --eval-data, for --data without splits (a file): "
            "hold out this seeded fraction of it (0: none)"
        },
    )
    data_config: str | None = field(default=None, metadata={"help": DATA_CONFIG_HELP})
    columns: str | None = field(default=None, metadata={"help": COLUMNS_HELP})
    output: str = field(default="runs/rm", metadata={"help": "output directory (a save_pretrained reward model)"})
    max_pairs: int | None = field(default=None, metadata={"help": "train on a seeded random subset of this many pairs"})
    max_length: int = field(
        default=256, metadata={"help": "tokens per sequence; longer ones lose the prompt's start (counted)"}
    )
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
    sampler: str = field(
        default="group_by_length",
        metadata={"help": f"batch order: {', '.join(SAMPLERS)} (group_by_length: less padding)"},
    )
    padding_free: bool = field(
        default=True,
        metadata={
            "help": "pack each batch's sequences into rows without padding where that "
            "equals the padded forward (decoders, BERT; pcrm.packing); else padded"
        },
    )
    lora_r: int = field(default=0, metadata={"help": "LoRA rank through peft (0: full fine-tuning)"})
    lower_margin: float = field(default=1.0, metadata={"help": "m₀ of --method lower-margin: −log σ(m − m₀)"})
    center_coefficient: float = field(default=0.01, metadata={"help": "c of --method center: + c·(r_w + r_l)²"})
    save_steps: int = field(default=50, metadata={"help": "checkpoint every N steps"})
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in --output"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing --output"})
    eval_batch_size: int = field(default=32, metadata={"help": "batch size for held-out scoring"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    betas: str = field(
        default="fixed",
        metadata={
            "help": "β1, β3 of the prior: fixed (the --beta1/--beta3 given or the defaults) or auto "
            "(fitted from a short BT warm-up on this backbone; pcrm.calibration)",
            "choices": ["fixed", "auto"],
        },
    )

    seed: int = field(
        default=0, metadata={"help": "seed of the initialisation, data order, pair subset and --method random"}
    )
    prior: PriorOptions = field(
        default_factory=PriorOptions, metadata={"help": "options of the prior (--beta1 ... --encoder)"}
    )

    def __post_init__(self):
        from pcrm.preflight import check_numbers, check_scheduler

        check_numbers(self)
        if self.method not in RM_METHODS:
            raise PcrmError(f"--method must be one of {', '.join(RM_METHODS)}, got {self.method!r}")
        self.prior_config()  # validates the prior's options
        if self.betas not in ("fixed", "auto"):
            raise PcrmError(f"--betas must be fixed or auto, got {self.betas!r}")
        if self.sampler not in SAMPLERS:
            raise PcrmError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.precision not in PRECISIONS:
            raise PcrmError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        positive = {
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "gradient_accumulation": self.gradient_accumulation,
            "save_steps": self.save_steps,
            "epochs": self.epochs,
        }
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise PcrmError(f"--{name.replace('_', '-')} must be > 0, got {value}")
        if self.max_pairs is not None and self.max_pairs < 2:
            raise PcrmError(f"--max-pairs must be >= 2, got {self.max_pairs}")
        if self.center_coefficient < 0 or self.lora_r < 0:
            raise PcrmError("--center-coefficient and --lora-r must be >= 0")
        check_scheduler(self.scheduler)
        checks = (
            (0 <= self.eval_fraction < 1, f"--eval-fraction must be in [0, 1), got {self.eval_fraction}"),
            (0 <= self.warmup_ratio < 1, f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}"),
            (self.eval_batch_size >= 1, f"--eval-batch-size must be >= 1, got {self.eval_batch_size}"),
            (self.max_length >= 2, f"--max-length must be >= 2, got {self.max_length}"),
            (self.max_steps == -1 or self.max_steps >= 1, f"--max-steps must be -1 or >= 1, got {self.max_steps}"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (not (self.resume and self.overwrite), "--resume and --overwrite exclude each other"),
        )
        require(checks)

    def prior_config(self):
        """The `ConstraintConfig` of this run's prior (None for methods without one)."""
        return self.prior.resolve(self.method, self.seed)

    @property
    def data_options(self) -> DataOptions:
        """The training data (`--data`, `--split`, `--data-config`, `--columns`)."""
        return DataOptions(self.data, self.split, self.data_config, self.columns)


# Options that may change on --resume (they do not change what was trained so far).
RESUME_FREE = (
    "output",
    "overwrite",
    "resume",
    "max_steps",
    "epochs",
    "save_steps",
    "progress",
    "eval_batch_size",
    "eval_data",
    "eval_split",
)


def preflight(config: RewardModelConfig) -> dict:
    """Checks that read only (the backbone, its length limit, weights and tokenizer, the held-out pairs, the cache),
    before any file is written; returns the held-out split (`heldout_split`)."""
    from pcrm.io import usable_cache_dir
    from pcrm.preflight import check_backbone, check_max_length, check_model_files, check_tokenizer

    check_backbone(config.model)
    check_max_length(config.model, config.max_length)
    check_model_files(config.model)
    check_tokenizer(config.model)
    split = heldout_split(config)
    usable_cache_dir()
    return split


def train_reward_model(config: "RewardModelConfig", callbacks: list | None = None) -> dict:
    """Train, save a standard reward-model directory plus `pcrm_config.json`, and evaluate on held-out pairs;
    return what `pcrm_config.json` records (an empty dict on the non-main processes of a distributed run).

    The output folder is handled by `pcrm.outputs.OutputFolder` (lock, INCOMPLETE marker, --overwrite swapped in
    only on success, --resume from the newest complete checkpoint). Under `accelerate launch` the process group this
    call joined is ended cleanly at the end; one the caller set up is left as it was."""
    from accelerate import PartialState

    cpu = not torch.cuda.is_available()
    refuse_fsdp_on_cpu(cpu)
    with caller_process_group_kept():
        state = PartialState(cpu=cpu)  # under `accelerate launch`, joins the process group
        result = _train(config, callbacks, state)
        state.wait_for_everyone()  # no rank leaves while rank 0 still saves
        return result


train = train_reward_model  # the name callers used before


def _train(config: RewardModelConfig, callbacks, state) -> dict:
    from pcrm.outputs import OutputFolder, settings_of
    from pcrm.trainers.reward import build_trainer

    split = preflight(config)
    folder = OutputFolder(
        config.output, "train-rm", settings_of(config, RESUME_FREE), overwrite=config.overwrite, resume=config.resume
    )
    work = folder.plan()
    state.wait_for_everyone()  # every rank planned before rank 0 writes
    if state.is_main_process:
        folder.open()
    try:
        state.wait_for_everyone()
        config, calibration = _with_fitted_betas(config)
        trainer, tokenizer, facts = build_trainer(config, callbacks, output=work, train_data=split["train"])
        if not config.resume and state.is_main_process:
            (work / "train_log.jsonl").unlink(missing_ok=True)
        seconds = _run_training(trainer, config, folder.checkpoint)
        model = whole_model(trainer)  # every rank: under ZeRO-3 the weights are gathered from all of them
        if not trainer.accelerator.is_main_process:
            return {}
        if config.lora_r:
            model = model.merge_and_unload()
        save_reward_model(model, tokenizer, work, config.max_length, facts["split_special_tokens"])
        heldout = None if split["pairs"] is None else _heldout_metrics(model, tokenizer, config, split["pairs"])
        result = {
            "method": config.method,
            **_prior_record(config),
            "calibration": calibration,
            "config": asdict(config),
            **facts,
            "train_seconds": seconds,
            "steps": trainer.state.global_step,
            "final_train_log": _last_log(trainer),
            "heldout": heldout,
            "heldout_source": split["record"],
            "versions": versions(),
        }
        folder.commit(result)
    except BaseException:
        folder.close(failed=True)
        raise
    folder.close()
    return result


def _with_fitted_betas(config: RewardModelConfig) -> tuple[RewardModelConfig, dict | None]:
    """`--betas auto`: (the run's config with the fitted β1, β3, the measurement); the caller's config is kept."""
    if config.betas != "auto":
        return config, None
    from pcrm.calibration import calibrate_betas

    calibration = calibrate_betas(config)
    if calibration is None:  # the method has no β to fit
        return config, None
    prior = dataclasses.replace(config.prior, beta1=calibration["beta1"], beta3=calibration["beta3"])
    return dataclasses.replace(config, prior=prior), calibration


def _run_training(trainer, config: RewardModelConfig, checkpoint) -> float:
    """Train (from `checkpoint` on --resume); return the seconds it took."""
    start = time.perf_counter()
    if config.resume and _finished(checkpoint, config.max_steps):
        # the run was cut short after its last step (e.g. in the final save): resuming would train one step more
        from transformers.trainer_callback import TrainerState

        trainer._load_from_checkpoint(str(checkpoint))
        trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    else:
        trainer.train(resume_from_checkpoint=str(checkpoint) if config.resume else None)
    return time.perf_counter() - start


def _heldout_metrics(model, tokenizer, config: RewardModelConfig, pairs) -> dict:
    from pcrm.evaluation.reward_models import evaluate_heldout

    return evaluate_heldout(
        model,
        tokenizer,
        pairs,
        max_length=config.max_length,
        batch_size=config.eval_batch_size,
        progress=config.progress,
        prior=config.prior_config(),
        seed=config.seed,
    )


def _finished(checkpoint, max_steps: int) -> bool:
    """Whether a checkpoint is at the run's last step (`--max-steps`, else the one its trainer_state.json records)."""
    import json

    state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    last = max_steps if max_steps > 0 else state.get("max_steps", 0)
    return 0 < last <= state.get("global_step", 0)


def _last_log(trainer) -> dict:
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    return logs[-1] if logs else {}


def _prior_record(config: RewardModelConfig) -> dict:
    """β1..β3, unit and encoder of the run's prior (what `pcrm evaluate` reads back); None without a prior."""
    prior = config.prior_config()
    return {key: getattr(prior, key) if prior else None for key in ("beta1", "beta2", "beta3", "unit", "encoder")}


def format_result(result: dict) -> str:
    h = result["heldout"]
    trained = (
        f"{result['method']}: {result['train_pairs']} pairs ({result['truncated_pairs']} truncated), "
        f"{result['steps']} steps in {result['train_seconds']:.0f} s"
    )
    if h is None:
        return f"{trained} | no held-out metrics"
    return (
        f"{trained} | held-out ({h['pairs']} pairs): "
        f"accuracy {h['accuracy']:.3f}, margin mean {h['margin_mean']:.3g} std {h['margin_std']:.3g} "
        f"p95 {h['margin_p95']:.3g}, above δ (length/cosine) "
        f"{h['frac_above_delta_length']:.3f}/{h['frac_above_delta_cosine']:.3f}"
    )


Config = RewardModelConfig  # the name the command and older callers use
