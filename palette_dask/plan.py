"""The input plan: which images a job processes, cut into partitions, grouped into waves.

A partition is one Dask task and one file per table, so its size decides two
costs that pull apart: the scheduler's (about a millisecond per task, so tasks
should last well over a second) and the readers' (millions of small files are
slow to list and open), against the spread of the work (a job of a few
partitions leaves workers idle). ``partition_size = "auto"`` settles them
from what the job knows when it starts, the number of new images and the
number of workers:

- up to :data:`AUTO_PARTITION_IMAGES` (10,000) images a partition, so that a
  table holds one file per 10,000 images however large the corpus, and a task
  of web images lasts about a minute;
- but at least :data:`PARTITIONS_PER_WORKER` partitions per worker where the
  input has that many images, so that small jobs keep every worker busy.

The listing is read ahead to count the new images, at most
:data:`AUTO_LOOKAHEAD_IMAGES` of them (the client holds their URIs
meanwhile). The size chosen is recorded in ``_job.json``, and a resumed job
cuts its input with it again, whatever its cluster, so that its partitions
keep their names. The partitioning never changes a palette.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain

import numpy as np

from .containers import is_tar_shard
from .sources import chunked, image_id, iter_uris
from .spec import AUTO, JobSpec
from .state import DatasetState, IdSet
from .tasks import Part

# A partition (one task, one file per table) holds at most this many images with
# partition_size = "auto".
AUTO_PARTITION_IMAGES = 10_000
# Partitions per worker a small job is cut into with "auto", and partitions per worker
# thread in flight.
PARTITIONS_PER_WORKER = 2
# The furthest the listing is read ahead to size "auto" partitions (~100 MB of URIs).
AUTO_LOOKAHEAD_IMAGES = 1 << 20


def auto_partition_size(new_images: int | None, workers: int) -> int:
    """Images per partition for ``new_images`` images on ``workers`` workers.

    Parameters
    ----------
    new_images : int or None
        The images the job will process (tar shards apart, which are
        partitions of their own), or ``None`` when there are too many to count
        ahead.
    workers : int
        Worker processes of the cluster.

    Examples
    --------
    >>> auto_partition_size(9, workers=2), auto_partition_size(60_000, workers=2)
    (2, 10000)
    >>> auto_partition_size(None, workers=2)
    10000
    """
    if new_images is None:
        return AUTO_PARTITION_IMAGES
    spread = new_images // (PARTITIONS_PER_WORKER * max(workers, 1))
    return max(1, min(AUTO_PARTITION_IMAGES, spread))


def partitions_per_wave(wave_size: int, partition_size: int, threads: int) -> int:
    """Partitions submitted at a time: ``wave_size`` images, and at least two per thread.

    A wave is refilled when half of it is done, so every worker thread then
    still has a partition waiting.

    Examples
    --------
    >>> partitions_per_wave(32_768, 128, threads=2), partitions_per_wave(32_768, 10_000, 8)
    (256, 16)
    """
    return max(-(-wave_size // partition_size), PARTITIONS_PER_WORKER * max(threads, 1))


@dataclass(frozen=True)
class Partitioning:
    """How a job cuts its input: ``size`` images a partition, ``per_wave`` partitions a wave.

    ``workers`` and ``threads`` are the cluster's when the job started.
    """

    size: int
    per_wave: int
    workers: int
    threads: int

    def to_dict(self) -> dict:
        """The record in ``_job.json``."""
        return {
            "partition_size": self.size,
            "partitions_per_wave": self.per_wave,
            "workers": self.workers,
            "threads": self.threads,
        }


class InputPlan:
    """Cuts the input stream into partitions, dropping duplicates and images already written.

    Partitions are numbered in the order they are cut from the stream of new
    images, so the same inputs always give the same partitions: a resumed job
    rewrites an interrupted partition under its old name and skips the
    complete ones. Partitions follow containers, so that each is read front
    to back once: a tar shard is a partition of its own, whatever its number
    of images (they are known only once it is read), and a Parquet row group's
    rows are never split between partitions (a partition ends before a row
    group that would take it over the partition size).

    Parameters
    ----------
    spec : JobSpec
    state : DatasetState
    workers, threads : int
        Worker processes and task threads of the cluster, for ``"auto"``
        partitions and the waves.
    """

    def __init__(self, spec: JobSpec, state: DatasetState, *, workers: int = 1, threads: int = 1):
        self.spec = spec
        self.state = state
        self.workers = max(workers, 1)
        self.threads = max(threads, 1)
        self.skipped_partitions = 0
        self.skipped_images = 0
        self.duplicates = 0
        # Filled by the listing as the waves are drawn: complete once they are all out.
        self.not_images: Counter[str] = Counter()
        self._units: Iterator[list[tuple[str, ...]]] | None = None
        self._partitioning: Partitioning | None = None

    @property
    def partitioning(self) -> Partitioning:
        """The partition size and wave length, decided on first use (see :mod:`.plan`)."""
        if self._partitioning is None:
            self._units = self._new_units()
            size = self.spec.partition_size
            if size == AUTO and self.state.partition_size is not None:
                size = self.state.partition_size  # as the interrupted job cut its input
            elif size == AUTO:
                counted, seen = self._look_ahead(self._units)
                self._units = chain(_handed_over(seen), self._units)
                size = auto_partition_size(counted, self.workers)
            per_wave = partitions_per_wave(self.spec.wave_size, size, self.threads)
            self._partitioning = Partitioning(size, per_wave, self.workers, self.threads)
        return self._partitioning

    def _look_ahead(
        self, units: Iterator[list[tuple[str, ...]]]
    ) -> tuple[int | None, list[list[tuple[str, ...]]]]:
        """The number of new images (``None`` if more than enough for the largest
        partitions), and the batches of units read to count them."""
        enough = min(
            PARTITIONS_PER_WORKER * self.workers * AUTO_PARTITION_IMAGES, AUTO_LOOKAHEAD_IMAGES
        )
        seen, counted = [], 0
        for batch in units:
            seen.append(batch)
            counted += sum(len(unit) for unit in batch if not _is_shard(unit))
            if counted >= enough:
                return None, seen
        return counted, seen

    def waves(self) -> Iterator[list[Part]]:
        """The partitions still to write, a wave at a time."""
        per_wave = self.partitioning.per_wave
        todo = (part for part in self.partitions() if not self._done(part))
        return chunked(todo, per_wave)

    def _done(self, part: Part) -> bool:
        if part[0] in self.state.done:
            self.skipped_partitions += 1
            return True
        return False

    def partitions(self) -> Iterator[Part]:
        """Every partition of the new images, numbered in order, written or not."""
        size = self.partitioning.size
        known_shards = self.state.known_shards
        index = 0
        items: list[tuple[int, str]] = []
        position = 0
        for units in self._units:
            for unit in units:
                if _is_shard(unit):
                    if unit[0] in known_shards:
                        self.skipped_images += known_shards[unit[0]]
                        continue
                    if items:
                        yield index, items
                        index, items = index + 1, []
                    yield index, [(position, unit[0])]
                    index, position = index + 1, position + 1
                    continue
                if items and len(items) + len(unit) > size:
                    yield index, items
                    index, items = index + 1, []
                items += [(position + i, uri) for i, uri in enumerate(unit)]
                position += len(unit)
                if len(items) >= size:
                    yield index, items
                    index, items = index + 1, []
        if items:
            yield index, items

    def _new_units(self) -> Iterator[list[tuple[str, ...]]]:
        """Units of URIs that stay in one partition (an image, a tar shard, a Parquet row
        group's rows), without duplicates and images already written, a batch at a time."""
        spec, state = self.spec, self.state
        seen = IdSet()
        listing = iter_uris(
            spec.input,
            spec.storage_options,
            skipped=self.not_images,
            image_column=spec.image_column,
            row_groups=True,
        )
        for chunk in chunked(listing, spec.wave_size):
            units = [entry if isinstance(entry, tuple) else (entry,) for entry in chunk]
            ids = [image_id(uri) for unit in units for uri in unit]
            known = state.known.contains(ids) if len(state.known) else np.zeros(len(ids), bool)
            first = seen.add_new(ids)
            self.skipped_images += int((known & first).sum())
            self.duplicates += int((~first).sum())
            keep = iter(first & ~known)
            kept = [tuple(uri for uri in unit if next(keep)) for unit in units]
            yield [unit for unit in kept if unit]


def _handed_over(batches: list) -> Iterator:
    """The batches in order, each let go of as it is given: a chain over the list
    itself would hold every URI read ahead until the job ends."""
    batches.reverse()
    while batches:
        yield batches.pop()


def _is_shard(unit: tuple[str, ...]) -> bool:
    return len(unit) == 1 and is_tar_shard(unit[0])
