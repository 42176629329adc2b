"""Robustness reports of tracked sweeps (avasr.robustness does the measuring):

report_run(tracking_uri, run_id, options)           # a sweep trial's: files and metrics logged to its run
report_sweep(tracking_uri, experiment, sweep, options)  # each fusion's best trial, and one figure on the parent
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from mlflow.tracking import MlflowClient

from avasr.checkpoint import BEST_CHECKPOINT
from avasr.config import AUDIO_ONLY, AUDIO_VISUAL
from avasr.errors import OutputError
from avasr.robustness import (
    ARTIFACT_FOLDER,
    FUSIONS_PLOT,
    FUSIONS_TABLE,
    ReportOptions,
    RobustnessError,
    RobustnessReport,
    plot_wer_against_snr,
    report_checkpoint,
)
from avasr.sweep import tracking
from avasr.sweep.champion import CHECKPOINT_TAG, TEST_MANIFEST_TAG, TrialSummary
from avasr.sweep.shipping import sweep_trials


def report_run(
    tracking_uri: str, run_id: str, options: ReportOptions, out: str | Path | None = None, test_manifest: str = ""
) -> RobustnessReport:
    """The report of a tracked trial's best checkpoint; its files and robust_wer_* metrics logged to the run."""
    client = MlflowClient(tracking_uri)
    try:
        run = client.get_run(run_id)
    except Exception as e:  # MlflowException for an unknown id; a store error otherwise
        raise RobustnessError(f"run {run_id!r}: not found in {tracking_uri} ({e})") from None
    folder = run.data.tags.get(CHECKPOINT_TAG)
    if not folder or not (Path(folder) / BEST_CHECKPOINT).is_file():
        raise RobustnessError(
            f"run {run_id}: no checkpoint to evaluate (tag {CHECKPOINT_TAG} is "
            f"{folder or 'missing'}): is it a finished sweep trial?"
        )
    parent = run.data.tags.get(tracking.PARENT_TAG)
    sweep_test = client.get_run(parent).data.tags.get(TEST_MANIFEST_TAG, "") if parent else ""
    report, files = report_checkpoint(Path(folder) / BEST_CHECKPOINT, options, out, test_manifest or sweep_test)
    for path in files:
        client.log_artifact(run_id, str(path), ARTIFACT_FOLDER)
    tracking.log_metrics(client, run_id, report.metrics())
    return report


def report_sweep(
    tracking_uri: str, experiment: str, sweep: str | None, options: ReportOptions, out: str | Path
) -> dict[str, RobustnessReport]:
    """Each fusion's best trial (lowest val WER) of a tracked sweep reported as `report_run` does; then, on the
    parent run, one figure of audio-visual WER against SNR with a line per fusion, and its table."""
    found = sweep_trials(tracking_uri, experiment, sweep)
    parent, trials = found.parent, found.trials
    best = best_per_fusion(trials)
    if not best:
        raise RobustnessError(f"sweep {parent.info.run_name!r}: no finished trial to report on")
    out = Path(out)
    reports = {t.fusion: report_run(tracking_uri, t.run_id, options, out / t.fusion) for t in best}
    lines = {fusion: [(s.snr_db, s.wer) for s in r.scores if s.input == AUDIO_VISUAL] for fusion, r in reports.items()}
    title = f"sweep {parent.info.run_name}: audio-visual WER of each fusion's best trial"
    plot = plot_wer_against_snr(lines, out / FUSIONS_PLOT, title, options.noise)
    table = out / FUSIONS_TABLE
    try:
        table.write_text(f"# {title}\n\n" + fusions_markdown(reports))
    except OSError as e:
        raise OutputError(f"{table}: cannot write: {e}") from None
    client = MlflowClient(tracking_uri)
    for path in (plot, table):
        client.log_artifact(parent.info.run_id, str(path))
    return reports


def best_per_fusion(trials: Sequence[TrialSummary]) -> list[TrialSummary]:
    """The lowest-val-WER trial of each fusion (trials without a WER never), in the order fusions first appear."""
    best: dict[str, TrialSummary] = {}
    for t in trials:
        if math.isfinite(t.val_wer) and (t.fusion not in best or t.val_wer < best[t.fusion].val_wer):
            best[t.fusion] = t
    return list(best.values())


def fusions_markdown(reports: dict[str, RobustnessReport]) -> str:
    """One row per fusion, its audio-visual WER (and audio-only WER) at each condition."""
    conditions = next(iter(reports.values())).conditions()
    names = ["clean" if snr is None else f"{snr:g} dB" for snr in conditions]
    rows = ["| fusion | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for fusion, report in reports.items():
        cells = [f"{report.wer(AUDIO_VISUAL, snr):.3f} ({report.wer(AUDIO_ONLY, snr):.3f})" for snr in conditions]
        rows.append(f"| {fusion} | " + " | ".join(cells) + " |")
    return "AV WER (audio-only WER) per condition\n\n" + "\n".join(rows) + "\n"
