"""A sweep's answer for people: its trials ranked, with the champion and the Pareto front (avasr.sweep.champion) marked,
as text, as a table and as a plot of val WER against latency."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from avasr.plots import save_figure
from avasr.sweep.champion import TrialSummary, comparable, pareto_front

FRONT_MARK = "P"  # marks a Pareto-front trial in the text leaderboard
CHAMPION_MARK = "*"
MARKER_AREA_PER_MILLION_PARAMS = 600.0  # marker area (points^2) of a 1M-parameter model in the plot
MIN_MARKER_AREA = 30.0


def ranked(trials: Sequence[TrialSummary]) -> list[TrialSummary]:
    """Best val WER first (then CER); trials without a WER last."""
    return sorted(trials, key=lambda t: (math.isnan(t.val_wer), t.val_wer, t.val_cer))


def leaderboard(trials: Sequence[TrialSummary], champion: TrialSummary | None = None) -> str:
    """A text table of the trials, best val WER first; `*` marks the champion, `P` the Pareto front."""
    front = {t.run_id for t in pareto_front(trials)}
    header = (
        f"{'':2} {'fusion':<10} {'dropout':>7} {'lr':>9} {'WER':>6} {'CER':>6} {'0dB WER':>7} {'test WER':>8} "
        f"{'params':>9} {'p50 ms':>7} status"
    )
    lines = [header, "-" * len(header)]
    for t in ranked(trials):
        mark = (CHAMPION_MARK if champion is not None and t.run_id == champion.run_id else "") + (
            FRONT_MARK if t.run_id in front else ""
        )
        lines.append(
            f"{mark:2} {t.fusion:<10} {t.dropout:>7.3g} {t.lr:>9.2e} {t.val_wer:>6.3f} {t.val_cer:>6.3f} "
            f"{t.val_wer_snr0_babble:>7.3f} {t.test_wer:>8.3f} {t.param_count:>9,} {t.latency_p50_ms:>7.1f} "
            f"{t.status}"
        )
    lines.append(
        f"{CHAMPION_MARK}: champion (lowest WER, or 0dB WER with --select-on, within the budgets)   "
        f"{FRONT_MARK}: Pareto front (no trial has lower-or-equal val WER, p50 and params with one strictly "
        "lower)   0dB WER: val WER in babble at 0 dB"
    )
    return "\n".join(lines)


def leaderboard_table(trials: Sequence[TrialSummary], champion: TrialSummary | None = None) -> dict[str, list]:
    """The leaderboard as columns (MLflow's log_table: a sortable table artifact in the UI)."""
    front = {t.run_id for t in pareto_front(trials)}
    rows = ranked(trials)
    return {
        "run_id": [t.run_id for t in rows],
        "fusion": [t.fusion for t in rows],
        "dropout": [t.dropout for t in rows],
        "lr": [t.lr for t in rows],
        "val_wer": [t.val_wer for t in rows],
        "val_cer": [t.val_cer for t in rows],
        "val_wer_snr0_babble": [t.val_wer_snr0_babble for t in rows],
        "test_wer": [t.test_wer for t in rows],
        "param_count": [t.param_count for t in rows],
        "cpu_latency_ms_p50": [t.latency_p50_ms for t in rows],
        "status": [t.status for t in rows],
        "pareto_front": [t.run_id in front for t in rows],
        "champion": [champion is not None and t.run_id == champion.run_id for t in rows],
    }


def latency_staircase(trials: Sequence[TrialSummary]) -> list[TrialSummary]:
    """The trials that have the lowest val WER of all trials at most as slow, fastest first: the front's edge in
    the WER-latency plane (a front member kept for its size alone is not on it)."""
    steps: list[TrialSummary] = []
    for t in sorted(trials, key=lambda t: (t.latency_p50_ms, t.val_wer)):
        if not steps or t.val_wer < steps[-1].val_wer:
            steps.append(t)
    return steps


def plot_front(
    trials: Sequence[TrialSummary], path: str | Path, title: str, champion: TrialSummary | None = None
) -> Path:
    """Val WER against p50 latency: one colour per fusion, marker area by parameters, the front's members crossed
    and its edge in this plane drawn as a staircase, the champion ringed. Written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [t for t in trials if comparable(t)]
    figure, axes = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for index, fusion in enumerate(sorted({t.fusion for t in shown})):
        group = [t for t in shown if t.fusion == fusion]
        axes.scatter(
            [t.latency_p50_ms for t in group],
            [t.val_wer for t in group],
            label=fusion,
            alpha=0.75,
            s=[max(MIN_MARKER_AREA, MARKER_AREA_PER_MILLION_PARAMS * t.param_count / 1e6) for t in group],
            color=f"C{index}",
            edgecolors="black",
            linewidths=0.5,
        )
    front = pareto_front(shown)
    axes.scatter(
        [t.latency_p50_ms for t in front],
        [t.val_wer for t in front],
        s=12,
        color="black",
        marker="x",
        label="Pareto front (val WER, p50, params)",
    )
    staircase = latency_staircase(front)
    axes.step(
        [t.latency_p50_ms for t in staircase],
        [t.val_wer for t in staircase],
        where="post",
        color="grey",
        linestyle="--",
        linewidth=1,
        label="best val WER within a latency",
    )
    if champion is not None and comparable(champion):
        axes.scatter(
            [champion.latency_p50_ms],
            [champion.val_wer],
            s=250,
            facecolors="none",
            edgecolors="red",
            linewidths=1.5,
            label="champion",
        )
    axes.set(xlabel="CPU latency p50 (ms, ONNX Runtime, batch 1, 5 s input)", ylabel="val WER", title=title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, markerscale=0.5)
    return save_figure(figure, path)
