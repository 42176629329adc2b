"""Smoke sweep: the four fusions once each, on a small model, in minutes on a 2-core laptop (`make sweep`).

Measured on the 2-core dev machine (built-in smoke corpus: 144 train / 16 val utterances): warming the feature
cache ~50 s (once per corpus), then one epoch of this model ~7 s per trial with two trials side by side (the
default model: ~60 s), ASHA stopping the weaker half after 2 epochs, ONNX export + latency ~5 s per trial.
With 4 epochs the whole sweep took 2 min 36 s; 6 epochs adds about a minute. It checks the platform end to end;
its WERs say little (6 epochs barely leave the blank-only phase).
"""

from ray import tune

from avasr.config import FUSIONS

SPACE = {
    "fusion": tune.grid_search(list(FUSIONS)),
    "dropout": tune.choice([0.1, 0.2]),
    "lr": tune.loguniform(1e-3, 3e-3),
    "epochs": 6,
    "patience": 6,
    "batch_size": 8,
    # a small model: 0.17-0.27M parameters instead of 2.9-4.5M
    "lip_size": 32,
    "encoder_channels": [8, 16, 32],
    "feature_dim": 128,
    "temporal_layers": 2,
}
NUM_SAMPLES = 1
ASHA = {"grace_period": 2, "reduction_factor": 2}
