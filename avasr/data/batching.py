"""Length-bucketed batches: utterances of similar length together, at most `max_frames` padded frames a batch.

Real corpora mix 1 s and 20 s utterances; in a batch drawn at random most frames are then padding, computed and
thrown away. Each epoch the sampler shuffles the utterances (seeded by (seed, epoch)), sorts each window of
BUCKET_WINDOW of them by length, cuts the sorted windows into batches whose longest utterance times their size
stays within `max_frames`, and shuffles the batches. Every utterance lands in exactly one batch per epoch (one
longer than `max_frames` gets a batch of its own), the batches differ from epoch to epoch, and the order is a
function of (seed, epoch) alone, so a resumed run sees the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

# Utterances sorted together: large enough that neighbours in a sorted window have nearly equal lengths, small
# enough that a window is a random draw of the corpus, so batches change from epoch to epoch.
BUCKET_WINDOW = 1024


class LengthBucketSampler(Sampler[list[int]]):
    def __init__(self, lengths: Sequence[int], max_frames: int, seed: int, epoch: int = 0, window: int = BUCKET_WINDOW):
        if max_frames <= 0:
            raise ValueError(f"max_frames must be positive, got {max_frames}")
        self.batches = bucketed_batches(np.asarray(lengths), max_frames, np.random.default_rng([seed, epoch]), window)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def bucketed_batches(lengths: np.ndarray, max_frames: int, rng: np.random.Generator, window: int) -> list[list[int]]:
    order = rng.permutation(len(lengths))
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batch: list[int] = []
        for index in chunk.tolist():  # ascending lengths: the newest utterance is the batch's longest
            if batch and lengths[index] * (len(batch) + 1) > max_frames:
                batches.append(batch)
                batch = []
            batch.append(index)
        if batch:
            batches.append(batch)
    return [batches[i] for i in rng.permutation(len(batches))]


def padding_fraction(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Share of the frames in padded batches that are padding."""
    padded = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)
    return 1.0 - sum(lengths[i] for batch in batches for i in batch) / padded
