"""The Dask graph: inputs streamed in waves, one task per partition.

The client never holds the whole input list: URIs are drawn lazily from the
sources, a wave of them at a time, and cut into partitions. Each wave becomes a
Dask bag with one partition of images per element; each task decodes, clusters
and writes its own Parquet files (see :mod:`palette_dask.tasks`) and sends back
only a few counts. The next wave is submitted while the current one drains, so
workers stay busy and the number of tasks known to the scheduler stays bounded
however large the corpus is.

A corpus job makes two passes. The first decodes every image, writes the
``images`` table (and the images' own palettes in ``both`` mode), keeps each
resized sample in a cache and draws a few pixels per image for the fit; those
pixels are merged on the workers into one bounded sample, never sent to the
client. The corpus palette is fitted on it, and the second pass assigns every
sample pixel of every image in the dataset to the corpus palette.

Jobs resume and grow datasets as :mod:`palette_dask.state` describes.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

import dask
import dask.bag as db
import numpy as np
from dask.delayed import Delayed
from distributed import Client, Future, as_completed, performance_report
from distributed.scheduler import KilledWorker
from tqdm import tqdm

from .cluster import (
    check_versions,
    default_workers,
    describe_cluster,
    job_client,
    package_versions,
    scheduler_address,
    threads_per_worker,
)
from .corpus import CorpusPalette, fit_corpus_palette, merge_fit_samples
from .errors import JobStopped
from .plan import InputPlan, Partitioning
from .sources import check_inputs, chunked, describe_skipped, normalize_uri
from .spec import JobSpec
from .state import DatasetState, prepare_output
from .stops import keep_room, release_room, reported_stops
from .storage import join, write_atomic
from .tables import (
    PERFORMANCE_REPORT,
    corpus_palette_table,
    remove_cache,
    write_corpus_palette,
    write_job_file,
)
from .tasks import (
    Part,
    PartRef,
    assign_partition,
    empty_totals,
    is_shard_partition,
    partition_fit_sample,
    process_images_apart,
    process_partition,
    shard_image_uris,
    write_recovered_partition,
)

logger = logging.getLogger(__name__)

# Fit-sample parts merged by one task: bounds the data any one merge receives.
MERGE_FAN_IN = 8
# A crashing partition is redone at most this many images per task.
RECOVERY_PIECE_IMAGES = 128


@dataclass(frozen=True)
class JobReport:
    """What a finished job did.

    ``images``, ``ok`` and ``errors`` count the images this job processed;
    ``internal_errors`` counts those of its errors that were defects of
    palette-dask rather than of the image (logged by the workers with their
    traceback; their ``error`` starts with ``"internal error: "``);
    ``skipped_partitions`` were already written by the interrupted job it
    resumed, ``skipped_images`` were already in the dataset, and
    ``duplicates`` were inputs listed more than once. ``not_images`` counts the
    files that folder walks and globs skipped for want of an image extension,
    by lower-case extension (``"(none)"`` for files without one), sorted by
    extension: ``{".md": 2, ".txt": 1}``. ``process_seconds`` and
    ``write_seconds`` add up the workers' time decoding and clustering the
    images (building their rows included) and writing the first pass's files;
    ``read_seconds`` is the part of ``process_seconds`` spent reading images,
    or waiting for reads on their way: a job whose reads take much of its
    time is bound by its storage or network, not by its workers' cores.
    """

    output: str
    images: int
    ok: int
    errors: int
    partitions: int
    elapsed_s: float
    segment: int = 0
    resumed: bool = False
    skipped_partitions: int = 0
    skipped_images: int = 0
    duplicates: int = 0
    not_images: dict[str, int] = field(default_factory=dict)
    process_seconds: float = 0.0
    read_seconds: float = 0.0
    write_seconds: float = 0.0
    corpus: dict | None = None
    internal_errors: int = 0

    def __str__(self) -> str:
        return (
            f"{self.images} images ({self.ok} ok, {self.errors} failed) in "
            f"{self.partitions} partitions, {self.elapsed_s:.1f} s -> {self.output}"
        )

    def record(self) -> dict:
        """What ``_job.json`` says of the finished job."""
        record = {
            "elapsed_s": round(self.elapsed_s, 3),
            "counts": {
                "images": self.images,
                "ok": self.ok,
                "errors": self.errors,
                "internal_errors": self.internal_errors,
                "partitions": self.partitions,
                "skipped_partitions": self.skipped_partitions,
                "skipped_images": self.skipped_images,
                "duplicates": self.duplicates,
                "not_images": self.not_images,
            },
            "worker_seconds": {
                "process": round(self.process_seconds, 3),
                "read": round(self.read_seconds, 3),
                "write": round(self.write_seconds, 3),
            },
        }
        if self.corpus is not None:
            record["corpus"] = self.corpus
        return record


def run_waves(
    client: Client,
    waves: Iterable[list],
    make_outputs: Callable[[list], list[tuple[Delayed, ...]]],
    refill_below: int,
) -> Iterator[tuple[tuple[Future, ...], object]]:
    """Submit waves and yield ``(futures, element)`` as each element's first output is done.

    ``make_outputs(wave)`` gives each element's delayed outputs (see
    :func:`one_task_per_element`); a wave goes to the scheduler as one graph.
    The next wave goes in when fewer than ``refill_below`` elements are left in
    flight. The caller takes what it needs from the futures; data stays on the
    workers.
    """
    waves = iter(waves)
    in_flight = as_completed()
    pending_of: dict[str, tuple[tuple[Future, ...], object]] = {}

    def submit_next() -> int:
        wave = next(waves, None)
        if wave is None:
            return 0
        outputs = make_outputs(wave)
        futures = iter(client.compute([o for each in outputs for o in each], optimize_graph=False))
        for each, element in zip(outputs, wave, strict=True):
            element_futures = tuple(next(futures) for _ in each)
            pending_of[element_futures[0].key] = (element_futures, element)
            in_flight.add(element_futures[0])
        return len(wave)

    pending = submit_next()
    for future in in_flight:
        pending -= 1
        if pending < refill_below:
            pending += submit_next()
        yield pending_of.pop(future.key)


def one_task_per_element(
    task: Callable, *, items: tuple[int, ...] | None = None, **kwargs
) -> Callable[[list], list[tuple[Delayed, ...]]]:
    """An output maker for :func:`run_waves`: a bag of the wave, one task per element.

    Each task runs ``task(element, **kwargs)``; an element's outputs are the
    ``items`` of its result or, without ``items``, the result itself. Each
    output is a small task of its own, which runs on the same worker right
    after the element's task, ahead of the rest of the wave: results come back
    as they are made, and what the client does not fetch stays on the workers.
    """

    def make_outputs(wave: list) -> list[tuple[Delayed, ...]]:
        bag = db.from_sequence(wave, npartitions=len(wave)).map(task, **kwargs)
        # Optimised, the bag fuses reading each element into its task.
        return [tuple(_result_item(part, i) for i in items or (None,)) for part in bag.to_delayed()]

    return make_outputs


def _item(partition: list, index: int | None):
    """Item ``index`` of the one result a bag partition holds, or the whole result."""
    (result,) = partition
    return result if index is None else result[index]


_result_item = dask.delayed(_item, pure=True)


def _progress(enabled: bool, description: str) -> tqdm:
    return tqdm(unit="img", disable=not enabled, desc=description, dynamic_ncols=True)


def first_pass_result(
    client: Client,
    outputs: tuple[Future, ...],
    part: Part,
    spec: JobSpec,
    segment: int,
    partition_size: int,
):
    """``(summary, fit-sample future or None)`` of a first-pass task's outputs.

    A partition that kept killing workers is redone in pieces (see
    :func:`recover_partition`), and an image that still kills every worker it
    runs on becomes an error row.
    """
    try:
        return outputs[0].result(), (outputs[1] if spec.fits_corpus else None)
    except KilledWorker:
        logger.warning(
            "partition %d kept killing workers; retrying its images in smaller pieces", part[0]
        )
    result = recover_partition(client, part, spec, segment, partition_size)
    summary = client.submit(operator.itemgetter(0), result).result()
    fit = client.submit(operator.itemgetter(1), result) if spec.fits_corpus else None
    return summary, fit


def recover_partition(
    client: Client, part: Part, spec: JobSpec, segment: int, partition_size: int
) -> Future:
    """Redo a partition in pieces, in processes of their own; the images that crash it
    become error rows.

    A tar shard is listed first (read once, nothing decoded). The images are
    redone ``partition_size`` per task (at most :data:`RECOVERY_PIECE_IMAGES`),
    each task reading a shard up to its last member, in child processes
    (:func:`~palette_dask.tasks.process_images_apart`): a crashing image takes
    only a child with it, never a worker, and is marked as crashing when it
    kills the process that decodes it alone.
    """
    _, items = part
    shard_failure = None
    if is_shard_partition(items):
        shard = items[0][1]
        uris, shard_failure = client.submit(shard_image_uris, shard, spec, pure=False).result()
        items = list(enumerate(uris))
    groups = chunked(items, min(partition_size, RECOVERY_PIECE_IMAGES))
    pieces: list = client.gather(
        [client.submit(process_images_apart, group, spec, pure=False) for group in groups]
    )
    if shard_failure is not None:
        pieces.append((shard, shard_failure))
    return client.submit(write_recovered_partition, part, spec, segment, pieces, pure=False)


def _merge(client: Client, parts: list[Future], spec: JobSpec) -> Future:
    # Ahead of the waiting partitions, so that parts are freed as fast as they come.
    return client.submit(
        merge_fit_samples, *parts, limit=spec.corpus_fit_pixels, priority=1, pure=False
    )


def fit_on_cluster(client: Client, spec: JobSpec, sample: Future) -> CorpusPalette:
    """Fit the corpus palette on the merged sample, which stays on the workers."""
    import dask.array as da  # with scipy and numba: loaded by corpus jobs only

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


@contextmanager
def _performance_report(spec: JobSpec) -> Iterator[None]:
    """Record Dask's performance report of the job when the spec asks for it.

    The report is written to a local temporary file, then copied next to the
    tables (which may be on object storage) with an atomic write.
    """
    if not spec.performance_report:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="palette-dask-") as folder:
        local = os.path.join(folder, PERFORMANCE_REPORT)
        with performance_report(filename=local):
            yield
        with open(local, "rb") as f:
            write_atomic(join(spec.output, PERFORMANCE_REPORT), f.read(), spec.storage_options)
    logger.info("performance report: %s", join(spec.output, PERFORMANCE_REPORT))


def dry_run(spec: JobSpec) -> str:
    """What a job would do, without running it: its spec, its inputs and partitions,
    its cluster (the embedded one's size; a running cluster's is known once a job
    connects)."""
    check_inputs(spec.input, spec.storage_options)
    external = scheduler_address(spec) or spec.scheduler_file
    workers = 1 if external else spec.workers or default_workers()
    plan = InputPlan(
        spec, DatasetState(), workers=workers, threads=workers * threads_per_worker(spec)
    )
    partitions = shards = distinct = 0
    for _, items in plan.partitions():
        partitions += 1
        if is_shard_partition(items):
            shards += 1
        else:
            distinct += len(items)
    lines = [
        json.dumps(spec.to_dict(), indent=2),
        f"inputs: {distinct + plan.duplicates:,} listed, {distinct:,} distinct",
    ]
    if shards:
        lines.append(f"tar shards: {shards:,}, a partition each (their images are counted as read)")
    if plan.not_images:
        lines.append(describe_skipped(plan.not_images))
    sized = plan.partitioning
    for_workers = f", sized for {workers} worker(s)" if spec.partition_size == "auto" else ""
    lines += [
        f"partitions: {partitions:,} of up to {sized.size:,} images{for_workers} "
        f"(tar shards whole, Parquet row groups unsplit), in waves of {sized.per_wave:,} "
        "partitions",
        f"cluster: {describe_cluster(spec)}",
        "dry run: nothing was computed or written",
    ]
    return "\n".join(lines)


def run_job(spec: JobSpec, client: Client | None = None, *, progress: bool = False) -> JobReport:
    """Run a palette job and write its dataset to ``spec.output``.

    A dataset left by an interrupted job with the same options is resumed; a
    complete one grows by the inputs it does not hold yet.

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
    check_inputs(spec.input, spec.storage_options)
    # The workers write the tables: a relative output path names a folder of the
    # caller's working folder, not of each worker's.
    shown_output = spec.output
    spec = spec.replace(output=normalize_uri(spec.output))
    started = datetime.now(timezone.utc)
    clock = time.perf_counter()
    totals = Totals()
    corpus_record = None
    record: dict = {}  # _job.json's, once the job has begun to write
    with job_client(spec, client) as active, reported_stops(spec, record, totals.kept, active):
        # Both checks come before anything is written, or removed by `overwrite`.
        check_versions(active)
        state = prepare_output(spec)
        if state.resumed:
            logger.info("resuming the interrupted job of segment %d", state.segment)
        nthreads = active.nthreads()
        plan = InputPlan(spec, state, workers=len(nthreads), threads=sum(nthreads.values()))
        record.update(
            status="running",
            segment=state.segment,
            spec=spec.to_dict(),
            partitioning=plan.partitioning.to_dict(),
            versions=package_versions(),
            started=started.isoformat(),
        )
        write_job_file(spec.output, record, spec.storage_options)
        keep_room(spec)
        if active.dashboard_link:
            logger.info("Dask dashboard: %s", active.dashboard_link)
        with _performance_report(spec):
            fit_sample, written = _first_pass(active, spec, state, plan, totals, progress=progress)
            _log_first_pass(plan, totals, time.perf_counter() - clock)
            if fit_sample is not None:
                corpus_record = _corpus_passes(
                    active, spec, state, plan.partitioning, written, fit_sample, progress=progress
                )
    report = JobReport(
        **totals.counts(),
        output=shown_output,
        elapsed_s=time.perf_counter() - clock,
        segment=state.segment,
        resumed=state.resumed,
        skipped_partitions=plan.skipped_partitions,
        skipped_images=plan.skipped_images,
        duplicates=plan.duplicates + totals.duplicates,
        not_images=dict(sorted(plan.not_images.items())),
        corpus=corpus_record,
    )
    record.update(
        report.record(), status="complete", finished=datetime.now(timezone.utc).isoformat()
    )
    write_job_file(spec.output, record, spec.storage_options)
    release_room(spec)
    logger.info("%s", report)
    return report


@dataclass
class Totals:
    """What the partitions of a job's first pass add up to (see their summaries)."""

    images: int = 0
    errors: int = 0
    internal_errors: int = 0
    duplicates: int = 0
    partitions: int = 0
    process_seconds: float = 0.0
    read_seconds: float = 0.0
    write_seconds: float = 0.0
    last_error: str | None = None

    def add(self, summary: dict) -> None:
        """Count one partition's summary (:func:`palette_dask.tasks.process_partition`)."""
        for name in _SUMMED:
            setattr(self, name, getattr(self, name) + summary[name])
        self.partitions += 1
        self.last_error = summary.get("last_error") or self.last_error

    def counts(self) -> dict:
        """The counts and times of a :class:`JobReport` these totals give."""
        return {
            "images": self.images,
            "ok": self.images - self.errors,
            "errors": self.errors,
            "internal_errors": self.internal_errors,
            "partitions": self.partitions,
            **{name: getattr(self, name) for name in _SUMMED if name.endswith("_seconds")},
        }

    def kept(self) -> str:
        """What a job that stops now has written, in words."""
        return (
            f"{self.images:,} images of this run are written, in {self.partitions:,} "
            "complete partitions"
        )

    def check_inputs_fail(self, limit: int) -> None:
        """Stop the job when the first ``limit`` images (or more) all failed: the inputs
        fail as a whole (an unreachable host or bucket), and an error row for each of
        millions of inputs would say nothing more."""
        if limit and self.errors >= limit and self.errors == self.images:
            raise JobStopped(
                f"the first {self.errors:,} inputs all failed (the last: {self.last_error})",
                advice="check that the inputs can be read from here, then run the same command "
                "again; to write an error row for every input instead, set "
                "stop_after_failures = 0 (--stop-after-failures 0)",
            )


# What the partitions' summaries add up to, by name.
_SUMMED = (
    "images",
    "errors",
    "internal_errors",
    "duplicates",
    "process_seconds",
    "read_seconds",
    "write_seconds",
)


def _log_first_pass(plan: InputPlan, totals: Totals, seconds: float) -> None:
    logger.info(
        "first pass: %d images (%d failed) in %d partitions, %.1f s",
        totals.images,
        totals.errors,
        totals.partitions,
        seconds,
    )
    if plan.skipped_partitions:
        logger.info("skipped %d partitions already written", plan.skipped_partitions)
    if plan.skipped_images:
        logger.info("skipped %d images already in the dataset", plan.skipped_images)
    if plan.not_images:
        logger.info("%s", describe_skipped(plan.not_images))
    if totals.internal_errors:
        logger.error(
            "%d images met an internal error of palette-dask (see the workers' tracebacks)",
            totals.internal_errors,
        )


def _first_pass(client, spec, state, plan, totals: Totals, *, progress):
    """Run the first pass; returns the partitions written and, when the corpus palette
    must be (re)fitted, the future of the merged fit sample (else ``None``)."""
    partitioning = plan.partitioning
    logger.info(
        "first pass: %s mode, partitions of %d images, waves of %d partitions",
        spec.mode,
        partitioning.size,
        partitioning.per_wave,
    )
    corpus = spec.fits_corpus
    fit_parts: list[Future] = []
    written: list[PartRef] = []
    make_outputs = one_task_per_element(
        process_partition, items=(0, 1) if corpus else (0,), spec=spec, segment=state.segment
    )
    refill = max(1, partitioning.per_wave // 2)
    with _progress(progress, "images") as bar:
        for outputs, part in run_waves(client, plan.waves(), make_outputs, refill):
            summary, fit = first_pass_result(
                client, outputs, part, spec, state.segment, partitioning.size
            )
            outputs[0].release()
            totals.add(summary)
            totals.check_inputs_fail(spec.stop_after_failures)
            written.append((state.segment, part[0]))
            bar.update(summary["images"])
            if fit is not None:
                fit_parts.append(fit)
                if len(fit_parts) >= MERGE_FAN_IN:
                    fit_parts = [_merge(client, fit_parts, spec)]
    if not corpus or not (written or state.resumed):
        return None, written  # nothing new: the corpus palette stands as it is
    # Partitions written before this job (earlier segments, or the interrupted run)
    # contribute their fit samples too.
    earlier = one_task_per_element(partition_fit_sample, spec=spec)
    for outputs, _ in run_waves(
        client, chunked(state.committed, partitioning.per_wave), earlier, refill
    ):
        fit_parts.append(outputs[0])
        if len(fit_parts) >= MERGE_FAN_IN:
            fit_parts = [_merge(client, fit_parts, spec)]
    return _merge(client, fit_parts, spec), written


def _corpus_passes(
    client, spec, state, partitioning: Partitioning, written, sample: Future, *, progress: bool
) -> dict:
    """Fit the corpus palette, assign every image of the dataset to it, write ``corpus_palette``."""
    t0 = time.perf_counter()
    if client.submit(len, sample).result() == 0:
        logger.warning("no image has an opaque pixel: there is no corpus palette to fit")
        return {"k": spec.corpus_k, "colors": 0, "sample_size": 0}
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
    n_colors = len(corpus.colors)
    totals = empty_totals(n_colors)
    parts = sorted(set(state.committed) | set(written))
    make_outputs = one_task_per_element(assign_partition, spec=spec, corpus=corpus)
    refill = max(1, partitioning.per_wave // 2)
    with _progress(progress, "corpus") as bar:
        for (future,), _ in run_waves(
            client, chunked(parts, partitioning.per_wave), make_outputs, refill
        ):
            result = future.result()
            future.release()
            for key in totals:
                totals[key] = totals[key] + result[key]
            bar.update(result["images"])
    table = corpus_palette_table(corpus.colors, totals["pixel_counts"], totals["image_counts"])
    write_corpus_palette(spec.output, table, spec.storage_options)
    remove_cache(spec.output, spec.storage_options)
    n_pixels = int(totals["pixel_counts"].sum())
    return {
        "k": spec.corpus_k,
        "colors": n_colors,
        "inertia": corpus.inertia,
        "n_iter": corpus.n_iter,
        "sample_size": corpus.sample_size,
        "dropped_clusters": corpus.n_dropped,
        "images_assigned": int(totals["images"]),
        "mse_rgb": totals["squared_error"] / n_pixels if n_pixels else None,
        "fit_seconds": round(fit_seconds, 3),
        "assign_seconds": round(time.perf_counter() - t0, 3),
    }
