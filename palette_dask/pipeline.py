"""The Dask graph: inputs streamed in waves, one task per partition.

The client never holds the whole input list: URIs are drawn lazily from the
sources, a wave of them at a time. Each wave becomes a Dask bag with an
explicit partition size; each partition decodes, clusters and writes its own
Parquet files and sends back only a few counts. The next wave is submitted
while the current one drains, so workers stay busy and the number of tasks
known to the scheduler stays bounded however large the corpus is.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version

import dask.bag as db
import fsspec
from distributed import Client, as_completed
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from .cluster import job_client
from .imaging import ImageError
from .palette import load_sample, palette_from_sample
from .sources import check_inputs, chunked, image_id, iter_uris
from .spec import JobSpec
from .tables import JOB_FILE, SCHEMAS, TableBuilder, write_job_file, write_partition

logger = logging.getLogger(__name__)

_VERSIONED_PACKAGES = (
    "palette-dask",
    "dask",
    "distributed",
    "dask-ml",
    "scikit-learn",
    "scikit-image",
    "numpy",
    "pyarrow",
    "pillow",
    "imageio",
)


@dataclass(frozen=True)
class JobReport:
    """What a finished job did."""

    output: str
    images: int
    ok: int
    errors: int
    partitions: int
    elapsed_s: float


def describe_failure(exc: Exception) -> str:
    """The ``error`` column's text for an exception raised by one image."""
    if isinstance(exc, ImageError):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return f"file not found: {exc.filename or exc}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename or exc}"
    if isinstance(exc, OSError):
        return f"cannot read file: {exc}"
    return f"unexpected {type(exc).__name__}: {exc}"


def process_partition(items: list[tuple[int, str]], spec: JobSpec) -> list[dict]:
    """Task body: every image of one partition, written as one file per table.

    ``items`` are ``(position, uri)`` pairs; partitions are aligned on
    ``spec.partition_size``, so the first position names the partition. A
    failing image becomes an error row; it never fails the task.
    """
    partition = items[0][0] // spec.partition_size
    started = time.perf_counter()
    options = spec.palette_options
    builder = TableBuilder(options)
    # Single-threaded BLAS/OpenMP: parallelism comes from the workers, and a fixed
    # thread count keeps floating-point results identical everywhere.
    with threadpool_limits(1):
        for _, uri in items:
            t0 = time.perf_counter()
            try:
                palette = palette_from_sample(load_sample(uri, options), options)
            except Exception as exc:  # one bad image is data, not a failed job
                builder.add(
                    image_id(uri),
                    uri,
                    error=describe_failure(exc),
                    format=getattr(exc, "format", None),
                    elapsed_ms=_ms_since(t0),
                )
            else:
                builder.add(image_id(uri), uri, palette=palette, elapsed_ms=_ms_since(t0))
    tables = builder.tables()
    write_partition(spec.output, partition, tables)
    errors = tables["images"]["status"].to_pylist().count("error")
    return [
        {
            "partition": partition,
            "images": len(builder),
            "errors": errors,
            "seconds": time.perf_counter() - started,
        }
    ]


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def wave_bag(items: list[tuple[int, str]], spec: JobSpec) -> db.Bag:
    """A lazy bag over one wave: one task per partition, each writing its own files."""
    return db.from_sequence(items, partition_size=spec.partition_size).map_partitions(
        process_partition, spec=spec
    )


def iter_waves(spec: JobSpec) -> Iterator[list[tuple[int, str]]]:
    """The job's ``(position, uri)`` pairs, drawn lazily a wave at a time."""
    wave_images = spec.partitions_per_wave * spec.partition_size
    return chunked(enumerate(iter_uris(spec.input)), wave_images)


def run_waves(
    client: Client, spec: JobSpec, waves: Iterable[list[tuple[int, str]]], *, progress: bool
) -> Iterator[dict]:
    """Submit waves and yield each partition's summary as it completes.

    At most about one and a half waves of partitions are in flight: the next
    wave goes in as soon as half of the current one has finished.
    """
    waves = iter(waves)
    in_flight = as_completed()
    pending = 0
    refill_below = max(1, spec.partitions_per_wave // 2)

    def submit_next() -> int:
        wave = next(waves, None)
        if wave is None:
            return 0
        futures = client.compute(wave_bag(wave, spec).to_delayed())
        in_flight.update(futures)
        return len(futures)

    pending += submit_next()
    with tqdm(unit="img", disable=not progress, desc="palettes", dynamic_ncols=True) as bar:
        for future in in_flight:
            (summary,) = future.result()
            future.release()
            pending -= 1
            bar.update(summary["images"])
            if pending < refill_below:
                pending += submit_next()
            yield summary


def prepare_output(spec: JobSpec) -> None:
    """Refuse to mix a new dataset into an old one, or into a folder that is not a dataset."""
    fs, root = fsspec.core.url_to_fs(spec.output)
    if not fs.exists(root):
        fs.makedirs(root, exist_ok=True)
        return
    entries = {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)}
    if not entries:
        return
    dataset_entries = set(SCHEMAS) | {JOB_FILE}
    if not entries & dataset_entries:
        raise FileExistsError(
            f"output {spec.output!r} is a non-empty folder that is not a palette-dask dataset; "
            "choose an empty or new folder"
        )
    if not spec.overwrite:
        raise FileExistsError(
            f"output {spec.output!r} already holds a dataset; pass --overwrite "
            "(overwrite = true) to replace it"
        )
    for name in entries & dataset_entries:
        fs.rm(f"{root}/{name}", recursive=True)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def run_job(spec: JobSpec, client: Client | None = None, *, progress: bool = False) -> JobReport:
    """Run a palette job and write its dataset to ``spec.output``.

    Parameters
    ----------
    spec : JobSpec
    client : distributed.Client, optional
        Run on this client's cluster; otherwise see :func:`palette_dask.cluster.job_client`.
    progress : bool
        Show a progress bar on standard error.

    Returns
    -------
    JobReport
    """
    check_inputs(spec.input)
    prepare_output(spec)
    started = datetime.now(timezone.utc)
    clock = time.perf_counter()
    images = errors = partitions = 0
    with job_client(spec, client) as active:
        if active.dashboard_link:
            logger.info("Dask dashboard: %s", active.dashboard_link)
        for summary in run_waves(active, spec, iter_waves(spec), progress=progress):
            images += summary["images"]
            errors += summary["errors"]
            partitions += 1
    report = JobReport(
        output=spec.output,
        images=images,
        ok=images - errors,
        errors=errors,
        partitions=partitions,
        elapsed_s=time.perf_counter() - clock,
    )
    write_job_file(
        spec.output,
        {
            "spec": spec.to_dict(),
            "versions": package_versions(),
            "started": started.isoformat(),
            "finished": datetime.now(timezone.utc).isoformat(),
            "counts": {
                "images": images,
                "ok": report.ok,
                "errors": errors,
                "partitions": partitions,
            },
            "elapsed_s": round(report.elapsed_s, 3),
        },
    )
    logger.info(
        "%d images (%d ok, %d failed) in %d partitions, %.1f s -> %s",
        images,
        report.ok,
        errors,
        partitions,
        report.elapsed_s,
        spec.output,
    )
    return report
