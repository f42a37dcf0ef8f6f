"""The KL-regularised policy on a sample pool, exactly: π_β ∝ π₀·exp(r/β) over each prompt's samples.

π₀ is the empirical policy of the pool (1/n on each sample), so KL values are relative to it and at most log n.
`tilted_policy` (gold reward and KL at each β), `frontier` (gold against KL over a β grid: the reward's shape),
`frontier_gain` (gold at matched KL) and `fixed_beta_table` (at practitioners' βs, with raw and pool-standardised
rewards: the reward's scale).
"""

import math

import numpy as np

FIXED_BETAS = (0.01, 0.03, 0.1, 0.3)


def standardise(proxy, groups=None) -> np.ndarray:
    """r' = (r − mean) / std over the whole pool [P, n] (all axes), as OpenRLHF's reward normalisation; with
    `groups` ([P]: which reward model scored each prompt, e.g. the on-policy folds) over each group's prompts, so
    that every reward model is normalised on its own scores."""
    r = np.asarray(proxy, dtype=np.float64)
    if groups is not None:
        out = np.empty_like(r)
        for group in np.unique(groups):
            rows = np.asarray(groups) == group
            out[..., rows, :] = standardise(r[..., rows, :])
        return out
    std = r.std()
    return (r - r.mean()) / (std if std > 0 else 1.0)


def pool_scale(proxy, groups=None) -> float:
    """The reward's typical std on the pool: per seed ([S, P, n] or [P, n]), the root mean of the within-group
    variances (one group without `groups`), averaged over seeds; seeds' and groups' offsets do not count."""
    r = np.asarray(proxy, dtype=np.float64)
    r = r[None] if r.ndim == 2 else r
    keys = np.zeros(r.shape[1], dtype=int) if groups is None else np.asarray(groups)
    return float(np.mean([np.sqrt(np.mean([s[keys == k].var() for k in np.unique(keys)])) for s in r]))


def tilted_policy(proxy, gold, betas, standardised: bool = False, groups=None) -> dict:
    """The KL-regularised policy on each prompt's samples, exactly, at every β in `betas` ([K], or [P, K]: per prompt).

    On the pool's support (π₀ = 1/n on each sample) the optimum of E_π[r] − β·KL(π‖π₀) is
        w_i(β) = exp(r_i/β) / Σ_j exp(r_j/β)        (computed as exp(r_i/β − max_j r_j/β) / Σ_j …: log-sum-exp)
        gold(β) = Σ_i w_i g_i,   proxy(β) = Σ_i w_i r_i,   KL(β) = Σ_i w_i log(n·w_i) = log n + Σ_i w_i log w_i.
    β = inf gives π₀ (KL 0); β = 0 the argmax (uniform over tied maxima: KL = log(n / ties)). With `standardised`
    the proxy is first `standardise`d on the pool (per group of prompts with `groups`). Returns {"gold", "proxy",
    "kl", "gold_gain"}, each [P, len(betas)]; gold_gain = gold(β) − mean gold of π₀.
    """
    r = np.atleast_2d(standardise(proxy, groups) if standardised else np.asarray(proxy, dtype=np.float64))
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


def fixed_beta_table(proxy, gold, betas=FIXED_BETAS, groups=None) -> list[dict]:
    """KL and gold gain of π_β (mean over seeds and prompts) at each fixed β, with raw and pool-standardised rewards.

    `proxy` is [P, n] or [S, P, n] (gold [P, n] shared); the standardisation uses the proxy's own pool (per seed,
    and per group of prompts with `groups`: see `standardise`).
    """
    r = np.asarray(proxy, dtype=np.float64)
    r = r[None] if r.ndim == 2 else r
    rows = []
    for standardised in (False, True):
        paths = [tilted_policy(seed_scores, gold, betas, standardised, groups) for seed_scores in r]
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
