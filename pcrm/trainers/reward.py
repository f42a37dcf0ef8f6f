"""Reward-model training with the ranking loss, PCRM, or a scale control: `pcrm train-rm`.

`PCRMRewardTrainer` is a thin subclass of TRL's `RewardTrainer`: chosen and rejected go
through the model in one forward pass (packed without padding where exact, `pcrm.packing`;
else TRL's padded collator), and only the loss changes:

    loss = −log σ(m − m₀)  [+ −log σ(δ − m) with a prior]  [+ c·(r_w + r_l)²]

with `m = r_w − r_l`. Everything else (accelerate, DeepSpeed, FSDP, PEFT, checkpoints)
is TRL's / transformers'.
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from transformers import TrainerCallback
from trl import RewardConfig, RewardTrainer
from trl.trainer.reward_trainer import DataCollatorForPreference

from pcrm import losses
from pcrm.constraints import METHODS as PRIOR_METHODS
from pcrm.constraints import ConstraintConfig, add_constraints
from pcrm.data.options import DataOptions
from pcrm.errors import PcrmError
from pcrm.packing import PackedPairCollator, attention_tokens, packed_rewards, packing_exact, read_position
from pcrm.trainers import common_arguments
from pcrm.trainers.collators import DeltaCollator
from pcrm.trainers.progress import set_console
from pcrm.trainers.schedule import FirstStepWarmup

RM_METHODS = ("bt", *PRIOR_METHODS, "lower-margin", "center")
RM_PROGRESS_KEYS = {"loss": "loss", "accuracy": "acc", "margin_mean": "margin", "frac_above_delta": ">δ*"}


@dataclass
class PCRMRewardConfig(RewardConfig):
    """TRL's `RewardConfig` plus the PCRM loss: `method` (bt; a prior — length, cosine, fixed, random — whose
    dataset carries each pair's δ* in a `delta` column, `pcrm.add_constraints`; or the scale controls lower-margin,
    center), the lower margin m₀ and the centring coefficient c:

        loss = −log σ(m − m₀) [− log σ(δ* − m) with a prior] [+ c·(r_w + r_l)²],  m = r_w − r_l.

    m₀ is `lower_margin`, or TRL's per-pair `margin` column when the dataset has one; with a prior that is the
    two-sided loss m₀ < m < δ*."""

    method: str = field(default="bt", metadata={"help": f"loss: {', '.join(RM_METHODS)}"})
    lower_margin: float = field(default=0.0, metadata={"help": "m₀ of −log σ(m − m₀) (0: the plain ranking loss)"})
    center_coefficient: float = field(default=0.0, metadata={"help": "c of + c·(r_w + r_l)²"})

    def __post_init__(self):
        if self.method not in RM_METHODS:
            raise PcrmError(f"method must be one of {', '.join(RM_METHODS)}, got {self.method!r}")
        if self.center_coefficient < 0:
            raise PcrmError(f"center_coefficient must be >= 0, got {self.center_coefficient}")
        if self.bf16 is None and not self.fp16:  # TRL's default is bf16, which a CPU-only machine refuses
            self.bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        super().__post_init__()


class PCRMRewardTrainer(RewardTrainer):
    """`RewardTrainer` whose loss is PCRM's (or BT with a scale control); logs every term.

    Pass a `PCRMRewardConfig` as `args` (keyword options override it; `pcrm train-rm` uses them). Without a
    `data_collator` the trainer builds TRL's with pcrm's δ* extension; a dataset of text pairs is tokenized as
    `pcrm train-rm` does (left truncation to `max_length`, special-token strings in the data kept as text), and
    `save_model` writes a folder that scores the same in every client (`pcrm.save_reward_model`)."""

    def __init__(
        self,
        *args,
        method: str | None = None,
        lower_margin: float | None = None,
        center_coefficient: float | None = None,
        **kwargs,
    ):
        config = kwargs.get("args", args[1] if len(args) > 1 else None)
        loss = config if isinstance(config, PCRMRewardConfig) else None  # a plain RewardConfig: BT
        self.method = method or (loss.method if loss else "bt")
        self.lower_margin = lower_margin if lower_margin is not None else (loss.lower_margin if loss else 0.0)
        self.center_coefficient = (
            center_coefficient if center_coefficient is not None else (loss.center_coefficient if loss else 0.0)
        )
        if kwargs.get("data_collator") is None and kwargs.get("processing_class") is not None:
            pad = kwargs["processing_class"].pad_token_id
            kwargs["data_collator"] = DeltaCollator(DataCollatorForPreference(pad_token_id=pad))
        super().__init__(*args, **kwargs)

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["chosen_ids", "rejected_ids", "delta", "margin", self.args.length_column_name]

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        from pcrm.tokenization import tokenize_pairs

        if "chosen_ids" in dataset.column_names or "chosen" not in dataset.column_names:
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        dataset, _ = tokenize_pairs(dataset, processing_class, args.max_length)
        lengths = [max(len(c), len(r)) for c, r in zip(dataset["chosen_ids"], dataset["rejected_ids"])]
        return dataset.add_column(args.length_column_name, lengths)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        """TRL's save, then the folder set up to score the same in every client (`pcrm.save_reward_model`)."""
        from pcrm.models import save_reward_model
        from pcrm.tokenization import splits_special_tokens

        super().save_model(output_dir, _internal_call)
        if _internal_call or not self.accelerator.is_main_process or self.processing_class is None:
            return
        data = self.train_dataset
        split = (
            splits_special_tokens(self.processing_class, data["chosen"][:1]) if "chosen" in data.column_names else True
        )
        save_reward_model(
            self.accelerator.unwrap_model(self.model),
            self.processing_class,
            output_dir or self.args.output_dir,
            self.args.max_length,
            split,
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if model.training else "eval"
        delta = inputs.pop("delta", None)
        lower = inputs.pop("margin", None)  # TRL's per-pair margin column: each pair's m₀
        if delta is None and self.method in PRIOR_METHODS:
            raise PcrmError(
                f"--method {self.method} needs each pair's δ* (a `delta` column, pcrm.add_constraints); "
                "the batch has none"
            )
        if "reward_index" in inputs:  # a packed batch (pcrm.packing): no compute on padding, same rewards
            rewards = packed_rewards(model, inputs)
            outputs = {"logits": rewards[:, None]}
        else:
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
            rewards = outputs.logits.squeeze(-1)
        chosen, rejected = torch.chunk(rewards, chunks=2)
        margin = chosen - rejected
        rank = losses.lower_margin_loss(chosen, rejected, self.lower_margin if lower is None else lower)
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


def prepare_dataset(
    tokenizer,
    data: DataOptions | Dataset,
    *,
    max_length: int,
    prior: ConstraintConfig | None = None,
    max_pairs: int | None = None,
    seed: int = 0,
    progress: bool = True,
):
    """Load pairs (`data`: where from, or rows already loaded and mapped), keep a seeded subset of `max_pairs`, add
    each pair's δ* under `prior` (None: no prior), tokenize to `max_length`; return (dataset, truncated count)."""
    from pcrm.console import print_data_summary
    from pcrm.data import LoadReport, load_preferences
    from pcrm.tokenization import tokenize_pairs

    report = LoadReport()
    dataset = data.load(report=report) if isinstance(data, DataOptions) else load_preferences(data, report=report)
    if max_pairs is not None and max_pairs < len(dataset):
        dataset = dataset.shuffle(seed=seed).select(range(max_pairs))
    if prior is not None:
        dataset = add_constraints(dataset, prior, tokenizer, show_progress=progress)
    dataset, truncated = tokenize_pairs(dataset, tokenizer, max_length)
    print_data_summary(report, f"{len(dataset)} pairs for training", truncated, max_length)
    lengths = [max(len(c), len(r)) for c, r in zip(dataset["chosen_ids"], dataset["rejected_ids"])]
    return dataset.add_column("length", lengths), truncated


def pair_collator(model, pad_token_id: int, padding_free: bool) -> tuple:
    """(collator, packed): packed batches where the probe finds the packed forward equal to the padded one
    (`pcrm.packing`), else TRL's padded collator (with a warning when `padding_free` was asked for)."""
    packed = padding_free and packing_exact(model, pad_token_id)
    if padding_free and not packed:
        logging.getLogger("pcrm").warning(
            "padding-free batches are not exact for %s: batches are padded (--no-padding-free silences this)",
            type(model).__name__,
        )
    if packed:
        collator = PackedPairCollator(pad_token_id, read_position(model), attention_tokens=attention_tokens(model))
    else:
        collator = DataCollatorForPreference(pad_token_id=pad_token_id)
    return collator, packed


def _lora_config(rank: int):
    """peft's LoRA on every linear layer of a sequence classifier (None for rank 0: full fine-tuning)."""
    if not rank:
        return None
    from peft import LoraConfig

    return LoraConfig(task_type="SEQ_CLS", r=rank, lora_alpha=2 * rank, target_modules="all-linear")


def reward_arguments(config, output_dir: Path) -> RewardConfig:
    """TRL's `RewardConfig` of a `train-rm` run (checkpoints in `output_dir`); its option errors as one line."""
    try:
        return RewardConfig(
            output_dir=str(output_dir),
            **common_arguments(config),
            lr_scheduler_type=config.scheduler,
            warmup_steps=config.warmup_ratio,
            weight_decay=config.weight_decay,
            train_sampling_strategy=config.sampler,
            max_length=None,  # truncation is ours (left side, counted); TRL would drop long pairs silently
            save_steps=config.save_steps,
            save_total_limit=2,
            data_seed=config.seed,
            report_to=["tensorboard"],
            dataloader_drop_last=False,
            use_cpu=not torch.cuda.is_available(),  # also makes multi-process CPU runs use DDP over gloo
        )
    except ValueError as err:  # e.g. an unknown scheduler
        raise PcrmError(f"invalid training option: {str(err).splitlines()[0]}") from None


def build_trainer(config, callbacks: list | None = None, output: Path | None = None, train_data=None):
    """Everything `train` needs for a `train-rm` run (`config`: a `pcrm.pipelines.reward.RewardModelConfig`): the
    trainer (model, data, args), the tokenizer and facts about the data.

    `output`: where checkpoints and the log go (default `config.output`; `pcrm.outputs.OutputFolder` may choose a
    sibling); `train_data`: the training rows when not all of `config.data` (a Dataset: train-rm holds some out)."""
    from transformers import set_seed

    from pcrm.models import load_reward_model, load_tokenizer

    output = Path(config.output if output is None else output)
    tokenizer = load_tokenizer(config.model)
    train_dataset, truncated = prepare_dataset(
        tokenizer,
        config.data_options if train_data is None else train_data,
        max_length=config.max_length,
        prior=config.prior_config(),
        max_pairs=config.max_pairs,
        seed=config.seed,
        progress=config.progress,
    )
    set_seed(config.seed)  # the score head is initialised at random: same seed, same model
    model = load_reward_model(config.model)
    model.config.pad_token_id = tokenizer.pad_token_id
    collator, packed = pair_collator(model, tokenizer.pad_token_id, config.padding_free)
    trainer = PCRMRewardTrainer(
        model=model,
        args=reward_arguments(config, output / "checkpoints"),
        train_dataset=train_dataset,
        processing_class=tokenizer,
        data_collator=DeltaCollator(collator),
        peft_config=_lora_config(config.lora_r),
        callbacks=[JsonlLogger(output / "train_log.jsonl"), FirstStepWarmup(), *(callbacks or [])],
        method=config.method,
        lower_margin=config.lower_margin if config.method == "lower-margin" else 0.0,
        center_coefficient=config.center_coefficient if config.method == "center" else 0.0,
    )
    set_console(trainer, config.progress, RM_PROGRESS_KEYS)
    return trainer, tokenizer, _data_facts(train_dataset, truncated, tokenizer, packed)


def _data_facts(dataset, truncated: int, tokenizer, packed: bool) -> dict:
    """What pcrm_config.json records about the training data and its batches."""
    from pcrm.data import fingerprint
    from pcrm.tokenization import splits_special_tokens

    return {
        "train_pairs": len(dataset),
        "truncated_pairs": truncated,
        "data_fingerprint": fingerprint(dataset),
        "padding_free": packed,
        "split_special_tokens": splits_special_tokens(tokenizer, dataset["chosen"][:1]),
    }
