"""Smoke sweep: the four fusions once each, on a small model, in minutes on a 2-core laptop (`make sweep`).

Measured on the 2-core dev machine (built-in smoke corpus: 144 train / 16 val utterances): corpus ~15 s and
feature cache ~50 s (once), then ~30 s to start each trial and ~1.5 s per epoch of this model, ASHA stopping the
weaker half at epoch 10 (on val loss), ONNX export + latency ~5 s per trial: 3 min 11 s for the sweep with the
corpus and cache already built. One such run: attention WER 0.656 / CER 0.263, weighted 0.760 / 0.348,
adaptive 0.875 / 0.394, simple 0.990 / 0.770 (greedy decoding, 16 val utterances: a smoke test, not a result).
"""

from ray import tune

from avasr.config import FUSIONS

SPACE = {
    "fusion": tune.grid_search(list(FUSIONS)),
    "dropout": tune.choice([0.1, 0.2]),
    "lr": tune.loguniform(1e-3, 3e-3),
    "epochs": 30,
    "patience": 8,
    "batch_size": 8,
    # a small model: 0.17-0.27M parameters instead of 2.9-4.5M
    "lip_size": 32,
    "encoder_channels": [8, 16, 32],
    "feature_dim": 128,
    "temporal_layers": 2,
}
NUM_SAMPLES = 1
ASHA = {"grace_period": 10, "reduction_factor": 2}
