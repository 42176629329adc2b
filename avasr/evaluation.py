"""Evaluate a checkpoint on a manifest: corpus WER/CER and, optionally, per-utterance predictions."""

from __future__ import annotations

import csv
from pathlib import Path

from avasr.data.dataset import AVDataset
from avasr.decode import Lexicon
from avasr.text import compute_cer, compute_wer
from avasr.train import evaluate, load_model, make_loader, pick_device

PREDICTIONS_FILE = "predictions.tsv"


def evaluate_checkpoint(
    checkpoint: str | Path,
    manifest: str | Path,
    decoder: str | None = None,
    beam_size: int | None = None,
    lexicon: str | None = None,
    predictions_path: str | Path | None = None,
) -> dict:
    """Decode every utterance of `manifest` with the checkpoint's model. Returns wer, cer, loss, counts."""
    model, config = load_model(checkpoint)
    overrides = {k: v for k, v in (("decoder", decoder), ("beam_size", beam_size), ("lexicon", lexicon)) if v}
    if lexicon and not decoder:
        overrides["decoder"] = "beam"
    config = config.replace(**overrides)
    device = pick_device(config)
    dataset = AVDataset.from_manifest(manifest, config)
    result = evaluate(model.to(device), make_loader(dataset, config, shuffle=False), config, device,
                      Lexicon.from_file(config.lexicon) if config.lexicon else None)
    if predictions_path:
        write_predictions(Path(predictions_path), result)
    return {"wer": result["wer"], "cer": result["cer"], "loss": result["loss"], "utterances": len(dataset),
            "skipped": dataset.report.summary(), "decoder": config.decoder}


def write_predictions(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["id", "reference", "hypothesis", "wer", "cer"])
        for uid, ref, hyp in zip(result["ids"], result["references"], result["hypotheses"]):
            writer.writerow([uid, ref, hyp, f"{compute_wer(ref, hyp):.4f}", f"{compute_cer(ref, hyp):.4f}"])
