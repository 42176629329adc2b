"""Evaluate a checkpoint on a manifest: corpus WER/CER, clean or in noise at fixed SNRs (avasr.data.noisy_speech), on
both streams or one (`modalities`), and, optionally, per-utterance predictions."""

from __future__ import annotations

import csv
import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from avasr.checkpoint import load_model
from avasr.config import Config
from avasr.data.dataset import AVDataset
from avasr.data.loader import make_loader
from avasr.data.noisy_speech import NoiseSpec, noisy_dataset
from avasr.decode import Lexicon, decode
from avasr.device import autocast, pick_device, to_device
from avasr.errors import OutputError
from avasr.metrics import character_error_rate, utterance_errors, word_error_rate
from avasr.objective import ctc_objective
from avasr.text import compute_cer, compute_wer

PREDICTIONS_FILE = "predictions.tsv"
DEFAULT_NOISE = "babble"
DEFAULT_NOISE_DRAWS = 3  # WER in noise depends on the draw: fix the seed and average several


@dataclass(frozen=True)
class NoisyScore:
    """Corpus WER/CER at one SNR, averaged over the noise draws."""

    snr_db: float
    wer: float
    cer: float
    wer_std: float  # population standard deviation of the draws' WERs; 0 for one draw
    loss: float = float("nan")  # mean loss (training's objective) over utterances and draws


@dataclass(frozen=True)
class NoisyTable:
    """Scores of one model in one kind of noise, one per SNR; draw k used seed `seed + k` at every SNR."""

    noise: str
    seed: int
    draws: int
    loaded: str  # the dataset's load report (utterances used, skips): the same for every draw
    scores: tuple[NoisyScore, ...]

    def format(self) -> str:
        """A header line, then one line per SNR: `SNR   +0.0 dB  WER 0.4321  CER 0.2100  (std 0.0123)`."""
        header = f"{self.noise} noise, {self.draws} draw(s) per SNR from seed {self.seed}; {self.loaded}"
        rows = [
            f"SNR {s.snr_db:+6.1f} dB  WER {s.wer:.4f}  CER {s.cer:.4f}  (std {s.wer_std:.4f})" for s in self.scores
        ]
        return "\n".join([header, *rows])


@dataclass(frozen=True)
class Decoding:
    """A checkpoint's model ready to decode, with the config and lexicon it decodes with."""

    model: torch.nn.Module
    config: Config
    lexicon: Lexicon | None

    def run(self, dataset: AVDataset) -> dict:
        device = pick_device(self.config)
        loader = make_loader(dataset, self.config, shuffle=False)
        return evaluate(self.model.to(device), loader, self.config, device, self.lexicon)

    def with_modalities(self, modalities: str | None) -> Decoding:
        """The same model fed only `modalities` (the other stream blanked, as avasr.train does); None: unchanged."""
        return self if not modalities else dataclasses.replace(self, config=self.config.replace(modalities=modalities))


def load_decoding(
    checkpoint: str | Path, decoder: str | None = None, beam_size: int | None = None, lexicon: str | None = None
) -> Decoding:
    """The checkpoint's model and config, with decoding overrides (a lexicon implies beam search)."""
    model, config = load_model(checkpoint)
    return decoding_for(model, config, decoder, beam_size, lexicon)


def decoding_for(
    model: torch.nn.Module,
    config: Config,
    decoder: str | None = None,
    beam_size: int | None = None,
    lexicon: str | None = None,
) -> Decoding:
    """A loaded model with its config's decoding, overridden where given (a lexicon implies beam search)."""
    config = config.with_overrides(decoder, beam_size, lexicon)
    return Decoding(model, config, Lexicon.from_file(config.lexicon) if config.lexicon else None)


def evaluate_checkpoint(
    checkpoint: str | Path,
    manifest: str | Path,
    decoder: str | None = None,
    beam_size: int | None = None,
    lexicon: str | None = None,
    predictions_path: str | Path | None = None,
    snr_db: float | None = None,
    noise: str = DEFAULT_NOISE,
    noise_seed: int = 0,
    modalities: str | None = None,
) -> dict:
    """Decode every utterance of `manifest` with the checkpoint's model, clean or, when `snr_db` is given, with
    `noise` mixed in at that SNR (drawn with `noise_seed`), fed `modalities` (None: the checkpoint's).
    Returns wer, cer, loss, counts, decoder, noise, modalities."""
    decoding = load_decoding(checkpoint, decoder, beam_size, lexicon).with_modalities(modalities)
    return evaluate_decoding(decoding, manifest, predictions_path, snr_db, noise, noise_seed)


def evaluate_decoding(
    decoding: Decoding,
    manifest: str | Path,
    predictions_path: str | Path | None = None,
    snr_db: float | None = None,
    noise: str = DEFAULT_NOISE,
    noise_seed: int = 0,
) -> dict:
    """`evaluate_checkpoint` for a model already loaded (one load serves several evaluations); its result also
    holds `errors`, one row per utterance (avasr.metrics.utterance_errors)."""
    spec = None if snr_db is None else NoiseSpec(noise, snr_db, noise_seed)
    dataset = AVDataset.from_manifest(manifest, decoding.config, keep_speech=spec is not None)
    result = decoding.run(noisy_dataset(dataset, spec, decoding.config) if spec else dataset)
    if predictions_path:
        write_predictions(Path(predictions_path), result)
    return {
        "wer": result["wer"],
        "cer": result["cer"],
        "loss": result["loss"],
        "utterances": len(dataset),
        "skipped": dataset.report.summary(),
        "decoder": decoding.config.decoder,
        "errors": utterance_errors(result["ids"], result["speakers"], result["references"], result["hypotheses"]),
        "noise": spec.describe() if spec else "clean",
        "modalities": decoding.config.modalities,
    }


def evaluate_at_snrs(
    checkpoint: str | Path,
    manifest: str | Path,
    snrs: Sequence[float],
    noise: str = DEFAULT_NOISE,
    draws: int = DEFAULT_NOISE_DRAWS,
    seed: int = 0,
    decoder: str | None = None,
    beam_size: int | None = None,
    lexicon: str | None = None,
    modalities: str | None = None,
) -> NoisyTable:
    """Corpus WER/CER of the checkpoint's model in `noise` at each SNR (in order), averaged over `draws` draws
    whose seeds are seed, seed + 1, ...: draw k is the same noise at every SNR, only scaled. The model is fed
    `modalities` (None: the checkpoint's)."""
    decoding = load_decoding(checkpoint, decoder, beam_size, lexicon).with_modalities(modalities)
    dataset = AVDataset.from_manifest(manifest, decoding.config, keep_speech=True)
    return noisy_table(decoding, dataset, snrs, noise, draws, seed)


def noisy_table(
    decoding: Decoding,
    dataset: AVDataset,
    snrs: Sequence[float],
    noise: str = DEFAULT_NOISE,
    draws: int = DEFAULT_NOISE_DRAWS,
    seed: int = 0,
) -> NoisyTable:
    """`evaluate_at_snrs` for a loaded model and a dataset loaded with keep_speech (one load, every condition)."""
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    runs = [(snr, seed + draw) for snr in snrs for draw in range(draws)]
    results = {}
    for snr, draw_seed in tqdm(runs, desc=f"{noise} noise", unit="draw"):
        noisy = noisy_dataset(dataset, NoiseSpec(noise, snr, draw_seed), decoding.config)
        results[snr, draw_seed] = decoding.run(noisy)
    scores = tuple(average_draws(snr, [results[snr, seed + draw] for draw in range(draws)]) for snr in snrs)
    return NoisyTable(noise, seed, draws, dataset.report.summary(), scores)


def average_draws(snr_db: float, results: Sequence[dict]) -> NoisyScore:
    """One SNR's score from the `evaluate` results of its draws."""
    wers = [r["wer"] for r in results]
    return NoisyScore(
        snr_db,
        statistics.fmean(wers),
        statistics.fmean(r["cer"] for r in results),
        statistics.pstdev(wers),
        statistics.fmean(r["loss"] for r in results),
    )


def write_predictions(path: Path, result: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f, delimiter="\t")
            writer.writerow(["id", "reference", "hypothesis", "wer", "cer"])
            for uid, ref, hyp in zip(result["ids"], result["references"], result["hypotheses"]):
                writer.writerow([uid, ref, hyp, f"{compute_wer(ref, hyp):.4f}", f"{compute_cer(ref, hyp):.4f}"])
    except OSError as e:
        raise OutputError(f"{path}: cannot write predictions: {e}") from None


@torch.no_grad()
def evaluate(model, loader, config: Config, device, lexicon: Lexicon | None = None) -> dict:
    """Loss, corpus WER/CER and the decoded hypotheses of a whole loader; forward passes in `config.precision`."""
    model.eval()
    total, refs, hyps, ids, speakers = 0.0, [], [], [], []
    for batch in tqdm(loader, desc="eval", unit="batch", leave=False):
        batch = to_device(batch.keep_modalities(config.modalities), device)
        with autocast(device, config.precision):
            log_probs = model(batch.audio, batch.video, batch.video_lengths)
            total += ctc_objective(log_probs, batch, config.label_smoothing).item() * len(batch.ids)
        hyps += decode(log_probs.cpu(), batch.video_lengths.cpu(), config.decoder, config.beam_size, lexicon)
        refs += batch.transcripts
        ids += batch.ids
        speakers += batch.speakers
    return {
        "loss": total / len(refs),
        "wer": word_error_rate(refs, hyps),
        "cer": character_error_rate(refs, hyps),
        "references": refs,
        "hypotheses": hyps,
        "ids": ids,
        "speakers": speakers,
    }
