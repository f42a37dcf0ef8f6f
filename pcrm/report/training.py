"""The report's training curves: loss, accuracy and margin scale over steps from each model's train_log.jsonl."""

import json
from pathlib import Path

import numpy as np

from pcrm.report.sections import Section

CURVES = (("loss", "loss"), ("accuracy", "accuracy"), ("margin_mean", "margin mean ± std"))  # (log key, title)


def training_sections(results: list[dict], output: Path) -> list[Section]:
    """Loss, accuracy and margin scale over steps, from each model directory's train_log.jsonl (if any)."""
    from pcrm.plots import integer_ticks, new_figure, save_figure  # matplotlib only when there is a log to draw

    logs = {}
    for result in results:
        log = Path(result["model_path"]) / "train_log.jsonl"
        if log.is_file() and result["model"] not in logs:
            logs[result["model"]] = read_train_log(log)
    if not any(logs.values()):
        return []
    fig, axes = new_figure(ncols=3, width=4.4)
    for i, (model, rows) in enumerate(logs.items()):
        for ax, (key, _) in zip(axes, CURVES):
            _plot_curve(ax, rows, key, model, color=f"C{i % 10}")
    integer_ticks(*axes)
    for ax, (_, title) in zip(axes, CURVES):
        ax.set(title=title, xlabel="step")
        if ax.lines:
            ax.legend(fontsize=8)
    save_figure(fig, output / "training.png")
    text = (
        "Per-step training log (train_log.jsonl) of: "
        + ", ".join(logs)
        + "; smoothed (moving average), raw values faint."
    )
    return [Section("Training curves", text, images=["training.png"])]


def _plot_curve(ax, rows: list[dict], key: str, model: str, color: str) -> None:
    """One model's `key` over steps: raw (faint) and smoothed; the margin with its ± std band."""
    points = [(r["step"], r[key], r.get("margin_std", 0.0)) for r in rows if "step" in r and r.get(key) is not None]
    if not points:
        return
    step, value, spread = (np.array(v, dtype=float) for v in zip(*points))
    ax.plot(step, value, color=color, alpha=0.25, linewidth=0.8)
    ax.plot(step, smooth(value), color=color, label=model)
    if key == "margin_mean":
        ax.fill_between(step, smooth(value - spread), smooth(value + spread), color=color, alpha=0.15)


def smooth(values: np.ndarray, window: int | None = None) -> np.ndarray:
    """Centred moving average (window ≈ 5% of the points, odd, at least 1); the ends average what they have."""
    window = window or max(1, (len(values) // 20) | 1)
    kernel = np.ones(window)
    return np.convolve(values, kernel, "same") / np.convolve(np.ones_like(values), kernel, "same")


def read_train_log(path: Path) -> list[dict]:
    """The JSON-object lines of a training log; others (e.g. a line being written) are skipped."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
