"""`write_report`: report.html and report.md of what `report_source` accepts, with their PNG files beside them."""

from pathlib import Path

from pcrm.io import atomic_write_text
from pcrm.report.answer import answer_section
from pcrm.report.figures import figure_sections
from pcrm.report.metric_table import metric_section
from pcrm.report.render import render_html, render_markdown
from pcrm.report.sections import Section, extra_sections, localised
from pcrm.report.source import default_title, load_arrays, report_source
from pcrm.report.training import training_sections


def write_report(input: str | Path, output: str | Path | None = None, title: str | None = None) -> dict:
    """report.html and report.md (with PNGs beside them) of what `report_source` accepts."""
    folder, summary = report_source(input)
    output = Path(output) if output else folder
    title = title or default_title(folder)
    extra = [localised(s, folder, output) for s in extra_sections(folder)]  # checked first
    sections = extra if summary is None else evaluation_sections(summary, folder, output) + extra
    atomic_write_text(output / "report.html", render_html(title, sections, output))
    atomic_write_text(output / "report.md", render_markdown(title, sections))
    images = [str(output / name) for s in sections for name in s.images]
    print(f"wrote {output / 'report.html'}, {output / 'report.md'} and {len(images)} PNG files")
    return {"html": str(output / "report.html"), "markdown": str(output / "report.md"), "images": images}


def evaluation_sections(summary: dict, folder: Path, output: Path) -> list[Section]:
    """The built-in sections of `pcrm evaluate` results: the answer, the metric table, figures, training curves."""
    runs = [(result, load_arrays(folder / result["arrays"])) for result in summary["results"]]
    config = summary["config"]
    answer = answer_section(summary, {(r["model"], r["data"]): a for r, a in runs}, config["bootstrap"], config["seed"])
    figures = figure_sections(runs, config["priors"], output)
    return [answer, metric_section(summary), *figures, *training_sections(summary["results"], output)]
