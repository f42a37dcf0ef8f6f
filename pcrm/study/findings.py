"""The findings of the study: text claims only for the tests that pass, Holm-adjusted over the whole family, and
the rest listed as not distinguished."""

import numpy as np

from pcrm.study.inference import null_band, null_p_value


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
