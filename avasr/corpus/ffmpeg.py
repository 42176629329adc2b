"""Audio tracks out of video files with ffmpeg, many at once: what the GRID and LRS importers extract.

ffmpeg (Debian package, installed by `make setup`) writes 16 kHz mono 16-bit WAV, the model's rate, so features
need no resampling. A WAV newer than its video is reused; one is written under a temporary name and renamed, so an
interrupted import leaves no truncated WAV that looks finished.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from avasr.corpus.report import CorpusError

FFMPEG = "ffmpeg"
SETUP_HINT = "run `make setup` (it installs the Debian package ffmpeg)"
EXTRACTED_SAMPLE_RATE = 16000  # the model's rate (Config.sample_rate): no resampling when features are made

Item = TypeVar("Item")
Result = TypeVar("Result")


def require_ffmpeg() -> str:
    """The path of ffmpeg, or a CorpusError that says how to install it."""
    path = shutil.which(FFMPEG)
    if path is None:
        raise CorpusError(f"{FFMPEG} not found on PATH; it extracts the audio of the videos: {SETUP_HINT}")
    return path


def extract_audio(video: Path, wav: Path, ffmpeg: str = FFMPEG, sample_rate: int = EXTRACTED_SAMPLE_RATE) -> bool:
    """Write `video`'s audio to `wav` as mono 16-bit PCM at `sample_rate`, unless a newer `wav` is already there.

    Returns True when ffmpeg ran. Raises CorpusError with ffmpeg's message when it fails.
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


def in_threads(work: Callable[[Item], Result], items: Sequence[Item], jobs: int | None, desc: str) -> Iterator[Result]:
    """work(item) for every item, in order, `jobs` at a time (default: one per CPU core). Threads suffice: the work
    is ffmpeg processes and OpenCV decoding, which run outside the GIL."""
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        yield from tqdm(pool.map(work, items), total=len(items), desc=desc, unit="clip")
