"""Report sections of `pcrm.study.analysis.analyse` (either arm of the study): the figure (best-of-N and the
KL-regularised frontier with the random-selector band), the per-method table of headline points with their paired
differences against BT, the fixed-β table, and the claims that passed their tests."""

from pathlib import Path

import numpy as np

from pcrm.report import Section

ESTIMATORS = (("best-of-N", "best-of-N"), ("tilted raw", "π_β raw"), ("tilted standardised", "π_β std"))


def _signed(x) -> str:
    return "–" if x is None else f"{x:+.3f}"


def _interval(low, high) -> str:
    return f"[{low:+.3f}, {high:+.3f}]"


def headline_rows(analysis: dict) -> list[dict]:
    """One row per method: within-prompt ρ, scale, and at each estimator's headline point the gold gain with the
    random-selector band and the paired difference vs BT with its 95% CI (prompt-clustered bootstrap)."""
    rows = []
    for method, entry in analysis["methods"].items():
        row = {
            "method": method,
            "seeds": str(entry.get("seeds", "–")),
            "ρ proxy–gold within prompt": f"{entry['spearman_within_prompt']:.3f}",
            "scale (std)": f"{entry['scale']:.3f}",
        }
        for name, short in (*ESTIMATORS, ("frontier", "frontier")):
            curve = entry["curves"][name]
            k = _headline_index(analysis, name)
            row[f"{short}: gold gain [null band]"] = (
                f"{curve['gain'][k]:+.3f} {_interval(curve['low'][k], curve['high'][k])}"
            )
            diff = curve.get("vs_baseline")
            row[f"{short}: Δ vs BT [95% CI]"] = (
                f"{diff['mean'][k]:+.3f} {_interval(diff['low'][k], diff['high'][k])}" if diff else "–"
            )
        rows.append(row)
    return rows


def _headline_index(analysis: dict, name: str) -> int:
    """The point of curve `name` that the findings test (recorded in the records' `what`)."""
    labels = next(iter(analysis["methods"].values()))["curves"][name]["labels"]
    tested = {r["what"] for r in analysis["findings"]["records"]}
    return next((k for k, label in enumerate(labels) if label in tested), len(labels) - 1)


def headline_points(analysis: dict) -> str:
    """Which point of each curve the table shows (the tested one)."""
    first = next(iter(analysis["methods"].values()))["curves"]
    return "; ".join(
        first[name]["labels"][_headline_index(analysis, name)] for name, _ in (*ESTIMATORS, ("frontier", ""))
    )


def fixed_beta_rows(analysis: dict) -> list[dict]:
    """KL(π_β‖π₀) and gold gain of the KL-regularised policy at each fixed β, raw and pool-standardised rewards."""
    rows = []
    for method, entry in analysis["methods"].items():
        for rewards in ("raw", "standardised"):
            row = {"method": method, "rewards": rewards}
            for cell in entry["fixed_beta"]:
                if cell["rewards"] == rewards:
                    row[f"β={cell['beta']:g}: KL, gold gain"] = f"{cell['kl']:.2f}, {cell['gold_gain']:+.3f}"
            rows.append(row)
    return rows


def pair_rows(analysis: dict) -> list[dict]:
    """Held-out pair accuracy and length bias per method (the `pairs` entry of an arm's analysis)."""
    return [
        {
            "method": method,
            "acc. vs gold order": _fmt(m.get("accuracy_gold")),
            "acc. vs noisy labels": _fmt(m.get("accuracy_noisy_labels")),
            "Spearman(score, length)": _signed(m.get("spearman_score_length")),
            "acc., chosen longer": _fmt(m.get("accuracy_chosen_longer")),
            "acc., chosen shorter": _fmt(m.get("accuracy_chosen_shorter")),
        }
        for method, m in analysis.get("pairs", {}).items()
    ]


def _fmt(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def gao_rows(analysis: dict) -> list[dict]:
    """The inverse-variance weighted Gao fit of each method's best-of-N curve and its test of β > 0."""
    return [
        {
            "method": method,
            "α [95% CI]": f"{g['alpha']:.3f} [{g['alpha_ci'][0]:.3f}, {g['alpha_ci'][1]:.3f}]",
            "β [95% CI]": f"{g['beta']:.3f} [{g['beta_ci'][0]:.3f}, {g['beta_ci'][1]:.3f}]",
            "corr(α, β)": f"{g['corr']:.2f}",
            "p (β > 0)": f"{g['p']:.2g}",
        }
        for method, entry in analysis["methods"].items()
        if (g := entry.get("gao"))
    ]


def plot_analysis(analysis: dict, path: Path, title: str) -> Path:
    """Best-of-N gold gain (N = 1..n) and the KL-regularised frontier against KL, one line per method, the gold RM's
    own curve (oracle) dashed, and BT's random-selector band at the tested points."""
    from pcrm.plots import new_figure, save_figure

    fig_data = analysis["figure"]
    fig, axes = new_figure(ncols=2, width=5.2, height=4.0)
    for ax, name, kl in ((axes[0], "best-of-N", "kl_n"), (axes[1], "frontier", "kl_grid")):
        for i, (method, curves) in enumerate(fig_data["methods"].items()):
            style = "--" if method.startswith("bt-ensemble") else "-"
            ax.plot(fig_data[kl], curves[name], style, color=f"C{i % 10}", linewidth=1.2, label=method)
        ax.plot(fig_data[kl], fig_data["oracle"][name], ":", color="black", linewidth=1, label="gold RM (oracle)")
        bt = analysis["methods"].get("bt", {}).get("curves", {}).get(name)
        if bt:
            points = analysis["ns"] if name == "best-of-N" else analysis["kl_targets"]
            x = [np.log(k) - (k - 1) / k for k in points] if name == "best-of-N" else points
            ax.fill_between(x, bt["low"], bt["high"], color="grey", alpha=0.25, linewidth=0, label="random (BT's band)")
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set(xlabel="KL from the policy (nats)", ylabel="gold gain over the policy's mean")
        ax.legend(fontsize=6)
    axes[0].set_title(f"{title}: best-of-N")
    axes[1].set_title(f"{title}: π_β ∝ π₀·exp(r/β) at matched KL")
    return save_figure(fig, path)


def _claims_text(analysis: dict) -> str:
    found = analysis["findings"]
    claims = " ".join(found["claims"]) or "No test passed: no method is distinguished from BT or from chance."
    return (
        "Paired differences against BT with prompt-clustered bootstrap CIs, random-selector bands, the KL-regularised "
        "policy π_β ∝ π₀·exp(r/β) on the pool and Gao's β > 0 test, Holm-corrected as one family "
        f"(`pcrm.study.analysis`). {claims} {found.get('not_shown', '')}".strip()
    )


def analysis_sections(analysis: dict, out: Path, arm: str, image: str) -> list[Section]:
    """The report sections of one arm's analysis (empty analysis: one section saying why)."""
    if not analysis or "methods" not in analysis:
        return [
            Section(
                f"{arm}: tests that can fail",
                "Not computed: BT is not among the methods, or the pool has fewer than 3 samples per prompt (the "
                "tests need two best-of-N points).",
            )
        ]
    plot_analysis(analysis, out / image, arm)
    return [
        Section(f"{arm}: tests that can fail", _claims_text(analysis)),
        Section(
            f"{arm}: gold reward against KL",
            "Left: best-of-N, N = 1..pool size (exact estimator). Right: the KL-regularised policy on the pool at "
            "matched KL (the frontier: the reward's shape only). Grey: BT's 95% random-selector band at the tested "
            "points; dotted: the gold RM selecting by itself.",
            images=[image],
        ),
        Section(
            f"{arm}: headline points per method",
            f"Mean over seeds and prompts. Points: {headline_points(analysis)}. Null band: 95% of random selectors "
            "with the method's own scores permuted within prompts; Δ: paired difference against BT per (seed, "
            "prompt), 95% prompt-clustered bootstrap CI.",
            rows=headline_rows(analysis),
        ),
        Section(
            f"{arm}: KL-regularised policy at fixed β",
            "π_β ∝ π₀·exp(r/β) on each prompt's samples at the βs a practitioner sets: with raw rewards the proxy's "
            "scale decides how far the policy moves; standardised (mean 0, std 1 on the pool, per reward model: each "
            "fold's proxy on its own prompts in the on-policy arm) removes the scale. Scale: the std of a reward "
            "model's pool scores, averaged over seeds.",
            rows=fixed_beta_rows(analysis),
        ),
        Section(f"{arm}: Gao fit of best-of-N (weighted, N ≤ pool/4)", rows=gao_rows(analysis)),
        *(
            [Section(f"{arm}: held-out pairs and length bias", rows=pair_rows(analysis))]
            if analysis.get("pairs")
            else []
        ),
    ]
