"""Reward-model training with the ranking loss, PCRM, or a scale control: `pcrm train-rm`.

`PCRMRewardTrainer` is a thin subclass of TRL's `RewardTrainer`: chosen and rejected go
through the model in one forward pass (TRL's collator), and only the loss changes:

    loss = −log σ(m − m₀)  [+ −log σ(δ − m) with a prior]  [+ c·(r_w + r_l)²]

with `m = r_w − r_l`. Everything else (accelerate, DeepSpeed, FSDP, PEFT, checkpoints)
is TRL's / transformers'.
"""

import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback
from trl import RewardConfig, RewardTrainer
from trl.trainer.reward_trainer import DataCollatorForPreference

from pcrm import losses
from pcrm.constraints import METHODS as PRIOR_METHODS
from pcrm.constraints import ConstraintConfig, add_constraints, prior_config
from pcrm.errors import PcrmError
from pcrm.io import write_json

RM_METHODS = ("bt", *PRIOR_METHODS, "lower-margin", "center")
PRECISIONS = ("fp32", "bf16", "fp16")
SAMPLERS = ("group_by_length", "random", "sequential")


@dataclass
class Config(ConstraintConfig):
    """Train a reward model on comparison pairs with the ranking (BT) loss, PCRM, or a scale control."""

    METHOD_CHOICES = RM_METHODS

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

    def __post_init__(self):
        super().__post_init__()
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


class PreferenceCollator(DataCollatorForPreference):
    """TRL's preference collator, plus the per-pair `delta` column."""

    def torch_call(self, examples):
        batch = super().torch_call(examples)
        if "delta" in examples[0]:
            batch["delta"] = torch.tensor([example["delta"] for example in examples], dtype=torch.float32)
        return batch


class PCRMRewardTrainer(RewardTrainer):
    """`RewardTrainer` whose loss is PCRM's (or BT with a scale control); logs both terms."""

    def __init__(self, *args, method: str = "bt", lower_margin: float = 0.0, center_coefficient: float = 0.0, **kwargs):
        self.method = method
        self.lower_margin = lower_margin if method == "lower-margin" else 0.0
        self.center_coefficient = center_coefficient if method == "center" else 0.0
        super().__init__(*args, **kwargs)

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["chosen_ids", "rejected_ids", "delta", self.args.length_column_name]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if model.training else "eval"
        delta = inputs.pop("delta", None)
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
        margin = chosen - rejected
        rank = losses.lower_margin_loss(chosen, rejected, self.lower_margin)
        constraint = losses.constraint_term(margin, delta) if delta is not None else torch.zeros_like(rank)
        center = losses.centering_penalty(chosen, rejected, self.center_coefficient)
        loss = (rank + constraint + center).mean()
        if not torch.isfinite(loss):
            raise PcrmError(
                f"non-finite loss at step {self.state.global_step} (try a lower --learning-rate); "
                f"checkpoints so far are kept in {self.args.output_dir}"
            )
        self._log_metrics(mode, chosen, rejected, delta, rank, constraint, center)
        return (loss, outputs) if return_outputs else loss

    @torch.no_grad()
    def _log_metrics(self, mode, chosen, rejected, delta, rank, constraint, center):
        gather = self.accelerator.gather_for_metrics
        chosen, rejected = gather(chosen.detach()), gather(rejected.detach())
        margin = chosen - rejected
        rewards = torch.cat([chosen, rejected])
        values = {
            "loss_rank": gather(rank.detach()).mean(),
            "loss_constraint": gather(constraint.detach()).mean(),
            "loss_center": gather(center.detach()).mean(),
            "accuracy": (margin > 0).float().mean(),
            "margin_mean": margin.mean(),
            "margin_std": margin.std() if len(margin) > 1 else torch.zeros(()),
            "reward_mean": rewards.mean(),
            "reward_std": rewards.std(),
        }
        if delta is not None:
            values["frac_above_delta"] = (margin > gather(delta)).float().mean()
        for key, value in values.items():
            self._metrics[mode][key].append(value.item())


class JsonlLogger(TrainerCallback):
    """Append every log record (one per step) to `train_log.jsonl`."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": state.global_step, **logs}) + "\n")


def prepare_dataset(config: Config, tokenizer, split: str, data: str, max_pairs: int | None = None):
    """Load pairs, add constraints (when the method has a prior), tokenize; return (dataset, truncated count)."""
    from pcrm.data import load_preferences
    from pcrm.tokenization import tokenize_pairs

    dataset = load_preferences(data, split=split)
    if max_pairs is not None and max_pairs < len(dataset):
        dataset = dataset.shuffle(seed=config.seed).select(range(max_pairs))
    prior = prior_config(config)
    if prior is not None:
        dataset = add_constraints(dataset, prior, tokenizer, show_progress=config.progress)
    dataset, truncated = tokenize_pairs(dataset, tokenizer, config.max_length)
    lengths = [max(len(c), len(r)) for c, r in zip(dataset["chosen_ids"], dataset["rejected_ids"])]
    return dataset.add_column("length", lengths), truncated


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


def build_trainer(config: Config, callbacks: list | None = None):
    """Everything `train` needs: the trainer (model, data, args) and facts about the data."""
    from pcrm.data import fingerprint
    from pcrm.models import load_reward_model, load_tokenizer

    output = Path(config.output)
    tokenizer = load_tokenizer(config.model)
    train_dataset, truncated = prepare_dataset(config, tokenizer, config.split, config.data, config.max_pairs)
    model = load_reward_model(config.model)
    model.config.pad_token_id = tokenizer.pad_token_id
    peft_config = None
    if config.lora_r:
        from peft import LoraConfig

        peft_config = LoraConfig(task_type="SEQ_CLS", r=config.lora_r, lora_alpha=2 * config.lora_r, target_modules="all-linear")
    args = RewardConfig(
        output_dir=str(output / "checkpoints"),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        lr_scheduler_type=config.scheduler,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        bf16=config.precision == "bf16",
        fp16=config.precision == "fp16",
        gradient_checkpointing=config.gradient_checkpointing,
        train_sampling_strategy=config.sampler,
        max_length=None,  # truncation is ours (left side, counted); TRL would drop long pairs silently
        logging_steps=1,
        save_steps=config.save_steps,
        save_total_limit=2,
        seed=config.seed,
        data_seed=config.seed,
        report_to=["tensorboard"],
        disable_tqdm=not config.progress,
        dataloader_drop_last=False,
        use_cpu=not torch.cuda.is_available(),  # also makes multi-process CPU runs use DDP over gloo
    )
    trainer = PCRMRewardTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        data_collator=PreferenceCollator(pad_token_id=tokenizer.pad_token_id),
        peft_config=peft_config,
        callbacks=[JsonlLogger(output / "train_log.jsonl"), *(callbacks or [])],
        method=config.method,
        lower_margin=config.lower_margin,
        center_coefficient=config.center_coefficient,
    )
    facts = {"train_pairs": len(train_dataset), "truncated_pairs": truncated, "data_fingerprint": fingerprint(train_dataset)}
    return trainer, tokenizer, facts


def train(config: Config, callbacks: list | None = None) -> dict:
    """Train, save a standard reward-model directory plus `pcrm_config.json`, and evaluate on held-out pairs."""
    from accelerate import PartialState

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
        **{key: getattr(config, key) for key in ("beta1", "beta2", "beta3", "unit", "encoder")},
        "config": asdict(config),
        **facts,
        "train_seconds": seconds,
        "steps": trainer.state.global_step,
        "final_train_log": _last_log(trainer),
        "heldout": heldout,
        "versions": _versions(),
    }
    write_json(output / "pcrm_config.json", result)
    print(format_result(result))
    return result


def _last_log(trainer) -> dict:
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    return logs[-1] if logs else {}


def evaluate_heldout(model, tokenizer, config: Config) -> dict:
    """Accuracy and margin statistics on held-out pairs, with δ under each prior at default βs."""
    from pcrm.data import load_preferences
    from pcrm.scoring import score_pairs

    data = config.eval_data or config.data
    dataset = load_preferences(data, split=config.eval_split)
    chosen, rejected = score_pairs(model, tokenizer, dataset, config.max_length, config.eval_batch_size, config.progress)
    margin = chosen - rejected
    stats = margin_statistics(margin)
    stats["pairs"] = len(margin)
    for prior in ("length", "cosine"):
        deltas = np.asarray(add_constraints(dataset, ConstraintConfig(method=prior), tokenizer, show_progress=False)["delta"])
        stats[f"frac_above_delta_{prior}"] = float(np.mean(margin > deltas))
    return stats


def margin_statistics(margin: np.ndarray) -> dict:
    """Accuracy (ties count ½) and the margin distribution."""
    return {
        "accuracy": float(np.mean((margin > 0) + 0.5 * (margin == 0))),
        "margin_mean": float(margin.mean()),
        "margin_std": float(margin.std()),
        "margin_abs_mean": float(np.abs(margin).mean()),
        "margin_p5": float(np.quantile(margin, 0.05)),
        "margin_p50": float(np.quantile(margin, 0.5)),
        "margin_p95": float(np.quantile(margin, 0.95)),
    }


def _versions() -> dict:
    import datasets
    import transformers
    import trl

    from pcrm import __version__

    return {"pcrm": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "trl": trl.__version__, "datasets": datasets.__version__, "python": platform.python_version()}


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
