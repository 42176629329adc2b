"""The DataLoader of a dataset: its batch order, buckets and workers, a function of (seed, epoch); its batches are
in pinned memory when the run trains on CUDA (avasr.device)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from avasr.config import Config
from avasr.data.batching import LengthBucketSampler
from avasr.data.dataset import collate
from avasr.device import pick_device, pin_memory


def make_loader(dataset: Dataset, config: Config, shuffle: bool, epoch: int = 0) -> DataLoader:
    """Batches of `dataset` (AVDataset or StreamingDataset); the training order and, with `max_batch_frames`, the
    length buckets are a function of (seed, epoch): a resumed run sees the same batches."""
    pinned = pin_memory(pick_device(config))
    if shuffle and config.max_batch_frames:
        sampler = LengthBucketSampler(dataset.lengths, config.max_batch_frames, config.seed, epoch)
        return DataLoader(
            dataset, batch_sampler=sampler, collate_fn=collate, num_workers=config.num_workers, pin_memory=pinned
        )
    generator = torch.Generator().manual_seed(config.seed + epoch)
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=shuffle,
        collate_fn=collate,
        num_workers=config.num_workers,
        generator=generator,
        pin_memory=pinned,
    )
