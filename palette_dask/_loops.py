"""Compiled inner loops of the clustering stage.

Each function is a plain loop over pixels or colours, compiled by numba, that
would otherwise take a dozen NumPy passes and as many temporary arrays. The
public, documented entry points are in :mod:`palette_dask.kmeans`; these take
already-validated, contiguous arrays.

The loops run in a fixed order and never use fast-math, so their results are
bit-identical from run to run, whatever the thread or process they run in.
Compiled code is cached on disk next to this file (or in numba's user cache),
so only the first process ever to call them pays for compilation.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_JIT = {"cache": True, "nogil": True}


@njit(**_JIT)
def grid_histogram(pixels, bits):
    """Bin ``(N, 3)`` uint8 pixels on a grid of ``2**bits`` levels per channel.

    Returns ``(bin_of_pixel, keys, counts, sums)``: each pixel's bin among the
    non-empty ones (numbered in order of first appearance), and for each bin its
    grid key, pixel count and per-channel sums.
    """
    n = pixels.shape[0]
    shift = 8 - bits
    slot = np.full(1 << (3 * bits), -1, np.int32)
    capacity = min(n, 1 << (3 * bits))
    keys = np.empty(capacity, np.int64)
    counts = np.zeros(capacity, np.int64)
    sums = np.zeros((capacity, 3), np.int64)
    bin_of_pixel = np.empty(n, np.int32)
    n_bins = 0
    for i in range(n):
        r, g, b = pixels[i, 0], pixels[i, 1], pixels[i, 2]
        key = ((r >> shift) << (2 * bits)) | ((g >> shift) << bits) | (b >> shift)
        s = slot[key]
        if s < 0:
            s = n_bins
            slot[key] = s
            keys[s] = key
            n_bins += 1
        bin_of_pixel[i] = s
        counts[s] += 1
        sums[s, 0] += r
        sums[s, 1] += g
        sums[s, 2] += b
    return bin_of_pixel, keys[:n_bins].copy(), counts[:n_bins].copy(), sums[:n_bins].copy()


@njit(**_JIT)
def coarsen_histogram(keys, counts, sums, bits, coarse_bits):
    """Merge the bins of a ``bits`` grid histogram into a ``coarse_bits`` one.

    Returns ``(counts, sums)`` of the coarse bins, numbered in order of first
    appearance among the fine ones.
    """
    drop = bits - coarse_bits
    fine_mask = (1 << bits) - 1
    slot = np.full(1 << (3 * coarse_bits), -1, np.int32)
    capacity = min(len(keys), 1 << (3 * coarse_bits))
    coarse_counts = np.zeros(capacity, np.int64)
    coarse_sums = np.zeros((capacity, 3), np.int64)
    n_bins = 0
    for i in range(len(keys)):
        key = keys[i]
        r = (key >> (2 * bits)) >> drop
        g = ((key >> bits) & fine_mask) >> drop
        b = (key & fine_mask) >> drop
        coarse_key = (r << (2 * coarse_bits)) | (g << coarse_bits) | b
        s = slot[coarse_key]
        if s < 0:
            s = n_bins
            slot[coarse_key] = s
            n_bins += 1
        coarse_counts[s] += counts[i]
        for c in range(3):
            coarse_sums[s, c] += sums[i, c]
    return coarse_counts[:n_bins].copy(), coarse_sums[:n_bins].copy()


@njit(**_JIT)
def nearest_center(points, centers, labels, distances):
    """Write each point's nearest centre and squared distance into ``labels``, ``distances``.

    ``points`` and ``centers`` have three columns. Ties go to the lowest centre index.
    """
    c0, c1, c2 = centers[:, 0].copy(), centers[:, 1].copy(), centers[:, 2].copy()
    for i in range(points.shape[0]):
        labels[i], distances[i] = _nearest(points, i, c0, c1, c2)


# Inlined where it is called: as a call it makes the pixel loops twice as slow.
@njit(inline="always", **_JIT)
def _nearest(points, i, c0, c1, c2):
    """Index of and squared distance to the centre ``(c0[c], c1[c], c2[c])`` nearest point i."""
    x0, x1, x2 = np.float64(points[i, 0]), np.float64(points[i, 1]), np.float64(points[i, 2])
    best = 0
    best_d2 = np.inf
    for c in range(len(c0)):
        d2 = (x0 - c0[c]) ** 2 + (x1 - c1[c]) ** 2 + (x2 - c2[c]) ** 2
        if d2 < best_d2:
            best_d2 = d2
            best = c
    return best, best_d2


@njit(**_JIT)
def _squared_distances_to(points, index, out):
    """``out[i]`` = squared distance from ``points[i]`` to ``points[index]``."""
    y0, y1, y2 = points[index, 0], points[index, 1], points[index, 2]
    for i in range(points.shape[0]):
        out[i] = (points[i, 0] - y0) ** 2 + (points[i, 1] - y1) ** 2 + (points[i, 2] - y2) ** 2


@njit(**_JIT)
def lloyd(points, weights, centers, max_iter, tol):
    """Weighted Lloyd iterations from ``centers``: :func:`palette_dask.kmeans.weighted_lloyd`."""
    n = points.shape[0]
    k = centers.shape[0]
    centers = centers.copy()
    labels = np.empty(n, np.int64)
    previous = np.empty(n, np.int64)
    distances = np.empty(n)
    nearest_center(points, centers, labels, distances)
    for _ in range(max_iter):
        mass = np.zeros(k)
        sums = np.zeros((k, 3))
        for i in range(n):
            c, w = labels[i], weights[i]
            mass[c] += w
            sums[c, 0] += w * points[i, 0]
            sums[c, 1] += w * points[i, 1]
            sums[c, 2] += w * points[i, 2]
        shift = 0.0
        for c in range(k):
            if mass[c] > 0:  # a cluster that lost all its points keeps its centre
                for j in range(3):
                    moved = sums[c, j] / mass[c]
                    shift += (moved - centers[c, j]) ** 2
                    centers[c, j] = moved
        previous[:] = labels
        nearest_center(points, centers, labels, distances)
        if shift <= tol or np.array_equal(labels, previous):
            break
    inertia = 0.0
    for i in range(n):
        inertia += weights[i] * distances[i]
    return centers, labels, inertia


@njit(**_JIT)
def kmeans_plusplus(points, weights, k, uniforms, trials):
    """Greedy k-means++ start; ``uniforms`` holds the ``1 + (k - 1) * trials`` draws in [0, 1)."""
    n = points.shape[0]
    centers = np.empty((k, 3))
    cumulative = np.cumsum(weights)
    first = min(np.searchsorted(cumulative, uniforms[0] * cumulative[-1], side="right"), n - 1)
    centers[0] = points[first]
    closest = np.empty(n)
    _squared_distances_to(points, first, closest)
    trial = np.empty(n)
    best_trial = np.empty(n)
    draw = 1
    for c in range(1, k):
        cumulative = np.cumsum(weights * closest)
        total = cumulative[-1]
        if total <= 0:  # fewer distinct points than clusters
            centers[c:] = points[first]
            break
        best_cost = np.inf
        best = 0
        for _ in range(trials):
            candidate = min(np.searchsorted(cumulative, uniforms[draw] * total), n - 1)
            draw += 1
            _squared_distances_to(points, candidate, trial)
            cost = 0.0
            for i in range(n):
                trial[i] = min(closest[i], trial[i])
                cost += weights[i] * trial[i]
            if cost < best_cost:
                best_cost = cost
                best = candidate
                best_trial[:] = trial
        centers[c] = points[best]
        closest[:] = best_trial
    return centers


@njit(**_JIT)
def nearest_center_binned(pixels, bin_of_pixel, keys, bits, centers, labels):
    """:func:`nearest_center` of ``(N, 3)`` uint8 pixels, ``centers`` in RGB, through their bins.

    ``bin_of_pixel`` and ``keys`` come from :func:`grid_histogram` with ``bits``.
    A bin is a cube of integer colours; when its centre is nearer one centre
    than any other by more than the cube's diameter, every pixel in it has that
    nearest centre, and only the pixels of the other bins are measured.
    """
    levels = 1 << bits
    half = ((1 << (8 - bits)) - 1) / 2.0
    diameter = 2.0 * half * np.sqrt(3.0)
    n_bins = len(keys)
    bin_label = np.full(n_bins, -1, np.int64)
    for b in range(n_bins):
        key = keys[b]
        x0 = ((key >> (2 * bits)) % levels) * (2 * half + 1) + half
        x1 = ((key >> bits) % levels) * (2 * half + 1) + half
        x2 = (key % levels) * (2 * half + 1) + half
        best, d1, d2 = 0, np.inf, np.inf
        for c in range(centers.shape[0]):
            d = (x0 - centers[c, 0]) ** 2 + (x1 - centers[c, 1]) ** 2 + (x2 - centers[c, 2]) ** 2
            if d < d1:
                best, d1, d2 = c, d, d1
            elif d < d2:
                d2 = d
        if np.sqrt(d2) - np.sqrt(d1) > diameter:
            bin_label[b] = best
    c0, c1, c2 = centers[:, 0].copy(), centers[:, 1].copy(), centers[:, 2].copy()
    for i in range(pixels.shape[0]):
        known = bin_label[bin_of_pixel[i]]
        labels[i] = known if known >= 0 else _nearest(pixels, i, c0, c1, c2)[0]


@njit(**_JIT)
def squared_error_sum(pixels, colors, color_of_pixel):
    """Sum over pixels and channels of ``(colors[color_of_pixel] - pixels) ** 2``, exactly."""
    total = 0
    for i in range(pixels.shape[0]):
        c = color_of_pixel[i]
        for j in range(3):
            diff = np.int64(colors[c, j]) - np.int64(pixels[i, j])
            total += diff * diff
    return total
