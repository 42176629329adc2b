"""Segments (manifest lines that name a part of a clip by start and end offsets) and the loading policy's length
filter, on real media files."""

import hashlib

import numpy as np
import pytest

from avasr.config import Config
from avasr.data.audio import load_speech, read_waveform
from avasr.data.cache import entry_key, file_digest
from avasr.data.dataset import AVDataset
from avasr.data.manifest import ManifestError, read_manifest, write_manifest
from avasr.data.video import read_gray_frames
from tests.media import write_clip

CONFIG = Config(cache_dir="")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("segments")
    write_clip(root, "long", 3.0)  # cut into segments below
    write_clip(root, "few", 0.4)  # 10 frames: long enough for "a", shorter than the filter's minimum
    write_clip(root, "slow", 1.0, video_seconds=0.84)  # 762 audio samples per video frame, within 0.25 s
    return root


def manifest(root, lines):
    path = root / f"m{abs(hash(tuple(lines)))}.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


# --- manifest lines -------------------------------------------------------------------------------------------
def test_a_five_field_line_names_a_segment_and_a_three_field_line_the_whole_clip(clips):
    entries = read_manifest(manifest(clips, ["long.wav|long.mp4|bin blue|0.4|1.6", "long.wav|long.mp4|lay red"]))
    assert [e.segment for e in entries] == [(0.4, 1.6), None]
    assert [e.utterance_id for e in entries] == [f"{clips.name}/long@0.4-1.6", f"{clips.name}/long"]
    assert entries[0].speaker == entries[1].speaker == clips.name


def test_bad_segment_fields_are_errors_naming_file_and_line(clips):
    path = manifest(
        clips,
        [
            "long.wav|long.mp4|bin blue|0.4",
            "long.wav|long.mp4|bin blue|zero|1.0",
            "long.wav|long.mp4|bin blue|1.0|1.0",
            "long.wav|long.mp4|bin blue|-0.5|1.0",
        ],
    )
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    assert err.value.problems == [
        f"{path}:1: expected 3 fields 'audio|video|transcript' or 5 'audio|video|transcript|start|end', got 4",
        f"{path}:2: segment start and end must be seconds, got 'zero' and '1.0'",
        f"{path}:3: segment must end after it starts (0 <= start < end), got 1.0 to 1.0",
        f"{path}:4: segment must end after it starts (0 <= start < end), got -0.5 to 1.0",
    ]


def test_written_segments_read_back_and_whole_clips_keep_three_fields(clips, tmp_path):
    audio, video = clips / "long.wav", clips / "long.mp4"
    path = write_manifest(tmp_path / "m.txt", [(audio, video, "bin blue", 0.12, 2.32), (audio, video, "lay red")])
    rel = f"../{clips.name}"
    assert path.read_text().splitlines() == [
        f"{rel}/long.wav|{rel}/long.mp4|bin blue|0.12|2.32",
        f"{rel}/long.wav|{rel}/long.mp4|lay red",
    ]
    assert [e.segment for e in read_manifest(path)] == [(0.12, 2.32), None]


# --- what a segment loads -------------------------------------------------------------------------------------
def test_a_segment_reads_only_its_part_of_the_audio_and_the_video(clips):
    whole_audio, rate = read_waveform(clips / "long.wav")
    part, part_rate = read_waveform(clips / "long.wav", (0.4, 1.6))
    assert part_rate == rate == 22050
    np.testing.assert_array_equal(part, whole_audio[8820:35280])  # 0.4 s and 1.6 s at 22050 Hz
    assert load_speech(clips / "long.wav", CONFIG, (0.4, 1.6)).shape == (19200,)  # 1.2 s at 16 kHz
    whole_video, fps = read_gray_frames(clips / "long.mp4")
    frames, _ = read_gray_frames(clips / "long.mp4", (0.4, 1.6))
    np.testing.assert_array_equal(frames, whole_video[10:40])  # frames 10 to 39 at 25 fps


def test_a_segment_outside_its_clip_is_an_error_naming_the_file(clips):
    with pytest.raises(
        ValueError, match=rf"{clips / 'long.wav'}: segment 4-5 s starts after the audio ends \(3.00 s\)"
    ):
        read_waveform(clips / "long.wav", (4.0, 5.0))
    with pytest.raises(
        ValueError, match=rf"{clips / 'long.mp4'}: segment 4-5 s starts after the video ends \(75 frames"
    ):
        read_gray_frames(clips / "long.mp4", (4.0, 5.0))


def test_segments_of_one_clip_are_separate_utterances_with_their_own_cache_entries(clips, tmp_path):
    lines = ["long.wav|long.mp4|bin blue|0.4|1.6", "long.wav|long.mp4|lay red|1.6|2.4", "long.wav|long.mp4|set z"]
    path = manifest(clips, lines)
    for config in (CONFIG, CONFIG.replace(cache_dir=str(tmp_path / "cache"))):
        ds = AVDataset.from_manifest(path, config, progress=False, keep_speech=True)
        assert [u.id for u in ds] == [f"{clips.name}/long@0.4-1.6", f"{clips.name}/long@1.6-2.4", f"{clips.name}/long"]
        assert [u.video.shape[0] for u in ds] == [30, 20, 75]
        assert [u.speech.shape[0] for u in ds] == [19200, 12800, 48000]
    warm = AVDataset.from_manifest(path, CONFIG.replace(cache_dir=str(tmp_path / "cache")), progress=False)
    assert [u.video.shape[0] for u in warm] == [30, 20, 75]
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == 3


def test_a_whole_clip_keeps_its_cache_key_and_each_segment_has_its_own(clips):
    seg_a, seg_b, whole = read_manifest(
        manifest(clips, ["long.wav|long.mp4|a|0.4|1.6", "long.wav|long.mp4|a|1.6|2.4", "long.wav|long.mp4|a"])
    )
    content = file_digest(clips / "long.wav") + file_digest(clips / "long.mp4")
    assert entry_key(whole) == hashlib.sha256(content.encode()).hexdigest()  # as before segments existed
    assert len({entry_key(seg_a), entry_key(seg_b), entry_key(whole)}) == 3


# --- the length filter ----------------------------------------------------------------------------------------
def test_the_length_filter_skips_few_frames_and_odd_audio_rates_and_counts_them(clips, tmp_path):
    path = manifest(clips, ["long.wav|long.mp4|bin blue", "few.wav|few.mp4|a", "slow.wav|slow.mp4|lay red"])
    for config in (CONFIG, CONFIG.replace(cache_dir=str(tmp_path / "cache"))):  # in memory, and through the index
        ds = AVDataset.from_manifest(path, config, progress=False)
        assert [u.id for u in ds] == [f"{clips.name}/long"]
        assert ds.report.summary() == (
            f"1 utterances loaded; 1 skipped (few_frames): {clips.name}/few (10 frames < 12); "
            f"1 skipped (av_rate): {clips.name}/slow (762 audio samples per video frame, outside 560-720)"
        )
