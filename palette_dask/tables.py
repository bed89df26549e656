"""The output tables: Arrow schemas, rows built per partition, atomic Parquet files.

A dataset is a folder holding one sub-folder per table (``images``,
``palettes``, ``assignments``) of Parquet files named after the partition that
wrote them, plus ``_job.json``. Files are written under a hidden temporary name
and renamed into place once complete, so a reader never sees half a file, and
a partition written twice replaces its own files instead of duplicating rows.
"""

from __future__ import annotations

import json
import os
import uuid

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .color import rgb_to_hex
from .palette import Palette, PaletteOptions
from .sources import is_local, local_path

IMAGES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("format", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("sample_width", pa.int32()),
        pa.field("sample_height", pa.int32()),
        pa.field("n_pixels", pa.int32()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("k", pa.int16(), nullable=False),
        pa.field("color_space", pa.string(), nullable=False),
        pa.field("engine", pa.string(), nullable=False),
        pa.field("random_state", pa.int64(), nullable=False),
        pa.field("mse_rgb", pa.float32()),
        pa.field("elapsed_ms", pa.float32(), nullable=False),
    ]
)
PALETTES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("rank", pa.uint8(), nullable=False),
        pa.field("r", pa.uint8(), nullable=False),
        pa.field("g", pa.uint8(), nullable=False),
        pa.field("b", pa.uint8(), nullable=False),
        pa.field("hex", pa.string(), nullable=False),
        pa.field("lab_l", pa.float32(), nullable=False),
        pa.field("lab_a", pa.float32(), nullable=False),
        pa.field("lab_b", pa.float32(), nullable=False),
        pa.field("proportion", pa.float32(), nullable=False),
        pa.field("pixel_count", pa.int64(), nullable=False),
    ]
)
ASSIGNMENTS_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("sample_width", pa.int32(), nullable=False),
        pa.field("sample_height", pa.int32(), nullable=False),
        pa.field("labels", pa.list_(pa.uint8()), nullable=False),
    ]
)
SCHEMAS = {
    "images": IMAGES_SCHEMA,
    "palettes": PALETTES_SCHEMA,
    "assignments": ASSIGNMENTS_SCHEMA,
}
JOB_FILE = "_job.json"
PARQUET_COMPRESSION = "zstd"


def part_name(partition: int) -> str:
    """File name of a partition's Parquet file, the same in every table.

    Examples
    --------
    >>> part_name(42)
    'part-000000042.parquet'
    """
    return f"part-{partition:09d}.parquet"


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
        self._palettes: list[pa.RecordBatch] = []
        self._assign_ids: list[str] = []
        self._assign_shapes: list[tuple[int, int]] = []
        self._assign_labels: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._images["image_id"])

    def add(
        self,
        image_id: str,
        uri: str,
        *,
        palette: Palette | None = None,
        error: str | None = None,
        format: str | None = None,
        elapsed_ms: float,
    ) -> None:
        """Add one image: its palette, or the error that stopped it."""
        row = dict.fromkeys(IMAGES_SCHEMA.names)
        row.update(self._options, image_id=image_id, uri=uri, elapsed_ms=elapsed_ms)
        if palette is None:
            row.update(status="error", error=error, format=format)
        else:
            sample = palette.sample
            height, width = palette.labels.shape
            row.update(
                status="ok",
                format=sample.format,
                width=sample.width,
                height=sample.height,
                sample_width=width,
                sample_height=height,
                n_pixels=int(palette.counts.sum()),
                mse_rgb=palette.mse_rgb,
            )
            self._palettes.append(_palette_batch(image_id, palette))
            self._assign_ids.append(image_id)
            self._assign_shapes.append((width, height))
            self._assign_labels.append(palette.labels.reshape(-1))
        for name, value in row.items():
            self._images[name].append(value)

    def tables(self) -> dict[str, pa.Table]:
        """The partition's rows as one Arrow table per output table."""
        images = pa.table(self._images, schema=IMAGES_SCHEMA)
        palettes = (
            pa.Table.from_batches(self._palettes, schema=PALETTES_SCHEMA)
            if self._palettes
            else PALETTES_SCHEMA.empty_table()
        )
        lengths = np.array([len(x) for x in self._assign_labels], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        values = (
            np.concatenate(self._assign_labels) if self._assign_labels else np.empty(0, np.uint8)
        )
        widths, heights = (
            zip(*self._assign_shapes, strict=True) if self._assign_shapes else ((), ())
        )
        assignments = pa.table(
            {
                "image_id": pa.array(self._assign_ids, pa.string()),
                "sample_width": pa.array(widths, pa.int32()),
                "sample_height": pa.array(heights, pa.int32()),
                "labels": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)),
            },
            schema=ASSIGNMENTS_SCHEMA,
        )
        return {"images": images, "palettes": palettes, "assignments": assignments}


def _palette_batch(image_id: str, palette: Palette) -> pa.RecordBatch:
    n = len(palette.colors)
    lab = palette.lab
    columns = {
        "image_id": pa.array([image_id] * n, pa.string()),
        "rank": pa.array(np.arange(n, dtype=np.uint8)),
        "r": pa.array(palette.colors[:, 0]),
        "g": pa.array(palette.colors[:, 1]),
        "b": pa.array(palette.colors[:, 2]),
        "hex": pa.array(rgb_to_hex(palette.colors), pa.string()),
        "lab_l": pa.array(lab[:, 0]),
        "lab_a": pa.array(lab[:, 1]),
        "lab_b": pa.array(lab[:, 2]),
        "proportion": pa.array(palette.proportions),
        "pixel_count": pa.array(palette.counts.astype(np.int64)),
    }
    return pa.RecordBatch.from_pydict(columns, schema=PALETTES_SCHEMA)


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` so that ``path`` appears only once complete.

    Local files go to a hidden temporary name in the same folder, are flushed
    to disk and renamed into place; object stores publish an object only when
    its upload completes, so remote URLs are written directly.
    """
    if not is_local(path):
        with fsspec.open(path, "wb") as f:
            f.write(data)
        return
    final = local_path(path)
    folder, name = os.path.split(final)
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, final)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def parquet_bytes(table: pa.Table) -> bytes:
    """A table serialised as one Parquet file."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=PARQUET_COMPRESSION)
    return sink.getvalue().to_pybytes()


def write_partition(output: str, partition: int, tables: dict[str, pa.Table]) -> None:
    """Write a partition's tables atomically, ``images`` last.

    The ``images`` file is the partition's commit marker: when it exists, the
    partition's other files are complete.
    """
    for name in sorted(tables, key=lambda n: n == "images"):
        write_atomic(join(output, name, part_name(partition)), parquet_bytes(tables[name]))


def write_job_file(output: str, record: dict) -> None:
    """Write ``_job.json`` atomically."""
    text = json.dumps(record, indent=2, sort_keys=True, default=str)
    write_atomic(join(output, JOB_FILE), text.encode("utf-8"))


def join(base: str, *parts: str) -> str:
    """Join path segments onto a local path or URL."""
    return "/".join([base.rstrip("/"), *parts]) if "://" in base else os.path.join(base, *parts)
