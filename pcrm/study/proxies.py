"""The proxies and scores stages: a proxy reward model per (method, seed) trained on the gold labels
(proxies/METHOD-seedK/), and each proxy's scores of the pool and of the held-out pairs (scores/METHOD-seedK.npz)."""

from pathlib import Path

import numpy as np

from pcrm.io import write_npz
from pcrm.study.policy import standardise
from pcrm.study.pool import read_pool

ENSEMBLE = "bt-ensemble"


def proxy_dirs(config, out: Path) -> dict[str, Path]:
    """label ("METHOD-seedK") -> directory of every trained proxy."""
    return {
        f"{method}-seed{seed}": out / "proxies" / f"{method}-seed{seed}"
        for method in config.methods
        for seed in config.seeds
    }


def method_of(label: str) -> str:
    return label if label == ENSEMBLE else label.rsplit("-seed", 1)[0]


def train_proxy(config, method: str, seed: int, directory: Path, train: Path, test: Path | None = None) -> dict:
    """`pcrm train-rm` of one proxy on the pairs in `train`, evaluated on those in `test` (none: not evaluated)."""
    from pcrm.constraints import PriorOptions
    from pcrm.pipelines.reward import RewardModelConfig, format_result, train_reward_model

    rm_config = RewardModelConfig(
        method=method,
        model=config.proxy_model,
        data=str(train),
        split="train",
        eval_data=None if test is None else str(test),
        eval_split="test",
        eval_fraction=0.0,
        output=str(directory),
        seed=seed,
        max_length=config.max_length,
        learning_rate=config.learning_rate,
        epochs=config.epochs,
        batch_size=config.batch_size,
        eval_batch_size=config.score_batch_size,
        save_steps=10**9,
        overwrite=directory.exists(),
        progress=config.progress,
        betas=config.betas,
        prior=PriorOptions(encoder=config.encoder),
    )
    result = train_reward_model(rm_config)
    print(format_result(result), flush=True)
    return result


def stage_proxies(config, out: Path) -> list[str]:
    """Train every (method, seed) proxy that is not trained yet; returns the labels trained now."""
    trained = []
    for label, directory in proxy_dirs(config, out).items():
        if (directory / "pcrm_config.json").is_file():
            continue
        method, seed = label.rsplit("-seed", 1)
        print(f"== proxies: training {label}", flush=True)
        labels = out / "labels"
        train_proxy(config, method, int(seed), directory, labels / "train.jsonl", labels / "test.jsonl")
        trained.append(label)
    return trained


def score_proxy(config, out: Path, directory: Path) -> dict:
    """A proxy's scores of the pool [prompts, samples] and of the held-out pairs (human orientation)."""
    from pcrm.data import load_preferences
    from pcrm.models import default_device
    from pcrm.scoring import RewardScorer

    prompts, responses, _ = read_pool(out / "pool" / "pool.jsonl")
    test = load_preferences(str(out / "labels" / "test-human.jsonl"))
    test = {k: list(test[k]) for k in ("prompt", "chosen", "rejected")}
    scorer = RewardScorer.load(directory, config.max_length, default_device(config.device), config.score_batch_size)
    texts_p = [p for p, row in zip(prompts, responses) for _ in row] + test["prompt"] * 2
    texts_r = [r for row in responses for r in row] + test["chosen"] + test["rejected"]
    scores = scorer.responses(texts_p, texts_r, config.progress)
    k, m = len(prompts) * len(responses[0]), len(test["prompt"])
    return {
        "pool": scores[:k].reshape(len(prompts), -1),
        "test_chosen": scores[k : k + m],
        "test_rejected": scores[k + m :],
    }


def score_missing(proxies: dict, folder: Path, score, what: str) -> list[str]:
    """folder/LABEL.npz = `score(proxies[LABEL])` for every label without its file yet; returns the labels scored
    now (`what` names the scoring in the progress line)."""
    done = []
    for label, proxy in proxies.items():
        path = folder / f"{label}.npz"
        if not path.is_file():
            print(f"== {what}: {label} scores the pool", flush=True)
            write_npz(path, score(proxy))
            done.append(label)
    return done


def stage_scores(config, out: Path) -> list[str]:
    """Every proxy scores the pool and the held-out pairs once (scores/LABEL.npz); returns the labels scored now."""
    return score_missing(proxy_dirs(config, out), out / "scores", lambda d: score_proxy(config, out, d), "best-of-N")


def standardise_members(scores, reference=None, groups=None) -> np.ndarray:
    """Each seed's scores [S, ...] as z_s = (r_s − μ_s)/σ_s, μ_s and σ_s the mean and std of that seed's `reference`
    scores (default: `scores` itself); with `groups` ([P] over the prompt axis of `scores` [S, P, n], e.g. the
    on-policy folds, where every fold has its own reward model) within each group of prompts."""
    scores = np.asarray(scores, dtype=np.float64)
    if groups is not None:
        return np.stack([standardise(member, groups) for member in scores])
    reference = scores if reference is None else np.asarray(reference, dtype=np.float64)
    axes, shape = tuple(range(1, reference.ndim)), (-1,) + (1,) * (scores.ndim - 1)
    mean, std = reference.mean(axis=axes), reference.std(axis=axes)
    return (scores - mean.reshape(shape)) / np.where(std > 0, std, 1.0).reshape(shape)


def ensemble_scores(bt, uwo_lambda: float = 1.0, reference=None, groups=None) -> dict[str, np.ndarray]:
    """The BT seeds [S, ...] as one ensemble proxy [1, ...] optimised three ways (Coste et al. 2024), when S ≥ 2, on
    the members standardised first (`standardise_members(bt, reference, groups)`: BT leaves each seed's offset and
    scale arbitrary, and they must not decide the worst case or the variance; λ is then in units of a member's std):
    mean z̄ = (1/S) Σ_s z_s; worst case (WCO) min_s z_s; uncertainty-weighted (UWO) z̄ − λ·(1/S) Σ_s (z_s − z̄)²."""
    if bt is None or len(bt) < 2:
        return {}
    z = standardise_members(bt, reference, groups)
    mean = z.mean(axis=0)
    return {
        "bt-ensemble-mean": mean[None],
        "bt-ensemble-wco": z.min(axis=0)[None],
        "bt-ensemble-uwo": (mean - uwo_lambda * z.var(axis=0))[None],
    }


def load_scores(config, out: Path) -> dict[str, dict]:
    """label -> scores of every proxy, plus the BT ensemble (mean of the BT seeds' scores) when there are ≥ 2 BT
    seeds."""
    scores = {}
    for label in proxy_dirs(config, out):
        with np.load(out / "scores" / f"{label}.npz") as arrays:
            scores[label] = {k: arrays[k] for k in arrays.files}
    bt = [label for label in scores if label.rsplit("-seed", 1)[0] == "bt"]
    if len(bt) >= 2:
        scores[ENSEMBLE] = {key: np.mean([scores[label][key] for label in bt], axis=0) for key in scores[bt[0]]}
    return scores
