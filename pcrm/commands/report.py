"""`pcrm report`: a self-contained HTML report and a Markdown twin of `pcrm evaluate` results (`pcrm.report`)."""

from dataclasses import dataclass, field

from pcrm.report import write_report


@dataclass
class Config:
    """Write report.html (self-contained) and report.md, with PNG figures, from the output of `pcrm evaluate`."""

    input: str = field(default="runs/evaluate", metadata={"help": "directory written by pcrm evaluate, or its metrics.json"})
    output: str | None = field(default=None, metadata={"help": "directory for the report and its PNGs (default: the input directory)"})
    title: str = field(default="Reward model evaluation", metadata={"help": "report title"})


def run(config: Config) -> dict:
    return write_report(config.input, config.output, config.title)
