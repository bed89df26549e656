"""Task bodies: what one Dask task does to one partition of a job.

Every function here runs on a worker, touches only its own partition's files,
and returns a few numbers (or a bounded fit sample) to the client. Running a
task twice writes the same files under the same names, so Dask may retry any
of them after a worker dies.

A partition is ``(index, items)``: its index within the job's segment and its
``(position, uri)`` pairs. A partition already written is named by
``(segment, index)``.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import dask
import numpy as np
import pyarrow as pa

from .corpus import (
    PRESENCE_SHARE,
    CorpusPalette,
    FitSample,
    assign_to_corpus,
    fit_sample,
    merge_fit_samples,
)
from .imaging import ImageError, Sample
from .palette import load_sample, opaque_pixels, palette_from_sample, single_threaded
from .reads import Reads, read_many
from .sources import image_id
from .spec import JobSpec
from .storage import filesystem, fresh, join, read_parquet_rows
from .tables import TableBuilder, cache_path, part_name, sample_from_row, write_partition

logger = logging.getLogger(__name__)

Part = tuple[int, list[tuple[int, str]]]
PartRef = tuple[int, int]

# Test-only switch: a worker decoding an image whose URI contains this text exits
# at once, as a crashing decoder would (see README, "Failure handling").
CRASH_SWITCH = "palette-dask.testing.crash-on"
CRASH_EXIT_CODE = 70

# Config key: set to False to leave the worker's memory allocator as it is.
TUNE_MALLOC = "palette-dask.tune-malloc"
# glibc's mallopt parameters, and the values the task bodies set.
_M_TOP_PAD, _M_MMAP_THRESHOLD = -2, -3
MALLOC_TOP_PAD = 4 * 2**20
MALLOC_MMAP_THRESHOLD = 16 * 2**20


@functools.cache
def tune_malloc() -> bool:
    """Keep an image's working buffers in this process's heap; ``True`` if tuned.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which
    also fixes glibc's mmap threshold at 128 KiB: every decoded image, label
    array and histogram then gets fresh pages from the kernel and gives them
    back when freed, which makes each image about 1.5 times slower (see README,
    "Performance"). Serving blocks under 16 MiB from the heap, and keeping 4 MiB
    of free heap instead of trimming it to the last page, removes that cost at
    a bounded price in memory. Glibc only; elsewhere, or with the
    ``palette-dask.tune-malloc`` config set to False, nothing changes.
    """
    if not dask.config.get(TUNE_MALLOC, True) or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(_M_TOP_PAD, MALLOC_TOP_PAD)) and bool(
        mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)
    )


def describe_failure(exc: Exception) -> str:
    """The ``error`` column's text for an exception raised by one image."""
    if isinstance(exc, ImageError):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        cause = exc.__cause__
        if cause is not None and not isinstance(cause, FileNotFoundError):
            # fsspec reports an unreachable server as a missing file; say what happened.
            return f"cannot read file {exc}: {cause}"
        return f"file not found: {exc.filename or exc}"
    if isinstance(exc, IsADirectoryError):
        return f"is a directory, not a file: {exc.filename or exc}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename or exc}"
    if isinstance(exc, OSError):
        return f"cannot read file: {exc}"
    return f"unexpected {type(exc).__name__}: {exc}"


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def _table_names(spec: JobSpec) -> list[str]:
    """The tables the first pass writes for each partition, ``images`` included."""
    names = ["images"]
    if spec.mode in ("image", "both"):
        names += ["palettes", "assignments"]
    if spec.mode in ("corpus", "both") and spec.corpus_assign == "cache":
        names.append("samples")
    return names


# Held by the thread whose task decodes; see decoding_turn.
_DECODING = threading.Lock()


@contextmanager
def decoding_turn() -> Iterator[None]:
    """This thread's turn to decode and cluster: one at a time per worker process.

    A worker with two threads runs two tasks: while one decodes, the other's
    reads are already on their way, so a task does not start by waiting for
    the network; but two images never share a core. BLAS and OpenMP are held
    to one thread meanwhile (:func:`~palette_dask.palette.single_threaded`).
    """
    with _DECODING, single_threaded():
        yield


def _reads_of(items, spec: JobSpec) -> Reads:
    return read_many([uri for _, uri in items], spec.read_options)


def _process_items(items, reads: Reads, spec: JobSpec) -> tuple[TableBuilder, list[FitSample], int]:
    """Decode and cluster each image into a :class:`TableBuilder`; failures become rows.

    Each image is processed as soon as its bytes arrive from ``reads``; the
    rows go into the builder in input order, so the files do not depend on
    how fast each read was. Runs in the caller's :func:`decoding_turn`.
    """
    options = spec.palette_options
    own_palettes = spec.mode in ("image", "both")
    corpus = spec.mode in ("corpus", "both")
    crash_on = dask.config.get(CRASH_SWITCH, None)
    tune_malloc()
    done: list[dict] = [{} for _ in items]
    for i, data in reads:
        uri = items[i][1]
        if crash_on and crash_on in uri:
            os._exit(CRASH_EXIT_CODE)
        t0 = time.perf_counter()
        try:
            if isinstance(data, BaseException):
                raise data
            sample = load_sample(data, options)
            pixels, _ = opaque_pixels(sample, options.alpha_threshold)
            done[i] = {
                "sample": sample,
                "n_pixels": len(pixels),
                "palette": palette_from_sample(sample, options) if own_palettes else None,
            }
            if corpus:
                key = image_id(uri)
                done[i]["fit"] = fit_sample(sample, key, options, size=spec.sample_per_image)
        except Exception as exc:  # one bad image is data, not a failed job
            done[i] = {"error": describe_failure(exc), "format": getattr(exc, "format", None)}
        done[i]["elapsed_ms"] = _ms_since(t0)
    return _rows_in_order(items, done, spec)


def _rows_in_order(items, done: list[dict], spec: JobSpec):
    """The builder holding every image's rows in input order, its fit samples and error count.

    ``done`` holds, per image, the keywords of :meth:`TableBuilder.add_image`
    and, in corpus modes, its ``fit`` sample.
    """
    builder = TableBuilder(spec.palette_options)
    cache = spec.mode in ("corpus", "both") and spec.corpus_assign == "cache"
    fit_parts: list[FitSample] = []
    errors = 0
    for (_, uri), row in zip(items, done, strict=True):
        key = image_id(uri)
        if "fit" in row:
            fit_parts.append(row.pop("fit"))
        if "error" in row:
            errors += 1
        elif cache:
            builder.add_sample(key, row["sample"])
        builder.add_image(key, uri, **row)
    return builder, fit_parts, errors


def process_partition(part: Part, spec: JobSpec, segment: int) -> tuple[dict, FitSample | None]:
    """First pass over one partition: ``images`` rows, own palettes, cache, fit sample.

    Returns the partition's summary and, in corpus modes, its fit sample.
    """
    index, items = part
    # The reads start before this task's turn to decode comes.
    with _reads_of(items, spec) as reads, decoding_turn():
        started = time.perf_counter()
        builder, fit_parts, errors = _process_items(items, reads, spec)
    processed = time.perf_counter()
    write_partition(
        spec.output,
        (segment, index),
        builder.tables(_table_names(spec)),
        storage_options=spec.storage_options,
    )
    return _first_pass_result(spec, index, len(items), errors, (started, processed), fit_parts)


def _first_pass_result(spec, index, n_images, errors, clock, fit_parts):
    """The summary of a written partition; ``clock`` holds its start and the start of writing."""
    started, processed = clock
    summary = {
        "partition": index,
        "images": n_images,
        "errors": errors,
        "process_seconds": processed - started,
        "write_seconds": time.perf_counter() - processed,
    }
    if spec.mode == "image":
        return summary, None
    return summary, merge_fit_samples(*fit_parts, limit=spec.corpus_fit_pixels)


def process_one_image(item: tuple[int, str], spec: JobSpec) -> tuple[dict, list[FitSample], int]:
    """One image on its own, for a partition that keeps crashing workers."""
    with _reads_of([item], spec) as reads, decoding_turn():
        builder, fit_parts, errors = _process_items([item], reads, spec)
    return builder.tables(_table_names(spec)), fit_parts, errors


def write_recovered_partition(
    part: Part, spec: JobSpec, segment: int, results: list, crashes: dict[int, str]
) -> tuple[dict, FitSample | None]:
    """Write a partition from its images' separate results; ``crashes`` maps item index to error.

    An image that crashed every worker it ran on becomes an error row.
    """
    started = time.perf_counter()
    index, items = part
    names = _table_names(spec)
    pieces = {name: [] for name in names}
    fit_parts: list[FitSample] = []
    errors = 0
    survivors = iter(results)
    for i, (_, uri) in enumerate(items):
        if i in crashes:
            crashed = TableBuilder(spec.palette_options)
            crashed.add_image(image_id(uri), uri, error=crashes[i], elapsed_ms=0.0)
            tables, parts, failed = crashed.tables(names), [], 1
        else:
            tables, parts, failed = next(survivors)
        for name in names:
            pieces[name].append(tables[name])
        fit_parts.extend(parts)
        errors += failed
    processed = time.perf_counter()
    write_partition(
        spec.output,
        (segment, index),
        {name: pa.concat_tables(pieces[name]) for name in names},
        storage_options=spec.storage_options,
    )
    return _first_pass_result(spec, index, len(items), errors, (started, processed), fit_parts)


def partition_samples(spec: JobSpec, part: PartRef) -> Iterator[tuple[str, Sample]]:
    """``(image_id, Sample)`` of a written partition's good images.

    From the first pass's cache when it is there; otherwise the images listed in
    the partition's ``images`` file are decoded again.
    """
    tune_malloc()
    cached = cache_path(spec.output, part)
    if spec.corpus_assign == "cache" and _exists(cached, spec.storage_options):
        for row in read_parquet_rows(cached, storage_options=spec.storage_options):
            yield row["image_id"], sample_from_row(row)
        return
    options = spec.palette_options
    listed = join(spec.output, "images", part_name(*part))
    rows = [
        row
        for row in read_parquet_rows(
            listed, columns=["image_id", "uri", "status"], storage_options=spec.storage_options
        )
        if row["status"] == "ok"
    ]
    with read_many([row["uri"] for row in rows], spec.read_options) as reads:
        yield from _decoded(reads, rows, options)


def _decoded(reads: Reads, rows: list[dict], options) -> Iterator[tuple[str, Sample]]:
    """``(image_id, Sample)`` of the ``rows`` whose images still decode."""
    for i, data in reads:
        try:
            if isinstance(data, BaseException):
                raise data
            sample = load_sample(data, options)
        except Exception as exc:  # changed or removed since the first pass
            logger.warning(
                "skipping %s in the corpus pass: %s", rows[i]["uri"], describe_failure(exc)
            )
            continue
        yield rows[i]["image_id"], sample


def _exists(path: str, storage_options) -> bool:
    """Whether ``path`` exists now, whoever wrote it (listings are not trusted from cache)."""
    fs, where = filesystem(path, storage_options)
    return fs.exists(fresh(fs, where))


def partition_fit_sample(part: PartRef, spec: JobSpec) -> FitSample:
    """The fit sample of a partition written by an earlier job (or an interrupted one)."""
    options = spec.palette_options
    with decoding_turn():
        parts = [
            fit_sample(sample, key, options, size=spec.sample_per_image)
            for key, sample in partition_samples(spec, part)
        ]
    return merge_fit_samples(*parts, limit=spec.corpus_fit_pixels)


def empty_totals(n_colors: int) -> dict:
    """Per-colour sums of the corpus assignment pass, before any image."""
    return {
        "images": 0,
        "pixel_counts": np.zeros(n_colors, np.int64),
        "image_counts": np.zeros(n_colors, np.int64),
        "squared_error": 0.0,
    }


def assign_partition(part: PartRef, spec: JobSpec, corpus: CorpusPalette) -> dict:
    """Second pass of a corpus job over one written partition.

    Writes the partition's ``corpus`` palettes and assignments and returns the
    per-colour totals the ``corpus_palette`` table is made of.
    """
    options = spec.palette_options
    builder = TableBuilder(options)
    totals = empty_totals(len(corpus.colors))
    with decoding_turn():
        for key, sample in partition_samples(spec, part):
            palette = assign_to_corpus(sample, corpus, options)
            builder.add_palette(key, palette)
            totals["images"] += 1
            totals["pixel_counts"][palette.corpus_index] += palette.counts
            present = palette.corpus_index[palette.proportions >= PRESENCE_SHARE]
            totals["image_counts"][present] += 1
            totals["squared_error"] += palette.mse_rgb * float(palette.counts.sum())
    write_partition(
        spec.output,
        part,
        builder.tables(["palettes", "assignments"]),
        prefix="corpus",
        storage_options=spec.storage_options,
    )
    return totals
