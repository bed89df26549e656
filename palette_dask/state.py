"""What a dataset already holds, so that a job can resume, grow it, or refuse to mix.

A dataset is written in *segments*: one per job that added images to it.
``_job.json`` is written when a job starts (``status = "running"``) and again
when it ends (``"complete"``), or stops early (``"interrupted"``, ``"failed"``,
where the output can still be written). A job writing into an existing dataset

- refuses if the dataset was made with other options, unless ``overwrite``;
- **resumes** an interrupted job (same segment): partitions are numbered by
  position in the same input stream, so each partition is written under the
  same name as before and complete ones are skipped;
- **grows** a complete dataset (next segment): images whose id is already in
  the dataset are skipped, the rest are numbered afresh in the new segment.
  A tar shard is one partition, whose ``images`` file names it in its
  metadata: a shard already in the dataset is skipped without being read.

Image ids are kept as 16-byte keys in sorted NumPy arrays: exact, and 16 bytes
per distinct image on the client.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq

from .spec import JobSpec
from .storage import filesystem, fresh, is_local, join
from .tables import (
    CACHE_FOLDER,
    COMPACTION_FILE,
    INDEX_FOLDER,
    JOB_FILE,
    PERFORMANCE_REPORT,
    SCHEMAS,
    SHARD_METADATA_KEY,
    SHARDS_METADATA_KEY,
    read_job_file,
    table_files,
)

# The statuses of a job that did not complete (killed while running, or stopped early).
UNFINISHED = ("running", "interrupted", "failed")
# Options that change results: a dataset never mixes rows made with different ones.
RESULT_OPTIONS = (
    "k",
    "color_space",
    "engine",
    "random_state",
    "max_pixels",
    "alpha_threshold",
    "ignore_background",
    "min_delta_e",
    "mode",
    "corpus_k",
    "sample_per_image",
    "corpus_fit_pixels",
)


class IdSet:
    """A set of image ids (32 hex digits) stored as sorted 16-byte keys.

    The keys are kept in sorted runs. A batch of new ids is a run of its own,
    merged with the runs before it while they are not twice its size, so that
    adding ``n`` ids costs ``O(n log² n)`` in all, where one sorted array grown
    batch by batch would cost ``O(n²)`` (a job over 10⁸ images adds ids in
    3,000 batches). A merge makes a new array while the two it joins are
    still held, so merges stop at half the set (and at least
    :data:`MERGED_KEYS`): the set never holds more than half again its size,
    and a lookup searches about ``log₁.₅(n / MERGED_KEYS)`` runs (16 at 10⁸
    ids), its keys in order, so that each search starts where the last ended.

    Examples
    --------
    >>> ids = IdSet()
    >>> ids.add_new(["00" * 16, "ff" * 16, "00" * 16]).tolist()
    [True, True, False]
    >>> ids.contains(["ff" * 16, "11" * 16]).tolist()
    [True, False]
    """

    # Runs merge up to at least this many keys (4 MB) whatever the set's size.
    MERGED_KEYS = 1 << 18

    def __init__(self, ids=()):
        keys = np.unique(_keys(ids))
        self._runs: list[np.ndarray] = [keys] if len(keys) else []
        self._size = len(keys)

    def __len__(self) -> int:
        return self._size

    def contains(self, ids) -> np.ndarray:
        keys = _keys(ids)
        order = np.argsort(keys)
        return _in_input_order(self._found_sorted(keys[order]), order)

    def add_new(self, ids) -> np.ndarray:
        """Add ids; return which of them were new (first occurrences only)."""
        keys = _keys(ids)
        # A stable sort puts each key's first occurrence first among its equals.
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        new_ordered = ~self._found_sorted(ordered)
        new_ordered[1:] &= ordered[1:] != ordered[:-1]
        if new_ordered.any():
            self._runs.append(ordered[new_ordered])  # sorted already
            self._size += int(new_ordered.sum())
            self._merge_newest()
        return _in_input_order(new_ordered, order)

    def _found_sorted(self, ordered: np.ndarray) -> np.ndarray:
        """Which of these sorted keys the set holds: sorted keys make each binary
        search start where the last one ended."""
        found = np.zeros(len(ordered), dtype=bool)
        for run in self._runs:
            where = np.searchsorted(run, ordered)
            inside = where < len(run)
            found[inside] |= run[where[inside]] == ordered[inside]
        return found

    def _merge_newest(self) -> None:
        largest = max(self.MERGED_KEYS, self._size // 2)
        runs = self._runs
        while (
            len(runs) > 1
            and 2 * len(runs[-1]) > len(runs[-2])
            and len(runs[-1]) + len(runs[-2]) <= largest
        ):
            newer, older = runs.pop(), runs.pop()
            merged = np.concatenate((older, newer))  # disjoint runs
            del newer, older
            merged.sort()  # in place: one copy of the keys, not two
            runs.append(merged)


def _in_input_order(flags: np.ndarray, order: np.ndarray) -> np.ndarray:
    unsorted = np.empty(len(flags), dtype=bool)
    unsorted[order] = flags
    return unsorted


def _keys(ids) -> np.ndarray:
    if isinstance(ids, np.ndarray) and ids.dtype == np.dtype("S16"):
        return ids
    return np.array([bytes.fromhex(i) for i in ids], dtype="S16")


@dataclass
class DatasetState:
    """Where a job stands against the dataset it writes to.

    Attributes
    ----------
    segment : int
        The segment this job writes.
    resumed : bool
        Whether it resumes an interrupted job of the same segment.
    done : set of int
        Partitions of this segment already complete (their ``images`` file exists).
    committed : list of (segment, partition)
        Every complete partition in the dataset, before this job.
    known : IdSet
        Ids of images in earlier segments, which this job skips.
    known_shards : dict of str to int
        Tar shards in earlier segments, which this job skips, and their rows.
    partition_size : int or None
        The partition size the interrupted job this one resumes cut its input
        with (recorded in ``_job.json``), which ``partition_size = "auto"`` reuses.
    """

    segment: int = 0
    resumed: bool = False
    done: set[int] = field(default_factory=set)
    committed: list[tuple[int, int]] = field(default_factory=list)
    known: IdSet = field(default_factory=IdSet)
    known_shards: dict[str, int] = field(default_factory=dict)
    partition_size: int | None = None


def committed_partitions(
    output: str, storage_options: Mapping | None = None
) -> list[tuple[int, int]]:
    """``(segment, partition)`` of every complete partition: those in an ``images`` file."""
    files = table_files(output, "images", storage_options)
    return sorted(part for file in files for part in file.parts)


def read_known(
    output: str, parts: list[tuple[int, int]], storage_options: Mapping | None = None
) -> tuple[list[str], dict[str, int]]:
    """Image ids in the ``images`` files of the given partitions, and the tar shards
    those files hold whole, with their row counts.

    A compacted file holds partitions of complete jobs only, so it is wholly in
    ``parts`` or wholly out.
    """
    fs, root = filesystem(output, storage_options)
    wanted = set(parts)
    ids: list[str] = []
    shards: dict[str, int] = {}
    for file in table_files(output, "images", storage_options):
        if wanted.isdisjoint(file.parts):
            continue
        with fs.open(join(root, "images", file.name), "rb") as f:
            parquet = pq.ParquetFile(f)
            ids.extend(parquet.read(columns=["image_id"]).column(0).to_pylist())
            metadata = parquet.schema_arrow.metadata or {}
            shard = metadata.get(SHARD_METADATA_KEY.encode())
            if shard is not None:
                shards[shard.decode()] = parquet.metadata.num_rows
            shards.update(json.loads(metadata.get(SHARDS_METADATA_KEY.encode(), b"{}")))
    return ids, shards


def _known(output, parts, storage_options) -> dict:
    ids, shards = read_known(output, parts, storage_options)
    return {"known": IdSet(ids), "known_shards": shards}


def prepare_output(spec: JobSpec) -> DatasetState:
    """Make ``spec.output`` ready for this job, and say how the job relates to what is there.

    A new output is created; with ``spec.overwrite`` the dataset there is
    removed; temporary files an interrupted job left are removed. Otherwise
    the dataset is read: a job to resume, or a complete dataset to grow.

    Raises
    ------
    FileExistsError
        The folder holds something that is not a palette-dask dataset, or a
        dataset made with other options (and ``spec.overwrite`` is false).
    """
    options = spec.storage_options
    fs, root = filesystem(spec.output, options)
    if not fs.exists(fresh(fs, root)):
        fs.makedirs(root, exist_ok=True)
        return DatasetState()
    entries = {os.path.basename(p.rstrip("/")) for p in fs.ls(root, detail=False)}
    ours = entries & (
        set(SCHEMAS) | {JOB_FILE, CACHE_FOLDER, INDEX_FOLDER, PERFORMANCE_REPORT, COMPACTION_FILE}
    )
    if entries and not ours:
        raise FileExistsError(
            f"output {spec.output!r} is a non-empty folder that is not a palette-dask dataset; "
            "choose an empty or new folder"
        )
    record = read_job_file(spec.output, options)
    if spec.overwrite:
        for name in ours:
            fs.rm(f"{root}/{name}", recursive=True)
        return DatasetState()
    if record is None:
        if ours:
            raise FileExistsError(
                f"output {spec.output!r} has dataset folders but no {JOB_FILE}; "
                "pass --overwrite to replace it"
            )
        return DatasetState()
    _check_same_options(spec, record)
    if is_local(spec.output):
        _remove_temporary_files(fs, root)
    committed = committed_partitions(spec.output, options)
    last = int(record.get("segment", 0))
    if record.get("status") in UNFINISHED:
        _check_same_stream(spec, record)
        earlier = [p for p in committed if p[0] < last]
        return DatasetState(
            segment=last,
            resumed=True,
            done={p for s, p in committed if s == last},
            committed=committed,
            partition_size=record.get("partitioning", {}).get("partition_size"),
            **_known(spec.output, earlier, options),
        )
    return DatasetState(
        segment=last + 1,
        committed=committed,
        **_known(spec.output, committed, options),
    )


def _remove_temporary_files(fs, root: str) -> None:
    """Hidden temporary files left by a killed job (readers never see them).

    Only local outputs have them: objects are written directly (see
    :func:`palette_dask.storage.write_atomic`).
    """
    for path in fs.glob(f"{root}/**/.*.tmp"):
        fs.rm(path)


def _check_same_stream(spec: JobSpec, record: dict) -> None:
    """A resumed job must cut the same inputs into the same partitions."""
    before = record.get("spec", {})
    now = spec.to_dict()
    changed = [name for name in ("input", "partition_size") if before.get(name) != now[name]]
    if changed:
        raise FileExistsError(
            f"output {spec.output!r} holds an interrupted job with another "
            f"{' and '.join(changed)}; resume it with the same values, or pass --overwrite"
        )


def _check_same_options(spec: JobSpec, record: dict) -> None:
    before = record.get("spec", {})
    now = spec.to_dict()
    changed = [
        f"{name}={before.get(name)!r} -> {now[name]!r}"
        for name in RESULT_OPTIONS
        if name in before and before[name] != now[name]
    ]
    if changed:
        raise FileExistsError(
            f"output {spec.output!r} holds a dataset made with other options "
            f"({', '.join(changed)}); pass --overwrite to replace it, or choose another output"
        )
