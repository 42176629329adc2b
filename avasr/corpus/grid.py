"""The GRID audio-visual corpus (Cooke et al. 2006) -> train/val/test manifests.

Two downloads unpack to two layouts under the corpus root; both are read (docs/data.md shows them as trees):

    Zenodo (record 3625687)
    s1/bbaf2n.mpg ...                   video, 75 frames at 25 fps, with its audio track (s1.zip); s21 has none
    audio_25k/s1/bbaf2n.wav ...         25 kHz audio trimmed to the words (audio_25k.zip)
    alignments/s1/bbaf2n.align ...      word alignments (alignments.zip); folders mislabelled, see below

    Sheffield (spandh.dcs.shef.ac.uk/gridcorpus, archives per speaker)
    s1/bbaf2n.mpg ...                   video (s1/video/s1.mpg_vcd.zip)
    s1/align/bbaf2n.align ...           word alignments (s1/align/s1.tar, which holds align/, unpacked in s1/)
    s1/bbaf2n.wav ...                   raw 50 kHz audio, the whole 3 s (s1/audio/s1_50kHz.tar, unpacked in the root)

A speaker's alignments come from s<N>/align/ when that folder exists, else from alignments/s<N>/. An align file
holds `start end word` lines in 1/25000 s; the transcript is its words minus the non-speech tokens `sil` and `sp`.

Audio (`audio=`, `--grid-audio`):
- "auto" (the default): the raw 50 kHz WAV beside the video when there is one, else the video's own audio track,
  which ffmpeg extracts to 16 kHz WAV under `<out>/audio/s<N>/` (as lhotse's GRID recipe takes it). Both last as
  long as the video, and the words sit where the lips say them.
- "mpg": always the video's track. "raw": only raw WAVs (a clip without one is skipped).
- "25k": the audio_25k files. They are trimmed to the words, 1.5-2 s of a 3 s video: used as they are, speech would
  run 0.5-1 s ahead of the lips, and the dataset's duration check refuses such pairs. So each file is put back on
  the video's timeline: written to `<out>/audio_25k_aligned/s<N>/` (25 kHz) with silence before it up to its first
  word's start in the alignment and after it up to the video's end. A file whose length differs from its
  alignment's words (first word's start to last word's end) by more than AUDIO_25K_TOLERANCE_S is skipped: its
  trimming does not follow the alignment, and where it belongs would be a guess.

Videos: each is decoded (OpenCV, `jobs` at a time). One that does not decode, or has other than `frames` frames
(75, the 3 s every GRID video lasts, as LipNet's ports keep; 0 accepts any count), is skipped. Every clip left out
is counted with its reason in the returned report.

Splits (documented choice): the test set is the unseen-speaker split of LipNet (Assael et al. 2016): speakers
s1, s2, s20 and s22, none of whose clips is trained on. A test speaker without one usable utterance is an error, not
a smaller test set: fix the download, or name the test speakers (`test_speakers`, `--test-speakers`). Of the other
speakers' clips, a fixed 5 % chosen by a hash of "speaker/clip" (stable across machines, runs and partial
downloads) is the validation set; the rest is the training set. Validation thus measures seen speakers; the test
set measures generalisation to new faces.

Zenodo alignment remap (`zenodo_remap=True`): in the Zenodo release the folders of alignments.zip are assigned
to the wrong speakers; the mapping below (folder in the zip -> speaker it belongs to) is copied from lhotse's
GRID recipe, pull request lhotse-speech/lhotse#1502 (ialmajai, 2025: "fix mis-assigned alignment data"), which
reports the Sheffield original as correct. Under this mapping no folder belongs to s20, a LipNet test speaker:
take s20's alignments from the Sheffield download (s20/align/, read before alignments/), or name other test
speakers. A wrong mapping shows itself as most of a speaker's clips lacking an alignment (GRID file names encode
the sentence, and each speaker has a different set of sentences).
"""

from __future__ import annotations

import os
import re
import tempfile
import zlib
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf

from avasr.corpus.ffmpeg import extract_audio, in_threads, require_ffmpeg
from avasr.corpus.report import MANIFEST_NAME, CorpusError, ImportReport
from avasr.data.manifest import write_manifest
from avasr.data.video import VideoError, count_frames
from avasr.text import VocabularyError, normalize

ALIGN_UNITS_PER_SECOND = 25000  # GRID align times count 25 kHz audio samples (1000 per 25 fps video frame)
NON_SPEECH_TOKENS = frozenset({"sil", "sp"})
VIDEO_SUFFIX = ".mpg"
AUDIO_SUFFIX = ".wav"
ALIGN_SUFFIX = ".align"
GRID_FPS = 25
GRID_FRAMES = 75  # every GRID video: 3 s at 25 fps
ALIGNMENT_FOLDER = "alignments"  # Zenodo: alignments/s<N>/
SPEAKER_ALIGN_FOLDER = "align"  # Sheffield: s<N>/align/
AUDIO_25K_FOLDER = "audio_25k"
EXTRACTED_FOLDER = "audio"  # <out>/audio/s<N>/<clip>.wav: the video's track, 16 kHz
ALIGNED_25K_FOLDER = "audio_25k_aligned"  # <out>/audio_25k_aligned/s<N>/<clip>.wav: audio_25k on the video's timeline
AUDIO_25K_TOLERANCE_S = 0.1  # an audio_25k file may differ this much from its alignment's words
AUDIO_MODES = ("auto", "mpg", "raw", "25k")
SPEAKER_PATTERN = re.compile(r"^s\d+$")
GRID_TEST_SPEAKERS = ("s1", "s2", "s20", "s22")  # LipNet's unseen-speaker test set
GRID_VAL_PERCENT = 5
SPLITS = ("train", "val", "test")
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
MISSING_RAW_AUDIO = "no raw 50 kHz audio (s<N>/<clip>.wav)"
MISSING_25K_AUDIO = "no audio_25k file"
NO_WORDS = "alignment has no words"
UNDECODABLE_VIDEO = "video does not decode"
WRONG_FRAME_COUNT = "wrong frame count"
AUDIO_25K_MISMATCH = "audio_25k length does not match its alignment's words"
UNREADABLE_AUDIO = "audio file does not read"
EXTRACTION_FAILED = "ffmpeg could not extract the audio"


@dataclass(frozen=True)
class AlignedWord:
    start_s: float
    end_s: float
    word: str


@dataclass(frozen=True)
class GridClip:
    speaker: str  # "s1"
    clip_id: str  # "bbaf2n"
    video: Path  # s<N>/<clip>.mpg, which may not exist
    alignment: Path | None  # None: no align file for this clip
    raw_audio: Path | None = None  # s<N>/<clip>.wav (Sheffield's raw 50 kHz audio)
    audio_25k: Path | None = None  # audio_25k/s<N>/<clip>.wav (trimmed to the words)

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


def spoken(words: list[AlignedWord]) -> list[AlignedWord]:
    """The words without `sil` and `sp`."""
    return [w for w in words if w.word not in NON_SPEECH_TOKENS]


def alignment_transcript(words: list[AlignedWord]) -> str:
    """The spoken words, space-separated, without `sil` and `sp`."""
    return " ".join(w.word for w in spoken(words))


def zenodo_alignment_folders(root: Path, zenodo_remap: bool) -> tuple[dict[str, Path], list[Path]]:
    """speaker -> its folder in alignments/, and the folders there that belong to no speaker under the remap."""
    base = root / ALIGNMENT_FOLDER
    folders = sorted(p for p in base.iterdir() if _is_speaker_folder(p)) if base.is_dir() else []
    if not zenodo_remap:
        return {p.name: p for p in folders}, []
    owned = {ZENODO_ALIGNMENT_SPEAKER[p.name]: p for p in folders if p.name in ZENODO_ALIGNMENT_SPEAKER}
    return owned, [p for p in folders if p.name not in ZENODO_ALIGNMENT_SPEAKER]


def find_grid_clips(root: str | Path, zenodo_remap: bool = False) -> tuple[list[GridClip], list[Path]]:
    """Every clip that has a video or an alignment, and the align files outside the remap."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: GRID root is not a folder")
    zenodo, unowned = zenodo_alignment_folders(root, zenodo_remap)
    speakers = {p.name for p in root.iterdir() if _is_speaker_folder(p)} | set(zenodo)
    if not speakers:
        raise CorpusError(
            f"{root}: no GRID speaker folders (expected s<N>/*{VIDEO_SUFFIX} with s<N>/{SPEAKER_ALIGN_FOLDER}/"
            f"*{ALIGN_SUFFIX} (Sheffield) or {ALIGNMENT_FOLDER}/s<N>/*{ALIGN_SUFFIX} (Zenodo))"
        )
    clips = []
    for speaker in sorted(speakers, key=_speaker_number):
        own = root / speaker / SPEAKER_ALIGN_FOLDER
        alignments = _files_by_stem(own if own.is_dir() else zenodo.get(speaker), ALIGN_SUFFIX)
        videos = _files_by_stem(root / speaker, VIDEO_SUFFIX)
        raw = _files_by_stem(root / speaker, AUDIO_SUFFIX)
        trimmed = _files_by_stem(root / AUDIO_25K_FOLDER / speaker, AUDIO_SUFFIX)
        for clip_id in sorted(set(alignments) | set(videos)):
            video = root / speaker / f"{clip_id}{VIDEO_SUFFIX}"
            clips.append(GridClip(speaker, clip_id, video, alignments.get(clip_id), raw.get(clip_id),
                                  trimmed.get(clip_id)))  # fmt: skip
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
    audio: str = "auto",
    frames: int = GRID_FRAMES,
    zenodo_remap: bool = False,
    test_speakers: tuple[str, ...] = GRID_TEST_SPEAKERS,
    val_percent: int = GRID_VAL_PERCENT,
    jobs: int | None = None,
) -> ImportReport:
    """Write `<out>/{train,val,test}_manifest.txt` for the GRID corpus under `root`; see the module docstring.

    jobs: videos decoded and ffmpeg processes run at once (default: one per CPU core).
    """
    if audio not in AUDIO_MODES:
        raise CorpusError(f"GRID audio must be one of {', '.join(AUDIO_MODES)}, got {audio!r}")
    if not 0 <= val_percent <= HASH_BUCKETS:
        raise CorpusError(f"val_percent must be in [0, {HASH_BUCKETS}], got {val_percent}")
    if frames < 0:
        raise CorpusError(f"frames must be >= 0 (0: any count), got {frames}")
    clips, stray = find_grid_clips(root, zenodo_remap)
    report, reasons = ImportReport("GRID"), {}
    for path in stray:
        report.skip(OUTSIDE_REMAP, f"{path.parent.name}/{path.name}")
    checked = []
    for clip in clips:
        problem, words = _check_clip(clip, audio)
        if problem:
            report.skip(problem, clip.name)
            reasons[clip.name] = problem
        else:
            checked.append((clip, words))
    _require_test_speakers(clips, [clip for clip, _ in checked], reasons, test_speakers)
    ffmpeg = require_ffmpeg() if any(_audio_source(clip, audio) == "mpg" for clip, _ in checked) else ""
    media = partial(_clip_audio, out=Path(out), audio=audio, frames=frames, ffmpeg=ffmpeg)
    rows: dict[str, list[tuple[Path, Path, str]]] = {split: [] for split in SPLITS}
    usable = []
    for (clip, words), (problem, item, wav) in zip(checked, in_threads(media, checked, jobs, "GRID clips")):
        if problem:
            report.skip(problem, item)
            reasons[clip.name] = problem
            continue
        usable.append(clip)
        split = grid_split(clip.speaker, clip.clip_id, test_speakers, val_percent)
        rows[split].append((wav, clip.video, normalize(alignment_transcript(words), str(clip.alignment))))
    _require_test_speakers(clips, usable, reasons, test_speakers)
    for split in SPLITS:
        report.manifests[split] = write_manifest(Path(out) / MANIFEST_NAME.format(split=split), rows[split])
        report.kept[split] = len(rows[split])
    return report


def _check_clip(clip: GridClip, audio: str) -> tuple[str | None, list[AlignedWord]]:
    """(skip reason or None, the alignment's words): what the files' presence and the alignment decide."""
    if clip.alignment is None:
        return NO_ALIGNMENT, []
    if not clip.video.is_file():
        return MISSING_VIDEO, []
    if clip.video.stat().st_size == 0:
        return EMPTY_VIDEO, []
    if audio == "raw" and clip.raw_audio is None:
        return MISSING_RAW_AUDIO, []
    if audio == "25k" and clip.audio_25k is None:
        return MISSING_25K_AUDIO, []
    words = read_alignment(clip.alignment)
    text = alignment_transcript(words)
    if not text:
        return NO_WORDS, []
    try:
        normalize(text, str(clip.alignment))
    except VocabularyError as e:
        raise CorpusError(str(e)) from None  # GRID has 51 plain words: anything else is a damaged file
    return None, words


def _audio_source(clip: GridClip, audio: str) -> str:
    """ "raw", "25k" or "mpg": where a clip's audio comes from under the `audio` mode."""
    if audio == "auto":
        return "raw" if clip.raw_audio is not None else "mpg"
    return audio


def _clip_audio(
    checked: tuple[GridClip, list[AlignedWord]], out: Path, audio: str, frames: int, ffmpeg: str
) -> tuple[str | None, str, Path | None]:
    """Decode the video and make the clip's audio: (skip reason or None, the item to list, the WAV)."""
    clip, words = checked
    try:
        count = count_frames(clip.video)
    except VideoError:
        return UNDECODABLE_VIDEO, clip.name, None
    if frames and count != frames:
        return WRONG_FRAME_COUNT, f"{clip.name} ({count} frames, not {frames})", None
    source = _audio_source(clip, audio)
    if source == "raw":
        return None, "", clip.raw_audio
    if source == "25k":
        wav = out / ALIGNED_25K_FOLDER / clip.speaker / f"{clip.clip_id}{AUDIO_SUFFIX}"
        try:
            mismatch = place_trimmed_audio(clip, spoken(words), count / GRID_FPS, wav)
        except (sf.LibsndfileError, RuntimeError, OSError) as e:
            return UNREADABLE_AUDIO, f"{clip.audio_25k}: {e}", None
        return (AUDIO_25K_MISMATCH, f"{clip.name} ({mismatch})", None) if mismatch else (None, "", wav)
    wav = out / EXTRACTED_FOLDER / clip.speaker / f"{clip.clip_id}{AUDIO_SUFFIX}"
    try:
        extract_audio(clip.video, wav, ffmpeg)
    except CorpusError as e:
        return EXTRACTION_FAILED, str(e), None
    return None, "", wav


def place_trimmed_audio(clip: GridClip, words: list[AlignedWord], video_seconds: float, wav: Path) -> str:
    """Write the clip's audio_25k file (the words only) into `wav` on the video's timeline: silence, the file from
    the first spoken word's start, silence to `video_seconds`. Returns "" when written (or still newer than the
    file and the alignment), else why not ("audio 1.50 s, words 2.00 s"): the file's length differs from the words'
    by more than AUDIO_25K_TOLERANCE_S."""
    info = sf.info(str(clip.audio_25k))
    start, end = words[0].start_s, words[-1].end_s
    if abs(info.frames / info.samplerate - (end - start)) > AUDIO_25K_TOLERANCE_S:
        return f"audio {info.frames / info.samplerate:.2f} s, words {end - start:.2f} s"
    if wav.is_file() and all(wav.stat().st_mtime_ns > p.stat().st_mtime_ns for p in (clip.audio_25k, clip.alignment)):
        return ""
    samples, rate = sf.read(clip.audio_25k, dtype="float32", always_2d=True)  # (N, channels)
    total, lead = round(video_seconds * rate), round(start * rate)
    placed = np.zeros((total, samples.shape[1]), dtype=np.float32)
    placed[lead : lead + len(samples)] = samples[: total - lead]
    wav.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=wav.parent, prefix=".tmp-", suffix=AUDIO_SUFFIX)
    os.close(fd)
    try:
        sf.write(tmp, placed, rate, subtype="PCM_16")
        os.replace(tmp, wav)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return ""


def _require_test_speakers(
    clips: list[GridClip], usable: list[GridClip], reasons: dict[str, str], test_speakers: tuple[str, ...]
) -> None:
    """CorpusError for the first test speaker left without a usable clip, with what became of its clips."""
    have = {clip.speaker for clip in usable}
    for speaker in test_speakers:
        if speaker in have:
            continue
        theirs = [clip for clip in clips if clip.speaker == speaker]
        counts = Counter(reasons.get(clip.name, "unusable") for clip in theirs).most_common()
        plural = "s" if len(theirs) != 1 else ""
        detail = f"{len(theirs)} clip{plural}: " + ", ".join(f"{n} {why}" for why, n in counts)
        raise CorpusError(
            f"test speaker {speaker} has no usable utterance ({detail if theirs else 'no clip in the download'}); a "
            f"test set without it is not the split asked for: fix the download, or name the test speakers "
            f"(--test-speakers)"
        )


def _files_by_stem(folder: Path | None, suffix: str) -> dict[str, Path]:
    if folder is None or not folder.is_dir():
        return {}
    return {p.stem: p for p in folder.iterdir() if p.suffix == suffix and p.is_file()}


def _is_speaker_folder(path: Path) -> bool:
    return path.is_dir() and SPEAKER_PATTERN.match(path.name) is not None


def _speaker_number(speaker: str) -> int:
    return int(speaker[1:])
