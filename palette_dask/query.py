"""Finding images by colour in a palette dataset.

Every image's palette becomes a fixed-length row of shares and of indexes into
the dataset's distinct colours (:class:`PaletteArrays`), scored with NumPy.
``palette-dask index`` stores these arrays next to the tables
(``OUT/_index/KIND/``), with the distinct colours' CIELAB coordinates and the
shares exactly as the tables hold them (so a search ranks as it would from
the tables), each palette's mean colour, for each distinct colour the rows
holding it, and the URIs: a search reads no table, and a colour query scores
only the rows holding a colour near one of its own, first those near all of
its own colours, which are enough when ``top`` of them hold every query
colour. Without an index the arrays are built from the tables on each
search, and every row is scored.

Colour queries
    A palette colour within ``radius`` (CIELAB ΔE 1976) of a query colour
    counts towards it, with credit falling linearly from full at distance 0 to
    none at ``radius``; an image's *coverage* of a query colour is the credited
    share of its pixels. Weights say how much of the image each colour should
    cover (equal by default): the score adds each colour's coverage up to its
    weight, so it is 1 for an image that covers every colour as asked. Images
    are ranked by how many query colours they hold (coverage of at least
    ``PRESENT_SHARE``), then by score: an image holding both colours of a
    two-colour query comes before any image holding only one.

Similar images (``like``)
    Palettes are compared by the Earth Mover's distance with a CIELAB ground
    distance: the least ΔE-weighted share that must move to turn one palette
    into the other. Two lower bounds of it prune the candidates: the distance
    between the palettes' mean colours (the mass moves at least that far on
    average), one subtraction per image, and the relaxed distance (every
    colour's share moved to the other palette's nearest colour, without
    capacities), computed for the images nearest by the first. Candidates are
    measured in order of their bound, each by a small compiled transport
    solver (:mod:`palette_dask._transport`), and the search stops as soon as
    no unmeasured image can come closer than the ``top``-th distance found: the
    result is exact.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import posixpath
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from fsspec.implementations.local import LocalFileSystem
from scipy import sparse
from scipy.optimize import linprog

from ._checks import check_int
from .color import hex_to_rgb, pack_rgb, rgb_to_hex, rgb_to_lab
from .dataset import PaletteDataset, dataset_and_kind
from .errors import UnknownImageError, UsageError
from .sources import normalize_uri
from .storage import AtomicFile, filesystem, fresh, join, write_atomic
from .tables import INDEX_FOLDER

RADIUS = 25.0
PRESENT_SHARE = 0.02
# Candidates measured per solve in a likeness search, and those it bounds in
# each round (the first: the nearest by mean colour).
LIKE_BATCH = 256
LIKE_ROUND = 4096
# Bounds are computed in float64 and distances rounded to 1e-9: a candidate is
# dropped only when its bound passes the distance to beat by more than this.
BOUND_TOLERANCE = 1e-6
# Fewer rows than this per thread are scored in the calling thread alone.
MIN_ROWS_PER_THREAD = 8192
_INDEX_ARRAYS = (
    "image_id",
    "color",
    "share",
    "colors_rgb",
    "colors_lab",
    "mean_lab",
    "postings_start",
    "postings_row",
)
_URI_SCHEMA = pa.schema([pa.field("uri", pa.large_string())])
# Raised when the stored arrays change; an index of another format is stale.
INDEX_FORMAT = 2
# Mean colours are stored in float32, within this of the float64 ones: the
# mean-colour bound gives this much away, so it never passes a distance.
MEAN_SLACK = 1e-3


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
        ``rows[starts[c]:starts[c + 1]]``, as ``(starts, rows)``. A colour
        query then visits only the rows holding a colour near one of its own.
    """

    image_id: np.ndarray
    color: np.ndarray
    share: np.ndarray
    colors_lab: np.ndarray
    colors_rgb: np.ndarray | None = None
    uri: pa.Array | None = None
    postings: tuple[np.ndarray, np.ndarray] | None = None
    stored_mean_lab: np.ndarray | None = None

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
    def from_rows(cls, image_id, rank, rgb, lab, share) -> PaletteArrays:
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
        return cls.from_lab(image_id[change], **fixed)

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
        stores it, within :data:`MEAN_SLACK`)."""
        if self.stored_mean_lab is not None:
            return self.stored_mean_lab
        share = self.share.astype(np.float64)
        total = share.sum(axis=1, keepdims=True)
        return np.einsum("nk,nkc->nc", share / np.where(total > 0, total, 1), self.lab)

    def with_postings(self) -> PaletteArrays:
        """These arrays with their :attr:`postings` and stored mean colours, as an index
        holds them."""
        rows, slots = np.nonzero(self.share > 0)
        held = self.color[rows, slots]
        order = np.argsort(held, kind="stable")
        starts = np.searchsorted(held[order], np.arange(len(self.colors_lab) + 1))
        return dataclasses.replace(
            self,
            postings=(starts.astype(np.int64), rows[order].astype(np.uint32)),
            stored_mean_lab=self.mean_lab.astype(np.float32),
        )


def _index_folder(ds: PaletteDataset, kind: str) -> str:
    return join(ds.path, INDEX_FOLDER, kind)


def _dataset_version(ds: PaletteDataset) -> dict:
    """What the index was built from: the job's segment and end time."""
    job = ds.job
    return {"segment": job.get("segment"), "finished": job.get("finished")}


def build_index(
    dataset: str | PaletteDataset,
    kind: str | None = None,
    *,
    storage_options: Mapping | None = None,
) -> str:
    """Write the search index of a finished dataset; returns its folder.

    The index holds :class:`PaletteArrays` with the images' URIs (see
    :func:`save_index`) and the job version it was built from; a dataset grown
    later makes it stale, and search then ignores it until it is built again.
    ``storage_options`` open a dataset given by path (see
    :func:`palette_dask.open_dataset`).
    """
    ds, kind = dataset_and_kind(dataset, kind, storage_options)
    folder = _index_folder(ds, kind)
    arrays = _arrays_from_tables(ds, kind)
    arrays = dataclasses.replace(arrays, uri=_uris_of(ds, arrays.image_id))
    save_index(
        folder, arrays, {"kind": kind, **_dataset_version(ds)}, storage_options=ds.storage_options
    )
    return folder


def save_index(
    folder: str, arrays: PaletteArrays, version: dict, *, storage_options: Mapping | None = None
) -> None:
    """Store ``arrays`` (with ``colors_rgb`` and ``uri``) in ``folder``, with ``version``.

    Each palette colour is stored as an index into the distinct colours, whose
    8-bit sRGB and CIELAB values are stored once, shares in 32-bit floats as
    the tables hold them, and with them each palette's mean colour and, for
    each distinct colour, the rows holding it. The URIs go in an Arrow file.
    """
    indexed = arrays.with_postings()
    stored = {
        "image_id": indexed.image_id,
        "color": indexed.color,
        "share": indexed.share,
        "colors_rgb": indexed.colors_rgb,
        "colors_lab": indexed.colors_lab,
        "mean_lab": indexed.stored_mean_lab,
        "postings_start": indexed.postings[0],
        "postings_row": indexed.postings[1],
    }
    # A new folder of files each time, named in meta.json once all are written: a
    # search that mapped the earlier files reads them to its end, and one that starts
    # meanwhile reads them or the new ones, never a mix or a half-written file (one
    # that read meta.json just before the earlier files go finds them gone, and fails).
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
    meta = {"images": len(arrays), "version": {"format": INDEX_FORMAT, **version}, "files": files}
    write_atomic(join(folder, "meta.json"), json.dumps(meta).encode(), storage_options)
    fs, root = filesystem(folder, storage_options)
    for entry in fs.ls(fresh(fs, root), detail=False):
        if posixpath.basename(entry.rstrip("/")) not in ("meta.json", files):
            fs.rm(entry, recursive=True)  # unlinked: mapped pages stay readable


def load_index(dataset: PaletteDataset, kind: str) -> PaletteArrays | None:
    """The stored :class:`PaletteArrays`, or ``None`` when there is none or it is stale
    (built from an earlier state of the dataset, or in an earlier format)."""
    fs, root = filesystem(_index_folder(dataset, kind), dataset.storage_options)
    meta = _index_meta(fs, root)
    expected = {"format": INDEX_FORMAT, "kind": kind, **_dataset_version(dataset)}
    if meta is None or meta.get("version") != expected:
        return None
    return _read_files(fs, f"{root}/{meta['files']}")


def _index_meta(fs, root: str) -> dict | None:
    """An index folder's ``meta.json``, or ``None``; read afresh, in one request."""
    try:
        with fs.open(fresh(fs, f"{root}/meta.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def read_index(folder: str, *, storage_options: Mapping | None = None) -> PaletteArrays:
    """The :class:`PaletteArrays` stored in ``folder``; memory-mapped from a local disk, so
    that a search reads only the pages it needs."""
    fs, root = filesystem(folder, storage_options)
    return _read_files(fs, f"{root}/{_index_meta(fs, root)['files']}")


def _read_files(fs, root: str) -> PaletteArrays:
    """The :class:`PaletteArrays` in one build's folder of index files."""
    local = isinstance(fs, LocalFileSystem)
    loaded = {}
    for name in _INDEX_ARRAYS:
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
    )


def _arrays_from_tables(ds: PaletteDataset, kind: str) -> PaletteArrays:
    """One kind's palettes, read a record batch at a time: the arrays, never the table's
    rows as Python objects."""
    columns = ["image_id", "rank", "r", "g", "b", "lab_l", "lab_a", "lab_b", "proportion"]
    scanner = ds.arrow_dataset("palettes").scanner(
        columns=columns, filter=pc.field("palette_kind") == kind
    )
    parts: dict[str, list[np.ndarray]] = {
        "image_id": [],
        "rank": [],
        "rgb": [],
        "lab": [],
        "share": [],
    }
    for batch in scanner.to_batches():
        parts["image_id"].append(_fixed_ids(batch.column("image_id")))
        parts["rank"].append(batch.column("rank").to_numpy())
        parts["rgb"].append(_stacked(batch, ["r", "g", "b"]))
        parts["lab"].append(_stacked(batch, ["lab_l", "lab_a", "lab_b"]))
        parts["share"].append(batch.column("proportion").to_numpy())
    if not parts["image_id"]:
        empty = np.zeros((0, 3))
        return PaletteArrays.from_rows(
            np.zeros(0, "S32"), np.zeros(0, np.uint8), empty, empty, np.zeros(0)
        )
    return PaletteArrays.from_rows(**{name: np.concatenate(p) for name, p in parts.items()})


def _fixed_ids(column: pa.Array) -> np.ndarray:
    """Image ids of an Arrow column as (n,) S32: a tenth of the memory of Python strings."""
    return column.to_numpy(zero_copy_only=False).astype("S32")


def _stacked(batch: pa.RecordBatch, names: list[str]) -> np.ndarray:
    return np.stack([batch.column(name).to_numpy() for name in names], axis=1)


def _uris_of(ds: PaletteDataset, image_id: np.ndarray) -> pa.Array:
    """The URIs of the images ``image_id`` (S32), in that order, from the ``images`` table
    read a record batch at a time."""
    ids, uris = [], []
    for batch in ds.arrow_dataset("images").scanner(columns=["image_id", "uri"]).to_batches():
        ids.append(_fixed_ids(batch.column("image_id")))
        # Large strings: a collection's URIs may pass the 2 GiB of 32-bit offsets.
        uris.append(batch.column("uri").cast(pa.large_string()))
    ids = np.concatenate(ids) if ids else np.zeros(0, "S32")
    order = np.argsort(ids)
    found = order[np.minimum(np.searchsorted(ids[order], image_id), max(len(ids) - 1, 0))]
    missing = image_id[ids[found] != image_id] if len(ids) else image_id
    if len(missing):
        raise UnknownImageError(
            f"{ds.path}: the palettes name images its images table does not hold, such as "
            f"{missing[0].decode('ascii')}"
        )
    return pa.concat_arrays(uris).take(pa.array(found)) if uris else pa.array([], pa.large_string())


def palette_arrays(ds: PaletteDataset, kind: str) -> PaletteArrays:
    """The dataset's :class:`PaletteArrays`: from its index when fresh, else from the tables."""
    return load_index(ds, kind) or _arrays_from_tables(ds, kind)


def coverage(arrays: PaletteArrays, query_lab: np.ndarray, radius: float = RADIUS) -> np.ndarray:
    """(N, J) share of each image credited to each query colour (linear falloff to ``radius``).

    Examples
    --------
    >>> arrays = PaletteArrays.from_lab(np.array([b"a"]), np.array([[[50.0, 0, 0], [90, 0, 0]]]),
    ...                                 np.array([[0.7, 0.3]]))
    >>> print(coverage(arrays, np.array([[50.0, 0, 0], [60, 0, 0]]), radius=20).round(3))
    [[0.7  0.35]]
    """
    return _coverage(arrays.lab, arrays.share, np.asarray(query_lab, np.float32), radius)


def _coverage(lab, share, query_lab, radius) -> np.ndarray:
    """:func:`coverage` of the palettes ``lab`` (n, K, 3), ``share`` (n, K).

    Element by element, and summed over each palette's colours in order, so
    that a palette's coverage is the same to the bit whichever rows are
    scored with it: a search over candidates ranks as a scan of all rows.
    """
    credit = _credit(lab, query_lab, radius)
    return (share[:, :, None] * credit).sum(axis=1)


def _credit(lab, query_lab, radius) -> np.ndarray:
    """(…, J) credit of colours ``lab`` (…, 3) for each query colour, in float32."""
    distance = np.sqrt(_squared_distances(lab, query_lab))
    return np.clip(1.0 - distance / np.float32(radius), 0.0, None)


def _squared_distances(lab, query_lab) -> np.ndarray:
    """(…, J) squared distances of colours ``lab`` (…, 3) to each query colour (J, 3)."""
    step = lab[..., None, 0] - query_lab[:, 0]
    squared = step * step
    for axis in (1, 2):
        step = lab[..., None, axis] - query_lab[:, axis]
        squared += step * step
    return squared


def _in_threads(function: Callable, rows: np.ndarray, threads: int) -> np.ndarray:
    """``function(rows)``, computed on ``threads`` slices of ``rows`` at once and put back
    in order; each row's result is computed alone, so it is the same whatever the threads."""
    if threads <= 1 or len(rows) < threads * MIN_ROWS_PER_THREAD:
        return function(rows)
    with ThreadPoolExecutor(threads) as pool:
        return np.concatenate(list(pool.map(function, np.array_split(rows, threads))))


def default_threads() -> int:
    """Every core this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _candidate_levels(arrays: PaletteArrays, query_lab, radius) -> Iterator[tuple[int, np.ndarray]]:
    """``(level, rows)``: the rows that may hold ``level`` query colours or more, level by
    level from all of them down to one.

    With :attr:`~PaletteArrays.postings`, a row may hold a query colour only if
    it holds a colour that query colour credits, so the first rows are few:
    those holding colours near every query colour. Without, every row at once
    (level 0).
    """
    if arrays.postings is None:
        yield 0, np.arange(len(arrays))
        return
    near = np.zeros(len(arrays), dtype=np.uint8)
    for color in query_lab:
        near += _rows_near(arrays, color[None], radius)
    for level in range(len(query_lab), 0, -1):
        yield level, np.flatnonzero(near >= level)


def _rows_near(arrays: PaletteArrays, query_lab, radius) -> np.ndarray:
    """(N,) bool: the rows holding a colour some query colour credits (and a few holding
    one just on the border, credited 0), found through the postings."""
    reach = np.float32(radius) * np.float32(1 + 1e-4)
    near = np.flatnonzero((_squared_distances(arrays.colors_lab, query_lab) < reach**2).any(axis=1))
    starts, rows = arrays.postings
    begin, length = starts[near], starts[near + 1] - starts[near]
    # The postings of every near colour, gathered in one pass.
    offsets = np.repeat(begin - np.cumsum(length) + length, length) + np.arange(length.sum())
    held = np.zeros(len(arrays), dtype=bool)
    held[rows[offsets]] = True
    return held


def earth_movers_distance(lab_a, share_a, lab_b, share_b) -> float:
    """Earth Mover's distance between two palettes, CIELAB ΔE as ground distance.

    Shares are normalised to sum to 1 each.

    Examples
    --------
    >>> earth_movers_distance([[50, 0, 0]], [1.0], [[50, 0, 0], [60, 0, 0]], [0.5, 0.5])
    5.0
    """
    lab_b, share_b = np.asarray(lab_b, float), np.asarray(share_b, float)
    return float(earth_movers_distances(lab_a, share_a, lab_b[None], share_b[None])[0])


def earth_movers_distances(lab_a, share_a, labs_b, shares_b) -> np.ndarray:
    """(M,) Earth Mover's distances from one palette to each of ``M`` others.

    ``labs_b`` is (M, K, 3) and ``shares_b`` (M, K); colours with share 0 are
    padding. Each pair is solved by the compiled transportation simplex
    (:func:`palette_dask._transport.palette_distances`); a pair it leaves
    unsolved (degenerate pivots up to its iteration cap) by the HiGHS linear
    program solver. Rounded to 1e-9, so that equal distances compare equal
    whichever solver measured them.
    """
    from ._transport import palette_distances  # numba, loaded by likeness searches only

    lab_a, share_a = _float64(lab_a), _float64(share_a)
    labs_b, shares_b = _float64(labs_b), _float64(shares_b)
    distances = palette_distances(lab_a, share_a, labs_b, shares_b)
    unsolved = np.flatnonzero(np.isnan(distances))
    if len(unsolved):
        distances[unsolved] = _linear_program_distances(
            lab_a, share_a, labs_b[unsolved], shares_b[unsolved]
        )
    return np.round(distances, 9)


def _float64(values) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float64)


def _linear_program_distances(lab_a, share_a, labs_b, shares_b) -> np.ndarray:
    """:func:`earth_movers_distances` as one linear program of independent blocks: minimising
    their sum minimises each."""
    share_a = share_a / share_a.sum()
    shares_b = shares_b / shares_b.sum(axis=1, keepdims=True)
    n_pairs, k = shares_b.shape
    n = len(share_a)
    cost = np.sqrt(((lab_a[None, :, None, :] - labs_b[:, None, :, :]) ** 2).sum(axis=3))
    # One block: flow f[i, j] >= 0 from colour i of a to colour j of b; each
    # colour sends (rows) or receives (columns) exactly its share.
    block = sparse.vstack(
        [sparse.kron(sparse.eye(n), np.ones((1, k))), sparse.kron(np.ones((1, n)), sparse.eye(k))]
    )
    supply = np.concatenate([np.broadcast_to(share_a, (n_pairs, n)), shares_b], axis=1)
    solved = linprog(
        cost.reshape(-1),
        A_eq=sparse.kron(sparse.eye(n_pairs), block, format="csr"),
        b_eq=supply.reshape(-1),
        bounds=(0, None),
        method="highs",
    )
    flows = solved.x.reshape(n_pairs, n * k)
    return (flows * cost.reshape(n_pairs, -1)).sum(axis=1)


def _query_colors(colors: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    codes = [c if c.startswith("#") else f"#{c}" for c in colors]
    rgb = np.stack([hex_to_rgb(code) for code in codes]).astype(np.uint8)
    return rgb_to_lab(rgb).astype(np.float32), rgb_to_hex(rgb)


def color_ranking(
    arrays: PaletteArrays, colors, weights=None, top: int = 20, radius=RADIUS, threads: int = 1
):
    """Rank the rows of ``arrays`` for a colour query, scored in ``threads`` threads; see
    :func:`search`.

    Returns ``(rows, score, matched, matching)``: the top rows, their scores,
    how many query colours each holds, and the ranks of their palette colours
    that count for the query.
    """
    query_lab, codes = _query_colors(colors)
    if weights is None:
        weights = np.full(len(codes), 1.0 / len(codes))
    else:
        weights = np.asarray(weights, dtype=np.float64)
        if len(weights) != len(codes) or (weights <= 0).any():
            raise UsageError("give one positive weight per colour, or none")
        weights = weights / weights.sum()
    for level, rows in _candidate_levels(arrays, query_lab, radius):
        covered = _in_threads(
            lambda part: _coverage(arrays.lab_of(part), arrays.share[part], query_lab, radius),
            rows,
            threads,
        )
        score = np.minimum(covered, weights).sum(axis=1)
        matched = (covered >= PRESENT_SHARE).sum(axis=1)
        # Rows holding fewer query colours rank below these: they can wait.
        if (matched >= level).sum() >= top:
            break
    held = np.flatnonzero(matched >= max(level, 1))
    ranked = held[np.lexsort((arrays.image_id[rows[held]], -score[held], -matched[held]))][:top]
    matching = []
    for i in rows[ranked]:
        # The image's palette colours that counted towards some query colour.
        credited = (_credit(arrays.lab_of(i), query_lab, radius) > 0).any(axis=1)
        matching.append(np.flatnonzero(credited & (arrays.share[i] > 0)))
    return rows[ranked], score[ranked], matched[ranked], matching


def relaxed_distance(arrays: PaletteArrays, reference: int) -> np.ndarray:
    """(N,) lower bound of each palette's Earth Mover's distance to row ``reference``.

    The larger of the two relaxations: each palette's shares moved to the other
    palette's nearest colour, with no limit on what a colour receives.
    """
    return _relaxed(arrays, np.arange(len(arrays)), reference)


def _relaxed(arrays: PaletteArrays, rows: np.ndarray, reference: int) -> np.ndarray:
    """:func:`relaxed_distance` of ``rows``, in float64, so that it never passes the
    distance by a rounding."""
    from ._transport import relaxed_bounds  # numba, loaded by likeness searches only

    return relaxed_bounds(
        np.asarray(rows, dtype=np.int64),
        arrays.color,
        arrays.share,
        arrays.colors_lab,
        _float64(arrays.lab_of(reference)),
        _float64(arrays.share[reference]),
    )


def _like_ranking(arrays, reference: int, top: int, threads: int = 1):
    """The ``top`` palettes nearest the ``reference`` row by Earth Mover's distance, exactly.

    First the images nearest by mean colour (:data:`LIKE_ROUND` of them, or
    16 × ``top``), which gives a ``top``-th distance to beat; then the others
    whose mean-colour bound does not pass it, nearest first, a round at a time
    while the bound of the next can still beat the ``top``-th distance found.
    Each round is measured in the order of the larger of the two bounds.
    """
    means = arrays.mean_lab
    gap = means - means[reference]
    mean_bound = np.sqrt((gap.astype(np.float64) ** 2).sum(axis=1))
    if arrays.stored_mean_lab is not None:
        mean_bound -= MEAN_SLACK
    size = max(16 * top, LIKE_ROUND)
    if size >= len(arrays):
        everything = np.arange(len(arrays))
        best = _nearest_of(arrays, reference, everything, mean_bound, [], top, threads)
        return _ranked(arrays, best)
    nearest = np.argpartition(mean_bound, size)
    first, rest = nearest[:size], nearest[size:]
    best = _nearest_of(arrays, reference, first, mean_bound[first], [], top, threads)
    rest = rest[mean_bound[rest] <= best[-1][0] + BOUND_TOLERANCE]
    rest = rest[np.argsort(mean_bound[rest], kind="stable")]
    for start in range(0, len(rest), LIKE_ROUND):
        rows = rest[start : start + LIKE_ROUND]
        rows = rows[mean_bound[rows] <= best[-1][0] + BOUND_TOLERANCE]
        if not len(rows):
            break  # the bounds only grow from here
        best = _nearest_of(arrays, reference, rows, mean_bound[rows], best, top, threads)
    return _ranked(arrays, best)


def _ranked(arrays, best: list):
    order = np.array([i for _, _, i in best], dtype=np.int64)
    matching = [np.flatnonzero(arrays.share[i] > 0) for i in order]
    return order, np.array([d for d, _, _ in best]), matching


def _nearest_of(
    arrays, reference: int, rows: np.ndarray, lower: np.ndarray, best: list, top: int, threads=1
):
    """``best`` (distance, image id, row), the ``top`` nearest so far, updated with ``rows``,
    whose distances are at least ``lower``; bounds computed in ``threads`` threads."""
    share, reference_lab = arrays.share, arrays.lab_of(reference)
    bound = np.maximum(
        lower, _in_threads(lambda part: _relaxed(arrays, part, reference), rows, threads)
    )
    order = np.argsort(bound)  # ties are settled in ``best``, by image id
    rows, bound = rows[order], bound[order]
    batch = max(top, LIKE_BATCH)
    for start in range(0, len(rows), batch):
        if len(best) == top and bound[start] > best[-1][0] + BOUND_TOLERANCE:
            break  # no later candidate can come closer than the top ones
        chosen = rows[start : start + batch]
        distances = earth_movers_distances(
            reference_lab, share[reference], arrays.lab_of(chosen), share[chosen]
        )
        best += [(d, arrays.image_id[i], int(i)) for d, i in zip(distances, chosen, strict=True)]
        best.sort()
        del best[top:]
    return best


def _reference_row(ds: PaletteDataset, arrays: PaletteArrays, like: str, kind: str) -> int:
    """The row of the image ``like`` names (image id or URI): found in the index's ids and
    URIs when it has them, else through the ``images`` table."""
    if arrays.uri is not None:
        hits = np.flatnonzero(arrays.image_id == like.encode("ascii", "replace"))
        if not len(hits):
            named = pc.is_in(arrays.uri, pa.array([like, normalize_uri(like)]))
            hits = np.flatnonzero(named.to_numpy(zero_copy_only=False))
        if len(hits):
            return int(hits[0])
    (reference,) = ds.find_images([like])  # an unknown image is an UnknownImageError
    where = np.flatnonzero(arrays.image_id == reference.encode("ascii"))
    if not len(where):
        raise UsageError(f"{like} has no {kind} palette in {ds.path}")
    return int(where[0])


def search(
    dataset: str | PaletteDataset,
    *,
    colors: Sequence[str] | None = None,
    weights: Sequence[float] | None = None,
    like: str | None = None,
    top: int = 20,
    kind: str | None = None,
    radius: float = RADIUS,
    threads: int | None = None,
    storage_options: Mapping | None = None,
) -> pd.DataFrame:
    """Images of a dataset ranked by colour, or by likeness to one of its images.

    Parameters
    ----------
    dataset : str or PaletteDataset
    colors : list of str, optional
        Query colours as hex codes (``"#1565a1"``).
    weights : list of float, optional
        How much of the image each colour should cover, relative to each other.
    like : str, optional
        An image of the dataset (image id or URI): rank the others by how close
        their palettes are to its palette. Exactly one of ``colors`` and
        ``like`` is needed.
    top : int
    kind : {"image", "corpus"}, optional
        The palettes searched; default: the dataset's own.
    radius : float
        CIELAB distance at which a palette colour stops counting for a query colour.
    threads : int, optional
        Threads scoring the candidates (default: one per core). The results are
        the same whatever their number.
    storage_options : dict, optional
        fsspec options of a dataset given by URL (see :func:`palette_dask.open_dataset`).

    Returns
    -------
    pandas.DataFrame
        ``image_id``, ``uri``, ``score`` (colour queries: 0–1, higher is better;
        ``like``: the Earth Mover's distance, lower is better), ``matched``
        (query colours held; colour queries only) and ``colors`` (the hex codes
        of the image's palette colours that matched).
    """
    if (colors is None) == (like is None):
        raise UsageError("search by `colors` or by `like`, one of the two")
    if threads is None:
        threads = default_threads()
    check_int("threads", threads, 1)
    ds, kind = dataset_and_kind(dataset, kind, storage_options)
    arrays = palette_arrays(ds, kind)
    if colors is not None:
        if not colors:
            raise UsageError("give at least one colour")
        order, score, matched, matching = color_ranking(
            arrays, colors, weights, top, radius, threads
        )
    else:
        reference = _reference_row(ds, arrays, like, kind)
        order, score, matching = _like_ranking(arrays, reference, top, threads)
        matched = None
    ids = [image_id.decode("ascii") for image_id in arrays.image_id[order].tolist()]
    if arrays.uri is not None:
        uris = arrays.uri.take(pa.array(order, pa.int64())).to_pylist()
    else:
        found = ds.uris(ids)
        uris = [found[i] for i in ids]
    result = pd.DataFrame(
        {"image_id": ids, "uri": uris, "score": np.asarray(score, dtype=np.float64)}
    )
    if matched is not None:
        result["matched"] = np.asarray(matched, dtype=np.int64)
    # Positions in the arrays are palette ranks.
    result["colors"] = [
        rgb_to_hex(arrays.colors_rgb[arrays.color[row, ranks]]) if len(ranks) else []
        for row, ranks in zip(order, matching, strict=True)
    ]
    return result
