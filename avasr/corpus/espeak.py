"""A minimal ctypes binding to espeak-ng: text -> int16 samples + the synthesizer's own phoneme timings.

espeak-ng is initialised once per process in synchronous mode with phoneme events enabled, so that
`espeak_Synth` returns only after the synth callback has received every sample and every
`espeakEVENT_PHONEME` (each with its position in the audio, in ms). The library is a process-wide singleton
and not thread-safe: use one `Synthesizer` per process (`process_synthesizer`).

espeak-ng carries state from one synthesis to the next: its pitch-flutter index is a static variable, and its
breath noise (the `+f2`, `+f3`, `+f5` variants, among others) draws from libc's `rand()`, which any other library
in the process may also advance. `Synthesizer.synthesize_isolated` therefore speaks in a forked child of a
process that has never spoken, after seeding `rand()`: the audio depends only on the text, the voice and the
seed, not on what the process (or the libraries it imported) did before.
"""

from __future__ import annotations

import ctypes
import os
import pickle
from dataclasses import dataclass

import numpy as np

from avasr.errors import AvasrError

LIBRARY_NAME = "libespeak-ng.so.1"
SETUP_HINT = "run `make setup` (it installs the Debian packages espeak-ng and libespeak-ng1)"

# --- speak_lib.h ------------------------------------------------------------------------------------------------
# like AUDIO_OUTPUT_RETRIEVAL (1: samples go only to the callback, never to a sound card), but espeak_Synth
# returns only after the last callback: no thread, no waiting
AUDIO_OUTPUT_SYNCHRONOUS = 2
BUFFER_LENGTH_MS = 200  # size of the chunks handed to the callback
INITIALIZE_PHONEME_EVENTS = 0x0001  # espeakINITIALIZE_PHONEME_EVENTS
INITIALIZE_DONT_EXIT = 0x8000  # report errors instead of calling exit()
CHARS_UTF8 = 1
FLAG_PHONEMES = 0x100  # espeakPHONEMES: allow [[phoneme]] input
FLAG_ENDPAUSE = 0x1000  # espeakENDPAUSE: a short pause at the end of the text
POS_CHARACTER = 1
PARAMETER_RATE = 1  # words per minute, 80..450
PARAMETER_VOLUME = 2
PARAMETER_PITCH = 3  # 0..100, 50 = the voice's normal pitch
PARAMETER_RANGE = 4  # pitch range 0..100 (0 = monotone)
EVENT_LIST_TERMINATED = 0
EVENT_PHONEME = 7
EE_OK = 0
PHONEME_NAME_BYTES = 8


class EspeakError(AvasrError, RuntimeError):
    """libespeak-ng is missing, cannot be initialised, or refused a voice or a text."""


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * PHONEME_NAME_BYTES)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms from the start of this synthesis
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Phoneme:
    start_ms: int
    end_ms: int
    name: str  # espeak's mnemonic, e.g. "b", "I", "aU", "_" (pause)


@dataclass(frozen=True)
class Speech:
    samples: np.ndarray  # shape = (n,), int16, mono
    sample_rate: int
    phonemes: tuple[Phoneme, ...]  # in time order, contiguous, inside the audio

    @property
    def duration_ms(self) -> float:
        return 1000.0 * len(self.samples) / self.sample_rate


def load_library(name: str = LIBRARY_NAME) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(name)
    except OSError as e:
        raise EspeakError(f"cannot load {name} ({e}); {SETUP_HINT}") from None
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
        ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
    ]  # fmt: skip
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    for function in ("espeak_SetVoiceByName", "espeak_SetParameter", "espeak_Synth"):
        getattr(lib, function).restype = ctypes.c_int
    return lib


def library_version(library: str = LIBRARY_NAME) -> str:
    """espeak-ng's version, e.g. "1.51" (no initialisation needed)."""
    return load_library(library).espeak_Info(None).decode()


class Synthesizer:
    """espeak-ng in this process. `synthesize(text, voice, rate, pitch)` -> `Speech`."""

    def __init__(self, library: str = LIBRARY_NAME):
        self._lib = load_library(library)
        self.library = library
        options = INITIALIZE_PHONEME_EVENTS | INITIALIZE_DONT_EXIT
        self.sample_rate = self._lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, BUFFER_LENGTH_MS, None, options)
        if self.sample_rate <= 0:
            raise EspeakError(f"{library}: espeak_Initialize failed (code {self.sample_rate}); {SETUP_HINT}")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, str]] = []
        self._callback = _SYNTH_CALLBACK(self._on_synth)  # kept alive: espeak holds only the C pointer
        self._lib.espeak_SetSynthCallback(self._callback)
        self.spoken = False  # a process that has spoken is no longer a pristine parent for isolated syntheses

    def synthesize_isolated(
        self, text: str, voice: str, rate: int = 175, pitch: int = 50, pitch_range: int = 50, seed: int = 1
    ) -> Speech:
        """`synthesize` in a forked child of this process, with libc's `rand()` seeded by `seed` (0 .. 2**31 - 1).

        The child starts from this process's espeak-ng state, which has never spoken, so the same arguments give
        the same samples in any process, in any order. Costs a fork (about 2 ms) per call.
        """
        if self.spoken:
            raise EspeakError(
                "synthesize_isolated needs a process that has never called synthesize(): espeak-ng's state "
                "carries over from one synthesis to the next; use a fresh process"
            )
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: speak, send the result (or the error) up the pipe, exit without cleanup
            os.close(read_end)
            _speak_in_child(self, write_end, seed, (text, voice, rate, pitch, pitch_range))
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            payload = pipe.read()
        _, status = os.waitpid(pid, 0)
        if not payload:
            raise EspeakError(f"{self.library}: the synthesis child for {text!r} ({voice}) died (status {status})")
        result = pickle.loads(payload)
        if isinstance(result, Exception):
            raise result
        return result

    def _on_synth(self, wav, n_samples, events) -> int:
        if n_samples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            if events[i].type == EVENT_PHONEME:
                name = events[i].id.string.decode("utf-8", errors="replace")
                self._events.append((events[i].audio_position, name))
            i += 1
        return 0  # 0 = go on synthesising

    def set_voice(self, voice: str, rate: int, pitch: int, pitch_range: int = 50) -> None:
        """`voice` is an espeak-ng name with optional variant, e.g. "en-us+f3"."""
        if self._lib.espeak_SetVoiceByName(voice.encode()) != EE_OK:
            raise EspeakError(f"{self.library}: unknown voice {voice!r} (list them with `espeak-ng --voices=en`)")
        for parameter, value in ((PARAMETER_RATE, rate), (PARAMETER_PITCH, pitch), (PARAMETER_RANGE, pitch_range)):
            if self._lib.espeak_SetParameter(parameter, value, 0) != EE_OK:
                raise EspeakError(f"{self.library}: cannot set parameter {parameter} to {value} for voice {voice!r}")

    def synthesize(self, text: str, voice: str, rate: int = 175, pitch: int = 50, pitch_range: int = 50) -> Speech:
        """Speak `text` (UTF-8; `[[...]]` is read as espeak phonemes) with the given voice, wpm and pitch.

        The result depends on what this process spoke before (see the module's docstring); once a process has
        spoken here, `synthesize_isolated` refuses to run in it.
        """
        self.spoken = True
        self.set_voice(voice, rate, pitch, pitch_range)
        self._chunks, self._events = [], []
        data = text.encode("utf-8") + b"\0"
        flags = CHARS_UTF8 | FLAG_PHONEMES
        code = self._lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, flags, None, None)
        if code != EE_OK:
            raise EspeakError(f"{self.library}: espeak_Synth failed with code {code} for {text!r} ({voice})")
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        if not len(samples):
            raise EspeakError(f"{self.library}: no audio for {text!r} with voice {voice!r}")
        return Speech(samples, self.sample_rate, phoneme_spans(self._events, 1000.0 * len(samples) / self.sample_rate))


def _speak_in_child(synthesizer: Synthesizer, pipe: int, seed: int, arguments: tuple) -> None:
    """Run in the forked child of `synthesize_isolated`: never returns."""
    try:
        libc = ctypes.CDLL(None)
        libc.srand(ctypes.c_uint(seed))
        try:
            result = synthesizer.synthesize(*arguments)
        except EspeakError as e:
            result = e
        data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        with os.fdopen(pipe, "wb") as out:
            out.write(data)
    finally:
        os._exit(0)


def phoneme_spans(events: list[tuple[int, str]], duration_ms: float) -> tuple[Phoneme, ...]:
    """Phoneme onsets (ms, name) -> contiguous spans; each ends where the next begins, the last at the audio's end.

    espeak can emit several events at one position (e.g. a zero-length stress or pause marker): those are
    dropped, keeping the last, so every span has a positive length.
    """
    end = int(duration_ms)
    onsets: dict[int, str] = {}
    for position, name in events:
        if 0 <= position < end and name.strip():
            onsets[position] = name.strip()
    starts = sorted(onsets)
    return tuple(Phoneme(s, e, onsets[s]) for s, e in zip(starts, [*starts[1:], end]))


_PROCESS_SYNTHESIZER: Synthesizer | None = None


def process_synthesizer() -> Synthesizer:
    """The one Synthesizer of this process, created on first use (espeak-ng is a process-wide singleton)."""
    global _PROCESS_SYNTHESIZER
    if _PROCESS_SYNTHESIZER is None:
        _PROCESS_SYNTHESIZER = Synthesizer()
    return _PROCESS_SYNTHESIZER
