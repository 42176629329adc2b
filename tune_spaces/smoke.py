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

Corpus and epochs (each fusion trained alone, one thread, two at a time, 2026-12-02): the sweep trains on `medium`
(936 train / 96 val / 168 test utterances, 24 training speakers) for 12 epochs, 1,404 steps of 8, instead of 25
epochs of `small` (1,125 steps): the same CPU within 25 %, three times the sentences, four more voices. Warm-up is
0.8 epoch, the ~90 steps it was on `small`. On medium's 4 unseen test speakers (new to both corpora), seed 42:

    fusion       small, 25 epochs    medium, 10 epochs    medium, 12 epochs
    attention    0.200               0.188                0.124
    adaptive     0.274               0.201                0.172
    simple       0.292               0.278                0.203
    weighted     0.324               0.252                0.207

Medium, 12 epochs, val WER / test WER by seed: 42 attention 0.116 / 0.124, adaptive 0.155, weighted 0.167, simple
0.198; 7 attention 0.127 / 0.148, adaptive 0.153, simple 0.233, weighted 0.274; 123 weighted 0.160 / 0.189,
adaptive 0.174, simple 0.227, attention 0.342. Still learning at epoch 10 (attention, seed 42: val 0.155 at 10, 0.116
at 12), so the two epochs pay. More regularisation does not: at 25 epochs of `small`, dropout 0.2, modality dropout
0.2 and SpecAugment all raised the test WER, and so did lip shifts of 2 pixels, flips and a +-10 % mel-frequency
warp for unseen voices and faces (attention, seed 42: 0.248 -> 0.313).
"""

from ray import tune

from avasr.config import FUSIONS

SPACE = {
    "fusion": tune.grid_search(list(FUSIONS)),
    "dropout": 0.1,
    "lr": 3e-3,
    "lr_schedule": "cosine",
    "warmup_epochs": 0.8,
    "epochs": 12,
    "patience": 12,  # the cosine schedule ends the run; early stopping would cut it before its low-LR epochs
    "batch_size": 8,  # more updates per epoch: on CPU an utterance costs the same in a batch of 8 or 16
    # a small model: 0.17-0.27M parameters instead of 2.9-4.5M
    "lip_size": 32,
    "encoder_channels": [8, 16, 32],
    "feature_dim": 128,
    "temporal_layers": 2,
}
NUM_SAMPLES = 1
SCHEDULER = "fifo"
