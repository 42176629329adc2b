import jiwer
import pytest

from avasr.metrics import character_error_rate, word_error_rate

REFS = ["bin blue at f two now", "place red by a zero please", "set green in z nine again"]
HYPS = ["bin blue at f two now", "place red a zero pleas", ""]


def test_corpus_rates_equal_jiwer_on_known_pairs():
    assert word_error_rate(REFS, HYPS) == pytest.approx(jiwer.wer(REFS, HYPS))
    assert character_error_rate(REFS, HYPS) == pytest.approx(jiwer.cer(REFS, HYPS))
    # by hand: 0 + (1 deletion + 1 substitution) + 6 deletions over 18 words
    assert word_error_rate(REFS, HYPS) == pytest.approx(8 / 18)


def test_perfect_and_mismatched_inputs():
    assert word_error_rate(REFS, REFS) == 0.0 and character_error_rate(REFS, REFS) == 0.0
    with pytest.raises(ValueError, match="3 references but 2 hypotheses"):
        word_error_rate(REFS, HYPS[:2])
    with pytest.raises(ValueError, match="non-empty"):
        character_error_rate([""], ["a"])
