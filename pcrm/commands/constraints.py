"""`pcrm constraints`: compute, cache and summarise the prior constraints of a dataset."""

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pcrm.constraints import ConstraintConfig, summarize, timed_constraints
from pcrm.io import write_json

@dataclass
class Config(ConstraintConfig):
    """Compute each pair's similarity and δ* (cached on disk), print a summary and write a histogram."""

    data: str = field(default="hh-rlhf-harmless", metadata={"help": "bundled dataset name or file/directory"})
    split: str = field(default="train", metadata={"help": "split of the dataset"})
    model: str = field(default="minilm", metadata={"help": "tokenizer used to count tokens for --unit tokens"})
    output: str = field(default="runs/constraints", metadata={"help": "directory for summary.json and histogram.png"})

def run(config: Config) -> dict:
    from pcrm.data import load_preferences
    from pcrm.models import load_tokenizer

    dataset = load_preferences(config.data, split=config.split)
    tokenizer = load_tokenizer(config.model) if config.method == "length" and config.unit == "tokens" else None
    dataset, timing = timed_constraints(dataset, config, tokenizer)
    summary = {"config": asdict(config), **summarize(dataset), **timing}
    output = Path(config.output)
    write_json(output / "summary.json", summary)
    plot_histogram(dataset, output / "histogram.png", config)
    print(format_summary(summary))
    print(f"wrote {output / 'summary.json'} and {output / 'histogram.png'}")
    return summary

def format_summary(summary: dict) -> str:
    lines = [f"{summary['pairs']} pairs, {summary['seconds']:.2f} s ({summary['pairs_per_second']:.0f} pairs/s)"]
    lines.append(f"{'':>10} " + " ".join(f"{q:>8}" for q in ("min", "p5", "p25", "p50", "p75", "p95", "max", "mean")))
    for column in ("similarity", "delta"):
        stats = summary[column]
        if stats is None:
            lines.append(f"{column:>10}      (not defined for this method)")
            continue
        lines.append(f"{column:>10} " + " ".join(f"{stats[q]:8.3f}" for q in ("min", "p5", "p25", "p50", "p75", "p95", "max", "mean")))
    return "\n".join(lines)

def plot_histogram(dataset, path: Path, config: ConstraintConfig) -> None:
    from pcrm.plots import new_figure, save_figure

    fig, (ax_s, ax_d) = new_figure(ncols=2)
    similarity = np.asarray(dataset["similarity"], dtype=float)
    similarity = similarity[np.isfinite(similarity)]
    if len(similarity):
        ax_s.hist(similarity, bins=40, color="#4c72b0")
    ax_s.set(title=f"similarity ({config.method})", xlabel="s", ylabel="pairs")
    ax_d.hist(np.asarray(dataset["delta"], dtype=float), bins=40, color="#dd8452")
    ax_d.set(title=f"δ* (β1={config.beta1:g}, β2={config.beta2:g}, β3={config.beta3:g})", xlabel="δ*", ylabel="pairs")
    save_figure(fig, path)

