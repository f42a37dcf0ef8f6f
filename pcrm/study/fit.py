"""The best-of-N and fit stages: every proxy's best-of-N curves (bestofn.json), and per proxy and per method
Gao's α, β, the gold gain at the largest N, proxy–gold rank correlations and held-out accuracies (fit.json)."""

import json
import math
from pathlib import Path

import numpy as np

from pcrm.evaluation.metrics import accuracy, finite_or_none, spearman
from pcrm.io import write_json
from pcrm.study.estimator import best_of_n_curve, fit_gao, gao_curve, gao_peak, t_interval
from pcrm.study.pool import read_pool
from pcrm.study.proxies import load_scores, method_of

# per-proxy values that get a mean and t-interval over the seeds of their method
AGGREGATED = (
    "alpha",
    "beta",
    "gold_gain_max_n",
    "proxy_gain_max_n_sigma",
    "spearman_pool",
    "spearman_within_prompt",
    "accuracy_gold",
    "accuracy_human",
    "scale",
    "beta1",
    "beta3",
)


def stage_bestofn(config, out: Path) -> dict:
    """Best-of-N curves (N = 1..pool size) of every proxy: expected gold and proxy reward of the selections."""
    _, _, gold = read_pool(out / "pool" / "pool.jsonl")
    curves = {
        "pool": {"prompts": gold.shape[0], "pool_size": gold.shape[1], "gold_mean": float(gold.mean())},
        "proxies": {},
    }
    for label, s in load_scores(config, out).items():
        curve = best_of_n_curve(s["pool"], gold)
        curve["proxy_std"] = float(s["pool"].std())
        curves["proxies"][label] = {"method": method_of(label), **curve}
    write_json(out / "bestofn.json", curves)
    return curves


def _accuracy(margin) -> float:
    return float(accuracy(np.asarray(margin, dtype=np.float64)))


def _nanmean(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(x[np.isfinite(x)].mean()) if np.isfinite(x).any() else math.nan


def fit_proxy(curve: dict, scores: dict, gold_pool: np.ndarray, gold_test_margin: np.ndarray) -> dict:
    """α, β, peak, gold at the largest N, proxy–gold Spearman ρ on the pool, held-out accuracy and reward scale of
    one proxy."""
    alpha, beta = fit_gao(curve["d"], curve["gold_gain"])
    fitted = gao_curve(curve["d"], alpha, beta)
    residual = np.asarray(curve["gold_gain"]) - fitted
    margin = scores["test_chosen"] - scores["test_rejected"]  # human orientation
    strict = gold_test_margin != 0
    return {
        "alpha": alpha,
        "beta": beta,
        "peak": gao_peak(alpha, beta),
        "fit_rmse": float(np.sqrt(np.mean(residual**2))),
        "max_kl": curve["kl"][-1],
        "gold_gain_max_n": curve["gold_gain"][-1],
        "gold_max_n": curve["gold"][-1],
        "proxy_gain_max_n_sigma": curve["proxy_gain"][-1] / max(curve["proxy_std"], 1e-12),
        "spearman_pool": finite_or_none(spearman(scores["pool"].ravel(), gold_pool.ravel())),
        "spearman_within_prompt": finite_or_none(_nanmean(spearman(scores["pool"], gold_pool))),
        "accuracy_gold": _accuracy((margin * np.sign(gold_test_margin))[strict]) if strict.any() else None,
        "accuracy_human": _accuracy(margin),
        "scale": float(scores["pool"].std()),
    }


def _training_record(out: Path, label: str) -> dict:
    """β1, β3 and training time from a trained proxy's pcrm_config.json (nothing for the ensemble)."""
    trained = out / "proxies" / label / "pcrm_config.json"
    if not trained.is_file():
        return {}
    record = json.loads(trained.read_text())
    return {key: record.get(key) for key in ("beta1", "beta3", "train_seconds")}


def _aggregate(rows: list[dict], max_kl: float) -> dict:
    """Mean and t-interval over one method's seeds, and the peak of the mean α, β (inside: KL* ≤ `max_kl`)."""
    agg = {"seeds": len(rows), **{key: t_interval([row.get(key) for row in rows]) for key in AGGREGATED}}
    agg["peak"] = gao_peak(agg["alpha"]["mean"], agg["beta"]["mean"])
    agg["peak_inside"] = bool(agg["peak"] and agg["peak"]["kl"] <= max_kl)
    agg["seeds_with_peak"] = sum(row["peak"] is not None for row in rows)
    return agg


def stage_fit(config, out: Path, curves: dict) -> dict:
    """Per proxy: `fit_proxy`; per method: mean and 95% t-interval over seeds, and the peak of the mean α, β."""
    _, _, gold_pool = read_pool(out / "pool" / "pool.jsonl")
    with np.load(out / "labels" / "gold.npz") as g:
        gold_test_margin = g["test_chosen"] - g["test_rejected"]
    scores = load_scores(config, out)
    per_proxy = {
        label: {
            "method": curve["method"],
            **fit_proxy(curve, scores[label], gold_pool, gold_test_margin),
            **_training_record(out, label),
        }
        for label, curve in curves["proxies"].items()
    }
    max_kl = curves["proxies"][next(iter(per_proxy))]["kl"][-1]
    methods = dict.fromkeys(row["method"] for row in per_proxy.values())
    per_method = {
        method: _aggregate([row for row in per_proxy.values() if row["method"] == method], max_kl) for method in methods
    }
    fit = {"per_proxy": per_proxy, "per_method": per_method}
    write_json(out / "fit.json", fit)
    return fit


def test_pair_metrics(out: Path, test_chosen, test_rejected) -> dict:
    """Accuracy against the noiseless gold order of the held-out pairs (gold ties dropped) and length bias
    (`length_bias`, response length in characters) of [S, m] scores of the held-out pairs' human-chosen and
    human-rejected responses, mean over seeds."""
    from pcrm.data import load_preferences
    from pcrm.study.inference import length_bias

    with np.load(out / "labels" / "gold.npz") as g:
        margin = g["test_chosen"] - g["test_rejected"]
    test = load_preferences(str(out / "labels" / "test-human.jsonl"))
    lengths = np.array([len(t) for t in list(test["chosen"]) + list(test["rejected"])])
    m, strict = len(margin), margin != 0
    index = np.arange(m)[strict]
    chosen = np.where(margin[strict] > 0, index, index + m)  # the gold order's winner, in the concatenation
    rejected = np.where(margin[strict] > 0, index + m, index)
    rows = []
    for c, r in zip(np.asarray(test_chosen), np.asarray(test_rejected)):
        bias = length_bias(np.concatenate([c, r]), lengths, chosen, rejected)
        rows.append({"accuracy_gold": _accuracy(((c - r) * np.sign(margin))[strict]), **bias})
    keys = [k for k in rows[0] if not k.startswith("pairs_")]
    return {k: None if any(row[k] is None for row in rows) else float(np.mean([row[k] for row in rows])) for k in keys}


def stage_analysis(config, out: Path, n_boot: int = 2000, draws: int = 1000) -> dict:
    """The redesigned statistics (`pcrm.study.analysis.analyse`) on the pool's gold scores and every proxy's
    per-sample pool scores (scores/LABEL.npz, seeds stacked per method) plus the BT ensembles (mean, WCO, UWO):
    curves with random-selector bands, paired differences vs BT with prompt-clustered CIs, the KL-regularised policy,
    the Gao β > 0 test, findings that state only what passed, and per method the held-out pairs' accuracy and length
    bias. Written to analysis.json; empty when BT is not among the methods or the pool has fewer than 3 samples per
    prompt (the fit needs two N)."""
    from pcrm.study.analysis import analyse, tested_ns
    from pcrm.study.onpolicy import analysis_settings
    from pcrm.study.proxies import ENSEMBLE, ensemble_scores, proxy_dirs

    _, _, gold = read_pool(out / "pool" / "pool.jsonl")
    methods: dict[str, list] = {}
    for label, arrays in load_scores(config, out).items():
        if label != ENSEMBLE:
            methods.setdefault(method_of(label), []).append(arrays)
    stacked = {m: {k: np.stack([a[k] for a in s]) for k in s[0]} for m, s in methods.items()}
    bt = stacked.get("bt", {})
    for key in ("pool", "test_chosen", "test_rejected"):  # members standardised on their pool scores
        for name, value in ensemble_scores(bt.get(key), config.uwo_lambda, reference=bt.get("pool")).items():
            stacked.setdefault(name, {})[key] = value
    result = {}
    ns = tested_ns(gold.shape[1])
    if "bt" in stacked and ns:
        result = analyse(gold, {m: s["pool"] for m, s in stacked.items()}, ns=ns, n_boot=n_boot, draws=draws)
        result["pairs"] = {m: test_pair_metrics(out, s["test_chosen"], s["test_rejected"]) for m, s in stacked.items()}
        result["length_unit"] = "characters"
    result["settings"] = analysis_settings(config, proxy_dirs(config, out))
    write_json(out / "analysis.json", result)
    return result
