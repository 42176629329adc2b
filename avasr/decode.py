"""CTC decoding: greedy (best path) and prefix beam search, optionally restricted to a word list.

Why a pure-Python/PyTorch implementation and not torchaudio's `ctc_decoder`: that one needs the compiled
`flashlight-text` package, and its lexicon mode wants a KenLM model plus token and lexicon files in its own layout.
Our vocabulary has 29 characters and utterances are a few seconds (75 frames at 25 Hz for GRID), so a readable
prefix beam search decodes a batch in tens of milliseconds, with no extra dependency and nothing to keep in sync.

The beam search follows Hannun et al. 2014 ("First-pass large vocabulary continuous speech recognition using
bi-directional recurrent DNNs") / Graves 2012: each prefix carries two probabilities, of its paths ending in a
blank and of those ending in its last label, so that "aa" (a repeat) and "a_a" (two labels) are told apart.
Everything is in log space. Per frame only the few most probable labels may extend a prefix; the blank and the
repeat of a prefix's own last label are always scored, from the full distribution.

A `Lexicon` restricts the search to sequences of its words: a prefix may only grow so that its current (partial)
word is a prefix of a lexicon word, and a space, or the end of the utterance, only follows a complete word.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from avasr.config import DECODERS
from avasr.errors import AvasrError
from avasr.text import BLANK_ID, SYMBOLS, VOCAB_SIZE, VocabularyError, encode, normalize
from avasr.text import decode as ids_to_text

SPACE_ID = SYMBOLS.index(" ")
TOKENS_PER_FRAME = 8  # labels (besides the blank) that may extend a prefix at one frame: the most probable ones ...
MIN_TOKEN_LOG_PROB = math.log(1e-5)  # ... and only if at least this probable; a sharp frame offers one or two
NEG_INF = float("-inf")

Prefix = tuple[int, ...]  # label ids, no blanks: a candidate transcript


class LexiconError(AvasrError, ValueError):
    """A bad word list; the message lists each problem as `file:line: problem`."""


# --- lexicon -------------------------------------------------------------------------------------------------------
@dataclass
class _TrieNode:
    children: dict[int, _TrieNode] = field(default_factory=dict)
    is_word: bool = False  # the path from the root to here spells a complete lexicon word


class Lexicon:
    """A set of words stored as a prefix trie over label ids, for restricting beam search."""

    def __init__(self, words: Iterable[str], where: Sequence[str] | None = None):
        """words are normalised like transcripts; where[i], if given, names word i's source in errors (file:line).

        All bad words are reported together.
        """
        words = list(words)
        where = list(where) if where is not None else [f"word {n}" for n in range(1, len(words) + 1)]
        if len(where) != len(words):
            raise ValueError(f"where names {len(where)} sources for {len(words)} words")
        self.root = _TrieNode()
        self._words: set[str] = set()
        problems = []
        for word, source in zip(words, where):
            try:
                self._add(word, source)
            except LexiconError as e:
                problems.append(str(e))
        if problems:
            raise LexiconError(f"{len(problems)} bad word(s) in lexicon:\n" + "\n".join(f"  {p}" for p in problems))
        if not self._words:
            raise LexiconError("a lexicon needs at least one word")

    @classmethod
    def from_file(cls, path: str | Path) -> Lexicon:
        """One word per line, blank lines skipped; errors name `file:line`."""
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise LexiconError(f"{path}: cannot read lexicon: {e}") from None
        numbered = [(f"{path}:{n}", line) for n, line in enumerate(lines, start=1) if line.strip()]
        if not numbered:
            raise LexiconError(f"{path}: no words")
        return cls([line for _, line in numbered], where=[source for source, _ in numbered])

    def _add(self, word: str, where: str) -> None:
        try:
            text = normalize(word, where)
        except VocabularyError as e:
            raise LexiconError(str(e)) from None
        if not text:
            raise LexiconError(f"{where}: {word!r} is empty after normalisation")
        if SYMBOLS[SPACE_ID] in text:
            raise LexiconError(f"{where}: {word!r} is more than one word (one word per line)")
        node = self.root
        for label in encode(text):
            node = node.children.setdefault(label, _TrieNode())
        node.is_word = True
        self._words.add(text)

    @property
    def words(self) -> frozenset[str]:
        return frozenset(self._words)

    def __len__(self) -> int:
        return len(self._words)

    def __contains__(self, word: str) -> bool:
        return word in self._words


def _lexicon_step(lexicon: Lexicon, node: _TrieNode, label: int) -> _TrieNode | None:
    """The trie node after appending `label` to a prefix whose current word ends at `node`; None if not allowed."""
    if label == SPACE_ID:
        return lexicon.root if node.is_word else None
    return node.children.get(label)


# --- input checks --------------------------------------------------------------------------------------------------
def _checked(log_probs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Detached float CPU log-probs, shape = (B, T, C), and the lengths as ints, after checking both."""
    if log_probs.dim() != 3 or log_probs.shape[2] != VOCAB_SIZE:
        raise ValueError(f"log_probs must have shape (B, T, {VOCAB_SIZE}), got {tuple(log_probs.shape)}")
    batch, frames = log_probs.shape[:2]
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},) to match log_probs, got {tuple(lengths.shape)}")
    sizes = [int(n) for n in lengths.tolist()]
    bad = [n for n in sizes if not 0 <= n <= frames]
    if bad:
        raise ValueError(f"lengths must lie in [0, {frames}] (the number of frames), got {bad}")
    return log_probs.detach().to("cpu", torch.float32), sizes


# --- greedy --------------------------------------------------------------------------------------------------------
def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
    """Best path: argmax per frame, collapse repeats, drop blanks.

    log_probs shape = (B, T, C), log-softmax output, blank = BLANK_ID; lengths shape = (B,), valid frames.
    """
    log_probs, sizes = _checked(log_probs, lengths)
    best = log_probs.argmax(dim=2)  # shape = (B, T)
    previous = torch.nn.functional.pad(best[:, :-1], (1, 0), value=BLANK_ID)
    keep = (best != previous) & (best != BLANK_ID)
    return [ids_to_text(best[b, :n][keep[b, :n]].tolist()) for b, n in enumerate(sizes)]


# --- prefix beam search --------------------------------------------------------------------------------------------
def _log_add(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) for Python floats (math is far faster than torch for single numbers)."""
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


@dataclass
class _Beam:
    blank: float = NEG_INF  # log prob of the paths for this prefix that end in a blank
    label: float = NEG_INF  # log prob of those that end in the prefix's last label
    node: _TrieNode | None = None  # lexicon state: where the current word ends in the trie

    @property
    def total(self) -> float:
        return _log_add(self.blank, self.label)


def _candidate_tokens(log_probs: torch.Tensor) -> torch.Tensor:
    """Per frame, the labels (never the blank) allowed to extend a prefix; -1 marks an unused slot.

    log_probs shape = (B, T, C); returns shape = (B, T, TOKENS_PER_FRAME).
    """
    labels_only = log_probs.clone()
    labels_only[..., BLANK_ID] = NEG_INF
    top, tokens = labels_only.topk(min(TOKENS_PER_FRAME, VOCAB_SIZE - 1), dim=2)
    return tokens.masked_fill(top < MIN_TOKEN_LOG_PROB, -1)


def _prefix_beam_search(
    frames: list[list[float]], candidates: list[list[int]], beam_size: int, lexicon: Lexicon | None
) -> str:
    """One utterance. frames: T rows of C log-probs; candidates: T rows of label ids (-1 = none)."""
    beams: dict[Prefix, _Beam] = {(): _Beam(blank=0.0, node=lexicon.root if lexicon else None)}
    for row, tokens in zip(frames, candidates):
        extended: dict[Prefix, _Beam] = {}
        for prefix, beam in beams.items():
            total = beam.total
            # staying on the same prefix: a blank, or the last label repeated (CTC collapses it)
            stay = extended.setdefault(prefix, _Beam(node=beam.node))
            stay.blank = _log_add(stay.blank, total + row[BLANK_ID])
            if prefix:
                stay.label = _log_add(stay.label, beam.label + row[prefix[-1]])
            for token in tokens:
                if token < 0:
                    break  # topk is sorted, so the unused slots come last
                node = _lexicon_step(lexicon, beam.node, token) if lexicon else None
                if lexicon and node is None:
                    continue
                # the same label twice is two labels only when a blank separates them
                history = beam.blank if prefix and prefix[-1] == token else total
                grown = extended.setdefault(prefix + (token,), _Beam(node=node))
                grown.label = _log_add(grown.label, history + row[token])
        ranked = sorted(extended.items(), key=lambda item: item[1].total, reverse=True)
        beams = dict(ranked[:beam_size])
    return ids_to_text(_best_prefix(beams, lexicon))


def _best_prefix(beams: dict[Prefix, _Beam], lexicon: Lexicon | None) -> Prefix:
    """The most probable prefix; with a lexicon, one that ends on a complete word.

    When every surviving prefix ends inside a word, the best one is cut back to its last complete word, so the
    output still holds lexicon words only.
    """
    ranked = sorted(beams.items(), key=lambda item: item[1].total, reverse=True)
    if lexicon is None:
        return ranked[0][0]
    for prefix, beam in ranked:
        if not prefix or beam.node.is_word:
            return prefix
    best = ranked[0][0]
    last_space = max((i for i, label in enumerate(best) if label == SPACE_ID), default=0)
    return best[:last_space]


def beam_search_decode(
    log_probs: torch.Tensor, lengths: torch.Tensor, beam_size: int = 5, lexicon: Lexicon | None = None
) -> list[str]:
    """CTC prefix beam search, one utterance at a time.

    log_probs shape = (B, T, C), log-softmax output, blank = BLANK_ID; lengths shape = (B,), valid frames.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be at least 1, got {beam_size}")
    log_probs, sizes = _checked(log_probs, lengths)
    candidates = _candidate_tokens(log_probs)
    return [
        _prefix_beam_search(log_probs[b, :n].tolist(), candidates[b, :n].tolist(), beam_size, lexicon)
        for b, n in enumerate(sizes)
    ]


# --- dispatch ------------------------------------------------------------------------------------------------------
def decode(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    decoder: str = "greedy",
    beam_size: int = 5,
    lexicon: Lexicon | None = None,
) -> list[str]:
    """Decode a batch with the decoder named in the configuration (see avasr.config.DECODERS)."""
    if decoder == "greedy":
        if lexicon is not None:
            raise ValueError("a lexicon needs decoder='beam' (greedy decoding cannot be restricted to words)")
        return greedy_decode(log_probs, lengths)
    if decoder == "beam":
        return beam_search_decode(log_probs, lengths, beam_size=beam_size, lexicon=lexicon)
    raise ValueError(f"unknown decoder {decoder!r}; valid decoders: {', '.join(DECODERS)}")
