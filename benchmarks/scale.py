"""Scale: what the data path costs as the corpus grows, streamed from the feature cache against held in memory.

For each size, a synthetic corpus is written straight into the cache (placeholder media files, which only key the
entries, and random log-mels and lip crops of mixed lengths: 1 to 8 s, mean 3 s); then, each in a fresh process as a
trial's training worker would be:
- index build: the manifest's index made from scratch over a filled cache (hash the files, read each entry's lengths);
- warm start: building the training dataset through the index (no media read, no features read when streaming);
- a training worker's peak memory (ru_maxrss) and its throughput (utterances/s, unpadded frames/s) over --steps
  batches of the smoke sweep's model, streamed with and without length buckets, and in memory up to
  --in-memory-max utterances (beyond it the corpus would not fit, which is the point);
- the padding fraction of one epoch's batches: random batches of --batch-size against buckets of --max-frames.
On the real built-in corpus (--real-corpus, built when missing): preparation throughput (experiments/prepare.py's
Ray tasks, a fresh cache), the lip pipeline's frames/s at the built-in, LRS3 and GRID frame sizes, and training
throughput over --real-epochs epochs streamed against in memory.

    python benchmarks/scale.py [--sizes 1000 5000 20000] [--steps 30] [--real-corpus data/corpus/smoke]

Goals: peak memory <= 1.2x from the smallest to the largest size; warm start of 20,000 <= 10 s;
padding <= 15 % with buckets; streaming within 10 % of in-memory throughput on the real corpus.
"""

import argparse
import itertools
import multiprocessing
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from avasr.config import AUDIO_TIME_DOWNSAMPLING, Config
from avasr.corpus.synth import build_corpus
from avasr.data.batching import LengthBucketSampler, padding_fraction
from avasr.data.cache import FeatureCache, Features, entry_key
from avasr.data.dataset import AVDataset
from avasr.data.index import index_manifests
from avasr.data.lips import load_lips
from avasr.data.loader import make_loader
from avasr.data.manifest import read_manifest
from avasr.data.prepare import prepare_on_ray
from avasr.data.streaming import StreamingDataset
from avasr.model import build_model
from avasr.sweep.spaces import fixed_values, load_space
from avasr.train import train_one_epoch

# Mixed lengths, mostly short (LRS3's are 1-20 s, 10 s on average; shorter here so 20,000 fit this disk)
SECONDS_RANGE = (1.0, 8.0)
MEAN_SECONDS = 3.0
WORKER_TIMEOUT_S = 1800  # one measurement in its own process; far more than any takes
MIB = 1024 * 1024
MEMORY_GOAL, WARM_START_GOAL_S, PADDING_GOAL, STREAMING_GOAL = 1.2, 10.0, 0.15, 0.10


def smoke_config(**changes) -> Config:
    """The smoke sweep's model and recipe (tune_spaces/smoke.py) with a fusion of it: what a sweep trial trains."""
    return Config.from_dict(
        {
            **fixed_values(load_space("smoke").space),
            "fusion": "attention",
            "data_workers": 0,
            "device": "cpu",
            **changes,
        }
    )


def draw_seconds(n: int, rng: np.random.Generator) -> np.ndarray:
    low, high = SECONDS_RANGE
    return np.clip(low + rng.exponential(MEAN_SECONDS - low, n), low, high)


def synthetic_corpus(root: Path, size: int, config: Config) -> tuple[Path, list[int]]:
    """A manifest of `size` utterances whose features are written into `config.cache_dir` directly, and their
    lengths in video frames."""
    rng = np.random.default_rng(size)
    frames = (draw_seconds(size, rng) * config.fps).astype(int).tolist()
    rows = []
    for i in range(size):
        folder = root / f"s{i // 1000:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        audio, video = folder / f"u{i}.wav", folder / f"u{i}.mp4"
        audio.write_bytes(f"audio {size} {i}".encode())  # content keys the entry: unique per utterance
        video.write_bytes(f"video {size} {i}".encode())
        rows.append(f"{audio.relative_to(root)}|{video.relative_to(root)}|bin blue at f two now")
    manifest = root / "train.txt"
    manifest.write_text("\n".join(rows) + "\n")
    cache = FeatureCache(config.cache_dir, config)
    for entry, t in zip(read_manifest(manifest), frames):
        mel = torch.from_numpy(rng.standard_normal((config.n_mels, AUDIO_TIME_DOWNSAMPLING * t + 1), np.float32))
        crops = torch.from_numpy(rng.integers(0, 256, (t, config.lip_size, config.lip_size), np.uint8))
        cache.put(cache.path_of(entry_key(entry)), Features(mel, crops))
    return manifest, frames


def worker(config: Config, steps: int, queue, epochs: int = 1) -> None:
    """A training worker: dataset through the index, then `steps` batches of training (0: `epochs` whole epochs;
    a new DataLoader each, as `fit` makes them); reports to `queue`."""
    torch.set_num_threads(1)  # as a sweep trial on a 2-core machine
    os.environ["TQDM_DISABLE"] = "1"  # the tables are the output
    # DataLoader workers fork, as they do under train.py and in a Ray Train worker; this process was spawned, which
    # would make every epoch's DataLoader spawn its workers (~2 s of imports each on this machine)
    multiprocessing.set_start_method("fork", force=True)
    started = time.perf_counter()
    dataset = StreamingDataset if config.streaming else AVDataset
    train_set = dataset.from_manifest(config.train_manifest, config, progress=False)
    warm_start_s = time.perf_counter() - started
    model = build_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    seen = {"utterances": 0, "frames": 0, "padded": 0}

    def counted(loader):
        for batch in loader:
            seen["utterances"] += len(batch.ids)
            seen["frames"] += int(batch.video_lengths.sum())
            seen["padded"] += batch.video.shape[0] * batch.video.shape[1]
            yield batch

    loaders = (make_loader(train_set, config, shuffle=True, epoch=epoch) for epoch in range(epochs))
    batches = itertools.chain.from_iterable(counted(loader) for loader in loaders)
    batches = itertools.islice(batches, steps) if steps else batches
    started = time.perf_counter()
    _, data_s = train_one_epoch(model, batches, optimizer, config, torch.device("cpu"), desc="steps")
    seconds = time.perf_counter() - started
    queue.put(
        {
            "warm_start_s": warm_start_s,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "utt_per_s": seen["utterances"] / seconds,
            "frames_per_s": seen["frames"] / seconds,
            "padding": 1 - seen["frames"] / seen["padded"],
            "data_s": data_s,
            "seconds": seconds,
        }
    )


def in_fresh_process(config: Config, steps: int, epochs: int = 1) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=worker, args=(config, steps, queue, epochs))
    process.start()
    result = queue.get(timeout=WORKER_TIMEOUT_S)
    process.join(timeout=60)
    return result


def index_build_s(manifest: Path, config: Config) -> float:
    started = time.perf_counter()
    index_manifests([manifest], config, progress=False, rehash=True)
    return time.perf_counter() - started


def run_sizes(args, work: Path) -> list[dict]:
    rows = []
    for size in args.sizes:
        root = work / f"n{size}"
        config = smoke_config(cache_dir=str(root / "cache"), batch_size=args.batch_size)
        started = time.perf_counter()
        manifest, lengths = synthetic_corpus(root, size, config)
        print(f"{size} utterances: synthetic corpus written in {time.perf_counter() - started:.0f} s", flush=True)
        config = config.replace(train_manifest=str(manifest))
        row = {"size": size, "index_s": index_build_s(manifest, config)}
        random_batches = [list(range(i, min(i + args.batch_size, size))) for i in range(0, size, args.batch_size)]
        row["padding_random"] = padding_fraction(random_batches, lengths)
        row["padding_buckets"] = padding_fraction(list(LengthBucketSampler(lengths, args.max_frames, 0)), lengths)
        row["streamed"] = in_fresh_process(config.replace(streaming=True), args.steps)
        row["bucketed"] = in_fresh_process(config.replace(streaming=True, max_batch_frames=args.max_frames), args.steps)
        if size <= args.in_memory_max:
            row["in_memory"] = in_fresh_process(config, args.steps)
        rows.append(row)
        print(
            f"  index {row['index_s']:.1f} s; streamed {row['streamed']}; bucketed {row['bucketed']}; "
            f"in memory {row.get('in_memory')}",
            flush=True,
        )
        shutil.rmtree(root)
    return rows


def lip_rates(manifest: str, config: Config, work: Path, videos: int = 12) -> dict[str, float]:
    """Lip-pipeline frames/s in one process (decode, detect, crop) on the corpus's first videos, as they are and
    upscaled to LRS3's and GRID's frame sizes: detection cost grows with the pixels searched."""
    entries = read_manifest(manifest)[:videos]
    rates = {}
    for name, size in (("built-in 160x160", None), ("LRS3 224x224", (224, 224)), ("GRID 360x288", (360, 288))):
        paths = (
            [e.video_path for e in entries]
            if size is None
            else [resized_video(e.video_path, work / name.split()[0] / e.video_path.name, size) for e in entries]
        )
        started, frames = time.perf_counter(), 0
        for path in paths:
            frames += load_lips(path, config).report.frames
        rates[name] = frames / (time.perf_counter() - started)
    return rates


def resized_video(source: Path, target: Path, size: tuple[int, int]) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    reader = cv2.VideoCapture(str(source))
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), reader.get(cv2.CAP_PROP_FPS), size)
    while (frame := reader.read()[1]) is not None:
        writer.write(cv2.resize(frame, size, interpolation=cv2.INTER_CUBIC))
    reader.release()
    writer.release()
    return target


def run_real(args, work: Path) -> dict:
    corpus = Path(args.real_corpus)
    build_corpus(corpus, corpus.name if corpus.name in ("smoke", "small", "medium") else "smoke")
    manifests = [str(corpus / f"{split}_manifest.txt") for split in ("train", "val", "test")]
    config = smoke_config(
        cache_dir=str(work / "real-cache"),
        train_manifest=manifests[0],
        val_manifest=manifests[1],
        batch_size=args.batch_size,
    )
    report = prepare_on_ray(manifests, config)
    print(report.summary(), flush=True)
    result = {
        "prepare": report,
        "cpus": multiprocessing.cpu_count(),
        "lip_rates": lip_rates(manifests[0], config.replace(data_workers=1), work),
    }
    print(f"  lip pipeline, frames/s in one process: {result['lip_rates']}", flush=True)
    for name, changes in (
        ("in_memory", {}),
        ("streamed", {"streaming": True}),
        ("streamed_1_worker", {"streaming": True, "num_workers": 1}),
    ):
        result[name] = in_fresh_process(config.replace(**changes), 0, args.real_epochs)
        print(f"  {name}: {result[name]}", flush=True)
    return result


def print_tables(rows: list[dict], real: dict | None, args) -> None:
    if rows:
        print_sizes(rows)
    if real:
        print_real(real, args)


def print_sizes(rows: list[dict]) -> None:
    print("\nsynthetic corpora (smoke model, one torch thread; streamed = from the cache, DataLoader in-process)")
    print(
        f"{'utterances':>10} {'index s':>8} {'warm s':>7} {'peak MiB':>9} {'in-mem MiB':>10} {'utt/s':>6} "
        f"{'frames/s':>8} {'bucketed utt/s':>14} {'frames/s':>8} {'MiB':>5} {'pad random':>10} {'pad buckets':>11}"
    )
    for r in rows:
        s, b = r["streamed"], r["bucketed"]
        in_memory = f"{r['in_memory']['peak_mib']:.0f}" if "in_memory" in r else "-"
        print(
            f"{r['size']:>10} {r['index_s']:>8.1f} {s['warm_start_s']:>7.2f} {s['peak_mib']:>9.0f} "
            f"{in_memory:>10} {s['utt_per_s']:>6.1f} {s['frames_per_s']:>8.0f} "
            f"{b['utt_per_s']:>14.1f} {b['frames_per_s']:>8.0f} {b['peak_mib']:>5.0f} {r['padding_random']:>10.1%} "
            f"{r['padding_buckets']:>11.1%}"
        )
    first, last = rows[0], rows[-1]
    memory = max(last[k]["peak_mib"] / first[k]["peak_mib"] for k in ("streamed", "bucketed"))
    print(
        f"\ngoals: peak memory {first['size']} -> {last['size']}: x{memory:.2f} (<= {MEMORY_GOAL}) "
        f"{'met' if memory <= MEMORY_GOAL else 'NOT met'}; warm start of {last['size']}: "
        f"{last['streamed']['warm_start_s']:.2f} s (<= {WARM_START_GOAL_S} s at 20,000) "
        f"{'met' if last['streamed']['warm_start_s'] <= WARM_START_GOAL_S else 'NOT met'}; padding with buckets "
        f"{max(r['padding_buckets'] for r in rows):.1%} (<= {PADDING_GOAL:.0%}) "
        f"{'met' if max(r['padding_buckets'] for r in rows) <= PADDING_GOAL else 'NOT met'}"
    )


def print_real(real: dict, args) -> None:
    p = real["prepare"]
    c, seconds = p.counts, p.seconds - p.startup_s
    print(
        f"\nreal corpus {args.real_corpus}: prepared {c.built} utterances ({c.frames_built} frames) in "
        f"{seconds:.1f} s (+ {p.startup_s:.1f} s starting Ray) on {real['cpus']} CPUs: {c.built / seconds:.2f} "
        f"utterances/s, {c.frames_built / seconds:.0f} frames/s ({c.frames_built / seconds / real['cpus']:.0f} "
        f"per CPU); cache {p.cache_bytes / p.frames:.0f} bytes per frame"
    )
    print(
        "  lip pipeline in one process: "
        + ", ".join(f"{name} {rate:.0f} frames/s" for name, rate in real["lip_rates"].items())
    )
    base = real["in_memory"]["utt_per_s"]
    for name in ("in_memory", "streamed", "streamed_1_worker"):
        r = real[name]
        print(
            f"  {args.real_epochs} epochs {name:<18} {r['utt_per_s']:6.1f} utt/s {r['frames_per_s']:6.0f} "
            f"frames/s peak {r['peak_mib']:5.0f} MiB  ratio to in-memory {r['utt_per_s'] / base:.3f}"
        )
    worst = min(real["streamed"]["utt_per_s"], real["streamed_1_worker"]["utt_per_s"]) / base
    best = max(real["streamed"]["utt_per_s"], real["streamed_1_worker"]["utt_per_s"]) / base
    print(
        f"goal: streaming within {STREAMING_GOAL:.0%} of in-memory: best x{best:.3f} "
        f"{'met' if best >= 1 - STREAMING_GOAL else 'NOT met'} (worst x{worst:.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 5000, 20000], help="none: skip")
    parser.add_argument("--steps", type=int, default=30, help="training batches per throughput measurement")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--max-frames",
        type=int,
        help="frame budget of a bucketed batch (default: --batch-size utterances of mean length)",
    )
    parser.add_argument("--in-memory-max", type=int, default=5000, help="largest size also measured in memory")
    parser.add_argument("--real-corpus", default="data/corpus/smoke", help="'' to skip the real corpus")
    parser.add_argument("--real-epochs", type=int, default=3, help="epochs per throughput run on the real corpus")
    parser.add_argument("--work-dir", help="where corpora and caches go (default: a temporary folder)")
    args = parser.parse_args()
    args.max_frames = args.max_frames or args.batch_size * round(MEAN_SECONDS * Config().fps)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="avasr-scale-"))
    try:
        real = run_real(args, work) if args.real_corpus else None
        rows = run_sizes(args, work)
        print_tables(rows, real, args)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
