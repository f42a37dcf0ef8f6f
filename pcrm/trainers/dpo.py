"""DPO (or IPO, SLiC hinge) with PCRM's prior term on the implicit reward margin: `PcrmDPOTrainer`.

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

from pathlib import Path

import torch
from trl import DPOConfig, DPOTrainer

from pcrm.constraints import ConstraintConfig, add_constraints, summarize
from pcrm.data import fingerprint
from pcrm.errors import PcrmError
from pcrm.losses import PAIR_LOSSES, constrained_pair_loss, dpo_margin
from pcrm.tokenization import cut_prompts
from pcrm.trainers import common_arguments
from pcrm.trainers.collators import DeltaCollator

# δ* = β1/(s+β2)+β3 on the DPO implicit-reward scale (module docstring): method -> (β1, β3)
DPO_BETAS = {"length": (1.0, 0.5), "cosine": (3.0, -2.5)}
DPO_PROGRESS_KEYS = {
    "loss": "loss",
    "rewards/accuracies": "acc",
    "rewards/margins": "margin",
    "rewards/above_delta": ">δ*",
}
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
        self.data_collator = DeltaCollator(self.data_collator)

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


def prepare_pairs(
    dataset,
    tokenizer,
    *,
    max_prompt_length: int,
    prior: ConstraintConfig | None = None,
    max_pairs: int | None = None,
    seed: int = 0,
):
    """The training pairs (a seeded subset of `max_pairs`, prompts cut from the left to `max_prompt_length` tokens)
    with each pair's δ* under `prior` (None: no `delta` column), and a description of them."""
    available = len(dataset)
    if max_pairs is not None and max_pairs < available:
        dataset = dataset.shuffle(seed=seed).select(range(max_pairs))
    info = {"fingerprint": fingerprint(dataset), "available": available, "pairs": len(dataset)}
    prompts, info["prompts_cut"] = cut_prompts(list(dataset["prompt"]), tokenizer, max_prompt_length)
    dataset = dataset.remove_columns("prompt").add_column("prompt", prompts)
    if prior is not None:
        dataset = add_constraints(dataset, prior, tokenizer)
        info["constraints"] = summarize(dataset)
    return dataset, info


def training_arguments(config, output_dir: Path) -> DPOConfig:
    """TRL's `DPOConfig` of a `train-dpo` run (`config`: a `pcrm.pipelines.dpo.DPOPolicyConfig`)."""
    try:
        return DPOConfig(
            output_dir=str(output_dir),
            **common_arguments(config),
            beta=config.beta,
            loss_type=[config.loss],
            label_smoothing=config.label_smoothing,
            lr_scheduler_type="cosine",
            warmup_steps=0.1,
            max_length=config.max_length,
            precompute_ref_log_probs=config.precompute_ref,
            save_strategy="steps" if config.save_steps else "no",
            save_steps=config.save_steps or 1,
            save_total_limit=1,
            use_cpu=config.precision == "bf16" and not torch.cuda.is_available(),  # bf16 autocast on the CPU
            report_to="none",
        )
    except ValueError as err:  # e.g. bf16 on a GPU without it
        raise PcrmError(f"--precision {config.precision}: {str(err).splitlines()[0]}") from None


def lora_config(config):
    """peft's LoRA on every linear layer of the policy when `config.lora` (alpha = 2·rank), else None."""
    if not config.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=2 * config.lora_r,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
