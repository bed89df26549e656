"""What every worker of the embedded cluster inherits from the server it is forked from.

The embedded cluster forks its workers from one server process
(:data:`~palette_dask.cluster.WORKER_START_METHOD`), which imports this module
before it forks the first. So the task modules are imported, the clustering
loops loaded from numba's cache and pandas (which pyarrow imports to build any
column from Python values) in memory once per job, not once per worker: a
worker, and one restarted after a crash, runs its first image at once, and the
workers share those pages.

The server runs no Python thread and no event loop; the native thread pools
these imports start (OpenBLAS, jemalloc) stop and restart themselves around a
fork.
"""

import gc

import pandas  # noqa: F401

import palette_dask.tasks  # noqa: F401
from palette_dask.palette import warm_up

warm_up()
# Every worker inherits the objects made so far and keeps most of them for
# life: left to the collector, each worker's collections would walk them all
# (and copy the pages they sit on).
gc.freeze()
