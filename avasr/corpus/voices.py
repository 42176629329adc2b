"""The corpus's voices: three speech engines, their voices, and each speaker's prosody and channel.

A speaker's voice is an engine's voice (`EngineVoice`) spoken at the speaker's own rate and pitch, through a
vocal-tract scaling (the audio resampled: pitch and formants up or down together, like a smaller or larger
speaker), then through the speaker's own channel: an equaliser curve, a little room reverberation and a loudness
(`Channel`), so that no two speakers share a spectrum.

Engines and voices (Debian packages, installed by `make setup`):

    espeak-ng   formant synthesis; English accents x voice variants (espeak-ng, libespeak-ng1)
    festival    kal_diphone, ked_diphone: diphone concatenation of two US male speakers (festvox-kallpc16k,
                festvox-kdlpc16k); cmu_us_slt_arctic_hts: a statistical (HTS) US female voice (festvox-us-slt-hts)
    flite       awb (Scottish male) and rms (US male), statistical (clustergen) voices built into flite

Which voices a split may use (the voice tables below): training speakers use espeak-ng's training variants and
festival's kal and slt; the unseen-voice split uses espeak-ng variants and festival's ked, none of them heard in
training; the held-out engine is flite, with its awb and rms voices only, whose recordings no other engine uses
(flite's kal and slt are the recordings behind festival's kal and slt, so they are not used at all).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avasr.corpus import grammar
from avasr.corpus.espeak import Phoneme, Speech, process_synthesizer
from avasr.corpus.festival import Festival, festival_version, flite_synthesize, flite_version

SAMPLE_RATE = 16000  # the corpus's WAVs (the training loader's rate); every engine's audio is resampled to it

ESPEAK, FESTIVAL, FLITE = "espeak-ng", "festival", "flite"
ENGINES = (ESPEAK, FESTIVAL, FLITE)
HELD_OUT_ENGINE = FLITE  # the default direction; HELD_OUT_ENGINES lists both
HELD_OUT_ENGINES = (FLITE, ESPEAK)  # flite: train on espeak-ng and festival; espeak-ng: train on festival and flite

# espeak-ng English accents (voice files in the Debian package) and human-sounding voice variants (its "!v" folder;
# the robots, whispers and croaks are left out). The unseen variants are never heard in training.
ESPEAK_ACCENTS = ("en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
                  "en-us-nyc")  # fmt: skip
ESPEAK_TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f5", "adam", "Alex", "Andy",
                         "benjamin", "caleb", "david", "ed", "edward", "iven", "john", "klatt", "klatt3", "linda",
                         "max", "paul", "quincy", "rob", "steph", "travis", "zac", "Annie", "belinda")  # fmt: skip
ESPEAK_UNSEEN_VARIANTS = ("m6", "f4", "Alicia", "Michael", "klatt2", "norbert", "robert", "shelby")
FESTIVAL_TRAIN_VOICES = ("kal_diphone", "cmu_us_slt_arctic_hts")
FESTIVAL_UNSEEN_VOICES = ("ked_diphone",)
FLITE_VOICES = ("awb", "rms")

# --- prosody and channel ranges -----------------------------------------------------------------------------------
RATE = (0.8, 1.15)  # speaking rate relative to the engine's own
SEMITONES = (-3.0, 3.0)  # pitch (espeak-ng and festival; flite's through the tract only)
PITCH_RANGE = (25, 80)  # espeak-ng's intonation range: 0 is monotone
TRACT = (0.9, 1.1)  # resampling factor: > 1 a smaller speaker (higher pitch and formants, faster)
LOUDNESS_DBFS = (-28.0, -16.0)  # RMS of the speech
EQ_BANDS_HZ = (150.0, 400.0, 1000.0, 2200.0, 4000.0, 6500.0)
EQ_DB = 6.0  # each band's gain is drawn from +-EQ_DB
REVERB_S = (0.08, 0.35)  # decay time (RT60) of the room
REVERB_MIX = (0.03, 0.2)  # energy of the reverberant part relative to the direct sound
PEAK = 0.95  # the loudest sample after the channel, at most (of full scale)
ESPEAK_RATE_WPM = 175  # espeak-ng's rate at RATE 1.0


@dataclass(frozen=True)
class EngineVoice:
    engine: str  # ENGINES
    name: str  # the engine's voice: "en-gb-scotland+f3", "kal_diphone", "awb"
    recordings: str  # whose speech it is built from: voices with the same recordings are the same voice


@dataclass(frozen=True)
class Channel:
    loudness_dbfs: float
    eq_db: tuple[float, ...]  # gain at EQ_BANDS_HZ
    reverb_s: float
    reverb_mix: float


@dataclass(frozen=True)
class Voice:
    """How one speaker sounds."""

    engine_voice: EngineVoice
    rate: float
    semitones: float
    pitch_range: int  # espeak-ng only
    tract: float
    channel: Channel

    def describe(self) -> dict:
        """Flat, JSON-ready."""
        c = self.channel
        return {
            "engine": self.engine_voice.engine, "voice": self.engine_voice.name,
            "recordings": self.engine_voice.recordings, "rate": self.rate, "semitones": self.semitones,
            "pitch_range": self.pitch_range, "tract": self.tract, "loudness_dbfs": c.loudness_dbfs,
            "eq_db": list(c.eq_db), "reverb_s": c.reverb_s, "reverb_mix": c.reverb_mix,
        }  # fmt: skip


def espeak_voice(accent: str, variant: str) -> EngineVoice:
    return EngineVoice(ESPEAK, f"{accent}+{variant}", f"espeak-ng:{variant}")


FESTIVAL_RECORDINGS = {"kal_diphone": "kal", "ked_diphone": "ked", "cmu_us_slt_arctic_hts": "slt"}


def festival_voice(name: str) -> EngineVoice:
    return EngineVoice(FESTIVAL, name, FESTIVAL_RECORDINGS[name])


def flite_voice(name: str) -> EngineVoice:
    return EngineVoice(FLITE, name, name)


def draw_voice(engine_voice: EngineVoice, rng: np.random.Generator) -> Voice:
    """A speaker's prosody and channel for an engine voice, drawn from the ranges above."""
    return Voice(
        engine_voice=engine_voice,
        rate=round(float(rng.uniform(*RATE)), 3),
        semitones=round(float(rng.uniform(*SEMITONES)), 2) if engine_voice.engine != FLITE else 0.0,
        pitch_range=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
        tract=round(float(rng.uniform(*TRACT)), 3),
        channel=Channel(
            loudness_dbfs=round(float(rng.uniform(*LOUDNESS_DBFS)), 1),
            eq_db=tuple(round(float(g), 1) for g in rng.uniform(-EQ_DB, EQ_DB, len(EQ_BANDS_HZ))),
            reverb_s=round(float(rng.uniform(*REVERB_S)), 3),
            reverb_mix=round(float(rng.uniform(*REVERB_MIX)), 3),
        ),
    )


def program_versions() -> dict[str, str]:
    """festival's and flite's versions; FestivalError naming the setup when one is missing."""
    return {FESTIVAL: festival_version(), FLITE: flite_version()}


# --- speaking -----------------------------------------------------------------------------------------------------
def engine_text(engine: str, words: tuple[str, ...]) -> str:
    """The text an engine is given for GRID words (each reads a lone "a" as the article otherwise)."""
    if engine == ESPEAK:
        return grammar.speech_text(words)
    return " ".join(grammar.SPOKEN_FORMS_CMU.get(w, w) for w in words)


def speak(voice: Voice, words: tuple[str, ...], seed: int, festival: Festival | None = None) -> Speech:
    """The speaker's audio for these words at SAMPLE_RATE, with phoneme spans; `seed` draws every random part.

    espeak-ng speaks isolated and flite in its own process, so for them the same arguments give the same samples
    in any process. festival speaks in the given `Festival` process, whose output can depend on what it spoke
    before: the same texts in the same order from a fresh one give the same samples. The channel's
    reverberation is drawn from `seed`.
    """
    rng = np.random.default_rng(seed)
    raw = _engine_speech(voice, engine_text(voice.engine_voice.engine, words), int(rng.integers(2**31)), festival)
    samples = resample(raw.samples / 32768.0, raw.sample_rate * voice.tract, SAMPLE_RATE, voice.channel.eq_db)
    stretch = (len(samples) / SAMPLE_RATE) / (len(raw.samples) / raw.sample_rate)  # about 1 / tract
    samples = reverberate(samples, SAMPLE_RATE, voice.channel, rng)
    samples = set_loudness(samples, voice.channel.loudness_dbfs)
    phonemes = tuple(Phoneme(round(p.start_ms * stretch), round(p.end_ms * stretch), p.name) for p in raw.phonemes)
    phonemes = tuple(p for p in phonemes if p.end_ms > p.start_ms)
    return Speech(np.round(samples * 32767).astype(np.int16), SAMPLE_RATE, phonemes)


def _engine_speech(voice: Voice, text: str, noise_seed: int, festival: Festival | None) -> Speech:
    engine, name = voice.engine_voice.engine, voice.engine_voice.name
    if engine == ESPEAK:
        pitch = int(np.clip(round(50 + 8 * voice.semitones), 0, 100))  # espeak's 0..100, 50 = the voice's own
        wpm = round(ESPEAK_RATE_WPM * voice.rate)
        return process_synthesizer().synthesize_isolated(text, name, wpm, pitch, voice.pitch_range, seed=noise_seed)
    if engine == FESTIVAL:
        if festival is None:
            raise ValueError(f"speaking with festival's {name} needs a Festival process (festival=...)")
        return festival.synthesize(text, name, voice.rate, voice.semitones)
    if engine == FLITE:
        return flite_synthesize(text, name, voice.rate)
    raise ValueError(f"unknown speech engine {engine!r} (choose from {', '.join(ENGINES)})")


# --- the channel --------------------------------------------------------------------------------------------------
def resample(samples: np.ndarray, rate_in: float, rate_out: int, eq_db: tuple[float, ...] = ()) -> np.ndarray:
    """Band-limited resampling through the FFT, with an optional equaliser curve applied on the way.

    samples: shape = (n,) float. Frequencies above both Nyquist limits are dropped. `eq_db`: gains at EQ_BANDS_HZ,
    interpolated over log frequency (flat beyond). The transforms run at lengths with only small prime factors
    (zero padding), since an FFT of a length with a large prime factor costs several times more; that rounds
    the rate ratio by up to 2 % (the output's length says by how much: about n * rate_out / rate_in samples).
    """
    size_in = fast_length(len(samples))
    size_out = fast_length(round(size_in * rate_out / rate_in))
    spectrum = np.fft.rfft(samples, size_in)
    bins = min(len(spectrum), size_out // 2 + 1)
    spectrum = spectrum[:bins]
    if eq_db:
        freqs = np.arange(bins) * rate_in / size_in
        gains = np.interp(np.log(np.maximum(freqs, 1.0)), np.log(EQ_BANDS_HZ), eq_db)
        spectrum = spectrum * 10 ** (gains / 20)
    n_out = max(round(len(samples) * size_out / size_in), 1)
    return np.fft.irfft(spectrum, size_out)[:n_out] * (size_out / size_in)


def fast_length(n: int) -> int:
    """The smallest length >= n whose prime factors are all in (2, 3, 5, 7, 11): fast for numpy's FFT."""
    m = max(n, 1)
    while True:
        rest = m
        for p in (2, 3, 5, 7, 11):
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return m
        m += 1


def room_response(rate: int, reverb_s: float, rng: np.random.Generator) -> np.ndarray:
    """A room's impulse response after the direct sound: noise decaying by 60 dB over `reverb_s`, unit energy."""
    length = max(int(rate * reverb_s), 1)
    t = np.arange(length) / rate
    tail = rng.normal(0, 1, length) * 10 ** (-3 * t / reverb_s)
    return tail / np.sqrt(np.sum(tail**2))


def reverberate(samples: np.ndarray, rate: int, channel: Channel, rng: np.random.Generator) -> np.ndarray:
    """Direct sound plus a reverberant tail of relative energy `reverb_mix` (cut at the input's length)."""
    tail = room_response(rate, channel.reverb_s, rng)
    size = fast_length(len(samples) + len(tail))
    wet = np.fft.irfft(np.fft.rfft(samples, size) * np.fft.rfft(tail, size), size)[: len(samples)]
    return samples + np.sqrt(channel.reverb_mix) * wet


def set_loudness(samples: np.ndarray, dbfs: float) -> np.ndarray:
    """Scale to an RMS of `dbfs` over the louder half of the samples (the speech, not the pauses), peak <= PEAK."""
    loud = np.sort(np.abs(samples))[len(samples) // 2 :]
    rms = np.sqrt(np.mean(loud**2)) if len(loud) else 0.0
    if rms == 0:
        return samples
    scaled = samples * (10 ** (dbfs / 20) / rms)
    peak = np.max(np.abs(scaled))
    return scaled * (PEAK / peak) if peak > PEAK else scaled
