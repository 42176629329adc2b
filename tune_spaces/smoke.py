"""Smoke sweep (`make sweep`): the four fusions, each trained to a usable model, ranked in minutes on 2 cores.

Every fusion gets the same recipe: the question is which fusion, so nothing else varies between trials (with one
trial per fusion, a drawn dropout or LR would be ranked instead). FIFO: each trial runs all its epochs; ASHA would
stop half the fusions before they leave CTC's blank-only plateau, as it did on the old 144-utterance smoke corpus,
where three of four fusions stayed near WER 1.0.

Measured with benchmarks/train_step.py --corpus data/corpus/small (360 train / 40 val / 80 unseen-speaker test
utterances, 25 epochs, one thread, one seed each): warm-up to 3e-3 and a cosine decay got below val WER 0.5 at
epoch 9 for both fusions measured, against epoch 12 (simple) and 18 (attention) with the old constant 2e-3 halved
on plateaus; best val WER attention 0.346 -> 0.158, simple 0.200 -> 0.292 (test WER 0.421 -> 0.256, 0.271 ->
0.358); weighted 0.267 and adaptive 0.283 with this recipe. The larger corpus mattered more than the recipe.
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
