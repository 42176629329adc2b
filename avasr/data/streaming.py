"""Utterances read from the feature cache as batches need them: a worker's memory no longer grows with the corpus.

`StreamingDataset` holds only each utterance's manifest entry and index row (a few hundred bytes; the index gives
the lengths without opening features) and reads one cache entry per item, in DataLoader workers when
`num_workers` > 0, which prefetch the next batches while the model trains. It keeps exactly the utterances the
in-memory `AVDataset` keeps, in the same order, and builds each one with the same code: under one seed both give
the same batches. The in-memory dataset stays the default: on a small corpus it avoids a file read per item.
Noise augmentation still needs the in-memory path (babble is drawn from every other speaker's speech).
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from avasr.config import Config
from avasr.data.cache import FeatureCache
from avasr.data.dataset import LoadReport, Utterance, indexed_frames, usable_utterances, utterance_from_features
from avasr.data.index import IndexRow
from avasr.data.manifest import ManifestEntry
from avasr.errors import AvasrError


class StreamingError(AvasrError, ValueError):
    """A configuration the streaming path cannot serve."""


class StreamingDataset(Dataset):
    def __init__(self, kept: list[tuple[ManifestEntry, IndexRow]], report: LoadReport, config: Config):
        self.kept = kept
        self.report = report
        self.config = config
        self.cache = FeatureCache(config.cache_dir, config)

    @classmethod
    def from_manifest(cls, path: str | Path, config: Config, progress: bool = True) -> "StreamingDataset":
        """The manifest's usable utterances, through its index (entries it lacks are featurised first)."""
        if not config.cache_dir:
            raise StreamingError("streaming reads the feature cache: set cache_dir")
        return cls(*usable_utterances(path, config, progress), config)

    @property
    def lengths(self) -> list[int]:
        """Video frames of each utterance, from the index (for length-bucketed batches)."""
        return [indexed_frames(row, self.config) for _, row in self.kept]

    def __len__(self) -> int:
        return len(self.kept)

    def __getitem__(self, index: int) -> Utterance:
        entry, row = self.kept[index]
        return utterance_from_features(entry, self.cache.get(entry, row.key), self.config)
