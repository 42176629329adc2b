"""Utterances read from the feature cache as batches need them: a worker's memory no longer grows with the corpus.

`StreamingDataset` holds only each utterance's manifest entry and index row (a few hundred bytes; the index gives
the lengths without opening features) and reads one cache entry per item, in DataLoader workers when
`num_workers` > 0, which prefetch the next batches while the model trains. It keeps exactly the utterances the
in-memory `AVDataset` keeps, in the same order, and builds each one with the same code: under one seed both give
the same batches. The in-memory dataset stays the default: on a small corpus it avoids a file read per item.

Noise augmentation streams too: with keep_speech each item also reads its clean speech (a WAV read, in the
DataLoader workers), and babble is drawn from a bounded, seeded sample of the corpus's voices held in memory
(`speech_sample`) instead of every other utterance.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from avasr.config import Config
from avasr.data.audio import load_speech
from avasr.data.cache import FeatureCache
from avasr.data.dataset import LoadReport, Utterance, indexed_frames, usable_utterances, utterance_from_features
from avasr.data.index import IndexRow
from avasr.data.manifest import ManifestEntry
from avasr.errors import AvasrError


class StreamingError(AvasrError, ValueError):
    """A configuration the streaming path cannot serve."""


class StreamingDataset(Dataset):
    def __init__(
        self, kept: list[tuple[ManifestEntry, IndexRow]], report: LoadReport, config: Config, keep_speech: bool = False
    ):
        self.kept = kept
        self.report = report
        self.config = config
        self.keeps_speech = keep_speech  # each item also reads its clean speech (for noise augmentation)
        self.cache = FeatureCache(config.cache_dir, config)

    @classmethod
    def from_manifest(
        cls, path: str | Path, config: Config, progress: bool = True, keep_speech: bool = False
    ) -> StreamingDataset:
        """The manifest's usable utterances, through its index (entries it lacks are featurised first)."""
        if not config.cache_dir:
            raise StreamingError("streaming reads the feature cache: set cache_dir")
        return cls(*usable_utterances(path, config, progress), config, keep_speech)

    @property
    def members(self) -> list[tuple[str, str]]:
        """(utterance id, speaker) of every utterance, in order."""
        return [(entry.utterance_id, entry.speaker) for entry, _ in self.kept]

    def speech_sample(self, size: int, seed: int) -> list[tuple[str, str, np.ndarray]]:
        """(id, speaker, clean speech shape = (N,)) of at most `size` utterances, spread over the speakers: each
        speaker's utterances in a seeded order, one speaker after another in turn."""
        rng = np.random.default_rng(seed)
        by_speaker: dict[str, list[ManifestEntry]] = defaultdict(list)
        for entry, _ in self.kept:
            by_speaker[entry.speaker].append(entry)
        queues = [[entries[k] for k in rng.permutation(len(entries))] for _, entries in sorted(by_speaker.items())]
        chosen: list[ManifestEntry] = []
        while len(chosen) < size and any(queues):
            chosen += [queue.pop() for queue in queues if queue][: size - len(chosen)]
        return [
            (e.utterance_id, e.speaker, load_speech(e.audio_path, self.config, e.segment).numpy())
            for e in tqdm(chosen, desc="reading babble voices", unit="utt")
        ]

    @property
    def lengths(self) -> list[int]:
        """Video frames of each utterance, from the index (for length-bucketed batches)."""
        return [indexed_frames(row, self.config) for _, row in self.kept]

    def __len__(self) -> int:
        return len(self.kept)

    def __getitem__(self, index: int) -> Utterance:
        entry, row = self.kept[index]
        return utterance_from_features(entry, self.cache.get(entry, row.key), self.config, self.keeps_speech)
