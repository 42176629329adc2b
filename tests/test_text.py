import jiwer
import pytest

from avasr import text


def test_vocabulary_order_is_documented():
    assert text.VOCAB_SIZE == 29
    assert text.SYMBOLS[:4] == ("<blank>", " ", "'", "a") and text.SYMBOLS[-1] == "z"
    assert text.encode("a b'z") == [3, 1, 4, 2, 28]
    assert text.decode([0, 3, 0, 1, 4, 2, 28]) == "a b'z"


def test_normalize_lowercases_drops_punctuation_and_collapses_space():
    assert text.normalize('  Hello,  "World"!\tIt\'s   FINE; ok: yes? .') == "hello world it's fine ok yes"


@pytest.mark.parametrize("bad", ["caf\u00e9", "one-two", "r2d2", "a_b"])
def test_out_of_vocabulary_characters_name_the_source(bad):
    with pytest.raises(text.VocabularyError, match=r"m\.txt:7: characters outside the vocabulary"):
        text.normalize(bad, "m.txt:7")


@pytest.mark.parametrize("ref,hyp", [("hello world", "hello word"), ("a b c", "a c"), ("bin blue at f", "bin blue")])
def test_seed_helpers_equal_jiwer(ref, hyp):
    assert text.compute_wer(ref, hyp) == jiwer.wer(ref, hyp)
    assert text.compute_cer(ref, hyp) == jiwer.cer(ref, hyp)
