"""Best-of-N on a sample pool (the exact order-statistics estimator), Gao's d(α − βd) fit and t-intervals over seeds."""

import math

import numpy as np
from scipy import stats

from pcrm.evaluation.metrics import kl_best_of_n


def best_of_n_weights(pool_size: int, n: int) -> np.ndarray:
    """Probability that the i-th smallest of `pool_size` values (i = 1..pool_size) is the maximum of a uniformly
    random subset of size `n`: C(i−1, n−1) / C(pool_size, n). The weights sum to 1."""
    if not 1 <= n <= pool_size:
        raise ValueError(f"N must be in 1..{pool_size}, got {n}")
    total = math.comb(pool_size, n)
    return np.array([math.comb(i, n - 1) / total for i in range(pool_size)], dtype=np.float64)


def _tie_means(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`values` with each run of equal `keys` (rows sorted by key) replaced by the run's mean."""
    out = values.astype(np.float64).copy()
    for row in range(keys.shape[0]):
        k = keys[row]
        starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        if len(starts) == len(k):
            continue
        ends = np.r_[starts[1:], len(k)]
        for a, b in zip(starts, ends):
            if b - a > 1:
                out[row, a:b] = out[row, a:b].mean()
    return out


def expected_best_of_n(proxy: np.ndarray, values: np.ndarray, ns) -> np.ndarray:
    """Unbiased estimate, per prompt, of E[value of the best-of-N response selected by `proxy`], for each N in `ns`.

    `proxy` and `values` are [prompts, pool size]. The estimate is the exact expectation over all size-N subsets
    of the pool (order statistics: the i-th smallest proxy score is selected with weight C(i−1, N−1)/C(n, N)),
    so it is an unbiased estimator of best-of-N from the policy, with far less variance than one draw per N.
    Ties in proxy score are broken uniformly at random (tied responses share their mean value).
    Returns [prompts, len(ns)].
    """
    proxy = np.atleast_2d(np.asarray(proxy, dtype=np.float64))
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if proxy.shape != values.shape:
        raise ValueError(f"proxy {proxy.shape} and values {values.shape} differ in shape")
    order = np.argsort(proxy, axis=1, kind="stable")
    keys = np.take_along_axis(proxy, order, axis=1)
    sorted_values = _tie_means(keys, np.take_along_axis(values, order, axis=1))
    weights = np.stack([best_of_n_weights(proxy.shape[1], n) for n in ns])  # [len(ns), pool]
    return sorted_values @ weights.T


def best_of_n_gain(proxy, gold, ns) -> np.ndarray:
    """Per-prompt gold gain of best-of-N over π₀, the exact expectation over all size-N subsets: [P, len(ns)]."""
    g = np.atleast_2d(np.asarray(gold, dtype=np.float64))
    return expected_best_of_n(proxy, g, ns) - g.mean(axis=1, keepdims=True)


def default_ns(pool_size: int) -> list[int]:
    """Best-of-N points of the headline: N = 2, 4, 8, … ≤ pool/4 (at least N = 2)."""
    return [2**k for k in range(1, max(1, int(math.log2(max(pool_size // 4, 2)))) + 1)]


def best_of_n_curve(proxy: np.ndarray, gold: np.ndarray, ns=None) -> dict:
    """Expected gold and proxy reward of best-of-N by `proxy`, averaged over prompts, for N = 1..pool size."""
    ns = list(range(1, proxy.shape[1] + 1)) if ns is None else list(ns)
    kl = [kl_best_of_n(n) for n in ns]
    gold_n = expected_best_of_n(proxy, gold, ns).mean(axis=0)
    proxy_n = expected_best_of_n(proxy, proxy, ns).mean(axis=0)
    return {
        "n": ns,
        "kl": kl,
        "d": [math.sqrt(k) for k in kl],
        "gold": gold_n.tolist(),
        "proxy": proxy_n.tolist(),
        "gold_gain": (gold_n - gold.mean()).tolist(),
        "proxy_gain": (proxy_n - proxy.mean()).tolist(),
    }


def fit_gao(d, gain) -> tuple[float, float]:
    """Least-squares α, β of Gao et al.'s best-of-N form gain(d) = d(α − βd), d = √KL (no intercept: gain(0) = 0)."""
    d = np.asarray(d, dtype=np.float64)
    gain = np.asarray(gain, dtype=np.float64)
    design = np.stack([d, -(d**2)], axis=1)
    if np.linalg.matrix_rank(design) < 2:
        raise ValueError("fit_gao needs at least two distinct d > 0")
    (alpha, beta), *_ = np.linalg.lstsq(design, gain, rcond=None)
    return float(alpha), float(beta)


def gao_curve(d, alpha: float, beta: float) -> np.ndarray:
    d = np.asarray(d, dtype=np.float64)
    return d * (alpha - beta * d)


def gao_peak(alpha: float, beta: float) -> dict | None:
    """Where d(α − βd) peaks: d* = α/2β, KL* = d*², gain* = α²/4β (None unless β > 0 and α > 0)."""
    if not (beta > 0 and alpha > 0):
        return None
    d = alpha / (2 * beta)
    return {"d": d, "kl": d * d, "gain": alpha * alpha / (4 * beta)}


def t_interval(values, level: float = 0.95) -> dict:
    """Mean and Student-t confidence interval over seeds (low = high = None with fewer than two finite values)."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if len(x) == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    if len(x) < 2:
        return {"mean": float(x.mean()), "low": None, "high": None, "n": 1}
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return {"mean": float(x.mean()), "low": float(x.mean() - half), "high": float(x.mean() + half), "n": int(len(x))}
