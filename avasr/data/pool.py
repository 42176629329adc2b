"""Work spread over this machine's cores, for the loaders that featurise utterances (avasr.data.index, .dataset)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

MIN_JOBS_PER_WORKER = 16  # below this, starting worker processes costs more than it saves

Job, Result = TypeVar("Job"), TypeVar("Result")


def worker_count(requested: int, jobs: int) -> int:
    """`requested` processes (0 = one per core), no more than there are jobs."""
    return min(requested or os.cpu_count() or 1, jobs)


def in_processes(
    fn: Callable[[Job], Result],
    jobs: Sequence[Job],
    workers: int,
    chunksize: int = 1,
    min_jobs: int = MIN_JOBS_PER_WORKER,
) -> Iterable[Result] | Iterator[Result]:
    """`fn` over `jobs`, results in order: in this process when one worker is asked for or there are fewer than
    `min_jobs` jobs per worker, otherwise in `workers` spawned processes."""
    if workers <= 1 or len(jobs) < min_jobs * 2:
        return map(fn, jobs)
    return _pooled(fn, jobs, workers, chunksize)


def _pooled(fn, jobs, workers: int, chunksize: int) -> Iterator:
    # spawn, not fork: forking a process whose torch/OpenMP threads are running can deadlock
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(fn, jobs, chunksize=chunksize)
