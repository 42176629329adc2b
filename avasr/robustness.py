"""What the lips add: one model's WER and CER on audio alone, video alone and both, clean and at each SNR of a noise.

    report, files = report_checkpoint("outputs/run/best_model.pth", ReportOptions(snrs="clean,10,5,0,-5,-10"))
    print(report.markdown())

Every input is the same model fed one stream or both (the other blanked, as modality dropout trains it). At a
given SNR every input hears the same noise draws (avasr.data.noisy_speech: fixed by seed and utterance), so reruns
match exactly and the inputs are compared on identical audio. The lips hear no noise: video alone is decoded once
and its row repeats at every SNR, which is the line the audio-visual WER must stay under.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from avasr.config import AUDIO_ONLY, AUDIO_VISUAL, MODALITIES, VIDEO_ONLY
from avasr.data.dataset import AVDataset
from avasr.errors import AvasrError, OutputError
from avasr.evaluation import DEFAULT_NOISE, DEFAULT_NOISE_DRAWS, Decoding, load_decoding, noisy_table
from avasr.plots import save_figure

INPUTS = MODALITIES  # audio, video, audio+video: what each row feeds the model
INPUT_KEYS = {AUDIO_ONLY: "a", VIDEO_ONLY: "v", AUDIO_VISUAL: "av"}  # in MLflow metric names, which refuse "+"
CLEAN = None  # in `snrs`: no noise
DEFAULT_SNRS = (CLEAN, 10.0, 5.0, 0.0, -5.0, -10.0)
REPORT_FILES = ("robustness.md", "robustness.csv", "robustness.png")
FUSIONS_PLOT, FUSIONS_TABLE = "robustness_fusions.png", "robustness_fusions.md"  # on a sweep's parent run
ARTIFACT_FOLDER = "robustness"  # in each run's artifacts
CSV_FIELDS = ("input", "snr_db", "wer", "cer", "wer_std", "loss")
DEFAULT_TEST_MANIFEST = "test_manifest.txt"  # beside the training manifest (the built-in corpus's layout)


class RobustnessError(AvasrError, ValueError):
    """A report that cannot be made: no test set, a run without a checkpoint, bad SNRs."""


@dataclass(frozen=True)
class ReportOptions:
    snrs: str = "clean,10,5,0,-5,-10"  # comma-separated SNRs in dB; "clean" for no noise
    noise: str = DEFAULT_NOISE  # white | pink | babble (babble: the other speakers of the test set)
    draws: int = DEFAULT_NOISE_DRAWS  # noise draws averaged per SNR; draw k uses seed + k at every SNR
    seed: int = 0  # the first draw's seed: the same seed gives the same noise to every model and input
    # the test set (unseen speakers); default: the sweep's, else test_manifest.txt beside the training manifest
    manifest: str = ""
    decoder: str = ""  # greedy | beam; empty: the model's own
    lexicon: str = ""  # word list restricting beam search (implies beam)


@dataclass(frozen=True)
class Score:
    input: str  # one of INPUTS
    snr_db: float | None  # None: clean
    wer: float
    cer: float
    wer_std: float  # over the noise draws; 0 when clean or video alone
    loss: float  # mean CTC loss (training's objective): it moves with the input even where the WER does not

    @property
    def condition(self) -> str:
        return "clean" if self.snr_db is None else f"{self.snr_db:g} dB"


@dataclass(frozen=True)
class RobustnessReport:
    noise: str
    draws: int
    seed: int
    loaded: str  # the test set's load report: how many utterances, how many ran on audio alone (no face)
    scores: tuple[Score, ...]

    def score(self, input: str, snr_db: float | None) -> Score:
        return next(s for s in self.scores if (s.input, s.snr_db) == (input, snr_db))

    def wer(self, input: str, snr_db: float | None) -> float:
        return self.score(input, snr_db).wer

    def conditions(self) -> list[float | None]:
        return list(dict.fromkeys(s.snr_db for s in self.scores))

    def markdown(self) -> str:
        """One row per condition, WER (CER) per input, then the AV / audio WER ratio and whether AV is at least as
        good as the better single stream."""
        head = [
            f"{self.noise} noise, {self.draws} draw(s) per SNR from seed {self.seed}; {self.loaded}",
            "",
            "| condition | " + " | ".join(f"{i} WER (CER)" for i in INPUTS) + " | AV / audio | AV <= best single |",
            "|---" * (len(INPUTS) + 3) + "|",
        ]
        rows = []
        for snr in self.conditions():
            cells = [self.score(i, snr) for i in INPUTS]  # a, v, av
            a, v, av = (cell.wer for cell in cells)
            ratio = f"{av / a:.2f}" if a > 0 else "-"
            rows.append(
                f"| {cells[0].condition} | "
                + " | ".join(f"{c.wer:.3f} ({c.cer:.3f})" for c in cells)
                + f" | {ratio} | {'yes' if av <= min(a, v) else 'no'} |"
            )
        return "\n".join(head + rows) + "\n"

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_FIELDS)
        for s in self.scores:
            writer.writerow(
                [
                    s.input,
                    "clean" if s.snr_db is None else f"{s.snr_db:g}",
                    f"{s.wer:.6f}",
                    f"{s.cer:.6f}",
                    f"{s.wer_std:.6f}",
                    f"{s.loss:.6f}",
                ]
            )
        return out.getvalue()

    def metrics(self) -> dict[str, float]:
        """For MLflow: robust_wer_<a|v|av>_<clean|snr-5|...>."""
        return {
            f"robust_wer_{INPUT_KEYS[s.input]}_{'clean' if s.snr_db is None else f'snr{s.snr_db:g}'}": s.wer
            for s in self.scores
        }

    def write(self, folder: str | Path, title: str) -> list[Path]:
        """robustness.md, .csv and .png into `folder`."""
        folder = Path(folder)
        paths = [folder / name for name in REPORT_FILES]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            paths[0].write_text(f"# {title}\n\n" + self.markdown())
            paths[1].write_text(self.csv())
        except OSError as e:
            raise OutputError(f"{folder}: cannot write the robustness report: {e}") from None
        plot_wer_against_snr(
            {i: [(s.snr_db, s.wer) for s in self.scores if s.input == i] for i in INPUTS}, paths[2], title, self.noise
        )
        return paths


def robustness_report(
    decoding: Decoding,
    dataset: AVDataset,
    snrs: Sequence[float | None] = DEFAULT_SNRS,
    noise: str = DEFAULT_NOISE,
    draws: int = DEFAULT_NOISE_DRAWS,
    seed: int = 0,
) -> RobustnessReport:
    """The model of `decoding` on `dataset` (loaded with keep_speech, both streams) for every input and SNR."""
    noisy_snrs = [snr for snr in snrs if snr is not CLEAN]
    scores = []
    for input in INPUTS:
        fed = decoding.with_modalities(input)
        clean = fed.run(dataset) if CLEAN in snrs or input == VIDEO_ONLY else None
        noisy = (
            noisy_table(fed, dataset, noisy_snrs, noise, draws, seed) if noisy_snrs and input != VIDEO_ONLY else None
        )
        for snr in snrs:
            if snr is CLEAN or input == VIDEO_ONLY:  # the lips hear no noise
                scores.append(Score(input, snr, clean["wer"], clean["cer"], 0.0, clean["loss"]))
            else:
                row = next(s for s in noisy.scores if s.snr_db == snr)
                scores.append(Score(input, snr, row.wer, row.cer, row.wer_std, row.loss))
    return RobustnessReport(noise, draws, seed, dataset.report.summary(), tuple(scores))


def parse_snrs(text: str) -> tuple[float | None, ...]:
    """ "clean,10,5,0,-5" -> (None, 10.0, 5.0, 0.0, -5.0); ValueError naming a bad item."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError("no SNRs given")
    snrs = []
    for item in items:
        if item.lower() == "clean":
            snrs.append(CLEAN)
            continue
        value = float(item)  # ValueError names the item
        if not math.isfinite(value):
            raise ValueError(f"SNR {item!r} is not finite")
        snrs.append(value)
    return tuple(snrs)


def plot_wer_against_snr(
    lines: dict[str, list[tuple[float | None, float]]], path: str | Path, title: str, noise: str
) -> Path:
    """One line per label (input, or fusion) of (SNR, WER) points; clean sits at the right of the highest SNR."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and Ray workers
    import matplotlib.pyplot as plt

    numeric = sorted({snr for points in lines.values() for snr, _ in points if snr is not None})
    clean_x = (numeric[-1] + 5.0) if numeric else 0.0
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, points in lines.items():
        xy = sorted((clean_x if snr is None else snr, wer) for snr, wer in points)
        ax.plot([x for x, _ in xy], [y for _, y in xy], marker="o", label=label)
    ticks = numeric + ([clean_x] if any(snr is None for pts in lines.values() for snr, _ in pts) else [])
    ax.set_xticks(ticks, [f"{t:g}" for t in numeric] + (["clean"] if len(ticks) > len(numeric) else []))
    ax.set_xlabel(f"SNR (dB), {noise} noise")
    ax.set_ylabel("WER")
    ax.set_ylim(0, max(1.0, max(w for pts in lines.values() for _, w in pts) * 1.05))
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


# --- from files and runs ---------------------------------------------------------------------------------------------
def report_checkpoint(
    checkpoint: str | Path, options: ReportOptions, out: str | Path | None = None, test_manifest: str = ""
) -> tuple[RobustnessReport, list[Path]]:
    """The report of a .pth checkpoint, written to `out` (default: robustness/ beside the checkpoint)."""
    checkpoint = Path(checkpoint)
    try:
        snrs = parse_snrs(options.snrs)
    except ValueError as e:
        raise RobustnessError(f"--snrs {options.snrs!r}: {e}") from None
    decoding = load_decoding(checkpoint, options.decoder or None, lexicon=options.lexicon or None)
    manifest = options.manifest or test_manifest or default_test_manifest(decoding.config.train_manifest)
    config = decoding.config.replace(modalities=AUDIO_VISUAL)  # every input reads the same utterances
    dataset = AVDataset.from_manifest(manifest, config, keep_speech=True)
    report = robustness_report(decoding, dataset, snrs, options.noise, options.draws, options.seed)
    title = f"{checkpoint} ({decoding.config.fusion} fusion) on {Path(manifest).name}"
    return report, report.write(Path(out) if out else checkpoint.parent / ARTIFACT_FOLDER, title)


def default_test_manifest(train_manifest: str) -> str:
    candidate = Path(train_manifest).with_name(DEFAULT_TEST_MANIFEST) if train_manifest else None
    if candidate is None or not candidate.is_file():
        raise RobustnessError(
            f"no test set: pass --manifest (the model's training manifest {train_manifest!r} has "
            f"no {DEFAULT_TEST_MANIFEST} beside it)"
        )
    return str(candidate)
