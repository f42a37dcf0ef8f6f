"""Estimators and tests of the gold-reward study (issue 22): pure numpy/scipy functions of per-sample scores.

Notation: a pool holds P prompts × n samples from the starting policy π₀; `gold` [P, n] are the gold scores, a
proxy's scores are `proxy` [P, n], and S proxy seeds give [S, P, n]. Every estimator is exact on the pool: π₀ is
the empirical policy (1/n on each sample), so KL values are relative to it and at most log n. Per-prompt estimators
return [P, K] (K points of a curve); the study averages them over seeds and prompts.

- `tilted_policy`: the KL-regularised optimum π_β ∝ π₀·exp(r/β) on the pool, its gold reward and KL(π_β‖π₀);
  `frontier` (gold against KL over a β grid: the reward's shape) and `fixed_beta_table` (at practitioners' βs, with
  raw and pool-standardised rewards: the reward's scale); `frontier_gain` (gold at matched KL).
- `cluster_bootstrap`, `paired_difference`: method − baseline per (seed, prompt), CI by resampling prompts (and
  seeds); `null_draws`, `null_band`, `null_p_value`: the same estimators with random selectors.
- `gao_test`: d(α − βd) weighted by inverse variance on the identified range, β > 0 tested against the bootstrap
  and the random-selector null; `within_prompt_spearman`.
- `variance_components`, `detectable_difference`, `prompts_needed`, `pool_power`: power before the run.
- `findings`: text claims only for tests that pass (Holm over the family), the rest listed as not distinguished.
- `length_bias`: Spearman(score, length) and accuracy split by chosen-longer / chosen-shorter.
- `analyse`: all of the above for a dict of methods' scores against a baseline (what `pcrm overoptimization`
  will call).

    .venv/bin/python -m pcrm.study.statistics [--pool POOL.jsonl] [--study STUDY_DIR]   # the power statement
"""

import math
from functools import partial

import numpy as np
from scipy import stats

from pcrm.evaluation.metrics import accuracy, kl_best_of_n, spearman
from pcrm.overoptimization import expected_best_of_n, gao_peak

FIXED_BETAS = (0.01, 0.03, 0.1, 0.3)
SCHEMES = ("within", "crossed", "prompts")
_BATCH_ELEMENTS = 1 << 22  # resampled values held at once by the bootstrap


# -- 1. the KL-regularised policy on a pool --------------------------------------------------------


def standardise(proxy) -> np.ndarray:
    """r' = (r − mean) / std over the whole pool (all seeds' axes included), as OpenRLHF's reward normalisation."""
    r = np.asarray(proxy, dtype=np.float64)
    std = r.std()
    return (r - r.mean()) / (std if std > 0 else 1.0)


def tilted_policy(proxy, gold, betas, standardised: bool = False) -> dict:
    """The KL-regularised policy on each prompt's samples, exactly, at every β in `betas` ([K], or [P, K]: per prompt).

    On the pool's support (π₀ = 1/n on each sample) the optimum of E_π[r] − β·KL(π‖π₀) is
        w_i(β) = exp(r_i/β) / Σ_j exp(r_j/β)        (computed as exp(r_i/β − max_j r_j/β) / Σ_j …: log-sum-exp)
        gold(β) = Σ_i w_i g_i,   proxy(β) = Σ_i w_i r_i,   KL(β) = Σ_i w_i log(n·w_i) = log n + Σ_i w_i log w_i.
    β = inf gives π₀ (KL 0); β = 0 the argmax (uniform over tied maxima: KL = log(n / ties)). With `standardised`
    the proxy is first `standardise`d on the pool. Returns {"gold", "proxy", "kl", "gold_gain"}, each [P, len(betas)];
    gold_gain = gold(β) − mean gold of π₀.
    """
    r = np.atleast_2d(standardise(proxy) if standardised else np.asarray(proxy, dtype=np.float64))
    g = np.atleast_2d(np.asarray(gold, dtype=np.float64))
    if r.shape != g.shape:
        raise ValueError(f"proxy {r.shape} and gold {g.shape} differ in shape")
    betas = np.asarray(betas, dtype=np.float64)
    betas = betas if betas.ndim == 2 else np.atleast_1d(betas)[None, :]
    betas = np.broadcast_to(betas, (r.shape[0], betas.shape[1]))
    if (betas < 0).any() or np.isnan(betas).any():
        raise ValueError("β must be ≥ 0")
    with np.errstate(divide="ignore", invalid="ignore"):
        logits = r[:, None, :] / betas[:, :, None]  # [P, K, n]; β = inf → 0
    if (betas == 0).any():
        argmax = np.where(r == r.max(axis=1, keepdims=True), 0.0, -np.inf)
        logits = np.where((betas == 0)[:, :, None], argmax[:, None, :], logits)
    shifted = logits - logits.max(axis=-1, keepdims=True)  # log-sum-exp: the largest logit is 0, so no overflow
    w = np.exp(shifted)
    total = w.sum(axis=-1, keepdims=True)
    w /= total
    log_w = shifted - np.log(total)
    with np.errstate(invalid="ignore"):
        kl = math.log(r.shape[1]) + np.where(w > 0, w * log_w, 0.0).sum(axis=-1)
    gold_beta = (w * g[:, None, :]).sum(axis=-1)
    return {
        "gold": gold_beta,
        "proxy": (w * r[:, None, :]).sum(axis=-1),
        "kl": np.maximum(kl, 0.0),
        "gold_gain": gold_beta - g.mean(axis=1, keepdims=True),
    }


def tilted_gain(proxy, gold, betas=FIXED_BETAS, standardised: bool = False) -> np.ndarray:
    """Per-prompt gold gain of π_β over π₀ at each β: [P, K] (an estimator for `null_draws` and `paired_difference`)."""
    return tilted_policy(proxy, gold, betas, standardised)["gold_gain"]


def best_of_n_gain(proxy, gold, ns) -> np.ndarray:
    """Per-prompt gold gain of best-of-N over π₀, the exact expectation over all size-N subsets: [P, len(ns)]."""
    g = np.atleast_2d(np.asarray(gold, dtype=np.float64))
    return expected_best_of_n(proxy, g, ns) - g.mean(axis=1, keepdims=True)


def default_ns(pool_size: int) -> list[int]:
    """Best-of-N points of the headline: N = 2, 4, 8, … ≤ pool/4 (at least N = 2)."""
    return [2**k for k in range(1, max(1, int(math.log2(max(pool_size // 4, 2)))) + 1)]


def frontier_betas(proxy, points: int = 71) -> np.ndarray:
    """β grid for the frontier curve, descending (so KL ascends): inf, std(r)·10^(3 … −4) (`points` log-spaced), 0."""
    std = float(np.std(proxy)) or 1.0
    return np.concatenate([[np.inf], std * np.logspace(3, -4, points), [0.0]])


def frontier_gain(proxy, gold, kl_targets, iterations: int = 34) -> np.ndarray:
    """Per-prompt gold gain of the tilted policy at each target KL: [P, len(kl_targets)].

    KL(β) falls monotonically as β grows, so each (prompt, target) gets the β with KL(β) = target by bisection on
    log β within std(r)·[1e-6, 1e6] (`iterations` halvings: β to a relative 1e-9); a target at or beyond the
    prompt's largest KL, KL(0) = log(n / tied maxima), gets the argmax. A global rescaling of r rescales these β
    alike, so the frontier depends on the reward's shape only.
    """
    r = np.atleast_2d(np.asarray(proxy, dtype=np.float64))
    target = np.asarray(kl_targets, dtype=np.float64)[None, :]
    scale = float(r.std()) or 1.0
    lo = np.full((r.shape[0], target.shape[1]), math.log(scale * 1e-6))
    hi = np.full_like(lo, math.log(scale * 1e6))
    for _ in range(iterations):
        mid = (lo + hi) / 2
        too_far = tilted_policy(r, gold, np.exp(mid))["kl"] > target  # β too small
        lo, hi = np.where(too_far, mid, lo), np.where(too_far, hi, mid)
    beta = np.where(target >= tilted_policy(r, gold, [0.0])["kl"] - 1e-12, 0.0, np.exp((lo + hi) / 2))
    return tilted_policy(r, gold, beta)["gold_gain"]


def frontier(proxy, gold, betas=None) -> dict:
    """The gold-vs-KL frontier of one proxy: mean over prompts of KL(β), gold gain and proxy reward over a β grid."""
    betas = frontier_betas(proxy) if betas is None else np.asarray(betas, dtype=np.float64)
    path = tilted_policy(proxy, gold, betas)
    return {
        "beta": betas.tolist(),
        "kl": path["kl"].mean(axis=0).tolist(),
        "gold_gain": path["gold_gain"].mean(axis=0).tolist(),
        "proxy": path["proxy"].mean(axis=0).tolist(),
    }


def fixed_beta_table(proxy, gold, betas=FIXED_BETAS) -> list[dict]:
    """KL and gold gain of π_β (mean over seeds and prompts) at each fixed β, with raw and pool-standardised rewards.

    `proxy` is [P, n] or [S, P, n] (gold [P, n] shared); the standardisation uses the proxy's own pool (per seed).
    """
    r = np.asarray(proxy, dtype=np.float64)
    r = r[None] if r.ndim == 2 else r
    rows = []
    for standardised in (False, True):
        paths = [tilted_policy(seed_scores, gold, betas, standardised) for seed_scores in r]
        for k, beta in enumerate(betas):
            rows.append(
                {
                    "rewards": "standardised" if standardised else "raw",
                    "beta": float(beta),
                    "kl": float(np.mean([p["kl"][:, k].mean() for p in paths])),
                    "gold_gain": float(np.mean([p["gold_gain"][:, k].mean() for p in paths])),
                }
            )
    return rows


# -- 2. paired differences, clustered bootstrap, null bands ----------------------------------------


def _as_seeds(values) -> np.ndarray:
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
    x = _as_seeds(values)
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
    a, b = np.broadcast_arrays(_as_seeds(method), _as_seeds(baseline))
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
    base = None if scores is None else _as_seeds(np.asarray(scores, dtype=np.float64))
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


# -- 3. the Gao fit and within-prompt rank correlation ---------------------------------------------


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
    x = _as_seeds(gains)
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


# -- 4. power ---------------------------------------------------------------------------------------


def variance_components(diffs) -> dict:
    """Two-way crossed random-effects decomposition of paired differences d[s, p] (seeds × prompts, no replication):
        d[s, p] = μ + a_s + b_p + e_sp,
        MS_seed = P·Σ_s(d̄_s· − d̄)²/(S−1),  MS_prompt = S·Σ_p(d̄_·p − d̄)²/(P−1),
        MS_res = Σ(d − d̄_s· − d̄_·p + d̄)²/((S−1)(P−1)),
        σ²_e = MS_res,  σ²_seed = max(0, (MS_seed − MS_res)/P),  σ²_prompt = max(0, (MS_prompt − MS_res)/S).
    With one seed the seed and residual terms cannot be separated from the prompt term: all goes to σ²_prompt."""
    d = np.asarray(diffs, dtype=np.float64)
    d = d[None] if d.ndim == 1 else d
    s, p = d.shape
    if p < 2:
        raise ValueError("variance components need at least two prompts")
    grand, seed_means, prompt_means = d.mean(), d.mean(axis=1), d.mean(axis=0)
    if s == 1:
        return {
            "seed": 0.0,
            "prompt": float(prompt_means.var(ddof=1)),
            "residual": 0.0,
            "seeds": 1,
            "prompts": p,
            "mean": float(grand),
        }
    ms_seed = p * ((seed_means - grand) ** 2).sum() / (s - 1)
    ms_prompt = s * ((prompt_means - grand) ** 2).sum() / (p - 1)
    ms_res = ((d - seed_means[:, None] - prompt_means[None, :] + grand) ** 2).sum() / ((s - 1) * (p - 1))
    return {
        "seed": float(max(0.0, (ms_seed - ms_res) / p)),
        "prompt": float(max(0.0, (ms_prompt - ms_res) / s)),
        "residual": float(ms_res),
        "seeds": s,
        "prompts": p,
        "mean": float(grand),
    }


def standard_error(components: dict, prompts: int, seeds: int) -> float:
    """SE of the mean paired difference over `prompts` × `seeds`: √(σ²_seed/S + σ²_prompt/P + σ²_e/(S·P))."""
    c = components
    return math.sqrt(c["seed"] / seeds + c["prompt"] / prompts + c["residual"] / (seeds * prompts))


def _z(power: float, alpha: float) -> float:
    return float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))


def detectable_difference(components: dict, prompts: int, seeds: int, power: float = 0.8, alpha: float = 0.05) -> float:
    """Smallest true difference a two-sided level-α z-test detects with probability `power` (normal theory):
    δ_min = (z_{1−α/2} + z_power) · SE(P, S)       (2.80·SE at 80% power, α = 0.05)."""
    return _z(power, alpha) * standard_error(components, prompts, seeds)


def prompts_needed(delta: float, components: dict, seeds: int, power: float = 0.8, alpha: float = 0.05) -> int | None:
    """Smallest P with detectable_difference ≤ δ: P = ⌈(σ²_prompt + σ²_e/S) / ((δ/z)² − σ²_seed/S)⌉,
    z = z_{1−α/2} + z_power; None when the seed term alone keeps the SE above δ/z (more seeds are needed, not
    prompts)."""
    c = components
    room = (delta / _z(power, alpha)) ** 2 - c["seed"] / seeds
    if room <= 0:
        return None
    return max(2, math.ceil((c["prompt"] + c["residual"] / seeds) / room - 1e-9))


def simulated_proxies(gold, rho: float, seeds: int, rng, samples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Proxies of a given within-prompt Spearman ρ with gold: r = c·z + ε, z the gold standardised within each prompt,
    ε ~ N(0, 1), c = ρ_P/√(1 − ρ_P²) with Pearson ρ_P = 2 sin(πρ/6) (exact for Gaussian gold). With `samples`, each
    seed sees a random subset of that many samples per prompt (a smaller pool). Returns (proxies [S, P, m], gold
    [S, P, m])."""
    g = np.asarray(gold, dtype=np.float64)
    sd = g.std(axis=1, keepdims=True)
    z = (g - g.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)
    pearson = 2 * math.sin(math.pi * rho / 6)
    c = pearson / math.sqrt(1 - pearson**2)
    m = g.shape[1] if samples is None else samples
    pick = np.argsort(rng.random((seeds, *g.shape)), axis=-1)[..., :m]
    zs, gs = (np.take_along_axis(np.broadcast_to(a, (seeds, *g.shape)), pick, axis=-1) for a in (z, g))
    return c * zs + rng.standard_normal(zs.shape), gs


def pool_power(
    gold, ns=(4, 8), rho: float = 0.05, samples: int | None = None, draws: int = 400, seed: int = 0, paired=None
) -> dict:
    """Variance components of paired best-of-N gold-gain differences on a pool, per N.

    With `paired` ({method: [S, P, K] differences vs the baseline at `ns`}, from real proxy scores) the components
    are estimated from them. Without, two methods of equal quality (proxies of within-prompt Spearman `rho`,
    `simulated_proxies`, `draws` simulated seeds each, optionally on `samples`-sample sub-pools) give d[s, p] =
    gain_A − gain_B: the selection-noise floor of a real comparison (a method × prompt interaction adds to it).
    """
    if paired is not None:
        return {m: [variance_components(d[..., k]) for k in range(len(ns))] for m, d in paired.items()}
    rng = np.random.default_rng(seed)
    gains = []
    for _ in range(2):
        proxies, golds = simulated_proxies(gold, rho, draws, rng, samples)
        gains.append(np.stack([best_of_n_gain(r, g, ns) for r, g in zip(proxies, golds)]))  # [draws, P, K]
    diff = gains[0] - gains[1]
    # each simulated seed is independent on every prompt, so there is no seed-wide effect by construction (its
    # estimate from MS_seed − MS_res would only add noise, which matters for small targets)
    return {"simulated": [variance_components(diff[..., k]) | {"seed": 0.0} for k in range(len(ns))]}


def power_statement(components: dict, n: int, prompts: int, seeds=(3, 5), target: float = 0.03, what: str = "") -> str:
    """One sentence: the detectable difference of a design (`prompts` × the first of `seeds`) and the prompts a
    `target` difference needs with each number of `seeds`."""

    def need(s):
        count = prompts_needed(target, components, s)
        return f"{count} prompts with {s} seeds" if count else f"more than {s} seeds (the seed term alone exceeds it)"

    sd = math.sqrt(components["prompt"] + components["residual"] / seeds[0])
    return (
        f"{what}best-of-N at N={n}: {prompts} prompts × {seeds[0]} seeds detect a gold difference of "
        f"{detectable_difference(components, prompts, seeds[0]):.3f} at 80% power (two-sided α = 0.05; "
        f"per-prompt SD of the seed-averaged difference {sd:.3f}); {target} needs "
        + ", ".join(need(s) for s in seeds)
        + "."
    )


# -- 5. findings ------------------------------------------------------------------------------------


def holm(p) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values: p̃_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j)), p sorted ascending."""
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    out = np.empty_like(adjusted)
    out[order] = adjusted
    return out


def difference_records(method: str, baseline: str, labels, summary: dict, detectable=None) -> list[dict]:
    """Test records of `paired_difference` results, one per curve point (`labels`, e.g. "gold gain at N=8")."""
    return [
        {
            "test": "difference",
            "method": method,
            "baseline": baseline,
            "what": what,
            "estimate": float(summary["mean"][k]),
            "low": float(summary["low"][k]),
            "high": float(summary["high"][k]),
            "p": float(summary["p"][k]),
            "detectable": None if detectable is None else float(detectable[k]),
        }
        for k, what in enumerate(labels)
    ]


def null_records(method: str, labels, observed, null, level: float = 0.95) -> list[dict]:
    """Test records of a method's curve against its random-selector null (two-sided)."""
    band, p = null_band(null, level), null_p_value(observed, null)
    return [
        {
            "test": "null",
            "method": method,
            "what": what,
            "estimate": float(observed[k]),
            "low": float(band["low"][k]),
            "high": float(band["high"][k]),
            "p": float(p[k]),
        }
        for k, what in enumerate(labels)
    ]


def bend_record(method: str, what: str, fit: dict) -> dict:
    """The test record of `gao_test`'s β > 0."""
    return {
        "test": "bend",
        "method": method,
        "what": what,
        "estimate": fit["beta"],
        "low": fit["beta_ci"][0],
        "high": fit["beta_ci"][1],
        "p": fit["p"],
        "peak_kl": fit["peak"]["kl"] if fit["peak_inside"] else None,
    }


def _passes(r: dict) -> bool:
    if r["test"] == "difference":
        return r["low"] > 0 or r["high"] < 0  # the CI excludes 0
    if r["test"] == "null":
        return not r["low"] <= r["estimate"] <= r["high"]  # outside the band
    return r["estimate"] > 0 and r["low"] > 0  # bend: β > 0 with its CI above 0


def _claim(r: dict) -> str:
    p = f"Holm-adjusted p = {r['p_holm']:.2g}"
    if r["test"] == "difference":
        verb = "exceeds" if r["estimate"] > 0 else "falls short of"
        return (
            f"{r['method']}'s {r['what']} {verb} {r['baseline']}'s by {abs(r['estimate']):.3f} "
            f"[95% CI of the difference {r['low']:+.3f}, {r['high']:+.3f}; {p}]."
        )
    if r["test"] == "null":
        side = "above" if r["estimate"] > r["high"] else "below"
        return (
            f"{r['method']}'s {r['what']} is {r['estimate']:+.3f}, {side} the random-selector band "
            f"[{r['low']:+.3f}, {r['high']:+.3f}] ({p})."
        )
    inside = f"; the fitted peak lies inside the measured range (KL* = {r['peak_kl']:.2f})" if r["peak_kl"] else ""
    return (
        f"{r['method']}'s {r['what']} bends over: β = {r['estimate']:.3f} "
        f"[95% CI {r['low']:.3f}, {r['high']:.3f}], outside the random-selector null ({p}){inside}."
    )


def findings(records: list[dict], alpha: float = 0.05) -> dict:
    """Text claims for the tests that pass, and only those.

    The records (`difference_records`, `null_records`, `bend_record`) are one family: their p-values are Holm-adjusted
    together, and a claim appears when the adjusted p < α *and* the test's own criterion holds (a difference's 95% CI
    excludes 0; a curve lies outside the random-selector band; β > 0 with its CI above 0). Returns {"claims": [str],
    "not_shown": str (what could not be distinguished, with the detectable difference where known), "records"}.
    """
    records = [dict(r) for r in records]
    for r, p in zip(records, holm([r["p"] for r in records]) if records else []):
        r["p_holm"] = float(p)
        r["passed"] = bool(p < alpha and _passes(r))
    claims = [_claim(r) for r in records if r["passed"]]
    rest = [r for r in records if not r["passed"]]
    parts = []
    for r in rest:
        against = {"difference": f" vs {r.get('baseline')}", "null": " vs random selectors"}.get(r["test"], "")
        mde = f" (detectable: {r['detectable']:.3f})" if r.get("detectable") is not None else ""
        what = f"{r['what']} bending over (β > 0)" if r["test"] == "bend" else r["what"]
        parts.append(f"{r['method']} {what}{against}{mde}")
    head = f"Not distinguished at family-wise α = {alpha} (Holm over {len(records)} tests): "
    not_shown = head + "; ".join(parts) + "." if parts else ""
    return {"claims": claims, "not_shown": not_shown, "records": records}


# -- 6. length bias ---------------------------------------------------------------------------------


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


# -- the whole analysis -----------------------------------------------------------------------------


def analyse(
    gold,
    scores: dict,
    baseline: str = "bt",
    ns=None,
    betas=FIXED_BETAS,
    kl_targets=None,
    headline_n: int | None = None,
    headline_beta: float = 0.1,
    n_boot: int = 2000,
    draws: int = 1000,
    seed: int = 0,
    scheme: str = "within",
    alpha: float = 0.05,
) -> dict:
    """Every estimator and test of the study for `scores` ({method: [S, P, n] proxy scores of the pool}) against
    `baseline`, and the findings.

    Curves per method (mean over seeds and prompts, each with its random-selector band): best-of-N gain at `ns`
    (default `default_ns`), the tilted policy's gain at fixed `betas` (raw and standardised rewards) and on the
    frontier at `kl_targets` (default: best-of-N's KL at `ns`). Paired differences vs the baseline on every curve.
    The test family of the findings (chosen before the run): per method the difference vs the baseline and the
    null test at the headline points (best-of-N at `headline_n`, default the largest N; π_β at `headline_beta` raw
    and standardised; the frontier at best-of-N's KL for `headline_n`), and the Gao β > 0 test on the best-of-N curve
    at `ns` (N ≤ pool/4 by default: the range where best-of-N on the pool is well estimated).
    """
    gold = np.asarray(gold, dtype=np.float64)
    n = gold.shape[1]
    ns = default_ns(n) if ns is None else list(ns)
    headline_n = ns[-1] if headline_n is None else headline_n
    kl_targets = [kl_best_of_n(k) for k in ns] if kl_targets is None else list(kl_targets)
    if headline_beta not in betas or headline_n not in ns:
        raise ValueError("headline_beta must be one of betas and headline_n one of ns")
    frontier_at = int(np.argmin(np.abs(np.asarray(kl_targets) - kl_best_of_n(headline_n))))
    estimators = {
        "best-of-N": (partial(best_of_n_gain, ns=ns), [f"gold gain at N={k}" for k in ns], ns.index(headline_n), False),
        "tilted raw": (
            partial(tilted_gain, betas=betas),
            [f"gold gain of π_β at β={b:g} (raw rewards)" for b in betas],
            list(betas).index(headline_beta),
            True,
        ),
        "tilted standardised": (
            partial(tilted_gain, betas=betas, standardised=True),
            [f"gold gain of π_β at β={b:g} (standardised rewards)" for b in betas],
            list(betas).index(headline_beta),
            True,
        ),
        "frontier": (
            partial(frontier_gain, kl_targets=kl_targets),
            [f"frontier gold gain at KL={t:.2f}" for t in kl_targets],
            frontier_at,
            True,
        ),
    }
    scores = {m: _as_seeds(np.asarray(s, dtype=np.float64)) for m, s in scores.items()}
    if baseline not in scores:
        raise ValueError(f"baseline {baseline!r} is not among the methods {list(scores)}")
    per = {
        m: {name: np.stack([est(r, gold) for r in s]) for name, (est, *_) in estimators.items()}
        for m, s in scores.items()
    }
    out = {"ns": ns, "betas": list(betas), "kl_targets": kl_targets, "methods": {}, "records": []}
    oracle = {name: est(gold, gold).mean(axis=0).tolist() for name, (est, *_) in estimators.items()}
    out["oracle"] = oracle
    bon_null_by_seeds = {}
    for i, (method, s) in enumerate(scores.items()):
        entry = {
            "spearman_within_prompt": float(np.nanmean([within_prompt_spearman(r, gold)["mean"] for r in s])),
            "scale": float(s.std()),
            "fixed_beta": fixed_beta_table(s, gold, betas),
            "curves": {},
        }
        for name, (est, labels, head, scale_dependent) in estimators.items():
            if scale_dependent:
                null = null_draws(est, gold, scores=s, draws=draws, seed=seed + 1 + i)
            else:  # rank-only: one null per seed count serves every method
                key = s.shape[0]
                if key not in bon_null_by_seeds:
                    bon_null_by_seeds[key] = null_draws(est, gold, seeds=key, draws=draws, seed=seed)
                null = bon_null_by_seeds[key]
            curve = per[method][name].mean(axis=(0, 1))
            entry["curves"][name] = {
                "labels": labels,
                "gain": curve.tolist(),
                **{k: v.tolist() for k, v in null_band(null).items()},
            }
            out["records"] += null_records(method, [labels[head]], curve[[head]], null[:, [head]])
            if method != baseline:
                diff = paired_difference(per[method][name], per[baseline][name], n_boot, seed, scheme=scheme)
                entry["curves"][name]["vs_baseline"] = {k: v.tolist() for k, v in diff.items()}
                head_diff = {k: v[[head]] for k, v in diff.items()}
                out["records"] += difference_records(method, baseline, [labels[head]], head_diff)
            if name == "best-of-N":
                d = np.sqrt([kl_best_of_n(k) for k in ns])
                fit = gao_test(d, per[method][name], null, n_boot=n_boot, seed=seed, scheme=scheme)
                entry["gao"] = fit
                out["records"].append(bend_record(method, "best-of-N gold curve", fit))
        out["methods"][method] = entry
    out["findings"] = findings(out["records"], alpha)
    return out


# -- the power statement of a pool --------------------------------------------------------------------


def _study_paired(study, gold, ns) -> dict | None:
    """{method: [S, P, K] best-of-N gain differences vs BT} from a study folder's scores/METHOD-seedK.npz, if any."""
    from pathlib import Path

    files = sorted((Path(study) / "scores").glob("*-seed*.npz")) if study else []
    if not files:
        return None
    by_method: dict[str, list] = {}
    for path in files:
        with np.load(path) as arrays:
            by_method.setdefault(path.stem.rsplit("-seed", 1)[0], []).append(best_of_n_gain(arrays["pool"], gold, ns))
    if "bt" not in by_method:
        return None
    bt = np.stack(by_method.pop("bt"))
    return {m: np.stack(g)[: len(bt)] - bt[: len(g)] for m, g in by_method.items()}


def main(argv=None) -> None:
    import argparse
    import json
    from pathlib import Path

    from pcrm.overoptimization import DEFAULT_POOL, read_pool

    parser = argparse.ArgumentParser(description="Power statement of the gold-reward study for a pool")
    parser.add_argument("--pool", default=None, help="default: the study's pool/pool.jsonl, else the shipped pool")
    parser.add_argument("--study", default=None, help="a study folder with scores/METHOD-seedK.npz (real proxies)")
    shipped_fit = Path(__file__).resolve().parents[2] / "docs" / "results" / "overoptimization" / "fit.json"
    parser.add_argument(
        "--fit",
        default=str(shipped_fit),
        help="a study's fit.json: the proxies' within-prompt ρ calibrates the simulated proxies",
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--target", type=float, default=0.03)
    parser.add_argument("--draws", type=int, default=400)
    args = parser.parse_args(argv)
    study_pool = Path(args.study or ".") / "pool" / "pool.jsonl"
    args.pool = args.pool or str(study_pool if args.study and study_pool.is_file() else DEFAULT_POOL)
    _, _, gold = read_pool(args.pool)
    prompts, n = gold.shape
    ns = [k for k in (4, 8) if k <= n]
    rho = 0.05
    if Path(args.fit).is_file():
        rows = json.loads(Path(args.fit).read_text())["per_proxy"].values()
        rho = float(np.mean([r["spearman_within_prompt"] for r in rows if r.get("spearman_within_prompt") is not None]))
    paired = _study_paired(args.study, gold, ns)
    print(f"pool {args.pool}: {prompts} prompts × {n} samples, gold std {gold.std():.3f}")
    if paired:
        for method, comps in pool_power(gold, ns, paired=paired).items():
            for k, c in zip(ns, comps):
                print(power_statement(c, k, prompts, (args.seeds, 5), args.target, f"{method} − bt, "))
        return
    print(
        f"no per-sample proxy scores found; simulated proxies of within-prompt Spearman ρ = {rho:.3f} "
        f"(mean of {args.fit}), {args.draws} simulated seeds per method"
    )
    for samples in dict.fromkeys((n, min(n, 16))):
        comps = pool_power(gold, ns, rho=rho, samples=samples, draws=args.draws)["simulated"]
        for k, c in zip(ns, comps):
            if k <= samples // 2:
                print(power_statement(c, k, prompts, (args.seeds, 5), args.target, f"{samples} samples per prompt, "))


if __name__ == "__main__":
    main()
