"""The index of a manifest in the feature cache: a warm start reads no media and knows every utterance's length.

A cache key is the content of an utterance's two files (avasr.data.cache), so finding an entry means reading both
files whole: for LRS3, hundreds of GB before the first step. The index remembers, per manifest, each utterance's
files by (path, size, modification time in ns) with the key they hashed to and the lengths of its features. A warm
start stats the files (two system calls per utterance, no reads) and checks that the entry is still there.

A changed file is still detected: writing a file changes its size or its mtime, so its row no longer matches and
the file is hashed again; new content is a new key, hence a new entry, and the old entry is simply never read again.
Not detected: a same-size rewrite whose mtime is then set back to the old one (`touch -d`, `cp -p` or `rsync -t` of
another file of the same size, or a coarse-mtime filesystem within one tick). `rehash=True` (`prepare.py --rehash`)
ignores the index and hashes every file.

The index lives in the cache's preprocessing folder (one per preprocessing setting), one JSON file per manifest path.
Rows come from `describe`, which whoever prepares the cache runs: inline, in a process pool (`run_locally`), or as
Ray tasks over a cluster (avasr.data.prepare).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from avasr.config import Config
from avasr.data.audio import AudioError
from avasr.data.cache import FeatureCache, entry_key
from avasr.data.manifest import ManifestEntry, read_manifest
from avasr.data.video import VideoError

INDEX_FORMAT = 1  # bump when IndexRow changes
INDEX_FOLDER = "index"
SAVE_EVERY_S = 10.0  # an interrupted preparation loses at most this much index; its cache entries stay on disk
LOCAL_CHUNK = 4  # utterances per pool job: small, so the progress bar moves and the cores stay balanced
MIN_UTTERANCES_PER_WORKER = 16  # below this, starting worker processes costs more than it saves


@dataclass(frozen=True)
class IndexRow:
    audio: str  # absolute paths, as the manifest resolves them
    video: str
    audio_stamp: tuple[int, int]  # (size in bytes, mtime in ns) when the key was computed
    video_stamp: tuple[int, int]
    key: str  # the cache entry (FeatureCache.path_of)
    mel_frames: int  # log-mel frames before alignment
    crop_frames: int  # lip crops; 0 when the video has no face
    no_face: str = ""  # why there are no crops; "" when there are

    @classmethod
    def from_json(cls, values: dict) -> "IndexRow":
        return cls(**{**values, "audio_stamp": tuple(values["audio_stamp"]),
                      "video_stamp": tuple(values["video_stamp"])})


# (row, features computed now) or the error naming the file
Described = tuple[IndexRow, bool] | str


def stamp(path: Path) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_size, status.st_mtime_ns


def describe(entry: ManifestEntry, cache: FeatureCache) -> Described:
    """Hash an utterance's files and make sure its entry is cached (computing it when missing): the row, or the
    error naming the file. Stamps are taken before hashing, so a file written meanwhile fails the next lookup."""
    try:
        stamps = stamp(entry.audio_path), stamp(entry.video_path)
        key = entry_key(entry)
        features, built = cache.fetch(entry, key)
    except (AudioError, VideoError) as e:
        return str(e)
    except OSError as e:  # a file that vanished or became unreadable after the manifest was read
        return f"cannot read {e.filename}: {e.strerror}" if e.filename else str(e)
    row = IndexRow(str(entry.audio_path), str(entry.video_path), *stamps, key, features.mel.shape[1],
                   features.crops.shape[0], features.no_face)
    return row, built


def describe_all(job: tuple[list[ManifestEntry], Config]) -> list[Described]:
    entries, config = job
    cache = FeatureCache(config.cache_dir, config)
    return [describe(entry, cache) for entry in entries]


# A runner describes entries, somewhere, and yields (position in `entries`, result) as they finish.
Runner = Callable[[Sequence[ManifestEntry], Config], Iterator[tuple[int, Described]]]


def run_locally(entries: Sequence[ManifestEntry], config: Config) -> Iterator[tuple[int, Described]]:
    """In this process, or in `config.data_workers` processes (0 = all cores) when there is enough work."""
    workers = min(config.data_workers or os.cpu_count() or 1, len(entries))
    chunks = [list(range(i, min(i + LOCAL_CHUNK, len(entries)))) for i in range(0, len(entries), LOCAL_CHUNK)]
    jobs = [([entries[i] for i in chunk], config) for chunk in chunks]
    if workers <= 1 or len(entries) < MIN_UTTERANCES_PER_WORKER * 2:
        for chunk, job in zip(chunks, jobs):
            yield from zip(chunk, describe_all(job))
        return
    # spawn, not fork: forking a process whose torch/OpenMP threads are running can deadlock
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for chunk, results in zip(chunks, pool.imap(describe_all, jobs)):
            yield from zip(chunk, results)


class CacheIndex:
    """One manifest's rows, keyed by the utterance's two paths."""

    def __init__(self, cache: FeatureCache, manifest: str | Path):
        name = hashlib.sha256(str(Path(manifest).resolve()).encode()).hexdigest()[:16]
        self.path = cache.root / INDEX_FOLDER / f"{name}.json"
        self.cache = cache
        self.rows: dict[tuple[str, str], IndexRow] = {}
        self.dirty = False  # rows added or dropped since loading: only then is the file rewritten

    @classmethod
    def load(cls, cache: FeatureCache, manifest: str | Path) -> "CacheIndex":
        """The stored index; empty when there is none or it is unreadable or of another format (then rebuilt)."""
        index = cls(cache, manifest)
        try:
            stored = json.loads(index.path.read_text())
            if stored.get("format") == INDEX_FORMAT:
                rows = [IndexRow.from_json(values) for values in stored["rows"]]
                index.rows = {(row.audio, row.video): row for row in rows}
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return index

    def lookup(self, entry: ManifestEntry) -> IndexRow | None:
        """The row when both files still have the stamps it was made with and its entry is still cached."""
        row = self.rows.get((str(entry.audio_path), str(entry.video_path)))
        try:
            if row and (stamp(entry.audio_path), stamp(entry.video_path)) == (row.audio_stamp, row.video_stamp):
                return row if self.cache.path_of(row.key).exists() else None
        except OSError:  # vanished since the manifest was read: describe() names it
            pass
        return None

    def add(self, row: IndexRow) -> None:
        self.rows[(row.audio, row.video)] = row
        self.dirty = True

    def keep_only(self, pairs: set[tuple[str, str]]) -> None:
        """Drop the rows of utterances no longer in the manifest."""
        if not self.rows.keys() <= pairs:
            self.rows = {pair: row for pair, row in self.rows.items() if pair in pairs}
            self.dirty = True

    def save(self) -> None:
        if not self.dirty:  # a warm start writes nothing: the cache may be read-only shared storage
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        stored = {"format": INDEX_FORMAT, "rows": [asdict(row) for row in self.rows.values()]}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(stored, f)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.dirty = False


@dataclass
class IndexedManifest:
    path: str
    entries: list[ManifestEntry]
    rows: list[IndexRow | str]  # per entry: its row, or the error naming its file


@dataclass
class IndexCounts:
    utterances: int = 0  # distinct utterances over all manifests
    index_hits: int = 0  # found through the index: no media read
    hashed: int = 0  # media read to find the key (new, changed, or rehash)
    built: int = 0  # features computed (the rest of `hashed` were already cached)
    frames_built: int = 0  # video frames of the features computed
    errors: int = 0


def index_manifests(manifests: Sequence[str | Path], config: Config, runner: Runner = run_locally,
                    progress: bool = True, rehash: bool = False,
                    ) -> tuple[list[IndexedManifest], IndexCounts]:
    """Every manifest's entries with their rows: looked up in the index, the rest described by `runner` (the
    utterances several manifests share, once). Indexes are saved every SAVE_EVERY_S and on the way out, even
    when interrupted: what was described stays known."""
    cache = FeatureCache(config.cache_dir, config)
    listed = [(str(m), read_manifest(m), CacheIndex.load(cache, m)) for m in manifests]
    found: dict[tuple[str, str], IndexRow | str] = {}
    missing: dict[tuple[str, str], ManifestEntry] = {}
    for _, entries, index in listed:
        for entry in entries:
            pair = (str(entry.audio_path), str(entry.video_path))
            row = None if rehash else index.lookup(entry)
            if row is not None:
                found[pair] = row
            elif pair not in found:
                missing[pair] = entry
    counts = IndexCounts(utterances=len(found) + len(missing), index_hits=len(found))
    todo = list(missing.values())
    saved = time.monotonic()
    try:
        for position, result in tqdm(runner(todo, config), total=len(todo), desc="featurising (feature cache)",
                                     unit="utt", disable=not progress or not todo):
            entry = todo[position]
            counts.hashed += 1
            if isinstance(result, str):
                counts.errors += 1
                found[(str(entry.audio_path), str(entry.video_path))] = result
                continue
            row, built = result
            counts.built += built
            counts.frames_built += row.crop_frames if built else 0
            found[(row.audio, row.video)] = row
            for _, _, index in listed:
                index.add(row)
            if time.monotonic() - saved > SAVE_EVERY_S:
                _save_known(listed)
                saved = time.monotonic()
    finally:
        _save_known(listed)
    return [IndexedManifest(path, entries, [found[(str(e.audio_path), str(e.video_path))] for e in entries])
            for path, entries, _ in listed], counts


def _save_known(listed: list[tuple[str, list[ManifestEntry], CacheIndex]]) -> None:
    """Each index keeps the rows of its own manifest's utterances only."""
    for _, entries, index in listed:
        index.keep_only({(str(e.audio_path), str(e.video_path)) for e in entries})
        index.save()
