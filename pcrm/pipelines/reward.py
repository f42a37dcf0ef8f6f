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
from pathlib import Path

import torch

from pcrm.constraints import METHODS as PRIOR_METHODS
from pcrm.constraints import PriorOptions
from pcrm.errors import PcrmError, require
from pcrm.io import versions
from pcrm.models import save_reward_model
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
            "help": "held-out data (default: the --eval-split of --data when it has splits, else a seeded --eval-fraction of it)"
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
            "help": "without --eval-data, for --data without splits (a file): hold out this seeded fraction of it (0: none)"
        },
    )
    data_config: str | None = field(
        default=None, metadata={"help": "configuration name of a Hub/local dataset repository (load_dataset's name)"}
    )
    columns: str | None = field(
        default=None,
        metadata={
            "help": "map column names: chosen=good,rejected=bad,prompt=question (also responses, scores, score_chosen, score_rejected)"
        },
    )
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


def _one_split(source: str) -> bool:
    """Data that has no named splits: a file, a glob, a remote file or a saved Dataset."""
    import glob

    path = Path(source).expanduser()
    return path.is_file() or (path / "state.json").is_file() or glob.has_magic(source) or "://" in source


def heldout_split(config: RewardModelConfig) -> dict:
    """Where the held-out pairs come from, never silently the training pairs: `--eval-data` (its `--eval-split`), the
    `--eval-split` of `--data` when it has splits (or is sliced), else a seeded `--eval-fraction` of `--data`, held out
    of training; or none, said in one line. Returns {"train": the training source (None: --data), "pairs": the
    held-out Dataset or None, "record": what pcrm_config.json and the console say}."""
    import numpy as np

    from pcrm.console import print_data_summary
    from pcrm.data import LoadReport, load_preferences

    report = LoadReport()

    def load(source, split, **kwargs):
        return load_preferences(
            source, split=split, config_name=config.data_config, columns=config.columns, report=report, **kwargs
        )

    if config.eval_data or not _one_split(config.data) or "[" in config.eval_split:
        source = config.eval_data or config.data
        if config.eval_data is None and config.eval_split == config.split:
            raise PcrmError(
                f"--eval-split {config.eval_split} is the training split of {config.data}: held-out pairs must "
                "be others (another --eval-split, or --eval-data)"
            )
        pairs = load(source, config.eval_split)
        print_data_summary(report, f"{len(pairs)} pairs held out for evaluation")
        return {
            "train": None,
            "pairs": pairs,
            "record": {"source": source, "split": config.eval_split, "pairs": len(pairs)},
        }
    if config.eval_split != "test":
        raise PcrmError(
            f"--eval-split {config.eval_split}: {config.data} has no splits (one file); pass --eval-data, "
            "a slice such as --eval-split 'train[90%:]', or --eval-fraction"
        )
    rows = load(config.data, config.split, expand_ranked=False)
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


def train_reward_model(config: "RewardModelConfig", callbacks: list | None = None) -> dict:
    """Train, save a standard reward-model directory plus `pcrm_config.json`, and evaluate on held-out pairs;
    return what `pcrm_config.json` records (an empty dict on the non-main processes of a distributed run).

    The output folder is handled by `pcrm.outputs.OutputFolder` (lock, INCOMPLETE marker, --overwrite swapped in
    only on success, --resume from the newest complete checkpoint). Under `accelerate launch` the process group this
    call joined is ended cleanly at the end; one the caller set up is left as it was."""
    import torch.distributed as dist
    from accelerate import PartialState

    cpu = not torch.cuda.is_available()
    refuse_fsdp_on_cpu(cpu)
    owned = not (dist.is_available() and dist.is_initialized())
    state = PartialState(cpu=cpu)  # under `accelerate launch`, joins the process group
    try:
        result = _train(config, callbacks, state)
        state.wait_for_everyone()  # no rank leaves while rank 0 still saves
        return result
    finally:
        if owned:
            end_process_group()


train = train_reward_model  # the name callers used before


def refuse_fsdp_on_cpu(cpu: bool) -> None:
    """`accelerate launch` with an FSDP config on the CPU would train with plain DDP: accelerate enables FSDP only
    for GPU runs (and pcrm trains on the CPU when there is no CUDA GPU). Refuse rather than run another engine."""
    from accelerate.utils import parse_flag_from_env

    if cpu and parse_flag_from_env("ACCELERATE_USE_FSDP"):
        raise PcrmError(
            "FSDP needs CUDA GPUs (accelerate would silently run DDP on the CPU): on the CPU use "
            "--config_file pcrm/configs/zero2.yaml or zero3.yaml (DeepSpeed) or --multi_gpu (DDP over gloo)"
        )


def whole_model(trainer):
    """The trained model with all its weights on the main process (None on the others); every rank must call it.

    Under DeepSpeed ZeRO-3 each rank holds a shard of every parameter and the modules carry DeepSpeed's hooks: the
    weights are gathered (a collective) into a plain copy, and transformers' ZeRO-3 switch is turned off, so that
    `from_pretrained` on the main process alone (the held-out evaluation's encoder) is not a collective either."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        return trainer.model if trainer.accelerator.is_main_process else None
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    engine = trainer.model_wrapped  # the DeepSpeed engine once trainer.train() ran
    gather = getattr(engine, "_zero3_consolidated_16bit_state_dict", None)
    state_dict = gather() if gather else None  # the training dtype (fp32 here), despite the name
    unset_hf_deepspeed_config()
    if not trainer.accelerator.is_main_process:
        return None
    sharded = trainer.model
    if state_dict is None:  # never sharded (nothing was trained in this process)
        return sharded
    if hasattr(sharded, "peft_config"):  # LoRA: the same adapters on a fresh backbone
        from peft import get_peft_model

        backbone = sharded.get_base_model()
        model = get_peft_model(type(backbone)(backbone.config), sharded.peft_config[sharded.active_adapter])
    else:
        model = type(sharded)(sharded.config)
    model.load_state_dict(state_dict)
    return model.train(sharded.training)


def end_process_group() -> None:
    """Destroy the torch.distributed process group if one is up (a rank exiting with gloo threads alive may abort)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _train(config: RewardModelConfig, callbacks, state) -> dict:
    from pcrm.evaluation.reward_models import evaluate_heldout
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
        calibration = None
        if config.betas == "auto":
            from pcrm.calibration import calibrate_betas

            calibration = calibrate_betas(config)
            if calibration is not None:  # the run (and its record) uses the fitted βs; the caller's config is kept
                prior = dataclasses.replace(config.prior, beta1=calibration["beta1"], beta3=calibration["beta3"])
                config = dataclasses.replace(config, prior=prior)
        trainer, tokenizer, facts = build_trainer(config, callbacks, output=work, train_data=split["train"])
        if not config.resume and state.is_main_process:
            (work / "train_log.jsonl").unlink(missing_ok=True)
        start = time.perf_counter()
        if config.resume and _finished(folder.checkpoint, config.max_steps):
            # the run was cut short after its last step (e.g. in the final save): resuming would train one step more
            from transformers.trainer_callback import TrainerState

            trainer._load_from_checkpoint(str(folder.checkpoint))
            trainer.state = TrainerState.load_from_json(str(folder.checkpoint / "trainer_state.json"))
        else:
            trainer.train(resume_from_checkpoint=str(folder.checkpoint) if config.resume else None)
        seconds = time.perf_counter() - start
        model = whole_model(trainer)  # every rank: under ZeRO-3 the weights are gathered from all of them
        if not trainer.accelerator.is_main_process:
            return {}
        if config.lora_r:
            model = model.merge_and_unload()
        save_reward_model(model, tokenizer, work, config.max_length, facts["split_special_tokens"])
        heldout = None if split["pairs"] is None else evaluate_heldout(model, tokenizer, config, split["pairs"])
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
        f"p95 {h['margin_p95']:.3g}, above δ (length/cosine) {h['frac_above_delta_length']:.3f}/{h['frac_above_delta_cosine']:.3f}"
    )


Config = RewardModelConfig  # the name the command and older callers use
