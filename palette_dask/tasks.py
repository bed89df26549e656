"""Task bodies: what one Dask task does to one partition of a job.

Every function here runs on a worker, touches only its own partition's files,
and returns a few numbers (or a bounded fit sample) to the client. Running a
task twice writes the same files under the same names, so Dask may retry any
of them after a worker dies.

A partition is ``(index, items)``: its index within the job's segment and its
``(position, uri)`` pairs, images or a single whole tar shard (whose images
are known only as it is read). A partition already written is named by
``(segment, index)``. A task's rows go to its files a batch at a time
(:data:`ROWS_PER_WRITE` images), so its memory does not grow with its
partition.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import dask
import numpy as np
import pyarrow as pa

from .containers import Member, is_tar_shard
from .corpus import (
    PRESENCE_SHARE,
    CorpusPalette,
    FitSample,
    assign_to_corpus,
    fit_sample,
    merge_fit_samples,
)
from .imaging import ImageError, Sample
from .palette import clustered_pixels, load_sample, palette_from_sample, single_threaded
from .reads import Reads, read_many, read_tar_shard
from .sources import image_id
from .spec import JobSpec
from .storage import filesystem, fresh, iter_parquet_rows
from .tables import (
    SHARD_METADATA_KEY,
    PartitionWriter,
    TableBuilder,
    cache_path,
    read_partition_rows,
    sample_from_row,
    write_partition,
)

logger = logging.getLogger(__name__)

Part = tuple[int, list[tuple[int, str]]]
PartRef = tuple[int, int]

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
    if spec.own_palettes:
        names += ["palettes", "assignments"]
    if spec.caches_samples:
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
    to one thread meanwhile (:func:`~palette_dask.palette.single_threaded`),
    and the process's allocator is tuned first (:func:`tune_malloc`).
    """
    tune_malloc()
    with _DECODING, single_threaded():
        yield


@contextmanager
def _outcomes(items, spec: JobSpec) -> Iterator[Iterator[tuple]]:
    """``(index, uri, source_path, bytes or exception)`` of a partition's images, as read.

    Loose images (and members named one by one) come in the order their reads
    finish, with their index in ``items``; a partition that is a whole tar
    shard gives its images in shard order, numbered from 0, a member name
    repeated in the shard only once (see :class:`_ShardImages`).
    """
    if is_shard_partition(items):
        images = _ShardImages(read_tar_shard(items[0][1], spec.read_options))
        try:
            yield images
        finally:
            images.close()
        return
    with read_many([uri for _, uri in items], spec.read_options) as reads:
        yield ((i, items[i][1], reads.source_paths.get(i), data) for i, data in reads)


def is_shard_partition(items) -> bool:
    """Whether a partition's ``(position, uri)`` items are one whole tar shard."""
    return len(items) == 1 and is_tar_shard(items[0][1])


class _ShardImages:
    """A tar shard's images as partition outcomes; ``duplicates`` counts repeated member names.

    A tar file may hold a name twice; the first member of that name is the image.
    """

    def __init__(self, members: Iterator[Member]):
        self._members = members
        self.duplicates = 0

    def __iter__(self) -> Iterator[tuple]:
        seen: set[str] = set()
        for member in self._members:
            if member.uri in seen:
                self.duplicates += 1
                continue
            seen.add(member.uri)
            outcome = member.data if member.data is not None else ImageError(member.error)
            yield len(seen) - 1, member.uri, member.source_path, outcome

    def close(self) -> None:
        self._members.close()


def _image_row(uri: str, source_path: str | None, data, spec: JobSpec) -> dict:
    """One image's keywords for :meth:`TableBuilder.add_image`, and its ``fit`` sample.

    ``data`` is the image's bytes or the exception its read ended with. A failed
    read and a bad image become the row's ``error``; any other exception is a
    defect of palette-dask, not of the image: logged with its traceback, its
    row's ``error`` starts with :data:`INTERNAL_ERROR` and ``internal`` is set.
    """
    options = spec.palette_options
    t0 = time.perf_counter()
    try:
        if isinstance(data, BaseException):
            raise data
        sample = load_sample(data, options)
        pixels, _, background = clustered_pixels(sample, options)
        row = {
            "sample": sample,
            "n_pixels": len(pixels),
            "background": background,
            "palette": (palette_from_sample(sample, options) if spec.own_palettes else None),
        }
        if spec.fits_corpus:
            row["fit"] = fit_sample(sample, image_id(uri), options, size=spec.sample_per_image)
    except Exception as exc:
        if exc is data or isinstance(exc, IMAGE_FAILURES):  # one bad image is data
            row = {"error": describe_failure(exc), "format": getattr(exc, "format", None)}
        else:
            logger.exception("internal error while processing %s", uri)
            row = {"error": f"{INTERNAL_ERROR}{type(exc).__name__}: {exc}", "internal": True}
    row["source_path"] = source_path
    row["elapsed_ms"] = _ms_since(t0)
    return row


# What a bad image or a failed read raises: the row's error, and the job goes on.
# A read's own failure is data whatever its type (it comes from the storage's library).
IMAGE_FAILURES = (ImageError, OSError, MemoryError)
# The start of the `error` of an image that met a defect of palette-dask.
INTERNAL_ERROR = "internal error: "


# Images whose rows are written together, as one row group of each table: a
# partition of any size (a whole tar shard) holds at most this many images' rows.
ROWS_PER_WRITE = 256


class _PartitionRows:
    """A partition's rows, put back in input order and handed to ``write`` a batch at a time.

    Rows arrive as their images are done (reads finish out of order); each
    batch of :data:`ROWS_PER_WRITE` consecutive images goes to ``write`` as a
    table per name. The images' fit samples are merged as the batches go.
    """

    def __init__(self, spec: JobSpec, write: Callable[[dict[str, pa.Table]], None]):
        self._spec = spec
        self._write = write
        self._names = _table_names(spec)
        self._cache = spec.caches_samples
        self._builder = TableBuilder(spec.palette_options)
        self._waiting: dict[int, tuple[str, dict]] = {}
        self._next = 0
        self._fit_parts: list[FitSample] = []
        self._batches = 0
        self.images = 0
        self.errors = 0
        self.last_error = None
        self.internal_errors = 0
        self.write_seconds = 0.0

    def add(self, index: int, uri: str, row: dict) -> None:
        """Add the row of the image at ``index`` of the partition (see :func:`_image_row`)."""
        self._waiting[index] = (uri, row)
        while self._next in self._waiting:
            self._add_next(*self._waiting.pop(self._next))
            self._next += 1

    def _add_next(self, uri: str, row: dict) -> None:
        key = image_id(uri)
        if "fit" in row:
            self._fit_parts.append(row.pop("fit"))
        if row.pop("internal", False):
            self.internal_errors += 1
        if "error" in row:
            self.errors += 1
            self.last_error = row["error"]
        elif self._cache:
            self._builder.add_sample(key, row["sample"])
        self._builder.add_image(key, uri, **row)
        self.images += 1
        if len(self._builder) >= ROWS_PER_WRITE:
            self._flush()

    def _flush(self) -> None:
        t0 = time.perf_counter()
        self._write(self._builder.tables(self._names))
        self.write_seconds += time.perf_counter() - t0
        self._builder = TableBuilder(self._spec.palette_options)
        self._batches += 1
        if len(self._fit_parts) > 1:
            self._fit_parts = [
                merge_fit_samples(*self._fit_parts, limit=self._spec.corpus_fit_pixels)
            ]

    def finish(self) -> list[FitSample]:
        """Write the last rows; the partition's fit samples (merged into one, if any)."""
        if self._waiting:
            raise RuntimeError(f"rows of images {sorted(self._waiting)} came after a missing one")
        if len(self._builder) or not self._batches:
            self._flush()
        return self._fit_parts


def process_partition(part: Part, spec: JobSpec, segment: int) -> tuple[dict, FitSample | None]:
    """First pass over one partition: ``images`` rows, own palettes, cache, fit sample.

    Returns the partition's summary and, in corpus modes, its fit sample.
    """
    index, items = part
    metadata = {SHARD_METADATA_KEY: items[0][1]} if is_shard_partition(items) else None
    with PartitionWriter(
        spec.output,
        (segment, index),
        _table_names(spec),
        storage_options=spec.storage_options,
        metadata=metadata,
    ) as writer:
        rows = _PartitionRows(spec, writer.write)
        # The reads start before this task's turn to decode comes.
        with _outcomes(items, spec) as outcomes, decoding_turn():
            started = time.perf_counter()
            reads = _Timed(outcomes)
            for i, uri, source_path, data in reads:
                rows.add(i, uri, _image_row(uri, source_path, data, spec))
            duplicates = getattr(outcomes, "duplicates", 0)
        fit_parts = rows.finish()
        processed = time.perf_counter()
        writer.commit()
    summary = {
        "partition": index,
        "images": rows.images,
        "errors": rows.errors,
        "last_error": rows.last_error,
        "internal_errors": rows.internal_errors,
        "duplicates": duplicates,
        "process_seconds": processed - started - rows.write_seconds,
        "read_seconds": reads.seconds,
        "write_seconds": time.perf_counter() - processed + rows.write_seconds,
    }
    if not spec.fits_corpus:
        return summary, None
    return summary, merge_fit_samples(*fit_parts, limit=spec.corpus_fit_pixels)


class _Timed:
    """The items of an iterator, and the seconds spent waiting for them (``seconds``).

    A partition's outcomes are its images' bytes: the wait is the time its
    decoding turn spent reading, or waiting for reads still on their way.
    """

    def __init__(self, items: Iterable):
        self._items = iter(items)
        self.seconds = 0.0

    def __iter__(self) -> _Timed:
        return self

    def __next__(self):
        t0 = time.perf_counter()
        try:
            return next(self._items)
        finally:
            self.seconds += time.perf_counter() - t0


# The error of an image that killed the process decoding it, alone.
CRASH_MESSAGE = (
    "the process decoding this image died, first in its worker, then alone; "
    "the file is likely to crash the decoder"
)


def process_images_apart(items, spec: JobSpec) -> tuple[dict, list[FitSample], int, int, float]:
    """Some images of a partition that kept killing workers, decoded in child processes.

    A child process decodes the images in turn and hands back each one's row
    as it is done, so an image that crashes its decoder takes only the child
    with it, never the worker (a worker killed again and again can be lost for
    good if it dies while its nanny is still starting it). When a child dies,
    a new one goes on with the images left, the one being decoded first. An
    image that kills the child it is the first image of (it killed its worker,
    then a process that decoded nothing else) becomes an error row
    (:data:`CRASH_MESSAGE`). A piece with ``c`` crashing images takes at most
    ``2c + 1`` children, whatever its size, when its images are read in order
    (local files, containers); remote reads finish in any order, and each
    child then does at least one image or finds a culprit. Children get this
    process's Dask config; an exception raised in one is raised here.

    Returns the images' tables, fit samples, error count, internal error
    count and seconds waiting for their bytes, for
    :func:`write_recovered_partition`.
    """
    written: list[dict[str, pa.Table]] = []
    rows = _PartitionRows(spec, written.append)
    read_seconds = 0.0
    pending = list(range(len(items)))
    while pending:
        batch, finished, first, unfinished = pending, set(), None, None
        for position, uri, row, waited in _child_rows([items[p] for p in batch], spec):
            if row is None:  # the child starts this image
                unfinished = batch[position]
                first = unfinished if first is None else first
                continue
            rows.add(batch[position], uri, row)
            finished.add(batch[position])
            read_seconds += waited
            unfinished = None
        # The image the child died on goes first to the next one.
        pending = sorted((p for p in batch if p not in finished), key=lambda p: p != unfinished)
        if pending and (not finished or unfinished == first):
            # It died on its first image, or before any: that image is the culprit.
            culprit = pending.pop(0)
            rows.add(culprit, items[culprit][1], {"error": CRASH_MESSAGE, "elapsed_ms": 0.0})
    fit_parts = rows.finish()
    tables = {name: pa.concat_tables([t[name] for t in written]) for name in written[0]}
    return tables, fit_parts, rows.errors, rows.internal_errors, read_seconds


def _child_rows(items, spec: JobSpec) -> Iterator[tuple[int, str, dict | None, float]]:
    """Run a child process over ``items``: ``(position, uri, row, seconds waited)`` of each
    image it finished, and ``(position, uri, None, 0.0)`` when it starts one.

    The entries come from a file the child appends to, read once it has
    ended, whether it finished or died.
    """
    with tempfile.TemporaryDirectory(prefix="palette-dask-apart-") as folder:
        job, result = os.path.join(folder, "job.pickle"), os.path.join(folder, "rows.pickle")
        with open(job, "wb") as f:
            pickle.dump((items, spec, dask.config.config), f)
        child = subprocess.run(
            [sys.executable, "-c", _CHILD_MAIN, job, result],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        if child.returncode != 0:
            logger.warning(
                "a process redoing %d images died with exit code %d: %s",
                len(items),
                child.returncode,
                child.stderr.decode(errors="replace")[-2000:],
            )
        if not os.path.exists(result):
            return
        with open(result, "rb") as f:
            while True:
                try:
                    entry = pickle.load(f)
                except (EOFError, pickle.UnpicklingError):
                    return  # the end, or an entry cut short by the child's death
                if isinstance(entry, BaseException):
                    raise entry
                yield entry


_CHILD_MAIN = "from palette_dask.tasks import _child_main; _child_main()"


def _child_main() -> None:
    """The child process of :func:`_child_rows`: ``python -c … JOB RESULT``."""
    job, result = sys.argv[1:3]
    with open(job, "rb") as f:
        items, spec, config = pickle.load(f)
    dask.config.update(dask.config.config, config)
    with open(result, "wb") as out:

        def record(entry) -> None:
            pickle.dump(entry, out)
            out.flush()  # what is written survives the child's death

        try:
            with _outcomes(items, spec) as outcomes, decoding_turn():
                reads = _Timed(outcomes)
                for i, uri, source_path, data in reads:
                    waited, reads.seconds = reads.seconds, 0.0
                    record((i, uri, None, 0.0))
                    record((i, uri, _image_row(uri, source_path, data, spec), waited))
        except Exception as exc:  # raised again in the parent
            record(exc)


def shard_image_uris(shard: str, spec: JobSpec) -> tuple[list[str], str | None]:
    """The URIs of a tar shard's images, in order, and why the shard ends early (or ``None``).

    Reads the shard once without decoding, so that a shard that keeps crashing
    workers can be redone in smaller pieces.
    """
    uris: list[str] = []
    failure = None
    images = _ShardImages(read_tar_shard(shard, spec.read_options))
    for _, uri, _, outcome in images:
        if uri == shard:
            failure = str(outcome)
        else:
            uris.append(uri)
    images.close()
    return uris, failure


def write_recovered_partition(
    part: Part, spec: JobSpec, segment: int, pieces: list
) -> tuple[dict, FitSample | None]:
    """Write a partition from the separate results of its images, in order.

    Each piece is a result of :func:`process_images_apart`, or a ``(uri, error)``
    pair for a shard's own failure, which becomes an error row.
    """
    started = time.perf_counter()
    index, items = part
    names = _table_names(spec)
    metadata = {SHARD_METADATA_KEY: items[0][1]} if is_shard_partition(items) else None
    fit_parts: list[FitSample] = []
    n_images = errors = internal_errors = 0
    read_seconds = 0.0
    with PartitionWriter(
        spec.output,
        (segment, index),
        names,
        storage_options=spec.storage_options,
        metadata=metadata,
    ) as writer:
        for piece in pieces:
            if isinstance(piece[0], str):
                uri, error = piece
                failed = TableBuilder(spec.palette_options)
                failed.add_image(image_id(uri), uri, error=error, elapsed_ms=0.0)
                piece = (failed.tables(names), [], 1, 0, 0.0)
            tables, parts, failures, internal, reading = piece
            writer.write(tables)
            fit_parts.extend(parts)
            n_images += tables["images"].num_rows
            errors += failures
            internal_errors += internal
            read_seconds += reading
        processed = time.perf_counter()
        writer.commit()
    summary = {
        "partition": index,
        "images": n_images,
        "errors": errors,
        "internal_errors": internal_errors,
        "duplicates": 0,
        "process_seconds": processed - started,
        "read_seconds": read_seconds,
        "write_seconds": time.perf_counter() - processed,
    }
    if not spec.fits_corpus:
        return summary, None
    return summary, merge_fit_samples(*fit_parts, limit=spec.corpus_fit_pixels)


def partition_samples(spec: JobSpec, part: PartRef) -> Iterator[tuple[str, Sample]]:
    """``(image_id, Sample)`` of a written partition's good images.

    From the first pass's cache when it is there; otherwise the images listed in
    the partition's ``images`` file are decoded again.
    """
    cached = cache_path(spec.output, part)
    if spec.corpus_assign == "cache" and _exists(cached, spec.storage_options):
        for row in iter_parquet_rows(cached, storage_options=spec.storage_options):
            yield row["image_id"], sample_from_row(row)
        return
    options = spec.palette_options
    listed = read_partition_rows(
        spec.output, "images", part, ["image_id", "uri", "status"], spec.storage_options
    )
    rows = [row for row in listed if row["status"] == "ok"]
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
