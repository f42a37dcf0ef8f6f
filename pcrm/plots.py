"""Matplotlib helpers shared by the commands and the report: figures drawn without pyplot (no backend switch, no
global state touched, so a notebook's own plots stay as they are) and written as atomic PNGs."""

import io
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pcrm.io import atomic_write_bytes

# Tick labels of tiny values (a random model's margins, ~1e-4) in scientific notation, so that they do not run
# together; applied to pcrm's own axes only (read when they are made).
STYLE = {"axes.formatter.limits": (-3, 4)}


def save_figure(fig, path: str | Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")  # Agg, chosen by matplotlib for a bare Figure
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def new_figure(ncols: int = 1, width: float = 5.0, height: float = 3.6):
    """A row of `ncols` axes; constrained layout, so that no axis label overlaps a neighbour's ticks."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width * ncols, height), layout="constrained")
        axes = fig.subplots(1, ncols, squeeze=False)
    return fig, axes[0]


def integer_ticks(*axes, axis: str = "x") -> None:
    """Ticks at whole numbers only on `axis` ("x" or "y") of each of `axes`: steps, counts of pairs."""
    for ax in axes:
        getattr(ax, f"{axis}axis").set_major_locator(MaxNLocator(integer=True))
