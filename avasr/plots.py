"""Saving a matplotlib figure: one resolution for every plot avasr writes, one error for a path it cannot write."""

from __future__ import annotations

from pathlib import Path

from avasr.errors import OutputError

PLOT_DPI = 120


def save_figure(figure, path: str | Path) -> Path:
    """Write a matplotlib figure (its format from the file extension, PNG for avasr's own) and close it, also when
    it cannot be written; OutputError naming the file then."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=PLOT_DPI)
    except (OSError, ValueError) as e:  # ValueError: an extension matplotlib has no format for
        raise OutputError(f"{path}: cannot save the plot: {e}") from None
    finally:
        plt.close(figure)
    return path
