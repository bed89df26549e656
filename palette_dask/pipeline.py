"""The Dask graph: inputs streamed in waves, one task per partition.

The client never holds the whole input list: URIs are drawn lazily from the
sources, a wave of them at a time. Each wave becomes a Dask bag with an
explicit partition size; each partition decodes, clusters and writes its own
Parquet files and sends back only a few counts. The next wave is submitted
while the current one drains, so workers stay busy and the number of tasks
known to the scheduler stays bounded however large the corpus is.

A corpus job makes two passes. The first decodes every image, writes the
``images`` table (and the images' own palettes in ``both`` mode), keeps each
resized sample in a cache and draws a few pixels per image for the fit; those
pixels are merged on the workers into one bounded sample, never sent to the
client. The corpus palette is fitted on it, and the second pass assigns every
sample pixel of every image to the corpus palette.
"""

from __future__ import annotations

import logging
import operator
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version

import dask
import dask.array as da
import dask.bag as db
import fsspec
import numpy as np
import pyarrow as pa
from distributed import Client, Future, as_completed
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from .cluster import job_client
from .color import rgb_to_hex
from .corpus import (
    PRESENCE_SHARE,
    CorpusPalette,
    assign_to_corpus,
    fit_corpus_palette,
    fit_sample,
    merge_fit_samples,
)
from .imaging import ImageError
from .palette import load_sample, opaque_pixels, palette_from_sample
from .sources import check_inputs, chunked, image_id, iter_uris
from .spec import JobSpec
from .tables import (
    CACHE_FOLDER,
    CORPUS_PALETTE_SCHEMA,
    JOB_FILE,
    SCHEMAS,
    TableBuilder,
    join,
    parquet_bytes,
    part_name,
    read_cached_samples,
    sample_from_row,
    write_atomic,
    write_job_file,
    write_partition,
)

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
# Fit-sample parts merged by one task: bounds the data any one merge receives.
MERGE_FAN_IN = 8

Items = list[tuple[int, str]]


@dataclass(frozen=True)
class JobReport:
    """What a finished job did."""

    output: str
    images: int
    ok: int
    errors: int
    partitions: int
    elapsed_s: float
    corpus: dict | None = field(default=None)


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


def _partition_of(items: Items, spec: JobSpec) -> int:
    # Partitions are aligned on spec.partition_size, so the first position names it.
    return items[0][0] // spec.partition_size


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def process_partition(items: Items, spec: JobSpec) -> list[dict]:
    """First (for image mode, only) pass over one partition.

    Decodes every image, writes its ``images`` row and, unless the mode is
    ``corpus``, its own palette. For corpus modes it also caches the resized
    samples and returns the partition's fit sample. A failing image becomes an
    error row; it never fails the task.
    """
    partition = _partition_of(items, spec)
    started = time.perf_counter()
    options = spec.palette_options
    builder = TableBuilder(options)
    own_palettes = spec.mode in ("image", "both")
    corpus = spec.mode in ("corpus", "both")
    cache = corpus and spec.corpus_assign == "cache"
    fit_parts = []
    errors = 0
    # Single-threaded BLAS/OpenMP: parallelism comes from the workers, and a fixed
    # thread count keeps floating-point results identical everywhere.
    with threadpool_limits(1):
        for _, uri in items:
            t0 = time.perf_counter()
            key = image_id(uri)
            try:
                sample = load_sample(uri, options)
                pixels, _ = opaque_pixels(sample, options.alpha_threshold)
                palette = palette_from_sample(sample, options) if own_palettes else None
                if corpus:
                    fit_parts.append(fit_sample(sample, key, options, size=spec.sample_per_image))
            except Exception as exc:  # one bad image is data, not a failed job
                errors += 1
                builder.add_image(
                    key,
                    uri,
                    error=describe_failure(exc),
                    format=getattr(exc, "format", None),
                    elapsed_ms=_ms_since(t0),
                )
                continue
            if cache:
                builder.add_sample(key, sample)
            builder.add_image(
                key,
                uri,
                sample=sample,
                n_pixels=len(pixels),
                palette=palette,
                elapsed_ms=_ms_since(t0),
            )
    names = ["images"] + (["palettes", "assignments"] if own_palettes else [])
    write_partition(spec.output, partition, builder.tables(names + (["samples"] if cache else [])))
    summary = {
        "partition": partition,
        "images": len(builder),
        "errors": errors,
        "seconds": time.perf_counter() - started,
    }
    if not corpus:
        return [summary]
    return [summary, merge_fit_samples(*fit_parts, limit=spec.corpus_fit_pixels)]


def assign_partition(items: Items, spec: JobSpec, corpus: CorpusPalette) -> list[dict]:
    """Second pass of a corpus job over one partition: every image over the corpus palette.

    Writes the partition's ``corpus`` palettes and assignments and returns the
    per-colour totals the ``corpus_palette`` table is made of.
    """
    partition = _partition_of(items, spec)
    options = spec.palette_options
    builder = TableBuilder(options)
    n_colors = len(corpus.colors)
    pixel_counts = np.zeros(n_colors, np.int64)
    image_counts = np.zeros(n_colors, np.int64)
    squared_error = 0.0
    assigned = 0
    with threadpool_limits(1):
        for key, sample in _samples_for_assignment(items, spec, partition):
            assigned += 1
            palette = assign_to_corpus(sample, corpus, options)
            builder.add_palette(key, palette)
            pixel_counts[palette.corpus_index] += palette.counts
            image_counts[palette.corpus_index[palette.proportions >= PRESENCE_SHARE]] += 1
            squared_error += palette.mse_rgb * float(palette.counts.sum())
    write_partition(
        spec.output, partition, builder.tables(["palettes", "assignments"]), prefix="corpus"
    )
    return [
        {
            "partition": partition,
            "images": assigned,
            "pixel_counts": pixel_counts,
            "image_counts": image_counts,
            "squared_error": squared_error,
        }
    ]


def _samples_for_assignment(items: Items, spec: JobSpec, partition: int):
    """``(image_id, Sample)`` of the partition's good images: from the cache, or decoded again."""
    if spec.corpus_assign == "cache":
        for row in read_cached_samples(spec.output, partition):
            yield row["image_id"], sample_from_row(row)
        return
    options = spec.palette_options
    for _, uri in items:
        try:
            sample = load_sample(uri, options)
            opaque_pixels(sample, options.alpha_threshold)
        except Exception:  # already recorded as an error row by the first pass
            continue
        yield image_id(uri), sample


def wave_bag(items: Items, spec: JobSpec, task: Callable = process_partition, **kwargs) -> db.Bag:
    """A lazy bag over one wave: one ``task`` per partition, each writing its own files."""
    return db.from_sequence(items, partition_size=spec.partition_size).map_partitions(
        task, spec=spec, **kwargs
    )


def iter_waves(spec: JobSpec) -> Iterator[Items]:
    """The job's ``(position, uri)`` pairs, drawn lazily a wave at a time."""
    wave_images = spec.partitions_per_wave * spec.partition_size
    return chunked(enumerate(iter_uris(spec.input)), wave_images)


def run_waves(
    client: Client,
    spec: JobSpec,
    waves: Iterable[Items],
    task: Callable = process_partition,
    **kwargs,
) -> Iterator[Future]:
    """Submit waves and yield each partition's future as it completes.

    At most about one and a half waves of partitions are in flight: the next
    wave goes in as soon as half of the current one has finished. The caller
    takes what it needs from each future; its data stays on the workers.
    """
    waves = iter(waves)
    in_flight = as_completed()
    pending = 0
    refill_below = max(1, spec.partitions_per_wave // 2)

    def submit_next() -> int:
        wave = next(waves, None)
        if wave is None:
            return 0
        futures = client.compute(wave_bag(wave, spec, task, **kwargs).to_delayed())
        in_flight.update(futures)
        return len(futures)

    pending += submit_next()
    for future in in_flight:
        pending -= 1
        if pending < refill_below:
            pending += submit_next()
        yield future


def _progress(enabled: bool, description: str) -> tqdm:
    return tqdm(unit="img", disable=not enabled, desc=description, dynamic_ncols=True)


def run_image_pass(client: Client, spec: JobSpec, *, progress: bool) -> Iterator[dict]:
    """The first pass; yields each partition's summary.

    In corpus modes it also merges the partitions' fit samples on the workers
    and returns (as the generator's value) a future of the corpus fit sample.
    """
    corpus = spec.mode in ("corpus", "both")
    merged: list[Future] = []
    with _progress(progress, "images") as bar:
        for future in run_waves(client, spec, iter_waves(spec)):
            if corpus:
                summary = client.submit(operator.itemgetter(0), future).result()
                merged.append(client.submit(operator.itemgetter(1), future))
                if len(merged) >= MERGE_FAN_IN:
                    merged = [_merge(client, merged, spec)]
            else:
                (summary,) = future.result()
            future.release()
            bar.update(summary["images"])
            yield summary
    return _merge(client, merged, spec) if corpus else None


def _merge(client: Client, parts: list[Future], spec: JobSpec) -> Future:
    return client.submit(merge_fit_samples, *parts, limit=spec.corpus_fit_pixels)


def fit_on_cluster(client: Client, spec: JobSpec, sample: Future) -> CorpusPalette:
    """Fit the corpus palette on the merged sample, which stays on the workers."""
    size = client.submit(len, sample).result()
    coords = client.submit(operator.attrgetter("coords"), sample)
    X = da.from_delayed(dask.delayed(coords), shape=(size, 3), dtype=np.float32)
    with client.as_current():
        return fit_corpus_palette(
            X,
            k=spec.corpus_k,
            color_space=spec.color_space,
            random_state=spec.random_state,
        )


def run_assign_pass(client: Client, spec: JobSpec, corpus: CorpusPalette, *, progress: bool):
    """The second pass; returns the totals over all partitions."""
    n_colors = len(corpus.colors)
    totals = {
        "pixel_counts": np.zeros(n_colors, np.int64),
        "image_counts": np.zeros(n_colors, np.int64),
        "squared_error": 0.0,
        "images": 0,
    }
    with _progress(progress, "corpus") as bar:
        for future in run_waves(client, spec, iter_waves(spec), assign_partition, corpus=corpus):
            (result,) = future.result()
            future.release()
            for key in totals:
                totals[key] = totals[key] + result[key]
            bar.update(result["images"])
    return totals


def corpus_palette_table(corpus: CorpusPalette, totals: dict) -> pa.Table:
    """The ``corpus_palette`` table from the fitted palette and the assignment totals."""
    lab = corpus.lab
    pixels = totals["pixel_counts"]
    total = max(int(pixels.sum()), 1)
    return pa.table(
        {
            "corpus_index": pa.array(np.arange(len(corpus.colors), dtype=np.int16)),
            "r": pa.array(corpus.colors[:, 0]),
            "g": pa.array(corpus.colors[:, 1]),
            "b": pa.array(corpus.colors[:, 2]),
            "hex": pa.array(rgb_to_hex(corpus.colors), pa.string()),
            "lab_l": pa.array(lab[:, 0]),
            "lab_a": pa.array(lab[:, 1]),
            "lab_b": pa.array(lab[:, 2]),
            "proportion": pa.array((pixels / total).astype(np.float32)),
            "pixel_count": pa.array(pixels),
            "n_images": pa.array(totals["image_counts"]),
        },
        schema=CORPUS_PALETTE_SCHEMA,
    )


def prepare_output(spec: JobSpec) -> None:
    """Refuse to mix a new dataset into an old one, or into a folder that is not a dataset."""
    fs, root = fsspec.core.url_to_fs(spec.output)
    if not fs.exists(root):
        fs.makedirs(root, exist_ok=True)
        return
    entries = {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)}
    if not entries:
        return
    dataset_entries = set(SCHEMAS) | {JOB_FILE, CACHE_FOLDER}
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
    corpus_record = None
    with job_client(spec, client) as active:
        if active.dashboard_link:
            logger.info("Dask dashboard: %s", active.dashboard_link)
        first_pass = run_image_pass(active, spec, progress=progress)
        while True:
            try:
                summary = next(first_pass)
            except StopIteration as done:
                fit_sample_future = done.value
                break
            images += summary["images"]
            errors += summary["errors"]
            partitions += 1
        logger.info("first pass: %d images, %d failed", images, errors)
        if fit_sample_future is not None:
            corpus_record = _corpus_passes(active, spec, fit_sample_future, progress=progress)
    report = JobReport(
        output=spec.output,
        images=images,
        ok=images - errors,
        errors=errors,
        partitions=partitions,
        elapsed_s=time.perf_counter() - clock,
        corpus=corpus_record,
    )
    record = {
        "spec": spec.to_dict(),
        "versions": package_versions(),
        "started": started.isoformat(),
        "finished": datetime.now(timezone.utc).isoformat(),
        "counts": {"images": images, "ok": report.ok, "errors": errors, "partitions": partitions},
        "elapsed_s": round(report.elapsed_s, 3),
    }
    if corpus_record is not None:
        record["corpus"] = corpus_record
    write_job_file(spec.output, record)
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


def _corpus_passes(client: Client, spec: JobSpec, sample: Future, *, progress: bool) -> dict:
    """Fit the corpus palette, assign every image to it, write ``corpus_palette``."""
    t0 = time.perf_counter()
    corpus = fit_on_cluster(client, spec, sample)
    sample.release()
    fit_seconds = time.perf_counter() - t0
    logger.info(
        "corpus palette: %d colours from %d sampled pixels in %.1f s",
        len(corpus.colors),
        corpus.sample_size,
        fit_seconds,
    )
    t0 = time.perf_counter()
    totals = run_assign_pass(client, spec, corpus, progress=progress)
    table = corpus_palette_table(corpus, totals)
    write_atomic(join(spec.output, "corpus_palette", part_name(0)), parquet_bytes(table))
    fs, root = fsspec.core.url_to_fs(spec.output)
    if fs.exists(f"{root}/{CACHE_FOLDER}"):
        fs.rm(f"{root}/{CACHE_FOLDER}", recursive=True)
    n_pixels = int(totals["pixel_counts"].sum())
    return {
        "k": spec.corpus_k,
        "colors": len(corpus.colors),
        "inertia": corpus.inertia,
        "n_iter": corpus.n_iter,
        "sample_size": corpus.sample_size,
        "dropped_clusters": corpus.n_dropped,
        "images_assigned": int(totals["images"]),
        "mse_rgb": totals["squared_error"] / n_pixels if n_pixels else None,
        "fit_seconds": round(fit_seconds, 3),
        "assign_seconds": round(time.perf_counter() - t0, 3),
    }
