"""The GRID audio-visual corpus (Cooke et al. 2006) -> train/val/test manifests.

Layout under the corpus root, as the Zenodo release (record 3625687) unpacks:

    s1/bbaf2n.mpg ...                 video, 25 fps (s1.zip -> s1/*.mpg); speaker s21 has no video at all
    audio_25k/s1/bbaf2n.wav ...       25 kHz audio (s1.tar -> s1/*.wav, inside audio_25k/); `audio/s1/*.wav`
                                      is used for a clip that has no file under audio_25k/
    alignments/s1/bbaf2n.align ...    `start end word` per line, times in 1/25000 s (alignments.zip)

The transcript is the align file's words minus the non-speech tokens `sil` and `sp`. A clip is kept only when it
has an alignment with words, a non-empty video and an audio file; every other clip is skipped and counted, with
its reason, in the returned report.

Splits (documented choice): the test set is the unseen-speaker split of LipNet (Assael et al. 2016): speakers
s1, s2, s20 and s22, none of whose clips is trained on. Of the other speakers' clips, a fixed 5 % chosen by a
hash of "speaker/clip" (stable across machines, runs and partial downloads) is the validation set; the rest is
the training set. Validation thus measures seen speakers; the test set measures generalisation to new faces.

Zenodo alignment remap (`zenodo_remap=True`): in the Zenodo release the folders of alignments.zip are assigned
to the wrong speakers; the mapping below (folder in the zip -> speaker it belongs to) is copied from lhotse's
GRID recipe, pull request lhotse-speech/lhotse#1502 (ialmajai, 2025: "fix mis-assigned alignment data"), which
reports the Sheffield original as correct. Under this mapping no folder belongs to s20, so s20's clips are
skipped as "no alignment" there. A wrong mapping shows itself as most of a speaker's clips lacking an alignment
(GRID file names encode the sentence, and each speaker has a different set of sentences).
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from avasr.data.manifest import write_manifest
from avasr.errors import AvasrError
from avasr.text import VocabularyError, normalize

ALIGN_UNITS_PER_SECOND = 25000  # GRID align times count 25 kHz audio samples (1000 per 25 fps video frame)
NON_SPEECH_TOKENS = frozenset({"sil", "sp"})
VIDEO_SUFFIX = ".mpg"
AUDIO_SUFFIX = ".wav"
ALIGN_SUFFIX = ".align"
AUDIO_FOLDERS = ("audio_25k", "audio")  # in order of preference
ALIGNMENT_FOLDER = "alignments"
SPEAKER_PATTERN = re.compile(r"^s\d+$")
GRID_TEST_SPEAKERS = ("s1", "s2", "s20", "s22")  # LipNet's unseen-speaker test set
GRID_VAL_PERCENT = 5
SPLITS = ("train", "val", "test")
MANIFEST_NAME = "{split}_manifest.txt"
HASH_BUCKETS = 100

# Zenodo alignments.zip folder -> the speaker whose alignments it really holds (lhotse-speech/lhotse#1502).
ZENODO_ALIGNMENT_SPEAKER = {
    "s1": "s1", "s2": "s2", "s3": "s3", "s4": "s4", "s5": "s6", "s6": "s5", "s7": "s7", "s8": "s8",
    "s9": "s9", "s10": "s13", "s11": "s10", "s12": "s11", "s13": "s12", "s14": "s15", "s15": "s14",
    "s16": "s16", "s17": "s17", "s18": "s19", "s19": "s18", "s20": "s21", "s22": "s23", "s23": "s22",
    "s24": "s24", "s25": "s25", "s26": "s27", "s27": "s26", "s28": "s29", "s29": "s28", "s30": "s30",
    "s31": "s31", "s32": "s33", "s33": "s32", "s34": "s34",
}  # fmt: skip

# Skip reasons, in the order they are checked.
NO_ALIGNMENT = "no alignment"
OUTSIDE_REMAP = "alignment folder not in the Zenodo remap"
MISSING_VIDEO = "missing video"
EMPTY_VIDEO = "empty video (0 bytes)"
MISSING_AUDIO = "missing audio"
NO_WORDS = "alignment has no words"


class CorpusError(AvasrError, ValueError):
    """A corpus folder or file that cannot be imported; the message names the file (and line)."""


@dataclass
class ImportReport:
    """What an importer wrote and what it left out, and why."""

    corpus: str
    manifests: dict[str, Path] = field(default_factory=dict)  # split -> manifest written
    kept: dict[str, int] = field(default_factory=dict)  # split -> utterances in its manifest
    skipped: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # reason -> clips/files

    def skip(self, reason: str, item: str) -> None:
        self.skipped[reason].append(item)

    @property
    def total_kept(self) -> int:
        return sum(self.kept.values())

    @property
    def total_skipped(self) -> int:
        return sum(len(items) for items in self.skipped.values())

    def summary(self, examples: int = 3) -> str:
        lines = [f"{self.corpus}: kept {self.total_kept} utterances, skipped {self.total_skipped}"]
        for split, path in self.manifests.items():
            lines.append(f"  {split}: {self.kept.get(split, 0)} -> {path}")
        for reason, items in sorted(self.skipped.items()):
            shown = ", ".join(items[:examples]) + (", ..." if len(items) > examples else "")
            lines.append(f"  skipped {len(items)}: {reason} (e.g. {shown})")
        return "\n".join(lines)


@dataclass(frozen=True)
class AlignedWord:
    start_s: float
    end_s: float
    word: str


@dataclass(frozen=True)
class GridClip:
    speaker: str  # "s1"
    clip_id: str  # "bbaf2n"
    video: Path
    audio: Path | None  # None: in no audio folder
    alignment: Path | None  # None: no align file for this clip

    @property
    def name(self) -> str:
        return f"{self.speaker}/{self.clip_id}"


def read_alignment(path: str | Path) -> list[AlignedWord]:
    """Parse a GRID `.align` file (`start end word` per line, times in 1/25000 s); errors name file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CorpusError(f"{path}: cannot read alignment: {e}") from None
    words = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 3 or not fields[0].isdigit() or not fields[1].isdigit():
            raise CorpusError(f"{path}:{number}: expected 'start end word' with integer times, got {line!r}")
        start, end = int(fields[0]), int(fields[1])
        if end < start:
            raise CorpusError(f"{path}:{number}: end {end} is before start {start}")
        words.append(AlignedWord(start / ALIGN_UNITS_PER_SECOND, end / ALIGN_UNITS_PER_SECOND, fields[2]))
    return words


def alignment_transcript(words: list[AlignedWord]) -> str:
    """The spoken words, space-separated, without `sil` and `sp`."""
    return " ".join(w.word for w in words if w.word not in NON_SPEECH_TOKENS)


def alignment_folders(root: Path, zenodo_remap: bool) -> tuple[dict[str, Path], list[Path]]:
    """speaker -> its alignment folder, and the alignment folders that belong to no speaker under the remap."""
    base = root / ALIGNMENT_FOLDER
    folders = sorted(p for p in base.iterdir() if _is_speaker_folder(p)) if base.is_dir() else []
    if not zenodo_remap:
        return {p.name: p for p in folders}, []
    owned = {ZENODO_ALIGNMENT_SPEAKER[p.name]: p for p in folders if p.name in ZENODO_ALIGNMENT_SPEAKER}
    return owned, [p for p in folders if p.name not in ZENODO_ALIGNMENT_SPEAKER]


def find_grid_clips(root: str | Path, zenodo_remap: bool = False) -> tuple[list[GridClip], list[Path]]:
    """Every clip that has a video, an audio file or an alignment, and the align files outside the remap."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: GRID root is not a folder")
    aligned, unowned = alignment_folders(root, zenodo_remap)
    audio_roots = [root / name for name in AUDIO_FOLDERS]
    speakers = {p.name for p in root.iterdir() if _is_speaker_folder(p)} | set(aligned)
    speakers |= {p.name for a in audio_roots if a.is_dir() for p in a.iterdir() if _is_speaker_folder(p)}
    if not speakers:
        raise CorpusError(
            f"{root}: no GRID speaker folders (expected s<N>/*{VIDEO_SUFFIX}, "
            f"{ALIGNMENT_FOLDER}/s<N>/*{ALIGN_SUFFIX}, {AUDIO_FOLDERS[0]}/s<N>/*{AUDIO_SUFFIX})"
        )
    clips = []
    for speaker in sorted(speakers, key=_speaker_number):
        alignment_dir = aligned.get(speaker)
        alignments = _files_by_stem(alignment_dir, ALIGN_SUFFIX) if alignment_dir else {}
        videos = _files_by_stem(root / speaker, VIDEO_SUFFIX)
        audios = [_files_by_stem(a / speaker, AUDIO_SUFFIX) for a in audio_roots]
        for clip_id in sorted(set(alignments) | set(videos) | {s for found in audios for s in found}):
            audio = next((found[clip_id] for found in audios if clip_id in found), None)
            video = root / speaker / f"{clip_id}{VIDEO_SUFFIX}"
            clips.append(GridClip(speaker, clip_id, video, audio, alignments.get(clip_id)))
    stray = [f for folder in unowned for f in sorted(folder.glob(f"*{ALIGN_SUFFIX}"))]
    return clips, stray


def grid_split(
    speaker: str, clip_id: str, test_speakers: tuple[str, ...] = GRID_TEST_SPEAKERS, val_percent: int = GRID_VAL_PERCENT
) -> str:
    """ "test" for held-out speakers, else "val" for a stable hash-chosen `val_percent` %, else "train"."""
    if speaker in test_speakers:
        return "test"
    bucket = zlib.crc32(f"{speaker}/{clip_id}".encode("ascii")) % HASH_BUCKETS
    return "val" if bucket < val_percent else "train"


def import_grid(
    root: str | Path,
    out: str | Path,
    *,
    zenodo_remap: bool = False,
    test_speakers: tuple[str, ...] = GRID_TEST_SPEAKERS,
    val_percent: int = GRID_VAL_PERCENT,
) -> ImportReport:
    """Write `<out>/{train,val,test}_manifest.txt` for the GRID corpus under `root`; see the module docstring."""
    if not 0 <= val_percent <= HASH_BUCKETS:
        raise CorpusError(f"val_percent must be in [0, {HASH_BUCKETS}], got {val_percent}")
    clips, stray = find_grid_clips(root, zenodo_remap)
    report = ImportReport("GRID")
    for path in stray:
        report.skip(OUTSIDE_REMAP, f"{path.parent.name}/{path.name}")
    rows: dict[str, list[tuple[Path, Path, str]]] = {split: [] for split in SPLITS}
    for clip in tqdm(clips, desc="GRID clips", unit="clip"):
        problem, transcript = _check_clip(clip)
        if problem:
            report.skip(problem, clip.name)
            continue
        rows[grid_split(clip.speaker, clip.clip_id, test_speakers, val_percent)].append(
            (clip.audio, clip.video, transcript)
        )
    for split in SPLITS:
        report.manifests[split] = write_manifest(Path(out) / MANIFEST_NAME.format(split=split), rows[split])
        report.kept[split] = len(rows[split])
    return report


def _check_clip(clip: GridClip) -> tuple[str | None, str]:
    """(skip reason or None, normalised transcript)."""
    if clip.alignment is None:
        return NO_ALIGNMENT, ""
    if not clip.video.is_file():
        return MISSING_VIDEO, ""
    if clip.video.stat().st_size == 0:
        return EMPTY_VIDEO, ""
    if clip.audio is None:
        return MISSING_AUDIO, ""
    text = alignment_transcript(read_alignment(clip.alignment))
    if not text:
        return NO_WORDS, ""
    try:
        return None, normalize(text, str(clip.alignment))
    except VocabularyError as e:
        raise CorpusError(str(e)) from None  # GRID has 51 plain words: anything else is a damaged file


def _files_by_stem(folder: Path, suffix: str) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in folder.iterdir() if p.suffix == suffix and p.is_file()}


def _is_speaker_folder(path: Path) -> bool:
    return path.is_dir() and SPEAKER_PATTERN.match(path.name) is not None


def _speaker_number(speaker: str) -> int:
    return int(speaker[1:])
