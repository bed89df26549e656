"""The job on a cluster started apart: real `dask scheduler` and `dask worker` processes."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed import Client
from jobtools import assert_same_dataset, make_corpus

from palette_dask import JobSpec, run_job

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def external_cluster(tmp_path_factory):
    """A scheduler and two single-threaded workers on 127.0.0.1, torn down afterwards."""
    folder = tmp_path_factory.mktemp("cluster")
    scheduler_file = folder / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    processes = [
        subprocess.Popen(
            [
                str(BIN / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(scheduler_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=folder,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            assert time.monotonic() < deadline, "scheduler did not start"
            assert processes[0].poll() is None, "scheduler exited"
            time.sleep(0.1)
        for _ in range(2):
            processes.append(
                subprocess.Popen(
                    [
                        str(BIN / "dask"),
                        "worker",
                        "--scheduler-file",
                        str(scheduler_file),
                        "--nthreads",
                        "1",
                        "--memory-limit",
                        "2GiB",
                        "--no-dashboard",
                        "--host",
                        "127.0.0.1",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=env,
                    cwd=folder,
                )
            )
        with Client(scheduler_file=str(scheduler_file), timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
            address = client.scheduler.address
        yield address, scheduler_file
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, sample_dir):
    return make_corpus(tmp_path_factory.mktemp("corpus"), sample_dir)


@pytest.fixture(scope="module")
def embedded_run(corpus, client2, tmp_path_factory):
    out = tmp_path_factory.mktemp("embedded") / "out"
    run_job(JobSpec(input=[str(corpus)], output=str(out), partition_size=3), client=client2)
    return out


def test_job_by_scheduler_address_matches_embedded_run(
    external_cluster, corpus, embedded_run, tmp_path
):
    address, _ = external_cluster
    out = tmp_path / "out"
    report = run_job(
        JobSpec(input=[str(corpus)], output=str(out), scheduler=address, partition_size=5)
    )
    assert report.errors == 4
    assert_same_dataset(out, embedded_run)


def test_job_by_scheduler_file_matches_embedded_run(
    external_cluster, corpus, embedded_run, tmp_path
):
    _, scheduler_file = external_cluster
    out = tmp_path / "out"
    run_job(JobSpec(input=[str(corpus)], output=str(out), scheduler_file=str(scheduler_file)))
    assert_same_dataset(out, embedded_run)


def test_job_by_environment_variable_via_cli(external_cluster, corpus, embedded_run, tmp_path):
    address, _ = external_cluster
    out = tmp_path / "out"
    result = subprocess.run(
        [str(BIN / "palette-dask"), "run", "-i", str(corpus), "-o", str(out), "--no-progress"],
        env={**os.environ, "DASK_SCHEDULER_ADDRESS": address},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f"connecting to the Dask scheduler at {address}" in result.stderr
    assert_same_dataset(out, embedded_run)
