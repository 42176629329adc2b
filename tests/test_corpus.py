"""The built-in corpus: speech engines, voices and channels, GRID grammar, faces, and tiny corpora built for real."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import multiprocessing
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile

from avasr.corpus import face, faces, festival, grammar, synth, voices
from avasr.corpus.espeak import EspeakError, Phoneme, Synthesizer, load_library, phoneme_spans, process_synthesizer
from avasr.data.lips import HaarLipCropper
from avasr.data.manifest import read_manifest
from avasr.text import encode, normalize

# 6 speakers: s01, s02 espeak-ng, s03 festival (train, 3 utterances each); s04 unseen voice, s05 unseen face (2 each);
# s06 flite (test, 1)
TINY = synth.CorpusSize(
    utterances=14, train_speakers=3, unseen_voice_speakers=1, unseen_face_speakers=1, unseen_engine_speakers=1
)
SPLITS = synth.SPLITS
GRID_WORDS = ("bin", "blue", "at", "a", "two", "now")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    return synth.build_corpus(tmp_path_factory.mktemp("tiny"), size=TINY, seed=7, workers=2)


def read_video(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def all_entries(corpus: Path):
    return [e for split in SPLITS for e in read_manifest(corpus / f"{split}_manifest.txt")]


# --- espeak-ng ----------------------------------------------------------------------------------------------------
def test_synthesize_gives_int16_audio_and_phonemes_inside_it():
    speech = process_synthesizer().synthesize("bin blue at [['eI]] two now", "en-us+m3", rate=170, pitch=40)
    assert speech.sample_rate == 22050
    assert speech.samples.dtype == np.int16 and speech.samples.ndim == 1
    assert 0.8 < len(speech.samples) / speech.sample_rate < 2.5
    names = [p.name for p in speech.phonemes]
    assert names[:3] == ["b", "I", "n"] and "eI" in names and "aU" in names  # "a" is the letter, not "uh"
    for before, after in zip(speech.phonemes, speech.phonemes[1:]):
        assert before.start_ms < before.end_ms == after.start_ms
    assert speech.phonemes[-1].end_ms <= speech.duration_ms


def test_unknown_voice_is_named():
    with pytest.raises(EspeakError, match="unknown voice 'xx-nowhere'"):
        process_synthesizer().synthesize("bin", "xx-nowhere")


def test_missing_library_names_it_and_the_setup():
    with pytest.raises(EspeakError, match=r"libespeak-ng\.so\.404.*make setup"):
        load_library("libespeak-ng.so.404")
    with pytest.raises(EspeakError, match="make setup"):
        Synthesizer("libespeak-ng.so.404")


def test_phoneme_spans_drop_duplicates_and_end_at_the_audio_end():
    spans = phoneme_spans([(10, "b"), (40, "I"), (40, "I2"), (90, "n"), (500, "late")], duration_ms=120.0)
    assert [(p.start_ms, p.end_ms, p.name) for p in spans] == [(10, 40, "b"), (40, 90, "I2"), (90, 120, "n")]


# --- festival and flite -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("voice", voices.FESTIVAL_TRAIN_VOICES + voices.FESTIVAL_UNSEEN_VOICES)
def test_festival_speaks_with_segment_timings_the_same_from_a_fresh_process(voice):
    texts = [("set red by q seven soon", 0.8, -3.0), ("bin blue at ay two now", 1.1, 2.0)]
    runs = []
    for _ in range(2):
        with festival.Festival() as synthesizer:
            runs.append([synthesizer.synthesize(text, voice, rate, semitones) for text, rate, semitones in texts])
    for first, again in zip(*runs):
        assert np.array_equal(first.samples, again.samples) and first.phonemes == again.phonemes
    speech = runs[0][1]
    names = [p.name for p in speech.phonemes]
    assert names[:4] == ["pau", "b", "ih", "n"] and "ey" in names and names[-1] == "pau"
    assert speech.phonemes[-1].end_ms == int(speech.duration_ms)
    with festival.Festival() as synthesizer:
        slower = synthesizer.synthesize("bin blue at ay two now", voice, rate=0.8, semitones=2.0)
    assert len(slower.samples) > 1.15 * len(speech.samples)


def test_flite_speaks_with_segment_timings():
    speech = festival.flite_synthesize("bin blue at ay two now", "awb", rate=1.0)
    assert speech.sample_rate == 16000 and speech.samples.dtype == np.int16
    assert [p.name for p in speech.phonemes][:4] == ["pau", "b", "ih", "n"]
    assert speech.phonemes[-1].end_ms == int(speech.duration_ms)
    assert len(festival.flite_synthesize("bin blue at ay two now", "awb", rate=0.8).samples) > len(speech.samples)


def test_segment_tables_become_contiguous_spans():
    assert festival.parse_psdur("pau:0.2 b:0.25 ih:0.25 n:0.4\n") == [
        (0.2, "pau"),
        (0.25, "b"),
        (0.25, "ih"),
        (0.4, "n"),
    ]
    spans = festival.segment_spans([(0.2, "pau"), (0.25, "b"), (0.25, "ih"), (0.4, "n")], duration_ms=450.0)
    assert [(p.start_ms, p.end_ms, p.name) for p in spans] == [(0, 200, "pau"), (200, 250, "b"), (250, 450, "n")]


def test_missing_programs_name_the_setup():
    with pytest.raises(festival.FestivalError, match="festival-404 not found.*make setup"):
        festival.Festival("festival-404")
    with pytest.raises(festival.FestivalError, match="flite-404 not found.*make setup"):
        festival.flite_synthesize("bin", "awb", program="flite-404")


# --- voices and channels ------------------------------------------------------------------------------------------
def test_each_engine_gets_the_letter_a_as_its_name():
    assert voices.engine_text(voices.ESPEAK, GRID_WORDS) == "bin blue at [['eI]] two now"
    assert voices.engine_text(voices.FESTIVAL, GRID_WORDS) == "bin blue at ay two now"
    assert voices.engine_text(voices.FLITE, GRID_WORDS) == "bin blue at ay two now"


def test_resampling_keeps_a_tone_and_the_equaliser_sets_its_level():
    t = np.arange(22050) / 22050
    tone = np.sin(2 * np.pi * 1000 * t)  # 1 s at 1 kHz, a band centre
    out = voices.resample(tone, 22050, 16000)
    assert len(out) == 16000
    assert np.argmax(np.abs(np.fft.rfft(out))) == 1000  # 1 Hz bins
    assert np.sqrt(np.mean(out**2)) == pytest.approx(np.sqrt(0.5), rel=1e-3)
    boosted = voices.resample(tone, 22050, 16000, eq_db=(0.0, 0.0, 6.0, 0.0, 0.0, 0.0))
    assert 20 * np.log10(np.std(boosted) / np.std(out)) == pytest.approx(6.0, abs=0.01)
    tract = voices.resample(tone, 22050 * 1.1, 16000)  # a 10 % smaller speaker: higher and shorter
    stretch = len(tract) / 16000  # seconds: the tone lasted 1 s
    assert stretch == pytest.approx(1 / 1.1, rel=0.01)
    assert np.argmax(np.abs(np.fft.rfft(tract))) / len(tract) * 16000 == pytest.approx(1000 / stretch, abs=1.5)


def test_fast_lengths_have_only_small_prime_factors():
    assert [voices.fast_length(n) for n in (1, 13, 4471, 16000, 35768)] == [1, 14, 4480, 16000, 35840]


def test_room_response_decays_60_db_over_its_length_and_loudness_is_set():
    response = voices.room_response(16000, 0.2, np.random.default_rng(0))
    assert len(response) == 3200 and np.sum(response**2) == pytest.approx(1.0)
    head, tail = np.sqrt(np.mean(response[:320] ** 2)), np.sqrt(np.mean(response[-320:] ** 2))
    assert 20 * np.log10(head / tail) == pytest.approx(54, abs=3)  # the windows' centres are 0.18 s apart
    speech = np.concatenate([np.zeros(1000), 0.5 * np.sin(np.arange(3000) / 5)])
    louder = voices.set_loudness(speech, -20.0)
    assert 20 * np.log10(np.sqrt(np.mean(np.sort(np.abs(louder))[2000:] ** 2))) == pytest.approx(-20.0)
    assert np.max(np.abs(voices.set_loudness(speech, 0.0))) == pytest.approx(voices.PEAK)


def speak_twice(engine_voice: voices.EngineVoice) -> tuple[bool, tuple[Phoneme, ...], int, float]:
    """Run in a fresh process (espeak-ng speaks isolated only there): same twice?, phonemes, sample rate."""
    voice = voices.draw_voice(engine_voice, np.random.default_rng(3))
    speeches = []
    for _ in range(2):
        with festival.Festival() as fresh:  # festival's output can depend on what its process spoke before
            speeches.append(voices.speak(voice, GRID_WORDS, seed=11, festival=fresh))
    first, second = speeches
    return np.array_equal(first.samples, second.samples), first.phonemes, first.sample_rate, first.duration_ms


@pytest.mark.parametrize("engine_voice", [voices.espeak_voice("en-us", "f3"), voices.festival_voice("kal_diphone"),
                                          voices.flite_voice("rms")], ids=lambda v: v.engine)  # fmt: skip
def test_a_speaker_sounds_the_same_every_time_with_known_phonemes(engine_voice):
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        same, phonemes, rate, duration_ms = pool.apply(speak_twice, (engine_voice,))
    assert same and rate == voices.SAMPLE_RATE == synth.SAMPLE_RATE
    assert phonemes[-1].end_ms <= duration_ms + 1
    assert all(face.base_phoneme(p.name) in face.PHONEME_VISEMES for p in phonemes)


# --- grammar ------------------------------------------------------------------------------------------------------
def test_grid_grammar_has_the_51_words():
    assert {slot: len(words) for slot, words in grammar.GRID_WORDS.items()} == {
        "command": 4, "colour": 4, "preposition": 4, "letter": 25, "digit": 10, "adverb": 4,
    }  # fmt: skip
    assert "w" not in grammar.GRID_WORDS["letter"]
    assert len(set(grammar.vocabulary())) == 51


def test_sampled_sentences_are_balanced_and_in_the_vocabulary():
    sentences = grammar.sample_sentences(200, np.random.default_rng(0))
    assert len(sentences) == 200 and all(len(s) == 6 for s in sentences)
    for slot, column in zip(grammar.GRID_SLOTS, zip(*sentences)):
        counts = Counter(column)
        assert set(counts) == set(grammar.GRID_WORDS[slot])
        assert max(counts.values()) - min(counts.values()) <= 1
    for words in sentences:
        text = grammar.transcript(words)
        assert normalize(text) == text and len(encode(text)) == len(text)


def test_speech_text_spells_the_letter_a():
    assert grammar.speech_text(("bin", "blue", "at", "a", "two", "now")) == "bin blue at [['eI]] two now"


# --- face ---------------------------------------------------------------------------------------------------------
def test_viseme_table_classes():
    expected = {"p": "bilabial", "b": "bilabial", "m": "bilabial", "f": "labiodental", "v": "labiodental",
                "u:": "rounded", "w": "rounded", "oU": "open_rounded", "a": "open", "aI2": "open",
                "i:": "spread", "E": "mid", "T": "dental", "_:": "rest"}  # fmt: skip
    assert {p: face.viseme_of(p) for p in expected} == expected
    assert set(face.PHONEME_VISEMES.values()) <= set(face.VISEMES)


def test_mouth_closes_for_b_between_open_vowels_and_moves_smoothly():
    spans = [Phoneme(0, 200, "_"), Phoneme(200, 400, "a"), Phoneme(400, 440, "b"),
             Phoneme(440, 640, "a"), Phoneme(640, 1000, "_")]  # fmt: skip
    track = face.mouth_track(spans, n_frames=25, fps=25.0)  # frame k is 40k .. 40k + 40 ms
    assert track.shape == (25, len(face.MOUTH_PARAMETERS))
    opening = track[:, 0]
    assert opening[0] == pytest.approx(0.0, abs=1e-3) and opening[24] == pytest.approx(0.0, abs=1e-3)
    assert opening[7] > 0.7 and opening[13] > 0.7  # mid-vowel
    assert opening[10] < 0.25  # the /b/ at 400-440 ms
    assert np.abs(np.diff(opening)).max() < 0.6  # no jumps from wide open to shut in one frame


def every_face_style() -> list[face.FaceStyle]:
    """The smoke corpus's speakers' faces, and every identity at the smallest and largest size in two corners."""
    styles = [s.face for s in synth.make_speakers(synth.SIZES["smoke"], seed=42)]
    low, high = synth.FACE_SIZE
    for name in faces.identity_names():
        styles.append(face.FaceStyle(name, low, (low / 2 + 4, low / 2 + 4), 4.2, 0.3, 0.75))
        styles.append(face.FaceStyle(name, high, (160 - high / 2 - 4, 160 - high / 2 - 4), 5.2, 0.3, 1.15))
    return styles


@pytest.mark.slow
def test_every_viseme_of_every_face_is_found_by_the_lip_cropper():
    """The lip pipeline needs a face in >= 99 % of frames, its mouth box on the mouth: 40 faces x 13 visemes."""
    cropper = HaarLipCropper(detect_every=1)
    rng = np.random.default_rng(0)
    found, total = Counter(), Counter()
    for style in every_face_style():
        renderer = faces.renderer_for(style)
        mouth_x, mouth_y = faces.portrait(style.identity).rest_mouth_in_frame(style)
        heads = face.head_track(len(face.VISEMES), fps=5.0, rng=rng)  # a frame every 200 ms: varied poses
        for k, viseme in enumerate(face.VISEMES.values()):
            frame = renderer.render(np.array(viseme.shape, np.float32), blink=float(k % 2), head=heads[k])
            assert frame.shape == (face.FRAME_SIZE, face.FRAME_SIZE, 3) and frame.dtype == np.uint8
            total[style.identity] += 1
            box = cropper.find_mouth(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
            if box is not None:
                found[style.identity] += 1
                size = style.face_size  # off by head motion and the cascade's own jitter only
                assert abs(box[0] - mouth_x) < 0.1 * size and abs(box[1] - mouth_y) < 0.15 * size, style
    assert sum(found.values()) / sum(total.values()) >= 0.99, dict(found)
    assert all(found[name] / total[name] >= 0.97 for name in total), dict(found)


# --- the corpus ---------------------------------------------------------------------------------------------------
def test_sizes_keep_their_roles():
    smoke, full = synth.SIZES["smoke"], synth.SIZES["full"]
    assert 150 <= smoke.utterances <= 250 and full.utterances >= 5000
    for size in synth.SIZES.values():
        assert size.train_speakers >= 14 and min(size.speakers(g) for g in synth.GROUPS[1:]) >= 2


TRAINING_ENGINES = {voices.FLITE: {voices.ESPEAK, voices.FESTIVAL}, voices.ESPEAK: {voices.FESTIVAL, voices.FLITE}}


@pytest.mark.parametrize("held_out", voices.HELD_OUT_ENGINES)
@pytest.mark.parametrize("size", list(synth.SIZES))
def test_unseen_means_unseen(size, held_out):
    """No test speaker's voice recordings, engine or face (as its split says) was in training, in either direction."""
    speakers = synth.make_speakers(synth.SIZES[size], seed=42, held_out_engine=held_out)
    train = [s for s in speakers if s.group == synth.TRAIN]
    seen_recordings = {s.voice.engine_voice.recordings for s in train}
    seen_engines = {s.voice.engine_voice.engine for s in train}
    seen_faces = {s.face.identity for s in train}
    assert seen_engines == TRAINING_ENGINES[held_out] and held_out not in seen_engines
    assert {s.voice.engine_voice.engine for s in speakers if s.group == synth.UNSEEN_ENGINE} == {held_out}
    assert not seen_faces & set(faces.HELD_OUT)
    for s in speakers:
        recordings, engine, identity = s.voice.engine_voice.recordings, s.voice.engine_voice.engine, s.face.identity
        if s.group == synth.UNSEEN_VOICE:
            assert recordings not in seen_recordings and engine in seen_engines and identity in seen_faces
        elif s.group == synth.UNSEEN_FACE:
            assert s.voice == next(t.voice for t in train if t.id == s.voice_of) and identity not in seen_faces
        elif s.group == synth.UNSEEN_ENGINE:
            assert engine not in seen_engines and recordings not in seen_recordings and identity not in seen_faces
    # every speaker sounds different: no two share prosody and channel, apart from the unseen-face clones
    heard = [s.voice for s in speakers if s.group != synth.UNSEEN_FACE]
    assert len(set(heard)) == len(heard)
    assert len({s.face for s in speakers}) == len(speakers)


def test_the_reverse_direction_holds_out_espeak_ng_under_its_own_id(tmp_path):
    speakers, utterances = synth.plan_corpus(TINY, seed=7, held_out_engine=voices.ESPEAK)
    _, default_utterances = synth.plan_corpus(TINY, seed=7)
    assert [u.words for u in utterances] == [u.words for u in default_utterances]  # the same sentences, other voices
    assert synth.corpus_id(TINY, 7, voices.ESPEAK) == "gridsynth-14utt3+1+1+1spk-seed7-v5-without-espeak-ng"
    with pytest.raises(ValueError, match="held-out engine must be one of flite, espeak-ng, not 'festival'"):
        synth.make_speakers(TINY, seed=7, held_out_engine=voices.FESTIVAL)


def test_there_are_at_least_8_faces_and_3_engines():
    assert len(faces.identity_names()) >= 8 and len(faces.training_faces()) >= 6 and len(faces.HELD_OUT) >= 3
    speakers = synth.make_speakers(synth.SIZES["medium"], seed=42)
    assert {s.voice.engine_voice.engine for s in speakers} == set(voices.ENGINES)
    assert {s.face.identity for s in speakers} == set(faces.identity_names())


def test_tiny_corpus_layout_and_splits(tiny_corpus):
    description = json.loads((tiny_corpus / "corpus.json").read_text())
    assert description["id"] == "gridsynth-14utt3+1+1+1spk-seed7-v5"
    assert description["splits"] == {"train": 8, "val": 1, "test_unseen_voice": 2, "test_unseen_face": 2, "test": 1}
    assert description["manifests"] == {split: f"{split}_manifest.txt" for split in SPLITS}
    assert description["groups"] == {"train": 3, "unseen_voice": 1, "unseen_face": 1, "unseen_engine": 1}
    assert description["held_out"] == {"engine": "flite", "faces": list(faces.HELD_OUT)}
    speakers = {
        e.audio_path.parent.name: split
        for split in SPLITS
        for e in read_manifest(tiny_corpus / f"{split}_manifest.txt")
    }
    assert speakers == {"s01": "train", "s02": "train", "s03": "val", "s04": "test_unseen_voice",
                        "s05": "test_unseen_face", "s06": "test"}  # fmt: skip
    rows = description["speakers"]
    assert [(r["engine"], r["group"]) for r in rows] == [
        ("espeak-ng", "train"), ("espeak-ng", "train"), ("festival", "train"), ("espeak-ng", "unseen_voice"),
        ("espeak-ng", "unseen_face"), ("flite", "unseen_engine"),
    ]  # fmt: skip
    assert rows[4]["voice_of"] == "s01" and rows[4]["voice"] == rows[0]["voice"] and rows[4]["face"] in faces.HELD_OUT
    with open(tiny_corpus / "speakers.tsv", newline="") as table:
        assert [row["face"] for row in csv.DictReader(table, delimiter="\t")] == [r["face"] for r in rows]
    assert len((tiny_corpus / "lexicon.txt").read_text().split()) == 51


def test_audio_duration_matches_video_frames(tiny_corpus):
    for entry in all_entries(tiny_corpus):
        info = soundfile.info(entry.audio_path)
        assert info.samplerate == synth.SAMPLE_RATE and info.channels == 1 and info.subtype == "PCM_16"
        frames = read_video(entry.video_path)
        assert abs(len(frames) - info.frames / info.samplerate * synth.FPS) <= 1, entry.where
        assert frames[0].shape == (face.FRAME_SIZE, face.FRAME_SIZE, 3)
        assert cv2.VideoCapture(str(entry.video_path)).get(cv2.CAP_PROP_FPS) == pytest.approx(synth.FPS)


def test_transcripts_are_grid_sentences_in_the_vocabulary(tiny_corpus):
    for entry in all_entries(tiny_corpus):
        words = entry.transcript.split()
        assert len(words) == 6 and all(w in grammar.GRID_WORDS[s] for w, s in zip(words, grammar.GRID_SLOTS))
        assert len(encode(entry.transcript)) == len(entry.transcript)


def test_phoneme_times_are_monotonic_inside_the_audio_and_known(tiny_corpus):
    for entry in all_entries(tiny_corpus):
        phonemes = synth.read_phoneme_table(entry.audio_path.with_name(entry.audio_path.stem + ".phonemes.tsv"))
        duration_ms = 1000 * soundfile.info(entry.audio_path).duration
        assert phonemes[0].start_ms == 0 and phonemes[-1].end_ms <= duration_ms
        for p in phonemes:
            assert p.start_ms < p.end_ms
            assert face.base_phoneme(p.name) in face.PHONEME_VISEMES, (entry.where, p.name)
        for before, after in zip(phonemes, phonemes[1:]):
            assert before.end_ms == after.start_ms
        assert {"rest"} < {face.viseme_of(p.name) for p in phonemes}  # speech, not only pauses


def test_the_lip_pipeline_finds_the_mouth_in_the_corpus_videos(tiny_corpus):
    """The project's own Haar cropper finds a face in >= 99 % of frames, and its mouth box is on the mouth."""
    cropper = HaarLipCropper(detect_every=1)
    with open(tiny_corpus / "speakers.tsv", newline="") as table:
        speakers = {row["speaker"]: row for row in csv.DictReader(table, delimiter="\t")}
    found = total = 0
    for entry in all_entries(tiny_corpus):
        speaker = speakers[entry.audio_path.parent.name]
        size, mouth_x, mouth_y = (float(speaker[column]) for column in ("face_size", "mouth_x", "mouth_y"))
        for frame in read_video(entry.video_path)[::4]:
            box = cropper.find_mouth(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
            total += 1
            if box is not None:
                found += 1
                # off by head motion and the cascade's own jitter only (measured on smoke: <= 0.05 and 0.11)
                assert abs(box[0] - mouth_x) < 0.1 * size and abs(box[1] - mouth_y) < 0.15 * size, entry.where
    assert found / total >= 0.99, f"{found}/{total}"


def files_of(corpus: Path) -> dict[str, bytes]:
    return {str(p.relative_to(corpus)): p.read_bytes() for p in sorted(corpus.rglob("*")) if p.is_file()}


def test_same_seed_same_files_whatever_the_workers_and_interruptions(tiny_corpus, tmp_path):
    again = synth.build_corpus(tmp_path / "again", size=TINY, seed=7, workers=1)
    expected = files_of(tiny_corpus)
    assert files_of(again) == expected  # manifests, speaker table, WAV, MP4 and phoneme tables, byte for byte
    # an interrupted build: no corpus.json, one utterance without audio, another without video
    (again / "corpus.json").unlink()
    # s03's festival process speaks u00002 again before it writes u00008: the same history
    for name in ("s01/u00000.wav", "s01/u00000.phonemes.tsv", "s06/u00005.mp4", "s03/u00008.wav"):
        (again / name).unlink()
    synth.build_corpus(again, size=TINY, seed=7, workers=2)
    assert files_of(again) == expected


BUILD_IN_A_FRESH_PROCESS = """
import ctypes, sys
from avasr.corpus import synth
from avasr.corpus.espeak import process_synthesizer
ctypes.CDLL(None).srand(int(sys.argv[3]))  # another history of libc's rand(), which espeak's noise draws from
process_synthesizer().synthesize("bin blue", "en-us+f3")  # and an espeak-ng that has spoken before
synth.build_corpus(sys.argv[1], size=synth.CorpusSize(14, 3, 1, 1, 1), seed=7, workers=int(sys.argv[2]))
"""


def digests(corpus: Path) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in files_of(corpus).items()}


@pytest.mark.slow
def test_two_builds_in_separate_processes_give_the_same_bytes(tmp_path):
    """Two processes with different histories and worker counts build the same corpus, WAVs and MP4s included."""
    for name, workers, rand_seed in (("one", 1, 11), ("two", 2, 22)):
        command = [sys.executable, "-c", BUILD_IN_A_FRESH_PROCESS, str(tmp_path / name), str(workers), str(rand_seed)]
        subprocess.run(command, check=True, cwd=REPO, capture_output=True, timeout=120)
    first, second = digests(tmp_path / "one"), digests(tmp_path / "two")
    assert sum(name.endswith((".wav", ".mp4")) for name in first) == 28
    assert first == second


def test_isolated_synthesis_ignores_what_the_process_spoke_before():
    """espeak-ng's breath noise (+f3) and pitch flutter carry over in a process; the isolated synthesis does not."""
    code = """
import hashlib, sys
from avasr.corpus.espeak import Synthesizer
synthesizer = Synthesizer()
def digest(seed):
    speech = synthesizer.synthesize_isolated("bin blue at two now", "en-us+f3", 150, 50, 50, seed=seed)
    return hashlib.sha256(speech.samples.tobytes()).hexdigest()
print(digest(5), digest(5), digest(6))
"""
    run = subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True, text=True)
    first, again, other_seed = run.stdout.split()
    assert first == again != other_seed  # the seed, and only the seed, changes the noise


def test_isolated_synthesis_refuses_a_process_that_has_spoken():
    synthesizer = process_synthesizer()
    synthesizer.synthesize("bin", "en-us")
    with pytest.raises(EspeakError, match="never called synthesize"):
        synthesizer.synthesize_isolated("bin", "en-us")


def test_complete_corpus_is_kept_and_another_one_refused(tiny_corpus):
    stamp = (tiny_corpus / "train_manifest.txt").stat().st_mtime_ns
    assert synth.build_corpus(tiny_corpus, size=TINY, seed=7) == tiny_corpus
    assert (tiny_corpus / "train_manifest.txt").stat().st_mtime_ns == stamp
    with pytest.raises(synth.CorpusError, match=r"already holds corpus 'gridsynth-14utt3\+1\+1\+1spk-seed7-v5'"):
        synth.build_corpus(tiny_corpus, size=TINY, seed=8)


def test_other_seed_other_sentences():
    _, first = synth.plan_corpus(synth.SIZES["smoke"], seed=42)
    _, second = synth.plan_corpus(synth.SIZES["smoke"], seed=43)
    assert [u.words for u in first] != [u.words for u in second]
    assert [u.words for u in first] == [u.words for u in synth.plan_corpus(synth.SIZES["smoke"], seed=42)[1]]


def test_extra_val_utterances_come_after_the_others_and_change_none_of_them():
    plain = dataclasses.replace(synth.SIZES["medium"], extra_val_per_speaker=0)
    _, without = synth.plan_corpus(plain, seed=42)
    _, with_extra = synth.plan_corpus(synth.SIZES["medium"], seed=42)
    assert with_extra[: len(without)] == without
    extra = with_extra[len(without) :]
    assert [u.index for u in extra] == list(range(1200, 1392))
    assert {u.split for u in extra} == {"val"}
    assert Counter(u.speaker.id for u in extra) == Counter({f"s{k:02d}": 8 for k in range(1, 25)})
    assert Counter(u.split for u in with_extra)["val"] == 24 * 12
    assert synth.SIZES["medium"].name == "medium" and plain.name == "1200utt24+4+4+4spk"


def test_make_corpus_draws_the_faces_grid(tmp_path):
    run = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "make_corpus.py"), "--faces-grid", str(tmp_path / "faces.png")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert cv2.imread(str(tmp_path / "faces.png")).shape == (2 * 128 + 20, len(faces.identity_names()) * 128, 3)


def test_make_corpus_help():
    result = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "make_corpus.py"), "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "--size" in result.stdout and "smoke" in result.stdout
