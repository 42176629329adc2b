import pytest
import torch

from avasr.config import DECODERS
from avasr.decode import Lexicon, LexiconError, beam_search_decode, decode, greedy_decode
from avasr.text import BLANK, BLANK_ID, SYMBOLS, VOCAB_SIZE

PEAK = 0.97  # probability of the intended symbol on a "sharp" frame


def frame(spec: str | dict[str, float]) -> list[float]:
    """Probabilities of one frame: a symbol ("_" = blank) at PEAK, or {symbol: prob}; the rest shared evenly."""
    chosen = {spec: PEAK} if isinstance(spec, str) else spec
    chosen = {BLANK if s == "_" else s: p for s, p in chosen.items()}
    rest = (1.0 - sum(chosen.values())) / (VOCAB_SIZE - len(chosen))
    return [chosen.get(symbol, rest) for symbol in SYMBOLS]


def utterance(*frames) -> torch.Tensor:
    """log_probs shape = (T, C) from frame specs; a plain string spells one sharp frame per character."""
    rows = []
    for spec in frames:
        rows.extend(frame(c) for c in spec) if isinstance(spec, str) else rows.append(frame(spec))
    return torch.tensor(rows).log()


def batch(*utterances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad with sharp blanks to a batch: log_probs shape = (B, T, C), lengths shape = (B,)."""
    frames = max(u.shape[0] for u in utterances)
    blank = utterance("_")
    padded = [torch.cat([u, blank.expand(frames - u.shape[0], -1)]) for u in utterances]
    return torch.stack(padded), torch.tensor([u.shape[0] for u in utterances])


# --- greedy ---------------------------------------------------------------------------------------------------------
def test_greedy_collapses_repeats_and_keeps_blank_separated_ones():
    log_probs, lengths = batch(utterance("hhee_ll_lo"), utterance("_aa b__bb"), utterance("ll"))
    assert greedy_decode(log_probs, lengths) == ["hello", "a bb", "l"]


def test_greedy_ignores_frames_beyond_length():
    log_probs = utterance("cat_s dog").unsqueeze(0).repeat(2, 1, 1)
    assert greedy_decode(log_probs, torch.tensor([3, 9])) == ["cat", "cats dog"]
    assert greedy_decode(log_probs, torch.tensor([0, 5])) == ["", "cats"]


# --- beam search ------------------------------------------------------------------------------------------------------
def random_peaked(seed: int, batch_size: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One dominant symbol per frame (blank 30% of the time), random logits elsewhere; random lengths."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(1, VOCAB_SIZE, (batch_size, frames), generator=generator)
    labels[torch.rand(batch_size, frames, generator=generator) < 0.3] = BLANK_ID
    logits = torch.randn(batch_size, frames, VOCAB_SIZE, generator=generator)
    logits.scatter_(2, labels.unsqueeze(2), 10.0)
    lengths = torch.randint(0, frames + 1, (batch_size,), generator=generator)
    lengths[0] = frames
    return logits.log_softmax(dim=2), lengths


@pytest.mark.parametrize("frames", [1, 7, 40, 75])
def test_beam_equals_greedy_on_peaked_distributions(frames):
    for seed in range(20):
        log_probs, lengths = random_peaked(seed, batch_size=4, frames=frames)
        expected = greedy_decode(log_probs, lengths)
        assert beam_search_decode(log_probs, lengths, beam_size=5) == expected, f"seed {seed}"
        if frames == 75:
            assert len(expected[0]) > 20  # a real transcript, not a trivially empty one


def test_beam_finds_the_most_probable_labelling_that_greedy_misses():
    # Each of the last two frames: blank 0.4, "a" 0.35. Best path "c__" -> "c" (0.16 after the "c" frame), but
    # "ca" sums the paths "caa", "ca_", "c_a": 0.35^2 + 2 * 0.35 * 0.4 = 0.4025.
    spread = {"_": 0.4, "a": 0.35}
    log_probs, lengths = batch(utterance("c", spread, spread), utterance("xy"))
    assert greedy_decode(log_probs, lengths) == ["c", "xy"]
    assert beam_search_decode(log_probs, lengths, beam_size=5) == ["ca", "xy"]


def test_beam_accepts_a_zero_length_utterance_and_a_tensor_that_requires_grad():
    log_probs, lengths = batch(utterance("ab"), utterance("cd"))
    log_probs.requires_grad_(True)
    assert beam_search_decode(log_probs, torch.tensor([0, 2])) == ["", "cd"]


def test_bad_inputs_are_refused_with_a_clear_message():
    log_probs, lengths = batch(utterance("ab"))
    with pytest.raises(ValueError, match=r"shape \(B, T, 29\)"):
        greedy_decode(log_probs[..., :28], lengths)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 2\]"):
        beam_search_decode(log_probs, torch.tensor([3]))
    with pytest.raises(ValueError, match=r"lengths must have shape \(1,\)"):
        greedy_decode(log_probs, torch.tensor([2, 2]))
    with pytest.raises(ValueError, match="beam_size must be at least 1"):
        beam_search_decode(log_probs, lengths, beam_size=0)


# --- lexicon ----------------------------------------------------------------------------------------------------------
GRID_LIKE_WORDS = ["bin", "blue", "place", "lay", "at", "don't"]


def test_lexicon_turns_non_words_into_the_valid_word_sequence():
    log_probs, lengths = batch(
        utterance("bi", {"m": 0.55, "n": 0.4}, "_ bl", {"o": 0.5, "u": 0.45}, "e"),
        utterance("plac", {"_": 0.7, "e": 0.25}),
        utterance("don", {"'": 0.3, "_": 0.6}, "t"),
        utterance("bi", {" ": 0.5, "n": 0.45}, " at"),  # a space may not end the unfinished word "bi"
    )
    assert beam_search_decode(log_probs, lengths, beam_size=5) == ["bim bloe", "plac", "dont", "bi at"]
    lexicon = Lexicon(GRID_LIKE_WORDS)
    expected = ["bin blue", "place", "don't", "bin at"]
    assert beam_search_decode(log_probs, lengths, beam_size=5, lexicon=lexicon) == expected


def test_lexicon_cuts_an_unfinished_word_at_the_end():
    # With one beam only "bin bl" survives; "bl" is no word, so the output keeps the complete words.
    log_probs, lengths = batch(utterance("bin bl"))
    assert beam_search_decode(log_probs, lengths, beam_size=1, lexicon=Lexicon(GRID_LIKE_WORDS)) == ["bin"]


def test_lexicon_normalises_words_and_reads_a_file(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("Bin\n\n  BLUE.\ndon't\n")
    lexicon = Lexicon.from_file(path)
    assert lexicon.words == {"bin", "blue", "don't"}
    assert len(lexicon) == 3 and "blue" in lexicon and "blu" not in lexicon


def test_lexicon_file_errors_name_every_bad_line(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("bin\nna\u00efve\nblue\nset 7\nlay green\n")
    with pytest.raises(LexiconError) as error:
        Lexicon.from_file(path)
    message = str(error.value)
    assert f"{path}:2" in message and "'ï'" in message
    assert f"{path}:4" in message and "'7'" in message
    assert f"{path}:5" in message and "more than one word" in message
    assert f"{path}:1" not in message and f"{path}:3" not in message


def test_empty_lexicon_is_refused(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("\n\n")
    with pytest.raises(LexiconError, match="no words"):
        Lexicon.from_file(path)
    with pytest.raises(LexiconError, match="at least one word"):
        Lexicon([])


# --- dispatch ---------------------------------------------------------------------------------------------------------
def test_decode_dispatches_on_the_decoder_name():
    spread = {"_": 0.4, "a": 0.35}
    log_probs, lengths = batch(utterance("c", spread, spread))
    assert DECODERS == ("greedy", "beam")
    assert decode(log_probs, lengths) == ["c"]
    assert decode(log_probs, lengths, decoder="greedy") == ["c"]
    assert decode(log_probs, lengths, decoder="beam", beam_size=5) == ["ca"]


def test_decode_refuses_unknown_decoders_and_a_lexicon_without_beam():
    log_probs, lengths = batch(utterance("ab"))
    with pytest.raises(ValueError, match="unknown decoder 'viterbi'; valid decoders: greedy, beam"):
        decode(log_probs, lengths, decoder="viterbi")
    with pytest.raises(ValueError, match="a lexicon needs decoder='beam'"):
        decode(log_probs, lengths, decoder="greedy", lexicon=Lexicon(["ab"]))
    assert decode(log_probs, lengths, decoder="beam", lexicon=Lexicon(["ab"])) == ["ab"]
