"""LRS2 / LRS3 (lip reading sentences, BBC / TED) -> one manifest per split folder, audio extracted by ffmpeg.

Layout under the corpus root:

    <split>/<video_id>/<NNNNN>.mp4    face track, 25 fps, with its audio
    <split>/<video_id>/<NNNNN>.txt    ISO-8859-1; first line `Text:  THE TRANSCRIPT`, then `Conf:`, word timings

Splits are the folder names: LRS3 has pretrain/, trainval/ and test/; LRS2 has main/ and pretrain/ (LRS2's
train/val/test list files are not applied: `main` comes out as one split). Each split gets
`<out>/<split>_manifest.txt`.

Transcripts: tags such as `{LG}` (laughter) or `{NS}` (noise) are removed, then `avasr.text.normalize` is applied.
A transcript with characters outside the 29-symbol vocabulary (digits, accented letters, ...) is skipped and
counted, and its file named in the report: one odd clip in 100 000 must not stop an import. A `.txt` without a
`Text:` line is an error that names the file: it means the folder is not an LRS corpus.

Audio: ffmpeg (Debian package, installed by `make setup`) extracts 16 kHz mono 16-bit WAV into
`<out>/audio/<split>/<video_id>/<NNNNN>.wav`; a cached WAV newer than its MP4 is reused.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from avasr.corpus.grid import MANIFEST_NAME, CorpusError, ImportReport
from avasr.data.manifest import write_manifest
from avasr.text import VocabularyError, normalize

TEXT_PREFIX = "Text:"
TRANSCRIPT_ENCODING = "iso-8859-1"
TAG_PATTERN = re.compile(r"\{[^{}]*\}")  # {LG}, {NS}, ...
VIDEO_SUFFIX = ".mp4"
TEXT_SUFFIX = ".txt"
EXTRACTED_SAMPLE_RATE = 16000  # the model's rate (Config.sample_rate): no resampling when features are made
AUDIO_CACHE_FOLDER = "audio"
FFMPEG = "ffmpeg"
SETUP_HINT = "run `make setup` (it installs the Debian package ffmpeg)"

# Skip reasons.
NO_TRANSCRIPT = "no transcript (.txt)"
NO_VIDEO = "no video (.mp4)"
EMPTY_VIDEO = "empty video (0 bytes)"
OUT_OF_VOCABULARY = "characters outside the vocabulary"
EMPTY_TRANSCRIPT = "empty transcript"
EXTRACTION_FAILED = "ffmpeg could not extract the audio"


@dataclass(frozen=True)
class LrsClip:
    split: str  # "trainval"
    video: Path  # <root>/<split>/<video_id>/<NNNNN>.mp4
    transcript: str  # normalised

    @property
    def name(self) -> str:
        """ "<split>/<video_id>/<NNNNN>", unique within the corpus."""
        return f"{self.split}/{self.video.parent.name}/{self.video.stem}"


def read_lrs_transcript(path: str | Path) -> str:
    """The text after `Text:` on the first line that has it, tags like `{LG}` removed (not yet normalised)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding=TRANSCRIPT_ENCODING).splitlines()
    except OSError as e:
        raise CorpusError(f"{path}: cannot read transcript: {e}") from None
    for line in lines:
        if line.startswith(TEXT_PREFIX):
            return TAG_PATTERN.sub(" ", line[len(TEXT_PREFIX) :]).strip()
    raise CorpusError(f"{path}: no '{TEXT_PREFIX}' line: not an LRS2/LRS3 transcript")


def find_splits(root: str | Path) -> list[Path]:
    """The split folders: those holding `<video_id>/*.mp4` or `<video_id>/*.txt`."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: LRS root is not a folder")
    splits = [p for p in sorted(root.iterdir()) if p.is_dir() and (_holds(p, VIDEO_SUFFIX) or _holds(p, TEXT_SUFFIX))]
    if not splits:
        raise CorpusError(f"{root}: no split folders with <video_id>/<NNNNN>{VIDEO_SUFFIX} (e.g. trainval/, test/)")
    return splits


def scan_split(split_dir: Path, report: ImportReport) -> list[LrsClip]:
    """The usable clips of one split folder; the others are recorded in `report` with their reason."""
    videos = {p.with_suffix(""): p for p in split_dir.glob(f"*/*{VIDEO_SUFFIX}")}
    texts = {p.with_suffix(""): p for p in split_dir.glob(f"*/*{TEXT_SUFFIX}")}
    clips = []
    for stem in sorted(videos.keys() | texts.keys()):
        name = f"{split_dir.name}/{stem.parent.name}/{stem.name}"
        if stem not in texts:
            report.skip(NO_TRANSCRIPT, name)
            continue
        if stem not in videos:
            report.skip(NO_VIDEO, name)
            continue
        if videos[stem].stat().st_size == 0:
            report.skip(EMPTY_VIDEO, name)
            continue
        try:
            text = normalize(read_lrs_transcript(texts[stem]), str(texts[stem]))
        except VocabularyError:
            report.skip(OUT_OF_VOCABULARY, str(texts[stem]))
            continue
        if not text:
            report.skip(EMPTY_TRANSCRIPT, str(texts[stem]))
            continue
        clips.append(LrsClip(split_dir.name, videos[stem], text))
    return clips


def require_ffmpeg() -> str:
    """The path of ffmpeg, or a CorpusError that says how to install it."""
    path = shutil.which(FFMPEG)
    if path is None:
        raise CorpusError(f"{FFMPEG} not found on PATH; it extracts the audio of LRS videos: {SETUP_HINT}")
    return path


def extract_audio(video: Path, wav: Path, ffmpeg: str = FFMPEG, sample_rate: int = EXTRACTED_SAMPLE_RATE) -> bool:
    """Write `video`'s audio to `wav` as mono 16-bit PCM at `sample_rate`, unless a newer `wav` is already there.

    Returns True when ffmpeg ran. Written to a temporary name then renamed, so an interrupted run leaves no
    truncated WAV that looks cached. Raises CorpusError with ffmpeg's message when it fails.
    """
    if wav.is_file() and wav.stat().st_mtime_ns > video.stat().st_mtime_ns:
        return False
    wav.parent.mkdir(parents=True, exist_ok=True)
    partial = wav.with_name(wav.name + ".partial")
    command = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(video), "-vn"]
    command += ["-ac", "1", "-ar", str(sample_rate), "-c:a", "pcm_s16le", "-f", "wav", str(partial)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        message = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}"
        raise CorpusError(f"{video}: {message}")
    os.replace(partial, wav)
    return True


def cached_wav(out: Path, clip: LrsClip) -> Path:
    return out / AUDIO_CACHE_FOLDER / clip.split / clip.video.parent.name / f"{clip.video.stem}.wav"


def import_lrs(
    root: str | Path,
    out: str | Path,
    *,
    jobs: int | None = None,
    sample_rate: int = EXTRACTED_SAMPLE_RATE,
    corpus: str = "LRS",
) -> ImportReport:
    """Write `<out>/<split>_manifest.txt` for every split folder of an LRS2/LRS3 root; see the module docstring.

    jobs: parallel ffmpeg processes (default: one per CPU core).
    """
    ffmpeg = require_ffmpeg()
    out = Path(out)
    report = ImportReport(corpus)
    clips_by_split = {split_dir.name: scan_split(split_dir, report) for split_dir in find_splits(root)}
    clips = [clip for split_clips in clips_by_split.values() for clip in split_clips]
    failed = _extract_all(clips, out, ffmpeg, sample_rate, jobs or os.cpu_count() or 1, report)
    for split, split_clips in clips_by_split.items():
        rows = [(cached_wav(out, c), c.video, c.transcript) for c in split_clips if c.name not in failed]
        report.manifests[split] = write_manifest(out / MANIFEST_NAME.format(split=split), rows)
        report.kept[split] = len(rows)
    return report


def _extract_all(
    clips: list[LrsClip], out: Path, ffmpeg: str, sample_rate: int, jobs: int, report: ImportReport
) -> set[str]:
    """Extract every clip's audio in parallel (ffmpeg runs outside the GIL); the names of the clips that failed."""

    def extract(clip: LrsClip) -> str | None:
        try:
            extract_audio(clip.video, cached_wav(out, clip), ffmpeg, sample_rate)
            return None
        except CorpusError as e:
            return str(e)

    failed = set()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        outcomes = tqdm(pool.map(extract, clips), total=len(clips), desc="extracting audio", unit="clip")
        for clip, problem in zip(clips, outcomes):
            if problem is not None:
                report.skip(EXTRACTION_FAILED, problem)
                failed.add(clip.name)
    return failed


def _holds(split_dir: Path, suffix: str) -> bool:
    return any(split_dir.glob(f"*/*{suffix}"))
