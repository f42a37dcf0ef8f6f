"""Matplotlib helpers shared by the commands and the report (headless, atomic PNG writes)."""

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from matplotlib.ticker import MaxNLocator

from pcrm.io import atomic_write_bytes  # noqa: E402

# Tick labels of tiny values (a random model's margins, ~1e-4) in scientific notation, so that they do not run together.
matplotlib.rcParams["axes.formatter.limits"] = (-3, 4)


def save_figure(fig, path: str | Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def new_figure(ncols: int = 1, width: float = 5.0, height: float = 3.6):
    """A row of `ncols` axes; constrained layout, so that no axis label overlaps a neighbour's ticks."""
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False, layout="constrained")
    return fig, axes[0]


def integer_ticks(*axes, axis: str = "x") -> None:
    """Ticks at whole numbers only on `axis` ("x" or "y") of each of `axes`: steps, counts of pairs."""
    for ax in axes:
        getattr(ax, f"{axis}axis").set_major_locator(MaxNLocator(integer=True))
