"""The built-in offline audio-visual corpus: GRID sentences spoken by three speech engines, lip-synced faces.

    corpus_dir/
        corpus.json                 id, size, seed, counts, rates, manifests, and every speaker's engine, voice,
                                    prosody, channel and face; written last: its presence means "complete"
        speakers.tsv                the same speakers, one row each
        lexicon.txt                 the 51 GRID words (for beam search with a lexicon)
        train_manifest.txt          training speakers: seen voices and faces
        val_manifest.txt            the same speakers, other utterances
        test_unseen_voice_manifest.txt   voices never heard in training, of engines that were, in front of seen faces
        test_unseen_face_manifest.txt    training speakers' voices in front of faces never seen in training
        test_manifest.txt           the hardest: a speech engine and faces held out of training entirely
        s07/u00012.wav              16 kHz mono int16
        s07/u00012.mp4              25 fps, FRAME_SIZE x FRAME_SIZE colour, mp4v
        s07/u00012.phonemes.tsv     start_ms, end_ms, phoneme: contiguous spans covering the audio

Speakers come in four groups (`GROUPS`), one per evaluation split; `avasr.corpus.voices` says which engines and
voices each may use, `avasr.corpus.faces` which faces are held out. Utterances go round-robin over the speakers,
training speakers taking TRAIN_TURNS turns a round.

Everything is drawn from `seed`, and the same seed gives the same files byte for byte, in any process: each
utterance has its own random streams; espeak-ng speaks in a forked child of a worker that has never spoken, its
noise generator seeded per utterance (`Synthesizer.synthesize_isolated`); flite speaks in a process of its own;
and each festival speaker's utterances are spoken in order by a festival process of their own (festival's output
can depend on what it spoke before); so nothing depends on the number of workers, on which worker made which
utterance, or on what ran before. The audio is padded to last exactly a whole number of video frames.
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

from avasr.corpus import face, faces, grammar, voices
from avasr.corpus.espeak import Phoneme, library_version
from avasr.corpus.festival import Festival
from avasr.data.manifest import write_manifest
from avasr.errors import AvasrError, OutputError

GENERATOR_VERSION = 5  # bump when the output of the same seed changes
SAMPLE_RATE = voices.SAMPLE_RATE
FPS = 25
VIDEO_FOURCC = "mp4v"
VAL_EVERY = 10  # every 10th utterance of each training speaker goes to validation
PAUSE = "_"  # phoneme name of the padded silences

# --- speakers: groups and the split each one's utterances go to ---------------------------------------------------
TRAIN, UNSEEN_VOICE, UNSEEN_FACE, UNSEEN_ENGINE = "train", "unseen_voice", "unseen_face", "unseen_engine"
GROUPS = (TRAIN, UNSEEN_VOICE, UNSEEN_FACE, UNSEEN_ENGINE)
SPLITS = ("train", "val", "test_unseen_voice", "test_unseen_face", "test")  # manifests: f"{split}_manifest.txt"
GROUP_SPLIT = {UNSEEN_VOICE: "test_unseen_voice", UNSEEN_FACE: "test_unseen_face", UNSEEN_ENGINE: "test"}
SPLIT_MEANING = {
    "train": "seen voices and faces",
    "val": "seen voices and faces, other utterances",
    "test_unseen_voice": "voices never heard in training (espeak-ng variants, festival's ked), seen faces",
    "test_unseen_face": "training speakers' voices, faces never seen in training",
    "test": "a speech engine (flite) and faces never heard or seen in training: the hardest",
}
SPLIT_MEANING_WITHOUT_ESPEAK = {  # the reverse direction: espeak-ng held out
    **SPLIT_MEANING,
    "test_unseen_voice": "a voice never heard in training (festival's ked), seen faces",
    "test": "a speech engine (espeak-ng) and faces never heard or seen in training: the hardest",
}
FESTIVAL_EVERY = 3  # every third training speaker is a festival voice, the others espeak-ng
TRAIN_TURNS = 2  # a training speaker has twice as many utterances as a test speaker: most of the data trains

# --- faces: placement and light per speaker -----------------------------------------------------------------------
LEAD_SILENCE_MS = (150, 400)  # neutral mouth before and after the sentence
TRAIL_SILENCE_MS = (150, 400)
FACE_SIZE = (72.0, 104.0)  # side of the face box in the frame, pixels
FACE_MARGIN = 4.0  # the whole face box stays this far inside the frame
LIGHT_ANGLE = (np.pi, 2 * np.pi)  # from the left over the top to the right: light from below defeats Haar
LIGHT_STRENGTH = (0.05, 0.3)
BRIGHTNESS = (0.75, 1.15)

SPEAKER_STREAM, SENTENCE_STREAM, SPEECH_STREAM, RENDER_STREAM = 1, 2, 3, 4  # independent streams, one seed
EXTRA_VAL_STREAM = 5

log = logging.getLogger(__name__)


class CorpusError(AvasrError, RuntimeError):
    """The corpus folder holds a different corpus, or an utterance could not be written."""


@dataclass(frozen=True)
class CorpusSize:
    utterances: int  # spread over all speakers (`plan_corpus`)
    train_speakers: int
    unseen_voice_speakers: int
    unseen_face_speakers: int
    unseen_engine_speakers: int
    extra_val_per_speaker: int = 0  # val utterances each training speaker says on top of `utterances`

    @property
    def name(self) -> str:
        named = [name for name, size in SIZES.items() if size == self]
        if named:
            return named[0]
        groups = (self.unseen_voice_speakers, self.unseen_face_speakers, self.unseen_engine_speakers)
        extra = f"+{self.extra_val_per_speaker}val" if self.extra_val_per_speaker else ""
        return f"{self.utterances}utt{self.train_speakers}+{'+'.join(map(str, groups))}spk{extra}"

    def speakers(self, group: str) -> int:
        return getattr(self, f"{group}_speakers")


SIZES = {
    "smoke": CorpusSize(utterances=200, train_speakers=14, unseen_voice_speakers=2, unseen_face_speakers=2,
                        unseen_engine_speakers=2),
    "small": CorpusSize(utterances=480, train_speakers=18, unseen_voice_speakers=2, unseen_face_speakers=2,
                        unseen_engine_speakers=2),
    # the smoke sweep's (make sweep); also enough for lip reading to show
    # 8 extra val utterances per training speaker (12 in all): each trained model's own noise on val WER shrinks
    # by sqrt(3), and with it every interval and comparison of the sweep's verdict
    "medium": CorpusSize(utterances=1200, train_speakers=24, unseen_voice_speakers=4, unseen_face_speakers=4,
                         unseen_engine_speakers=4, extra_val_per_speaker=8),
    "full": CorpusSize(utterances=6000, train_speakers=32, unseen_voice_speakers=8, unseen_face_speakers=8,
                       unseen_engine_speakers=8),
}  # fmt: skip


@dataclass(frozen=True)
class Speaker:
    id: str  # "s07": also the speaker's folder
    group: str  # GROUPS
    voice: voices.Voice
    face: face.FaceStyle
    voice_of: str = ""  # an unseen-face speaker speaks with this training speaker's voice

    @property
    def split(self) -> str:
        """Where this speaker's utterances go ("train" also means val)."""
        return GROUP_SPLIT.get(self.group, "train")


@dataclass(frozen=True)
class Utterance:
    index: int
    speaker: Speaker
    split: str  # SPLITS
    words: tuple[str, ...]

    @property
    def stem(self) -> str:
        return f"{self.speaker.id}/u{self.index:05d}"


# --- planning -----------------------------------------------------------------------------------------------------
def make_speakers(size: CorpusSize, seed: int, held_out_engine: str = voices.HELD_OUT_ENGINE) -> list[Speaker]:
    """Every speaker, group after group (train, unseen voice, unseen face, unseen engine), numbered s01, s02, ...

    Voices are distinct within each engine's pool as long as it lasts (then they repeat with other prosody and
    channel); unseen-face speakers reuse the voices of training speakers, round-robin; faces go round-robin over
    the training faces (train, unseen voice) or the held-out faces (unseen face, unseen engine), shuffled by seed.
    `held_out_engine`: flite (training hears espeak-ng and festival) or espeak-ng (training hears festival and
    flite; the unseen voice is festival's ked, the unseen engine's speakers espeak-ng variants of every kind).
    """
    check_held_out_engine(held_out_engine)
    rng = np.random.default_rng([seed, SPEAKER_STREAM])
    seen_faces, held_out_faces = _shuffled(faces.training_faces(), rng), _shuffled(faces.HELD_OUT, rng)
    if held_out_engine == voices.FLITE:
        train_voices = _train_engine_voices(size.train_speakers, rng)
        unseen_voices = _unseen_engine_voices(size.unseen_voice_speakers, rng)
        engine_voices = _in_turn([voices.flite_voice(v) for v in voices.FLITE_VOICES], size.unseen_engine_speakers)
    else:
        train_voices = _reverse_train_voices(size.train_speakers)
        unseen_voices = _in_turn(
            [voices.festival_voice(v) for v in voices.FESTIVAL_UNSEEN_VOICES], size.unseen_voice_speakers
        )
        every_variant = voices.ESPEAK_TRAIN_VARIANTS + voices.ESPEAK_UNSEEN_VARIANTS
        engine_voices = _espeak_voices(size.unseen_engine_speakers, every_variant, rng)
    speakers: list[Speaker] = []

    def add(group: str, voice: voices.Voice, identity: str, voice_of: str = "") -> None:
        speaker_id = f"s{len(speakers) + 1:02d}"
        speakers.append(Speaker(speaker_id, group, voice, _face_style(identity, rng), voice_of))

    for k, engine_voice in enumerate(train_voices):
        add(TRAIN, voices.draw_voice(engine_voice, rng), seen_faces[k % len(seen_faces)])
    for k, engine_voice in enumerate(unseen_voices):
        add(UNSEEN_VOICE, voices.draw_voice(engine_voice, rng), seen_faces[(k + 1) % len(seen_faces)])
    trained = [s for s in speakers if s.group == TRAIN]
    for k in range(size.unseen_face_speakers):
        source = trained[k % len(trained)]
        add(UNSEEN_FACE, source.voice, held_out_faces[k % len(held_out_faces)], voice_of=source.id)
    for k, engine_voice in enumerate(engine_voices):
        add(UNSEEN_ENGINE, voices.draw_voice(engine_voice, rng), held_out_faces[(k + 1) % len(held_out_faces)])
    return speakers


def _shuffled(items, rng: np.random.Generator) -> list:
    return [items[i] for i in rng.permutation(len(items))]


def _train_engine_voices(n: int, rng: np.random.Generator) -> list[voices.EngineVoice]:
    """Every FESTIVAL_EVERY-th speaker a festival training voice (alternating), the others espeak-ng's."""
    n_festival = n // FESTIVAL_EVERY
    espeak = _espeak_voices(n - n_festival, voices.ESPEAK_TRAIN_VARIANTS, rng)
    festival = _in_turn([voices.festival_voice(v) for v in voices.FESTIVAL_TRAIN_VOICES], n_festival)
    return [festival.pop(0) if k % FESTIVAL_EVERY == FESTIVAL_EVERY - 1 and festival else espeak.pop(0)
            for k in range(n)]  # fmt: skip


def _unseen_engine_voices(n: int, rng: np.random.Generator) -> list[voices.EngineVoice]:
    """Half espeak-ng's unseen variants, half festival's unseen voices, alternating (espeak-ng first)."""
    espeak = _espeak_voices(n - n // 2, voices.ESPEAK_UNSEEN_VARIANTS, rng)
    festival = _in_turn([voices.festival_voice(v) for v in voices.FESTIVAL_UNSEEN_VOICES], n // 2)
    return [espeak.pop(0) if k % 2 == 0 else festival.pop(0) for k in range(n)]


def _reverse_train_voices(n: int) -> list[voices.EngineVoice]:
    """With espeak-ng held out: festival's and flite's training voices in turn (each heard by several speakers, with
    their own prosody, vocal tract and channel)."""
    festival = [voices.festival_voice(v) for v in voices.FESTIVAL_TRAIN_VOICES]
    flite = [voices.flite_voice(v) for v in voices.FLITE_VOICES]
    return _in_turn([v for pair in zip(festival, flite) for v in pair], n)


def _in_turn(engine_voices: list[voices.EngineVoice], n: int) -> list[voices.EngineVoice]:
    """n engine voices, taken in turn (the first again after the last)."""
    return [engine_voices[k % len(engine_voices)] for k in range(n)]


def _espeak_voices(n: int, variants: tuple[str, ...], rng: np.random.Generator) -> list[voices.EngineVoice]:
    """n espeak-ng voices: distinct variants while they last, each with an accent, accents as balanced as possible."""
    order = _shuffled(variants, rng)
    accents = _shuffled(voices.ESPEAK_ACCENTS, rng)
    return [voices.espeak_voice(accents[k % len(accents)], order[k % len(order)]) for k in range(n)]


def _face_style(identity: str, rng: np.random.Generator) -> face.FaceStyle:
    size = float(rng.uniform(*FACE_SIZE))
    low, high = size / 2 + FACE_MARGIN, face.FRAME_SIZE - size / 2 - FACE_MARGIN
    return face.FaceStyle(
        identity=identity,
        face_size=round(size, 2),
        center=(round(float(rng.uniform(low, high)), 2), round(float(rng.uniform(low, high)), 2)),
        light_angle=round(float(rng.uniform(*LIGHT_ANGLE)), 3),
        light_strength=round(float(rng.uniform(*LIGHT_STRENGTH)), 3),
        brightness=round(float(rng.uniform(*BRIGHTNESS)), 3),
    )


def check_held_out_engine(engine: str) -> None:
    if engine not in voices.HELD_OUT_ENGINES:
        raise ValueError(f"the held-out engine must be one of {', '.join(voices.HELD_OUT_ENGINES)}, not {engine!r}")


def plan_corpus(
    size: CorpusSize, seed: int, held_out_engine: str = voices.HELD_OUT_ENGINE
) -> tuple[list[Speaker], list[Utterance]]:
    """Speakers and every utterance's speaker, split and sentence.

    Utterances go round-robin over the speakers, each training speaker taking TRAIN_TURNS turns a round. Every
    VAL_EVERY-th utterance of each training speaker goes to validation; the other groups' utterances go to their
    own test split. Then each training speaker says `extra_val_per_speaker` more, all for validation, numbered
    after the others and with sentences of their own stream: the other utterances stay as they are without them.
    """
    speakers = make_speakers(size, seed, held_out_engine)
    turns = speakers + [s for s in speakers if s.group == TRAIN] * (TRAIN_TURNS - 1)
    sentences = grammar.sample_sentences(size.utterances, np.random.default_rng([seed, SENTENCE_STREAM]))
    per_speaker: Counter[str] = Counter()
    utterances = []
    for index, words in enumerate(sentences):
        speaker = turns[index % len(turns)]
        count = per_speaker[speaker.id]
        per_speaker[speaker.id] += 1
        split = speaker.split
        if split == "train" and count % VAL_EVERY == VAL_EVERY - 1:
            split = "val"
        utterances.append(Utterance(index, speaker, split, words))
    if not any(u.split == "val" for u in utterances):  # a tiny corpus: still one validation utterance
        last = max(i for i, u in enumerate(utterances) if u.split == "train")
        utterances[last] = dataclasses.replace(utterances[last], split="val")
    trainers = [s for s in speakers if s.group == TRAIN]
    extra = grammar.sample_sentences(
        size.extra_val_per_speaker * len(trainers), np.random.default_rng([seed, EXTRA_VAL_STREAM])
    )
    for k, words in enumerate(extra):
        utterances.append(Utterance(size.utterances + k, trainers[k % len(trainers)], "val", words))
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


def speak_utterance(utterance: Utterance, out_dir: Path, seed: int, festival: Festival | None = None) -> bool:
    """Synthesise one utterance and write its WAV and phoneme table (each appears atomically).

    False when the WAV was already there; a festival speaker's utterance is then still spoken (not written), so
    that the festival process has the same history for the next one (see `make_utterances`).
    """
    wav_path, _, tsv_path = utterance_paths(out_dir, utterance)
    if wav_path.is_file() and festival is None:
        return False
    rng = np.random.default_rng([seed, SPEECH_STREAM, utterance.index])
    lead_ms, trail_ms = rng.uniform(*LEAD_SILENCE_MS), rng.uniform(*TRAIL_SILENCE_MS)
    speech = voices.speak(utterance.speaker.voice, utterance.words, int(rng.integers(2**31)), festival)
    if wav_path.is_file():
        return False
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
    renderer = faces.renderer_for(utterance.speaker.face)
    frames = face.render_video(renderer, read_phoneme_table(tsv_path), n_frames, FPS, rng)
    write_video(_part(mp4_path), frames)
    _part(mp4_path).replace(mp4_path)
    return True


def make_utterances(job: tuple[tuple[Utterance, ...], Path, int]) -> tuple[int, int, int]:
    """Speak, then animate, utterances where their files are missing. -> (utterances, WAVs, MP4s written).

    A festival speaker's utterances come as one job, spoken in order by a fresh festival process (whose output can
    depend on what it spoke before); every other job is one utterance.
    """
    utterances, out_dir, seed = job
    if utterances[0].speaker.voice.engine_voice.engine == voices.FESTIVAL:
        with Festival() as festival:
            spoken = sum(speak_utterance(u, out_dir, seed, festival) for u in utterances)
    else:
        spoken = sum(speak_utterance(u, out_dir, seed) for u in utterances)
    return len(utterances), spoken, sum(animate_utterance(u, out_dir, seed) for u in utterances)


def plan_jobs(utterances: list[Utterance], out_dir: Path, seed: int) -> list[tuple[tuple[Utterance, ...], Path, int]]:
    """Festival speakers first, each as one job of its utterances in order; then one job per other utterance."""
    festival: dict[str, list[Utterance]] = {}
    others = []
    for u in utterances:
        if u.speaker.voice.engine_voice.engine == voices.FESTIVAL:
            festival.setdefault(u.speaker.id, []).append(u)
        else:
            others.append((u,))
    return [(tuple(group), out_dir, seed) for group in [*festival.values(), *others]]


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already


# --- the corpus ---------------------------------------------------------------------------------------------------
def corpus_id(size: CorpusSize, seed: int, held_out_engine: str = voices.HELD_OUT_ENGINE) -> str:
    """e.g. "gridsynth-smoke-seed42-v5", or "gridsynth-smoke-seed42-v5-without-espeak-ng" with espeak-ng held out:
    names the data in run tags; changes whenever the output would."""
    direction = "" if held_out_engine == voices.HELD_OUT_ENGINE else f"-without-{held_out_engine}"
    return f"gridsynth-{size.name}-seed{seed}-v{GENERATOR_VERSION}{direction}"


def build_corpus(
    out_dir: str | Path,
    size: str | CorpusSize = "smoke",
    seed: int = 42,
    workers: int | None = None,
    held_out_engine: str = voices.HELD_OUT_ENGINE,
) -> Path:
    """Build (or finish) the corpus in `out_dir` and return that folder, which holds the manifests (`SPLITS`).

    `size`: "smoke" (200 utterances), "small" (480), "medium" (1392), "full" (6000) or a CorpusSize. Returns at
    once when a complete corpus with the same id (size, seed, generator version) is there; utterances already
    written by an interrupted build are kept. `workers`: processes (default: all cores). `held_out_engine`: the
    speech engine of the test split, never heard in training (`make_speakers`).
    """
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"unknown corpus size {size!r} (choose from {', '.join(SIZES)})")
        size = SIZES[size]
    out_dir = Path(out_dir)
    check_held_out_engine(held_out_engine)
    identity = corpus_id(size, seed, held_out_engine)
    if _is_complete(out_dir, identity):
        return out_dir
    engines = {voices.ESPEAK: library_version(), **voices.program_versions()}  # a missing engine: said here
    speakers, utterances = plan_corpus(size, seed, held_out_engine)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{out_dir}: cannot create the corpus folder: {e}") from None
    log.info("building corpus %s in %s", identity, out_dir)
    spoken, animated = _render_all(utterances, out_dir, seed, workers or os.cpu_count() or 1)
    _write_manifests(out_dir, utterances)
    (out_dir / "lexicon.txt").write_text("\n".join(grammar.vocabulary()) + "\n", encoding="utf-8")
    _write_description(out_dir, size, seed, held_out_engine, engines, speakers, utterances)
    log.info("%s: %d utterances (%d WAVs, %d MP4s written now)", out_dir, len(utterances), spoken, animated)
    return out_dir


def _is_complete(out_dir: Path, identity: str) -> bool:
    description = out_dir / "corpus.json"
    if not description.is_file():
        return False
    try:
        found = json.loads(description.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CorpusError(f"{description}: unreadable ({e}); delete the folder to rebuild") from None
    if found.get("id") != identity:
        raise CorpusError(
            f"{out_dir} already holds corpus {found.get('id')!r}, not {identity!r}: "
            "choose another folder or delete this one"
        )
    return all((out_dir / f"{split}_manifest.txt").is_file() for split in SPLITS)


def _render_all(utterances: list[Utterance], out_dir: Path, seed: int, workers: int) -> tuple[int, int]:
    """Every utterance's speech and video in `workers` fresh processes. -> (WAVs, MP4s) written.

    spawn, not fork: a fresh interpreter has an espeak-ng that has never spoken (the parent of each isolated
    synthesis), and a forked child would inherit OpenCV's threads and locks half-taken.
    """
    jobs = plan_jobs(utterances, out_dir, seed)
    spoken = animated = 0
    with (
        tqdm(total=len(utterances), desc="corpus", unit="utt", smoothing=0.1) as progress,
        multiprocessing.get_context("spawn").Pool(max(workers, 1), initializer=_init_worker) as pool,
    ):
        for count, wavs, mp4s in pool.imap_unordered(make_utterances, jobs, chunksize=2):
            progress.update(count)
            spoken, animated = spoken + wavs, animated + mp4s
        _finish(pool)
    return spoken, animated


def _finish(pool) -> None:
    """Let the workers exit by themselves (the `with` block would kill them, leaking tqdm's semaphores)."""
    pool.close()
    pool.join()


def _write_manifests(out_dir: Path, utterances: list[Utterance]) -> None:
    for split in SPLITS:
        rows = []
        for u in utterances:
            if u.split == split:
                wav, mp4, _ = utterance_paths(out_dir, u)
                rows.append((wav, mp4, grammar.transcript(u.words)))
        write_manifest(out_dir / f"{split}_manifest.txt", rows)


SPEAKER_COLUMNS = (
    "speaker", "group", "split", "engine", "voice", "recordings", "voice_of", "rate", "semitones", "pitch_range",
    "tract", "loudness_dbfs", "eq_db", "reverb_s", "reverb_mix", "face", "utterances", "face_size", "center_x",
    "center_y", "mouth_x", "mouth_y", "light_angle", "light_strength", "brightness",
)  # fmt: skip


def describe_speaker(speaker: Speaker, utterances: int) -> dict:
    """One speaker, flat and JSON-ready: its group, voice (engine, prosody, channel) and face."""
    style = speaker.face
    mouth = faces.portrait(style.identity).rest_mouth_in_frame(style)
    return {
        "speaker": speaker.id, "group": speaker.group, "split": speaker.split, **speaker.voice.describe(),
        "voice_of": speaker.voice_of, "face": style.identity, "utterances": utterances,
        "face_size": style.face_size, "center_x": style.center[0], "center_y": style.center[1],
        "mouth_x": round(mouth[0], 2), "mouth_y": round(mouth[1], 2), "light_angle": style.light_angle,
        "light_strength": style.light_strength, "brightness": style.brightness,
    }  # fmt: skip


def write_speaker_table(path: Path, rows: list[dict]) -> None:
    """speakers.tsv: SPEAKER_COLUMNS of `describe_speaker`'s rows (the EQ gains joined by commas)."""
    lines = ["\t".join(SPEAKER_COLUMNS)]
    for row in rows:
        cells = (",".join(map(str, row[c])) if isinstance(row[c], list) else str(row[c]) for c in SPEAKER_COLUMNS)
        lines.append("\t".join(cells))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_description(
    out_dir: Path,
    size: CorpusSize,
    seed: int,
    held_out_engine: str,
    engines: dict,
    speakers: list[Speaker],
    utterances: list[Utterance],
) -> None:
    """corpus.json, written last and atomically: a folder with it is a complete corpus."""
    counts = Counter(u.speaker.id for u in utterances)
    rows = [describe_speaker(s, counts[s.id]) for s in speakers]
    write_speaker_table(out_dir / "speakers.tsv", rows)
    description = {
        "id": corpus_id(size, seed, held_out_engine),
        "size": size.name,
        "seed": seed,
        "generator_version": GENERATOR_VERSION,
        "engines": engines,
        "utterances": len(utterances),
        "splits": {split: sum(u.split == split for u in utterances) for split in SPLITS},
        "manifests": {split: f"{split}_manifest.txt" for split in SPLITS},
        "split_meaning": SPLIT_MEANING if held_out_engine == voices.FLITE else SPLIT_MEANING_WITHOUT_ESPEAK,
        "groups": {group: sum(s.group == group for s in speakers) for group in GROUPS},
        "held_out": {"engine": held_out_engine, "faces": list(faces.HELD_OUT)},
        "sample_rate": SAMPLE_RATE,
        "fps": FPS,
        "frame_size": face.FRAME_SIZE,
        "face_photo": face.PHOTO_NAME,
        "size_spec": asdict(size),
        "speakers": rows,
    }
    tmp = out_dir / "corpus.json.tmp"
    tmp.write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out_dir / "corpus.json")
