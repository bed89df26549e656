"""The Earth Mover's distance between small palettes and its relaxed bound, compiled by numba.

A likeness search bounds the distance of many palettes of a few colours each
from below, then measures the closest candidates. Each pair is a
transportation problem of at most ``K × K`` flows: solved here exactly by the
transportation simplex (a north-west corner start, then pivots on the most
negative reduced cost until none is left), in a compiled loop over the pairs,
rather than as a general linear program.

:mod:`palette_dask.query` imports this module when a likeness search runs, so
that reading a dataset never loads numba. The code is compiled for its one
signature when first imported and cached on disk, like the clustering loops.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_JIT = {"cache": True, "nogil": True}
# Flows and reduced costs within this of zero count as zero.
_EPS = 1e-12
# Palette colours in fixed point, for the bounds: CIELAB in 1/64 units, int16
# (coordinates to ±511), within half a unit of the stored values per axis.
FIXED_SCALE = 64.0
FIXED_ERROR = float(np.sqrt(3) * 0.5 / FIXED_SCALE)


@njit(**_JIT)
def _potentials(cost, basic, m, n):
    """Row and column potentials u, v with u[i] + v[j] = cost[i, j] on the basic cells.

    The basic cells form a spanning tree of the rows and columns; u[0] is 0.
    """
    u = np.zeros(m)
    v = np.zeros(n)
    known_u = np.zeros(m, np.bool_)
    known_v = np.zeros(n, np.bool_)
    known_u[0] = True
    found = 1
    while found < m + n:
        progressed = False
        for i in range(m):
            for j in range(n):
                if basic[i, j] and known_u[i] != known_v[j]:
                    if known_u[i]:
                        v[j] = cost[i, j] - u[i]
                        known_v[j] = True
                    else:
                        u[i] = cost[i, j] - v[j]
                        known_u[i] = True
                    found += 1
                    progressed = True
        if not progressed:
            break
    return u, v


@njit(**_JIT)
def _cycle(basic, m, n, p, q):
    """The basic cells on the tree path from column ``q`` back to row ``p``, in order.

    Nodes are rows ``0..m-1`` and columns ``m..m+n-1``; returns the path's
    cells as (rows, columns, length).
    """
    parent = np.full(m + n, -1)
    parent[p] = p
    queue = np.empty(m + n, np.int64)
    queue[0] = p
    head, tail = 0, 1
    while head < tail:
        node = queue[head]
        head += 1
        if node < m:
            for j in range(n):
                if basic[node, j] and parent[m + j] < 0:
                    parent[m + j] = node
                    queue[tail] = m + j
                    tail += 1
        else:
            for i in range(m):
                if basic[i, node - m] and parent[i] < 0:
                    parent[i] = node
                    queue[tail] = i
                    tail += 1
    rows = np.empty(m + n, np.int64)
    cols = np.empty(m + n, np.int64)
    length = 0
    node = m + q
    while node != p:
        up = parent[node]
        if node >= m:
            rows[length], cols[length] = up, node - m
        else:
            rows[length], cols[length] = node, up - m
        length += 1
        node = up
    return rows, cols, length


@njit(**_JIT)
def transport_cost(supply, demand, cost):
    """Least total cost of moving ``supply`` (m,) onto ``demand`` (n,) at ``cost`` (m, n).

    The two must have the same sum. Returns ``nan`` if the simplex has not
    converged within its iteration cap (the caller then solves it another way).
    """
    m, n = cost.shape
    flow = np.zeros((m, n))
    basic = np.zeros((m, n), np.bool_)
    left = supply.copy()
    wanted = demand.copy()
    # North-west corner start: m + n - 1 basic cells, some of them with zero flow.
    i = j = 0
    while True:
        moved = min(left[i], wanted[j])
        flow[i, j] = moved
        basic[i, j] = True
        left[i] -= moved
        wanted[j] -= moved
        if i == m - 1 and j == n - 1:
            break
        if j == n - 1 or (i < m - 1 and left[i] <= wanted[j]):
            i += 1
        else:
            j += 1
    for _ in range(50 * m * n):
        u, v = _potentials(cost, basic, m, n)
        best, p, q = -_EPS, -1, -1
        for r in range(m):
            for c in range(n):
                if not basic[r, c]:
                    reduced = cost[r, c] - u[r] - v[c]
                    if reduced < best:
                        best, p, q = reduced, r, c
        if p < 0:
            total = 0.0
            for r in range(m):
                for c in range(n):
                    total += flow[r, c] * cost[r, c]
            return total
        rows, cols, length = _cycle(basic, m, n, p, q)
        # Along the path from column q the cells give (-), take (+), give (-), ...
        theta, leaving = np.inf, -1
        for step in range(0, length, 2):
            if flow[rows[step], cols[step]] < theta:
                theta, leaving = flow[rows[step], cols[step]], step
        flow[p, q] = theta
        for step in range(length):
            if step % 2 == 0:
                flow[rows[step], cols[step]] -= theta
            else:
                flow[rows[step], cols[step]] += theta
        basic[p, q] = True
        basic[rows[leaving], cols[leaving]] = False
        flow[rows[leaving], cols[leaving]] = 0.0
    return np.nan


@njit(**_JIT)
def palette_distances(lab_a, share_a, labs_b, shares_b):
    """(M,) Earth Mover's distances from one palette to each of ``M`` others.

    ``lab_a`` (K, 3) and ``share_a`` (K,), ``labs_b`` (M, K, 3) and
    ``shares_b`` (M, K), all float64; colours of share 0 are padding. Shares
    are normalised to sum to 1 in each palette. ``nan`` where the simplex did
    not converge.
    """
    kept_a = np.flatnonzero(share_a > 0)
    supply = share_a[kept_a] / share_a[kept_a].sum()
    out = np.empty(len(labs_b))
    for pair in range(len(labs_b)):
        kept_b = np.flatnonzero(shares_b[pair] > 0)
        demand = shares_b[pair][kept_b] / shares_b[pair][kept_b].sum()
        # The last demand takes what rounding left, so that both sides sum alike.
        demand[-1] = max(supply.sum() - demand[:-1].sum(), 0.0)
        cost = np.empty((len(kept_a), len(kept_b)))
        for r in range(len(kept_a)):
            for c in range(len(kept_b)):
                d = 0.0
                for axis in range(3):
                    step = lab_a[kept_a[r], axis] - labs_b[pair, kept_b[c], axis]
                    d += step * step
                cost[r, c] = np.sqrt(d)
        out[pair] = transport_cost(supply, demand, cost)
    return out


@njit(**_JIT)
def likeness_bounds(rows, mean_lab, lab_fixed, share, reference, beat, mean_slack, lab_slack):
    """(len(rows),) lower bounds of the distances of palettes ``rows`` to the reference.

    First the distance between mean colours (``mean_lab`` (N, 3) against the
    reference's, less ``mean_slack``); where it does not pass ``beat``, also
    the relaxed distance, the larger of the two relaxations in which each
    side's shares move to the other side's nearest colour with no limit on
    what a colour receives, from the palettes' colours in fixed point
    (``lab_fixed`` (N, K, 3) int16 in 1/``FIXED_SCALE`` units, less
    ``lab_slack``). Rows are read in order, without gathers: one pass over
    their bytes.

    ``reference`` holds the reference palette's ``lab`` (K, 3), ``share``
    (K,) and ``mean`` (3,), float64. Colours of share 0 are padding.
    """
    ref_lab, ref_share, ref_mean = reference
    kept = np.flatnonzero(ref_share > 0)
    theirs = ref_share[kept] / ref_share[kept].sum()
    k = share.shape[1]
    out = np.empty(len(rows))
    nearest_to_mine = np.empty(len(kept))
    for at in range(len(rows)):
        row = rows[at]
        gap = 0.0
        for axis in range(3):
            step = np.float64(mean_lab[row, axis]) - ref_mean[axis]
            gap += step * step
        bound = np.sqrt(gap) - mean_slack
        if bound > beat:
            out[at] = bound
            continue
        total = 0.0
        to_reference = 0.0
        nearest_to_mine[:] = np.inf
        for c in range(k):
            weight = np.float64(share[row, c])
            if weight <= 0:
                continue
            total += weight
            nearest = np.inf
            for r in range(len(kept)):
                d = 0.0
                for axis in range(3):
                    step = lab_fixed[row, c, axis] / FIXED_SCALE - ref_lab[kept[r], axis]
                    d += step * step
                d = np.sqrt(d)
                nearest = min(nearest, d)
                nearest_to_mine[r] = min(nearest_to_mine[r], d)
            to_reference += weight * nearest
        from_reference = 0.0
        for r in range(len(kept)):
            from_reference += nearest_to_mine[r] * theirs[r]
        out[at] = max(bound, max(to_reference / total, from_reference) - lab_slack)
    return out


def warm_up() -> None:
    """Compile the solver and the bounds into numba's on-disk cache (``make install`` runs
    this), for the writable arrays built from tables and the read-only ones of a mapped
    index, so that no likeness search compiles them."""
    lab = np.zeros((1, 3))
    palette_distances(lab, np.ones(1), lab[None], np.ones((1, 1)))
    mean_lab = np.zeros((1, 3), np.float32)
    lab_fixed = np.zeros((1, 1, 3), np.int16)
    share = np.ones((1, 1), np.float32)
    reference = (lab, np.ones(1), np.zeros(3))
    for writable in (True, False):
        for array in (mean_lab, lab_fixed, share):
            array.setflags(write=writable)
        likeness_bounds(np.zeros(1, np.int64), mean_lab, lab_fixed, share, reference, 0.0, 0.0, 0.0)
