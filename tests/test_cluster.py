"""The job on a cluster started apart: real `dask scheduler` and `dask worker` processes."""

import os

import pytest
from clusters import external_cluster
from jobtools import assert_same_dataset, cli

from palette_dask import JobSpec, run_job


@pytest.fixture(scope="module")
def external(tmp_path_factory):
    """A scheduler and two single-threaded workers on 127.0.0.1, torn down afterwards."""
    with external_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.fixture(scope="module")
def embedded_run(corpus, client2, tmp_path_factory):
    out = tmp_path_factory.mktemp("embedded") / "out"
    run_job(JobSpec(input=[str(corpus)], output=str(out), partition_size=3), client=client2)
    return out


def test_job_by_scheduler_address_matches_embedded_run(external, corpus, embedded_run, tmp_path):
    address, _ = external
    out = tmp_path / "out"
    report = run_job(
        JobSpec(input=[str(corpus)], output=str(out), scheduler=address, partition_size=5)
    )
    assert report.errors == 4
    assert_same_dataset(out, embedded_run)


def test_job_by_scheduler_file_matches_embedded_run(external, corpus, embedded_run, tmp_path):
    _, scheduler_file = external
    out = tmp_path / "out"
    run_job(JobSpec(input=[str(corpus)], output=str(out), scheduler_file=str(scheduler_file)))
    assert_same_dataset(out, embedded_run)


def test_job_by_environment_variable_via_cli(external, corpus, embedded_run, tmp_path):
    address, _ = external
    out = tmp_path / "out"
    result = cli(
        "run",
        "-i",
        corpus,
        "-o",
        out,
        "--no-progress",
        env={**os.environ, "DASK_SCHEDULER_ADDRESS": address},
    )
    assert result.returncode == 0, result.stderr
    assert f"connecting to the Dask scheduler at {address}" in result.stderr
    assert_same_dataset(out, embedded_run)
