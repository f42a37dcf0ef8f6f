"""The labels stage: the gold RM scores the comparison pairs and relabels the train pairs with Bradley–Terry noise.

Writes labels/train.jsonl (the noisy labels the proxies learn), test.jsonl (the noiseless gold order),
test-human.jsonl (the human order), gold.npz (the gold scores) and summary.json.
"""

import json
from pathlib import Path

import numpy as np
from scipy.special import expit

from pcrm.errors import PcrmError
from pcrm.io import atomic_write_text, write_json, write_npz
from pcrm.scoring import score_responses
from pcrm.study.gold import load_gold_model

# Default label noise: τ = NOISE_SCALE × std of the gold margins of the train pairs. For Gaussian margins this
# flips ≈ 22% of the labels relative to the noiseless gold order (E σ(−|Z|/0.5) ≈ 0.22), close to the 25%
# label noise of Coste et al. (2024) and to the disagreement rate of human annotators.
NOISE_SCALE = 0.5
PAIR_FIELDS = ("prompt", "chosen", "rejected")


def noisy_preferences(gold_a, gold_b, tau: float, seed: int) -> np.ndarray:
    """Whether a ≻ b for each pair, drawn with P(a ≻ b) = σ((g_a − g_b)/τ) (τ = 0: the gold order, ties by a coin)."""
    margin = np.asarray(gold_a, dtype=np.float64) - np.asarray(gold_b, dtype=np.float64)
    p = expit(margin / tau) if tau > 0 else np.where(margin > 0, 1.0, np.where(margin < 0, 0.0, 0.5))
    return np.random.default_rng(seed).random(len(margin)) < p


def default_tau(margins) -> float:
    """τ = NOISE_SCALE × std of the gold margins."""
    return NOISE_SCALE * float(np.std(np.asarray(margins, dtype=np.float64)))


def expected_flip_rate(margins, tau: float) -> float:
    """Expected share of labels that disagree with the noiseless gold order: mean σ(−|m|/τ) (ties count ½)."""
    m = np.abs(np.asarray(margins, dtype=np.float64))
    return float(np.mean(expit(-m / tau))) if tau > 0 else float(np.mean(m == 0) / 2)


def _subset(dataset, count: int | None, seed: int):
    if count is not None and count < len(dataset):
        return dataset.shuffle(seed=seed).select(range(count))
    return dataset


def _write_pairs(path: Path, prompts, chosen, rejected) -> None:
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in zip(prompts, chosen, rejected)]
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def _write_ordered(path: Path, pairs: dict, keep) -> None:
    """`pairs` with chosen and rejected swapped where `keep` is False."""
    chosen, rejected = pairs["chosen"], pairs["rejected"]
    _write_pairs(path, pairs["prompt"], np.where(keep, chosen, rejected), np.where(keep, rejected, chosen))


def _load_pairs(config) -> tuple[dict, dict]:
    """The (seeded subsets of the) train and test pairs of `config.data`, as lists of text."""
    from pcrm.data import load_preferences

    train = _subset(load_preferences(config.data, split="train"), config.max_pairs, config.label_seed)
    test = _subset(load_preferences(config.data, split="test"), config.test_pairs, config.label_seed)
    train, test = ({k: list(d[k]) for k in PAIR_FIELDS} for d in (train, test))
    for name, data in (("train", train), ("test", test)):
        if not (isinstance(data["prompt"][0], str) and isinstance(data["chosen"][0], str)):
            raise PcrmError(f"{config.data} ({name}): the study needs text prompts and responses")
    return train, test


def _gold_scores(config, train: dict, test: dict) -> tuple[np.ndarray, ...]:
    """Gold scores of the train chosen, train rejected, test chosen and test rejected responses."""
    from pcrm.models import default_device

    model, tokenizer = load_gold_model(config.gold, default_device(config.device))
    prompts = train["prompt"] * 2 + test["prompt"] * 2
    responses = train["chosen"] + train["rejected"] + test["chosen"] + test["rejected"]
    print(f"== labels: gold scores of {len(responses)} responses", flush=True)
    scores = score_responses(
        model, tokenizer, prompts, responses, config.max_length, config.score_batch_size, config.progress
    )
    n, m = len(train["prompt"]), len(test["prompt"])
    return scores[:n], scores[n : 2 * n], scores[2 * n : 2 * n + m], scores[2 * n + m :]


def _label_summary(config, tau: float, keep, train_c, train_r, test_c, test_r) -> dict:
    margins = train_c - train_r
    strict = margins != 0
    return {
        "gold": config.gold,
        "train_pairs": len(train_c),
        "test_pairs": len(test_c),
        "tau": tau,
        "tau_rule": f"{NOISE_SCALE} × std of the gold train margins" if config.label_noise is None else "--label-noise",
        "gold_margin_std": float(np.std(margins)),
        "gold_margin_mean": float(np.mean(margins)),
        "gold_ties_train": int((~strict).sum()),
        "gold_ties_test": int((test_c == test_r).sum()),
        "expected_flip_rate": expected_flip_rate(margins, tau),
        "noisy_vs_gold_agreement": float(np.mean(keep[strict] == (margins[strict] > 0))) if strict.any() else None,
        "noisy_vs_human_agreement": float(np.mean(keep)),
        "gold_vs_human_agreement_train": float(np.mean(np.sign(margins) + 1) / 2),
        "gold_vs_human_agreement_test": float(np.mean(np.sign(test_c - test_r) + 1) / 2),
    }


def stage_labels(config, out: Path) -> dict:
    """Gold scores of every train and test response; the train pairs relabelled with Bradley–Terry noise."""
    folder = out / "labels"
    train, test = _load_pairs(config)
    train_c, train_r, test_c, test_r = _gold_scores(config, train, test)
    margins = train_c - train_r
    tau = default_tau(margins) if config.label_noise is None else float(config.label_noise)
    keep = noisy_preferences(train_c, train_r, tau, config.label_seed)  # True: the human-chosen response wins
    _write_ordered(folder / "train.jsonl", train, keep)
    _write_ordered(folder / "test.jsonl", test, test_c >= test_r)  # the noiseless gold order (ties: human order)
    _write_pairs(folder / "test-human.jsonl", test["prompt"], test["chosen"], test["rejected"])
    arrays = {"train_chosen": train_c, "train_rejected": train_r, "train_keep": keep}
    write_npz(folder / "gold.npz", arrays | {"test_chosen": test_c, "test_rejected": test_r})
    summary = _label_summary(config, tau, keep, train_c, train_r, test_c, test_r)
    write_json(folder / "summary.json", summary)
    print(
        f"labels: τ = {tau:.4g} ({summary['tau_rule']}); noisy labels agree with the gold order on "
        f"{summary['noisy_vs_gold_agreement']:.3f} and with the human labels on "
        f"{summary['noisy_vs_human_agreement']:.3f} of the train pairs; the gold RM agrees with the human labels on "
        f"{summary['gold_vs_human_agreement_test']:.3f} of the test pairs",
        flush=True,
    )
    return summary
