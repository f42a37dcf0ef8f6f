"""Self-calibrating βs (`pcrm train-rm --betas auto`): measure the backbone's margin scale, then fit β1, β3.

The right β1, β3 of δ* = β1/(s + β2) + β3 depend on the scale of margins the backbone produces (a 7B
RM's margins are ~10× a MiniLM's). Instead of a separate warm-up run plus `pcrm constraints
--suggest-from`, `--betas auto` does both before training:

1. a short BT warm-up (a quarter of the run's optimizer steps, at most `MAX_WARMUP_STEPS`) from the
   same initialisation, on a seeded subset of at most `CALIBRATION_PAIRS` training pairs;
2. the warm-up model's margins on that subset and the prior's similarity of each pair;
3. `pcrm.constraints.suggest_betas(similarity, margins, β2)`: the most similar pairs (95th percentile
   of s) get δ* = the median positive margin, the least similar (5th percentile) the 95th-percentile
   margin.

The warm-up model is discarded (it lives in a temporary folder); training then starts from the
backbone again with the fitted βs, which `pcrm_config.json` records with the measurement.
"""

import dataclasses
import math
import tempfile
from pathlib import Path

import numpy as np

from pcrm.errors import PcrmError

MAX_WARMUP_STEPS = 50
CALIBRATION_PAIRS = 256
BETA_METHODS = ("length", "cosine")  # the priors with β1, β3 (fixed/random have none)


def warmup_steps(total_steps: int) -> int:
    """A quarter of the run's steps, at least 1 and at most `MAX_WARMUP_STEPS`."""
    return max(1, min(MAX_WARMUP_STEPS, total_steps // 4))


def planned_steps(config, pairs: int) -> int:
    """Optimizer steps of a `train-rm` run on `pairs` pairs (one process)."""
    if config.max_steps and config.max_steps > 0:
        return int(config.max_steps)
    per_epoch = math.ceil(pairs / (config.batch_size * config.gradient_accumulation))
    return max(1, math.ceil(per_epoch * config.epochs))


def calibrate_betas(config) -> dict | None:
    """Fit β1, β3 of `config`'s prior from a short BT warm-up (`config` is not changed).

    `config` is a `pcrm.pipelines.reward.RewardModelConfig`. Returns the measurement (β1, β2, β3, warm-up steps,
    pairs, margin quantiles), or None when the method has no β to calibrate (bt, fixed, random,
    lower-margin, center).
    """
    from pcrm.constraints import suggest_betas
    from pcrm.scoring import score_pairs

    if config.method not in BETA_METHODS:
        return None
    if config.prior.beta1 is not None or config.prior.beta3 is not None:
        raise PcrmError("--betas auto fits β1 and β3 itself: drop --beta1/--beta3 (or use --betas fixed)")
    data = config.data_options.load()
    train_pairs = min(len(data), config.max_pairs or len(data))
    steps = warmup_steps(planned_steps(config, train_pairs))
    subset_size = min(train_pairs, CALIBRATION_PAIRS)
    with tempfile.TemporaryDirectory(prefix="pcrm-calibration-") as tmp:
        model, tokenizer = _warmup_model(config, steps, subset_size if subset_size < len(data) else None, Path(tmp))
        # The run's own pairs (prepare_dataset's seeded --max-pairs subset; cached for the run) and the warm-up's
        # subset, a prefix of them: the βs must give δ* > 0 on every pair of the run, not only the subset's.
        shuffled = data.shuffle(seed=config.seed)
        run_pairs = shuffled.select(range(train_pairs)) if train_pairs < len(data) else data
        subset = shuffled.select(range(subset_size)) if subset_size < len(data) else data
        chosen, rejected = score_pairs(
            model, tokenizer, subset, config.max_length, config.eval_batch_size, config.progress
        )
        prior = config.prior_config()
        all_similarity = _similarities(run_pairs, prior, tokenizer, config.progress)
        prefix = run_pairs is not data or subset is data  # the subset is the first pairs of the run's
        similarity = (
            all_similarity[:subset_size] if prefix else _similarities(subset, prior, tokenizer, config.progress)
        )
    margins = chosen - rejected
    try:
        beta1, beta3 = suggest_betas(
            similarity, margins, config.prior.beta2, max_similarity=float(all_similarity.max())
        )
    except PcrmError as err:
        raise PcrmError(f"--betas auto after a {steps}-step BT warm-up on {subset_size} pairs: {err}") from None
    return {
        "betas": "auto",
        "beta1": beta1,
        "beta2": config.prior.beta2,
        "beta3": beta3,
        "warmup_steps": steps,
        "warmup_pairs": subset_size,
        **_margin_summary(margins),
        "similarity_p5": float(np.quantile(similarity, 0.05)),
        "similarity_p95": float(np.quantile(similarity, 0.95)),
    }


def _warmup_model(config, steps: int, max_pairs: int | None, output: Path):
    """(model, tokenizer) after `steps` BT steps from the run's initialisation on its first `max_pairs` pairs."""
    from pcrm.trainers.reward import build_trainer
    from pcrm.trainers.schedule import FirstStepWarmup

    warmup = dataclasses.replace(
        config,
        method="bt",
        betas="fixed",
        max_pairs=max_pairs,
        max_steps=steps,
        output=str(output),
        save_steps=10**9,
        resume=False,
        overwrite=True,
        warmup_ratio=0.0,
        scheduler="constant",
    )
    trainer, tokenizer, _ = build_trainer(warmup, output=output)
    trainer.remove_callback(FirstStepWarmup)  # no warm-up here, and a short warm-up run is no news to announce
    trainer.train()
    model = trainer.model
    return (model.merge_and_unload() if config.lora_r else model), tokenizer


def _similarities(pairs, prior, tokenizer, progress: bool) -> np.ndarray:
    from pcrm.constraints import add_constraints

    return np.asarray(add_constraints(pairs, prior, tokenizer, show_progress=progress)["similarity"], dtype=np.float64)


def _margin_summary(margins: np.ndarray) -> dict:
    positive = margins[margins > 0]
    return {
        "warmup_margin_p50": float(np.median(margins)),
        "warmup_margin_p95": float(np.quantile(margins, 0.95)),
        "warmup_median_positive_margin": float(np.median(positive)) if len(positive) else None,
        "warmup_accuracy": float(np.mean(margins > 0)),
    }
