"""Manifests: one utterance per line, `audio_path|video_path|transcript`, paths relative to the manifest's folder.

A line may add `|start|end`: the utterance is then the segment of the clip between those offsets (seconds from the
start of both files), e.g. a part of a long LRS pretrain clip cut at a pause. Importers put the offsets on the
25 fps frame grid, so the audio and the video of a segment begin at the same instant. A three-field line is the
whole clip, as it always was.

Blank lines and lines starting with `#` are skipped. All problems of a manifest are collected and reported together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from avasr.errors import AvasrError
from avasr.text import normalize

FIELD_SEPARATOR = "|"
FIELDS_PER_LINE = 3
FIELDS_PER_SEGMENT_LINE = 5  # audio|video|transcript|start|end


class ManifestError(AvasrError, ValueError):
    """One or more bad lines in a manifest; the message lists each as `file:line: problem`."""

    def __init__(self, path: Path, problems: list[str]):
        self.path = path
        self.problems = problems
        listing = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} bad line(s):\n{listing}")


@dataclass(frozen=True)
class ManifestEntry:
    audio_path: Path  # absolute, normalised (symbolic links are kept as the manifest names them)
    video_path: Path
    transcript: str  # normalised
    where: str  # "manifest.txt:12", for error messages
    segment: tuple[float, float] | None = None  # (start, end) seconds into both files; None: the whole clip

    @property
    def speaker(self) -> str:
        """The audio file's folder: the speaker in the built-in corpus and GRID layouts."""
        return self.audio_path.parent.name

    @property
    def utterance_id(self) -> str:
        """The audio file's stem, made unique by its folder (speakers often reuse names); a segment adds
        `@start-end` ("s1/clip@0.4-1.6")."""
        clip = f"{self.speaker}/{self.audio_path.stem}"
        return f"{clip}@{segment_text(self.segment)}" if self.segment else clip


def format_seconds(seconds: float) -> str:
    """Offsets as manifests write them: at most millisecond precision, no trailing zeros ("0.4", "12", "2.32")."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


def segment_text(segment: tuple[float, float]) -> str:
    """ "0.4-1.6": a segment in ids, cache keys and messages."""
    return "-".join(format_seconds(t) for t in segment)


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    path = Path(path).resolve()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(path, [f"{path}: cannot read: {e}"]) from None
    entries, problems = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{number}"
        try:
            entries.append(_parse_line(line, str(path.parent), where))
        except ValueError as e:
            problems.append(str(e))
    if problems:
        raise ManifestError(path, problems)
    if not entries:
        raise ManifestError(path, [f"{path}: no utterances"])
    return entries


def _parse_line(line: str, root: str, where: str) -> ManifestEntry:
    fields = [f.strip() for f in line.split(FIELD_SEPARATOR)]
    if len(fields) not in (FIELDS_PER_LINE, FIELDS_PER_SEGMENT_LINE):
        raise ValueError(
            f"{where}: expected {FIELDS_PER_LINE} fields 'audio|video|transcript' or {FIELDS_PER_SEGMENT_LINE} "
            f"'audio|video|transcript|start|end', got {len(fields)}"
        )
    audio, video, transcript = fields[:FIELDS_PER_LINE]
    segment = _parse_segment(*fields[FIELDS_PER_LINE:], where) if len(fields) == FIELDS_PER_SEGMENT_LINE else None
    # normpath, not Path.resolve: resolving stats every folder of both paths, seconds for a corpus of 20,000 lines
    audio_path, video_path = (os.path.normpath(os.path.join(root, p)) for p in (audio, video))
    missing = [p for p in (audio_path, video_path) if not os.path.isfile(p)]
    if missing:
        raise ValueError(f"{where}: missing file(s): {', '.join(missing)}")
    text = normalize(transcript, where)  # VocabularyError is a ValueError: collected like the others
    if not text:
        raise ValueError(f"{where}: empty transcript")
    return ManifestEntry(Path(audio_path), Path(video_path), text, where, segment)


def _parse_segment(start: str, end: str, where: str) -> tuple[float, float]:
    try:
        segment = float(start), float(end)
    except ValueError:
        raise ValueError(f"{where}: segment start and end must be seconds, got {start!r} and {end!r}") from None
    if not 0 <= segment[0] < segment[1] < float("inf"):
        raise ValueError(f"{where}: segment must end after it starts (0 <= start < end), got {start} to {end}")
    return segment


def write_manifest(path: str | Path, rows: list[tuple]) -> Path:
    """Write (audio, video, transcript) rows, or (audio, video, transcript, start, end) rows for segments, with
    paths relative to the manifest's folder; atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = path.parent.resolve()
    lines = []
    for audio, video, transcript, *segment in rows:
        text = normalize(transcript, f"row for {audio}")
        rel = [os.path.relpath(Path(p).resolve(), root) for p in (audio, video)]
        lines.append(FIELD_SEPARATOR.join([*rel, text, *map(format_seconds, segment)]))
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
