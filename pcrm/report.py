"""The report of `pcrm report`: a self-contained HTML report and a Markdown twin of a pcrm output.

Of `pcrm evaluate` results (a reproduce folder: its `evaluation/`), or of any output that stored report sections
(`store_sections`/`add_section`: align, evaluate-policy, overoptimization).

Sections: the metric table with 95% CIs, margin histograms, margin vs similarity with the
δ* curve, score vs length, reliability diagram, training curves (from `train_log.jsonl` in
the model directories) and any section other commands added with `add_section`. Figures are
saved as PNG files beside the report and embedded in the HTML as base64 data URIs.
"""

import base64
import functools
import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pcrm.errors import PcrmError
from pcrm.evaluation.metrics import format_estimate
from pcrm.evaluation.reward_models import SCHEMA_VERSION
from pcrm.io import atomic_write_bytes, atomic_write_text, slug, write_json
from pcrm.report_answer import answer_section

SECTIONS_DIR = "sections"
PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class Section:
    """One report section: a paragraph, a table (one dict per row, keys are the columns) and PNG images."""

    title: str
    text: str = ""
    rows: list[dict] = field(default_factory=list)
    images: list[str] = field(default_factory=list)


def add_section(directory: str | Path, title: str, rows=(), images=(), text: str = "") -> Path:
    """Add a section to the report of an evaluation directory; `pcrm report` renders it after
    the built-in sections. Stored as `directory/sections/<title>.json` (same title: replaced), its PNG images
    copied beside it (a report embeds only files from inside its own folder)."""
    folder = Path(directory) / SECTIONS_DIR
    names = []
    for i, image in enumerate(images):
        names.append(f"{SECTIONS_DIR}/{slug(title)}-{i}.png")
        atomic_write_bytes(Path(directory) / names[-1], _png_bytes(Path(image), title))
    path = folder / f"{slug(title)}.json"
    write_json(path, asdict(Section(title, text, [dict(row) for row in rows], names)))
    return path


def store_sections(directory: str | Path, sections: list[Section]) -> None:
    """Store a command's own report sections in its output (`sections/NN-<title>.json`, in this order), so that
    `pcrm report --input DIRECTORY` renders them; their images are files inside `directory`, named relative to it."""
    for i, section in enumerate(sections):
        for name in section.images:
            _section_image(Path(directory), name, section.title)  # inside the folder, a PNG
        write_json(Path(directory) / SECTIONS_DIR / f"{i:02d}-{slug(section.title)}.json", asdict(section))


def _png_bytes(path: Path, title: str) -> bytes:
    if not path.is_file():
        raise PcrmError(f"{path}: image of report section {title!r} not found")
    data = path.read_bytes()
    if not data.startswith(PNG):
        raise PcrmError(f"{path}: image of report section {title!r} is not a PNG file")
    return data


def read_summary(input: str | Path) -> tuple[Path, dict]:
    """(metrics.json, its content) of a `pcrm evaluate` directory or its metrics.json, checked (one line if not)."""
    source = Path(input)
    metrics_file = source if source.suffix == ".json" else source / "metrics.json"
    summary = _read_json(metrics_file, "run pcrm evaluate first")
    if not isinstance(summary, dict) or summary.get("schema_version") != SCHEMA_VERSION or "results" not in summary:
        raise PcrmError(f"{metrics_file}: not a metrics.json of pcrm evaluate (schema_version {SCHEMA_VERSION})")
    _check_summary(summary, metrics_file)
    return metrics_file, summary


# Default titles by the command that wrote the folder.
TITLES = {
    "evaluate": "Reward model evaluation",
    "reproduce": "pcrm reproduction",
    "align": "Alignment",
    "evaluate-policy": "Policy evaluation",
    "overoptimization": "Reward over-optimisation against a gold reward model",
}


def report_source(input: str | Path) -> tuple[Path, dict | None]:
    """(folder, its `pcrm evaluate` summary or None) of what `pcrm report --input` names: a `pcrm evaluate` folder or
    its metrics.json; a `pcrm reproduce` folder (its evaluation/); or an output with stored sections and no evaluate
    metrics (align, evaluate-policy, overoptimization: None). Checked; one line if none of these."""
    source = Path(input)
    if source.suffix == ".json":
        return source.parent, read_summary(source)[1]
    if not (source / "metrics.json").exists() and (source / "evaluation" / "metrics.json").is_file():  # pcrm reproduce
        source = source / "evaluation"
    if any((source / SECTIONS_DIR).glob("*.json")) and not _evaluate_metrics(source / "metrics.json"):
        return source, None
    return source, read_summary(source)[1]


def _evaluate_metrics(path: Path) -> bool:
    """Whether `path` is (or claims to be, possibly broken) a metrics.json of `pcrm evaluate`."""
    if not path.is_file():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True  # read_summary says what is wrong
    return not isinstance(data, dict) or "schema_version" in data or "results" in data


def default_title(folder: Path) -> str:
    from pcrm.outputs import read_record

    record = read_record(folder) or read_record(folder.parent) or {}
    return TITLES.get(record.get("command"), TITLES["evaluate"])


def write_report(input: str | Path, output: str | Path | None = None, title: str | None = None) -> dict:
    """report.html and report.md (with PNGs beside them) of what `report_source` accepts."""
    folder, summary = report_source(input)
    output = Path(output) if output else folder
    title = title or default_title(folder)
    extra = [_localised(s, folder, output) for s in extra_sections(folder)]  # checked first
    if summary is None:
        sections = extra
    else:
        runs = [(result, _load_arrays(folder / result["arrays"])) for result in summary["results"]]
        answer = answer_section(
            summary,
            {(r["model"], r["data"]): a for r, a in runs},
            summary["config"]["bootstrap"],
            summary["config"]["seed"],
        )
        sections = [answer, metric_section(summary), *figure_sections(runs, summary["config"]["priors"], output)]
        sections += training_sections(summary["results"], output) + extra
    atomic_write_text(output / "report.html", render_html(title, sections, output))
    atomic_write_text(output / "report.md", render_markdown(title, sections))
    images = [str(output / name) for s in sections for name in s.images]
    print(f"wrote {output / 'report.html'}, {output / 'report.md'} and {len(images)} PNG files")
    return {"html": str(output / "report.html"), "markdown": str(output / "report.md"), "images": images}


def metric_section(summary: dict) -> Section:
    """The metric table: one row per metric, one column per (model, data)."""
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
        for key, name in (
            ("spearman_per_prompt", "Spearman ρ per prompt"),
            ("kendall_per_prompt", "Kendall τ per prompt"),
            ("spearman_pooled", "Spearman ρ pooled"),
            ("kendall_pooled", "Kendall τ pooled"),
        ):
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
    margins = {result["model"]: _margin(arrays) for result, arrays in runs}
    bins = np.histogram_bin_edges(np.concatenate(list(margins.values())), bins=40)
    for model, margin in margins.items():
        ax.hist(margin, bins=bins, color=colors[model], alpha=0.3)
        ax.hist(margin, bins=bins, color=colors[model], histtype="step", linewidth=1.5, label=model)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set(title=f"margins · {runs[0][0]['data']}", xlabel="margin r(chosen) − r(rejected)", ylabel="pairs")
    integer_ticks(ax, axis="y")
    ax.legend(fontsize=8)
    return fig


def plot_similarity(runs, colors, priors: list[str]):
    from pcrm.constraints import delta_star
    from pcrm.plots import new_figure

    fig, axes = new_figure(ncols=len(priors))
    for ax, prior in zip(axes, priors):
        margins = np.concatenate([_margin(arrays) for _, arrays in runs])
        top = margins.max()
        for result, arrays in runs:
            model, similarity, info = result["model"], arrays[f"similarity_{prior}"], result["metrics"]["priors"][prior]
            ax.scatter(similarity, _margin(arrays), s=6, alpha=0.4, color=colors[model], label=model)
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


def training_sections(results: list[dict], output: Path) -> list[Section]:
    """Loss, accuracy and margin scale over steps, from each model directory's train_log.jsonl (if any)."""
    from pcrm.plots import integer_ticks, new_figure, save_figure

    logs = {}
    for result in results:
        log = Path(result["model_path"]) / "train_log.jsonl"
        if log.is_file() and result["model"] not in logs:
            logs[result["model"]] = read_train_log(log)
    if not any(logs.values()):
        return []
    fig, axes = new_figure(ncols=3, width=4.4)
    for i, (model, rows) in enumerate(logs.items()):
        color = f"C{i % 10}"
        for ax, key in zip(axes, ("loss", "accuracy", "margin_mean")):
            points = [
                (r["step"], r[key], r.get("margin_std", 0.0)) for r in rows if "step" in r and r.get(key) is not None
            ]
            if not points:
                continue
            step, value, spread = (np.array(v, dtype=float) for v in zip(*points))
            ax.plot(step, value, color=color, alpha=0.25, linewidth=0.8)  # raw, faint
            ax.plot(step, smooth(value), color=color, label=model)
            if key == "margin_mean":
                ax.fill_between(step, smooth(value - spread), smooth(value + spread), color=color, alpha=0.15)
    integer_ticks(*axes)
    for ax, title in zip(axes, ("loss", "accuracy", "margin mean ± std")):
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


def extra_sections(directory: Path) -> list[Section]:
    """Sections stored by `add_section`, in file-name order."""
    sections = []
    for path in sorted((directory / SECTIONS_DIR).glob("*.json")):
        try:
            sections.append(Section(**_read_json(path, "written by add_section")))
        except TypeError:
            raise PcrmError(f"{path}: not a report section (expected keys: title, text, rows, images)") from None
    return sections


def render_html(title: str, sections: list[Section], output: Path) -> str:
    """A self-contained page: inline CSS, images as base64 data URIs."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for section in sections:
        parts.append(f'<section id="{slug(section.title)}"><h2>{html.escape(section.title)}</h2>')
        if section.text:
            parts.append(f"<p>{html.escape(section.text)}</p>")
        if section.rows:
            header = _columns(section.rows)
            parts.append(
                "<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead><tbody>"
            )
            for row in section.rows:
                parts.append("<tr>" + "".join(f"<td>{html.escape(_cell(row.get(h)))}</td>" for h in header) + "</tr>")
            parts.append("</tbody></table>")
        for name in section.images:
            data = base64.b64encode((output / name).read_bytes()).decode("ascii")
            parts.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(name)}"><figcaption>{html.escape(name)}</figcaption></figure>'
            )
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render_markdown(title: str, sections: list[Section]) -> str:
    """The same report in Markdown, its text escaped as the HTML's is (no raw HTML, no links from data); images
    link to the PNG files beside it."""
    lines = [f"# {_md_line(title)}", ""]
    for section in sections:
        lines += [f"## {_md_line(section.title)}", ""]
        if section.text:
            lines += [_md(section.text), ""]
        if section.rows:
            header = _columns(section.rows)
            lines.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(_md_cell(_cell(row.get(h))) for h in header) + " |" for row in section.rows]
            lines.append("")
        lines += [f"![{_md_line(name)}]({name})" for name in section.images] + ([""] if section.images else [])
    return "\n".join(lines)


CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: .85em; margin: .8em 0; display: block; max-width: 100%; overflow-x: auto; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; white-space: nowrap; }
th { white-space: normal; min-width: 4em; } td:last-child { white-space: normal; min-width: 16em; }
th { background: #f3f3f3; } tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0; } img { max-width: 100%; } figcaption { font-size: .8em; color: #777; }
"""


def _section_image(folder: Path, name, title: str) -> bytes:
    """An image of a stored section, read only from inside the evaluation folder (links resolved first)."""
    if not isinstance(name, str) or not (folder / name).resolve().is_relative_to(folder.resolve()):
        raise PcrmError(
            f"{folder / SECTIONS_DIR}: image {name!r} of report section {title!r} is outside {folder} "
            "(a report embeds only files from inside its own folder)"
        )
    return _png_bytes(folder / name, title)


def _localised(section: Section, folder: Path, output: Path) -> Section:
    """`section` with its images (inside `folder`) copied beside the report (as <title>-<i>.png) and named relative to it."""
    data = [_section_image(folder, image, section.title) for image in section.images]
    if output.resolve() == folder.resolve() and not any(name.startswith(f"{SECTIONS_DIR}/") for name in section.images):
        return section  # a command's own figures, already beside the report
    names = [f"{slug(section.title)}-{i}.png" for i in range(len(data))]
    for name, image in zip(names, data):
        if not (output / name).is_file() or (output / name).read_bytes() != image:
            atomic_write_bytes(output / name, image)
    return Section(section.title, section.text, section.rows, names)


# What the report reads of metrics.json: per result and per result's metrics (a file missing one: one line).
RESULT_KEYS = ("model", "model_path", "data", "kind", "pairs", "arrays", "metrics")
METRIC_KEYS = ("accuracy", "rank_correlation", "scores", "margins", "priors", "length_bias", "calibration")


def _check_summary(summary: dict, path: Path) -> None:
    config, results = summary.get("config"), summary["results"]
    problems = [] if isinstance(config, dict) and {"priors", "bootstrap", "seed"} <= set(config) else ["config"]
    for i, result in enumerate(results if isinstance(results, list) else [None]):
        if not isinstance(result, dict):
            problems.append(f"results[{i}]")
            continue
        problems += [f"results[{i}].{key}" for key in RESULT_KEYS if key not in result]
        metrics = result.get("metrics")
        problems += [
            f"results[{i}].metrics.{key}" for key in METRIC_KEYS if isinstance(metrics, dict) and key not in metrics
        ]
    if problems:
        raise PcrmError(
            f"{path}: not a complete metrics.json of pcrm evaluate (missing {', '.join(problems[:3])}); "
            "rerun pcrm evaluate"
        )


def _load_arrays(path: Path) -> dict:
    if not path.is_file():
        raise PcrmError(f"{path}: per-pair arrays not found (rerun pcrm evaluate)")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            loaded = {key: arrays[key] for key in arrays.files}
    except Exception as err:  # a truncated or foreign file: zipfile, numpy or OS errors
        raise PcrmError(f"{path}: unreadable score file ({type(err).__name__}; rerun pcrm evaluate)") from None
    missing = [key for key in ("score", "chosen", "rejected", "length") if key not in loaded]
    if missing:
        raise PcrmError(f"{path}: not a score file of pcrm evaluate (no {', '.join(missing)}; rerun pcrm evaluate)")
    return loaded


def _read_json(path: Path, hint: str):
    if not path.is_file():
        raise PcrmError(f"{path}: no such file ({hint})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PcrmError(f"{path}: invalid JSON ({err.msg})") from None


def _margin(arrays: dict) -> np.ndarray:
    return arrays["score"][arrays["chosen"]] - arrays["score"][arrays["rejected"]]


def _betas(prior: dict) -> str:
    return f"{prior['beta1']:g}, {prior['beta2']:g}, {prior['beta3']:g} ({prior['beta_source']})"


def _columns(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _md(text: str) -> str:
    """Text for Markdown, escaped as for HTML (no raw HTML), and no link or image syntax from the data."""
    return html.escape(str(text), quote=False).replace("[", "\\[").replace("]", "\\]").replace("`", "\\`")


def _md_line(text: str) -> str:
    return " ".join(_md(text).splitlines())


def _md_cell(text: str) -> str:
    return _md_line(text).replace("|", "\\|")


def markdown_table(rows: list[dict]) -> str:
    """A Markdown table of string cells: one dict per row, keys are the columns."""
    header = list(rows[0])
    lines = ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(_md_cell(row[h]) for h in header) + " |" for row in rows])
