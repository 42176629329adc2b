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
