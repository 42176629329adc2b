"""The full search: fusion x dropout x learning rate on the original design's model (2.9-4.5M parameters).

4 fusions x 4 samples = 16 trials of up to 50 epochs; ASHA stops the weaker ones from epoch 5 on, keeping the
best third at each rung. Meant for a GPU or a many-core cluster (`--address`, `--gpus-per-trial`).
"""

from ray import tune

from avasr.config import FUSIONS

SPACE = {
    "fusion": tune.grid_search(list(FUSIONS)),
    "dropout": tune.uniform(0.1, 0.4),
    "lr": tune.loguniform(2e-4, 2e-3),
    "epochs": 50,
}
NUM_SAMPLES = 4
ASHA = {"grace_period": 5, "reduction_factor": 3}
