"""Reward-model metrics: pure numpy/scipy functions of scores and labels.

Conventions (docs/metrics.md has the details):
- a labelled pair's `margin` is score(chosen) − score(rejected); a tie (margin 0) is half right;
- rank correlations with human scores are NaN where the human scores cannot rank (fewer than
  two responses, or all equal) and 0 where they can but the model's scores are all equal;
- every CI is a seeded 95% bootstrap over the statistic's rows (pairs, responses or prompts):
  `scipy.stats.bootstrap` (BCa) when the rows are independent; on ranked data, where one prompt
  gives several pairs, pair-level statistics resample whole prompts (`cluster_bootstrap_ci`,
  percentile), since pairs of one prompt share responses and are not independent.
"""

import functools
import math
import warnings

import numpy as np
from scipy import stats
from scipy.special import expit

QUANTILES = (5, 25, 50, 75, 95)
BOOTSTRAP_BATCH_ELEMENTS = 1 << 21  # resampled values held at once per array
BCA_MAX_ROWS = 5000


def kl_best_of_n(n: int) -> float:
    """KL(best-of-n ‖ policy) = log n − (n−1)/n (exact for distinct rewards)."""
    return math.log(n) - (n - 1) / n


def pair_credit(margin) -> np.ndarray:
    """1 where the chosen response scores higher, 0.5 on a tie, 0 otherwise."""
    return (np.sign(margin) + 1) / 2


def mean(values):
    return np.mean(values, axis=-1)


def accuracy(margin):
    return mean(pair_credit(margin))


def pairwise_kendall(margin):
    """Kendall's τ over labelled pairs: (concordant − discordant) / pairs = 2·accuracy − 1."""
    return mean(np.sign(margin))


def fraction_above(margin, delta):
    """Share of pairs whose margin exceeds their bound δ*."""
    return mean(np.asarray(margin) > np.asarray(delta))


def spearman(x, y):
    """Spearman's ρ (Pearson's r of average ranks); NaN where either input is constant."""
    x = stats.rankdata(x, axis=-1)
    y = stats.rankdata(y, axis=-1)
    x = x - x.mean(axis=-1, keepdims=True)  # exact zeros for constant input: ranks are half-integers
    y = y - y.mean(axis=-1, keepdims=True)
    denominator = np.sqrt((x * x).sum(axis=-1) * (y * y).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (x * y).sum(axis=-1) / denominator, math.nan)


def kendall(x, y):
    """Kendall's τ-b; NaN where either input is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.ndim > 1:
        return np.array([kendall(a, b) for a, b in zip(x, y)])
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(stats.kendalltau(x, y).statistic)


def human_spearman(score, human):
    """Spearman's ρ of model scores against human scores, under the `_rank_rule`."""
    return _rank_rule(spearman(score, human), score, human)


def human_kendall(score, human):
    """Kendall's τ-b of model scores against human scores, under the `_rank_rule`."""
    return _rank_rule(kendall(score, human), score, human)


def _rank_rule(correlation, score, human):
    """NaN where the human scores cannot rank (fewer than 2 responses or all equal); 0 where
    they can but the model scores are all equal (the model ranks nothing)."""
    human_ranks = np.ptp(human, axis=-1) > 0
    return np.where(human_ranks, np.where(np.ptp(score, axis=-1) > 0, correlation, 0.0), math.nan)


def groups(group) -> list[np.ndarray]:
    """Indices of each distinct group id, groups in sorted order, indices in input order."""
    group = np.asarray(group)
    order = np.argsort(group, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(group[order])) + 1) if len(order) else []


def group_rank_agreement(score, human, group) -> tuple[np.ndarray, np.ndarray]:
    """Per-group ρ and τ against human scores: two arrays, one entry per group (NaN = skipped)."""
    score, human = np.asarray(score, dtype=float), np.asarray(human, dtype=float)
    index = groups(group)
    rho = np.array([human_spearman(score[i], human[i]) for i in index], dtype=float)
    tau = np.array([human_kendall(score[i], human[i]) for i in index], dtype=float)
    return rho, tau


def ranked_pairs(human, group) -> tuple[np.ndarray, np.ndarray]:
    """(chosen, rejected) indices of every within-group pair whose human scores differ.

    Chosen is the higher-scored response; pairs come in the order of `expand_ranked_rows`.
    """
    human = np.asarray(human, dtype=float)
    chosen, rejected = [np.zeros(0, dtype=int)], [np.zeros(0, dtype=int)]
    for index in groups(group):
        a, b = np.triu_indices(len(index), k=1)
        keep = human[index[a]] != human[index[b]]
        a, b = index[a[keep]], index[b[keep]]
        a_wins = human[a] > human[b]
        chosen.append(np.where(a_wins, a, b))
        rejected.append(np.where(a_wins, b, a))
    return np.concatenate(chosen), np.concatenate(rejected)


def describe(values) -> dict:
    """Mean, std, min and max."""
    values = np.asarray(values, dtype=float)
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
    }


def margin_distribution(margin) -> dict:
    """Mean, std and the quantiles p5, p25, p50, p75, p95 of the margins."""
    margin = np.asarray(margin, dtype=float)
    quantiles = np.percentile(margin, QUANTILES)
    return {
        "mean": float(margin.mean()),
        "std": float(margin.std()),
        **{f"p{q}": float(v) for q, v in zip(QUANTILES, quantiles)},
    }


def reliability(margin, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reliability bins of P(chosen) = σ(margin), each pair counted in both orientations.

    A pair gives (σ(m), happened) and (σ(−m), did not happen), so the bins are symmetric
    about 0.5 and a model is not credited for always predicting "chosen wins". Returns
    count, mean confidence and observed frequency per equal-width bin of [0, 1] (NaN when
    empty), along the last axis.
    """
    p = expit(np.asarray(margin, dtype=float))
    probability = np.concatenate([p, 1 - p], axis=-1)
    outcome = np.concatenate([np.ones_like(p), np.zeros_like(p)], axis=-1)
    rows = probability.shape[:-1]
    index = np.minimum((probability * n_bins).astype(int), n_bins - 1)
    index = (index + n_bins * np.arange(math.prod(rows)).reshape(*rows, 1)).ravel()  # one bin range per row
    size = math.prod(rows) * n_bins
    count = np.bincount(index, minlength=size).reshape(*rows, n_bins)
    with np.errstate(invalid="ignore"):
        confidence = np.bincount(index, probability.ravel(), size).reshape(*rows, n_bins) / count
        frequency = np.bincount(index, outcome.ravel(), size).reshape(*rows, n_bins) / count
    return count, confidence, frequency


def expected_calibration_error(margin, n_bins: int = 10):
    """Σ_bins (count / total) · |frequency − confidence| over the `reliability` bins."""
    count, confidence, frequency = reliability(margin, n_bins)
    gap = np.where(count > 0, np.abs(frequency - confidence), 0.0)
    return (count * gap).sum(axis=-1) / count.sum(axis=-1)


def bootstrap_ci(statistic, *arrays, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> list[float] | None:
    """95% bootstrap interval of `statistic(*arrays)` by `scipy.stats.bootstrap`; rows of all arrays resample together.

    BCa up to `BCA_MAX_ROWS` rows (its jackknife costs one statistic per row), percentile above;
    percentile also where BCa is undefined (degenerate data). `statistic` reduces the last axis
    (it gets a batch of resamples at once). None with fewer than 2 rows, no resamples, or no
    finite interval.
    """
    n = len(arrays[0])
    if n < 2 or n_boot < 1:
        return None
    data = tuple(np.asarray(a) for a in arrays)
    method = "BCa" if n <= BCA_MAX_ROWS else "percentile"
    for method in dict.fromkeys((method, "percentile")):
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            result = stats.bootstrap(
                data,
                lambda *a, axis=-1: statistic(*a),
                n_resamples=n_boot,
                paired=True,
                vectorized=True,
                confidence_level=level,
                method=method,
                rng=np.random.default_rng(seed),
                batch=max(1, BOOTSTRAP_BATCH_ELEMENTS // n),
            )
        low, high = result.confidence_interval
        if math.isfinite(low) and math.isfinite(high):
            return [float(low), float(high)]
    return None


def cluster_bootstrap_ci(
    statistic, *arrays, groups, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> list[float] | None:
    """Percentile bootstrap interval of `statistic(*arrays)` resampling whole groups (e.g. prompts) with replacement.

    Each resample draws as many groups as there are, uniformly with replacement
    (`default_rng(seed).integers(0, n_groups, size=(n_boot, n_groups))`, groups numbered in
    sorted order of their ids), and concatenates the rows of the drawn groups in draw order.
    Resamples where the statistic is not finite are left out. None with fewer than 2 groups,
    no resamples, or no finite resample.
    """
    group = np.asarray(groups)
    if len(group) != len(arrays[0]):
        raise ValueError("groups must have one entry per row")
    labels, inverse = np.unique(group, return_inverse=True)
    if len(labels) < 2 or n_boot < 1:
        return None
    order = np.argsort(inverse, kind="stable")
    data = [np.asarray(a)[order] for a in arrays]
    sizes = np.bincount(inverse, minlength=len(labels))
    starts = np.cumsum(sizes) - sizes
    draws = np.random.default_rng(seed).integers(0, len(labels), size=(n_boot, len(labels)))
    values = np.empty(n_boot)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for b, draw in enumerate(draws):
            size = sizes[draw]
            index = np.repeat(starts[draw] - (np.cumsum(size) - size), size) + np.arange(size.sum())
            values[b] = statistic(*(a[index] for a in data))
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return [float(low), float(high)]


def win_rate(scores_a, scores_b, resamples: int, seed: int) -> dict:
    """Fraction of prompts where A's response outscores B's (ties count ½), with its 95% bootstrap CI."""
    wins = pair_credit(np.asarray(scores_a, dtype=float) - np.asarray(scores_b, dtype=float))
    low, high = bootstrap_ci(mean, wins, n_boot=resamples, seed=seed) or (math.nan, math.nan)
    return {"rate": float(wins.mean()), "ci_low": low, "ci_high": high}


def margin_statistics(margin) -> dict:
    """Accuracy (ties count ½) and the margin distribution, as flat keys (pcrm_config.json's `heldout`)."""
    margin = np.asarray(margin, dtype=float)
    return {
        "accuracy": float(accuracy(margin)),
        "margin_mean": float(margin.mean()),
        "margin_std": float(margin.std()),
        "margin_abs_mean": float(np.abs(margin).mean()),
        "margin_p5": float(np.quantile(margin, 0.05)),
        "margin_p50": float(np.quantile(margin, 0.5)),
        "margin_p95": float(np.quantile(margin, 0.95)),
    }


def format_estimate(estimate: dict | None, ci: bool = True) -> str:
    """`0.712 [0.671, 0.750]`; `–` when undefined or not applicable."""
    if estimate is None or estimate["value"] is None:
        return "–"
    text = f"{estimate['value']:.3f}"
    if ci and estimate["ci"] is not None:
        text += f" [{estimate['ci'][0]:.3f}, {estimate['ci'][1]:.3f}]"
    return text


def estimate(statistic, *arrays, n_boot: int = 1000, seed: int = 0, groups=None) -> dict:
    """`{"value", "ci", "n"}` of `statistic(*arrays)`; value and ci are None where undefined.

    With `groups` (one id per row) that repeat, the CI resamples groups (`cluster_bootstrap_ci`);
    otherwise rows (`bootstrap_ci`).
    """
    n = len(arrays[0])
    value = float(statistic(*arrays)) if n else math.nan
    if not math.isfinite(value):
        return {"value": None, "ci": None, "n": n}
    if groups is not None and len(np.unique(groups)) < n:
        ci = cluster_bootstrap_ci(statistic, *arrays, groups=groups, n_boot=n_boot, seed=seed)
    else:
        ci = bootstrap_ci(statistic, *arrays, n_boot=n_boot, seed=seed)
    return {"value": value, "ci": ci, "n": n}


def compute_metrics(arrays: dict, priors=(), n_boot: int = 1000, seed: int = 0, n_bins: int = 10) -> dict:
    """All metrics of one model on one dataset (the `metrics` object of metrics.json).

    `arrays` holds per response `score`, `length`, `human` (NaN for pairwise data) and
    `group`; per pair `chosen` and `rejected` (indices of responses) and, for each prior,
    `similarity_<prior>` and `delta_<prior>`. CIs of per-pair statistics resample prompts (the
    `group` of the pair's responses) where a prompt has several pairs (ranked data).
    """
    score, human, length = (np.asarray(arrays[k], dtype=float) for k in ("score", "human", "length"))
    chosen, rejected = np.asarray(arrays["chosen"]), np.asarray(arrays["rejected"])
    margin = score[chosen] - score[rejected]
    pair_group = np.asarray(arrays["group"])[chosen]

    def est(statistic, *columns):
        return estimate(statistic, *columns, n_boot=n_boot, seed=seed)

    def pair_est(statistic, *columns, rows=slice(None)):
        return estimate(statistic, *(c[rows] for c in columns), n_boot=n_boot, seed=seed, groups=pair_group[rows])

    count, confidence, frequency = reliability(margin, n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return {
        "accuracy": pair_est(accuracy, margin),
        "rank_correlation": {
            "kendall_tau_pairs": pair_est(pairwise_kendall, margin),
            **_human_rank_metrics(score, human, arrays["group"], est),
        },
        "scores": describe(score),
        "margins": margin_distribution(margin),
        "priors": {
            prior: {
                "similarity_mean": float(np.mean(arrays[f"similarity_{prior}"])),
                "fraction_above_delta": pair_est(fraction_above, margin, np.asarray(arrays[f"delta_{prior}"])),
                "margin_similarity_spearman": pair_est(spearman, margin, np.asarray(arrays[f"similarity_{prior}"])),
            }
            for prior in priors
        },
        "length_bias": {
            "score_length_spearman": est(spearman, score, length),
            "accuracy_chosen_shorter": pair_est(accuracy, margin, rows=length[chosen] < length[rejected]),
            "accuracy_chosen_longer": pair_est(accuracy, margin, rows=length[chosen] > length[rejected]),
        },
        "calibration": {
            "ece": pair_est(functools.partial(expected_calibration_error, n_bins=n_bins), margin),
            "bins": [
                {
                    "low": float(lo),
                    "high": float(hi),
                    "count": int(c),
                    "confidence": finite_or_none(p),
                    "frequency": finite_or_none(f),
                }
                for lo, hi, c, p, f in zip(edges[:-1], edges[1:], count, confidence, frequency)
            ],
        },
    }


def _human_rank_metrics(score, human, group, est) -> dict:
    """Per-prompt and pooled ρ and τ against human scores; all None for pairwise data."""
    names = ("spearman_per_prompt", "kendall_per_prompt", "spearman_pooled", "kendall_pooled")
    if not np.isfinite(human).any():
        return {**dict.fromkeys(names), "prompts_used": None, "prompts_skipped": None}
    rho, tau = group_rank_agreement(score, human, group)
    used = np.isfinite(rho)
    return {
        "spearman_per_prompt": est(mean, rho[used]),
        "kendall_per_prompt": est(mean, tau[used]),
        "spearman_pooled": est(human_spearman, score, human),
        "kendall_pooled": est(human_kendall, score, human),
        "prompts_used": int(used.sum()),
        "prompts_skipped": int((~used).sum()),
    }


def finite_or_none(value) -> float | None:
    """`float(value)`, or None where it is NaN or infinite (JSON has no NaN)."""
    return float(value) if math.isfinite(value) else None
