import pytest
import torch

from avasr.config import AUDIO_ONLY, AUDIO_TIME_DOWNSAMPLING, AUDIO_VISUAL, Config
from avasr.data.dataset import AVDataset, DataError, collate
from avasr.features import align_audio_to_video, lip_crops_to_tensor
from tests.media import write_clip

CONFIG = Config(cache_dir="")  # the cache has its own tests


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    write_clip(root, "ok1", 1.0)
    write_clip(root, "ok2", 1.4)
    write_clip(root, "short", 0.2)  # 5 frames: too short for its transcript
    write_clip(root, "noface", 1.0, face=False)
    write_clip(root, "mismatch", 2.0, video_seconds=1.0)
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    return root


def manifest(root, lines):
    path = root / f"m{abs(hash(tuple(lines)))}.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_loads_aligns_and_collates_real_files(clips):
    ds = AVDataset.from_manifest(
        manifest(clips, ["ok1.wav|ok1.mp4|bin blue", "ok2.wav|ok2.mp4|lay red now"]), CONFIG, progress=False
    )
    assert len(ds) == 2 and ds.report.summary() == "2 utterances loaded"
    u = ds[0]
    assert u.video.shape == (25, 64, 64) and u.video.dtype == torch.uint8
    assert u.audio.shape == (40, AUDIO_TIME_DOWNSAMPLING * 25)
    batch = collate([ds[0], ds[1]])
    assert batch.audio.shape == (2, 1, 40, 4 * 35) and batch.video.shape == (2, 35, 1, 64, 64)
    assert batch.video_lengths.tolist() == [25, 35] and batch.audio_lengths.tolist() == [100, 140]
    assert batch.targets.shape == (2, 11) and batch.target_lengths.tolist() == [8, 11]
    assert batch.transcripts == ["bin blue", "lay red now"]
    assert torch.equal(batch.video[0, 25:], torch.zeros(10, 1, 64, 64))
    assert torch.equal(batch.video[0, :25, 0], lip_crops_to_tensor(u.video))


def test_no_face_runs_on_audio_alone_and_too_short_is_skipped_with_counts_and_names(clips):
    m = manifest(
        clips,
        [
            "ok1.wav|ok1.mp4|bin blue",
            "short.wav|short.mp4|place green at b seven again",
            "noface.wav|noface.mp4|set red",
        ],
    )
    with pytest.warns(UserWarning, match=r"no face in 1 of 3 videos: those utterances run on audio alone \(.*:3 "):
        ds = AVDataset.from_manifest(m, CONFIG, progress=False)
    assert [u.id for u in ds] == [f"{clips.name}/ok1", f"{clips.name}/noface"]
    assert [u.streams for u in ds] == [AUDIO_VISUAL, AUDIO_ONLY]
    summary = ds.report.summary()
    assert summary.startswith(f"2 utterances loaded; 1 of them on audio alone (no face): {m}:3 ({clips}/noface.mp4)")
    assert f"1 skipped (too_short): {clips.name}/short (5 frames < 29 needed)" in summary
    no_face = ds[1]
    assert no_face.video.shape == (25, 64, 64) and no_face.audio.shape == (40, 100)  # frames from the 1.0 s audio
    batch = collate([no_face, ds[0]])
    assert batch.streams == [AUDIO_ONLY, AUDIO_VISUAL]
    assert torch.equal(batch.video[0], torch.zeros(25, 1, 64, 64)) and batch.audio[0].abs().sum() > 0
    video_only = AVDataset.from_manifest(m, CONFIG.replace(modalities="video"), progress=False)
    assert [u.id for u in video_only] == [f"{clips.name}/ok1"]  # nothing to read: skipped, and counted
    assert f"1 skipped (no_face): {m}:3 ({clips}/noface.mp4)" in video_only.report.summary()


def test_speech_is_kept_on_request_and_collated_unpadded(clips):
    m = manifest(clips, ["ok1.wav|ok1.mp4|bin blue", "ok2.wav|ok2.mp4|lay red now"])
    assert collate(list(AVDataset.from_manifest(m, CONFIG, progress=False))).speech == []
    kept = AVDataset.from_manifest(m, CONFIG, progress=False, keep_speech=True)
    assert [u.speech.shape for u in kept] == [(16000,), (22400,)]  # 1.0 s and 1.4 s at 16 kHz
    assert [s.shape for s in collate(list(kept)).speech] == [(16000,), (22400,)]


def test_broken_pairs_are_errors_naming_file_and_line(clips):
    m = manifest(clips, ["ok1.wav|ok1.mp4|bin blue", "mismatch.wav|mismatch.mp4|lay red", "ok1.wav|corrupt.mp4|x"])
    with pytest.raises(DataError) as err:
        AVDataset.from_manifest(m, CONFIG, progress=False)
    msg = str(err.value)
    assert "2 unusable utterance(s)" in msg
    assert f"{m}:2:" in msg and "video lasts 1.00 s but its audio" in msg and "lasts 2.00 s" in msg
    assert f"{m}:3:" in msg and "corrupt.mp4" in msg


def test_align_audio_trims_pads_or_interpolates():
    mel = torch.arange(40 * 10, dtype=torch.float32).reshape(40, 10)
    assert torch.equal(align_audio_to_video(mel, 2, CONFIG), mel[:, :8])
    padded = align_audio_to_video(mel, 3, CONFIG)
    assert padded.shape == (40, 12) and torch.equal(padded[:, 10:], torch.zeros(40, 2))
    assert align_audio_to_video(mel, 3, CONFIG.replace(fps=30.0)).shape == (40, 12)
