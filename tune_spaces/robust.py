"""The four fusions trained to lean on the lips when the sound goes: noise mixed into the training speech,
SpecAugment and lip masks, and modality dropout, on the `medium` corpus (936 training utterances):

    python experiments/sweep_fusion.py --space robust --name robust-medium \\
        --train-manifest data/corpus/medium/train_manifest.txt --val-manifest data/corpus/medium/val_manifest.txt \\
        --test-manifest data/corpus/medium/test_manifest.txt --select-on val_wer_snr0_babble
    python experiments/robustness.py --sweep robust-medium      # A, V and AV WER against SNR per fusion

The recipe is benchmarks/modalities.py's small model (0.2M parameters) with benchmarks/robustness.py's
augmentation, cut to 30 epochs; two trials train side by side. The champion is chosen on the val WER in babble at
0 dB, the condition this sweep is for. Its results: docs/benchmarks.md ("Which fusion leans on the lips").
"""

from ray import tune

from avasr.config import FUSIONS

SPACE = {
    "fusion": tune.grid_search(list(FUSIONS)),
    "dropout": 0.1,
    "lr": 2e-3,
    "lr_schedule": "cosine",
    "warmup_epochs": 1.0,
    "epochs": 30,
    "patience": 40,  # the cosine schedule ends the run
    "batch_size": 16,
    "lip_size": 32,
    "encoder_channels": [8, 16, 32],
    "feature_dim": 128,
    "temporal_layers": 2,
    # augmentation: noise on 80 % of the utterances at -10..15 dB, a stream blanked on 30 %, masks on the rest
    "noise_prob": 0.8,
    "noise_snr_db": [-10.0, 15.0],
    "modality_dropout": 0.3,
    "freq_masks": 2,
    "audio_time_masks": 2,
    "video_time_masks": 1,
}
NUM_SAMPLES = 1
SCHEDULER = "fifo"
