"""The report's figures of `pcrm evaluate` results: margin histograms, margin vs similarity with the δ* curve, score
vs length and reliability; one PNG per dataset, the models overlaid in the same colour throughout.

matplotlib (`pcrm.plots`) is imported only when a figure is drawn: a report of stored sections needs none."""

import functools
from pathlib import Path

import numpy as np

from pcrm.constraints import delta_star
from pcrm.evaluation.metrics import format_estimate
from pcrm.io import slug
from pcrm.report.sections import Section


def figure_sections(runs: list, priors: list[str], output: Path) -> list[Section]:
    """Margin histograms, margin vs similarity, score vs length and reliability: one figure per dataset."""
    from pcrm.plots import save_figure

    models = list(dict.fromkeys(result["model"] for result, _ in runs))
    colors = {model: f"C{i % 10}" for i, model in enumerate(models)}
    by_data = {}
    for result, arrays in runs:
        by_data.setdefault(result["data"], []).append((result, arrays))
    plots = [
        ("Margin distribution", "margins", "Margin per labelled pair, models overlaid.", plot_margins),
        ("Score vs length", "length", "Score of each response against its length in the model's tokens.", plot_length),
        (
            "Reliability",
            "reliability",
            "σ(margin) as P(chosen), each pair in both orientations; dotted: perfect calibration.",
            plot_reliability,
        ),
    ]
    if priors:
        text = "Each pair's margin against its similarity; dashed: the δ* bound under each model's β."
        plots.insert(1, ("Margin vs similarity", "similarity", text, functools.partial(plot_similarity, priors=priors)))
    sections = []
    for title, stem, text, plot in plots:
        images = []
        for data, data_runs in by_data.items():
            images.append(f"{stem}-{slug(data)}.png")
            save_figure(plot(data_runs, colors), output / images[-1])
        sections.append(Section(title, text, images=images))
    return sections


def plot_margins(runs, colors):
    from pcrm.plots import integer_ticks, new_figure

    fig, (ax,) = new_figure(width=6.5)
    margins = {result["model"]: margin(arrays) for result, arrays in runs}
    bins = np.histogram_bin_edges(np.concatenate(list(margins.values())), bins=40)
    for model, values in margins.items():
        ax.hist(values, bins=bins, color=colors[model], alpha=0.3)
        ax.hist(values, bins=bins, color=colors[model], histtype="step", linewidth=1.5, label=model)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set(title=f"margins · {runs[0][0]['data']}", xlabel="margin r(chosen) − r(rejected)", ylabel="pairs")
    integer_ticks(ax, axis="y")
    ax.legend(fontsize=8)
    return fig


def plot_similarity(runs, colors, priors: list[str]):
    from pcrm.plots import new_figure

    fig, axes = new_figure(ncols=len(priors))
    for ax, prior in zip(axes, priors):
        margins = np.concatenate([margin(arrays) for _, arrays in runs])
        top = margins.max()
        for result, arrays in runs:
            model, similarity, info = result["model"], arrays[f"similarity_{prior}"], result["metrics"]["priors"][prior]
            ax.scatter(similarity, margin(arrays), s=6, alpha=0.4, color=colors[model], label=model)
            grid = np.linspace(max(similarity.min(), 1e-3), max(similarity.max(), similarity.min() + 1e-3), 200)
            bound = delta_star(grid, info["beta1"], info["beta2"], info["beta3"]).numpy()
            ax.plot(grid, bound, "--", color=colors[model], linewidth=1.2)
            top = max(top, np.quantile(arrays[f"delta_{prior}"], 0.9))
        span = top - margins.min()
        ax.set_ylim(margins.min() - 0.05 * span, top + 0.05 * span)
        ax.set(title=f"{prior} prior · {runs[0][0]['data']}", xlabel=f"similarity s ({prior})", ylabel="margin")
        ax.legend(fontsize=8, markerscale=2)
    return fig


def plot_length(runs, colors):
    from pcrm.plots import new_figure

    fig, (ax,) = new_figure(width=6.5)
    for result, arrays in runs:
        rho = format_estimate(result["metrics"]["length_bias"]["score_length_spearman"], ci=False)
        ax.scatter(
            arrays["length"],
            arrays["score"],
            s=6,
            alpha=0.4,
            color=colors[result["model"]],
            label=f"{result['model']} (ρ={rho})",
        )
    ax.set(title=f"score vs length · {runs[0][0]['data']}", xlabel="response length (tokens)", ylabel="score")
    ax.legend(fontsize=8, markerscale=2)
    return fig


def plot_reliability(runs, colors):
    from pcrm.plots import new_figure

    fig, (ax,) = new_figure(width=4.6, height=4.2)
    ax.plot([0, 1], [0, 1], ":", color="gray")
    for result, _ in runs:
        calibration = result["metrics"]["calibration"]
        filled = [b for b in calibration["bins"] if b["count"]]
        ece = format_estimate(calibration["ece"], ci=False)
        ax.plot(
            [b["confidence"] for b in filled],
            [b["frequency"] for b in filled],
            "o-",
            color=colors[result["model"]],
            label=f"{result['model']} (ECE={ece})",
        )
    ax.set(
        title=f"reliability · {runs[0][0]['data']}",
        xlabel="predicted P(chosen) = σ(margin)",
        ylabel="observed frequency",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(fontsize=8)
    return fig


def margin(arrays: dict) -> np.ndarray:
    """score(chosen) − score(rejected) per labelled pair."""
    return arrays["score"][arrays["chosen"]] - arrays["score"][arrays["rejected"]]
