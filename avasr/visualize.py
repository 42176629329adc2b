"""Pictures people would rather look at than read: lip crops over time."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and Ray workers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from avasr.config import Config  # noqa: E402
from avasr.data.lips import load_lips  # noqa: E402
from avasr.data.manifest import read_manifest  # noqa: E402
from avasr.plots import save_figure  # noqa: E402

CELL_INCHES = 0.9


def show_crops(
    manifest: str | Path, out: str | Path, config: Config = Config(), utterances: int = 4, frames: int = 10
) -> Path:
    """A grid image: one row per utterance, `frames` crops evenly spread over its duration, with the detection
    report in the row title. Returns the image path."""
    entries = read_manifest(manifest)[:utterances]
    fig, axes = plt.subplots(
        len(entries), frames, figsize=(frames * CELL_INCHES, len(entries) * (CELL_INCHES + 0.4)), squeeze=False
    )
    for row, entry in zip(axes, entries):
        track = load_lips(entry.video_path, config)
        picks = np.linspace(0, len(track.crops) - 1, frames).round().astype(int)
        for ax, t in zip(row, picks):
            ax.imshow(track.crops[t], cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"{t / config.fps:.2f}s", fontsize=6)
        r = track.report
        title = (
            f'{entry.utterance_id}: "{entry.transcript}" - {r.frames} frames, {r.detected} with a detected '
            f"face, {r.interpolated} interpolated"
        )
        row[0].text(0, 1.08, title, transform=row[0].transAxes, fontsize=7)  # outside the layout: never squeezes
    fig.subplots_adjust(left=0.01, right=0.99, top=0.92, bottom=0.06, wspace=0.05, hspace=0.45)
    return save_figure(fig, out)
