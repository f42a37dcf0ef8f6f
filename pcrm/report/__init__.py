"""The report of `pcrm report`: a self-contained HTML report and a Markdown twin of a pcrm output.

Of `pcrm evaluate` results (a reproduce folder: its `evaluation/`), or of any output that stored report sections
(`store_sections`/`add_section`: align, evaluate-policy, overoptimization).

Sections: the answer (which model is better, claimed only on evidence), the metric table with 95% CIs, margin
histograms, margin vs similarity with the δ* curve, score vs length, reliability diagram, training curves (from
`train_log.jsonl` in the model directories) and any section other commands added with `add_section`. Figures are
saved as PNG files beside the report and embedded in the HTML as base64 data URIs.

Modules: `write` (write_report), `source` (what --input names, read and checked), `sections` (Section, stored
sections), `answer`, `metric_table`, `figures`, `training` (the built-in sections), `render` (HTML and Markdown).
"""

from pcrm.report.answer import HEADLINE_METRICS, NO_BETTER, answer_section, paired_credit_difference
from pcrm.report.figures import figure_sections
from pcrm.report.metric_table import metric_section
from pcrm.report.render import markdown_table, render_html, render_markdown
from pcrm.report.sections import PNG, SECTIONS_DIR, Section, add_section, extra_sections, store_sections
from pcrm.report.source import TITLES, default_title, read_summary, report_source
from pcrm.report.training import read_train_log, smooth, training_sections
from pcrm.report.write import write_report

__all__ = [
    "HEADLINE_METRICS",
    "NO_BETTER",
    "PNG",
    "SECTIONS_DIR",
    "TITLES",
    "Section",
    "add_section",
    "answer_section",
    "default_title",
    "extra_sections",
    "figure_sections",
    "markdown_table",
    "metric_section",
    "paired_credit_difference",
    "read_summary",
    "read_train_log",
    "render_html",
    "render_markdown",
    "report_source",
    "smooth",
    "store_sections",
    "training_sections",
    "write_report",
]
