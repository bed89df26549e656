"""Helpers for tests that run whole jobs: a mixed corpus and table comparisons."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
from imagegen import blocks, encode, transparent_png, truncated_jpeg

# The test clusters live long and idle most of the time: Dask's statistical profiler,
# event-loop health checks and system monitor would cost each worker a tenth of a core,
# and the jobs depend on none of them. Set in the test processes (conftest.py) and in
# the environment of the `dask scheduler` and `dask worker` processes they start;
# commands run as processes of their own keep Dask's defaults.
IDLE_LIGHT_DASK = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "1s",
}


def dask_environment(config: dict) -> dict[str, str]:
    """``config`` as the ``DASK_…`` environment variables a Dask process reads."""
    return {
        "DASK_" + key.upper().replace(".", "__").replace("-", "_"): str(value)
        for key, value in config.items()
    }


BAD_INPUTS = {
    "truncated.jpg": "truncated or corrupt JPEG",
    "text.jpg": "a text file, not an image",
    "empty.jpg": "empty file",
    "transparent.png": "no opaque pixels",
}
SORT_KEYS = {
    "images": ["image_id"],
    "palettes": ["image_id", "palette_kind", "rank"],
    "assignments": ["image_id", "palette_kind"],
    "corpus_palette": ["corpus_index"],
}


def make_corpus(folder: Path, sample_dir: Path) -> Path:
    """Sample photographs, synthetic block images and four broken files."""
    folder.mkdir(parents=True, exist_ok=True)
    for photo in sorted(sample_dir.iterdir()):
        shutil.copy(photo, folder / photo.name)
    rng = np.random.default_rng(0)
    synthetic = folder / "synthetic"
    synthetic.mkdir(exist_ok=True)
    for i in range(6):
        colors = rng.integers(0, 256, (4, 3))
        image = blocks(colors, [0.4, 0.3, 0.2, 0.1], size=(120 + 10 * i, 90))
        fmt, ext = [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp")][i % 3]
        (synthetic / f"blocks{i}.{ext}").write_bytes(encode(image, fmt))
    broken = folder / "broken"
    broken.mkdir(exist_ok=True)
    (broken / "truncated.jpg").write_bytes(
        truncated_jpeg(rng.integers(0, 256, (64, 64, 3), np.uint8))
    )
    (broken / "text.jpg").write_text("this is a text file pretending to be a JPEG\n")
    (broken / "empty.jpg").write_bytes(b"")
    (broken / "transparent.png").write_bytes(transparent_png())
    return folder


def read_table(output, name: str, drop=()) -> pa.Table:
    """A table of a dataset, sorted by its key so that runs can be compared row for row."""
    table = pads.dataset(Path(output) / name, format="parquet").to_table()
    table = table.drop_columns(list(drop)) if drop else table
    return table.sort_by([(key, "ascending") for key in SORT_KEYS[name]])


def assert_same_dataset(a, b) -> None:
    """Equal tables in every respect but timing."""
    assert read_table(a, "palettes").equals(read_table(b, "palettes"))
    assert read_table(a, "assignments").equals(read_table(b, "assignments"))
    assert read_table(a, "images", drop=["elapsed_ms"]).equals(
        read_table(b, "images", drop=["elapsed_ms"])
    )


def cli(*args, env=None, prefix=(), timeout=300) -> subprocess.CompletedProcess:
    """Run the ``palette-dask`` command as a user would, capturing its output."""
    command = [*prefix, str(Path(sys.executable).parent / "palette-dask"), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


def invoke(*args) -> subprocess.CompletedProcess:
    """Run ``palette-dask ARGS`` in this process with click's test runner: what :func:`cli`
    gives for commands that need no process of their own, without starting an interpreter.

    An exception the command does not turn into an exit code is raised here: a defect
    fails the test rather than hiding in an exit code.
    """
    from click.testing import CliRunner

    from palette_dask.cli import main

    result = CliRunner().invoke(main, [str(arg) for arg in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def wait_for_files(folder: Path, count: int, timeout: float = 120) -> None:
    """Wait until ``folder`` holds ``count`` partition files (``part-*``), within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (folder.exists() and len(list(folder.glob("part-*"))) >= count):
        assert time.monotonic() < deadline, f"fewer than {count} files appeared in {folder}"
        time.sleep(0.02)


def kill_when_written(command: list[str], folder: Path, count: int) -> int:
    """Start ``command``, SIGKILL it once ``folder`` holds ``count`` partition files; the files
    written by then."""
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_files(folder, count)
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=60)
    return len(list(folder.glob("part-*")))


CRASHING = Path(__file__).parent / "crashing"


def crashing_variables(crash_on: str) -> dict[str, str]:
    """The environment variables under which a Python process started dies on images
    whose URI holds ``crash_on`` (see crashing/crashswitch.py)."""
    return {
        "PALETTE_DASK_TEST_CRASH_ON": crash_on,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(CRASHING), os.environ.get("PYTHONPATH")])),
    }


@contextlib.contextmanager
def crashing_processes(crash_on: str):
    """Within the block, every Python process started dies on images whose URI holds
    ``crash_on``; this one does not."""
    crashing = crashing_variables(crash_on)
    saved = {name: os.environ.get(name) for name in crashing}
    os.environ.update(crashing)  # inherited by the processes started, and theirs
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def fresh_cluster(n_workers: int, env=None, security=None, **config):
    """A client of a new embedded cluster of ``n_workers`` single-threaded worker
    processes, with the environment variables ``env`` set in the workers and ``config``
    set meanwhile; with a ``security`` (:class:`distributed.security.Security`), every
    connection is TLS."""
    import dask
    from distributed import Client

    from palette_dask.cluster import embedded_cluster

    tls = {"security": security, "protocol": "tls://"} if security else {}
    with (
        dask.config.set(config),
        embedded_cluster(n_workers, dashboard_address=":0", env=env, **tls) as cluster,
        Client(cluster, security=security) as client,
    ):
        yield client


def run_with_crashing_decoder(spec, crash_on: str):
    """Run a job on a fresh 2-worker cluster whose workers die on images whose URI holds
    ``crash_on``, each task allowed no retry; the job's report.

    The workers load the crashing decoder as a Dask preload, and the processes they
    start load it through :func:`crashing_variables`, set in the workers' environment.
    """
    from palette_dask import run_job

    with fresh_cluster(
        2,
        env=crashing_variables(crash_on),
        **{
            "distributed.scheduler.allowed-failures": 0,
            "distributed.worker.preload": [str(CRASHING / "crashswitch.py")],
        },
    ) as client:
        return run_job(spec, client=client)
