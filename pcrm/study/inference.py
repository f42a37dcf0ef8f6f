"""Inference on per-(seed, prompt) curves: prompt-clustered paired bootstraps, random-selector null bands, the
inverse-variance weighted Gao fit with its test of β > 0, and rank correlations (within prompt; with length).

Arrays: `gold` [P, n] over P prompts × n samples, a proxy's scores [P, n] or [S, P, n] over S seeds, and
per-prompt estimators return [P, K] (K points of a curve).
"""

import math

import numpy as np
from scipy import stats

from pcrm.evaluation.metrics import accuracy, spearman
from pcrm.study.estimator import gao_peak

SCHEMES = ("within", "crossed", "prompts")
_BATCH_ELEMENTS = 1 << 22  # resampled values held at once by the bootstrap


def as_seeds(values) -> np.ndarray:
    """`values` as float64 with a seed axis: a single curve [K] becomes [1, K]; other shapes stay."""
    x = np.asarray(values, dtype=np.float64)
    return x[None] if x.ndim == 1 else x


def cluster_bootstrap(values, statistic=None, n_boot: int = 2000, seed: int = 0, scheme: str = "within") -> np.ndarray:
    """Bootstrap replicates of `statistic` over per-(seed, prompt) `values` [S, P, ...]: [n_boot, ...].

    Every replicate draws P prompts uniformly with replacement and, by `scheme`,
      "within":  for each drawn prompt, S seeds with replacement (independently per prompt);
      "crossed": S seeds with replacement once, shared by all drawn prompts (carries a seed's prompt-wide effect);
      "prompts": the seeds as they are (prompts only).
    `statistic` gets a batch of resampled arrays [batch, S, P, ...] and returns [batch, ...]; the default is the mean
    over seeds and prompts, T = (1/P) Σ_j (1/S) Σ_k x[s_jk, p_j]. Under "within"
    its bootstrap variance is exactly (1/P)·[(1/P) Σ_p (m_p − m̄)² + (1/(P·S)) Σ_p v_p], m_p and v_p the mean and
    the (ddof 0) variance of x[·, p] over seeds.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    x = np.asarray(values, dtype=np.float64)
    s, p = x.shape[:2]
    rng = np.random.default_rng(seed)
    statistic = statistic or (lambda a: a.mean(axis=(1, 2)))  # a: [batch, S, P, ...]
    batch = max(1, _BATCH_ELEMENTS // max(1, x.size))
    out = []
    for start in range(0, n_boot, batch):
        b = min(batch, n_boot - start)
        prompts = rng.integers(0, p, size=(b, 1, p))
        if scheme == "within":
            seeds = rng.integers(0, s, size=(b, s, p))
        elif scheme == "crossed":
            seeds = rng.integers(0, s, size=(b, s, 1))
        else:
            seeds = np.arange(s)[None, :, None]
        out.append(statistic(x[seeds, prompts]))
    return np.concatenate(out)


def bootstrap_summary(values, n_boot: int = 2000, seed: int = 0, level: float = 0.95, scheme: str = "within") -> dict:
    """Mean over seeds and prompts of `values` [S, P, ...], with the percentile CI of `cluster_bootstrap`, its SE
    (the replicates' SD) and a two-sided p-value of mean = 0 from the normal approximation, p = 2Φ(−|mean|/SE)
    (no resolution floor, so it survives a Holm correction over many tests)."""
    x = as_seeds(values)
    boot = cluster_bootstrap(x, n_boot=n_boot, seed=seed, scheme=scheme)
    mean = x.mean(axis=(0, 1))
    se = boot.std(axis=0, ddof=1)
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(se > 0, 2 * stats.norm.sf(np.abs(mean) / se), np.where(mean == 0, 1.0, 0.0))
    return {"mean": mean, "low": low, "high": high, "se": se, "p": p}


def paired_difference(
    method, baseline, n_boot: int = 2000, seed: int = 0, level: float = 0.95, scheme: str = "within"
) -> dict:
    """`bootstrap_summary` of d[s, p, ·] = method[s, p, ·] − baseline[s, p, ·] (seed k paired with seed k, both
    [S, P, K]; a single-seed side, e.g. an ensemble, is broadcast against every seed of the other)."""
    a, b = np.broadcast_arrays(as_seeds(method), as_seeds(baseline))
    return bootstrap_summary(a - b, n_boot, seed, level, scheme)


def null_draws(estimator, gold, scores=None, seeds: int = 1, draws: int = 1000, seed: int = 0) -> np.ndarray:
    """The curve of `estimator(proxy, gold)` ([P, K] per prompt) for random selectors, averaged over prompts and over
    `seeds` independent selectors per draw (matching a method's seed-averaged curve): [draws, K].

    A random selector is `scores` [S, P, n] (or [P, n]) permuted independently within every row — same score scale,
    no relation to gold — or, without `scores`, independent standard normal scores (one draw per call: for
    estimators that use the pool's scale). Permuted draws are evaluated many at a time, stacked along the prompt
    axis; this is exact for estimators that treat prompts independently apart from pool statistics a within-row
    permutation keeps (the pool's mean and std, as `standardise` and `frontier_gain` use): all of this module's.
    """
    rng = np.random.default_rng(seed)
    g = np.asarray(gold, dtype=np.float64)
    base = None if scores is None else as_seeds(np.asarray(scores, dtype=np.float64))
    count = seeds if base is None else base.shape[0]
    chunk = 1 if base is None else max(1, _BATCH_ELEMENTS // (64 * g.size))
    out = []
    for start in range(0, draws, chunk):
        b = min(chunk, draws - start)
        if base is None:
            proxies = rng.standard_normal((count, *g.shape))[:, None]  # [S, 1, P, n]
        else:
            proxies = rng.permuted(np.broadcast_to(base[:, None], (count, b, *g.shape)), axis=-1)  # [S, b, P, n]
        stacked = np.tile(g, (b, 1))
        per_seed = [
            estimator(p.reshape(b * g.shape[0], -1), stacked).reshape(b, g.shape[0], -1).mean(axis=1) for p in proxies
        ]
        out.append(np.mean(per_seed, axis=0))
    return np.concatenate(out)


def null_band(null, level: float = 0.95) -> dict:
    """Pointwise random-selector band of a curve: the (1 ± level)/2 quantiles and the median of `null_draws`."""
    low, median, high = np.quantile(np.asarray(null), [(1 - level) / 2, 0.5, (1 + level) / 2], axis=0)
    return {"low": low, "median": median, "high": high}


def null_p_value(observed, null, alternative: str = "two-sided") -> np.ndarray:
    """p-value of `observed` (a curve, [K]) under the random-selector null [draws, K], normal approximation:
    z = (observed − mean_null) / sd_null; "greater": Φ(−z); "less": Φ(z); "two-sided": 2Φ(−|z|)."""
    null = np.asarray(null, dtype=np.float64)
    sd = null.std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sd > 0, (np.asarray(observed) - null.mean(axis=0)) / sd, 0.0)
    if alternative == "greater":
        return stats.norm.sf(z)
    if alternative == "less":
        return stats.norm.cdf(z)
    return 2 * stats.norm.sf(np.abs(z))


def fit_gao_weighted(d, gain, variance) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares of gain(d) = d(α − βd) = α·d − β·d², weights w_k = 1/variance_k:
        (α, β) = (XᵀWX)⁻¹ XᵀW·gain,   X = [d, −d²],  W = diag(w).
    `gain` may carry leading axes ([..., K]: many curves with the same weights). Returns (α, β) arrays."""
    d = np.asarray(d, dtype=np.float64)
    var = np.asarray(variance, dtype=np.float64)
    var = np.where(var > 0, var, var[var > 0].min() if (var > 0).any() else 1.0)
    design = np.stack([d, -(d**2)], axis=1)
    weighted = design / var[:, None]
    solve = np.linalg.solve(design.T @ weighted, weighted.T)  # [2, K]
    coef = np.asarray(gain, dtype=np.float64) @ solve.T
    return coef[..., 0], coef[..., 1]


def gao_test(
    d,
    gains,
    null=None,
    max_kl: float | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    scheme: str = "within",
    level: float = 0.95,
) -> dict:
    """Gao's d(α − βd) on the identified range, and the test of β > 0 (the curve bends over).

    `gains` [S, P, K] are per-(seed, prompt) gold gains at d = √KL ([K]); `null` [draws, K] optional random-selector
    curves (`null_draws`). Only points with 0 < d² ≤ max_kl (default: all) enter. Weights: 1/Var of the mean curve,
    Var_k = s²_k / P with s²_k the variance over prompts of the seed-averaged gain. Tests (one-sided):
      p_bootstrap = Φ(−β/SE*), SE* the SD of β refitted on `cluster_bootstrap` replicates of the curve;
      p_null = Φ(−(β − mean β₀)/sd β₀), β₀ the same fit on the null curves.
    p = the larger of the two. The peak (α²/4β at KL* = (α/2β)²) counts as inside only when KL* ≤ the largest
    KL used. `corr` is the bootstrap correlation of α and β (near ±1: the two are not separately identified).
    """
    d = np.asarray(d, dtype=np.float64)
    x = as_seeds(gains)
    use = (d > 0) & (d**2 <= (np.inf if max_kl is None else max_kl) + 1e-12)
    if use.sum() < 2:
        raise ValueError("the fit needs at least two points with 0 < d² ≤ max_kl")
    d, x = d[use], x[..., use]
    curve = x.mean(axis=(0, 1))
    variance = x.mean(axis=0).var(axis=0, ddof=1) / x.shape[1]
    alpha, beta = (float(v) for v in fit_gao_weighted(d, curve, variance))
    boot_alpha, boot_beta = fit_gao_weighted(d, cluster_bootstrap(x, n_boot=n_boot, seed=seed, scheme=scheme), variance)
    se = float(boot_beta.std(ddof=1))
    p_boot = float(stats.norm.sf(beta / se)) if se > 0 else float(beta <= 0)
    result = {
        "alpha": alpha,
        "beta": beta,
        "beta_se": se,
        "points": int(use.sum()),
        "max_kl": float(d[-1] ** 2),
        "alpha_ci": np.quantile(boot_alpha, [(1 - level) / 2, (1 + level) / 2]).tolist(),
        "beta_ci": np.quantile(boot_beta, [(1 - level) / 2, (1 + level) / 2]).tolist(),
        "corr": float(np.corrcoef(boot_alpha, boot_beta)[0, 1]) if se > 0 else math.nan,
        "p_bootstrap": p_boot,
        "p_null": None,
    }
    if null is not None:
        _, null_beta = fit_gao_weighted(d, np.asarray(null)[:, use], variance)
        result["p_null"] = float(null_p_value(np.array([beta]), null_beta[:, None], "greater")[0])
    result["p"] = max(p_boot, result["p_null"] or 0.0)
    peak = gao_peak(alpha, beta)
    result["peak"] = peak
    result["peak_inside"] = bool(peak and peak["kl"] <= result["max_kl"])
    return result


def within_prompt_spearman(x, y) -> dict:
    """Spearman ρ of x and y within each prompt (rows of [P, n]; NaN for a constant row), and its mean over prompts —
    what best-of-N and the tilted policy depend on (the pooled ρ mixes in between-prompt differences)."""
    rho = np.atleast_1d(spearman(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)))
    finite = np.isfinite(rho)
    return {"mean": float(rho[finite].mean()) if finite.any() else math.nan, "per_prompt": rho}


def length_bias(score, length, chosen, rejected) -> dict:
    """Length bias of a reward model (the arrays of `pcrm evaluate`: per response `score`, `length`; per pair the
    `chosen` and `rejected` response indices): Spearman(score, length) over the responses, and pairwise accuracy
    (ties ½) on the pairs whose chosen response is longer / shorter than the rejected one (None where there are
    none)."""
    score, length = np.asarray(score, dtype=np.float64), np.asarray(length, dtype=np.float64)
    chosen, rejected = np.asarray(chosen), np.asarray(rejected)
    margin = score[chosen] - score[rejected]
    longer, shorter = length[chosen] > length[rejected], length[chosen] < length[rejected]
    return {
        "spearman_score_length": float(spearman(score, length)),
        "accuracy_chosen_longer": float(accuracy(margin[longer])) if longer.any() else None,
        "accuracy_chosen_shorter": float(accuracy(margin[shorter])) if shorter.any() else None,
        "pairs_chosen_longer": int(longer.sum()),
        "pairs_chosen_shorter": int(shorter.sum()),
        "pairs_equal_length": int(len(margin) - longer.sum() - shorter.sum()),
    }
