"""Manifests: one utterance per line, `audio_path|video_path|transcript`, paths relative to the manifest's folder.

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

    @property
    def speaker(self) -> str:
        """The audio file's folder: the speaker in the built-in corpus and GRID layouts."""
        return self.audio_path.parent.name

    @property
    def utterance_id(self) -> str:
        """The audio file's stem, made unique by its folder (speakers often reuse names)."""
        return f"{self.speaker}/{self.audio_path.stem}"


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
    fields = line.split(FIELD_SEPARATOR)
    if len(fields) != FIELDS_PER_LINE:
        raise ValueError(f"{where}: expected {FIELDS_PER_LINE} fields 'audio|video|transcript', got {len(fields)}")
    audio, video, transcript = (f.strip() for f in fields)
    # normpath, not Path.resolve: resolving stats every folder of both paths, seconds for a corpus of 20,000 lines
    audio_path, video_path = (os.path.normpath(os.path.join(root, p)) for p in (audio, video))
    missing = [p for p in (audio_path, video_path) if not os.path.isfile(p)]
    if missing:
        raise ValueError(f"{where}: missing file(s): {', '.join(missing)}")
    text = normalize(transcript, where)  # VocabularyError is a ValueError: collected like the others
    if not text:
        raise ValueError(f"{where}: empty transcript")
    return ManifestEntry(Path(audio_path), Path(video_path), text, where)


def write_manifest(path: str | Path, rows: list[tuple[str | Path, str | Path, str]]) -> Path:
    """Write (audio, video, transcript) rows with paths relative to the manifest's folder; atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = path.parent.resolve()
    lines = []
    for audio, video, transcript in rows:
        text = normalize(transcript, f"row for {audio}")
        rel = [os.path.relpath(Path(p).resolve(), root) for p in (audio, video)]
        lines.append(FIELD_SEPARATOR.join([*rel, text]))
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
