"""Finding images by colour in a palette dataset.

A search runs over :class:`~palette_dask.index.PaletteArrays` shards: the
index's (:mod:`palette_dask.index`) when it is fresh, else one built from the
tables. Each shard gives its own top results, exactly ranked; their merge is
the search's result. Shards are searched one after the other in this process,
each over ``threads`` threads, or as tasks of a Dask cluster (``scheduler``),
where every worker reads its shard from the dataset's storage.

Colour queries
    A palette colour within ``radius`` (CIELAB ΔE 1976) of a query colour
    counts towards it, with credit falling linearly from full at distance 0 to
    none at ``radius``; an image's *coverage* of a query colour is the credited
    share of its pixels. Weights say how much of the image each colour should
    cover (equal by default): the score adds each colour's coverage up to its
    weight, so it is 1 for an image that covers every colour as asked. Images
    are ranked by how many query colours they hold (coverage of at least
    ``PRESENT_SHARE``), then by score, then by image id: an image holding both
    colours of a two-colour query comes before any image holding only one. A
    shard finds the distinct colours near each query colour through its colour
    cells, and scores only the rows holding one (through the postings), first
    those near every query colour, which are enough when ``top`` of them hold
    every query colour.

Similar images (``like``)
    Palettes are compared by the Earth Mover's distance with a CIELAB ground
    distance: the least ΔE-weighted share that must move to turn one palette
    into the other. Two lower bounds of it prune the candidates: the distance
    between the palettes' mean colours (the mass moves at least that far on
    average) and the relaxed distance (every colour's share moved to the other
    palette's nearest colour, without capacities). A shard walks its cells of
    mean colours outward from the reference's, bounds the rows of the nearest
    cells, measures those whose bound can still beat the ``top``-th distance
    found with a small compiled transport solver
    (:mod:`palette_dask._transport`), and stops when the next cell is farther
    than that distance: the result is exact.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import sparse
from scipy.optimize import linprog

from ._checks import check_int
from .color import hex_to_rgb, rgb_to_hex, rgb_to_lab
from .dataset import PaletteDataset, dataset_and_kind
from .errors import UsageError
from .index import FIXED_SCALE, PaletteArrays, index_shards, palette_shards, read_shard
from .names import family_of_name
from .sources import image_id

RADIUS = 25.0
PRESENT_SHARE = 0.02
# Candidates measured per solve in a likeness search, and the rows of the
# nearest cells measured first, for a distance to beat (at least 16 × top).
LIKE_BATCH = 256
LIKE_ROUND = 4096
# Bounds are computed in float64 and distances rounded to 1e-9: a candidate is
# dropped only when its bound passes the distance to beat by more than this.
BOUND_TOLERANCE = 1e-6
# Fewer rows than this per thread are scored in the calling thread alone.
MIN_ROWS_PER_THREAD = 8192
# Mean colours are stored in float32, within this of the float64 ones: the
# mean-colour bound gives this much away, so it never passes a distance.
MEAN_SLACK = 1e-3
# The relaxed bound reads colours in fixed point, each within this of its
# stored value (half a unit per axis): it gives this much away.
FIXED_SLACK = float(np.sqrt(3) * 0.5 / FIXED_SCALE) + 1e-6


def coverage(arrays: PaletteArrays, query_lab: np.ndarray, radius: float = RADIUS) -> np.ndarray:
    """(N, J) share of each image credited to each query colour (linear falloff to ``radius``).

    Examples
    --------
    >>> arrays = PaletteArrays.from_lab(np.array([b"a"]), np.array([[[50.0, 0, 0], [90, 0, 0]]]),
    ...                                 np.array([[0.7, 0.3]]))
    >>> print(coverage(arrays, np.array([[50.0, 0, 0], [60, 0, 0]]), radius=20).round(3))
    [[0.7  0.35]]
    """
    query_lab = np.asarray(query_lab, np.float32)
    return _coverage(
        arrays, np.arange(len(arrays)), (query_lab, np.full(len(query_lab), -1)), radius
    )


def _coverage(arrays: PaletteArrays, rows: np.ndarray, query, radius) -> np.ndarray:
    """:func:`coverage` of ``rows``, by a compiled loop: each row alone, summed over its
    palette's colours in order, so that a palette's coverage is the same to the bit
    whichever rows are scored with it (a search over candidates ranks as a scan of all
    rows)."""
    from ._color_loops import coverage_of  # numba, loaded by colour queries only

    families = arrays.color_family if (query[1] >= 0).any() else None
    return coverage_of(rows, arrays.color, arrays.share, arrays.colors_lab, query, radius, families)


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


def _candidate_levels(arrays: PaletteArrays, query, radius) -> Iterator[tuple[int, np.ndarray]]:
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
    from ._color_loops import near_bits, rows_with  # numba, loaded by searches over postings

    near = [
        np.flatnonzero(arrays.color_family == family)
        if family >= 0
        else _colors_near(arrays, color, radius)
        for color, family in zip(*query, strict=True)
    ]
    bits = near_bits(arrays.postings, near, len(arrays))
    for level in range(len(query[0]), 0, -1):
        yield level, rows_with(bits, level)


def _colors_near(arrays: PaletteArrays, query_color: np.ndarray, radius) -> np.ndarray:
    """The distinct colours ``query_color`` may credit (and a few just on the border,
    credited 0): found in the colour cells within reach of it."""
    reach = np.float32(radius) * np.float32(1 + 1e-4)
    cells = arrays.color_cells
    within = np.flatnonzero(cells.distances(query_color.astype(np.float64)) <= float(reach) + 1e-3)
    colors = cells.items(within)
    squared = _squared_distances(arrays.colors_lab[colors], query_color[None])[:, 0]
    return colors[squared < reach**2]


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


def color_ranking(
    arrays: PaletteArrays, colors, weights=None, top: int = 20, radius=RADIUS, threads: int = 1
):
    """Rank the rows of ``arrays`` for a colour query, scored in ``threads`` threads; see
    :func:`search`.

    Returns ``(rows, score, matched, matching)``: the top rows, their scores,
    how many query colours each holds, and the ranks of their palette colours
    that count for the query.
    """
    query, weights = _color_query(colors, weights)
    for level, rows in _candidate_levels(arrays, query, radius):
        covered = _in_threads(lambda part: _coverage(arrays, part, query, radius), rows, threads)
        score = np.minimum(covered, weights).sum(axis=1)
        matched = (covered >= PRESENT_SHARE).sum(axis=1)
        # Rows holding fewer query colours rank below these: they can wait.
        if (matched >= level).sum() >= top:
            break
    held = np.flatnonzero(matched >= max(level, 1))
    # Matched colours, then score, in one exact float64 key (a score is at most 1):
    # only rows reaching the top-th key need their ids compared.
    key = matched[held] * 4.0 + score[held]
    if len(held) > top:
        held = held[key >= np.partition(key, len(key) - top)[len(key) - top]]
    ranked = held[np.lexsort((arrays.image_id[rows[held]], -score[held], -matched[held]))][:top]
    matching = []
    for i in rows[ranked]:
        # The image's palette colours that counted towards some query colour.
        credited = _credited(arrays, i, query, radius)
        matching.append(np.flatnonzero(credited & (arrays.share[i] > 0)))
    return rows[ranked], score[ranked], matched[ranked], matching


def _color_query(colors, weights) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """``((lab, family), weights)``: the query colours in CIELAB (J, 3) float32 and their
    family codes (J,) (-1 for a hex code; a family or CSS name gives its family, see
    :mod:`palette_dask.names`), and their weights, summing to 1."""
    lab = np.zeros((len(colors), 3), np.float32)
    family = np.full(len(colors), -1, np.int64)
    for at, color in enumerate(colors):
        named = family_of_name(color)
        if named is not None:
            family[at] = named
        else:
            code = color if color.startswith("#") else f"#{color}"
            lab[at] = rgb_to_lab(hex_to_rgb(code)[None].astype(np.uint8))[0]
    if weights is None:
        return (lab, family), np.full(len(colors), 1.0 / len(colors))
    weights = np.asarray(weights, dtype=np.float64)
    if len(weights) != len(colors) or (weights <= 0).any():
        raise UsageError("give one positive weight per colour, or none")
    return (lab, family), weights / weights.sum()


def _credited(arrays: PaletteArrays, row: int, query, radius) -> np.ndarray:
    """(K,) bool: the palette colours of ``row`` that some query colour credits."""
    query_lab, query_family = query
    by_color = _credit(arrays.lab_of(row), query_lab, radius) > 0
    if (query_family >= 0).any():
        of_family = arrays.color_family[arrays.color[row]][:, None] == query_family
        by_color = np.where(query_family >= 0, of_family, by_color)
    return by_color.any(axis=1)


def relaxed_distance(arrays: PaletteArrays, reference: int) -> np.ndarray:
    """(N,) lower bound of each palette's Earth Mover's distance to row ``reference`` of
    indexed arrays (see :meth:`~palette_dask.index.PaletteArrays.indexed`).

    The larger of the mean-colour bound and the two relaxations: each
    palette's shares moved to the other palette's nearest colour, with no limit
    on what a colour receives.
    """
    return _bounds(
        arrays, np.arange(len(arrays)), reference=Reference.of(arrays, reference), beat=np.inf
    )


@dataclass(frozen=True)
class Reference:
    """The palette a likeness search compares with: its colours ``lab`` (K, 3), ``share``
    (K,) and mean colour ``mean`` (3,) as an index stores it, all float64."""

    lab: np.ndarray
    share: np.ndarray
    mean: np.ndarray

    @classmethod
    def of(cls, arrays: PaletteArrays, row: int) -> Reference:
        return cls(
            _float64(arrays.lab_of(row)),
            _float64(arrays.share[row]),
            _float64(arrays.mean_lab[row]),
        )


def _bounds(arrays: PaletteArrays, rows: np.ndarray, *, reference: Reference, beat: float):
    """Lower bounds of the distances of ``rows`` to ``reference``, in float64 so that they
    never pass a distance by a rounding: the relaxed one only where the mean-colour one
    does not pass ``beat``."""
    from ._transport import likeness_bounds  # numba, loaded by likeness searches only

    return likeness_bounds(
        np.asarray(rows, dtype=np.int64),
        arrays.mean_lab,
        arrays.lab_fixed,
        arrays.share,
        (reference.lab, reference.share, reference.mean),
        float(beat),
        MEAN_SLACK,
        FIXED_SLACK,
    )


def _like_ranking(
    arrays: PaletteArrays, reference: Reference, top: int, threads: int = 1, beat=np.inf
) -> list[tuple[float, bytes, int]]:
    """The ``top`` rows of indexed ``arrays`` nearest ``reference`` by Earth Mover's
    distance, exactly, as ``(distance, image id, row)``; only those within ``beat`` count.

    First the rows of the mean-colour cells nearest the reference's mean colour
    (at least :data:`LIKE_ROUND` rows, and 16 × ``top``), measured, give a
    ``top``-th distance to beat; then the rows of every cell within it are
    bounded (in ``threads`` threads) and measured in the order of their bounds,
    until the next bound passes the ``top``-th distance found.
    """
    cells = arrays.mean_cells
    low = cells.distances(reference.mean) - MEAN_SLACK
    order = np.argsort(low, kind="stable")
    reach = np.cumsum(np.diff(cells.starts)[order])  # rows up to and including each cell
    first = int(np.searchsorted(reach, max(16 * top, LIKE_ROUND))) + 1
    best = _nearest_of(arrays, reference, cells.items(order[:first]), [], top, threads, beat)
    rest = order[first:]
    rest = rest[low[rest] <= _limit(best, top, beat)]
    return _nearest_of(arrays, reference, cells.items(rest), best, top, threads, beat)


def _limit(best: list, top: int, beat: float) -> float:
    """The largest bound a candidate may have and still count."""
    return min(beat, best[-1][0] if len(best) == top else np.inf) + BOUND_TOLERANCE


def _nearest_of(arrays, reference: Reference, rows, best: list, top: int, threads: int, beat):
    """``best`` (distance, image id, row), the ``top`` nearest so far, updated with ``rows``:
    bounded in ``threads`` threads, then measured in the order of their bounds while one can
    still count."""
    limit = _limit(best, top, beat)
    bound = _in_threads(
        functools.partial(_bounds, arrays, reference=reference, beat=limit), rows, threads
    )
    kept = bound <= limit
    rows, bound = rows[kept], bound[kept]
    order = np.argsort(bound, kind="stable")  # ties are settled in ``best``, by image id
    rows, bound = rows[order], bound[order]
    batch = max(top, LIKE_BATCH)
    for start in range(0, len(rows), batch):
        if bound[start] > _limit(best, top, beat):
            break  # no later candidate can come closer than the top ones
        chosen = rows[start : start + batch]
        distances = earth_movers_distances(
            reference.lab, reference.share, arrays.lab_of(chosen), arrays.share[chosen]
        )
        best += [(d, arrays.image_id[i], int(i)) for d, i in zip(distances, chosen, strict=True)]
        best.sort()
        del best[top:]
    return best


def _ranked(arrays: PaletteArrays, best: list):
    """``(rows, distances, matching)`` of a likeness ranking: every palette colour counts."""
    rows = np.array([i for _, _, i in best], dtype=np.int64)
    matching = [np.flatnonzero(arrays.share[i] > 0) for i in rows]
    return rows, np.array([d for d, _, _ in best], dtype=np.float64), matching


@dataclass(frozen=True)
class _Query:
    """What a shard is asked: colours (``colors``, ``weights``, ``radius``) or likeness to
    ``reference``, the ``top`` results."""

    top: int
    colors: tuple[str, ...] | None = None
    weights: tuple[float, ...] | None = None
    radius: float = RADIUS
    reference: Reference | None = None


def _shard_results(arrays: PaletteArrays, asked: _Query, threads: int = 1, beat=np.inf):
    """A shard's top results as :func:`search` returns them (``uri`` ``None`` where the arrays
    hold none); likeness results only within ``beat``."""
    matched = None
    if asked.reference is None:
        rows, score, matched, matching = color_ranking(
            arrays, asked.colors, asked.weights, asked.top, asked.radius, threads
        )
    else:
        best = _like_ranking(arrays, asked.reference, asked.top, threads, beat)
        rows, score, matching = _ranked(arrays, best)
    ids = [i.decode("ascii") for i in arrays.image_id[rows].tolist()]
    if arrays.uri is not None:
        uris = arrays.uri.take(pa.array(rows, pa.int64())).to_pylist()
    else:
        uris = [None] * len(ids)
    result = pd.DataFrame({"image_id": ids, "uri": uris, "score": np.asarray(score, np.float64)})
    if matched is not None:
        result["matched"] = np.asarray(matched, dtype=np.int64)
    # Positions in the arrays are palette ranks.
    result["colors"] = [
        rgb_to_hex(arrays.colors_rgb[arrays.color[row, ranks]]) if len(ranks) else []
        for row, ranks in zip(rows, matching, strict=True)
    ]
    return result


def _merged(parts: list[pd.DataFrame], top: int) -> pd.DataFrame:
    """The ``top`` results of shards' results: ranked as one shard ranks its own."""
    # Empty parts would turn the string columns to objects.
    found = pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)
    if "matched" in found:
        by, ascending = ["matched", "score", "image_id"], [False, False, True]
    else:
        by, ascending = ["score", "image_id"], [True, True]
    return (
        found.sort_values(by, ascending=ascending, kind="stable").head(top).reset_index(drop=True)
    )


def _reference_keys(like: str) -> list[bytes]:
    """The image ids ``like`` may name: itself, when it is one, and its URI's."""
    keys = [image_id(like).encode("ascii")]
    if re.fullmatch("[0-9a-f]{32}", like):
        keys.insert(0, like.encode("ascii"))
    return keys


def _reference_in(shards, keys: list[bytes]) -> Reference | None:
    """The palette of the first image of ``keys`` in ``shards`` (arrays, or shard folders
    with their storage options), else ``None``."""
    for shard in shards:
        arrays = read_shard(*shard) if isinstance(shard, tuple) else shard
        for key in keys:
            rows = arrays.rows_of(key)
            if len(rows):
                return Reference.of(arrays, int(rows[0]))
    return None


def _find_reference(ds: PaletteDataset, kind: str, like: str, lookup: Callable) -> Reference:
    """The palette of the image ``like`` names (image id or URI), looked up by
    ``lookup(keys)`` in the shards; through the ``images`` table when not found so."""
    found = lookup(_reference_keys(like))
    if found is None:
        (reference,) = ds.find_images([like])  # an unknown image is an UnknownImageError
        found = lookup([reference.encode("ascii")])
    if found is None:
        raise UsageError(f"{like} has no {kind} palette in {ds.path}")
    return found


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
    scheduler=None,
    shards: list[PaletteArrays] | None = None,
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
        Threads searching (default: one per core): a colour query's shards side by
        side when there are as many, else a shard's candidates. The results are
        the same whatever their number.
    scheduler : str or distributed.Client, optional
        Search the index's shards as tasks of this Dask cluster (its address, or
        a client), each worker reading its shard from the dataset's storage;
        needs a fresh index (``palette-dask index``). The results are the same.
    shards : list of PaletteArrays, optional
        The dataset's palettes of ``kind`` as :func:`palette_dask.index.palette_shards`
        gives them, opened once for many searches (a service's); default: opened
        by this search.
    storage_options : dict, optional
        fsspec options of a dataset given by URL (see :func:`palette_dask.open_dataset`).

    Returns
    -------
    pandas.DataFrame
        ``image_id``, ``uri``, ``score`` (colour queries: 0–1, higher is better;
        ``like``: the Earth Mover's distance, lower is better), ``matched``
        (query colours held; colour queries only) and ``colors`` (the hex codes
        of the image's palette colours that matched).

    Examples
    --------
    >>> search("out/sample", colors=["#1565a1", "#df8c18"], weights=[60, 40])  # doctest: +SKIP
    >>> search("out/sample", like="data/samples/coffee.jpg", top=5)  # doctest: +SKIP
    """
    if (colors is None) == (like is None):
        raise UsageError("search by `colors` or by `like`, one of the two")
    if colors is not None and not colors:
        raise UsageError("give at least one colour")
    threads = default_threads() if threads is None else threads
    check_int("threads", threads, 1)
    check_int("top", top, 1)
    ds, kind = dataset_and_kind(dataset, kind, storage_options)
    asked = _Query(top, None if colors is None else tuple(colors), None, radius)
    if colors is not None:
        _color_query(colors, weights)  # bad colours and weights fail here, once
        asked = dataclasses.replace(asked, weights=None if weights is None else tuple(weights))
    if scheduler is None:
        found = _search_here(ds, kind, asked, like, threads, shards)
    else:
        found = _search_on_cluster(ds, kind, asked, like, scheduler)
    missing = found["uri"].isna()
    if missing.any():  # arrays built from the tables hold no URIs
        uris = ds.uris(list(found["image_id"][missing]))
        found["uri"] = pd.Series(
            [uris.get(i, u) for i, u in zip(found["image_id"], found["uri"], strict=True)],
            dtype=found["image_id"].dtype,
        )
    return found


def _search_here(ds: PaletteDataset, kind: str, asked: _Query, like, threads: int, shards):
    """:func:`search` in this process: a colour query's shards in ``threads`` threads at
    once when there are that many, else shard after shard, each in ``threads`` threads, a
    likeness search beating the distances found in the shards before."""
    shards = palette_shards(ds, kind) if shards is None else shards
    if like is not None:
        reference = _find_reference(ds, kind, like, lambda keys: _reference_in(shards, keys))
        asked = dataclasses.replace(asked, reference=reference)
    if like is None and 1 < threads <= len(shards):
        # Shards of a colour query are independent: a thread each, their serial steps
        # (colours near the query's, postings, ranking) overlapping.
        with ThreadPoolExecutor(threads) as pool:
            return _merged(list(pool.map(lambda s: _shard_results(s, asked), shards)), asked.top)
    parts, beat = [], np.inf
    for shard in shards:
        parts.append(_shard_results(shard, asked, threads, beat))
        if like is not None:
            scores = np.sort(np.concatenate([p["score"].to_numpy() for p in parts]))
            beat = scores[asked.top - 1] if len(scores) >= asked.top else np.inf
    return _merged(parts, asked.top)


def _search_on_cluster(ds: PaletteDataset, kind: str, asked: _Query, like, scheduler):
    """:func:`search` as one Dask task per shard of the index."""
    from distributed import Client  # the compute stack, loaded by cluster searches only

    folders = index_shards(ds, kind)
    if folders is None:
        raise UsageError(
            f"searching on a cluster needs the index of {ds.path}: run `palette-dask index` first"
        )
    shards = [(folder, ds.storage_options) for folder in folders]
    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        if like is not None:

            def lookup(keys):
                found = client.gather(client.map(_reference_in, [[s] for s in shards], keys=keys))
                return next((r for r in found if r is not None), None)

            asked = dataclasses.replace(asked, reference=_find_reference(ds, kind, like, lookup))
        parts = client.gather(client.map(_search_shard, shards, asked=asked))
    finally:
        if client is not scheduler:
            client.close()
    return _merged(parts, asked.top)


def _search_shard(shard: tuple[str, Mapping], asked: _Query) -> pd.DataFrame:
    """One Dask task of a cluster search: a shard's results, read from its folder."""
    return _shard_results(read_shard(*shard), asked)
