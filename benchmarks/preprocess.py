"""Lip-pipeline speed, face-detection rate, and cold vs warm data preparation on a manifest (default: the smoke
corpus's training manifest).

Cold = an empty feature cache (decode, resample, log-mel, face detection, crops); warm = the same manifest again
with every entry cached. Both run single-process (data_workers=1) so the ratio compares work, not core count.

    python benchmarks/preprocess.py [--manifest data/corpus/smoke/train_manifest.txt]
"""

import argparse
import tempfile
import time

from avasr.config import Config
from avasr.data.dataset import AVDataset
from avasr.data.lips import load_lips
from avasr.data.manifest import read_manifest

DEFAULT_MANIFEST = "data/corpus/smoke/train_manifest.txt"
WARM_RATIO_GOAL = 20.0
DETECTION_GOAL = 0.99


def lip_pipeline(manifest: str, config: Config) -> tuple[float, float, int]:
    """frames/s of decode + detect + crop, the share of searched frames with a face, and the video count."""
    frames = searched = detected = 0
    start = time.perf_counter()
    entries = read_manifest(manifest)
    for entry in entries:
        report = load_lips(entry.video_path, config).report
        frames, searched, detected = frames + report.frames, searched + report.searched, detected + report.detected
    return frames / (time.perf_counter() - start), detected / searched, len(entries)


def prepare(manifest: str, config: Config) -> float:
    start = time.perf_counter()
    AVDataset.from_manifest(manifest, config, progress=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", default=DEFAULT_MANIFEST)
    args = parser.parse_args()
    fps, detection, videos = lip_pipeline(args.manifest, Config())
    print(
        f"lip pipeline: {videos} videos, {fps:.0f} frames/s ({fps / Config().fps:.1f}x real time), "
        f"face detected in {100 * detection:.2f} % of searched frames (goal >= {100 * DETECTION_GOAL:.0f} %)"
    )
    with tempfile.TemporaryDirectory() as cache:
        config = Config(cache_dir=cache, data_workers=1)
        cold = prepare(args.manifest, config)
        warm = prepare(args.manifest, config)
    print(
        f"data preparation: cold {cold:.2f} s, warm {warm:.2f} s, ratio {cold / warm:.1f}x "
        f"(goal >= {WARM_RATIO_GOAL:.0f}x)"
    )


if __name__ == "__main__":
    main()
