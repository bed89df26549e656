"""Compaction: a dataset's small files rewritten into large ones, its readers undisturbed.

A job writes one file per table per partition. Datasets made with small
partitions (older runs, a low ``partition_size``) or grown a few images at a
time hold many small files, which readers spend their time listing and
opening. :func:`compact` rewrites runs of consecutive small files into files
of at least ``target_images`` images (or ``target_bytes`` in one table), the
same rows in the same order, named after the first and last partition they
hold (``part-0000-000000000-0001-000000041.parquet``, see
:func:`~palette_dask.tables.span_name`):

1. the runs are planned and the plan is written to ``_compaction.json``;
2. for each run, the compacted file of every table is written, each
   published whole, the ``images`` file last (its footer lists the
   partitions it holds with their rows, and the tar shards they hold whole);
   then the files it replaces are removed;
3. the plan is removed.

While a run's old and new files are both there, readers through
:func:`~palette_dask.open_dataset` and the jobs take the compacted file and
leave out the files it holds (:func:`~palette_dask.tables.visible_files`):
they never see a row twice and never miss one (a reader that listed the
files before a removal lists them again). A plain glob reader (DuckDB's
``read_parquet('OUT/palettes/*.parquet')``, Spark) sees a run's rows twice
until its old files are removed. A killed compaction leaves its plan behind;
running it again finishes that plan first (the files already written are
kept), then plans what is left. Only complete jobs' partitions are compacted
(an interrupted job's segment is its resume's); the corpus assignment files
(``corpus-…``) are left as they are, since every job that grows a corpus
dataset writes them again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from .storage import AtomicFile, filesystem, fresh, is_local, join, write_atomic
from .tables import (
    COMPACTION_FILE,
    PARTITIONS_METADATA_KEY,
    SCHEMAS,
    SHARD_METADATA_KEY,
    SHARDS_METADATA_KEY,
    parquet_footer,
    parquet_options,
    read_job_file,
    span_name,
    table_files,
    visible_files,
)

logger = logging.getLogger(__name__)

# A compacted file holds at least this many images, as readers like them ...
TARGET_IMAGES = 10_000
# ... or this many bytes in one of its tables.
TARGET_BYTES = 64 << 20
# Rows are written in row groups of about this many bytes at most.
ROW_GROUP_BYTES = 128 << 20
# The temporary name of a compacted file not yet published (see storage.AtomicFile).
_UNPUBLISHED = ".part-????-?????????-????-?????????.parquet.*.tmp"
# The tables a job writes one file per partition into (corpus_palette is one file).
_TABLES = ("palettes", "assignments", "images")


@dataclass(frozen=True)
class CompactionReport:
    """What a compaction did.

    ``replaced`` files (all tables) were rewritten into ``written`` files,
    ``runs`` runs of partitions; ``resumed`` says it first finished the plan of
    a compaction that was stopped.
    """

    replaced: int
    written: int
    runs: int
    resumed: bool


def compact(
    output: str,
    *,
    target_images: int = TARGET_IMAGES,
    target_bytes: int = TARGET_BYTES,
    storage_options: Mapping | None = None,
) -> CompactionReport:
    """Rewrite a dataset's small files into files of ``target_images`` images or more.

    Parameters
    ----------
    output : str
        The dataset (a local path or any fsspec URL).
    target_images : int
        Images a compacted file holds at least (the last run may hold fewer).
    target_bytes : int
        Or bytes of one table a compacted file holds at least.
    storage_options : mapping, optional
        fsspec options of a remote ``output``.

    Returns
    -------
    CompactionReport

    Examples
    --------
    >>> compact("out/sample")  # doctest: +SKIP
    CompactionReport(replaced=45, written=3, runs=1, resumed=False)
    """
    record = read_job_file(output, storage_options)
    if record is None:
        raise FileNotFoundError(f"{output!r} is not a palette-dask dataset (no _job.json)")
    fs, root = filesystem(output, storage_options)
    if is_local(output):
        # A stopped compaction's unpublished files (a job's have other names).
        for leftover in fs.glob(f"{root}/*/{_UNPUBLISHED}"):
            fs.rm(leftover)
    plan_path = join(root, COMPACTION_FILE)
    done = []
    resumed = fs.exists(fresh(fs, plan_path))
    if resumed:  # a compaction was stopped: its plan first
        with fs.open(plan_path, "r") as f:
            done += _carry_out(json.load(f), output, storage_options)
    plan = _plan(output, record, target_images, target_bytes, storage_options)
    if plan:
        write_atomic(join(output, COMPACTION_FILE), json.dumps(plan).encode(), storage_options)
        done += _carry_out(plan, output, storage_options)
    return CompactionReport(
        replaced=sum(gone for _, gone in done),
        written=sum(made for made, _ in done),
        runs=len(done),
        resumed=resumed,
    )


def _carry_out(plan: list[dict], output: str, storage_options) -> list[tuple[int, int]]:
    """Compact the runs of a plan, then remove the plan; files written and removed per run."""
    done = [_compact_run(run, output, storage_options) for run in plan]
    fs, root = filesystem(output, storage_options)
    fs.rm(join(root, COMPACTION_FILE))
    return done


def _plan(output, record, target_images, target_bytes, storage_options) -> list[dict]:
    """The runs of consecutive small files to compact, each as ``{"name", "sources",
    "partitions", "shards"}``.

    A file that reaches a target alone ends the run before it, and a run of one
    file is no compaction.
    """
    fs, root = filesystem(output, storage_options)
    # An interrupted job's segment is its resume's to finish.
    open_segment = record.get("segment", 0) if record.get("status") != "complete" else None
    sizes = {table: _sizes(fs, join(root, table)) for table in _TABLES}
    runs, run = [], []
    for file in table_files(output, "images", storage_options):
        if file.parts[0][0] == open_segment:
            break  # the last segment: nothing after it
        num_rows, metadata = parquet_footer(fs, join(root, "images", file.name))
        if file.rows is None:
            rows = [num_rows]
            shard = metadata.get(SHARD_METADATA_KEY)
            shards = {shard: num_rows} if shard is not None else {}
        else:
            rows, shards = file.rows, json.loads(metadata.get(SHARDS_METADATA_KEY, "{}"))
        entry = {
            "name": file.name,
            "partitions": [[s, p, n] for (s, p), n in zip(file.parts, rows, strict=True)],
            "shards": shards,
            "bytes": max(by_name.get(file.name, 0) for by_name in sizes.values()),
        }
        if num_rows >= target_images or entry["bytes"] >= target_bytes:
            runs.append(run)
            run = []
            continue
        run.append(entry)
        images = sum(n for e in run for *_, n in e["partitions"])
        if images >= target_images or sum(e["bytes"] for e in run) >= target_bytes:
            runs.append(run)
            run = []
    runs.append(run)
    return [_run_record(run) for run in runs if len(run) > 1]


def _run_record(run: list[dict]) -> dict:
    partitions = [p for entry in run for p in entry["partitions"]]
    return {
        "name": span_name(tuple(partitions[0][:2]), tuple(partitions[-1][:2])),
        "sources": [entry["name"] for entry in run],
        "partitions": partitions,
        "shards": {shard: n for entry in run for shard, n in entry["shards"].items()},
    }


def _compact_run(run: dict, output: str, storage_options) -> tuple[int, int]:
    """Write a run's compacted files (those not written yet), then remove its sources.

    Returns the files written and removed.
    """
    fs, root = filesystem(output, storage_options)
    written = 0
    for table in _TABLES:
        folder = join(root, table)
        sources = [join(folder, name) for name in run["sources"] if fs.exists(join(folder, name))]
        if not sources or fs.exists(fresh(fs, join(folder, run["name"]))):
            continue  # a table without files of these partitions, or written before a stop
        metadata = None
        if table == "images":
            metadata = {
                PARTITIONS_METADATA_KEY: json.dumps(run["partitions"]),
                SHARDS_METADATA_KEY: json.dumps(run["shards"]),
            }
        target = AtomicFile(join(output, table, run["name"]), storage_options)
        with target:
            _concatenate(fs, sources, table, target.temporary, metadata)
        written += 1
    removed = _remove_sources(fs, root, run)
    logger.info("compacted %d files into %s", len(run["sources"]), run["name"])
    return written, removed


def _remove_sources(fs, root: str, run: dict) -> int:
    """Remove the files a run's compacted files replace; returns how many there were."""
    removed = 0
    for table in _TABLES:
        for name in run["sources"]:
            path = join(root, table, name)
            if fs.exists(path):
                fs.rm(path)
                removed += 1
    return removed


def _concatenate(fs, sources: list[str], table: str, local_path: str, metadata) -> None:
    """Write the rows of ``sources``, in order, to the local file ``local_path``."""
    schema = SCHEMAS[table].with_metadata(metadata) if metadata else SCHEMAS[table]
    with pq.ParquetWriter(local_path, schema, **parquet_options(schema)) as writer:
        pending: list[pa.Table] = []
        for source in sources:
            with fs.open(source, "rb") as f:
                pending.append(pq.read_table(f).cast(SCHEMAS[table]))
            if sum(t.nbytes for t in pending) >= ROW_GROUP_BYTES:
                _write_group(writer, pending, schema)
                pending = []
        _write_group(writer, pending, schema)


def _write_group(writer: pq.ParquetWriter, tables: list[pa.Table], schema: pa.Schema) -> None:
    if tables:
        merged = pa.concat_tables(tables).replace_schema_metadata(schema.metadata)
        writer.write_table(merged, row_group_size=max(merged.num_rows, 1))


def _sizes(fs, folder: str) -> dict[str, int]:
    """Bytes of each visible file of a table folder."""
    if not fs.exists(fresh(fs, folder)):
        return {}
    entries = {
        e["name"].rstrip("/").rsplit("/", 1)[-1]: e["size"] for e in fs.ls(folder, detail=True)
    }
    return {name: entries[name] for name in visible_files(entries)}
