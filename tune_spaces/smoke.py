"""Smoke sweep (`make sweep`): the four fusions, each trained to a usable model, ranked in minutes on 2 cores.

Every fusion gets the same recipe: the question is which fusion, so nothing else varies between trials (with one
trial per fusion, a drawn dropout or LR would be ranked instead). FIFO: each trial runs all its epochs; ASHA would
stop fusions before they leave CTC's blank-only plateau, and rank them on where they stood then.

The recipe: a warm-up to 2e-3 and a cosine decay, which gets every fusion off the blank plateau sooner than a
constant LR halved on plateaus; 10 epochs of the built-in `medium` corpus (864 training utterances, 24 speakers) in
batches of 4: on CPU an utterance costs the same in a batch of 4 or 8, and twice the updates per epoch bring every
fusion further in the same time, with seeds that land closer together than in batches of 8 at 3e-3. The warm-up is
about 170 steps; gradients are clipped to a norm of 1, about the typical norm, so the large ones of the first epoch
count no more than the rest. The lips are read as motion (`lip_motion`): without the face's still appearance the
video encoder learns the mouth rather than the seven training faces. No regularisation beyond dropout 0.1: more
dropout, modality dropout, SpecAugment, lip shifts, flips and a mel-frequency warp all raised the unseen speakers'
WER at this size (on the corpus before it had several engines and faces), and the frequency and time warps that
help the 30-epoch recipe on the held-out engine cost every fusion val WER in 12 epochs. The model pads its time
convolutions with each clip's edge frames (ModelConfig.time_padding) and learns the faster for it: 10 epochs keep
`make sweep` within its 10 minutes. The runs behind each choice are in docs/benchmarks.md ("The smoke recipe",
"Seeds of the smoke recipe", "A time warp on top", "Where the first word went").
"""

from ray import tune

from avasr.config import FUSIONS

SPACE = {
    "fusion": tune.grid_search(list(FUSIONS)),
    "dropout": 0.1,
    "lr": 2e-3,
    "lr_schedule": "cosine",
    "warmup_epochs": 0.8,
    "epochs": 10,
    "patience": 10,  # the cosine schedule ends the run; early stopping would cut it before its low-LR epochs
    "batch_size": 4,  # more updates per epoch: on CPU an utterance costs the same in a batch of 4, 8 or 16
    # gradient norm clipped to 1 (the default 5 lets the first epoch's spikes through): every seed tried learns
    # faster, the slow ones most
    "grad_clip": 1.0,
    # a small model: 0.17-0.27M parameters instead of 2.9-4.5M
    "lip_size": 32,
    "encoder_channels": [8, 16, 32],
    "feature_dim": 128,
    "temporal_layers": 2,
    # the video encoder reads each crop minus the utterance's mean crop: lower val WER for every fusion, and lips
    # that transfer to faces training never saw (docs/benchmarks.md, "Each input on each split")
    "lip_motion": True,
}
NUM_SAMPLES = 1
SEEDS = 2  # training seeds per fusion: the verdict measures seed-to-seed variation
SCHEDULER = "fifo"
