"""What an importer wrote and what it left out, and why; the error it raises on input it cannot import."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from avasr.errors import AvasrError

MANIFEST_NAME = "{split}_manifest.txt"


class CorpusError(AvasrError, ValueError):
    """A corpus folder or file that cannot be imported; the message names the file (and line)."""


@dataclass
class ImportReport:
    """Manifests written, utterances kept per split, clips skipped per reason, and notes on what the splits mean."""

    corpus: str
    manifests: dict[str, Path] = field(default_factory=dict)  # split -> manifest written
    kept: dict[str, int] = field(default_factory=dict)  # split -> utterances in its manifest
    skipped: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # reason -> clips/files
    notes: list[str] = field(default_factory=list)  # printed after the counts

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
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)
