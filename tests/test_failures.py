"""When the environment stops a job: one clear message (what happened, what was kept,
what to do), the exit code, `_job.json`'s status, and the same command resuming to the
tables of an undisturbed run.

The file-system cases mount small tmpfs file systems (the tests need root, as `make
test` on a fresh machine has); real `dask scheduler` processes stand for a cluster."""

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from clusters import external_cluster
from imagegen import write_images
from jobtools import assert_same_dataset, invoke, read_table, wait_for_files

from palette_dask import JobSpec, run_job

BIN = Path(sys.executable).parent
IMAGES = 96


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stops") / "images"
    write_images(folder, range(IMAGES), size=(120, 160))
    return folder


@pytest.fixture(scope="module")
def undisturbed(images, client2, tmp_path_factory):
    out = tmp_path_factory.mktemp("undisturbed") / "out"
    run_job(JobSpec(input=[str(images)], output=str(out), partition_size=4), client=client2)
    return out


def run_args(images, out, *more):
    return ["run", "-i", images, "-o", out, "--partition-size", "4", "--no-progress", *more]


def assert_stopped(done, status: str, *phrases, out: Path | None = None) -> None:
    """One message on stderr, no traceback, the exit code, and `_job.json`'s status."""
    assert done.returncode == (130 if status == "interrupted" else 1), done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    message = done.stderr[done.stderr.index("error: ") :]
    for phrase in (*phrases, "complete partitions", "run the same command again to resume"):
        assert phrase in message, message
    if out is not None:
        record = json.loads((out / "_job.json").read_text())
        assert record["status"] == status and record["reason"] in message


@contextlib.contextmanager
def small_file_system(folder: Path, size: str, *options: str):
    """A tmpfs of ``size`` mounted on ``folder`` for the test."""
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs"]
    done = subprocess.run([*mount, str(folder)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a small file system here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_full_output_file_system(images, undisturbed, client2, tmp_path):
    with small_file_system(tmp_path / "small", "320k") as small:
        out = small / "out"
        args = run_args(images, out, "--scheduler", client2.scheduler.address)
        assert_stopped(invoke(*args), "failed", "the output's file system is full", out=out)
        written = len(list((out / "images").glob("part-*")))
        assert 0 < written < IMAGES // 4
        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
        again = invoke(*args)
        assert again.returncode == 0, again.stderr
        assert "resumed an interrupted job" in again.stdout
        assert_same_dataset(out, undisturbed)
        assert json.loads((out / "_job.json").read_text())["status"] == "complete"
        assert sorted(p.name for p in out.iterdir()) == [
            "_job.json",
            "assignments",
            "images",
            "palettes",
        ]


def test_a_read_only_output(images, undisturbed, client2, tmp_path):
    with small_file_system(tmp_path / "readonly", "64m", "ro") as readonly:
        out = readonly / "out"
        args = run_args(images, out, "--scheduler", client2.scheduler.address)
        assert_stopped(invoke(*args), "failed", "cannot write the output: Read-only file system")
        assert not out.exists()  # nothing could be written, not even _job.json
        subprocess.run(["mount", "-o", "remount,rw", str(readonly)], check=True)
        again = invoke(*args)
        assert again.returncode == 0, again.stderr
        assert_same_dataset(out, undisturbed)


def test_losing_the_scheduler_mid_job(images, undisturbed, client2, tmp_path):
    out = tmp_path / "out"
    with external_cluster(tmp_path, workers=1) as (address, scheduler_file):
        command = [str(BIN / "palette-dask"), *map(str, run_args(images, out))]
        job = subprocess.Popen(
            [*command, "--scheduler", address], stderr=subprocess.PIPE, text=True
        )
        wait_for_files(out / "images", 3)
        (scheduler,) = [
            p
            for p in psutil.Process().children(recursive=True)
            if "scheduler" in p.cmdline() and str(scheduler_file) in p.cmdline()
        ]
        scheduler.kill()
        _, stderr = job.communicate(timeout=120)
    done = subprocess.CompletedProcess(command, job.returncode, "", stderr)
    assert_stopped(done, "failed", f"lost the Dask scheduler at {address}", out=out)
    assert len(list((out / "images").glob("part-*"))) < IMAGES // 4
    # Another scheduler: the job resumes where it stopped.
    again = invoke(*run_args(images, out, "--scheduler", client2.scheduler.address))
    assert again.returncode == 0 and "resumed an interrupted job" in again.stdout, again.stderr
    assert_same_dataset(out, undisturbed)


def test_ctrl_c_stops_promptly_and_the_same_command_resumes(images, undisturbed, client2, tmp_path):
    out = tmp_path / "out"
    command = [str(BIN / "palette-dask"), *map(str, run_args(images, out, "--workers", "2"))]
    job = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    wait_for_files(out / "images", 3)
    job.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, stderr = job.communicate(timeout=60)
    print(f"\nCtrl-C to exit: {time.monotonic() - sent:.1f} s")
    done = subprocess.CompletedProcess(command, job.returncode, "", stderr)
    assert_stopped(done, "interrupted", "error: interrupted", out=out)
    assert len(list((out / "images").glob("part-*"))) < IMAGES // 4
    again = invoke(*run_args(images, out, "--scheduler", client2.scheduler.address))
    assert again.returncode == 0 and "resumed an interrupted job" in again.stdout, again.stderr
    assert_same_dataset(out, undisturbed)


def test_inputs_that_all_fail_stop_the_job_early(client2, tmp_path):
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    manifest = tmp_path / "urls.txt"
    manifest.write_text("".join(f"http://127.0.0.1:{port}/{i}.jpg\n" for i in range(24)))
    out = tmp_path / "out"
    args = ["run", "-i", manifest, "-o", out, "--partition-size", "4", "--no-progress"]
    args += ["--read-retries", "0", "--scheduler", client2.scheduler.address]
    done = invoke(*args, "--stop-after-failures", "8")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "inputs all failed (the last: cannot connect to 127.0.0.1" in done.stderr
    assert "--stop-after-failures 0" in done.stderr
    assert json.loads((out / "_job.json").read_text())["status"] == "failed"
    assert 8 <= read_table(out, "images").num_rows < 24  # not a row for every input
    # The setting lets it go on: a row for each input, saying why it failed.
    going_on = invoke(*args, "--stop-after-failures", "0")
    assert going_on.returncode == 0, going_on.stderr
    rows = read_table(out, "images")
    assert rows.num_rows == 24 and set(rows["status"].to_pylist()) == {"error"}
