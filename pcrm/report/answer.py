"""The answer that opens a report: per dataset and headline metric, which model is better, claimed only on evidence.

A model is named only when it beats every other model on that data either by separated 95% CIs or, for accuracy and
Kendall τ over labelled pairs (τ = 2·accuracy − 1, so one test serves both), by a paired bootstrap of the per-pair
credit difference (same pairs, prompts resampled) whose 95% CI excludes 0. Otherwise the row says "no model is better".
"""

import numpy as np

from pcrm.evaluation.metrics import estimate, format_estimate, pair_credit
from pcrm.report.sections import Section

NO_BETTER = "no model is better"

# (name, how to read it from metrics, True when higher is better, paired-testable on pair credit); |x| for the bias.
HEADLINE_METRICS = (
    ("accuracy", lambda m: m["accuracy"], True, True),
    ("Kendall τ (labelled pairs)", lambda m: m["rank_correlation"]["kendall_tau_pairs"], True, True),
    ("Spearman ρ per prompt", lambda m: m["rank_correlation"]["spearman_per_prompt"], True, False),
    ("ECE (calibration)", lambda m: m["calibration"]["ece"], False, False),
    (
        "|Spearman ρ(score, length)| (length bias)",
        lambda m: absolute(m["length_bias"]["score_length_spearman"]),
        False,
        False,
    ),
)


def answer_section(summary: dict, arrays: dict | None = None, n_boot: int = 1000, seed: int = 0):
    """One row per (dataset, headline metric): the better model or "no model is better", the leader's estimate, and
    the evidence. `arrays` ({(model, data): per-pair arrays of pcrm evaluate}) enables the paired test."""
    rows = []
    for data in dict.fromkeys(r["data"] for r in summary["results"]):
        results = [r for r in summary["results"] if r["data"] == data]
        for name, get, higher, paired in HEADLINE_METRICS:
            ranked = [(get(r["metrics"]), r["model"]) for r in results]
            ranked = sorted(
                [(e, m) for e, m in ranked if e and e["value"] is not None], key=lambda x: x[0]["value"], reverse=higher
            )
            if not ranked:
                continue
            (best, model), others = ranked[0], ranked[1:]
            if not others:
                rows.append(_row(data, name, "only model evaluated", model, best, "nothing to compare with"))
                continue
            tests = [
                _compare(best, model, other, rival, higher, (arrays or {}) if paired else {}, data, n_boot, seed)
                for other, rival in others
            ]
            supported = all(ok for ok, _ in tests)
            evidence = "; ".join(text for ok, text in tests if ok == supported)
            rows.append(_row(data, name, model if supported else NO_BETTER, model, best, evidence))
    text = (
        "Per dataset and headline metric (higher is better for accuracy and rank correlations, lower for ECE and "
        "the length bias): a model is named only where its 95% CI is separated from every other model's, or a "
        "paired bootstrap of the per-pair difference excludes 0; otherwise no model is better. Details follow."
    )
    return Section("Answer: best model per metric", text, rows)


def _row(data, metric, answer, leader, best, evidence) -> dict:
    return {
        "data": data,
        "metric": metric,
        "better model": answer,
        "leader's estimate [95% CI]": f"{leader}: {format_estimate(best)}",
        "evidence": evidence,
    }


def _compare(best, model, other, rival, higher, arrays, data, n_boot, seed) -> tuple[bool, str]:
    """(is `model` supported as better than `rival`, why): separated CIs, else the paired test where it applies."""
    if best["ci"] is not None and other["ci"] is not None:
        apart = best["ci"][0] > other["ci"][1] if higher else best["ci"][1] < other["ci"][0]
        if apart:
            return True, f"CIs separated from {rival} ({format_estimate(other)})"
    difference = paired_credit_difference(arrays.get((model, data)), arrays.get((rival, data)), n_boot, seed)
    if difference is not None:
        ci = difference["ci"]
        shown = f"paired Δ accuracy {model} − {rival} = {format_estimate(difference)}"
        better = ci is not None and ci[0] > 0
        return better, shown + (" excludes 0" if better else " includes 0")
    if best["ci"] is None or other["ci"] is None:
        return False, f"no CI to compare with {rival} ({format_estimate(other)})"
    return False, f"CIs overlap with {rival} ({format_estimate(other)})"


def paired_credit_difference(a: dict | None, b: dict | None, n_boot: int = 1000, seed: int = 0) -> dict | None:
    """Estimate [95% CI] of mean(credit_a − credit_b) over the same labelled pairs (credit 1 / ½ / 0), resampling
    prompts; None unless both score files hold the same pairs."""
    if a is None or b is None:
        return None
    same = all(np.array_equal(a[k], b[k]) for k in ("chosen", "rejected")) and len(a["score"]) == len(b["score"])
    if not same:
        return None
    credit = [pair_credit(x["score"][x["chosen"]] - x["score"][x["rejected"]]) for x in (a, b)]
    groups = np.asarray(a["group"])[a["chosen"]] if "group" in a else None
    return estimate(lambda d: np.mean(d, axis=-1), credit[0] - credit[1], n_boot=n_boot, seed=seed, groups=groups)


def absolute(estimate: dict | None) -> dict | None:
    """An estimate of |x|: the value and CI of x folded at 0."""
    if not estimate or estimate["value"] is None:
        return estimate
    ci = estimate["ci"]
    if ci is not None:
        low, high = sorted(abs(v) for v in ci)
        ci = [0.0 if ci[0] <= 0 <= ci[1] else low, high]
    return {**estimate, "value": abs(estimate["value"]), "ci": ci}
