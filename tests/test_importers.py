"""The GRID, LRS2 and LRS3 importers on small corpora built here as the real downloads unpack (ffmpeg-made MPEG-1
and MP4 of a real face with their audio tracks, soundfile WAVs, the corpora's own text formats)."""

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from avasr.corpus import grid, lrs
from avasr.corpus.grid import CorpusError, grid_split, read_alignment
from avasr.corpus.lrs import read_lrs_transcript
from avasr.data.manifest import read_manifest
from tests.media import face_frames

REPO = Path(__file__).resolve().parents[1]
GRID_RATE = 25000
FFMPEG_QUIET = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
TONE_HZ = 440


# --- tiny test-pattern MP4s for the LRS edge cases (a tone track, stereo; or none) ------------------------------
@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    video = ["-f", "lavfi", "-i", "testsrc=size=32x32:rate=25"]
    tone = ["-f", "lavfi", "-i", f"sine=frequency={TONE_HZ}:sample_rate=44100"]
    commands = {
        "mp4": [*video, *tone, "-t", "0.2", "-ac", "2", "-c:v", "mpeg4", "-c:a", "aac", "-shortest"],  # stereo
        "silent_mp4": [*video, "-t", "0.2", "-c:v", "mpeg4"],  # no audio stream
    }
    made = {}
    for name, args in commands.items():
        path = folder / f"{name}.mp4"
        subprocess.run([*FFMPEG_QUIET, *args, str(path)], check=True)
        made[name] = path
    return made


# --- GRID: the Zenodo and Sheffield downloads as they unpack, media generated here ------------------------------
GRID_FRAMES = 75  # every GRID video: 3 s at 25 fps
SPEECH = (0.75, 2.25)  # where the words of every fixture GRID clip are spoken, seconds into the video
WORDS = "bin blue at f two now"


def _speech(rate: int, seconds: float = GRID_FRAMES / 25, start: float = 0.0, span=SPEECH) -> np.ndarray:
    """Silence, and a tone where the words are (`span`); the signal from `start` s on. shape = (N,) float32."""
    t = start + np.arange(round(seconds * rate)) / rate
    return np.where((t >= span[0]) & (t < span[1]), 0.3 * np.sin(2 * np.pi * TONE_HZ * t), 0.0).astype(np.float32)


def _av_file(path: Path, frames: np.ndarray, track: Path, codecs: list[str]) -> Path:
    """Gray frames (T, H, W) at 25 fps and a WAV track muxed into one file by ffmpeg."""
    height, width = frames.shape[1:]
    video_in = ["-f", "rawvideo", "-pix_fmt", "gray", "-s", f"{width}x{height}", "-r", "25", "-i", "-"]
    command = [*FFMPEG_QUIET, *video_in, "-i", str(track), *codecs, str(path)]
    subprocess.run(command, input=frames.tobytes(), check=True)
    return path


MPG = ["-c:v", "mpeg1video", "-q:v", "4", "-c:a", "mp2", "-b:a", "128k", "-f", "mpeg"]  # GRID: MPEG-1 and MP2
MP4 = ["-c:v", "mpeg4", "-q:v", "4", "-c:a", "aac", "-shortest"]


@pytest.fixture(scope="module")
def grid_media(tmp_path_factory) -> dict[str, Path]:
    """A GRID clip as released: a 75-frame MPEG-1 of a face whose stereo audio track holds the words, the raw
    50 kHz WAV of the same 3 s, and the 25 kHz WAV trimmed to the words (shorter than the video); also a video
    one frame short, one without an audio track, one that does not decode and an empty file."""
    folder = tmp_path_factory.mktemp("grid_media")
    track = folder / "track.wav"
    sf.write(track, np.stack([_speech(48000)] * 2, axis=1), 48000)
    frames = face_frames(GRID_FRAMES)
    made = {
        "mpg": _av_file(folder / "clip.mpg", frames, track, MPG),
        "short_mpg": _av_file(folder / "short.mpg", frames[: GRID_FRAMES - 1], track, MPG),
        "silent_mpg": _av_file(folder / "silent.mpg", frames, track, ["-an", *MPG]),
        "corrupt": folder / "corrupt.mpg",
        "empty": folder / "empty.mpg",
        "raw": folder / "raw.wav",
        "trimmed": folder / "trimmed.wav",
    }
    made["corrupt"].write_bytes(b"\x00\x00\x01\xba" + bytes(range(256)) * 8)  # a pack header, then garbage
    made["empty"].write_bytes(b"")
    sf.write(made["raw"], _speech(50000), 50000)
    sf.write(made["trimmed"], _speech(25000, SPEECH[1] - SPEECH[0], SPEECH[0]), 25000)
    return made


def _grid_align(words: str = WORDS, span=SPEECH) -> str:
    """A GRID align file: `sil`, the words evenly over `span`, `sil` to the end (times in 1/25000 s)."""
    edges = np.linspace(span[0] * GRID_RATE, span[1] * GRID_RATE, len(words.split()) + 1).round().astype(int)
    lines = [f"0 {edges[0]} sil"] + [f"{a} {b} {w}" for a, b, w in zip(edges, edges[1:], words.split())]
    return "\n".join([*lines, f"{edges[-1]} {GRID_FRAMES * 1000} sil"]) + "\n"


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)


def _zenodo_clip(root, media, speaker, clip_id, words=WORDS, *, align_folder=None, video="mpg", span=SPEECH):
    """As Zenodo record 3625687 unpacks: s<N>.zip -> s<N>/*.mpg, audio_25k.zip -> audio_25k/s<N>/*.wav (trimmed),
    alignments.zip -> alignments/s<N>/*.align. `video`: a key of grid_media, or None; `words` None: no align file."""
    if video:
        _copy(media[video], root / speaker / f"{clip_id}.mpg")
    _copy(media["trimmed"], root / "audio_25k" / speaker / f"{clip_id}.wav")
    if words is None:
        return
    align = root / "alignments" / (align_folder or speaker) / f"{clip_id}.align"
    align.parent.mkdir(parents=True, exist_ok=True)
    align.write_text(_grid_align(words, span))


def _sheffield_clip(root, media, speaker, clip_id, words=WORDS, *, raw=True):
    """As the Sheffield site's per-speaker archives unpack: s<N>.mpg_vcd.zip -> s<N>/*.mpg; align/s<N>.tar, unpacked
    in s<N>/ -> s<N>/align/*.align; audio/s<N>_50kHz.tar, unpacked in the root -> s<N>/*.wav (raw 50 kHz)."""
    _copy(media["mpg"], root / speaker / f"{clip_id}.mpg")
    (root / speaker / "align").mkdir(parents=True, exist_ok=True)
    (root / speaker / "align" / f"{clip_id}.align").write_text(_grid_align(words))
    if raw:
        _copy(media["raw"], root / speaker / f"{clip_id}.wav")


def _speech_span(wav: Path) -> tuple[float, float, int, float]:
    """(first and last loud instant in s, sample rate, duration in s) of a WAV."""
    samples, rate = sf.read(wav)
    loud = np.flatnonzero(np.abs(samples) > 0.1) / rate
    return loud[0], loud[-1], rate, len(samples) / rate


@pytest.fixture
def grid_root(tmp_path, grid_media) -> Path:
    """Both layouts in one root (s5 from Sheffield), and a clip for every skip."""
    root = tmp_path / "grid"
    _zenodo_clip(root, grid_media, "s1", "bbaf2n")  # a test speaker
    _zenodo_clip(root, grid_media, "s3", "lgwz5a", "lay green with z five again")
    _zenodo_clip(root, grid_media, "s3", "pbai3p", "place blue at i three please")
    _sheffield_clip(root, grid_media, "s5", "sria1s", "set red in a one soon")
    _zenodo_clip(root, grid_media, "s4", "swbg4n", "set white by g four now", video="empty")
    _zenodo_clip(root, grid_media, "s4", "bwbg4n", None)  # video and audio, no alignment
    _zenodo_clip(root, grid_media, "s4", "lrwh8a", "lay red with h eight again", video="silent_mpg")
    for clip_id, words in [("bbac1a", "bin blue at c one again"), ("pgwe6s", "place green with e six soon")]:
        _zenodo_clip(root, grid_media, "s21", clip_id, words, video=None)  # s21: no video in the real corpus
    return root


def test_grid_import_keeps_complete_clips_and_counts_every_skip(grid_root, tmp_path):
    out = tmp_path / "manifests"
    report = grid.import_grid(grid_root, out, test_speakers=("s1",), val_percent=0, jobs=2)
    assert report.kept == {"train": 3, "val": 0, "test": 1}
    skipped = {reason: sorted(items) for reason, items in report.skipped.items()}
    (failure,) = skipped.pop(grid.EXTRACTION_FAILED)
    assert failure.startswith(str(grid_root / "s4" / "lrwh8a.mpg"))  # ffmpeg's own words follow
    assert skipped == {
        grid.EMPTY_VIDEO: ["s4/swbg4n"],
        grid.NO_ALIGNMENT: ["s4/bwbg4n"],
        grid.MISSING_VIDEO: ["s21/bbac1a", "s21/pgwe6s"],
    }
    train = {e.utterance_id: e for e in read_manifest(out / "train_manifest.txt")}
    assert {k: e.transcript for k, e in train.items()} == {
        "s3/lgwz5a": "lay green with z five again",
        "s3/pbai3p": "place blue at i three please",
        "s5/sria1s": "set red in a one soon",
    }
    assert train["s3/lgwz5a"].audio_path == (out / "audio" / "s3" / "lgwz5a.wav").resolve()
    assert train["s5/sria1s"].audio_path == (grid_root / "s5" / "sria1s.wav").resolve()
    assert train["s5/sria1s"].video_path == (grid_root / "s5" / "sria1s.mpg").resolve()
    (test,) = read_manifest(out / "test_manifest.txt")
    assert (test.utterance_id, test.transcript) == ("s1/bbaf2n", "bin blue at f two now")
    assert (out / "val_manifest.txt").read_text() == "\n"  # written even when empty, so the set is complete
    # the manifest stores paths relative to itself
    first_line = (out / "test_manifest.txt").read_text().splitlines()[0]
    assert first_line == "audio/s1/bbaf2n.wav|../grid/s1/bbaf2n.mpg|bin blue at f two now"


def test_grid_val_split_takes_other_speakers_clips_never_test_speakers(grid_root, tmp_path):
    report = grid.import_grid(grid_root, tmp_path / "m", val_percent=100, test_speakers=("s3",))
    assert report.kept == {"train": 0, "val": 2, "test": 2}
    assert [e.utterance_id for e in read_manifest(tmp_path / "m" / "val_manifest.txt")] == ["s1/bbaf2n", "s5/sria1s"]


def test_grid_split_is_a_stable_hash_share():
    ids = [
        "".join(parts)
        for parts in itertools.product("blps", "bgrw", "abiw", "abcdefgh", "z12", "anps")  # GRID's six word slots
    ]
    splits = [grid_split("s3", clip_id) for clip_id in ids]
    assert splits.count("test") == 0
    assert 0.04 < splits.count("val") / len(ids) < 0.06  # the documented 5 %
    assert [grid_split(s, "bbaf2n") for s in ("s1", "s2", "s20", "s22")] == ["test"] * 4
    assert splits == [grid_split("s3", clip_id) for clip_id in ids]


def _align_text(words: str, pause_after: int | None = None) -> str:
    """A GRID align file: leading/trailing `sil`, optional `sp`, times in 1/25000 s."""
    lines, t = ["0 23750 sil"], 23750
    for i, word in enumerate(words.split()):
        lines.append(f"{t} {t + 5000} {word}")
        t += 5000
        if i == pause_after:
            lines.append(f"{t} {t + 1000} sp")
            t += 1000
    lines.append(f"{t} 74500 sil")
    return "\n".join(lines) + "\n"


def test_grid_alignment_words_and_times(tmp_path):
    path = tmp_path / "x.align"
    path.write_text(_align_text("bin blue at f two now", pause_after=1))
    words = read_alignment(path)
    assert [w.word for w in words] == ["sil", "bin", "blue", "sp", "at", "f", "two", "now", "sil"]
    assert (words[1].start_s, words[1].end_s) == (0.95, 1.15)  # 23750 / 25000, 28750 / 25000
    assert words[-1].end_s == 2.98
    assert grid.alignment_transcript(words) == "bin blue at f two now"


def test_grid_bad_alignment_line_names_file_and_line(tmp_path, grid_media):
    root = tmp_path / "grid"
    _zenodo_clip(root, grid_media, "s3", "bbaf2n")
    align = root / "alignments" / "s3" / "bbaf2n.align"
    align.write_text("0 23750 sil\n23750 bin\n")
    with pytest.raises(CorpusError, match=rf"{align}:2: expected 'start end word'"):
        grid.import_grid(root, tmp_path / "m", test_speakers=("s3",))


def test_grid_without_speaker_folders_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no GRID speaker folders"):
        grid.import_grid(tmp_path / "empty", tmp_path / "m")


@pytest.fixture
def zenodo_root(tmp_path, grid_media) -> Path:
    """The Zenodo mix-up in miniature: alignments/s5 holds s6's clips and vice versa; alignments/s20 holds s21's."""
    root = tmp_path / "zenodo"
    _zenodo_clip(root, grid_media, "s1", "prac6n", "place red at c six now")  # a test speaker, folder s1 is s1's
    _zenodo_clip(root, grid_media, "s5", "bbaf2n", align_folder="s6")
    _zenodo_clip(root, grid_media, "s6", "lgwz5a", "lay green with z five again", align_folder="s5")
    _zenodo_clip(root, grid_media, "s20", "pbai3p", None)  # no folder of the zip belongs to s20
    _zenodo_clip(root, grid_media, "s21", "sria1s", "set red in a one soon", video=None, align_folder="s20")
    (root / "alignments" / "s21").mkdir()  # a folder the remap does not know
    (root / "alignments" / "s21" / "stray.align").write_text(_grid_align("set red in a one soon"))
    return root


def test_grid_zenodo_remap_reassigns_alignment_folders(zenodo_root, tmp_path):
    out = tmp_path / "remapped"
    report = grid.import_grid(zenodo_root, out, zenodo_remap=True, test_speakers=("s1",), val_percent=0)
    train = {e.utterance_id: e.transcript for e in read_manifest(out / "train_manifest.txt")}
    assert train == {"s5/bbaf2n": "bin blue at f two now", "s6/lgwz5a": "lay green with z five again"}
    assert {reason: sorted(items) for reason, items in report.skipped.items()} == {
        grid.NO_ALIGNMENT: ["s20/pbai3p"],
        grid.MISSING_VIDEO: ["s21/sria1s"],
        grid.OUTSIDE_REMAP: ["s21/stray.align"],
    }


def test_grid_without_remap_the_zenodo_mixup_shows_as_unaligned_clips(zenodo_root, tmp_path):
    report = grid.import_grid(zenodo_root, tmp_path / "plain", test_speakers=("s1",), val_percent=0)
    assert report.kept == {"train": 0, "val": 0, "test": 1}
    assert sorted(report.skipped[grid.NO_ALIGNMENT]) == ["s20/pbai3p", "s5/bbaf2n", "s6/lgwz5a"]
    assert sorted(report.skipped[grid.MISSING_VIDEO]) == ["s20/sria1s", "s21/stray", "s5/lgwz5a", "s6/bbaf2n"]


def test_grid_audio_is_the_mpg_track_as_long_as_the_video(grid_media, tmp_path):
    root, out = tmp_path / "zenodo", tmp_path / "m"
    _zenodo_clip(root, grid_media, "s1", "bbaf2n")
    _zenodo_clip(root, grid_media, "s3", "lgwz5a", "lay green with z five again")
    report = grid.import_grid(root, out, test_speakers=("s1",), val_percent=0)
    assert report.kept == {"train": 1, "val": 0, "test": 1} and report.total_skipped == 0
    (entry,) = read_manifest(out / "train_manifest.txt")
    assert entry.audio_path == (out / "audio" / "s3" / "lgwz5a.wav").resolve()
    start, end, rate, seconds = _speech_span(entry.audio_path)
    assert rate == 16000 and abs(seconds - 3.0) < 0.03  # the video's 75 frames
    assert abs(start - SPEECH[0]) < 0.03 and abs(end - SPEECH[1]) < 0.03  # the words where the lips say them


def test_grid_25k_audio_on_request_is_put_back_on_the_alignment_timeline_or_refused(grid_media, tmp_path):
    root, out = tmp_path / "zenodo", tmp_path / "m"
    _zenodo_clip(root, grid_media, "s1", "bbaf2n")
    _zenodo_clip(root, grid_media, "s3", "lgwz5a")
    _zenodo_clip(root, grid_media, "s3", "pbai3p", span=(0.5, 2.5))  # words over 2 s: the 1.5 s file is not them
    report = grid.import_grid(root, out, audio="25k", test_speakers=("s1",), val_percent=0)
    assert report.kept == {"train": 1, "val": 0, "test": 1}
    assert dict(report.skipped) == {grid.AUDIO_25K_MISMATCH: ["s3/pbai3p (audio 1.50 s, words 2.00 s)"]}
    (entry,) = read_manifest(out / "train_manifest.txt")
    assert entry.audio_path == (out / "audio_25k_aligned" / "s3" / "lgwz5a.wav").resolve()
    start, end, rate, seconds = _speech_span(entry.audio_path)
    assert (rate, seconds) == (25000, 3.0)
    assert abs(start - SPEECH[0]) < 0.001 and abs(end - SPEECH[1]) < 0.001


def test_grid_sheffield_layout_reads_per_speaker_align_folders_and_raw_50k_audio(grid_media, tmp_path):
    root, out = tmp_path / "sheffield", tmp_path / "m"
    _sheffield_clip(root, grid_media, "s1", "bbaf2n")
    _sheffield_clip(root, grid_media, "s3", "lgwz5a", "lay green with z five again")
    _sheffield_clip(root, grid_media, "s3", "pbai3p", "place blue at i three please", raw=False)
    report = grid.import_grid(root, out, test_speakers=("s1",), val_percent=0)
    assert report.kept == {"train": 2, "val": 0, "test": 1} and report.total_skipped == 0
    train = {e.utterance_id: e for e in read_manifest(out / "train_manifest.txt")}
    assert train["s3/lgwz5a"].audio_path == (root / "s3" / "lgwz5a.wav").resolve()  # raw 50 kHz, used as it is
    assert train["s3/pbai3p"].audio_path == (out / "audio" / "s3" / "pbai3p.wav").resolve()  # no raw: the track
    assert train["s3/pbai3p"].transcript == "place blue at i three please"


def test_grid_cli_suggests_the_remap_only_for_the_zenodo_layout(grid_media, tmp_path):
    sheffield, zenodo = tmp_path / "sheffield", tmp_path / "zenodo"
    for speaker in ("s1", "s3"):
        _sheffield_clip(sheffield, grid_media, speaker, "bbaf2n")
    _zenodo_clip(zenodo, grid_media, "s1", "bbaf2n")
    _zenodo_clip(zenodo, grid_media, "s5", "lgwz5a", align_folder="s6")  # the Zenodo mix-up
    _zenodo_clip(zenodo, grid_media, "s6", "pbai3p", align_folder="s5")
    common = ["--format", "grid", "--test-speakers", "s1", "--val-percent", "0"]
    done = _cli(*common, "--root", str(sheffield), "--out", str(tmp_path / "a"))
    assert done.returncode == 0, done.stderr
    assert "GRID: kept 2 utterances, skipped 0" in done.stdout and "zenodo-remap" not in done.stderr
    done = _cli(*common, "--root", str(zenodo), "--out", str(tmp_path / "b"))
    assert "GRID: kept 1 utterances, skipped 4" in done.stdout and "try --zenodo-remap" in done.stderr


def test_grid_test_speaker_without_utterances_is_an_error(grid_media, tmp_path):
    root = tmp_path / "zenodo"
    _zenodo_clip(root, grid_media, "s1", "bbaf2n")
    _zenodo_clip(root, grid_media, "s20", "lgwz5a", align_folder="s21")  # no folder of the zip is s20's
    with pytest.raises(CorpusError, match=r"test speaker s20 has no usable utterance \(1 clip: 1 no alignment\)"):
        grid.import_grid(root, tmp_path / "m", zenodo_remap=True, test_speakers=("s1", "s20"))
    with pytest.raises(CorpusError, match=r"test speaker s2 has no usable utterance \(no clip in the download\)"):
        grid.import_grid(root, tmp_path / "m", test_speakers=("s1", "s2"))
    assert not (tmp_path / "m").exists()  # no manifest of a smaller test set was written


def test_grid_videos_with_the_wrong_frame_count_or_undecodable_are_skipped_and_counted(grid_media, tmp_path):
    root = tmp_path / "zenodo"
    _zenodo_clip(root, grid_media, "s1", "bbaf2n")
    _zenodo_clip(root, grid_media, "s3", "lgwz5a", video="short_mpg")
    _zenodo_clip(root, grid_media, "s3", "pbai3p", video="corrupt")
    _zenodo_clip(root, grid_media, "s3", "sria1s")
    report = grid.import_grid(root, tmp_path / "m", test_speakers=("s1",), val_percent=0)
    assert report.kept == {"train": 1, "val": 0, "test": 1}
    assert dict(report.skipped) == {
        grid.WRONG_FRAME_COUNT: ["s3/lgwz5a (74 frames, not 75)"],
        grid.UNDECODABLE_VIDEO: ["s3/pbai3p"],
    }
    assert "skipped 1: wrong frame count (e.g. s3/lgwz5a (74 frames, not 75))" in report.summary()
    anyhow = grid.import_grid(root, tmp_path / "n", frames=0, test_speakers=("s1",), val_percent=0)
    assert anyhow.kept["train"] == 2  # any frame count on request; an undecodable video never


# --- LRS: transcripts, audio extraction and bad input, on tiny clips ---------------------------------------------
def _lrs_clip(root: Path, media, name: str, text: str | None, video: str | None = "mp4", encoding="iso-8859-1"):
    """name: "<split>/<video_id>/<NNNNN>"; text None: no .txt; video: "mp4" | "silent_mp4" | None."""
    stem = root / name
    stem.parent.mkdir(parents=True, exist_ok=True)
    if video:
        shutil.copy(media[video], stem.with_suffix(".mp4"))
    if text is not None:
        stem.with_suffix(".txt").write_bytes(text.encode(encoding))


def _lrs_txt(transcript: str) -> str:
    words = "".join(f"{w} {0.1 * i:.2f} {0.1 * i + 0.08:.2f} 3.5\n" for i, w in enumerate(transcript.split()))
    return f"Text:  {transcript}\nConf:  4\nRef:   abcdefghijk\n\nWORD START END ASDSCORE\n{words}"


@pytest.fixture
def lrs_root(tmp_path, media) -> Path:
    root = tmp_path / "lrs3"
    _lrs_clip(root, media, "trainval/0af00UcTOSc/00001", _lrs_txt("SO WE'RE GOING TO TALK"))
    _lrs_clip(root, media, "trainval/0af00UcTOSc/00002", _lrs_txt("{LG} IT WAS FUNNY {NS}"))
    _lrs_clip(root, media, "trainval/0akiEFwtkyA/00001", _lrs_txt("A CAFÉ IN PARIS"))  # É: ISO-8859-1 byte
    _lrs_clip(root, media, "trainval/0akiEFwtkyA/00002", _lrs_txt("{LG}"))  # nothing left after the tag
    _lrs_clip(root, media, "trainval/0akiEFwtkyA/00003", None)  # video without transcript
    _lrs_clip(root, media, "trainval/0akiEFwtkyA/00004", _lrs_txt("NO VIDEO HERE"), video=None)
    _lrs_clip(root, media, "trainval/0akiEFwtkyA/00005", _lrs_txt("NO SOUND"), video="silent_mp4")
    _lrs_clip(root, media, "test/0Fi83BHQsMA/00002", _lrs_txt("THANK YOU"))
    return root


def test_lrs_import_keeps_usable_clips_and_counts_every_skip(lrs_root, tmp_path):
    out = tmp_path / "out"
    report = lrs.import_lrs3(lrs_root, out, jobs=2)
    assert report.kept == {"train": 2, "val": 0, "test": 1}
    assert set(report.skipped) == {
        lrs.OUT_OF_VOCABULARY, lrs.EMPTY_TRANSCRIPT, lrs.NO_TRANSCRIPT, lrs.NO_VIDEO, lrs.EXTRACTION_FAILED
    }  # fmt: skip
    assert report.skipped[lrs.OUT_OF_VOCABULARY] == [str(lrs_root / "trainval/0akiEFwtkyA/00001.txt")]
    assert report.skipped[lrs.EMPTY_TRANSCRIPT] == [str(lrs_root / "trainval/0akiEFwtkyA/00002.txt")]
    assert report.skipped[lrs.NO_TRANSCRIPT] == ["trainval/0akiEFwtkyA/00003"]
    assert report.skipped[lrs.NO_VIDEO] == ["trainval/0akiEFwtkyA/00004"]
    (failure,) = report.skipped[lrs.EXTRACTION_FAILED]
    assert failure.startswith(str(lrs_root / "trainval/0akiEFwtkyA/00005.mp4"))
    entries = read_manifest(out / "train_manifest.txt")
    assert [(e.video_path, e.transcript) for e in entries] == [
        ((lrs_root / "trainval/0af00UcTOSc/00001.mp4").resolve(), "so we're going to talk"),
        ((lrs_root / "trainval/0af00UcTOSc/00002.mp4").resolve(), "it was funny"),
    ]
    assert entries[0].audio_path == (out / "audio/trainval/0af00UcTOSc/00001.wav").resolve()
    (test,) = read_manifest(out / "test_manifest.txt")
    assert test.transcript == "thank you"
    assert not list(out.rglob("*.partial"))  # the failed extraction left nothing behind


def test_lrs_extracted_audio_is_16k_mono_and_holds_the_track(lrs_root, tmp_path):
    lrs.import_lrs3(lrs_root, tmp_path / "out", jobs=1)
    wav = tmp_path / "out/audio/test/0Fi83BHQsMA/00002.wav"
    samples, rate = sf.read(wav)
    assert rate == 16000 and samples.ndim == 1  # the MP4's track is 44.1 kHz stereo
    assert abs(len(samples) - 3200) < 400  # 0.2 s, give or take the AAC encoder's padding
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(spectrum.argmax() * rate / len(samples) - TONE_HZ) < 10


def test_lrs_cached_wav_is_reused_until_the_video_is_newer(lrs_root, tmp_path):
    out = tmp_path / "out"
    lrs.import_lrs3(lrs_root, out, jobs=1)
    wav = out / "audio/test/0Fi83BHQsMA/00002.wav"
    old = wav.stat().st_mtime_ns - 10**9
    os.utime(wav, ns=(old, old))  # older than before, but still newer than the MP4 (copied earlier)
    video = lrs_root / "test/0Fi83BHQsMA/00002.mp4"
    os.utime(video, ns=(old - 10**9, old - 10**9))
    lrs.import_lrs3(lrs_root, out, jobs=1)
    assert wav.stat().st_mtime_ns == old  # not extracted again
    os.utime(video, ns=(old + 10**9, old + 10**9))  # the video changed after the WAV was made
    lrs.import_lrs3(lrs_root, out, jobs=1)
    assert wav.stat().st_mtime_ns > old + 10**9


def test_lrs_txt_without_text_line_names_the_file(lrs_root, tmp_path, media):
    bad = "trainval/0af00UcTOSc/00003"
    _lrs_clip(lrs_root, media, bad, "Conf:  4\n\nWORD START END ASDSCORE\n")
    with pytest.raises(CorpusError, match=rf"{lrs_root / bad}.txt: no 'Text:' line"):
        lrs.import_lrs3(lrs_root, tmp_path / "out")


def test_lrs_transcript_reading_strips_tags_and_decodes_latin1(tmp_path):
    path = tmp_path / "00001.txt"
    path.write_bytes("Text:  {LG} DÉJÀ VU {NS}\nConf:  3\n".encode("iso-8859-1"))
    assert read_lrs_transcript(path) == "DÉJÀ VU"


def test_lrs_without_ffmpeg_points_at_make_setup(lrs_root, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    with pytest.raises(CorpusError, match="ffmpeg not found on PATH.*make setup"):
        lrs.import_lrs3(lrs_root, tmp_path / "out")


def test_lrs_root_without_split_folders_is_refused(tmp_path):
    (tmp_path / "lrs3" / "trainval").mkdir(parents=True)
    with pytest.raises(CorpusError, match="no split folders"):
        lrs.import_lrs3(tmp_path / "lrs3", tmp_path / "out")


# --- command line ----------------------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    script = REPO / "experiments" / "import_corpus.py"
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, cwd=REPO)


def test_cli_imports_grid_and_prints_the_report(grid_root, tmp_path):
    common = ["--format", "grid", "--test-speakers", "s1", "--val-percent", "0"]
    result = _cli(*common, "--root", str(grid_root), "--out", str(tmp_path / "m"))
    assert result.returncode == 0, result.stderr
    assert "GRID: kept 4 utterances, skipped 5" in result.stdout
    assert "skipped 2: missing video (e.g. s21/bbac1a, s21/pgwe6s)" in result.stdout
    assert (tmp_path / "m" / "train_manifest.txt").is_file()


def test_cli_reports_bad_input_without_a_traceback(tmp_path):
    result = _cli("--format", "lrs3", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "m"))
    assert result.returncode == 1
    assert result.stderr.strip() == f"import_corpus: {tmp_path / 'missing'}: LRS root is not a folder"
    assert _cli("--help").returncode == 0


# --- LRS2 and LRS3 as downloaded ---------------------------------------------------------------------------------
LRS_SECONDS = 1.6  # a main/, trainval/ or test/ clip
LONG_SECONDS = 4.0  # a pretrain/ clip, cut at its pauses
LONG_WORDS = [("SO", 0.32, 0.60), ("WE", 0.60, 0.92), ("LOOK", 1.60, 1.88), ("AT", 1.88, 2.12), ("THIS", 2.80, 3.28),
              ("NOW", 3.28, 3.60)]  # fmt: skip


@pytest.fixture(scope="module")
def lrs_media(tmp_path_factory) -> dict[str, Path]:
    """LRS clips as released: MP4 face tracks at 25 fps with their audio (1.6 s, and a 4 s pretrain clip)."""
    folder = tmp_path_factory.mktemp("lrs_media")
    made = {}
    for name, seconds in (("clip", LRS_SECONDS), ("long", LONG_SECONDS)):
        track = folder / f"{name}.wav"
        sf.write(track, _speech(44100, seconds, span=(0.2, seconds - 0.2)), 44100)
        made[name] = _av_file(folder / f"{name}.mp4", face_frames(round(seconds * 25)), track, MP4)
    return made


def _main_txt(text: str) -> str:
    """LRS2 main/: the transcript and its confidence, nothing else."""
    return f"Text:  {text}\nConf:  5\n"


def _frames_txt(text: str) -> str:
    """LRS3 trainval/ and test/: the transcript, then the face box of every frame."""
    boxes = "".join(f"{i:06d} \t0.386\t0.254\t0.167\t0.319\n" for i in range(3))
    return f"Text:  {text}\nConf:  4\n\nFRAME \tX\tY\tW\tH\n{boxes}"


def _words_txt(words) -> str:
    """pretrain/: the transcript, then the word table `WORD START END ASDSCORE`."""
    table = "".join(f"{w} {s:.2f} {e:.2f} 4.1\n" for w, s, e in words)
    return f"Text:  {' '.join(w for w, _, _ in words)}\nConf:  3\n\nWORD START END ASDSCORE\n{table}"


def _lrs_file(root: Path, media, name: str, txt: str, video: str = "clip") -> None:
    """name: "<folder>/<programme or talk>/<NNNNN>"."""
    _copy(media[video], (root / name).with_suffix(".mp4"))
    (root / name).with_suffix(".txt").write_bytes(txt.encode("iso-8859-1"))


@pytest.fixture
def lrs2_root(tmp_path, lrs_media) -> Path:
    """mvlrs_v1/ with main/ holding train, val and test clips together, pretrain/, and the four official lists."""
    root = tmp_path / "mvlrs_v1"
    for name, text in [
        ("5535415699068794046/00001", "BIN BLUE"),  # train
        ("5535415699068794046/00002", "LAY RED"),  # train
        ("5536038039829982468/00001", "SET GREEN"),  # val
        ("6300370419826092098/00001", "PLACE AT"),  # test
        ("6300370419826092098/00002", "BIN A NOW"),  # test
        ("6331559613336179781/00001", "LAY Z"),  # in no list
    ]:
        _lrs_file(root, lrs_media, f"main/{name}", _main_txt(text))
    _lrs_file(root, lrs_media, "pretrain/5535415699068794046/00010", _words_txt(LONG_WORDS), video="long")
    (root / "train.txt").write_text("5535415699068794046/00001\n5535415699068794046/00002\n5535415699068794046/00099\n")
    (root / "val.txt").write_text("5536038039829982468/00001\n")
    (root / "test.txt").write_text("6300370419826092098/00001 NF\n6300370419826092098/00002 MV\n")
    (root / "pretrain.txt").write_text("5535415699068794046/00010\n")
    return root


def test_lrs2_splits_come_from_the_official_lists(lrs2_root, tmp_path):
    out = tmp_path / "out"
    report = lrs.import_lrs2(lrs2_root, out, jobs=2)
    assert report.kept == {"pretrain": 1, "train": 2, "val": 1, "test": 2}
    ids = {split: [e.utterance_id for e in read_manifest(out / f"{split}_manifest.txt")] for split in report.kept}
    assert ids == {
        "pretrain": ["5535415699068794046/00010"],
        "train": ["5535415699068794046/00001", "5535415699068794046/00002"],
        "val": ["5536038039829982468/00001"],
        "test": ["6300370419826092098/00001", "6300370419826092098/00002"],
    }
    assert dict(report.skipped) == {
        lrs.IN_NO_LIST: ["main/6331559613336179781/00001"],
        lrs.LISTED_BUT_MISSING: [f"{lrs2_root / 'train.txt'}:3: 5535415699068794046/00099"],
    }
    assert "programme" in report.summary()  # "speaker" here is the BBC programme a clip comes from


def test_lrs2_clip_in_two_lists_or_a_missing_list_is_an_error(lrs2_root, tmp_path):
    (lrs2_root / "val.txt").write_text("5536038039829982468/00001\n5535415699068794046/00002\n")
    with pytest.raises(
        CorpusError,
        match=rf"{lrs2_root / 'val.txt'}:2: 5535415699068794046/00002 is also listed in "
        rf"{lrs2_root / 'train.txt'}:2",
    ):
        lrs.import_lrs2(lrs2_root, tmp_path / "out")
    (lrs2_root / "test.txt").unlink()
    with pytest.raises(CorpusError, match=rf"{lrs2_root}: LRS2's split list test.txt is missing"):
        lrs.import_lrs2(lrs2_root, tmp_path / "out")


VAL_TALK = "0Fi83BHQsMA"  # a trainval folder the default 5 % hash holds out (crc32 % 100 == 4)


@pytest.fixture
def lrs3_root(tmp_path, lrs_media) -> Path:
    root = tmp_path / "lrs3"
    for name, text in [
        ("trainval/0af00UcTOSc/00001", "BIN BLUE"),
        ("trainval/0af00UcTOSc/00002", "LAY RED"),
        ("trainval/0akiEFwtkyA/00001", "SET GREEN"),
        (f"trainval/{VAL_TALK}/00001", "PLACE AT"),
        ("test/1BHOflzxPjI/00001", "BIN A NOW"),
    ]:
        _lrs_file(root, lrs_media, name, _frames_txt(text))
    _lrs_file(root, lrs_media, "pretrain/0af00UcTOSc/00001", _words_txt(LONG_WORDS), video="long")
    _lrs_file(root, lrs_media, f"pretrain/{VAL_TALK}/00001", _words_txt([("LAY", 0.2, 0.5), ("Z", 0.5, 0.8)]))
    return root


def _speakers(manifest: Path) -> set[str]:
    return {e.speaker for e in read_manifest(manifest)}


def test_lrs3_validation_is_speaker_disjoint_from_train_and_pretrain(lrs3_root, tmp_path):
    out = tmp_path / "out"
    report = lrs.import_lrs3(lrs3_root, out, jobs=2)
    assert report.kept == {"pretrain": 1, "train": 3, "val": 1, "test": 1}
    assert _speakers(out / "val_manifest.txt") == {VAL_TALK}
    assert VAL_TALK not in _speakers(out / "train_manifest.txt") | _speakers(out / "pretrain_manifest.txt")
    assert dict(report.skipped) == {lrs.VAL_TALK_PRETRAIN: [f"pretrain/{VAL_TALK}/00001"]}
    assert "val: 1 of 3 trainval folders held out" in report.summary()


def test_lrs3_validation_talks_from_an_id_file(lrs3_root, tmp_path):
    ids = tmp_path / "val_ids.txt"
    ids.write_text("# held out\n0akiEFwtkyA/00001\n")  # a folder, or a clip naming its folder
    report = lrs.import_lrs3(lrs3_root, tmp_path / "out", val_ids=ids, jobs=2)
    assert report.kept == {"pretrain": 2, "train": 3, "val": 1, "test": 1}
    assert _speakers(tmp_path / "out" / "val_manifest.txt") == {"0akiEFwtkyA"}
    ids.write_text("0akiEFwtkyA\nnot_a_talk\n")
    with pytest.raises(CorpusError, match=rf"{ids}:2: not_a_talk is no folder of {lrs3_root / 'trainval'}"):
        lrs.import_lrs3(lrs3_root, tmp_path / "out", val_ids=ids)


def test_lrs3_pretrain_clips_longer_than_the_limit_are_cut_at_pauses(lrs3_root, tmp_path):
    out = tmp_path / "out"
    lrs.import_lrs3(lrs3_root, out, max_seconds=2.5, min_pause=0.4, jobs=2)
    (first, second) = read_manifest(out / "pretrain_manifest.txt")
    assert [(e.transcript, e.segment) for e in (first, second)] == [
        ("so we look at", (0.12, 2.32)),
        ("this now", (2.6, 3.8)),
    ]
    assert first.audio_path == second.audio_path == (out / "audio/pretrain/0af00UcTOSc/00001.wav").resolve()
    lines = (out / "pretrain_manifest.txt").read_text().splitlines()
    assert lines[0].endswith("|so we look at|0.12|2.32")
    lrs.import_lrs3(lrs3_root, out)  # the default limit (15 s): kept whole, a three-field line
    (whole,) = read_manifest(out / "pretrain_manifest.txt")
    assert (whole.transcript, whole.segment) == ("so we look at this now", None)


def test_cutting_at_pauses_keeps_segments_within_the_limit_and_drops_speech_without_a_pause():
    words = [lrs.Word(w, s, e) for w, s, e in LONG_WORDS]
    segments, dropped = lrs.cut_at_pauses(words, max_seconds=2.5, min_pause=0.4)
    assert [(s.start_s, s.end_s, s.text) for s in segments] == [(0.12, 2.32, "SO WE LOOK AT"), (2.6, 3.8, "THIS NOW")]
    assert dropped == []
    segments, _ = lrs.cut_at_pauses(words, max_seconds=1.2, min_pause=0.4)  # each phrase alone
    assert [s.text for s in segments] == ["SO WE", "LOOK AT", "THIS NOW"]
    segments, dropped = lrs.cut_at_pauses(words, max_seconds=1.0, min_pause=0.4)
    assert [s.text for s in segments] == ["SO WE", "LOOK AT"] and dropped == [(2.6, 3.8)]  # 1.2 s without a pause


def test_word_table_is_read_and_frame_blocks_are_not_words(tmp_path):
    path = tmp_path / "00001.txt"
    path.write_text(_words_txt(LONG_WORDS[:2]) + "\n" + _frames_txt("X").split("\n\n")[1])
    assert lrs.read_word_table(path) == [lrs.Word("SO", 0.32, 0.60), lrs.Word("WE", 0.60, 0.92)]
    path.write_text(_frames_txt("SO WE"))
    assert lrs.read_word_table(path) == []
    path.write_text(_words_txt(LONG_WORDS[:2]).replace("0.60 0.92", "0.60"))
    with pytest.raises(CorpusError, match=rf"{path}:6: expected 'WORD START END ASDSCORE'"):
        lrs.read_word_table(path)


# --- each importer through the command line, into prepare.py and one epoch of training ------------------------
def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "experiments" / name), *args], capture_output=True, text=True,
                          cwd=REPO, timeout=600)  # fmt: skip


@pytest.fixture
def downloads(tmp_path, grid_media, lrs2_root, lrs3_root) -> dict[str, tuple[Path, list[str]]]:
    """corpus format -> (root, import flags) of a small download tree."""
    grid_root = tmp_path / "grid"
    for speaker, clip_id, words in [
        ("s1", "bbaf2n", WORDS),
        ("s1", "lgwz5a", "lay green with z five again"),
        ("s3", "pbai3p", "place blue at i three please"),
        ("s3", "sria1s", "set red in a one soon"),
        ("s4", "swbg4n", "set white by g four now"),
    ]:
        _zenodo_clip(grid_root, grid_media, speaker, clip_id, words)
    return {
        "grid": (grid_root, ["--test-speakers", "s1", "--val-percent", "0"]),
        "lrs2": (lrs2_root, ["--max-seconds", "2.5"]),
        "lrs3": (lrs3_root, ["--max-seconds", "2.5"]),
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    "corpus, train, val",
    [
        ("grid", "train", "test"),
        ("lrs2", "train", "val"),
        ("lrs3", "pretrain", "val"),
    ],
)
def test_import_then_prepare_then_one_epoch_of_training(downloads, tmp_path, corpus, train, val):
    root, flags = downloads[corpus]
    out, cache = tmp_path / f"{corpus}_manifests", tmp_path / "cache"
    done = _script("import_corpus.py", "--format", corpus, "--root", str(root), "--out", str(out), *flags)
    assert done.returncode == 0, done.stderr
    manifests = [out / f"{split}_manifest.txt" for split in (train, val)]
    done = _script("prepare.py", *(f"--manifest={m}" for m in manifests), "--cache-dir", str(cache))
    assert done.returncode == 0, done.stderr[-3000:]
    done = _script("train.py", "--train-manifest", str(manifests[0]), "--val-manifest", str(manifests[1]),
                   "--output-dir", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "2", "--feature-dim", "32",
                   "--encoder-channels", "4", "8", "8", "--cache-dir", str(cache))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "best epoch 1" in done.stdout and (tmp_path / "run" / "best_model.pth").is_file()
