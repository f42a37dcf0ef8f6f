"""The report's metric table of `pcrm evaluate` results: one row per metric, one column per (model, data)."""

from pcrm.evaluation.metrics import format_estimate
from pcrm.report.sections import Section


def metric_section(summary: dict) -> Section:
    """The metric table with 95% CIs: one row per metric, one column per (model, data)."""
    results = summary["results"]
    columns = [f"{r['model']} · {r['data']}" for r in results]
    metrics = [r["metrics"] for r in results]

    def row(name, cells):
        return {"metric": name, **dict(zip(columns, cells))}

    def estimates(name, get):
        return row(name, [format_estimate(get(m)) for m in metrics])

    def two(name, key, a, b, sep):
        return row(name, [f"{m[key][a]:.4g}{sep}{m[key][b]:.4g}" for m in metrics])

    rows = [
        row("pairs", [str(r["pairs"]) for r in results]),
        estimates("accuracy", lambda m: m["accuracy"]),
        estimates("Kendall τ (labelled pairs)", lambda m: m["rank_correlation"]["kendall_tau_pairs"]),
    ]
    if any(r["kind"] == "ranked" for r in results):
        for key, name in RANKED_CORRELATIONS:
            rows.append(estimates(name, lambda m, key=key: m["rank_correlation"][key]))
    rows += [
        two("score mean ± std", "scores", "mean", "std", " ± "),
        two("score min / max", "scores", "min", "max", " / "),
        two("margin mean ± std", "margins", "mean", "std", " ± "),
        two("margin p5 / p95", "margins", "p5", "p95", " / "),
    ]
    for prior in summary["config"]["priors"]:
        rows += [
            row(f"δ* β1, β2, β3 ({prior})", [_betas(m["priors"][prior]) for m in metrics]),
            estimates(f"margin > δ* ({prior})", lambda m, p=prior: m["priors"][p]["fraction_above_delta"]),
            estimates(
                f"Spearman ρ(margin, s) ({prior})", lambda m, p=prior: m["priors"][p]["margin_similarity_spearman"]
            ),
        ]
    rows += [
        estimates("Spearman ρ(score, length)", lambda m: m["length_bias"]["score_length_spearman"]),
        estimates("accuracy, chosen shorter", lambda m: m["length_bias"]["accuracy_chosen_shorter"]),
        estimates("accuracy, chosen longer", lambda m: m["length_bias"]["accuracy_chosen_longer"]),
        estimates("ECE", lambda m: m["calibration"]["ece"]),
    ]
    config = summary["config"]
    text = (
        f"Estimates with 95% bootstrap CIs ({config['bootstrap']} resamples, seed {config['seed']}). "
        "Margin = score(chosen) − score(rejected); ties count half right. See docs/metrics.md."
    )
    return Section("Metrics", text, rows)


# Rows only for ranked data (several responses per prompt): (key in rank_correlation, row name).
RANKED_CORRELATIONS = (
    ("spearman_per_prompt", "Spearman ρ per prompt"),
    ("kendall_per_prompt", "Kendall τ per prompt"),
    ("spearman_pooled", "Spearman ρ pooled"),
    ("kendall_pooled", "Kendall τ pooled"),
)


def _betas(prior: dict) -> str:
    return f"{prior['beta1']:g}, {prior['beta2']:g}, {prior['beta3']:g} ({prior['beta_source']})"
