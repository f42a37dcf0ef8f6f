"""`pcrm train-dpo`: DPO (or IPO, SLiC hinge) with PCRM's prior term on the implicit reward margin.

`PcrmDPOTrainer` is TRL's `DPOTrainer` with one change, the loss. With the implicit reward margin
`m = β·[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))]` each pair costs
`base(m) − log σ(δ* − m)` (`pcrm.losses.constrained_pair_loss`), δ* read from the dataset's `delta`
column; without that column the loss is the plain base loss. Tokenisation, the reference model,
PEFT, precomputed reference log-probs and accelerate stay TRL's. IPO is the sequence-level form of
the IPO paper (TRL's own IPO divides the log-ratios by the completion length).

Default δ* on the implicit-reward scale. DPO margins are small and right-skewed: after plain DPO
(β = 0.1, lr 2e-5, 1 epoch) on 64 bundled pairs, SmolLM2-135M's margins on those pairs had
p5 −0.06, median 0.53, mean 1.06, p95 3.4. On the same pairs the token length ratio has median 0.57
(p5 0.20, p95 0.94) and the angular cosine similarity median 0.59 (p5 0.50, p95 0.74). The βs put
δ* of a median pair near the upper quantiles (≈ 2.5), tighter for similar pairs, looser for
dissimilar ones. The two terms balance at m = δ*/2, so PCRM pulls margins above that back.
- length: β1 = 1, β3 = 0.5 → δ* = 1.5 at s = 1, 2.2 at the median, 5.5 at s = 0.2;
- cosine: β1 = 3, β3 = −2.5 → δ* = 1.5 at s = 0.74, 2.6 at the median, 3.5 at s = 0.5;
- fixed δ* = 2.5; random δ* ~ U[2, 3].
Margins grow with training, so for another policy, β, learning rate or data rerun plain DPO
(`--method dpo`), read the margin quantiles (`pcrm evaluate-policy --split train`) and set the βs.
"""

import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from trl import DPOConfig, DPOTrainer

from pcrm import __version__
from pcrm.constraints import METHODS, ConstraintConfig, add_constraints, prior_config, summarize
from pcrm.data import fingerprint, load_preferences
from pcrm.errors import PcrmError
from pcrm.io import write_json
from pcrm.losses import PAIR_LOSSES, constrained_pair_loss, dpo_margin

PRECISIONS = ("fp32", "bf16", "fp16")
# δ* = β1/(s+β2)+β3 on the DPO implicit-reward scale (module docstring): method -> (β1, β3)
DPO_BETAS = {"length": (1.0, 0.5), "cosine": (3.0, -2.5)}
NON_MODEL_KEYS = ("completion_mask", "ref_chosen_logps", "ref_rejected_logps", "delta")


class PcrmDPOTrainer(DPOTrainer):
    """TRL's `DPOTrainer` whose loss is `constrained_pair_loss(m, δ*)` with δ* from the `delta` column.

    `args.loss_type` must be a single one of sigmoid, ipo, hinge. Logged per step besides TRL's
    bookkeeping: `loss/base`, `loss/constraint`, `rewards/accuracies`, `rewards/margins` (mean),
    `rewards/margins_std`, `rewards/above_delta` (fraction of m > δ*), `logps/{chosen,rejected}_drift`
    (policy − reference log-prob) and `delta/mean`.
    """

    def __init__(self, model, ref_model=None, args: DPOConfig | None = None, **kwargs):
        if args is None or len(args.loss_type) != 1 or args.loss_type[0] not in PAIR_LOSSES:
            raise ValueError(f"PcrmDPOTrainer needs a DPOConfig with one loss_type of {', '.join(PAIR_LOSSES)}")
        for name, default in (("ld_alpha", None), ("f_divergence_type", "reverse_kl"), ("use_weighting", False)):
            if getattr(args, name) != default:
                raise ValueError(f"PcrmDPOTrainer does not support {name}={getattr(args, name)!r}")
        super().__init__(model, ref_model, args, **kwargs)
        # Wrapped after TRL's precompute, whose reference forward must not see `delta`.
        self.data_collator = _WithDelta(self.data_collator)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if "delta" not in self._signature_columns:
            self._signature_columns.append("delta")

    def compute_ref_log_probs(self, model, inputs):
        return super().compute_ref_log_probs(model, {k: v for k, v in inputs.items() if k != "delta"})

    def sequence_logps(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed log-probs of the chosen and the rejected completions of a collated batch."""
        model_kwargs = {k: v for k, v in inputs.items() if k not in NON_MODEL_KEYS}
        labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        # Prompt-learning PEFT prepends virtual tokens; keep the positions of the real ones.
        return outputs.log_probs[:, -(labels.size(1) - 1) :].sum(dim=1).chunk(2)

    def _compute_loss(self, model, inputs, return_outputs):
        if return_outputs:
            raise ValueError("PcrmDPOTrainer returns no logits: evaluate with prediction_loss_only=True")
        chosen, rejected = self.sequence_logps(model, inputs)
        if self.precompute_ref_logps:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_chosen, ref_rejected = self.compute_ref_log_probs(self.ref_model or self.model, inputs)
        margin = dpo_margin(chosen, rejected, ref_chosen, ref_rejected, self.beta)
        delta = inputs.get("delta")
        base, constraint = constrained_pair_loss(margin, delta, self.loss_types[0], self.beta, self.label_smoothing)
        loss = base.mean() + constraint.mean()
        if not torch.isfinite(loss):
            raise PcrmError(
                f"loss is {loss.item()} at step {self.state.global_step} (base {base.mean().item()}, "
                f"constraint {constraint.mean().item()}): lower --learning-rate, or train with --precision fp32"
            )
        self._record(base, constraint, margin, delta, chosen - ref_chosen, rejected - ref_rejected)
        return loss

    @torch.no_grad()
    def _record(self, base, constraint, margin, delta, chosen_drift, rejected_drift) -> None:
        gather = self.accelerator.gather_for_metrics
        margin = gather(margin.float())
        metrics = {
            "loss/base": gather(base.float()).mean(),
            "loss/constraint": gather(constraint.float()).mean(),
            "rewards/accuracies": (margin > 0).float().mean(),
            "rewards/margins": margin.mean(),
            "rewards/margins_std": margin.std(unbiased=False),
            "logps/chosen_drift": gather(chosen_drift.float()).mean(),
            "logps/rejected_drift": gather(rejected_drift.float()).mean(),
        }
        if delta is not None:
            delta = gather(delta.float())
            metrics["rewards/above_delta"] = (margin > delta).float().mean()
            metrics["delta/mean"] = delta.mean()
        mode = "train" if self.model.training else "eval"
        for name, value in zip(metrics, torch.stack(list(metrics.values())).tolist()):
            self._metrics[mode][name].append(value)


class _WithDelta:
    """A collator that adds the examples' `delta` (when present) to the batch of the collator it wraps."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples):
        batch = self.collator(examples)
        if "delta" in examples[0]:
            batch["delta"] = torch.tensor([example["delta"] for example in examples], dtype=torch.float32)
        return batch


@dataclass
class Config(ConstraintConfig):
    """Align a policy with DPO, IPO or SLiC hinge, with PCRM's prior term (or without: --method dpo)."""

    METHOD_CHOICES = ("dpo", *METHODS)

    method: str = field(default="cosine", metadata={"help": f"prior of δ*: dpo (no prior), {', '.join(METHODS)}"})
    fixed_delta: float = field(default=2.5, metadata={"help": "δ* of every pair for --method fixed"})
    random_low: float = field(default=2.0, metadata={"help": "lower end of δ* for --method random"})
    random_high: float = field(default=3.0, metadata={"help": "upper end of δ* for --method random"})
    seed: int = field(default=0, metadata={"help": "seed of training, the pair subset and --method random"})
    batch_size: int = field(default=4, metadata={"help": "pairs per device step (also the encoder batch size)"})
    policy: str = field(default="smollm2", metadata={"help": "starting policy: bundled name, model directory or Hub id"})
    data: str = field(default="hh-rlhf-harmless", metadata={"help": "bundled dataset name or file/directory"})
    split: str = field(default="train", metadata={"help": "split of the dataset"})
    max_pairs: int | None = field(default=None, metadata={"help": "train on a seeded random subset of this many pairs"})
    loss: str = field(default="sigmoid", metadata={"help": f"base loss on the margin: {', '.join(PAIR_LOSSES)}"})
    beta: float = field(default=0.1, metadata={"help": "β of the implicit reward β·log(π/π_ref)"})
    label_smoothing: float = field(default=0.0, metadata={"help": "label smoothing ε of both ranking terms"})
    learning_rate: float = field(default=5e-6, metadata={"help": "peak learning rate (cosine schedule, warm-up over the first tenth of steps)"})
    epochs: float = field(default=1.0, metadata={"help": "training epochs"})
    gradient_accumulation: int = field(default=2, metadata={"help": "gradient accumulation steps"})
    max_length: int = field(default=256, metadata={"help": "max tokens of prompt + response (the response end is cut)"})
    max_prompt_length: int | None = field(default=None, metadata={"help": "prompts are cut from the left to this many tokens (default: max-length/2)"})
    precision: str = field(default="fp32", metadata={"help": f"{', '.join(PRECISIONS)} (bf16/fp16: mixed precision)"})
    lora: bool = field(default=False, metadata={"help": "train a LoRA adapter (merged into the saved policy)"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (alpha = 2·rank)"})
    precompute_ref: bool = field(default=True, metadata={"help": "compute reference log-probs once before training"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for memory"})
    save_steps: int = field(default=0, metadata={"help": "checkpoint (model + optimizer) every N optimizer steps into OUTPUT/checkpoints, for --resume (0: none)"})
    resume: bool = field(default=False, metadata={"help": "resume from the last checkpoint in OUTPUT/checkpoints"})
    overwrite: bool = field(default=False, metadata={"help": "write into an existing output directory"})
    output: str = field(default="runs/dpo", metadata={"help": "directory of the aligned policy"})

    def __post_init__(self):
        beta1, beta3 = DPO_BETAS.get(self.method, (None, None))
        self.beta1 = beta1 if self.beta1 is None else self.beta1
        self.beta3 = beta3 if self.beta3 is None else self.beta3
        super().__post_init__()
        if self.max_prompt_length is None:
            self.max_prompt_length = self.max_length // 2
        checks = (
            (self.loss in PAIR_LOSSES, f"--loss must be one of {', '.join(PAIR_LOSSES)}, got {self.loss!r}"),
            (math.isfinite(self.beta) and self.beta > 0, f"--beta must be a finite number > 0, got {self.beta}"),
            (0 <= self.label_smoothing < 0.5, f"--label-smoothing must be in [0, 0.5), got {self.label_smoothing}"),
            (math.isfinite(self.learning_rate) and self.learning_rate > 0, f"--learning-rate must be > 0, got {self.learning_rate}"),
            (math.isfinite(self.epochs) and self.epochs > 0, f"--epochs must be > 0, got {self.epochs}"),
            (self.gradient_accumulation >= 1, f"--gradient-accumulation must be >= 1, got {self.gradient_accumulation}"),
            (self.max_length >= 4, f"--max-length must be >= 4, got {self.max_length}"),
            (0 < self.max_prompt_length < self.max_length, f"--max-prompt-length must be in [1, --max-length), got {self.max_prompt_length}"),
            (self.max_pairs is None or self.max_pairs >= 1, f"--max-pairs must be >= 1, got {self.max_pairs}"),
            (self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
            (self.lora_r >= 1, f"--lora-r must be >= 1, got {self.lora_r}"),
            (self.save_steps >= 0, f"--save-steps must be >= 0, got {self.save_steps}"),
            (not (self.resume and self.overwrite), "--resume and --overwrite exclude each other"),
        )
        for ok, message in checks:
            if not ok:
                raise PcrmError(message)


def run(config: Config) -> dict:
    from pcrm.models import load_causal_lm, load_tokenizer

    output = _prepare_output(config)
    dataset = load_preferences(config.data, split=config.split)
    tokenizer = load_tokenizer(config.policy)
    dataset, data_info = prepare_pairs(dataset, config, tokenizer)
    trainer = PcrmDPOTrainer(
        model=load_causal_lm(config.policy),
        args=training_arguments(config, output / "checkpoints"),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=_lora_config(config),
    )
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=config.resume or None)
    seconds = time.perf_counter() - start
    policy = trainer.model.merge_and_unload() if config.lora else trainer.model
    policy.save_pretrained(output)
    tokenizer.save_pretrained(output)
    write_json(output / "log_history.json", trainer.state.log_history)
    steps = [entry for entry in trainer.state.log_history if "loss/base" in entry]
    summary = {
        "kind": "policy",
        "method": config.method,
        "loss": config.loss,
        "beta": config.beta,
        "prior": asdict(prior_config(config)) if config.method != "dpo" else None,
        "config": asdict(config),
        "data": data_info,
        "train_seconds": seconds,
        "metrics": {**result.metrics, "last_step": steps[-1] if steps else {}},
        "versions": _versions(),
    }
    write_json(output / "pcrm_config.json", summary)
    last = summary["metrics"]["last_step"]
    print(
        f"{config.method}/{config.loss}: {data_info['pairs']} pairs, {result.global_step} steps, {seconds:.0f} s; "
        f"last step: accuracy {last.get('rewards/accuracies', math.nan):.2f}, margin {last.get('rewards/margins', math.nan):.3f}"
    )
    print(f"wrote {output}")
    return summary


def prepare_pairs(dataset, config: Config, tokenizer):
    """The training pairs (seeded subset, prompts cut from the left) with their `delta`, and a description."""
    available = len(dataset)
    if config.max_pairs is not None and config.max_pairs < available:
        dataset = dataset.shuffle(seed=config.seed).select(range(config.max_pairs))
    info = {"source": config.data, "split": config.split, "fingerprint": fingerprint(dataset), "available": available, "pairs": len(dataset)}
    prompts, info["prompts_cut"] = cut_prompts(list(dataset["prompt"]), tokenizer, config.max_prompt_length)
    dataset = dataset.remove_columns("prompt").add_column("prompt", prompts)
    prior = prior_config(config)
    if prior is not None:
        dataset = add_constraints(dataset, prior, tokenizer)
        info["constraints"] = summarize(dataset)
    return dataset, info


def cut_prompts(prompts: list, tokenizer, max_tokens: int) -> tuple[list, int]:
    """Text prompts longer than `max_tokens` tokens cut from the left (the last turns stay), and how many were cut.

    Conversational prompts are returned as they are (TRL's chat template and `max_length` apply).
    """
    if not prompts or not isinstance(prompts[0], str):
        return prompts, 0
    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    long_rows = [i for i, row in enumerate(ids) if len(row) > max_tokens]
    prompts = list(prompts)
    for i in long_rows:
        prompts[i] = tokenizer.decode(ids[i][-max_tokens:])
    return prompts, len(long_rows)


def training_arguments(config: Config, output_dir: Path) -> DPOConfig:
    try:
        return DPOConfig(
            output_dir=str(output_dir),
            beta=config.beta,
            loss_type=[config.loss],
            label_smoothing=config.label_smoothing,
            learning_rate=config.learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=0.1,
            num_train_epochs=config.epochs,
            per_device_train_batch_size=config.batch_size,
            gradient_accumulation_steps=config.gradient_accumulation,
            max_length=config.max_length,
            precompute_ref_log_probs=config.precompute_ref,
            bf16=config.precision == "bf16",
            fp16=config.precision == "fp16",
            gradient_checkpointing=config.gradient_checkpointing,
            logging_steps=1,
            save_strategy="steps" if config.save_steps else "no",
            save_steps=config.save_steps or 1,
            save_total_limit=1,
            use_cpu=config.precision == "bf16" and not torch.cuda.is_available(),  # bf16 autocast on the CPU
            seed=config.seed,
            report_to="none",
        )
    except ValueError as err:  # e.g. bf16 on a GPU without it
        raise PcrmError(f"--precision {config.precision}: {str(err).splitlines()[0]}") from None


def _lora_config(config: Config):
    if not config.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=2 * config.lora_r, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def _prepare_output(config: Config) -> Path:
    """The output directory, checked: no silent overwrite, and a checkpoint to resume from."""
    output = Path(config.output)
    checkpoints = output / "checkpoints"
    if config.resume:
        if not any(checkpoints.glob("checkpoint-*")):
            raise PcrmError(f"{checkpoints}: no checkpoint to resume from")
    elif output.exists() and any(output.iterdir()):
        if not config.overwrite:
            raise PcrmError(f"{output}: output directory exists and is not empty (pass --overwrite or --resume)")
        shutil.rmtree(checkpoints, ignore_errors=True)  # stale checkpoints would be resumed from later
    output.mkdir(parents=True, exist_ok=True)
    return output


def _versions() -> dict:
    import peft
    import transformers
    import trl

    return {"pcrm": __version__, "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__, "peft": peft.__version__}
