"""The built-in offline audio-visual corpus: GRID sentences spoken by espeak-ng voices, lip-synced face video.

    corpus_dir/
        corpus.json                 id, size, seed, counts, rates; written last: its presence means "complete"
        speakers.tsv                one row per speaker: voice, rate, pitch, face placement/tone/lighting, split
        lexicon.txt                 the 51 GRID words (for beam search with a lexicon)
        train_manifest.txt          training speakers
        val_manifest.txt            training speakers, other utterances
        test_manifest.txt           unseen speakers
        s07/u00012.wav              22050 Hz mono int16 (espeak's own rate: the loader resamples)
        s07/u00012.mp4              25 fps, FRAME_SIZE x FRAME_SIZE colour, mp4v
        s07/u00012.phonemes.tsv     start_ms, end_ms, phoneme: contiguous spans covering the audio

Everything is drawn from `seed`, and the same seed gives the same files byte for byte, in any process: each
utterance has its own random streams, and its speech comes from a forked child of a worker that has never spoken,
with espeak-ng's noise generator seeded per utterance (`Synthesizer.synthesize_isolated`), so nothing depends on
the number of workers, on which worker made which utterance, or on what ran before. The audio is padded to last
exactly a whole number of video frames.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import soundfile
from tqdm import tqdm

from avasr.corpus import face, grammar
from avasr.corpus.espeak import Phoneme, library_version, process_synthesizer
from avasr.data.manifest import write_manifest
from avasr.errors import AvasrError, OutputError

GENERATOR_VERSION = 1  # bump when the output of the same seed changes
SAMPLE_RATE = 22050  # espeak-ng's own rate, kept: the training loader resamples
FPS = 25
VIDEO_FOURCC = "mp4v"
VAL_EVERY = 10  # every 10th utterance of each training speaker goes to validation
PAUSE = "_"  # phoneme name of the padded silences

# --- speakers ---------------------------------------------------------------------------------------------------
# espeak-ng English accents (their voice files are in the Debian package) and its voice variants.
LANGUAGES = ("en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
RATE_WPM = (135, 185)  # espeak's default is 175
PITCH = (25, 75)  # 0..100, 50 = the variant's own
PITCH_RANGE = (25, 80)  # intonation: 0 is monotone
LEAD_SILENCE_MS = (150, 400)  # neutral mouth before and after the sentence
TRAIL_SILENCE_MS = (150, 400)
FACE_SIZE = (72.0, 104.0)  # side of the face box in the frame, pixels
FACE_MARGIN = 4.0  # the whole face box stays this far inside the frame
SKIN_TONES_BGR = (  # from fair to dark; the photo's own tone is (114, 144, 221)
    (140.0, 165.0, 232.0),
    (114.0, 144.0, 221.0),
    (95.0, 130.0, 195.0),
    (85.0, 128.0, 172.0),
    (70.0, 104.0, 160.0),
    (55.0, 80.0, 128.0),
    (50.0, 68.0, 112.0),
)
LIGHT_ANGLE = (np.pi, 2 * np.pi)  # from the left over the top to the right: light from below defeats Haar
LIGHT_STRENGTH = (0.05, 0.3)
BRIGHTNESS = (0.75, 1.15)
MOUTH_WIDTH = (0.88, 1.12)
LIP_THICKNESS = (0.8, 1.25)
ARTICULATION = (0.75, 1.2)

SPEAKER_STREAM, SENTENCE_STREAM, SPEECH_STREAM, RENDER_STREAM = 1, 2, 3, 4  # independent streams, one seed

log = logging.getLogger(__name__)


class CorpusError(AvasrError, RuntimeError):
    """The corpus folder holds a different corpus, or an utterance could not be written."""


@dataclass(frozen=True)
class CorpusSize:
    utterances: int
    train_speakers: int
    test_speakers: int  # unseen in training

    @property
    def name(self) -> str:
        named = [name for name, size in SIZES.items() if size == self]
        return named[0] if named else f"{self.utterances}utt{self.train_speakers}+{self.test_speakers}spk"


SIZES = {
    "smoke": CorpusSize(utterances=200, train_speakers=16, test_speakers=4),
    "small": CorpusSize(utterances=480, train_speakers=20, test_speakers=4),
    # the smoke sweep's (make sweep): 12 epochs of it cost what 25 of small did and generalise better to unseen
    # speakers (tune_spaces/smoke.py); also enough for lip reading to show
    "medium": CorpusSize(utterances=1200, train_speakers=24, test_speakers=4),
    "full": CorpusSize(utterances=6000, train_speakers=32, test_speakers=8),
}


@dataclass(frozen=True)
class Speaker:
    id: str  # "s07": also the speaker's folder
    split: str  # "train" (train + val) or "test" (unseen)
    voice: str  # espeak-ng voice with variant, e.g. "en-gb-scotland+f3"
    rate: int  # words per minute
    pitch: int
    pitch_range: int
    face: face.FaceStyle


@dataclass(frozen=True)
class Utterance:
    index: int
    speaker: Speaker
    split: str  # train | val | test
    words: tuple[str, ...]

    @property
    def stem(self) -> str:
        return f"{self.speaker.id}/u{self.index:05d}"


# --- planning -----------------------------------------------------------------------------------------------------
def make_speakers(n_train: int, n_test: int, seed: int) -> list[Speaker]:
    """Distinct (accent, variant) voices, accents as balanced as possible; the last n_test are the unseen ones."""
    rng = np.random.default_rng([seed, SPEAKER_STREAM])
    n = n_train + n_test
    if n > len(LANGUAGES) * len(VARIANTS):
        raise ValueError(f"at most {len(LANGUAGES) * len(VARIANTS)} distinct voices, asked for {n}")
    voices = _balanced_voices(n, rng)
    return [
        Speaker(
            id=f"s{k + 1:02d}",
            split="train" if k < n_train else "test",
            voice=voices[k],
            rate=int(rng.integers(RATE_WPM[0], RATE_WPM[1] + 1)),
            pitch=int(rng.integers(PITCH[0], PITCH[1] + 1)),
            pitch_range=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
            face=_face_style(rng),
        )
        for k in range(n)
    ]


def _balanced_voices(n: int, rng: np.random.Generator) -> list[str]:
    """Round-robin over shuffled accents, each with its own shuffled variants: n distinct voices."""
    languages = [LANGUAGES[i] for i in rng.permutation(len(LANGUAGES))]
    variants = {lang: [VARIANTS[i] for i in rng.permutation(len(VARIANTS))] for lang in languages}
    voices = []
    for k in range(n):
        language = languages[k % len(languages)]
        voices.append(f"{language}+{variants[language][k // len(languages)]}")
    return voices


def _face_style(rng: np.random.Generator) -> face.FaceStyle:
    size = float(rng.uniform(*FACE_SIZE))
    low, high = size / 2 + FACE_MARGIN, face.FRAME_SIZE - size / 2 - FACE_MARGIN
    return face.FaceStyle(
        face_size=round(size, 2),
        center=(round(float(rng.uniform(low, high)), 2), round(float(rng.uniform(low, high)), 2)),
        skin_bgr=SKIN_TONES_BGR[rng.integers(len(SKIN_TONES_BGR))],
        light_angle=round(float(rng.uniform(*LIGHT_ANGLE)), 3),
        light_strength=round(float(rng.uniform(*LIGHT_STRENGTH)), 3),
        brightness=round(float(rng.uniform(*BRIGHTNESS)), 3),
        mouth_width=round(float(rng.uniform(*MOUTH_WIDTH)), 3),
        lip_thickness=round(float(rng.uniform(*LIP_THICKNESS)), 3),
        articulation=round(float(rng.uniform(*ARTICULATION)), 3),
    )


def plan_corpus(size: CorpusSize, seed: int) -> tuple[list[Speaker], list[Utterance]]:
    """Speakers and every utterance's speaker, split and sentence; utterances go round-robin over speakers.

    Test utterances are those of the unseen speakers; every VAL_EVERY-th utterance of each training speaker
    goes to validation.
    """
    speakers = make_speakers(size.train_speakers, size.test_speakers, seed)
    sentences = grammar.sample_sentences(size.utterances, np.random.default_rng([seed, SENTENCE_STREAM]))
    per_speaker: Counter[str] = Counter()
    utterances = []
    for index, words in enumerate(sentences):
        speaker = speakers[index % len(speakers)]
        count = per_speaker[speaker.id]
        per_speaker[speaker.id] += 1
        split = "test" if speaker.split == "test" else ("val" if count % VAL_EVERY == VAL_EVERY - 1 else "train")
        utterances.append(Utterance(index, speaker, split, words))
    if not any(u.split == "val" for u in utterances):  # a tiny corpus: still one validation utterance
        last = max(i for i, u in enumerate(utterances) if u.split == "train")
        utterances[last] = dataclasses.replace(utterances[last], split="val")
    return speakers, utterances


# --- one utterance ------------------------------------------------------------------------------------------------
def pad_to_frames(samples: np.ndarray, sample_rate: int, lead_ms: float, trail_ms: float) -> tuple[np.ndarray, int]:
    """Silence before and after, the end rounded up to a whole video frame. -> (samples, lead in samples)."""
    lead = round(sample_rate * lead_ms / 1000)
    total = lead + len(samples) + round(sample_rate * trail_ms / 1000)
    per_frame = sample_rate / FPS
    total = int(np.ceil(np.ceil(total / per_frame) * per_frame))
    padded = np.zeros(total, np.int16)
    padded[lead : lead + len(samples)] = samples
    return padded, lead


def shift_phonemes(phonemes: tuple[Phoneme, ...], lead_ms: float, duration_ms: float) -> list[Phoneme]:
    """Move spans by the leading silence and cover the whole audio with pause spans at both ends."""
    end = int(duration_ms)
    spans = [Phoneme(p.start_ms + round(lead_ms), p.end_ms + round(lead_ms), p.name) for p in phonemes]
    spans = [p for p in spans if p.start_ms < end]
    if spans and spans[-1].end_ms > end:
        spans[-1] = Phoneme(spans[-1].start_ms, end, spans[-1].name)
    first = spans[0].start_ms if spans else end
    head = [Phoneme(0, first, PAUSE)] if first > 0 else []
    last = spans[-1].end_ms if spans else end
    tail = [Phoneme(last, end, PAUSE)] if last < end else []
    return head + spans + tail


def write_phoneme_table(path: Path, phonemes: list[Phoneme]) -> None:
    lines = ["start_ms\tend_ms\tphoneme", *(f"{p.start_ms}\t{p.end_ms}\t{p.name}" for p in phonemes)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_phoneme_table(path: str | Path) -> list[Phoneme]:
    """`<utt>.phonemes.tsv` -> spans. Raises ValueError naming the file and line on a malformed row."""
    path = Path(path)
    rows = path.read_text(encoding="utf-8").splitlines()[1:]
    phonemes = []
    for number, row in enumerate(rows, start=2):
        fields = row.split("\t")
        try:
            phonemes.append(Phoneme(int(fields[0]), int(fields[1]), fields[2]))
        except (IndexError, ValueError):
            raise ValueError(f"{path}:{number}: expected 'start_ms<TAB>end_ms<TAB>phoneme', got {row!r}") from None
    return phonemes


def write_video(path: Path, frames: np.ndarray) -> None:
    """frames: shape = (n, H, W, 3) uint8 BGR -> MP4 at FPS."""
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*VIDEO_FOURCC), FPS, (width, height))
    if not writer.isOpened():
        raise CorpusError(f"{path}: OpenCV cannot write {VIDEO_FOURCC} video (is opencv-python-headless installed?)")
    for frame in frames:
        writer.write(frame)
    writer.release()


def utterance_paths(out_dir: Path, utterance: Utterance) -> tuple[Path, Path, Path]:
    """(wav, mp4, phonemes.tsv) of an utterance."""
    base = out_dir / utterance.stem
    return tuple(base.with_name(base.name + ext) for ext in (".wav", ".mp4", ".phonemes.tsv"))


def _part(path: Path) -> Path:
    """Where a file is written before it is renamed into place: "u00012.wav" -> "u00012.part.wav"."""
    return path.with_name(path.name.replace(".", ".part.", 1))


def speak_utterance(utterance: Utterance, out_dir: Path, seed: int) -> bool:
    """Synthesise one utterance and write its WAV and phoneme table (each appears atomically).

    False when the WAV was already there. The synthesis runs isolated (see the module's docstring): the same
    utterance gives the same samples whatever was spoken before.
    """
    wav_path, _, tsv_path = utterance_paths(out_dir, utterance)
    if wav_path.is_file():
        return False
    speaker = utterance.speaker
    rng = np.random.default_rng([seed, SPEECH_STREAM, utterance.index])
    lead_ms, trail_ms = rng.uniform(*LEAD_SILENCE_MS), rng.uniform(*TRAIL_SILENCE_MS)
    noise_seed = int(rng.integers(2**31))
    speech = process_synthesizer().synthesize_isolated(
        grammar.speech_text(utterance.words), speaker.voice, speaker.rate, speaker.pitch, speaker.pitch_range,
        seed=noise_seed,
    )  # fmt: skip
    if speech.sample_rate != SAMPLE_RATE:
        raise CorpusError(f"espeak-ng produced {speech.sample_rate} Hz for {speaker.voice}, expected {SAMPLE_RATE}")
    samples, lead = pad_to_frames(speech.samples, speech.sample_rate, lead_ms, trail_ms)
    duration_ms = 1000.0 * len(samples) / speech.sample_rate
    phonemes = shift_phonemes(speech.phonemes, 1000.0 * lead / speech.sample_rate, duration_ms)
    wav_path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(_part(wav_path), samples, speech.sample_rate, subtype="PCM_16", format="WAV")
    write_phoneme_table(_part(tsv_path), phonemes)
    _part(tsv_path).replace(tsv_path)
    _part(wav_path).replace(wav_path)  # last: a WAV means both files are there
    return True


def animate_utterance(utterance: Utterance, out_dir: Path, seed: int) -> bool:
    """Render the face video for an utterance already spoken; False when the MP4 was already there."""
    wav_path, mp4_path, tsv_path = utterance_paths(out_dir, utterance)
    if mp4_path.is_file():
        return False
    info = soundfile.info(wav_path)
    n_frames = round(info.frames * FPS / info.samplerate)
    rng = np.random.default_rng([seed, RENDER_STREAM, utterance.index])
    frames = face.render_video(utterance.speaker.face, read_phoneme_table(tsv_path), n_frames, FPS, rng)
    write_video(_part(mp4_path), frames)
    _part(mp4_path).replace(mp4_path)
    return True


def make_utterance(job: tuple[Utterance, Path, int]) -> tuple[bool, bool]:
    """Speak and animate one utterance where its files are missing. -> (WAV written, MP4 written)."""
    utterance, out_dir, seed = job
    return speak_utterance(utterance, out_dir, seed), animate_utterance(utterance, out_dir, seed)


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already


# --- the corpus ---------------------------------------------------------------------------------------------------
def corpus_id(size: CorpusSize, seed: int) -> str:
    """e.g. "gridsynth-smoke-seed42-v1": names the data in run tags; changes whenever the output would."""
    return f"gridsynth-{size.name}-seed{seed}-v{GENERATOR_VERSION}"


def build_corpus(
    out_dir: str | Path, size: str | CorpusSize = "smoke", seed: int = 42, workers: int | None = None
) -> Path:
    """Build (or finish) the corpus in `out_dir` and return that folder, which holds the three manifests.

    `size`: "smoke" (200 utterances), "small" (480), "medium" (1200), "full" (6000) or a CorpusSize. Returns at
    once when a complete corpus with the same id (size, seed, generator version) is there; utterances already
    written by an interrupted build are kept. `workers`: processes (default: all cores).
    """
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"unknown corpus size {size!r} (choose from {', '.join(SIZES)})")
        size = SIZES[size]
    out_dir = Path(out_dir)
    if _is_complete(out_dir, size, seed):
        return out_dir
    espeak_version = library_version()  # a missing libespeak-ng is reported here, not in every worker
    speakers, utterances = plan_corpus(size, seed)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{out_dir}: cannot create the corpus folder: {e}") from None
    log.info("building corpus %s in %s", corpus_id(size, seed), out_dir)
    spoken, animated = _render_all(utterances, out_dir, seed, workers or os.cpu_count() or 1)
    _write_manifests(out_dir, utterances)
    write_speaker_table(out_dir / "speakers.tsv", speakers, utterances)
    (out_dir / "lexicon.txt").write_text("\n".join(grammar.vocabulary()) + "\n", encoding="utf-8")
    _write_description(out_dir, size, seed, espeak_version, speakers, utterances)
    log.info("%s: %d utterances (%d WAVs, %d MP4s written now)", out_dir, len(utterances), spoken, animated)
    return out_dir


def _is_complete(out_dir: Path, size: CorpusSize, seed: int) -> bool:
    description = out_dir / "corpus.json"
    if not description.is_file():
        return False
    try:
        found = json.loads(description.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CorpusError(f"{description}: unreadable ({e}); delete the folder to rebuild") from None
    if found.get("id") != corpus_id(size, seed):
        raise CorpusError(
            f"{out_dir} already holds corpus {found.get('id')!r}, not {corpus_id(size, seed)!r}: "
            "choose another folder or delete this one"
        )
    return all((out_dir / f"{split}_manifest.txt").is_file() for split in ("train", "val", "test"))


def _render_all(utterances: list[Utterance], out_dir: Path, seed: int, workers: int) -> tuple[int, int]:
    """Every utterance's speech and video in `workers` fresh processes. -> (WAVs, MP4s) written.

    spawn, not fork: a fresh interpreter has an espeak-ng that has never spoken (the parent of each isolated
    synthesis), and a forked child would inherit OpenCV's threads and locks half-taken.
    """
    jobs = [(u, out_dir, seed) for u in utterances]
    progress = dict(total=len(jobs), desc="corpus", unit="utt", smoothing=0.1)
    with multiprocessing.get_context("spawn").Pool(max(workers, 1), initializer=_init_worker) as pool:
        written = list(tqdm(pool.imap_unordered(make_utterance, jobs, chunksize=4), **progress))
        _finish(pool)
    return sum(w for w, _ in written), sum(v for _, v in written)


def _finish(pool) -> None:
    """Let the workers exit by themselves (the `with` block would kill them, leaking tqdm's semaphores)."""
    pool.close()
    pool.join()


def _write_manifests(out_dir: Path, utterances: list[Utterance]) -> None:
    for split in ("train", "val", "test"):
        rows = []
        for u in utterances:
            if u.split == split:
                wav, mp4, _ = utterance_paths(out_dir, u)
                rows.append((wav, mp4, grammar.transcript(u.words)))
        write_manifest(out_dir / f"{split}_manifest.txt", rows)


SPEAKER_COLUMNS = (
    "speaker", "split", "voice", "rate_wpm", "pitch", "pitch_range", "utterances", "face_size", "center_x",
    "center_y", "skin_b", "skin_g", "skin_r", "light_angle", "light_strength", "brightness", "mouth_width",
    "lip_thickness", "articulation",
)  # fmt: skip


def write_speaker_table(path: Path, speakers: list[Speaker], utterances: list[Utterance]) -> None:
    counts = Counter(u.speaker.id for u in utterances)
    lines = ["\t".join(SPEAKER_COLUMNS)]
    for s in speakers:
        f = s.face
        values = (
            s.id, s.split, s.voice, s.rate, s.pitch, s.pitch_range, counts[s.id], f.face_size, *f.center,
            *f.skin_bgr, f.light_angle, f.light_strength, f.brightness, f.mouth_width, f.lip_thickness,
            f.articulation,
        )  # fmt: skip
        lines.append("\t".join(str(v) for v in values))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_description(
    out_dir: Path, size: CorpusSize, seed: int, espeak: str, speakers: list[Speaker], utterances: list[Utterance]
) -> None:
    """corpus.json, written last and atomically: a folder with it is a complete corpus."""
    description = {
        "id": corpus_id(size, seed),
        "size": size.name,
        "seed": seed,
        "generator_version": GENERATOR_VERSION,
        "espeak_ng": espeak,
        "utterances": len(utterances),
        "splits": dict(sorted(Counter(u.split for u in utterances).items())),
        "speakers": dict(sorted(Counter(s.split for s in speakers).items())),
        "sample_rate": SAMPLE_RATE,
        "fps": FPS,
        "frame_size": face.FRAME_SIZE,
        "face_photo": face.PHOTO_NAME,
        "size_spec": asdict(size),
    }
    tmp = out_dir / "corpus.json.tmp"
    tmp.write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out_dir / "corpus.json")
