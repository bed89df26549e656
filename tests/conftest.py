import os
import sys

import dask
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from jobtools import IDLE_LIGHT_DASK

from palette_dask.samples import export_samples

dask.config.set(IDLE_LIGHT_DASK)  # for every cluster this process starts (see jobtools)


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
