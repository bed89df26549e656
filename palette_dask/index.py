"""A dataset's palettes as arrays for search, and the index that stores them.

Every image's palette becomes a fixed-length row of shares and of indexes into
the distinct colours (:class:`PaletteArrays`). :meth:`PaletteArrays.indexed`
adds what makes a search touch only candidates: rows in the order of their
mean colour's cell of CIELAB (a likeness search walks the cells outward from
its reference's mean), each palette's colours again in fixed point (the
bounds read rows in order, without gathers), for each distinct colour the rows
holding it, distinct colours in the order of their cell (a colour query looks
up the colours near its own), and the rows in image-id order.

``palette-dask index`` stores these arrays next to the tables
(``OUT/_index/KIND/``) in *shards* of up to :data:`SHARD_IMAGES` images, each
built from whole files of the ``palettes`` table, with the images' URIs and
``meta.json`` naming the shards, the table files each holds and the job it
was built from. Building again keeps the shards whose files are unchanged
and adds shards for the files that are new (a dataset grown by a job, or
compacted): only those are read. A search uses the index while the dataset
is the one it was built from, else it reads the tables.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import posixpath
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from fsspec.implementations.local import LocalFileSystem

from ._checks import check_int
from .color import pack_rgb
from .dataset import PaletteDataset, dataset_and_kind
from .errors import UnknownImageError
from .names import family_codes
from .options import SHARD_IMAGES
from .storage import AtomicFile, filesystem, fresh, join, write_atomic
from .tables import INDEX_FOLDER, SCHEMAS, file_span, listed_visible_files, visible_files

# Raised when the stored arrays change; an index of another format is stale.
INDEX_FORMAT = 3
# Cells of CIELAB (ΔE units) grouping rows by mean colour, and distinct colours.
MEAN_CELL = 4.0
COLOR_CELL = 8.0
# Palette colours in fixed point: CIELAB in 1/FIXED_SCALE units, int16.
FIXED_SCALE = 64
_SHARD_ARRAYS = (
    "image_id",
    "color",
    "share",
    "colors_rgb",
    "colors_lab",
    "mean_lab",
    "lab_fixed",
    "postings_start",
    "postings_row",
    "id_order",
    "mean_cell",
    "mean_cell_start",
    "color_cell",
    "color_cell_start",
)
# Shards kept mapped per process (see read_shard).
MAPPED_SHARDS = 256
_URI_SCHEMA = pa.schema([pa.field("uri", pa.large_string())])


@dataclass(frozen=True)
class Cells:
    """Items in the order of their cell of CIELAB: ``coords`` (C, 3) int16, the cells
    holding items (cell ``i`` spans ``coords[i] * size`` to ``(coords[i] + 1) * size``),
    and ``starts`` (C + 1,): cell ``i`` holds items ``starts[i]:starts[i + 1]``."""

    coords: np.ndarray
    starts: np.ndarray
    size: float

    @staticmethod
    def order(points: np.ndarray, size: float) -> tuple[np.ndarray, Cells]:
        """``(order, cells)``: the order putting ``points`` (n, 3) in cell order (stable), and
        the cells of the points so ordered."""
        coords = np.floor(np.asarray(points, np.float64) / size).astype(np.int16)
        order = np.lexsort((coords[:, 2], coords[:, 1], coords[:, 0]))
        coords = coords[order]
        change = np.r_[True, (coords[1:] != coords[:-1]).any(axis=1)] if len(coords) else []
        first = np.flatnonzero(change)
        starts = np.r_[first, len(coords)].astype(np.int64)
        return order, Cells(coords[first], starts, size)

    def distances(self, point: np.ndarray) -> np.ndarray:
        """(C,) float64: the distance from ``point`` (3,) to each cell (0 inside it)."""
        low = self.coords.astype(np.float64) * self.size
        gap = np.maximum(np.maximum(low - point, point - (low + self.size)), 0.0)
        return np.sqrt((gap * gap).sum(axis=1))

    def items(self, cells: np.ndarray) -> np.ndarray:
        """The items of ``cells`` (indexes into :attr:`coords`), cell by cell."""
        begin, end = self.starts[cells], self.starts[cells + 1]
        length = end - begin
        return np.repeat(begin - np.cumsum(length) + length, length) + np.arange(length.sum())


@dataclass(frozen=True)
class PaletteArrays:
    """Every image's palette as fixed-length rows of its colours, each an index into the
    distinct colours, shorter palettes padded with share 0.

    Attributes
    ----------
    image_id : (N,) S32 ndarray
        Image ids as ASCII bytes: a tenth of the memory of Python strings.
    color : (N, K) uint32 ndarray
        Each palette colour's row in ``colors_lab``, largest share first.
    share : (N, K) float32 ndarray
    colors_lab : (D, 3) float32 ndarray
        The distinct colours in CIELAB, as the tables hold them.
    colors_rgb : (D, 3) uint8 ndarray, optional
        The same in 8-bit sRGB, for the results' hex codes.
    uri : (N,) pyarrow string array, optional
        The images' URIs, for the results'.
    postings : tuple of ndarray, optional
        For each distinct colour ``c``, the rows holding it:
        ``rows[starts[c]:starts[c + 1]]``, as ``(starts, rows)``.
    stored_mean_lab : (N, 3) float32 ndarray, optional
        Each palette's mean colour, as an index stores it.
    lab_fixed : (N, K, 3) int16 ndarray, optional
        The palette colours in 1/:data:`FIXED_SCALE` CIELAB units.
    id_order : (N,) uint32 ndarray, optional
        The rows in image-id order.
    mean_cells, color_cells : Cells, optional
        The rows in the order of their mean colour's cell, and the distinct
        colours in the order of their cell.
    """

    image_id: np.ndarray
    color: np.ndarray
    share: np.ndarray
    colors_lab: np.ndarray
    colors_rgb: np.ndarray | None = None
    uri: pa.Array | None = None
    postings: tuple[np.ndarray, np.ndarray] | None = None
    stored_mean_lab: np.ndarray | None = None
    lab_fixed: np.ndarray | None = None
    id_order: np.ndarray | None = None
    mean_cells: Cells | None = None
    color_cells: Cells | None = None

    @classmethod
    def from_lab(cls, image_id, lab, share, rgb=None, uri=None) -> PaletteArrays:
        """From fixed-length colours ``lab`` (N, K, 3), and their ``rgb`` when known
        (colours are then told apart by their 8-bit values)."""
        lab = np.asarray(lab, dtype=np.float32)
        if rgb is None:
            _, first, color = np.unique(
                lab.reshape(-1, 3), axis=0, return_index=True, return_inverse=True
            )
            colors_rgb = None
        else:
            rgb = np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
            _, first, color = np.unique(pack_rgb(rgb), return_index=True, return_inverse=True)
            colors_rgb = rgb[first]
        share = np.asarray(share, dtype=np.float32)
        return cls(
            image_id=np.asarray(image_id),
            color=color.astype(np.uint32).reshape(share.shape),
            share=share,
            colors_lab=lab.reshape(-1, 3)[first],
            colors_rgb=colors_rgb,
            uri=uri,
        )

    @classmethod
    def from_rows(cls, image_id, rank, rgb, lab, share, uri=None) -> PaletteArrays:
        """From one kind's ``palettes`` rows as arrays: ``image_id`` (P,) S32, ``rank`` (P,),
        ``rgb`` (P, 3), ``lab`` (P, 3) and ``share`` (P,); an image's rows in rank order.

        The job writes an image's rows together, so its rows are one run; rows
        of an image found apart are put together first.
        """
        change = np.r_[True, image_id[1:] != image_id[:-1]]
        if len(np.unique(image_id[change])) != change.sum():
            order = np.lexsort((rank, image_id))
            image_id, rank, rgb, lab, share = (a[order] for a in (image_id, rank, rgb, lab, share))
            change = np.r_[True, image_id[1:] != image_id[:-1]]
        row = np.cumsum(change) - 1
        n, width = int(change.sum()), int(rank.max()) + 1 if len(rank) else 1
        rank = rank.astype(np.int64)
        fixed = {
            "lab": np.zeros((n, width, 3), np.float32),
            "rgb": np.zeros((n, width, 3), np.uint8),
            "share": np.zeros((n, width), np.float32),
        }
        fixed["lab"][row, rank], fixed["rgb"][row, rank] = lab, rgb
        fixed["share"][row, rank] = share
        return cls.from_lab(image_id[change], **fixed, uri=uri)

    def __len__(self) -> int:
        return len(self.image_id)

    def lab_of(self, rows) -> np.ndarray:
        """(…, K, 3) CIELAB colours of ``rows`` (an index or index array)."""
        return self.colors_lab[self.color[rows]]

    @functools.cached_property
    def lab(self) -> np.ndarray:
        """(N, K, 3) float32: every palette's CIELAB colours."""
        return self.lab_of(slice(None))

    @functools.cached_property
    def mean_lab(self) -> np.ndarray:
        """(N, 3): each palette's share-weighted mean colour (float64, or float32 as an index
        stores it)."""
        if self.stored_mean_lab is not None:
            return self.stored_mean_lab
        share = self.share.astype(np.float64)
        total = share.sum(axis=1, keepdims=True)
        return np.einsum("nk,nkc->nc", share / np.where(total > 0, total, 1), self.lab)

    @functools.cached_property
    def color_family(self) -> np.ndarray:
        """(D,) uint8: each distinct colour's family (see :mod:`palette_dask.names`)."""
        if self.colors_rgb is not None:
            return family_codes(self.colors_rgb)
        from .color import lab_to_rgb

        return family_codes(lab_to_rgb(self.colors_lab))

    def rows_of(self, image_id: bytes) -> np.ndarray:
        """The rows of the image ``image_id`` (none or one), through :attr:`id_order`."""
        if self.id_order is None:
            return np.flatnonzero(self.image_id == image_id)
        at = np.searchsorted(self.image_id, image_id, sorter=self.id_order)
        if at < len(self) and self.image_id[self.id_order[at]] == image_id:
            return self.id_order[at : at + 1].astype(np.int64)
        return np.zeros(0, np.int64)

    def indexed(self) -> PaletteArrays:
        """These arrays as an index holds them: rows in the order of their mean colour's
        cell, distinct colours in the order of theirs, with the postings, the stored mean
        colours, the colours in fixed point and the id order."""
        if np.abs(self.colors_lab).max(initial=0) * FIXED_SCALE >= np.iinfo(np.int16).max:
            raise ValueError("CIELAB coordinates beyond ±511 cannot be indexed")
        by_color, color_cells = Cells.order(self.colors_lab, COLOR_CELL)
        renumbered = np.empty(len(by_color), np.uint32)
        renumbered[by_color] = np.arange(len(by_color), dtype=np.uint32)
        mean = self.mean_lab.astype(np.float32)
        by_mean, mean_cells = Cells.order(mean, MEAN_CELL)
        color = renumbered[self.color[by_mean]]
        colors_lab = self.colors_lab[by_color]
        held_rows, slots = np.nonzero(self.share[by_mean] > 0)
        held = color[held_rows, slots]
        order = np.argsort(held, kind="stable")
        starts = np.searchsorted(held[order], np.arange(len(colors_lab) + 1))
        image_id = self.image_id[by_mean]
        return dataclasses.replace(
            self,
            image_id=image_id,
            color=color,
            share=self.share[by_mean],
            colors_lab=colors_lab,
            colors_rgb=None if self.colors_rgb is None else self.colors_rgb[by_color],
            uri=None if self.uri is None else self.uri.take(pa.array(by_mean)),
            postings=(starts.astype(np.int64), held_rows[order].astype(np.uint32)),
            stored_mean_lab=mean[by_mean],
            lab_fixed=np.rint(colors_lab[color] * np.float32(FIXED_SCALE)).astype(np.int16),
            id_order=np.argsort(image_id, kind="stable").astype(np.uint32),
            mean_cells=mean_cells,
            color_cells=color_cells,
        )


def _index_folder(ds: PaletteDataset, kind: str) -> str:
    return join(ds.path, INDEX_FOLDER, kind)


def _dataset_version(ds: PaletteDataset, kind: str) -> dict:
    """What an index is built from: the job's segment and end time, the palette kind."""
    job = ds.job
    return {
        "format": INDEX_FORMAT,
        "kind": kind,
        "segment": job.get("segment"),
        "finished": job.get("finished"),
    }


def build_index(
    dataset: str | PaletteDataset,
    kind: str | None = None,
    *,
    storage_options: Mapping | None = None,
    shard_images: int = SHARD_IMAGES,
) -> str:
    """Write or bring up to date the search index of a finished dataset; returns its folder.

    The ``palettes`` files an earlier build indexed, unchanged since, keep their
    shards; the others (new, or rewritten by a compaction) are read, a shard of
    about ``shard_images`` images at a time (whole files), with their images'
    URIs. ``storage_options`` open a dataset given by path (see
    :func:`palette_dask.open_dataset`).
    """
    check_int("shard_images", shard_images, 1)
    ds, kind = dataset_and_kind(dataset, kind, storage_options)
    folder = _index_folder(ds, kind)
    fs, root = filesystem(folder, ds.storage_options)
    sources = _table_files(ds, "palettes")
    meta = _index_meta(fs, root) or {}
    shards = []
    if meta.get("version", {}).get("format") == INDEX_FORMAT:
        # A shard is kept while every file it was built from is there, unchanged.
        shards = [s for s in meta["shards"] if all(sources.get(n) == st for n, st in s["sources"])]
    covered = {name for shard in shards for name, _ in shard["sources"]}
    new = [name for name in sources if name not in covered]
    for arrays, names in _new_shards(ds, kind, new, shard_images):
        files = save_shard(folder, arrays, ds.storage_options)
        shards.append(
            {"files": files, "images": len(arrays), "sources": [[n, sources[n]] for n in names]}
        )
    _save_meta(folder, shards, _dataset_version(ds, kind), ds.storage_options)
    return folder


def _table_files(ds: PaletteDataset, table: str) -> dict[str, str]:
    """The visible files of a table, in order, each with a stamp of its version (size and
    ETag or modification time)."""
    folder = join(ds.root, table)
    listed = {
        posixpath.basename(info["name"].rstrip("/")): info
        for info in ds.fs.ls(fresh(ds.fs, folder), detail=True)
    }
    stamps = {}
    for name in visible_files(listed):
        info = listed[name]
        version = info.get("ETag") or info.get("mtime") or info.get("LastModified")
        stamps[name] = f"{info.get('size')}:{version}"
    return stamps


def _new_shards(
    ds: PaletteDataset, kind: str, names: list[str], shard_images: int
) -> Iterator[tuple[PaletteArrays, list[str]]]:
    """``(arrays, files)``: the palettes of ``kind`` in the ``palettes`` files ``names``, a
    shard of whole files once it holds ``shard_images`` images."""
    images = listed_visible_files(ds.fs, join(ds.root, "images"))  # listed once per build
    group: list[str] = []
    rows: list[dict[str, np.ndarray]] = []
    for name in names:
        group.append(name)
        rows.append(_palette_rows(ds, kind, [name]))
        if sum(int((r["rank"] == 0).sum()) for r in rows) >= shard_images:
            yield _shard_of(ds, rows, group, images), group
            group, rows = [], []
    if group:
        yield _shard_of(ds, rows, group, images), group


def _shard_of(
    ds: PaletteDataset, rows: list[dict], names: list[str], images: list[str]
) -> PaletteArrays:
    arrays = PaletteArrays.from_rows(**{c: np.concatenate([r[c] for r in rows]) for c in rows[0]})
    return dataclasses.replace(arrays, uri=_uris_of(ds, arrays.image_id, names, images)).indexed()


def _palette_rows(ds: PaletteDataset, kind: str, names: list[str] | None) -> dict[str, np.ndarray]:
    """One kind's rows of some ``palettes`` files (``None``: every visible file) as the
    arguments of :meth:`PaletteArrays.from_rows`, read a record batch at a time: never the
    table's rows as Python objects."""
    if names is None:
        table = ds.arrow_dataset("palettes")
    else:
        files = [join(ds.root, "palettes", name) for name in names]
        table = pads.dataset(files, schema=SCHEMAS["palettes"], format="parquet", filesystem=ds.fs)
    columns = ["image_id", "rank", "r", "g", "b", "lab_l", "lab_a", "lab_b", "proportion"]
    scanner = table.scanner(columns=columns, filter=pc.field("palette_kind") == kind)
    parts: dict[str, list[np.ndarray]] = {
        "image_id": [np.zeros(0, "S32")],
        "rank": [np.zeros(0, np.uint8)],
        "rgb": [np.zeros((0, 3), np.uint8)],
        "lab": [np.zeros((0, 3), np.float32)],
        "share": [np.zeros(0, np.float32)],
    }
    for batch in scanner.to_batches():
        parts["image_id"].append(_fixed_ids(batch.column("image_id")))
        parts["rank"].append(batch.column("rank").to_numpy())
        parts["rgb"].append(_stacked(batch, ["r", "g", "b"]))
        parts["lab"].append(_stacked(batch, ["lab_l", "lab_a", "lab_b"]))
        parts["share"].append(batch.column("proportion").to_numpy())
    return {name: np.concatenate(p) for name, p in parts.items()}


def _fixed_ids(column: pa.Array) -> np.ndarray:
    """Image ids of an Arrow column as (n,) S32: a tenth of the memory of Python strings."""
    return column.to_numpy(zero_copy_only=False).astype("S32")


def _stacked(batch: pa.RecordBatch, names: list[str]) -> np.ndarray:
    return np.stack([batch.column(name).to_numpy() for name in names], axis=1)


def _uris_of(
    ds: PaletteDataset, image_id: np.ndarray, names: list[str], images: list[str]
) -> pa.Array:
    """The URIs of the images ``image_id`` (S32), in that order, whose palettes are in the
    ``palettes`` files ``names``: from the ``images`` files (of ``images``, the table's
    visible files) of the same partitions (the whole table for any not found there), a
    record batch at a time."""
    spans = [file_span(name) for name in names]
    same_partitions = [
        name
        for name, (_, first, last) in ((n, file_span(n)) for n in images)
        if any(first <= end and start <= last for _, start, end in spans)
    ]
    ids, uris = _image_uris(ds, same_partitions, None)
    found, missing = _positions(ids, image_id)
    if len(missing):
        ids, uris = _image_uris(ds, None, image_id)
        found, missing = _positions(ids, image_id)
    if len(missing):
        raise UnknownImageError(
            f"{ds.path}: the palettes name images its images table does not hold, such as "
            f"{missing[0].decode('ascii')}"
        )
    return uris.take(pa.array(found))


def _positions(ids: np.ndarray, image_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(found, missing)``: the position in ``ids`` of each of ``image_id``, and those of
    ``image_id`` that ``ids`` does not hold."""
    if not len(ids):
        return np.zeros(0, np.int64), image_id
    order = np.argsort(ids)
    found = order[np.minimum(np.searchsorted(ids[order], image_id), len(ids) - 1)]
    return found, image_id[ids[found] != image_id]


def _image_uris(
    ds: PaletteDataset, names: list[str] | None, image_id: np.ndarray | None
) -> tuple[np.ndarray, pa.Array]:
    """``(ids, uris)`` of the images in some ``images`` files (``names``; ``None``: every
    visible file), only those of ``image_id`` when given."""
    if names is None:
        table = ds.arrow_dataset("images")
    else:
        files = [join(ds.root, "images", name) for name in names]
        table = pads.dataset(files, schema=SCHEMAS["images"], format="parquet", filesystem=ds.fs)
    wanted = None
    if image_id is not None:
        wanted = pc.field("image_id").isin(pa.array(np.unique(image_id).astype(str)))
    scanner = table.scanner(columns=["image_id", "uri"], filter=wanted)
    ids, uris = [np.zeros(0, "S32")], [pa.array([], pa.large_string())]
    for batch in scanner.to_batches():
        ids.append(_fixed_ids(batch.column("image_id")))
        # Large strings: a collection's URIs may pass the 2 GiB of 32-bit offsets.
        uris.append(batch.column("uri").cast(pa.large_string()))
    return np.concatenate(ids), pa.concat_arrays(uris)


def save_shard(folder: str, arrays: PaletteArrays, storage_options: Mapping | None = None) -> str:
    """Store indexed ``arrays`` (with ``colors_rgb`` and ``uri``) in a new subfolder of
    ``folder``; returns its name.

    Each array is a ``.npy`` file (memory-mapped by searches on a local disk),
    the URIs an Arrow file; each file is published whole.
    """
    stored = {
        "image_id": arrays.image_id,
        "color": arrays.color,
        "share": arrays.share,
        "colors_rgb": arrays.colors_rgb,
        "colors_lab": arrays.colors_lab,
        "mean_lab": arrays.stored_mean_lab,
        "lab_fixed": arrays.lab_fixed,
        "postings_start": arrays.postings[0],
        "postings_row": arrays.postings[1],
        "id_order": arrays.id_order,
        "mean_cell": arrays.mean_cells.coords,
        "mean_cell_start": arrays.mean_cells.starts,
        "color_cell": arrays.color_cells.coords,
        "color_cell_start": arrays.color_cells.starts,
    }
    files = uuid.uuid4().hex
    for name, values in stored.items():
        with (
            AtomicFile(join(folder, files, f"{name}.npy"), storage_options) as target,
            open(target.temporary, "wb") as f,
        ):
            np.save(f, values)
    with (
        AtomicFile(join(folder, files, "uri.arrow"), storage_options) as target,
        pa.OSFile(target.temporary, "wb") as f,
        pa.ipc.new_file(f, _URI_SCHEMA) as writer,
    ):
        writer.write_table(pa.table({"uri": arrays.uri}, schema=_URI_SCHEMA))
    return files


def save_index(
    folder: str,
    shards: list[PaletteArrays],
    version: dict,
    *,
    storage_options: Mapping | None = None,
) -> None:
    """Store ``shards`` (arrays with ``colors_rgb`` and ``uri``) as the whole index in
    ``folder``, with ``version``."""
    saved = [
        {"files": save_shard(folder, s.indexed(), storage_options), "images": len(s), "sources": []}
        for s in shards
    ]
    _save_meta(folder, saved, version, storage_options)


def _save_meta(folder: str, shards: list[dict], version: dict, storage_options) -> None:
    """Name ``shards`` in ``meta.json``, then remove the files of earlier builds.

    Each build writes its shards in new folders and names them in ``meta.json``
    once all are written: a search that mapped the earlier files reads them to
    its end, and one that starts meanwhile reads them or the new ones, never a
    mix or a half-written file (one that read ``meta.json`` just before the
    earlier files go finds them gone, and fails).
    """
    meta = {"images": sum(s["images"] for s in shards), "version": version, "shards": shards}
    write_atomic(join(folder, "meta.json"), json.dumps(meta).encode(), storage_options)
    fs, root = filesystem(folder, storage_options)
    kept = {"meta.json", *(s["files"] for s in shards)}
    for entry in fs.ls(fresh(fs, root), detail=False):
        if posixpath.basename(entry.rstrip("/")) not in kept:
            fs.rm(entry, recursive=True)  # unlinked: mapped pages stay readable


def index_shards(dataset: PaletteDataset, kind: str) -> list[str] | None:
    """The folders of the index's shards, or ``None`` when there is no index or it is stale
    (built from an earlier state of the dataset, or in an earlier format)."""
    folder = _index_folder(dataset, kind)
    fs, root = filesystem(folder, dataset.storage_options)
    meta = _index_meta(fs, root)
    if meta is None or meta.get("version") != _dataset_version(dataset, kind):
        return None
    return [join(folder, shard["files"]) for shard in meta["shards"]]


def load_index(dataset: PaletteDataset, kind: str) -> list[PaletteArrays] | None:
    """The stored shards' :class:`PaletteArrays`, or ``None`` (see :func:`index_shards`)."""
    folders = index_shards(dataset, kind)
    if folders is None:
        return None
    return [read_shard(folder, dataset.storage_options) for folder in folders]


def _index_meta(fs, root: str) -> dict | None:
    """An index folder's ``meta.json``, or ``None``; read afresh, in one request."""
    try:
        with fs.open(fresh(fs, f"{root}/meta.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def read_index(folder: str, *, storage_options: Mapping | None = None) -> list[PaletteArrays]:
    """The shards stored in ``folder``; memory-mapped from a local disk, so that a search
    reads only the pages it needs."""
    fs, root = filesystem(folder, storage_options)
    meta = _index_meta(fs, root)
    return [read_shard(join(folder, s["files"]), storage_options) for s in meta["shards"]]


def read_shard(folder: str, storage_options: Mapping | None = None) -> PaletteArrays:
    """The :class:`PaletteArrays` of one shard's folder.

    A shard's files never change (a build writes new folders), so a shard on a
    local disk is mapped once per process and kept: later searches find its
    pages mapped already.
    """
    fs, root = filesystem(folder, storage_options)
    if isinstance(fs, LocalFileSystem):
        return _mapped_shard(root)
    return _read_shard(fs, root)


@functools.lru_cache(maxsize=MAPPED_SHARDS)
def _mapped_shard(root: str) -> PaletteArrays:
    return _read_shard(LocalFileSystem(), root)


def _read_shard(fs, root: str) -> PaletteArrays:
    local = isinstance(fs, LocalFileSystem)
    loaded = {}
    for name in _SHARD_ARRAYS:
        if local:
            # A plain array over the mapped pages: NumPy's memmap class slows every indexing.
            loaded[name] = np.asarray(np.load(f"{root}/{name}.npy", mmap_mode="r"))
        else:
            with fs.open(f"{root}/{name}.npy", "rb") as f:
                loaded[name] = np.load(f)
    if local:
        source = pa.memory_map(f"{root}/uri.arrow")
    else:
        with fs.open(f"{root}/uri.arrow", "rb") as f:
            source = pa.BufferReader(f.read())
    column = pa.ipc.open_file(source).read_all().column("uri")
    uri = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return PaletteArrays(
        image_id=loaded["image_id"],
        color=loaded["color"],
        share=loaded["share"],
        colors_lab=loaded["colors_lab"],
        colors_rgb=loaded["colors_rgb"],
        uri=uri,
        postings=(loaded["postings_start"], loaded["postings_row"]),
        stored_mean_lab=loaded["mean_lab"],
        lab_fixed=loaded["lab_fixed"],
        id_order=loaded["id_order"],
        mean_cells=Cells(loaded["mean_cell"], loaded["mean_cell_start"], MEAN_CELL),
        color_cells=Cells(loaded["color_cell"], loaded["color_cell_start"], COLOR_CELL),
    )


def palette_shards(ds: PaletteDataset, kind: str) -> list[PaletteArrays]:
    """The dataset's palettes as indexed :class:`PaletteArrays`: the index's shards when it
    is fresh, else one shard built from the tables."""
    return load_index(ds, kind) or [
        PaletteArrays.from_rows(**_palette_rows(ds, kind, None)).indexed()
    ]
