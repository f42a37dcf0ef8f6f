"""`pcrm constraints`: compute, cache and summarise the prior constraints of a dataset."""

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pcrm.constraints import ConstraintConfig, summarize, timed_constraints
from pcrm.data.options import COLUMNS_HELP, DATA_CONFIG_HELP
from pcrm.errors import PcrmError
from pcrm.io import write_json


@dataclass
class Config(ConstraintConfig):
    """Compute each pair's similarity and δ* (cached on disk), print a summary and write a histogram."""

    data: str = field(default="hh-rlhf-harmless", metadata={"help": "bundled dataset name or file/directory"})
    split: str = field(default="train", metadata={"help": "split of the dataset"})
    data_config: str | None = field(default=None, metadata={"help": DATA_CONFIG_HELP})
    columns: str | None = field(default=None, metadata={"help": COLUMNS_HELP})
    model: str = field(default="minilm", metadata={"help": "tokenizer used to count tokens for --unit tokens"})
    output: str = field(default="runs/constraints", metadata={"help": "directory for summary.json and histogram.png"})
    suggest_from: str | None = field(
        default=None, metadata={"help": "reward model (e.g. BT-trained) whose margins on this data suggest β1/β3"}
    )
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "tokens per sequence when scoring with --suggest-from "
            "(default: the --max-length that model was trained with)"
        },
    )
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, mps"})
    overwrite: bool = field(
        default=False,
        metadata={"help": "replace an existing --output of pcrm constraints (only once this run succeeds)"},
    )


def run(config: Config) -> dict:
    from pcrm.console import print_data_summary
    from pcrm.data import LoadReport, load_preferences
    from pcrm.io import versions
    from pcrm.models import load_tokenizer
    from pcrm.outputs import OutputFolder
    from pcrm.preflight import check_device, check_model

    check_device(config.device)
    if config.suggest_from:
        if config.method not in ("length", "cosine"):
            raise PcrmError("--suggest-from needs --method length or cosine")
        check_model(config.suggest_from, "reward", config.max_length, "--suggest-from")
    folder = OutputFolder(config.output, "constraints", overwrite=config.overwrite)
    folder.plan()  # every check before the first write
    report = LoadReport()
    dataset = load_preferences(
        config.data, split=config.split, config_name=config.data_config, columns=config.columns, report=report
    )
    print_data_summary(report, f"{len(dataset)} pairs: similarity and δ* ({config.method}) of each")
    tokenizer = load_tokenizer(config.model) if config.method == "length" and config.unit == "tokens" else None
    dataset, timing = timed_constraints(dataset, config, tokenizer, show_progress=config.progress)
    summary = {"config": asdict(config), **summarize(dataset), **timing}
    if config.suggest_from:
        summary["suggestion"] = suggest(dataset, config)
    with folder:
        write_json(folder.work / "summary.json", summary)
        plot_histogram(dataset, folder.work / "histogram.png", config)
        write_pairs(dataset, folder.work / "pairs.csv")
        output = folder.commit({"kind": "constraints", "config": asdict(config), "versions": versions()})
    print(format_summary(summary))
    if config.suggest_from:
        print(format_suggestion(summary["suggestion"], config))
    print(f"wrote {output / 'summary.json'}, {output / 'pairs.csv'} (one row per pair) and {output / 'histogram.png'}")
    return summary


def format_summary(summary: dict) -> str:
    lines = [f"{summary['pairs']} pairs, {summary['seconds']:.2f} s ({summary['pairs_per_second']:.0f} pairs/s)"]
    lines.append(f"{'':>10} " + " ".join(f"{q:>8}" for q in ("min", "p5", "p25", "p50", "p75", "p95", "max", "mean")))
    for column in ("similarity", "delta"):
        stats = summary[column]
        if stats is None:
            lines.append(f"{column:>10}      (not defined for this method)")
            continue
        lines.append(
            f"{column:>10} "
            + " ".join(f"{stats[q]:8.3f}" for q in ("min", "p5", "p25", "p50", "p75", "p95", "max", "mean"))
        )
    return "\n".join(lines)


def write_pairs(dataset, path: Path) -> None:
    """One row per pair, in data order: id (row), similarity, δ*, and the chosen/rejected lengths in characters and
    whitespace words (the text the priors compared: the responses, prompt apart)."""
    import csv
    import io

    from pcrm.data import as_text
    from pcrm.io import atomic_write_text

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["id", "similarity", "delta", "chosen_chars", "rejected_chars", "chosen_words", "rejected_words"])
    columns = zip(dataset["similarity"], dataset["delta"], dataset["chosen"], dataset["rejected"])
    for i, (similarity, delta, chosen, rejected) in enumerate(columns):
        chosen, rejected = as_text(chosen), as_text(rejected)
        writer.writerow(
            [
                i,
                "" if similarity is None else f"{similarity:.6g}",
                f"{delta:.6g}",
                len(chosen),
                len(rejected),
                len(chosen.split()),
                len(rejected.split()),
            ]
        )
    atomic_write_text(path, text.getvalue())


def plot_histogram(dataset, path: Path, config: ConstraintConfig) -> None:
    from pcrm.plots import integer_ticks, new_figure, save_figure

    fig, (ax_s, ax_d) = new_figure(ncols=2)
    integer_ticks(ax_s, ax_d, axis="y")
    similarity = np.asarray(dataset["similarity"], dtype=float)
    similarity = similarity[np.isfinite(similarity)]
    if len(similarity):
        ax_s.hist(similarity, bins=40, color="#4c72b0")
    ax_s.set(title=f"similarity ({config.method})", xlabel="s", ylabel="pairs")
    ax_d.hist(np.asarray(dataset["delta"], dtype=float), bins=40, color="#dd8452")
    ax_d.set(title=f"δ* (β1={config.beta1:g}, β2={config.beta2:g}, β3={config.beta3:g})", xlabel="δ*", ylabel="pairs")
    save_figure(fig, path)


def suggest(dataset, config: Config) -> dict:
    """Score the pairs with a reference RM; suggest β1/β3 so δ* spans its margin scale."""
    from pcrm.constraints import delta_star, suggest_betas
    from pcrm.scoring import RewardScorer

    if config.method not in ("length", "cosine"):
        raise PcrmError("--suggest-from needs --method length or cosine")
    scorer = RewardScorer.load(config.suggest_from, config.max_length, config.device)
    chosen, rejected = scorer.pairs(dataset)
    margins = chosen - rejected
    beta1, beta3 = suggest_betas(dataset["similarity"], margins, config.beta2)
    deltas = delta_star(dataset["similarity"], beta1, config.beta2, beta3).numpy()
    quantiles = (0.05, 0.25, 0.5, 0.75, 0.95)
    return {
        "reference_model": config.suggest_from,
        "beta1": beta1,
        "beta3": beta3,
        "margin_quantiles": dict(zip(map(str, quantiles), np.quantile(margins, quantiles).tolist())),
        "suggested_delta_quantiles": dict(zip(map(str, quantiles), np.quantile(deltas, quantiles).tolist())),
        "reference_frac_above_suggested_delta": float(np.mean(margins > deltas)),
    }


def format_suggestion(suggestion: dict, config: Config) -> str:
    lines = [f"margins of {suggestion['reference_model']} vs the suggested δ* (quantiles 5/25/50/75/95%):"]
    lines.append("    margin " + " ".join(f"{v:8.3f}" for v in suggestion["margin_quantiles"].values()))
    lines.append("    δ*     " + " ".join(f"{v:8.3f}" for v in suggestion["suggested_delta_quantiles"].values()))
    lines.append(
        f"suggested: --method {config.method} --beta1 {suggestion['beta1']:.4g} --beta2 {config.beta2:g} "
        f"--beta3 {suggestion['beta3']:.4g} "
        f"({suggestion['reference_frac_above_suggested_delta']:.1%} of the reference margins exceed it)"
    )
    return "\n".join(lines)
