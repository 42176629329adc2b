"""Fixtures of the tests that run real sweeps (tests/test_sweep.py, tests/test_faults.py)."""

from pathlib import Path

import pytest
import ray

from tests.sweeps import CLUSTER_CPUS, write_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def local_ray():
    # with the dashboard, as `run_sweep` and `ray start` bring it up (Ray Train's own cleaner asks its State API)
    ray.init(num_cpus=CLUSTER_CPUS)
    yield
    ray.shutdown()
