"""`pcrm report`: a self-contained HTML report and a Markdown twin of a pcrm output (`pcrm.report`): `pcrm evaluate`
results (with the sections other commands added), a reproduce folder, or the sections align, evaluate-policy and
overoptimization store in their own outputs.

Into the evaluation folder itself (the default), the report is added under that folder's lock; into another
`--output`, that folder is a pcrm output of its own (`pcrm.outputs.OutputFolder`: lock, marker, swap on success).
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path

from pcrm.report import report_source, write_report


@dataclass
class Config:
    """Write report.html (self-contained) and report.md, with PNG figures, from the output of pcrm evaluate, reproduce,
    align, evaluate-policy or overoptimization."""

    input: str = field(
        default="runs/evaluate",
        metadata={
            "help": "output directory of pcrm evaluate (or its metrics.json), "
            "reproduce, align, evaluate-policy or overoptimization"
        },
    )
    output: str | None = field(
        default=None, metadata={"help": "directory for the report and its PNGs (default: the input directory)"}
    )
    title: str | None = field(
        default=None, metadata={"help": "report title (default: after the command that wrote --input)"}
    )
    overwrite: bool = field(
        default=False, metadata={"help": "replace an existing --output of pcrm report (not the input directory)"}
    )


def run(config: Config) -> dict:
    from pcrm.io import versions
    from pcrm.outputs import OutputFolder, holding

    folder = report_source(config.input)[0]  # checked before anything is written
    if config.output is None or Path(config.output).resolve() == folder.resolve():
        with holding(folder):
            return write_report(config.input, None, config.title)
    output = OutputFolder(config.output, "report", overwrite=config.overwrite)
    output.plan()
    with output:
        result = write_report(config.input, output.work, config.title)
        output.commit({"kind": "report", "config": asdict(config), "versions": versions()})
    return result
