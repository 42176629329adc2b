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

Rows are keyed by the utterance: its two paths, and for a segment of a clip the segment too (avasr.data.manifest);
the segments of one clip share the files' stamps but each has its own key and lengths.

The index lives in the cache's preprocessing folder (one per preprocessing setting), one JSON file per manifest path.
Rows come from `describe`, which whoever prepares the cache runs: inline, in a process pool (`run_locally`), or as
Ray tasks over a cluster (avasr.data.prepare).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from avasr.config import Config
from avasr.data.audio import AudioError
from avasr.data.cache import CacheError, FeatureCache, entry_key
from avasr.data.manifest import ManifestEntry, read_manifest
from avasr.data.pool import MIN_JOBS_PER_WORKER, in_processes, worker_count
from avasr.data.video import VideoError

INDEX_FORMAT = 1  # bump when IndexRow changes
INDEX_FOLDER = "index"
SAVE_EVERY_S = 10.0  # an interrupted preparation loses at most this much index; its cache entries stay on disk
LOCAL_CHUNK = 4  # utterances per pool job: small, so the progress bar moves and the cores stay balanced


@dataclass(frozen=True)
class IndexRow:
    audio: str  # absolute paths, as the manifest names them (avasr.data.manifest)
    video: str
    audio_stamp: tuple[int, int]  # (size in bytes, mtime in ns) when the key was computed
    video_stamp: tuple[int, int]
    key: str  # the cache entry (FeatureCache.path_of)
    mel_frames: int  # log-mel frames before alignment
    crop_frames: int  # lip crops; 0 when the video has no face
    no_face: str = ""  # why there are no crops; "" when there are
    segment: tuple[float, float] | None = None  # the manifest entry's segment; None: the whole clip

    @classmethod
    def from_json(cls, values: dict) -> IndexRow:
        segment = values.get("segment")
        return cls(
            **{
                **values,
                "audio_stamp": tuple(values["audio_stamp"]),
                "video_stamp": tuple(values["video_stamp"]),
                "segment": tuple(segment) if segment else None,
            }
        )

    @property
    def utterance(self) -> UtteranceKey:
        return utterance_key(self.audio, self.video, self.segment)


# (audio path, video path) of a whole clip; (audio path, video path, segment) of a segment
UtteranceKey = tuple[str, str] | tuple[str, str, tuple[float, float]]


def utterance_key(audio: str, video: str, segment: tuple[float, float] | None) -> UtteranceKey:
    return (audio, video) if segment is None else (audio, video, segment)


# (row, features computed now) or the error naming the file
Described = tuple[IndexRow, bool] | str


def stamp(path: Path) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_size, status.st_mtime_ns


def describe(entry: ManifestEntry, cache: FeatureCache) -> Described:
    """Hash an utterance's files and make sure its entry is cached (computing it when missing): the row, or the
    error naming the file. Stamps are taken before hashing, so a file written meanwhile fails the next lookup.
    A cache that cannot be written raises CacheError: that is no fault of the utterance."""
    try:
        stamps = stamp(entry.audio_path), stamp(entry.video_path)
        key = entry_key(entry)
        features, built = cache.fetch(entry, key)
    except (AudioError, VideoError) as e:
        return str(e)
    except OSError as e:  # a file that vanished or became unreadable after the manifest was read
        return f"cannot read {e.filename}: {e.strerror}" if e.filename else str(e)
    except CacheError:
        raise
    except Exception as e:  # a decoder's own error on a malformed file: one file must not stop a whole corpus
        return f"{entry.video_path}: {type(e).__name__} while featurising: {e}"
    row = IndexRow(
        str(entry.audio_path),
        str(entry.video_path),
        *stamps,
        key,
        features.mel.shape[1],
        features.crops.shape[0],
        features.no_face,
        entry.segment,
    )
    return row, built


def describe_all(job: tuple[list[ManifestEntry], Config]) -> list[Described]:
    entries, config = job
    cache = FeatureCache(config.cache_dir, config)
    return [describe(entry, cache) for entry in entries]


# A runner describes entries, somewhere, and yields (position in `entries`, result) as they finish.
Runner = Callable[[Sequence[ManifestEntry], Config], Iterator[tuple[int, Described]]]


def chunked_positions(count: int, size: int) -> list[list[int]]:
    """Positions 0..count-1 in consecutive chunks of `size` (the last one shorter): the jobs a Runner hands out."""
    return [list(range(i, min(i + size, count))) for i in range(0, count, size)]


def run_locally(entries: Sequence[ManifestEntry], config: Config) -> Iterator[tuple[int, Described]]:
    """In this process, or in `config.data_workers` processes (0 = all cores) when there is enough work."""
    chunks = chunked_positions(len(entries), LOCAL_CHUNK)
    jobs = [([entries[i] for i in chunk], config) for chunk in chunks]
    workers = worker_count(config.data_workers, len(entries))
    chunked = in_processes(describe_all, jobs, workers, min_jobs=MIN_JOBS_PER_WORKER // LOCAL_CHUNK)
    for chunk, results in zip(chunks, chunked):
        yield from zip(chunk, results)


class CacheIndex:
    """One manifest's rows, keyed by the utterance's two paths and segment."""

    def __init__(self, cache: FeatureCache, manifest: str | Path):
        name = hashlib.sha256(str(Path(manifest).resolve()).encode()).hexdigest()[:16]
        self.path = cache.root / INDEX_FOLDER / f"{name}.json"
        self.cache = cache
        self.rows: dict[UtteranceKey, IndexRow] = {}
        self.dirty = False  # rows added or dropped since loading: only then is the file rewritten

    @classmethod
    def load(cls, cache: FeatureCache, manifest: str | Path) -> CacheIndex:
        """The stored index; empty when there is none or it is unreadable or of another format (then rebuilt)."""
        index = cls(cache, manifest)
        try:
            stored = json.loads(index.path.read_text())
            if stored.get("format") == INDEX_FORMAT:
                rows = [IndexRow.from_json(values) for values in stored["rows"]]
                index.rows = {row.utterance: row for row in rows}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # not an index this code wrote
            pass
        return index

    def lookup(self, entry: ManifestEntry) -> IndexRow | None:
        """The row when both files still have the stamps it was made with and its entry is still cached."""
        row = self.rows.get(_pair(entry))
        try:
            if row and (stamp(entry.audio_path), stamp(entry.video_path)) == (row.audio_stamp, row.video_stamp):
                return row if self.cache.path_of(row.key).exists() else None
        except OSError:  # vanished since the manifest was read: describe() names it
            pass
        return None

    def set_rows(self, rows: dict[UtteranceKey, IndexRow]) -> None:
        """The manifest's rows as now known (utterances no longer listed drop out)."""
        if rows != self.rows:
            self.rows, self.dirty = rows, True

    def save(self) -> None:
        """Write the rows when they changed (a warm start writes nothing). A cache folder that cannot be written
        (read-only shared storage) only costs later starts their speed: a warning, not an error."""
        if not self.dirty:
            return
        stored = {"format": INDEX_FORMAT, "rows": [asdict(row) for row in self.rows.values()]}
        tmp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "w") as f:
                json.dump(stored, f)
            os.replace(tmp, self.path)
            self.dirty = False
        except OSError as e:
            warnings.warn(
                f"{self.path}: cannot save the cache index ({e}); the next start will hash the media "
                f"of the utterances it lacks again",
                stacklevel=2,
            )
        finally:
            if tmp is not None and self.dirty:
                Path(tmp).unlink(missing_ok=True)


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


def index_manifests(
    manifests: Sequence[str | Path],
    config: Config,
    runner: Runner = run_locally,
    progress: bool = True,
    rehash: bool = False,
) -> tuple[list[IndexedManifest], IndexCounts]:
    """Every manifest's entries with their rows: looked up in the index, the rest described by `runner` (the
    utterances several manifests share, once). Indexes are saved every SAVE_EVERY_S and on the way out, even
    when interrupted: what was described stays known."""
    cache = FeatureCache(config.cache_dir, config)
    listed = [(str(m), read_manifest(m), CacheIndex.load(cache, m)) for m in manifests]
    found: dict[UtteranceKey, IndexRow | str] = {}
    for _, entries, index in listed:  # every index first: a row one manifest's index knows serves all of them
        for entry in entries:
            pair = _pair(entry)
            if pair not in found and not rehash and (row := index.lookup(entry)) is not None:
                found[pair] = row
    missing = {_pair(e): e for _, entries, _ in listed for e in entries if _pair(e) not in found}
    counts = IndexCounts(utterances=len(found) + len(missing), index_hits=len(found))
    todo = list(missing.values())
    saved = time.monotonic()
    try:
        for position, result in tqdm(
            runner(todo, config),
            total=len(todo),
            desc="featurising (feature cache)",
            unit="utt",
            disable=not progress or not todo,
        ):
            counts.hashed += 1
            if isinstance(result, str):
                counts.errors += 1
                found[_pair(todo[position])] = result
                continue
            row, built = result
            counts.built += built
            counts.frames_built += row.crop_frames if built else 0
            found[row.utterance] = row
            if time.monotonic() - saved > SAVE_EVERY_S:
                _save_known(listed, found)
                saved = time.monotonic()
    finally:
        _save_known(listed, found)
    return [IndexedManifest(path, entries, [found[_pair(e)] for e in entries]) for path, entries, _ in listed], counts


def _pair(entry: ManifestEntry) -> UtteranceKey:
    return utterance_key(str(entry.audio_path), str(entry.video_path), entry.segment)


def _save_known(
    listed: list[tuple[str, list[ManifestEntry], CacheIndex]], found: dict[UtteranceKey, IndexRow | str]
) -> None:
    """Each index gets the rows of its own manifest's utterances known so far."""
    for _, entries, index in listed:
        index.set_rows({pair: found[pair] for pair in map(_pair, entries) if isinstance(found.get(pair), IndexRow)})
        index.save()
