"""The report stage: the gold and proxy curves plot, the tables per method and per proxy, the findings read off the
numbers, report.html / report.md / summary.json, and the summary printed at the end of a run."""

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pcrm.evaluation.metrics import kl_best_of_n
from pcrm.io import atomic_write_text, write_json
from pcrm.study.estimator import gao_curve
from pcrm.study.proxies import ENSEMBLE

TITLE = "Reward over-optimisation against a gold reward model"


def _band(curves: dict, method: str, key: str, scale_by_std: bool = False):
    rows = [c for c in curves["proxies"].values() if c["method"] == method]
    values = np.array([np.asarray(c[key]) / (max(c["proxy_std"], 1e-12) if scale_by_std else 1.0) for c in rows])
    return np.asarray(rows[0]["kl"]), values.mean(axis=0), values.min(axis=0), values.max(axis=0)


def plot_curves(curves: dict, fit: dict, path: Path) -> Path:
    """Gold gain (with the fitted d(α − βd) of the mean α, β, dotted) and proxy gain against KL, one colour per
    method."""
    from pcrm.plots import new_figure, save_figure

    fig, (gold_ax, proxy_ax) = new_figure(ncols=2, width=5.4, height=4.0)
    methods = list(dict.fromkeys(c["method"] for c in curves["proxies"].values()))
    for i, method in enumerate(methods):
        color, style = f"C{i % 10}", "--" if method == ENSEMBLE else "-"
        kl, mean, low, high = _band(curves, method, "gold_gain")
        gold_ax.plot(kl, mean, style, color=color, marker="o", markersize=2.5, label=method)
        gold_ax.fill_between(kl, low, high, color=color, alpha=0.15, linewidth=0)
        agg = fit["per_method"][method]
        if agg["alpha"]["mean"] is not None:
            d = np.linspace(0, math.sqrt(kl[-1]), 60)
            gold_ax.plot(d**2, gao_curve(d, agg["alpha"]["mean"], agg["beta"]["mean"]), ":", color=color, linewidth=1)
        kl, mean, low, high = _band(curves, method, "proxy_gain", scale_by_std=True)
        proxy_ax.plot(kl, mean, style, color=color, marker="o", markersize=2.5, label=method)
        proxy_ax.fill_between(kl, low, high, color=color, alpha=0.15, linewidth=0)
    gold_ax.axhline(0, color="black", linewidth=0.6)
    gold_ax.set(
        title="gold reward of best-of-N by each proxy",
        xlabel="KL(best-of-N ‖ policy) = log N − (N−1)/N (nats)",
        ylabel="gold(N) − gold(N=1)",
    )
    proxy_ax.set(
        title="proxy reward of the same selections",
        xlabel="KL (nats)",
        ylabel="proxy gain (σ of the proxy's pool scores)",
    )
    for ax in (gold_ax, proxy_ax):
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def _fmt(x, digits: int) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _ci(est: dict, digits: int = 3) -> str:
    if est is None or est.get("mean") is None:
        return "–"
    text = f"{est['mean']:.{digits}f}"
    if est.get("low") is not None:
        text += f" [{est['low']:.{digits}f}, {est['high']:.{digits}f}]"
    return text


def _peak_text(agg: dict) -> str:
    peak = agg["peak"]
    if not peak:
        return "none (β ≤ 0)"
    return f"{peak['gain']:.3f} ({peak['kl']:.2f}{'' if agg['peak_inside'] else ', extrapolated'})"


def method_rows(fit: dict) -> list[dict]:
    return [
        {
            "method": method,
            "seeds": str(agg["seeds"]),
            "α [95% CI]": _ci(agg["alpha"]),
            "β [95% CI]": _ci(agg["beta"]),
            "peak gold gain (KL*)": _peak_text(agg),
            "gold gain at max N": _ci(agg["gold_gain_max_n"]),
            "proxy gain at max N (σ)": _ci(agg["proxy_gain_max_n_sigma"], 2),
            "ρ proxy–gold (pool)": _ci(agg["spearman_pool"]),
            "ρ within prompt": _ci(agg["spearman_within_prompt"]),
            "acc. vs gold": _ci(agg["accuracy_gold"]),
            "acc. vs human": _ci(agg["accuracy_human"]),
            "reward scale (std)": _ci(agg["scale"]),
            "β1, β3": (
                f"{agg['beta1']['mean']:.3g}, {agg['beta3']['mean']:.3g}" if agg["beta1"]["mean"] is not None else "–"
            ),
        }
        for method, agg in fit["per_method"].items()
    ]


def proxy_rows(fit: dict) -> list[dict]:
    return [
        {
            "proxy": label,
            "α": f"{r['alpha']:.4f}",
            "β": f"{r['beta']:.4f}",
            "fit RMSE": f"{r['fit_rmse']:.4f}",
            "gold gain at max N": f"{r['gold_gain_max_n']:.4f}",
            "ρ pool": _fmt(r["spearman_pool"], 3),
            "acc. vs gold": _fmt(r["accuracy_gold"], 3),
            "acc. vs human": f"{r['accuracy_human']:.3f}",
            "scale": f"{r['scale']:.4f}",
        }
        for label, r in fit["per_proxy"].items()
    ]


def _overlap(a: dict, b: dict) -> bool:
    if a["low"] is None or b["low"] is None:
        return True
    return not (a["low"] > b["high"] or b["low"] > a["high"])


def findings_text(fit: dict, curves: dict) -> str:
    """Plain statements read off the fit over seeds: which method keeps the most gold at the largest N and whether
    the t-intervals separate it; "ends below the policy's average" only where the whole interval is below 0."""
    agg = fit["per_method"]
    trained = {m: a for m, a in agg.items() if m != ENSEMBLE and a["gold_gain_max_n"]["mean"] is not None}
    if not trained:
        return ""
    pool = curves["pool"]
    best = max(trained, key=lambda m: trained[m]["gold_gain_max_n"]["mean"])
    parts = [
        f"At the largest N ({pool['pool_size']}, KL {kl_best_of_n(pool['pool_size']):.2f} nats) the highest mean "
        f"gold gain is {best}'s ({_ci(trained[best]['gold_gain_max_n'])})."
    ]
    best_gain = trained[best]["gold_gain_max_n"]
    tied = [m for m in trained if m != best and _overlap(trained[m]["gold_gain_max_n"], best_gain)]
    if tied:
        parts.append(
            f"Its 95% interval over seeds overlaps those of {', '.join(tied)}, so the data do not separate them."
        )
    elif len(trained) > 1:
        parts.append("Its 95% interval over seeds overlaps no other method's.")
    parts.append(
        "Whether a gold curve bends over is not read off this fit (its α and β are not identified over the pool's "
        "KL range): the Gao β > 0 test against random selectors is in the tests that can fail above."
    )
    falling = [
        m for m, a in trained.items() if a["gold_gain_max_n"]["high"] is not None and a["gold_gain_max_n"]["high"] < 0
    ]
    if falling:
        parts.append(
            f"Selecting by {', '.join(falling)} ends below the policy's average gold reward (the whole 95% interval "
            "over seeds below 0)."
        )
    if ENSEMBLE in agg and agg.get("bt", {}).get("gold_gain_max_n", {}).get("mean") is not None:
        e, b = agg[ENSEMBLE]["gold_gain_max_n"]["mean"], agg["bt"]["gold_gain_max_n"]["mean"]
        parts.append(
            f"The BT ensemble (mean of the BT seeds' scores) reaches {e:.3f} against {b:.3f} for a single BT proxy "
            "on average."
        )
    return " ".join(parts)


def _setup_text(config, labels: dict, pool: dict) -> str:
    return (
        "Synthetic gold-reward study (Gao, Schulman & Hilton 2022; Coste et al. 2024). The gold reward model "
        f"({config.gold}) relabelled {labels['train_pairs']} {config.data} train pairs with Bradley–Terry noise, "
        f"P(a ≻ b) = σ((g_a − g_b)/τ), τ = {labels['tau']:.4g} ({labels['tau_rule']}; gold margin std "
        f"{labels['gold_margin_std']:.4g}); the noisy labels agree with the noiseless gold order on "
        f"{labels['noisy_vs_gold_agreement']:.3f} of the pairs (expected {1 - labels['expected_flip_rate']:.3f}) and "
        f"with the human labels on {labels['noisy_vs_human_agreement']:.3f}; the gold RM itself agrees with the "
        f"human labels on {labels['gold_vs_human_agreement_test']:.3f} of {labels['test_pairs']} held-out pairs. "
        f"Proxies ({config.proxy_model}) were trained on the noisy labels with {', '.join(config.methods)} over "
        f"seeds {', '.join(map(str, config.seeds))} (βs: {config.betas}); {ENSEMBLE} is the mean of the BT seeds' "
        f"scores. Pool: {pool['prompts']} held-out prompts × {pool['pool_size']} samples ({pool['source']}), scored "
        "once by the gold RM. Best-of-N values are the exact expectation over all size-N subsets of the pool (an "
        "unbiased estimator of best-of-N from the policy), averaged over prompts; KL = log N − (N−1)/N."
    )


def _caveats_text(pool: dict, seeds: int) -> str:
    return (
        f"Caveats: the pool bounds KL at {kl_best_of_n(pool['pool_size']):.2f} nats (N ≤ {pool['pool_size']}); Gao "
        "et al. measured best-of-N to far larger N, and a gold curve that still rises here may turn at larger KL. "
        f"The estimator is unbiased for best-of-N from the policy, but its prompts are only {pool['prompts']}, so "
        "curves of different proxies share the same sampling noise (they are compared on the same pool, which helps "
        f"comparisons). Intervals are Student-t over {seeds} seeds (proxy training noise only; pool and label noise "
        "are fixed) and are wide with so few seeds. α and β are least-squares fits of d(α − βd) to the "
        "mean-over-prompts curve at every N; β > 0 with a peak beyond the largest KL is an extrapolation, not an "
        "observation. Accuracy vs gold uses the noiseless gold order of the held-out pairs (ties dropped); proxies "
        "never saw human labels, so accuracy vs human measures how much of the human signal the gold RM passes on. "
        "RL against the proxies is not part of this study."
    )


def _on_policy_setup(config, labels: dict) -> str:
    return (
        f"On-policy arm (Gao et al.'s design): the pool's {labels['prompts']} prompts were split into "
        f"{labels['folds']} seeded folds; {labels['pairs_per_prompt']} distinct pairs of each prompt's samples "
        f"({labels['pairs']} in all) were labelled by the gold RM with Bradley–Terry noise, τ = {labels['tau']:.4g} "
        f"({labels['tau_rule']}; the noisy labels agree with the gold order on "
        f"{labels['noisy_vs_gold_agreement']:.3f}). "
        f"Each fold's proxies ({config.proxy_model}; {', '.join(config.methods)}; seeds "
        f"{', '.join(map(str, config.seeds))}) were trained on the other folds' pairs "
        f"({', '.join(map(str, labels['train_pairs_per_fold']))} pairs) and score only their own fold's prompts, so "
        "every score is of a prompt the proxy never saw. BT ensembles: the BT seeds' mean, worst case (WCO) and "
        f"mean − {config.uwo_lambda:g}·variance (UWO; Coste et al. 2024)."
    )


def _off_policy_sections(config, out: Path, labels, pool, curves, fit, analysis) -> list:
    from pcrm.report import Section
    from pcrm.study.analysis_report import analysis_sections

    plot_curves(curves, fit, out / "overoptimization.png")
    return [
        Section("Off-policy arm: setup", _setup_text(config, labels, pool)),
        *analysis_sections(analysis or {}, out, "Off-policy arm", "off-policy.png"),
        Section("Off-policy arm: findings of the fit over seeds", findings_text(fit, curves)),
        Section(
            "Off-policy arm: gold and proxy reward against KL, N = 1..pool size",
            "Left: gold reward gain of the best-of-N selection by each proxy (line: mean over seeds, band: min..max, "
            "dotted: the fitted d(α − βd) of the mean α, β). Right: the proxy's own reward gain of the same "
            "selections, in units of the std of its pool scores so that proxies of different scale compare.",
            images=["overoptimization.png"],
        ),
        Section(
            "Off-policy arm: summary per method",
            "Mean [95% t-interval over seeds]. α: initial slope of gold gain in d = √KL; β: over-optimisation "
            "(curvature); peak = α²/4β at KL* = (α/2β)² from the mean α, β; ρ: Spearman of proxy and gold scores on "
            "the pool (pooled; within prompt = mean over prompts); reward scale: std of the proxy's pool scores.",
            rows=method_rows(fit),
        ),
        Section("Off-policy arm: per proxy", rows=proxy_rows(fit)),
        Section("Caveats", _caveats_text(pool, len(config.seeds))),
    ]


def write_report(
    config, out: Path, labels, pool: dict, curves, fit, analysis=None, on_policy: dict | None = None
) -> dict:
    """The plots, report.html, report.md (and their sections, for `pcrm report`) and summary.json of the arms that
    ran (off-policy: `labels`, `curves`, `fit`, `analysis`; on-policy: `on_policy` = {labels, analysis}); returns the
    summary."""
    from pcrm.report import Section, render_html, render_markdown, store_sections
    from pcrm.study.analysis_report import analysis_sections

    sections = []
    if on_policy is not None:
        sections += [
            Section("On-policy arm: setup", _on_policy_setup(config, on_policy["labels"])),
            *analysis_sections(on_policy["analysis"], out, "On-policy arm", "on-policy.png"),
        ]
    if fit is not None:
        sections += _off_policy_sections(config, out, labels, pool, curves, fit, analysis)
    store_sections(out, sections)  # `pcrm report --input OUTPUT` renders them again
    atomic_write_text(out / "report.html", render_html(TITLE, sections, out))
    atomic_write_text(out / "report.md", render_markdown(TITLE, sections))
    summary = {"config": asdict(config), "labels": labels, "pool": pool, "bestofn": curves, "fit": fit}
    summary["findings"] = (analysis or {}).get("findings", {}).get("claims", [])
    if on_policy is not None:
        summary["on_policy"] = {
            "labels": on_policy["labels"],
            "findings": on_policy["analysis"].get("findings", {}).get("claims", []),
        }
    write_json(out / "summary.json", summary)
    return summary


def format_summary(fit, on_policy, out: Path) -> str:
    """One line per method of each arm (off-policy: α, β, gold gain at the largest N, accuracies, scale; on-policy:
    within-prompt ρ, best-of-N gain at the tested N and its difference vs BT), and where the report is."""
    lines = []
    if on_policy is not None and on_policy["analysis"].get("methods"):
        from pcrm.study.analysis_report import _headline_index

        analysis = on_policy["analysis"]
        k = _headline_index(analysis, "best-of-N")
        n = analysis["ns"][k]
        lines.append(f"on-policy arm: {'method':<18} {'ρ within':>9} {'gain N=' + str(n):>10} {'Δ vs BT [95% CI]':>26}")
        for method, entry in analysis["methods"].items():
            curve = entry["curves"]["best-of-N"]
            diff = curve.get("vs_baseline")
            ci = f"{diff['mean'][k]:+.3f} [{diff['low'][k]:+.3f}, {diff['high'][k]:+.3f}]" if diff else "–"
            rho, gain = entry["spearman_within_prompt"], curve["gain"][k]
            lines.append(f"{'':<15}{method:<18} {rho:>9.3f} {gain:>+10.3f} {ci:>26}")
    if fit is not None:
        lines.append(
            f"{'method':<14} {'α':>8} {'β':>8} {'gold gain @maxN':>16} {'acc gold':>9} {'acc human':>9} {'scale':>8}"
        )
        for method, agg in fit["per_method"].items():
            lines.append(
                f"{method:<14} {agg['alpha']['mean']:>8.4f} {agg['beta']['mean']:>8.4f} "
                f"{agg['gold_gain_max_n']['mean']:>16.4f} {_fmt(agg['accuracy_gold']['mean'], 3):>9} "
                f"{agg['accuracy_human']['mean']:>9.3f} {agg['scale']['mean']:>8.4f}"
            )
    return "\n".join(lines) + f"\nwrote {out / 'report.html'}, {out / 'report.md'} and {out / 'summary.json'}"
