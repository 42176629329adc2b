"""The GRID corpus grammar: six-word commands such as "bin blue at f two now".

command colour preposition letter digit adverb -- 4 * 4 * 4 * 25 * 10 * 4 = 64 000 distinct sentences.
"""

from __future__ import annotations

import string

import numpy as np

GRID_SLOTS = ("command", "colour", "preposition", "letter", "digit", "adverb")
GRID_WORDS: dict[str, tuple[str, ...]] = {
    "command": ("bin", "lay", "place", "set"),
    "colour": ("blue", "green", "red", "white"),
    "preposition": ("at", "by", "in", "with"),
    "letter": tuple(c for c in string.ascii_lowercase if c != "w"),  # GRID leaves out w: three syllables
    "digit": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "adverb": ("again", "now", "please", "soon"),
}

# What espeak-ng is given instead of a word. It reads a lone "a" as the article (a schwa); GRID says the
# letter name, so that one letter is passed as espeak phonemes. Every other letter espeak already names.
SPOKEN_FORMS = {"a": "[['eI]]"}
# festival and flite (the CMU lexicon) read "ay" as the letter's name, /ey/.
SPOKEN_FORMS_CMU = {"a": "ay"}


def sample_sentences(n: int, rng: np.random.Generator) -> list[tuple[str, ...]]:
    """n GRID sentences (tuples of 6 words) in which every word of a slot occurs equally often (within one).

    Each slot runs through shuffled rounds of its words, and the slots are shuffled independently, so that
    even a 200-sentence corpus has every letter about 8 times, and no two slots are correlated.
    """
    columns = []
    for slot in GRID_SLOTS:
        words = GRID_WORDS[slot]
        rounds = -(-n // len(words))
        columns.append([words[i] for _ in range(rounds) for i in rng.permutation(len(words))][:n])
    return list(zip(*columns))


def transcript(words: tuple[str, ...]) -> str:
    """The manifest's text: the words joined by spaces (all inside the 29-symbol vocabulary)."""
    return " ".join(words)


def speech_text(words: tuple[str, ...]) -> str:
    """The text handed to espeak-ng for these words (festival and flite: `SPOKEN_FORMS_CMU`)."""
    return " ".join(SPOKEN_FORMS.get(w, w) for w in words)


def vocabulary() -> list[str]:
    """All 51 GRID words, slot by slot (a lexicon for beam search)."""
    return [w for slot in GRID_SLOTS for w in GRID_WORDS[slot]]
