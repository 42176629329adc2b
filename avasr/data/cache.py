"""On-disk feature cache shared by training, evaluation and every Ray trial.

An entry holds one utterance's log-mel and lip crops (or the fact that its video has no face), keyed by the
content of both files and by every config field that changes preprocessing, so a changed file or setting never
reads a stale entry. Writes go to a temporary file in the same folder and are renamed into place: readers see a
whole entry or none, and trials that build the same entry at the same time just both write it (rename is atomic,
the contents are equal). On a cluster, point `cache_dir` at shared storage.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from avasr.config import Config
from avasr.data.audio import load_log_mel
from avasr.data.lips import NoFaceError, load_lips
from avasr.data.manifest import ManifestEntry

CACHE_FORMAT = 2  # bump when the entry layout or the preprocessing code changes meaning
PREPROCESSING_FIELDS = ("sample_rate", "n_mels", "window_ms", "hop_ms", "fps", "lip_size", "face_landmarker_model")
HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class Features:
    mel: torch.Tensor  # shape = (n_mels, T_a) float32, before alignment to the video
    crops: torch.Tensor  # shape = (T_v, lip_size, lip_size) uint8


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def preprocessing_key(config: Config) -> str:
    settings = {name: getattr(config, name) for name in PREPROCESSING_FIELDS} | {"format": CACHE_FORMAT}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def compute_features(entry: ManifestEntry, config: Config) -> Features:
    """Raises AudioError / VideoError / NoFaceError naming the file."""
    return Features(load_log_mel(entry.audio_path, config), torch.from_numpy(load_lips(entry.video_path, config).crops))


class FeatureCache:
    def __init__(self, root: str | Path, config: Config):
        self.root = Path(root) / preprocessing_key(config)
        self.config = config

    def path_for(self, entry: ManifestEntry) -> Path:
        key = hashlib.sha256((file_digest(entry.audio_path) + file_digest(entry.video_path)).encode()).hexdigest()
        return self.root / key[:2] / f"{key}.pt"

    def get(self, entry: ManifestEntry) -> Features:
        """The cached features, computing and storing them on a miss. A cached "no face" raises NoFaceError again."""
        path = self.path_for(entry)
        stored = self._read(path) if path.exists() else None
        if stored is None:
            stored = self._compute_entry(entry)
            self._write(path, stored)
        if "no_face" in stored:
            raise NoFaceError(stored["no_face"])
        return Features(stored["mel"], stored["crops"])

    @staticmethod
    def _read(path: Path) -> dict | None:
        """A stored entry; None when it is unreadable (a disk fault, a foreign file): it is then rebuilt."""
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # torch.load raises many types on garbage (RuntimeError, UnpicklingError, IndexError...)
            return None

    def _compute_entry(self, entry: ManifestEntry) -> dict:
        try:
            features = compute_features(entry, self.config)
        except NoFaceError as e:
            return {"no_face": str(e)}  # remembered: face detection is the expensive step
        return {"mel": features.mel, "crops": features.crops}

    @staticmethod
    def _write(path: Path, stored: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pt")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(stored, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
