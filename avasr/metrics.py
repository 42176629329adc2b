"""Corpus-level error rates (total edits / total reference words or characters), computed by jiwer."""

from __future__ import annotations

from collections.abc import Sequence

import jiwer


def _check(references: Sequence[str], hypotheses: Sequence[str]) -> None:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references or any(not r.strip() for r in references):
        raise ValueError("every reference must be a non-empty transcript")


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    _check(references, hypotheses)
    return float(jiwer.wer(list(references), list(hypotheses)))


def character_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    _check(references, hypotheses)
    return float(jiwer.cer(list(references), list(hypotheses)))


# --- per utterance: the raw material of confidence intervals and paired tests ----------------------------------
ERROR_FIELDS = ("utterance", "speaker", "ref_words", "word_errors", "ref_chars", "char_errors")


def utterance_errors(
    ids: Sequence[str], speakers: Sequence[str], references: Sequence[str], hypotheses: Sequence[str]
) -> list[dict]:
    """One row per utterance (ERROR_FIELDS): its reference length and edit count in words and in characters.
    Summed over rows, word_errors / ref_words is exactly `word_error_rate` of the same lists (jiwer aligns each
    utterance on its own in both)."""
    _check(references, hypotheses)
    rows = []
    for uid, speaker, ref, hyp in zip(ids, speakers, references, hypotheses, strict=True):
        words, chars = jiwer.process_words(ref, hyp), jiwer.process_characters(ref, hyp)
        rows.append(
            {
                "utterance": uid,
                "speaker": speaker,
                "ref_words": len(ref.split()),
                "word_errors": words.substitutions + words.deletions + words.insertions,
                "ref_chars": len(ref),
                "char_errors": chars.substitutions + chars.deletions + chars.insertions,
            }
        )
    return rows
