"""On-disk feature cache shared by training, evaluation and every Ray trial.

An entry holds one utterance's log-mel and lip crops (or, instead of crops, the fact that its video has no face),
keyed by the content of both files and by every config field that changes preprocessing, so a changed file or
setting never reads a stale entry. Hashing the content means reading every media file: a warm start skips that
through the index of each manifest (avasr.data.index), which remembers each entry's key by the files' size and
modification time. Writes go to a temporary file in the same folder and are renamed into place: readers see a
whole entry or none, and trials that build the same entry at the same time just both write it (rename is atomic,
the contents are equal). On a cluster, point `cache_dir` at shared storage.

A segment of a clip (a manifest line with offsets) is an utterance of its own: its key adds the offsets to the
content, and its entry holds the features of that part only. A whole clip's key is the content alone, so entries
made before segments existed are found again.
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
from avasr.data.manifest import ManifestEntry, segment_text
from avasr.data.video import VideoError
from avasr.errors import AvasrError

CACHE_FORMAT = 2  # bump when the entry layout or the preprocessing code changes meaning
PREPROCESSING_FIELDS = ("sample_rate", "n_mels", "window_ms", "hop_ms", "fps", "lip_size", "face_landmarker_model")
HASH_CHUNK = 1 << 20


class CacheError(AvasrError, RuntimeError):
    """The feature cache cannot be written (not an OSError: that would read as an unreadable media file)."""


@dataclass(frozen=True)
class Features:
    mel: torch.Tensor  # shape = (n_mels, T_a) float32, before alignment to the video
    crops: torch.Tensor  # shape = (T_v, lip_size, lip_size) uint8; (0, lip_size, lip_size) when no face was found
    no_face: str = ""  # why there are no crops (NoFaceError's message naming the video); "" when there are


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def entry_key(entry: ManifestEntry) -> str:
    """The cache key of an utterance: the content of both its files (reads them whole), and its segment if any."""
    content = file_digest(entry.audio_path) + file_digest(entry.video_path)
    if entry.segment is not None:
        content += f"|segment {segment_text(entry.segment)}"
    return hashlib.sha256(content.encode()).hexdigest()


def preprocessing_key(config: Config) -> str:
    settings = {name: getattr(config, name) for name in PREPROCESSING_FIELDS} | {"format": CACHE_FORMAT}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def compute_features(entry: ManifestEntry, config: Config) -> Features:
    """Raises AudioError / VideoError naming the file; a video without a face gives Features with `no_face` set."""
    mel = load_log_mel(entry.audio_path, config, entry.segment)
    try:
        crops = torch.from_numpy(load_lips(entry.video_path, config, segment=entry.segment).crops)
    except NoFaceError as e:
        return Features(mel, torch.zeros(0, config.lip_size, config.lip_size, dtype=torch.uint8), no_face=str(e))
    return Features(mel, crops)


class FeatureCache:
    def __init__(self, root: str | Path, config: Config):
        self.root = Path(root) / preprocessing_key(config)
        self.config = config

    def path_of(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pt"

    def get(self, entry: ManifestEntry, key: str = "") -> Features:
        """The cached features, computing and storing them on a miss ("no face" is remembered too). `key`: the
        entry's key when the index knows it; otherwise the media are hashed."""
        return self.fetch(entry, key)[0]

    def fetch(self, entry: ManifestEntry, key: str = "") -> tuple[Features, bool]:
        """(features, whether they were computed now) -- `get` that also says if the entry was missing.

        Computed features are stored only under the key of the content they were computed from: the media are
        hashed again after featurising, and a file that changed meanwhile (or since the index saw it) is an error,
        so an entry never holds the features of other content than its key's."""
        key = key or entry_key(entry)
        stored = self.read(self.path_of(key))
        built = stored is None or "mel" not in stored  # entries before 2026-12 stored "no face" without the log-mel
        if not built:
            return Features(stored["mel"], stored["crops"], stored.get("no_face", "")), False
        features = compute_features(entry, self.config)
        if entry_key(entry) != key:
            raise VideoError(
                f"{entry.audio_path} or {entry.video_path} changed while it was being featurised (or "
                f"since it was indexed): run again"
            )
        self.put(self.path_of(key), features)
        return features, True

    def put(self, path: Path, features: Features) -> None:
        """Raises CacheError naming the cache file when it cannot be written (a full disk, a read-only cache)."""
        try:
            self._write(path, {"mel": features.mel, "crops": features.crops, "no_face": features.no_face})
        except OSError as e:
            raise CacheError(f"{path}: cannot write the feature cache: {e}") from None

    @staticmethod
    def read(path: Path) -> dict | None:
        """A stored entry; None when missing or unreadable (a disk fault, a foreign file): it is then rebuilt."""
        if not path.exists():
            return None
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # torch.load raises many types on garbage (RuntimeError, UnpicklingError, IndexError...)
            return None

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
