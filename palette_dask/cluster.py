"""Getting a Dask client: an existing cluster when one is named, else an embedded LocalCluster."""

from __future__ import annotations

import logging
import multiprocessing
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version

import dask
from distributed import Client, LocalCluster
from distributed.security import Security
from distributed.utils import get_mp_context

from .errors import SchedulerUnreachableError, VersionMismatchError
from .sources import may_be_remote
from .spec import JobSpec

logger = logging.getLogger(__name__)


def default_workers() -> int:
    """Worker processes of the embedded cluster: one per usable core."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def scheduler_address(spec: JobSpec) -> str | None:
    """The scheduler the job submits to: the spec's, else ``DASK_SCHEDULER_ADDRESS``, else none."""
    return spec.scheduler or dask.config.get("scheduler-address", None)


def _security(spec: JobSpec) -> Security | None:
    """TLS settings from the spec; ``None`` leaves them to Dask's configuration."""
    if not spec.tls_ca_file:
        return None
    return Security(
        tls_ca_file=spec.tls_ca_file,
        tls_client_cert=spec.tls_cert,
        tls_client_key=spec.tls_key,
        require_encryption=True,
    )


# Dask settings of the embedded cluster, which runs one long CPU-bound task per
# partition on each core. A worker gets its next partition only when it has
# finished one: the round trip is nothing beside a partition's work, and the
# last partitions of a job spread over the workers instead of queueing two
# deep behind one of them while the others idle (see README, "Performance").
#
# Its worker processes are forked from a server process that has imported
# Dask and the task modules and loaded the compiled loops once
# (multiprocessing's "forkserver", Python 3.14's default on Linux; see
# `forked_workers`), rather than each started as a new interpreter: a worker,
# and a worker restarted after a crash, is ready in a fraction of the time and
# CPU, and the workers share the pages of the modules they all load.
WORKER_START_METHOD = (
    "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
)
EMBEDDED_CLUSTER_CONFIG = {
    "distributed.scheduler.worker-saturation": 1.0,
    "distributed.worker.multiprocessing-method": WORKER_START_METHOD,
}
# Modules the fork server imports before it forks a worker.
FORK_SERVER_MODULES = ["distributed", "palette_dask.forked_workers"]


def threads_per_worker(spec: JobSpec) -> int:
    """Task threads of each embedded worker: two when images may come over the network.

    The second thread's task reads its first images while the first's decode
    (:func:`~palette_dask.tasks.decoding_turn` lets one decode at a time), so
    no task starts by waiting a network round trip; local files need no such
    head start.
    """
    return 2 if may_be_remote(spec.input, spec.image_column) else 1


@contextmanager
def embedded_cluster(n_workers: int, threads: int = 1, **cluster_options) -> Iterator[LocalCluster]:
    """A :class:`~distributed.LocalCluster` of ``n_workers`` worker processes of ``threads``
    task threads each.

    ``cluster_options`` go to ``LocalCluster`` (``dashboard_address``, say).
    """
    with dask.config.set(EMBEDDED_CLUSTER_CONFIG):
        context = get_mp_context()  # sets Dask's own list of modules, once per process
    if WORKER_START_METHOD == "forkserver":
        # Read when the server starts: the process's first forked worker.
        context.set_forkserver_preload(FORK_SERVER_MODULES)
    with (
        dask.config.set(EMBEDDED_CLUSTER_CONFIG),
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads,
            processes=True,
            # As quiet as this process's Dask logs (see the command line's --log-level).
            silence_logs=max(logging.ERROR, logging.getLogger("distributed").getEffectiveLevel()),
            **cluster_options,
        ) as cluster,
    ):
        yield cluster


def describe_cluster(spec: JobSpec) -> str:
    """The cluster :func:`job_client` would use for ``spec``, in words."""
    address = scheduler_address(spec)
    if spec.scheduler:
        return f"the Dask scheduler at {address} (job spec)"
    if spec.scheduler_file:
        return f"the Dask scheduler in {spec.scheduler_file}"
    if address:
        return f"the Dask scheduler at {address} (DASK_SCHEDULER_ADDRESS)"
    n_workers = spec.workers or default_workers()
    if threads_per_worker(spec) == 1:
        return f"an embedded LocalCluster of {n_workers} single-threaded worker process(es)"
    return (
        f"an embedded LocalCluster of {n_workers} worker process(es) of two threads: "
        "one task decodes while the next one's reads are on their way"
    )


@contextmanager
def job_client(spec: JobSpec, client: Client | None = None) -> Iterator[Client]:
    """A client for the job; one passed in is used as it is and left open.

    Order of precedence: ``client``, ``spec.scheduler``, ``spec.scheduler_file``,
    the ``scheduler-address`` Dask setting (``DASK_SCHEDULER_ADDRESS``), and
    finally an embedded :class:`~distributed.LocalCluster` with ``spec.workers``
    worker processes (one per core by default) of :func:`threads_per_worker` threads.
    """
    if client is not None:
        yield client
        return
    address = scheduler_address(spec)
    if address or spec.scheduler_file:
        target = address or spec.scheduler_file
        logger.info("connecting to the Dask scheduler at %s", target)
        try:
            remote = Client(
                address,
                scheduler_file=None if address else spec.scheduler_file,
                security=_security(spec),
            )
        except OSError as exc:  # refused, or no answer within Dask's connect timeout
            raise SchedulerUnreachableError(
                f"cannot reach the Dask scheduler at {target}: {exc}; start it, or check "
                "the address"
            ) from exc
        with remote:
            yield remote
        return
    n_workers = spec.workers or default_workers()
    logger.info("starting an embedded Dask cluster with %d worker process(es)", n_workers)
    with embedded_cluster(n_workers, threads_per_worker(spec)) as cluster, Client(cluster) as local:
        yield local


# Packages whose versions must agree between the client and the workers: a
# mismatch breaks serialization (dask, distributed) or changes results.
RESULT_PACKAGES = ("palette-dask", "dask-ml", "scikit-learn", "scikit-image", "numpy", "pillow")
# Packages whose versions a dataset records (`_job.json`): those that decide its
# results, the decoders and those that run the job and write its files.
RECORDED_PACKAGES = (
    *RESULT_PACKAGES,
    "dask",
    "distributed",
    "pyarrow",
    "pillow-heif",
    "pillow-jxl-plugin",
    "pyspng",
    "tifffile",
    "imagecodecs",
    "imageio",
)


def package_versions(names=RECORDED_PACKAGES) -> dict[str, str | None]:
    """The Python version and those of the packages ``names`` (``None``: not installed).

    palette-dask's is the running package's ``__version__``, read when called.
    """
    import palette_dask  # its version as the process sees it, after any change to it

    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = palette_dask.__version__ if name == "palette-dask" else version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def check_versions(client: Client) -> None:
    """Fail with a clear message when the workers run other versions than the client.

    Dask's own check covers the packages it needs to talk to the cluster; ours
    adds the ones that decide the palettes, so a dataset never mixes results.
    """
    client.get_versions(check=True)
    local = package_versions(RESULT_PACKAGES)
    mismatches = []
    for worker, remote in sorted(client.run(package_versions, RESULT_PACKAGES).items()):
        for name in RESULT_PACKAGES:  # Dask's own check covers Python's version
            expected = local[name]
            if remote.get(name) != expected:
                mismatches.append(f"{worker} has {name} {remote.get(name)}, client has {expected}")
    if mismatches:
        raise VersionMismatchError(
            "the cluster's workers run other package versions than this client, which would "
            "change the palettes: " + "; ".join(mismatches) + ". Install the same versions "
            "on the workers."
        )
