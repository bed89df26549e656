"""Real Dask clusters started as separate processes: `dask scheduler` and `dask worker`."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

from distributed import Client
from jobtools import IDLE_LIGHT_DASK, dask_environment

BIN = Path(sys.executable).parent


@contextlib.contextmanager
def external_cluster(folder: Path, *, workers: int = 2):
    """Start a scheduler and ``workers`` single-threaded workers on 127.0.0.1.

    Yields ``(address, scheduler_file)``; everything is stopped on exit.
    """
    scheduler_file = folder / "scheduler.json"
    env = {**os.environ, **dask_environment(IDLE_LIGHT_DASK)}
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
            cwd=folder,
            env=env,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            assert time.monotonic() < deadline, "scheduler did not start"
            assert processes[0].poll() is None, "scheduler exited"
            time.sleep(0.1)
        for _ in range(workers):
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
                    cwd=folder,
                    env=env,
                )
            )
        with Client(scheduler_file=str(scheduler_file), timeout=30) as client:
            client.wait_for_workers(workers, timeout=60)
            address = client.scheduler.address
        yield address, scheduler_file
    finally:
        # Workers first, while their scheduler still answers their goodbye: a worker
        # whose scheduler is gone waits to reconnect before it gives up.
        for group in (processes[1:], processes[:1]):
            for process in group:
                process.terminate()
            for process in group:
                process.wait(timeout=30)
