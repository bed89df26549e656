import os
import sys

import dask
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from palette_dask.samples import export_samples

# The clusters of this process live through the whole run, idle most of it: Dask's
# statistical profiler, event-loop health checks and system monitor would cost each
# worker a tenth of a core, and the jobs depend on none of them. (Commands run as
# processes of their own keep Dask's defaults.)
dask.config.set(
    {
        "distributed.worker.profile.enabled": False,
        "distributed.admin.tick.interval": "1s",
        "distributed.admin.system-monitor.interval": "2s",
        "distributed.worker.memory.monitor-interval": "1s",
    }
)


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory):
    """The sample photographs, exported once per test session."""
    folder = tmp_path_factory.mktemp("samples")
    export_samples(str(folder))
    return folder


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, sample_dir):
    """Sample photographs, synthetic block images and four broken files (read-only)."""
    from jobtools import make_corpus

    return make_corpus(tmp_path_factory.mktemp("corpus"), sample_dir)


def _cluster_client(n_workers):
    from jobtools import fresh_cluster

    with fresh_cluster(n_workers) as client:
        yield client


@pytest.fixture(scope="session")
def client1():
    """A real one-worker process cluster."""
    yield from _cluster_client(1)


@pytest.fixture(scope="session")
def client2():
    """A real two-worker process cluster."""
    yield from _cluster_client(2)
