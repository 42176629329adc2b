"""A corpus folder's evaluation splits, from its corpus.json: which manifest holds which speakers.

The built-in corpus lists its manifests in corpus.json (`manifests`: split name -> file, `split_meaning`: what is
new to the model in each); an imported corpus has no corpus.json and is evaluated on its val and test manifests.
"""

import json
from pathlib import Path

from avasr.corpus.report import CorpusError

DESCRIPTION = "corpus.json"
TRAIN, VAL, HARDEST = "train", "val", "test"  # HARDEST: the built-in corpus's held-out engine and faces
SHORT_NAMES = {"val": "val", "test_unseen_voice": "unseen voice", "test_unseen_face": "unseen face", "test": "test"}


def _manifests(folder: Path) -> dict[str, Path] | None:
    description = folder / DESCRIPTION
    if not description.is_file():
        return None
    try:
        manifests = json.loads(description.read_text(encoding="utf-8"))["manifests"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CorpusError(f"{description}: cannot read its `manifests`: {e!r}") from None
    return {name: folder / file for name, file in manifests.items()}


def evaluation_splits(folder: str | Path) -> dict[str, Path]:
    """Split name -> manifest for every split but train, in corpus.json's order (val first, the hardest last);
    without corpus.json, val_manifest.txt and test_manifest.txt."""
    folder = Path(folder)
    manifests = _manifests(folder)
    if manifests is None:
        return {VAL: folder / "val_manifest.txt", HARDEST: folder / "test_manifest.txt"}
    return {name: path for name, path in manifests.items() if name != TRAIN}


def other_test_splits(test_manifest: str | Path) -> dict[str, Path]:
    """The other test splits of the corpus `test_manifest` belongs to (name -> manifest): e.g. for the built-in
    corpus's test_manifest.txt, its unseen-voice and unseen-face manifests. Empty for a manifest of no built-in
    corpus."""
    test_manifest = Path(test_manifest).resolve()
    manifests = _manifests(test_manifest.parent) or {}
    if test_manifest not in {p.resolve() for p in manifests.values()}:
        return {}
    return {
        name: path
        for name, path in manifests.items()
        if name not in (TRAIN, VAL) and path.resolve() != test_manifest and path.is_file()
    }
