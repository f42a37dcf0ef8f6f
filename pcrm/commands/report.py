"""`pcrm report`: a self-contained HTML report and a Markdown twin of `pcrm evaluate` results (`pcrm.report`).

Into the evaluation folder itself (the default), the report is added under that folder's lock; into another
`--output`, that folder is a pcrm output of its own (`pcrm.outputs.OutputFolder`: lock, marker, swap on success).
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path

from pcrm.report import read_summary, write_report


@dataclass
class Config:
    """Write report.html (self-contained) and report.md, with PNG figures, from the output of `pcrm evaluate`."""

    input: str = field(default="runs/evaluate", metadata={"help": "directory written by pcrm evaluate, or its metrics.json"})
    output: str | None = field(default=None, metadata={"help": "directory for the report and its PNGs (default: the input directory)"})
    title: str = field(default="Reward model evaluation", metadata={"help": "report title"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing --output of pcrm report (not the input directory)"})


def run(config: Config) -> dict:
    from pcrm.io import versions
    from pcrm.outputs import OutputFolder, holding

    folder = read_summary(config.input)[0].parent  # checked before anything is written
    if config.output is None or Path(config.output).resolve() == folder.resolve():
        with holding(folder):
            return write_report(config.input, None, config.title)
    output = OutputFolder(config.output, "report", overwrite=config.overwrite)
    output.plan()
    with output:
        result = write_report(config.input, output.work, config.title)
        output.commit({"kind": "report", "config": asdict(config), "versions": versions()})
    return result
