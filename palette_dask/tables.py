"""The output tables: Arrow schemas, rows built per partition, atomic Parquet files.

A dataset is a folder holding one sub-folder per table (``images``,
``palettes``, ``assignments``) of Parquet files named after the partition that
wrote them, plus ``_job.json``. Files are written under a hidden temporary name
and renamed into place once complete, so a reader never sees half a file, and
a partition written twice replaces its own files instead of duplicating rows.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .color import pack_rgb, rgb_to_hex, rgb_to_lab
from .names import color_families, color_names
from .options import TRANSPARENT_LABEL, PaletteOptions
from .storage import AtomicFile, filesystem, fresh, join, read_parquet_rows, write_atomic

if TYPE_CHECKING:  # the writing side's types: readers of the tables do not load the decoders
    from .imaging import Sample
    from .palette import Palette

IMAGES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("source_path", pa.string()),
        pa.field("format", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("sample_width", pa.int32()),
        pa.field("sample_height", pa.int32()),
        pa.field("n_pixels", pa.int32()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("icc_profile", pa.string()),
        pa.field("warning", pa.string()),
        # The background colour left out of clustering (``ignore_background``), if any.
        pa.field("background", pa.string()),
        pa.field("k", pa.int16(), nullable=False),
        pa.field("color_space", pa.string(), nullable=False),
        pa.field("engine", pa.string(), nullable=False),
        pa.field("random_state", pa.int64(), nullable=False),
        pa.field("mse_rgb", pa.float32()),
        pa.field("elapsed_ms", pa.float32(), nullable=False),
    ]
)
# A colour and its share, as the palettes and corpus_palette tables both give it.
_COLOR_FIELDS = [
    pa.field("r", pa.uint8(), nullable=False),
    pa.field("g", pa.uint8(), nullable=False),
    pa.field("b", pa.uint8(), nullable=False),
    pa.field("hex", pa.string(), nullable=False),
    # The nearest CSS named colour, and the colour's family (see palette_dask.names).
    pa.field("name", pa.string(), nullable=False),
    pa.field("family", pa.string(), nullable=False),
    pa.field("lab_l", pa.float32(), nullable=False),
    pa.field("lab_a", pa.float32(), nullable=False),
    pa.field("lab_b", pa.float32(), nullable=False),
    pa.field("proportion", pa.float32(), nullable=False),
    pa.field("pixel_count", pa.int64(), nullable=False),
]
PALETTES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("palette_kind", pa.string(), nullable=False),
        pa.field("rank", pa.uint8(), nullable=False),
        *_COLOR_FIELDS,
        pa.field("corpus_index", pa.int16()),
    ]
)
ASSIGNMENTS_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("palette_kind", pa.string(), nullable=False),
        pa.field("sample_width", pa.int32(), nullable=False),
        pa.field("sample_height", pa.int32(), nullable=False),
        # The label image, row-major, one byte per sample pixel.
        pa.field("labels", pa.binary(), nullable=False),
    ]
)
CORPUS_PALETTE_SCHEMA = pa.schema(
    [
        pa.field("corpus_index", pa.int16(), nullable=False),
        *_COLOR_FIELDS,
        pa.field("n_images", pa.int64(), nullable=False),
    ]
)
# Resized samples kept between the two passes of a corpus job (then deleted).
SAMPLE_CACHE_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("format", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("sample_width", pa.int32(), nullable=False),
        pa.field("sample_height", pa.int32(), nullable=False),
        pa.field("rgb", pa.binary(), nullable=False),
        pa.field("alpha", pa.binary()),
    ]
)
SCHEMAS = {
    "images": IMAGES_SCHEMA,
    "palettes": PALETTES_SCHEMA,
    "assignments": ASSIGNMENTS_SCHEMA,
    "corpus_palette": CORPUS_PALETTE_SCHEMA,
}
# The tables a partition writes: the dataset's, and the corpus job's sample cache.
_WRITTEN_SCHEMAS = {**SCHEMAS, "samples": SAMPLE_CACHE_SCHEMA}
# Key of the ``images`` file metadata naming the tar shard a partition holds
# whole, so that a job growing the dataset skips the shard without reading it.
SHARD_METADATA_KEY = "palette_dask.tar_shard"
CACHE_FOLDER = "_cache"
JOB_FILE = "_job.json"
# The plan of a compaction under way (see palette_dask.compact).
COMPACTION_FILE = "_compaction.json"
INDEX_FOLDER = "_index"
PERFORMANCE_REPORT = "performance_report.html"
# Level 3 packs a photograph's label image to about 2 KB (6 KB at level 1), no slower.
PARQUET_COMPRESSION = "zstd"
PARQUET_COMPRESSION_LEVEL = 3


def part_name(segment: int, partition: int, prefix: str = "part") -> str:
    """File name of a partition's Parquet file, the same in every table.

    A dataset grows in segments, one per job that added images; the corpus
    assignment pass writes its own files, with prefix ``corpus``.

    Examples
    --------
    >>> part_name(0, 42)
    'part-0000-000000042.parquet'
    >>> part_name(1, 42, "corpus")
    'corpus-0001-000000042.parquet'
    """
    return f"{prefix}-{segment:04d}-{partition:09d}.parquet"


# A compacted file's key-value metadata: the partitions it holds, in order, with their rows.
PARTITIONS_METADATA_KEY = "palette_dask.partitions"
# ... and the tar shards it holds whole, with their rows (a partition's file names one).
SHARDS_METADATA_KEY = "palette_dask.tar_shards"
_FILE_NAME = re.compile(r"^(part|corpus)-(\d+)-(\d+)(?:-(\d+)-(\d+))?\.parquet$")


def span_name(first: tuple[int, int], last: tuple[int, int], prefix: str = "part") -> str:
    """File name of the partitions from ``first`` to ``last`` (``(segment, partition)``),
    both included, compacted into one file.

    Examples
    --------
    >>> span_name((0, 0), (1, 41))
    'part-0000-000000000-0001-000000041.parquet'
    """
    return f"{prefix}-{first[0]:04d}-{first[1]:09d}-{last[0]:04d}-{last[1]:09d}.parquet"


def file_span(name: str) -> tuple[str, tuple[int, int], tuple[int, int]] | None:
    """``(prefix, first, last)`` partitions of a table file's name, or ``None`` for other files.

    Examples
    --------
    >>> file_span("part-0000-000000042.parquet")
    ('part', (0, 42), (0, 42))
    >>> file_span("part-0000-000000000-0001-000000041.parquet")
    ('part', (0, 0), (1, 41))
    >>> file_span(".part-0000-000000042.parquet.1f3a.tmp") is None
    True
    """
    match = _FILE_NAME.match(name)
    if match is None:
        return None
    prefix, segment, partition, last_segment, last_partition = match.groups()
    first = (int(segment), int(partition))
    last = (int(last_segment), int(last_partition)) if last_segment is not None else first
    return prefix, first, last


def visible_files(names: Iterable[str]) -> list[str]:
    """The table files readers take, in partition order: all but those a larger file holds.

    A compaction writes a file holding the partitions of several files, then
    removes those; meanwhile both are there, and this leaves the smaller ones
    out. (A compacted file always holds whole files, so files never overlap in
    part.)

    Examples
    --------
    >>> visible_files(["part-0000-000000001.parquet", "part-0000-000000002.parquet",
    ...                "part-0000-000000000-0000-000000001.parquet"])
    ['part-0000-000000000-0000-000000001.parquet', 'part-0000-000000002.parquet']
    """
    spans = [(span, name) for name in names if (span := file_span(name)) is not None]
    # By prefix and first partition; of files starting together, the largest first.
    spans.sort(key=lambda entry: (entry[0][0], entry[0][1], -entry[0][2][0], -entry[0][2][1]))
    visible: list[str] = []
    reach: dict[str, tuple[int, int]] = {}
    for (prefix, _, last), name in spans:
        if prefix in reach and last <= reach[prefix]:
            continue  # held by a larger file that starts at or before it
        reach[prefix] = last
        visible.append(name)
    return visible


def listed_visible_files(fs, folder: str) -> list[str]:
    """The names of the files readers take in a table folder, listed afresh
    (see :func:`visible_files`)."""
    paths = fs.ls(fresh(fs, folder), detail=False)
    return visible_files(posixpath.basename(path.rstrip("/")) for path in paths)


@dataclass(frozen=True)
class TableFile:
    """One visible file of a table and the partitions it holds, in order, with their rows.

    ``rows`` is ``None`` for a partition's own file (all of its rows).
    """

    name: str
    parts: list[tuple[int, int]]
    rows: list[int] | None = None


def table_files(
    output: str, table: str, storage_options: Mapping | None = None, prefix: str = "part"
) -> list[TableFile]:
    """The visible files of a table (see :func:`visible_files`) with the partitions they hold.

    A compacted file's partitions are read from its footer.
    """
    fs, root = filesystem(output, storage_options)
    folder = join(root, table)
    if not fs.exists(fresh(fs, folder)):
        return []
    files = []
    for name in listed_visible_files(fs, folder):
        kind, first, last = file_span(name)
        if kind != prefix:
            continue
        if first == last:
            files.append(TableFile(name, [first]))
            continue
        held = json.loads(parquet_footer(fs, join(folder, name))[1][PARTITIONS_METADATA_KEY])
        files.append(TableFile(name, [(s, p) for s, p, _ in held], [n for _, _, n in held]))
    return files


def parquet_footer(fs, path: str) -> tuple[int, dict[str, str]]:
    """A Parquet file's number of rows and key-value metadata, from its footer."""
    with fs.open(path, "rb") as f:
        parquet = pq.ParquetFile(f)
        metadata = parquet.schema_arrow.metadata or {}
        return parquet.metadata.num_rows, {k.decode(): v.decode() for k, v in metadata.items()}


def read_partition_rows(
    output: str,
    table: str,
    part: tuple[int, int],
    columns: list[str] | None = None,
    storage_options: Mapping | None = None,
) -> list[dict]:
    """A complete partition's rows of a table, from its own file or the compacted one holding it."""
    path = join(output, table, part_name(*part))
    fs, where = filesystem(path, storage_options)
    if fs.exists(fresh(fs, where)):
        return read_parquet_rows(path, columns, storage_options)
    for file in table_files(output, table, storage_options):
        if part in file.parts:
            at = file.parts.index(part)
            start = sum(file.rows[:at])
            rows = read_parquet_rows(join(output, table, file.name), columns, storage_options)
            return rows[start : start + file.rows[at]]
    raise FileNotFoundError(f"partition {part} of {table!r} is in no file of {output!r}")


class TableBuilder:
    """Collects the rows of one partition, column by column, and turns them into Arrow tables.

    Parameters
    ----------
    options : PaletteOptions
        The job's options; the clustering ones are repeated on every ``images`` row.
    """

    def __init__(self, options: PaletteOptions):
        self._options = {
            "k": options.k,
            "color_space": options.color_space,
            "engine": options.engine,
            "random_state": options.random_state,
        }
        self._images = {name: [] for name in IMAGES_SCHEMA.names}
        self._palettes: list[tuple[str, Palette]] = []
        self._assignments = {name: [] for name in ASSIGNMENTS_SCHEMA.names}
        self._samples = {name: [] for name in SAMPLE_CACHE_SCHEMA.names}

    def __len__(self) -> int:
        return len(self._images["image_id"])

    def add_image(
        self,
        image_id: str,
        uri: str,
        *,
        source_path: str | None = None,
        sample: Sample | None = None,
        n_pixels: int | None = None,
        palette: Palette | None = None,
        error: str | None = None,
        format: str | None = None,
        background: str | None = None,
        elapsed_ms: float,
    ) -> None:
        """Add one image's ``images`` row: its sample (and own palette, if any) and the
        background left out of clustering, or its error."""
        row = dict.fromkeys(IMAGES_SCHEMA.names)
        row.update(
            self._options,
            image_id=image_id,
            uri=uri,
            source_path=source_path,
            elapsed_ms=elapsed_ms,
        )
        if sample is None:
            row.update(status="error", error=error, format=format)
        else:
            height, width = sample.shape
            row.update(
                status="ok",
                format=sample.format,
                width=sample.width,
                height=sample.height,
                sample_width=width,
                sample_height=height,
                n_pixels=n_pixels,
                icc_profile=sample.icc_profile,
                warning=sample.warning,
                background=background,
            )
        if palette is not None:
            row["mse_rgb"] = palette.mse_rgb
            self.add_palette(image_id, palette)
        for name, value in row.items():
            self._images[name].append(value)

    def add_palette(self, image_id: str, palette: Palette) -> None:
        """Add an image's ``palettes`` rows and ``assignments`` row (own or corpus palette)."""
        self._palettes.append((image_id, palette))
        height, width = palette.labels.shape
        labels = palette.labels.reshape(-1)
        if palette.corpus_index is not None:
            # Corpus assignments name the corpus colour, not the image's rank.
            lut = np.full(256, TRANSPARENT_LABEL, dtype=np.uint8)
            lut[: len(palette.corpus_index)] = palette.corpus_index
            labels = lut[labels]
        row = {
            "image_id": image_id,
            "palette_kind": _kind(palette),
            "sample_width": width,
            "sample_height": height,
            "labels": labels.tobytes(),
        }
        for name, value in row.items():
            self._assignments[name].append(value)

    def add_sample(self, image_id: str, sample: Sample) -> None:
        """Keep an image's resized sample for a later pass (the corpus assignment)."""
        height, width = sample.shape
        row = {
            "image_id": image_id,
            "format": sample.format,
            "width": sample.width,
            "height": sample.height,
            "sample_width": width,
            "sample_height": height,
            "rgb": sample.rgb.tobytes(),
            "alpha": None if sample.alpha is None else sample.alpha.tobytes(),
        }
        for name, value in row.items():
            self._samples[name].append(value)

    def tables(self, names: Iterable[str]) -> dict[str, pa.Table]:
        """The partition's rows of the named tables (``images``, ``palettes``, ``assignments``,
        ``samples``), each as an Arrow table, empty if no row was added."""
        built = {}
        for name in names:
            if name == "images":
                built[name] = pa.table(self._images, schema=IMAGES_SCHEMA)
            elif name == "palettes":
                built[name] = _palettes_table(self._palettes)
            elif name == "assignments":
                built[name] = pa.table(self._assignments, schema=ASSIGNMENTS_SCHEMA)
            elif name == "samples":
                built[name] = pa.table(self._samples, schema=SAMPLE_CACHE_SCHEMA)
            else:
                raise ValueError(f"unknown table {name!r}")
        return built


def _kind(palette: Palette) -> str:
    return "image" if palette.corpus_index is None else "corpus"


def sample_from_row(row: dict) -> Sample:
    """The :class:`Sample` kept in a row of the ``samples`` cache."""
    from .imaging import Sample

    shape = (row["sample_height"], row["sample_width"])
    rgb = np.frombuffer(row["rgb"], dtype=np.uint8).reshape(*shape, 3)
    alpha = None if row["alpha"] is None else np.frombuffer(row["alpha"], np.uint8).reshape(shape)
    return Sample(
        rgb=rgb, alpha=alpha, format=row["format"], width=row["width"], height=row["height"]
    )


def color_columns(colors: np.ndarray, proportions, pixel_counts) -> dict[str, pa.Array]:
    """The colour and share columns shared by ``palettes`` and ``corpus_palette``."""
    lab = rgb_to_lab(colors)
    # Named once per distinct colour: palettes repeat colours.
    distinct, first, inverse = np.unique(pack_rgb(colors), return_index=True, return_inverse=True)
    names = np.array(color_names(colors[first]), object)[inverse] if len(distinct) else []
    families = np.array(color_families(colors[first]), object)[inverse] if len(distinct) else []
    return {
        "r": pa.array(colors[:, 0]),
        "g": pa.array(colors[:, 1]),
        "b": pa.array(colors[:, 2]),
        "hex": pa.array(rgb_to_hex(colors), pa.string()),
        "name": pa.array(names, pa.string()),
        "family": pa.array(families, pa.string()),
        "lab_l": pa.array(lab[:, 0]),
        "lab_a": pa.array(lab[:, 1]),
        "lab_b": pa.array(lab[:, 2]),
        "proportion": pa.array(np.asarray(proportions, dtype=np.float32)),
        "pixel_count": pa.array(np.asarray(pixel_counts, dtype=np.int64)),
    }


def corpus_palette_table(colors: np.ndarray, pixel_counts, image_counts) -> pa.Table:
    """The ``corpus_palette`` table: the corpus colours and the assignment totals."""
    pixel_counts = np.asarray(pixel_counts, dtype=np.int64)
    shares = pixel_counts / max(int(pixel_counts.sum()), 1)
    return pa.table(
        {
            "corpus_index": pa.array(np.arange(len(colors), dtype=np.int16)),
            **color_columns(colors, shares, pixel_counts),
            "n_images": pa.array(np.asarray(image_counts, dtype=np.int64)),
        },
        schema=CORPUS_PALETTE_SCHEMA,
    )


def _palettes_table(entries: list[tuple[str, Palette]]) -> pa.Table:
    """The ``palettes`` rows of ``(image_id, palette)`` pairs, built column by column at once."""
    palettes = [palette for _, palette in entries]
    sizes = np.array([len(p.colors) for p in palettes], dtype=np.int64)

    def stacked(values, dtype):
        return np.concatenate(values).astype(dtype) if entries else np.empty(0, dtype)

    corpus_index = [
        np.full(len(p.colors), -1) if p.corpus_index is None else p.corpus_index for p in palettes
    ]
    corpus_index = stacked(corpus_index, np.int16)
    columns = {
        "image_id": pa.array(
            np.repeat(np.array([i for i, _ in entries], object), sizes), pa.string()
        ),
        "palette_kind": pa.array(np.repeat(np.array([_kind(p) for p in palettes], object), sizes)),
        "rank": pa.array(stacked([np.arange(n) for n in sizes], np.uint8)),
        **color_columns(
            stacked([p.colors for p in palettes], np.uint8).reshape(-1, 3),
            stacked([p.proportions for p in palettes], np.float32),
            stacked([p.counts for p in palettes], np.int64),
        ),
        # -1 marks an image's own palette, stored as null.
        "corpus_index": pa.array(corpus_index, mask=corpus_index < 0),
    }
    return pa.table(columns, schema=PALETTES_SCHEMA)


def parquet_options(schema: pa.Schema) -> dict:
    # Dictionaries and min/max statistics only cost time on blobs (label images, samples).
    small = [field.name for field in schema if not pa.types.is_binary(field.type)]
    return {
        "compression": PARQUET_COMPRESSION,
        "compression_level": PARQUET_COMPRESSION_LEVEL,
        "use_dictionary": small,
        "write_statistics": small,
    }


def parquet_bytes(table: pa.Table) -> bytes:
    """A table serialised as one Parquet file."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **parquet_options(table.schema))
    return sink.getvalue().to_pybytes()


class PartitionWriter:
    """A partition's Parquet files, written a batch of rows at a time and published together.

    Each :meth:`write` appends one row group to each table's file, so a task
    holds one batch of rows in memory however large its partition (a tar
    shard of 10,000 images is one partition). Nothing is visible until
    :meth:`commit` publishes the files, ``images`` last: the ``images`` file
    is the partition's commit marker, and when it exists the partition's other
    files are complete. Leaving the ``with`` block on an exception discards
    every file.

    Parameters
    ----------
    output : str
        The dataset.
    part : (int, int)
        ``(segment, partition)``.
    names : iterable of str
        The tables written; ``samples`` (the corpus cache) goes under ``_cache/``.
    prefix : str
        ``part``, or ``corpus`` for the corpus assignment pass.
    storage_options : mapping, optional
        fsspec options of a remote ``output``.
    metadata : mapping of str to str, optional
        Key-value metadata of the ``images`` file.

    Examples
    --------
    >>> import os, tempfile
    >>> out = tempfile.mkdtemp()
    >>> with PartitionWriter(out, (0, 7), ["images"]) as writer:
    ...     writer.write({"images": IMAGES_SCHEMA.empty_table()})
    ...     writer.commit()
    >>> os.listdir(os.path.join(out, "images"))
    ['part-0000-000000007.parquet']
    """

    def __init__(
        self,
        output: str,
        part: tuple[int, int],
        names: Iterable[str],
        *,
        prefix: str = "part",
        storage_options: Mapping | None = None,
        metadata: Mapping[str, str] | None = None,
    ):
        self._files: dict[str, tuple[AtomicFile, pq.ParquetWriter]] = {}
        for name in sorted(names, key=lambda n: n == "images"):
            folder = join(output, CACHE_FOLDER, name) if name == "samples" else join(output, name)
            target = AtomicFile(join(folder, part_name(*part, prefix)), storage_options)
            schema = _WRITTEN_SCHEMAS[name]
            if name == "images" and metadata:
                schema = schema.with_metadata(dict(metadata))
            self._files[name] = (
                target,
                pq.ParquetWriter(target.temporary, schema, **parquet_options(schema)),
            )

    def write(self, tables: Mapping[str, pa.Table]) -> None:
        """Append each table's rows to its file, as one row group."""
        for name, table in tables.items():
            if table.num_rows:
                _, writer = self._files[name]
                writer.write_table(table)

    def commit(self) -> None:
        """Close the files and publish them, ``images`` last."""
        for target, writer in self._files.values():
            writer.close()
            target.commit()
        self._files = {}

    def discard(self) -> None:
        """Drop every file not yet published."""
        for target, writer in self._files.values():
            writer.close()
            target.discard()
        self._files = {}

    def __enter__(self) -> PartitionWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.discard()


def write_partition(
    output: str,
    part: tuple[int, int],
    tables: dict[str, pa.Table],
    *,
    prefix: str = "part",
    storage_options: Mapping | None = None,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write a partition's tables at once (see :class:`PartitionWriter`)."""
    with PartitionWriter(
        output, part, tables, prefix=prefix, storage_options=storage_options, metadata=metadata
    ) as writer:
        writer.write(tables)
        writer.commit()


def cache_path(output: str, part: tuple[int, int]) -> str:
    """Where a partition's ``samples`` cache lives."""
    return join(output, CACHE_FOLDER, "samples", part_name(*part))


def write_corpus_palette(
    output: str, table: pa.Table, storage_options: Mapping | None = None
) -> None:
    """Write the ``corpus_palette`` table (one file, replaced whole by each fit)."""
    path = join(output, "corpus_palette", part_name(0, 0))
    write_atomic(path, parquet_bytes(table), storage_options)


def remove_cache(output: str, storage_options: Mapping | None = None) -> None:
    """Remove the first pass's cache of samples (``OUTPUT/_cache``), once assigned."""
    fs, root = filesystem(output, storage_options)
    cache = join(root, CACHE_FOLDER)
    fresh(fs, join(cache, "samples"))  # written by the workers: forget older listings
    if fs.exists(cache):
        fs.rm(cache, recursive=True)


def read_job_file(output: str, storage_options: Mapping | None = None) -> dict | None:
    """The job record (``_job.json``) of the dataset at ``output``, or ``None``.

    Each job rewrites it: the file system's cached listing is not trusted.
    """
    fs, root = filesystem(output, storage_options)
    try:  # one request: opening answers whether it exists
        with fs.open(fresh(fs, join(root, JOB_FILE)), "r") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def write_job_file(output: str, record: dict, storage_options: Mapping | None = None) -> None:
    """Write ``_job.json`` atomically."""
    text = json.dumps(record, indent=2, sort_keys=True, default=str)
    write_atomic(join(output, JOB_FILE), text.encode("utf-8"), storage_options)
