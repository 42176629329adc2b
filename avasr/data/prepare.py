"""Preparing the feature cache for manifests, fanned out as Ray tasks over every node of a cluster.

    prepare(manifests, config, runner=run_on_ray)

Every utterance the manifests' indexes do not already know is described (hashed, featurised when its entry is
missing) by a Ray task; each task takes RAY_CHUNK utterances, and at most IN_FLIGHT_PER_CPU tasks per CPU of the
cluster are queued at once, so the driver's memory stays flat whatever the corpus size. Tasks write their entries
into the shared cache themselves (atomic renames); the driver only collects rows into the indexes. Resumable: an
interrupted preparation keeps every entry written and the index up to its last save, and a rerun skips both.
Locally (`ray.init()` on one machine) the tasks use the machine's cores. The sweep warms its cache the same way.

Media paths must be the same on every node (shared storage), as for the sweep itself (docs/cluster.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from avasr.config import Config
from avasr.data.cache import FeatureCache
from avasr.data.dataset import DataError, LoadReport, indexed_frames, select_indexed
from avasr.data.index import (
    Described,
    IndexCounts,
    Runner,
    chunked_positions,
    describe_all,
    index_manifests,
    run_locally,
)
from avasr.data.manifest import ManifestEntry
from avasr.errors import AvasrError

RAY_CHUNK = 8  # utterances per task: ~1 s of work at ~540 frames/s per CPU, so scheduling costs little
# Fewer utterances than this are featurised here, in the driver: Ray's worker processes take seconds to start and
# import torch, more than a couple of chunks of work (the sweep tests' tiny corpora, a few new files in a rerun)
RAY_MIN_UTTERANCES = 2 * RAY_CHUNK
IN_FLIGHT_PER_CPU = 2  # tasks queued per CPU: every core stays busy while the driver holds few results at once
RESULT_WAIT_S = 5.0  # one ray.wait blocks at most this long: Ctrl-C is seen between waits
CANCEL_WAIT_S = 30.0  # on interruption, how long the tasks in flight get to stop (each ends its entry or none)
# No task finishing for this long means the cluster cannot run them (no free CPU, nodes gone): a chunk takes seconds
STALLED_S = 600.0


class PrepareError(AvasrError, RuntimeError):
    """The cluster stopped running the preparation's tasks."""


def run_on_ray(entries: Sequence[ManifestEntry], config: Config) -> Iterator[tuple[int, Described]]:
    """A Runner (avasr.data.index) over the Ray cluster this process is connected to (fewer than
    RAY_MIN_UTTERANCES entries: in this process)."""
    import ray  # the data package imports Ray only when it fans out

    if len(entries) < RAY_MIN_UTTERANCES:
        yield from run_locally(entries, config.replace(data_workers=1))
        return
    describe_remote = ray.remote(num_cpus=1)(describe_all)
    chunks = chunked_positions(len(entries), RAY_CHUNK)
    limit = max(1, int(ray.cluster_resources().get("CPU", 1) * IN_FLIGHT_PER_CPU))
    pending, queued, progressed = {}, iter(chunks), time.monotonic()
    try:
        while True:
            while len(pending) < limit and (chunk := next(queued, None)) is not None:
                pending[describe_remote.remote(([entries[i] for i in chunk], config))] = chunk
            if not pending:
                return
            done, _ = ray.wait(list(pending), num_returns=1, timeout=RESULT_WAIT_S)
            if not done and time.monotonic() - progressed > STALLED_S:
                raise PrepareError(
                    f"no featurising task finished in {STALLED_S:.0f} s: {len(pending)} task(s) of "
                    f"{RAY_CHUNK} utterances waiting; the cluster has {ray.available_resources()} "
                    f"free of {ray.cluster_resources()} (each task needs 1 CPU)"
                )
            for ref in done:
                progressed = time.monotonic()
                yield from zip(pending.pop(ref), ray.get(ref))
    finally:  # interrupted (Ctrl-C, an error): stop the cluster's work, so nothing writes after we return
        for ref in pending:
            ray.cancel(ref)
        if pending:
            ray.wait(list(pending), num_returns=len(pending), timeout=CANCEL_WAIT_S)


@dataclass
class PrepareReport:
    counts: IndexCounts
    loads: dict[str, LoadReport] = field(default_factory=dict)  # per manifest: what training would load
    errors: list[str] = field(default_factory=list)  # "manifest:line: problem", every unusable utterance
    seconds: float = 0.0
    startup_s: float = 0.0  # of `seconds`: starting Ray, when the preparation started it
    frames: int = 0  # video frames of all distinct utterances
    cache_bytes: int = 0  # size of their cache entries

    def summary(self) -> str:
        c = self.counts
        working_s = self.seconds - self.startup_s
        rate = c.hashed / working_s if working_s else 0.0
        frame_rate = c.frames_built / working_s if working_s else 0.0
        startup = f" (+ {self.startup_s:.1f} s starting Ray)" if self.startup_s else ""
        lines = [
            f"{c.utterances} utterances ({self.frames} video frames): {c.index_hits} known to the index (no media "
            f"read), {c.hashed} hashed, of which {c.built} featurised ({c.frames_built} frames) and {c.errors} "
            f"unusable",
            f"{working_s:.1f} s{startup}: {rate:.1f} utterances/s, {frame_rate:.0f} featurised frames/s; cache "
            f"{self.cache_bytes / 1e6:.1f} MB for these utterances",
        ]
        lines += [f"{manifest}: {load.summary()}" for manifest, load in self.loads.items()]
        return "\n".join(lines)

    def check(self) -> None:
        """DataError listing every unusable utterance, and every manifest left with none: what training refuses."""
        empty = [
            f"{manifest}: no usable utterances ({load.summary()})"
            for manifest, load in self.loads.items()
            if not load.loaded
        ]
        if self.errors or empty:
            problems = self.errors + empty
            raise DataError(f"{len(problems)} problem(s) in the manifests:\n" + "\n".join(f"  {p}" for p in problems))


def prepare_on_ray(
    manifests: Sequence[str], config: Config, address: str | None = None, progress: bool = True, rehash: bool = False
) -> PrepareReport:
    """`prepare` as Ray tasks: on the cluster at `address` ("auto": the one this node belongs to), or on a local
    Ray of this machine's cores when None; the Ray this process is already connected to, if any. Ray is started
    only when the indexes leave RAY_MIN_UTTERANCES or more to do: a warm run takes a fraction of a second."""
    import ray

    startup_s: list[float] = []  # set when this call starts Ray

    def on_ray(entries: Sequence[ManifestEntry], config: Config) -> Iterator[tuple[int, Described]]:
        if len(entries) >= RAY_MIN_UTTERANCES and not ray.is_initialized():
            started = time.perf_counter()
            ray.init(address=address)
            startup_s.append(time.perf_counter() - started)
        yield from run_on_ray(entries, config)

    try:
        report = prepare(manifests, config, on_ray, progress, rehash)
        report.startup_s = sum(startup_s)
        return report
    finally:
        if startup_s:
            ray.shutdown()


def prepare(
    manifests: Sequence[str], config: Config, runner: Runner = run_locally, progress: bool = True, rehash: bool = False
) -> PrepareReport:
    """Fill `config.cache_dir` for every utterance of `manifests` and index them; the report counts what was done
    and what training would skip. Unusable utterances are listed in `errors`, not raised: one bad file does not
    stop the preparation of the others (training still refuses them, naming file and line)."""
    started = time.perf_counter()
    indexed, counts = index_manifests(manifests, config, runner, progress, rehash)
    report = PrepareReport(counts, seconds=time.perf_counter() - started)
    cache, seen = FeatureCache(config.cache_dir, config), set()
    for manifest in indexed:
        _, report.loads[manifest.path], errors = select_indexed(manifest, config)
        report.errors += errors
        for row in manifest.rows:
            if isinstance(row, str) or row.key in seen:
                continue
            seen.add(row.key)
            report.frames += indexed_frames(row, config)
            report.cache_bytes += cache.path_of(row.key).stat().st_size
    return report
