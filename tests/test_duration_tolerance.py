"""Audio and video of one clip may differ by up to 0.25 s (README); a pair further apart is an error naming both files
and the manifest line."""

import pytest

from avasr.config import Config
from avasr.data.dataset import AVDataset, DataError
from avasr.data.video import VideoError
from avasr.features import check_durations
from tests.media import write_clip

CONFIG = Config(cache_dir="", data_workers=1)


@pytest.mark.parametrize(
    ("mel_frames", "video_frames", "accepted"),
    [
        (101, 31, True),  # audio 1.00 s, video 1.24 s
        (101, 32, False),  # video 1.28 s
        (126, 25, True),  # audio 1.25 s, video 1.00 s: exactly the tolerance
        (127, 25, False),  # audio 1.26 s
    ],
)
def test_the_tolerance_is_a_quarter_second_either_way(mel_frames, video_frames, accepted):
    if accepted:
        check_durations(mel_frames, video_frames, CONFIG, "a.wav", "v.mp4")
    else:
        with pytest.raises(VideoError, match=r"^v\.mp4: video lasts .* but its audio a\.wav lasts .*tolerance 0.25 s"):
            check_durations(mel_frames, video_frames, CONFIG, "a.wav", "v.mp4")


def test_files_just_inside_load_and_just_outside_name_the_line(tmp_path):
    # 3 s: long enough that 0.24 s more video stays within the loader's audio-rate filter (560-720 samples a frame)
    write_clip(tmp_path, "inside", 3.0, video_seconds=3.24)  # 81 frames at 25 fps
    write_clip(tmp_path, "outside", 3.0, video_seconds=3.28)  # 82 frames
    (tmp_path / "inside.txt").write_text("inside.wav|inside.mp4|bin blue\n")
    assert len(AVDataset.from_manifest(tmp_path / "inside.txt", CONFIG, progress=False)) == 1
    (tmp_path / "both.txt").write_text("inside.wav|inside.mp4|bin blue\noutside.wav|outside.mp4|bin blue\n")
    with pytest.raises(DataError, match=r"both\.txt:2: .*outside\.mp4: video lasts 3\.28 s but its audio .*3\.00 s"):
        AVDataset.from_manifest(tmp_path / "both.txt", CONFIG, progress=False)
