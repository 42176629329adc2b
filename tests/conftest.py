"""Fixtures of the tests that run real sweeps (tests/test_sweep.py, tests/test_faults.py), and how the test process
ends."""

import os
import sys
from pathlib import Path

import pytest
import ray

from tests.sweeps import CLUSTER_CPUS, write_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray for the whole session. Not one per module: `ray.shutdown()` leaves Ray's gRPC threads running
    (12 native threads after one init and shutdown, measured), and a process that starts Ray again beside them can
    crash (ray-project/ray#31145); the tests that share it end with every CPU free again."""
    # with the dashboard, as `run_sweep` and `ray start` bring it up (Ray Train's own cleaner asks its State API)
    ray.init(num_cpus=CLUSTER_CPUS)
    yield
    ray.shutdown()


EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """The test process ends with its result, not with the native libraries' teardown: once every test has run,
    every fixture (Ray included) is torn down and the report is printed, the threads Ray's gRPC leaves behind can
    still crash the interpreter while it finalises (one CI run: 362 passed, then "Segmentation fault", exit 2).
    Processes the tests start (CLIs, sweeps, servers) still exit normally and their exit codes are asserted."""
    if EXIT_STATUS in config.stash:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(config.stash[EXIT_STATUS])
