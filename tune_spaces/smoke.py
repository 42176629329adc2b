"""Smoke sweep (`make sweep`): the four fusions, each trained to a usable model, ranked in minutes on 2 cores.

Every fusion gets the same recipe: the question is which fusion, so nothing else varies between trials (with one
trial per fusion, a drawn dropout or LR would be ranked instead). FIFO: each trial runs all its epochs, ASHA would
stop half the fusions before they leave CTC's blank-only plateau. The recipe was chosen by measurement
(benchmarks/train_step.py --corpus, on the built-in small corpus: 360 train / 40 val / 80 test utterances): with a
constant LR the fusions were still near WER 1.0 at epoch 10; warm-up to a 6x higher peak and a cosine decay took
them below 0.5 by epoch 9-12 and to 0.13-0.20 by epoch 25. The numbers are in the README.
"""

from ray import tune

from avasr.config import FUSIONS

SPACE = {
    "fusion": tune.grid_search(list(FUSIONS)),
    "dropout": 0.1,
    "lr": 3e-3,
    "lr_schedule": "cosine",
    "warmup_epochs": 2.0,
    "epochs": 25,
    "patience": 25,  # the cosine schedule ends the run; early stopping would cut it before its low-LR epochs
    "batch_size": 8,  # more updates per epoch: on CPU an utterance costs the same in a batch of 8 or 16
    # a small model: 0.17-0.27M parameters instead of 2.9-4.5M
    "lip_size": 32,
    "encoder_channels": [8, 16, 32],
    "feature_dim": 128,
    "temporal_layers": 2,
}
NUM_SAMPLES = 1
SCHEDULER = "fifo"
