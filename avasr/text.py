"""Character vocabulary, transcript normalisation and the original's per-utterance WER/CER helpers.

Vocabulary (29 symbols, index = position):

    0 <blank>   1 ' ' (space)   2 "'" (apostrophe)   3..28 'a'..'z'

The CTC blank is index 0 so that `nn.CTCLoss(blank=0)` and the decoders agree without configuration.
"""

from __future__ import annotations

import re
import string

import jiwer

from avasr.errors import AvasrError

BLANK = "<blank>"
BLANK_ID = 0
SPACE = " "
APOSTROPHE = "'"
SYMBOLS: tuple[str, ...] = (BLANK, SPACE, APOSTROPHE, *string.ascii_lowercase)
VOCAB_SIZE = len(SYMBOLS)  # 29

# Punctuation that carries no sound: dropped by normalisation. Anything else outside the vocabulary is an error.
DROPPED_PUNCTUATION = '.,!?;:"'

_CHAR_TO_ID = {c: i for i, c in enumerate(SYMBOLS) if i != BLANK_ID}
_DROP_TABLE = str.maketrans("", "", DROPPED_PUNCTUATION)
_WHITESPACE = re.compile(r"\s+")


class VocabularyError(AvasrError, ValueError):
    """A transcript holds characters the model cannot emit. The message names where it came from."""


def normalize(text: str, where: str = "<text>") -> str:
    """Lowercase, drop `. , ! ? ; : "`, collapse whitespace; refuse any other out-of-vocabulary character.

    `where` names the source in the error, e.g. "train_manifest.txt:12".
    """
    cleaned = _WHITESPACE.sub(" ", text.lower().translate(_DROP_TABLE)).strip()
    bad = sorted({c for c in cleaned if c not in _CHAR_TO_ID})
    if bad:
        raise VocabularyError(
            f"{where}: characters outside the vocabulary {bad!r} in transcript {text!r} "
            f"(allowed: a-z, space, apostrophe; dropped: {DROPPED_PUNCTUATION})"
        )
    return cleaned


def encode(text: str) -> list[int]:
    """Normalised text -> label ids (never contains the blank)."""
    try:
        return [_CHAR_TO_ID[c] for c in text]
    except KeyError as e:
        raise VocabularyError(f"cannot encode {text!r}: {e.args[0]!r} is not in the vocabulary") from None


def decode(ids) -> str:
    """Label ids -> text; blanks are skipped (no CTC collapsing: see avasr.decode for that)."""
    return "".join(SYMBOLS[i] for i in ids if i != BLANK_ID)


def compute_wer(reference: str, hypothesis: str) -> float:
    """Word error rate of one utterance (the original's helper); corpus-level WER lives in avasr.metrics."""
    return jiwer.wer(reference, hypothesis) if reference else float(bool(hypothesis))


def compute_cer(reference: str, hypothesis: str) -> float:
    """Character error rate of one utterance (the original's helper)."""
    return jiwer.cer(reference, hypothesis) if reference else float(bool(hypothesis))
