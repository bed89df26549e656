"""How the job sets up the processes it runs in: memory allocator and embedded cluster."""

import ctypes
import os
import subprocess
import sys
import textwrap

import pytest
from distributed import Client, LocalCluster
from jobtools import make_corpus

from palette_dask import JobSpec, run_job
from palette_dask.cluster import WORKER_START_METHOD, job_client

# Counts the blocks glibc has mapped from the kernel, then allocates 1 MiB and
# counts again; prints the difference before and after tune_malloc().
MAPPED_BLOCKS = textwrap.dedent(
    """
    import ctypes
    import numpy as np

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2

    def new_mapped_blocks():
        before = libc.mallinfo2().hblks
        block = np.ones(2**20, np.uint8)
        return libc.mallinfo2().hblks - before
    """
)

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(ctypes.CDLL(None), "mallinfo2"),
    reason="the allocator tuning is for glibc (2.33 or newer to observe it)",
)


@glibc
def test_tune_malloc_serves_image_buffers_from_the_heap():
    # As Dask's nanny starts a worker: a trim threshold that pins the mmap threshold.
    script = MAPPED_BLOCKS + textwrap.dedent(
        """
        from palette_dask.tasks import tune_malloc
        untuned = new_mapped_blocks()
        assert tune_malloc()
        print(untuned, new_mapped_blocks())
        """
    )
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    untuned, tuned = map(int, out.stdout.split())
    assert untuned == 1  # each 1 MiB buffer got fresh pages from the kernel
    assert tuned == 0


@glibc
def test_job_tunes_the_allocator_of_its_workers(sample_dir, tmp_path):
    def mapped_blocks_of_a_new_buffer():
        namespace = {}
        exec(MAPPED_BLOCKS, namespace)
        return namespace["new_mapped_blocks"]()

    corpus = make_corpus(tmp_path / "corpus", sample_dir)
    # A fresh worker: one that ran other jobs' tasks may have been tuned by them.
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        run_job(JobSpec(input=[str(corpus)], output=str(tmp_path / "out")), client=client)
        assert list(client.run(mapped_blocks_of_a_new_buffer).values()) == [0]


def test_tune_malloc_can_be_switched_off():
    import dask

    from palette_dask.tasks import tune_malloc

    # Switched off, it returns before changing anything in this process.
    with dask.config.set({"palette-dask.tune-malloc": False}):
        assert tune_malloc() is False


def test_embedded_cluster_workers_start_ready_and_take_one_partition_at_a_time(tmp_path):
    def ready_for_a_first_image():
        """Whether the task modules are imported, and the compiled loops not yet loaded."""
        from numba.core.registry import CPUDispatcher

        from palette_dask import _loops

        unloaded = [
            name
            for name, loop in vars(_loops).items()
            if isinstance(loop, CPUDispatcher) and not name.startswith("_") and not loop.signatures
        ]
        return "palette_dask.tasks" in sys.modules, unloaded

    spec = JobSpec(input=[str(tmp_path)], output=str(tmp_path / "out"), workers=1)
    with job_client(spec) as client:
        saturation = client.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.WORKER_SATURATION
        )
        nthreads = list(client.nthreads().values())
        ready = list(client.run(ready_for_a_first_image).values())
    assert saturation == 1.0
    assert nthreads == [1]
    if WORKER_START_METHOD == "forkserver":  # forked from a server that loaded them
        assert ready == [(True, [])]
