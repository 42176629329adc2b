"""GRID and LRS3 importers on tiny corpora built here in the real layouts (ffmpeg-made mpg/mp4, soundfile WAVs)."""

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
from avasr.corpus.grid import CorpusError, grid_split, import_grid, read_alignment
from avasr.corpus.lrs import import_lrs, read_lrs_transcript
from avasr.data.manifest import read_manifest

REPO = Path(__file__).resolve().parents[1]
GRID_RATE = 25000
FFMPEG_QUIET = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
TONE_HZ = 440


# --- media made once by ffmpeg, copied into each layout -------------------------------------------------------
@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    video = ["-f", "lavfi", "-i", "testsrc=size=32x32:rate=25"]
    tone = ["-f", "lavfi", "-i", f"sine=frequency={TONE_HZ}:sample_rate=44100"]
    commands = {
        "mpg": [*video, "-frames:v", "3", "-c:v", "mpeg1video"],  # GRID: MPEG-1
        "mp4": [*video, *tone, "-t", "0.2", "-ac", "2", "-c:v", "mpeg4", "-c:a", "aac", "-shortest"],  # stereo
        "silent_mp4": [*video, "-t", "0.2", "-c:v", "mpeg4"],  # no audio stream
    }
    made = {}
    for name, args in commands.items():
        path = folder / f"{name}.{'mpg' if name == 'mpg' else 'mp4'}"
        subprocess.run([*FFMPEG_QUIET, *args, str(path)], check=True)
        made[name] = path
    return made


# --- GRID ------------------------------------------------------------------------------------------------------
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


def _grid_clip(root, media, speaker, clip_id, words=None, video="mpg", audio="audio_25k", align_folder=None, sp=None):
    """One clip; video: "mpg" | "empty" | None; audio: folder name or None; words None: no align file."""
    if video:
        (root / speaker).mkdir(parents=True, exist_ok=True)
        target = root / speaker / f"{clip_id}.mpg"
        if video == "mpg":
            shutil.copy(media["mpg"], target)
        else:
            target.write_bytes(b"")
    if audio:
        (root / audio / speaker).mkdir(parents=True, exist_ok=True)
        noise = np.random.default_rng(0).normal(0, 0.1, GRID_RATE // 10).astype(np.float32)
        sf.write(root / audio / speaker / f"{clip_id}.wav", noise, GRID_RATE)
    if words is not None:
        folder = root / "alignments" / (align_folder or speaker)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{clip_id}.align").write_text(_align_text(words, sp))


@pytest.fixture
def grid_root(tmp_path, media) -> Path:
    root = tmp_path / "grid"
    _grid_clip(root, media, "s1", "bbaf2n", "bin blue at f two now")  # test speaker
    _grid_clip(root, media, "s3", "lgwz5a", "lay green with z five again", audio="audio")  # old audio folder
    _grid_clip(root, media, "s3", "pbai3p", "place blue at i three please", sp=2)  # with `sp`
    _grid_clip(root, media, "s3", "sria1s", "set red in a one soon")
    _grid_clip(root, media, "s3", "sria1s", audio="audio")  # also in audio/: audio_25k wins
    _grid_clip(root, media, "s4", "swbg4n", "set white by g four now", video="empty")
    _grid_clip(root, media, "s4", "bwbg4n", None)  # video and audio, no alignment
    _grid_clip(root, media, "s4", "lrwh8a", "lay red with h eight again", audio=None)
    for clip_id, words in [("bbac1a", "bin blue at c one again"), ("pgwe6s", "place green with e six soon")]:
        _grid_clip(root, media, "s21", clip_id, words, video=None)  # s21: no video in the real corpus
    return root


def test_grid_import_keeps_complete_clips_and_counts_every_skip(grid_root, tmp_path):
    out = tmp_path / "manifests"
    report = import_grid(grid_root, out, val_percent=0)
    assert report.kept == {"train": 3, "val": 0, "test": 1}
    assert {reason: sorted(items) for reason, items in report.skipped.items()} == {
        grid.EMPTY_VIDEO: ["s4/swbg4n"],
        grid.NO_ALIGNMENT: ["s4/bwbg4n"],
        grid.MISSING_AUDIO: ["s4/lrwh8a"],
        grid.MISSING_VIDEO: ["s21/bbac1a", "s21/pgwe6s"],
    }
    train = {e.utterance_id: e for e in read_manifest(out / "train_manifest.txt")}
    assert {k: e.transcript for k, e in train.items()} == {
        "s3/lgwz5a": "lay green with z five again",
        "s3/pbai3p": "place blue at i three please",
        "s3/sria1s": "set red in a one soon",
    }
    assert train["s3/lgwz5a"].audio_path == (grid_root / "audio" / "s3" / "lgwz5a.wav").resolve()
    assert train["s3/sria1s"].audio_path == (grid_root / "audio_25k" / "s3" / "sria1s.wav").resolve()
    assert train["s3/sria1s"].video_path == (grid_root / "s3" / "sria1s.mpg").resolve()
    (test,) = read_manifest(out / "test_manifest.txt")
    assert (test.utterance_id, test.transcript) == ("s1/bbaf2n", "bin blue at f two now")
    assert (out / "val_manifest.txt").read_text() == "\n"  # written even when empty, so the set is complete
    # the manifest stores paths relative to itself
    first_line = (out / "test_manifest.txt").read_text().splitlines()[0]
    assert first_line == "../grid/audio_25k/s1/bbaf2n.wav|../grid/s1/bbaf2n.mpg|bin blue at f two now"


def test_grid_val_split_takes_other_speakers_clips_never_test_speakers(grid_root, tmp_path):
    report = import_grid(grid_root, tmp_path / "m", val_percent=100, test_speakers=("s3",))
    assert report.kept == {"train": 0, "val": 1, "test": 3}
    assert [e.utterance_id for e in read_manifest(tmp_path / "m" / "val_manifest.txt")] == ["s1/bbaf2n"]


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


def test_grid_alignment_words_and_times(tmp_path):
    path = tmp_path / "x.align"
    path.write_text(_align_text("bin blue at f two now", pause_after=1))
    words = read_alignment(path)
    assert [w.word for w in words] == ["sil", "bin", "blue", "sp", "at", "f", "two", "now", "sil"]
    assert (words[1].start_s, words[1].end_s) == (0.95, 1.15)  # 23750 / 25000, 28750 / 25000
    assert words[-1].end_s == 2.98
    assert grid.alignment_transcript(words) == "bin blue at f two now"


def test_grid_bad_alignment_line_names_file_and_line(tmp_path, media):
    root = tmp_path / "grid"
    _grid_clip(root, media, "s3", "bbaf2n", "bin blue at f two now")
    align = root / "alignments" / "s3" / "bbaf2n.align"
    align.write_text("0 23750 sil\n23750 bin\n")
    with pytest.raises(CorpusError, match=rf"{align}:2: expected 'start end word'"):
        import_grid(root, tmp_path / "m")


def test_grid_without_speaker_folders_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no GRID speaker folders"):
        import_grid(tmp_path / "empty", tmp_path / "m")


@pytest.fixture
def zenodo_root(tmp_path, media) -> Path:
    """The Zenodo mix-up in miniature: alignments/s5 holds s6's clips and vice versa; alignments/s20 holds s21's."""
    root = tmp_path / "zenodo"
    _grid_clip(root, media, "s5", "bbaf2n", "bin blue at f two now", align_folder="s6")
    _grid_clip(root, media, "s6", "lgwz5a", "lay green with z five again", align_folder="s5")
    _grid_clip(root, media, "s20", "pbai3p", None)  # no folder of the zip belongs to s20
    _grid_clip(root, media, "s21", "sria1s", "set red in a one soon", video=None, align_folder="s20")
    (root / "alignments" / "s21").mkdir()  # a folder the remap does not know
    (root / "alignments" / "s21" / "stray.align").write_text(_align_text("set red in a one soon"))
    return root


def test_grid_zenodo_remap_reassigns_alignment_folders(zenodo_root, tmp_path):
    report = import_grid(zenodo_root, tmp_path / "remapped", zenodo_remap=True, val_percent=0)
    train = {e.utterance_id: e.transcript for e in read_manifest(tmp_path / "remapped" / "train_manifest.txt")}
    assert train == {"s5/bbaf2n": "bin blue at f two now", "s6/lgwz5a": "lay green with z five again"}
    assert {reason: sorted(items) for reason, items in report.skipped.items()} == {
        grid.NO_ALIGNMENT: ["s20/pbai3p"],
        grid.MISSING_VIDEO: ["s21/sria1s"],
        grid.OUTSIDE_REMAP: ["s21/stray.align"],
    }


def test_grid_without_remap_the_zenodo_mixup_shows_as_unaligned_clips(zenodo_root, tmp_path):
    report = import_grid(zenodo_root, tmp_path / "plain", zenodo_remap=False, val_percent=0)
    assert report.total_kept == 0
    assert sorted(report.skipped[grid.NO_ALIGNMENT]) == ["s20/pbai3p", "s21/sria1s", "s5/bbaf2n", "s6/lgwz5a"]
    assert sorted(report.skipped[grid.MISSING_VIDEO]) == ["s20/sria1s", "s21/stray", "s5/lgwz5a", "s6/bbaf2n"]


# --- LRS3 ------------------------------------------------------------------------------------------------------
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


def test_lrs_import_writes_one_manifest_per_split_folder(lrs_root, tmp_path):
    out = tmp_path / "out"
    report = import_lrs(lrs_root, out, jobs=2)
    assert report.kept == {"test": 1, "trainval": 2}
    assert set(report.skipped) == {
        lrs.OUT_OF_VOCABULARY, lrs.EMPTY_TRANSCRIPT, lrs.NO_TRANSCRIPT, lrs.NO_VIDEO, lrs.EXTRACTION_FAILED
    }  # fmt: skip
    assert report.skipped[lrs.OUT_OF_VOCABULARY] == [str(lrs_root / "trainval/0akiEFwtkyA/00001.txt")]
    assert report.skipped[lrs.EMPTY_TRANSCRIPT] == [str(lrs_root / "trainval/0akiEFwtkyA/00002.txt")]
    assert report.skipped[lrs.NO_TRANSCRIPT] == ["trainval/0akiEFwtkyA/00003"]
    assert report.skipped[lrs.NO_VIDEO] == ["trainval/0akiEFwtkyA/00004"]
    (failure,) = report.skipped[lrs.EXTRACTION_FAILED]
    assert failure.startswith(str(lrs_root / "trainval/0akiEFwtkyA/00005.mp4"))
    entries = read_manifest(out / "trainval_manifest.txt")
    assert [(e.video_path, e.transcript) for e in entries] == [
        ((lrs_root / "trainval/0af00UcTOSc/00001.mp4").resolve(), "so we're going to talk"),
        ((lrs_root / "trainval/0af00UcTOSc/00002.mp4").resolve(), "it was funny"),
    ]
    assert entries[0].audio_path == (out / "audio/trainval/0af00UcTOSc/00001.wav").resolve()
    (test,) = read_manifest(out / "test_manifest.txt")
    assert test.transcript == "thank you"
    assert not list(out.rglob("*.partial"))  # the failed extraction left nothing behind


def test_lrs_extracted_audio_is_16k_mono_and_holds_the_track(lrs_root, tmp_path):
    import_lrs(lrs_root, tmp_path / "out", jobs=1)
    wav = tmp_path / "out/audio/test/0Fi83BHQsMA/00002.wav"
    samples, rate = sf.read(wav)
    assert rate == 16000 and samples.ndim == 1  # the MP4's track is 44.1 kHz stereo
    assert abs(len(samples) - 3200) < 400  # 0.2 s, give or take the AAC encoder's padding
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(spectrum.argmax() * rate / len(samples) - TONE_HZ) < 10


def test_lrs_cached_wav_is_reused_until_the_video_is_newer(lrs_root, tmp_path):
    out = tmp_path / "out"
    import_lrs(lrs_root, out, jobs=1)
    wav = out / "audio/test/0Fi83BHQsMA/00002.wav"
    old = wav.stat().st_mtime_ns - 10**9
    os.utime(wav, ns=(old, old))  # older than before, but still newer than the MP4 (copied earlier)
    video = lrs_root / "test/0Fi83BHQsMA/00002.mp4"
    os.utime(video, ns=(old - 10**9, old - 10**9))
    import_lrs(lrs_root, out, jobs=1)
    assert wav.stat().st_mtime_ns == old  # not extracted again
    os.utime(video, ns=(old + 10**9, old + 10**9))  # the video changed after the WAV was made
    import_lrs(lrs_root, out, jobs=1)
    assert wav.stat().st_mtime_ns > old + 10**9


def test_lrs_txt_without_text_line_names_the_file(lrs_root, tmp_path, media):
    bad = "trainval/0af00UcTOSc/00003"
    _lrs_clip(lrs_root, media, bad, "Conf:  4\n\nWORD START END ASDSCORE\n")
    with pytest.raises(CorpusError, match=rf"{lrs_root / bad}.txt: no 'Text:' line"):
        import_lrs(lrs_root, tmp_path / "out")


def test_lrs_transcript_reading_strips_tags_and_decodes_latin1(tmp_path):
    path = tmp_path / "00001.txt"
    path.write_bytes("Text:  {LG} DÉJÀ VU {NS}\nConf:  3\n".encode("iso-8859-1"))
    assert read_lrs_transcript(path) == "DÉJÀ VU"


def test_lrs_without_ffmpeg_points_at_make_setup(lrs_root, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    with pytest.raises(CorpusError, match="ffmpeg not found on PATH.*make setup"):
        import_lrs(lrs_root, tmp_path / "out")


def test_lrs_root_without_split_folders_is_refused(tmp_path):
    (tmp_path / "lrs3" / "trainval").mkdir(parents=True)
    with pytest.raises(CorpusError, match="no split folders"):
        import_lrs(tmp_path / "lrs3", tmp_path / "out")


# --- command line ----------------------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    script = REPO / "experiments" / "import_corpus.py"
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, cwd=REPO)


def test_cli_imports_grid_and_prints_the_report(grid_root, tmp_path):
    result = _cli("--format", "grid", "--root", str(grid_root), "--out", str(tmp_path / "m"), "--val-percent", "0")
    assert result.returncode == 0, result.stderr
    assert "GRID: kept 4 utterances, skipped 5" in result.stdout
    assert "skipped 2: missing video (e.g. s21/bbac1a, s21/pgwe6s)" in result.stdout
    assert (tmp_path / "m" / "train_manifest.txt").is_file()


def test_cli_reports_bad_input_without_a_traceback(tmp_path):
    result = _cli("--format", "lrs3", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "m"))
    assert result.returncode == 1
    assert result.stderr.strip() == f"import_corpus: {tmp_path / 'missing'}: LRS root is not a folder"
    assert _cli("--help").returncode == 0
