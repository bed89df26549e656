"""The inner loops of colour queries, compiled by numba.

A colour query over an index knows, for each query colour, the distinct
colours near it; the postings list the rows holding each distinct colour. One
loop walks those postings and sets, for each query colour, a bit per row near
it (a shard's bits fit in the processor's cache, so the walk costs little per
posting); another reads the rows holding at least a given number of query
colours off those bits, in row order. A third scores rows: each palette
colour's credit for each query colour, summed over the palette's colours in
order, so that a row's score is the same to the bit whichever rows are scored
with it. :mod:`palette_dask.query` imports this module when a colour query
runs; it is compiled once and cached on disk, like the clustering loops.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_JIT = {"cache": True, "nogil": True}


@njit(**_JIT)
def _set_bits(starts, rows, near, query_of, bits):
    for at in range(len(near)):
        color, query = near[at], query_of[at]
        for position in range(starts[color], starts[color + 1]):
            row = np.int64(rows[position])
            bits[query, row >> 6] |= np.uint64(1) << np.uint64(row & 63)


@njit(**_JIT)
def _rows_with(bits, level):
    n_queries, n_words = bits.shape
    found = np.empty(64 * 1024, np.int64)
    n = 0
    for word in range(n_words):
        # Every query colour's bit set, or any: the common cases need no count.
        candidates = bits[0, word]
        for query in range(1, n_queries):
            if level == n_queries:
                candidates &= bits[query, word]
            else:
                candidates |= bits[query, word]
        if candidates == 0:
            continue
        for bit in range(64):
            mask = np.uint64(1) << np.uint64(bit)
            if not candidates & mask:
                continue
            if 1 < level < n_queries:
                held = 0
                for query in range(n_queries):
                    held += (bits[query, word] & mask) != 0
                if held < level:
                    continue
            if n == len(found):
                found = np.concatenate((found, np.empty(len(found), np.int64)))
            found[n] = word * 64 + bit
            n += 1
    return found[:n]


@njit(**_JIT)
def _coverage(rows, color, share, colors_lab, color_family, query_lab, query_family, radius):
    n_queries = len(query_lab)
    out = np.zeros((len(rows), n_queries), np.float32)
    one, zero = np.float32(1), np.float32(0)
    for at in range(len(rows)):
        row = rows[at]
        for c in range(share.shape[1]):
            weight = share[row, c]
            lab = colors_lab[color[row, c]]
            for query in range(n_queries):
                if query_family[query] >= 0:  # a family: its colours count in full
                    if color_family[color[row, c]] == query_family[query]:
                        out[at, query] += weight
                    continue
                squared = zero
                for axis in range(3):
                    step = lab[axis] - query_lab[query, axis]
                    squared += step * step
                credit = max(one - np.sqrt(squared) / radius, zero)
                out[at, query] += weight * credit
    return out


def coverage_of(
    rows: np.ndarray,
    color: np.ndarray,
    share: np.ndarray,
    colors_lab: np.ndarray,
    query: tuple[np.ndarray, np.ndarray],
    radius: float,
    color_family: np.ndarray | None = None,
) -> np.ndarray:
    """(len(rows), J) float32: the share of each palette ``rows`` credited to each query
    colour, credit falling linearly from 1 at distance 0 to 0 at ``radius``; palettes given
    as ``color`` (N, K) rows of ``colors_lab`` and ``share``.

    ``query`` is ``(lab, family)``: (J, 3) CIELAB colours and (J,) family codes, -1 for
    a colour; a query family credits in full the colours of that family
    (``color_family``, one code per row of ``colors_lab``).
    """
    query_lab, query_family = query
    if color_family is None:
        color_family = np.zeros(1, np.uint8)  # never read: no query is a family
    return _coverage(
        np.asarray(rows, np.int64),
        color,
        share,
        colors_lab,
        color_family,
        np.ascontiguousarray(query_lab, np.float32),
        np.asarray(query_family, np.int64),
        np.float32(radius),
    )


def near_bits(
    postings: tuple[np.ndarray, np.ndarray],
    near: list[np.ndarray],
    n_rows: int,
) -> np.ndarray:
    """(J, ⌈n_rows / 64⌉) uint64: for each query colour, the rows holding one of the distinct
    colours ``near[j]``, as bits.

    ``postings`` are ``(starts, rows)``, the rows holding each distinct colour.
    """
    starts, held = postings
    colors = np.concatenate(near).astype(np.int64)
    query_of = np.repeat(np.arange(len(near)), [len(n) for n in near])
    bits = np.zeros((len(near), (n_rows + 63) // 64), np.uint64)
    _set_bits(starts, held, colors, query_of, bits)
    return bits


def rows_with(bits: np.ndarray, level: int) -> np.ndarray:
    """The rows near at least ``level`` query colours (see :func:`near_bits`), in order.

    Examples
    --------
    >>> starts, rows = np.array([0, 2, 3]), np.array([0, 1, 1], np.uint32)
    >>> bits = near_bits((starts, rows), [np.array([0]), np.array([1])], n_rows=2)
    >>> rows_with(bits, 1), rows_with(bits, 2)
    (array([0, 1]), array([1]))
    """
    return _rows_with(bits, level)


def warm_up() -> None:
    """Compile into numba's on-disk cache, for writable and for mapped (read-only) postings."""
    starts, held = np.array([0, 1], np.int64), np.zeros(1, np.uint32)
    for writable in (True, False):
        for array in (starts, held):
            array.setflags(write=writable)
        rows_with(near_bits((starts, held), [np.zeros(1, np.int64)], 1), 1)
    color = np.zeros((1, 1), np.uint32)
    share = np.ones((1, 1), np.float32)
    colors_lab = np.zeros((1, 3), np.float32)
    family = np.zeros(1, np.uint8)
    query_lab = np.zeros((1, 3), np.float32)  # a query's colours are always its own array
    for writable in (True, False):
        for array in (color, share, colors_lab):
            array.setflags(write=writable)
        coverage_of(np.zeros(1, np.int64), color, share, colors_lab, (query_lab, [-1]), 1.0)
        by_family = (query_lab, [0])
        coverage_of(np.zeros(1, np.int64), color, share, colors_lab, by_family, 1.0, family)
