"""festival and flite: text -> int16 samples + the synthesizer's own segment timings, through their programs.

festival runs as a long-lived `festival --pipe` process (`Festival`): loading a diphone database takes half a
second, a synthesis then a few milliseconds. Its output can depend on what the process spoke before (after some
kal_diphone utterances, about 3 % of later utterances come out a few samples different), so reproducible audio
needs the same texts in the same order from a fresh process: the corpus gives each festival speaker its own
process. Each request saves the wave and the segment table to files and then writes a marker line to stderr,
which festival does not buffer. flite is small and starts in milliseconds: one `flite` process per utterance, so
nothing carries over; `-psdur` prints each segment's end time.

Both speak with the CMU phone set (ARPAbet: "pau", "b", "ih", ...), which `avasr.corpus.face` maps to visemes.
Debian packages: festival, festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts, flite.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
from pathlib import Path

import soundfile

from avasr.corpus.espeak import Phoneme, Speech
from avasr.errors import AvasrError

SETUP_HINT = (
    "run `make setup` (it installs festival, its voices festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts, "
    "and flite)"
)
DONE = "avasr-festival-done"
HTS_VOICES = ("cmu_us_slt_arctic_hts",)  # statistical voices: speed and pitch through the HTS engine's options
DIPHONE_F0 = {"kal_diphone": (105.0, 14.0), "ked_diphone": (105.0, 14.0)}  # the voices' own mean and spread (Hz)


class FestivalError(AvasrError, RuntimeError):
    """festival or flite is missing, refused a voice, or gave no audio."""


def segment_spans(ends: list[tuple[float, str]], duration_ms: float) -> tuple[Phoneme, ...]:
    """Segment end times (seconds, name) -> contiguous spans from 0 ms; the last ends at the audio's end.

    Zero-length segments are dropped (they show no mouth shape).
    """
    spans, start = [], 0
    for end_s, name in ends:
        end = min(round(1000 * end_s), int(duration_ms))
        if end > start:
            spans.append(Phoneme(start, end, name))
            start = end
    if spans and spans[-1].end_ms < int(duration_ms):
        spans[-1] = Phoneme(spans[-1].start_ms, int(duration_ms), spans[-1].name)
    return tuple(spans)


def read_segments(path: Path) -> list[tuple[float, str]]:
    """festival's `utt.save.segs` file: a header up to "#", then "end_time 100 name" per segment."""
    lines = path.read_text(encoding="utf-8").splitlines()
    body = lines[lines.index("#") + 1 :] if "#" in lines else lines
    ends = []
    for line in body:
        fields = line.split()
        if len(fields) == 3:
            ends.append((float(fields[0]), fields[2]))
    return ends


def _read_speech(wav: Path, ends: list[tuple[float, str]], what: str) -> Speech:
    samples, rate = soundfile.read(wav, dtype="int16")
    if samples.ndim != 1 or not len(samples):
        raise FestivalError(f"{what}: no mono audio in {wav}")
    return Speech(samples, rate, segment_spans(ends, 1000.0 * len(samples) / rate))


def _scheme_string(text: str) -> str:
    if any(c in text for c in '"\\'):
        raise ValueError(f"text for festival must not hold quotes or backslashes: {text!r}")
    return f'"{text}"'


class Festival:
    """One `festival --pipe` process (a context manager). `synthesize(text, voice, rate, semitones)` -> `Speech`."""

    def __init__(self, program: str = "festival"):
        if shutil.which(program) is None:
            raise FestivalError(f"{program} not found; {SETUP_HINT}")
        self.folder = Path(tempfile.mkdtemp(prefix="avasr-festival-"))
        self.process = subprocess.Popen(
            [program, "--pipe"], stdin=subprocess.PIPE, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        atexit.register(self.close)

    def __enter__(self) -> Festival:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)

    def synthesize(self, text: str, voice: str, rate: float = 1.0, semitones: float = 0.0) -> Speech:
        """Speak `text` with a festival voice (e.g. "kal_diphone"), `rate` times faster, `semitones` higher."""
        wav, segs = self.folder / "utterance.wav", self.folder / "utterance.segs"
        for path in (wav, segs):
            path.unlink(missing_ok=True)
        self._send(f"(voice_{voice})\n{_prosody(voice, rate, semitones)}\n" + _synth_commands(text, wav, segs))
        if not (wav.is_file() and segs.is_file()):
            raise FestivalError(
                f"festival wrote no audio for {text!r} with voice {voice!r} (is it installed? {SETUP_HINT})"
            )
        return _read_speech(wav, read_segments(segs), f"festival {voice}")

    def _send(self, commands: str) -> list[str]:
        """Run commands, wait for the marker; returns what festival said on stderr meanwhile."""
        if self.process.poll() is not None:
            raise FestivalError(f"festival exited with code {self.process.returncode}; {SETUP_HINT}")
        self.process.stdin.write(f'{commands}\n(format stderr "{DONE}\\n")\n')
        self.process.stdin.flush()
        said = []
        for line in self.process.stderr:
            if line.strip() == DONE:
                return said
            said.append(line.rstrip())
        raise FestivalError(f"festival died (code {self.process.wait()}): {' | '.join(said[-5:])}")


def _prosody(voice: str, rate: float, semitones: float) -> str:
    """Scheme that sets the speaking rate and pitch for the voice just selected."""
    factor = 2 ** (semitones / 12)
    if voice in HTS_VOICES:
        return (
            f"(set! hts_engine_params (append {voice}::hts_engine_params "
            f'\'(("-r" {rate:.4f}) ("-fm" {semitones:.4f}))))'
        )
    mean, spread = DIPHONE_F0.get(voice, (105.0, 14.0))
    return (
        f"(Parameter.set 'Duration_Stretch {1 / rate:.4f})\n"
        f"(set! int_lr_params '((target_f0_mean {mean * factor:.2f}) (target_f0_std {spread * factor:.2f}) "
        f"(model_f0_mean 170) (model_f0_std 34)))"
    )


def _synth_commands(text: str, wav: Path, segs: Path) -> str:
    return (
        f"(set! avasr_utt (utt.synth (Utterance Text {_scheme_string(text)})))\n"
        f'(utt.save.wave avasr_utt "{wav}" \'riff)\n'
        f'(utt.save.segs avasr_utt "{segs}")'
    )


def flite_synthesize(text: str, voice: str, rate: float = 1.0, program: str = "flite") -> Speech:
    """Speak `text` with one of flite's built-in voices (e.g. "awb", "rms"), `rate` times faster."""
    if shutil.which(program) is None:
        raise FestivalError(f"{program} not found; {SETUP_HINT}")
    with tempfile.TemporaryDirectory(prefix="avasr-flite-") as folder:
        wav = Path(folder) / "utterance.wav"
        command = [
            program,
            "-voice",
            voice,
            "--setf",
            f"duration_stretch={1 / rate:.4f}",
            "-psdur",
            "-t",
            text,
            "-o",
            str(wav),
        ]
        run = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if run.returncode != 0 or not wav.is_file():
            raise FestivalError(f"flite -voice {voice} failed (code {run.returncode}): {run.stderr.strip()[-300:]}")
        return _read_speech(wav, parse_psdur(run.stdout), f"flite {voice}")


def festival_version(program: str = "festival") -> str:
    """e.g. "2.5.0" (from "festival: Festival Speech Synthesis System: 2.5.0:release December 2017")."""
    words = _version_text([program, "--version"], program).replace(":", " ").split()
    return next((w for w in words if w[0].isdigit()), "unknown")


def flite_version(program: str = "flite") -> str:
    """e.g. "2.2-current" (from "... version: flite-2.2-current Sep 2018 ...")."""
    words = _version_text([program, "--version"], program).split()
    return next((w.removeprefix("flite-") for w in words if w.startswith("flite-")), "unknown")


def _version_text(command: list[str], program: str) -> str:
    if shutil.which(program) is None:
        raise FestivalError(f"{program} not found; {SETUP_HINT}")
    run = subprocess.run(command, capture_output=True, text=True, timeout=30)
    return run.stdout + run.stderr


def parse_psdur(output: str) -> list[tuple[float, str]]:
    """flite's `-psdur` line, "pau:0.275 b:0.342 ...", -> [(0.275, "pau"), (0.342, "b"), ...]."""
    ends = []
    for field in output.split():
        name, _, end = field.rpartition(":")
        try:
            ends.append((float(end), name))
        except ValueError:
            continue
    return ends
