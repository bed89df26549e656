"""K-means clustering of colours.

Three engines; all but ``dask-ml`` run inside the image's own task:

``histogram`` (default)
    :func:`histogram_kmeans`: weighted k-means on colour histograms, restarted
    from seeded k-means++ starts on a coarse grid and refined on a fine one.
    Several times faster than ``sklearn``, at the same quality.
``sklearn``
    scikit-learn's Lloyd k-means over the image's *distinct* colours, each
    weighted by how many pixels carry it: exactly the objective of k-means on
    all pixels.
``dask-ml``
    :class:`DaskKMeans`, ``dask_ml.cluster.KMeans`` with its known defects worked
    around, on a chunked dask array of pixels. Slower per image; it is the
    reference and the building block for clustering pixels gathered from a
    whole corpus.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, NamedTuple

import dask
import numpy as np

from . import _loops

if TYPE_CHECKING:  # dask.array is imported where it runs: the default engine never needs it
    import dask.array as da

# scikit-learn is imported where its engines run: it takes a second to import,
# which every process would pay, while the default engine never needs it.

# Restarts of the in-memory engine. On the sample photographs two seeded k-means++
# starts reach scikit-learn's n_init=10 error within 0.1 % (one start: 0.3 %, with
# a worst image at 2.4 %), at a fifth of the cost (tests/test_quality.py).
SKLEARN_N_INIT = 2
# Rows per chunk when an image's pixels become a dask array; fixed so the result
# never depends on the machine's core count.
PIXEL_CHUNK_ROWS = 8192


def weighted_kmeans(
    points: np.ndarray, weights: np.ndarray, *, k: int, random_state: int
) -> tuple[np.ndarray, np.ndarray]:
    """K-means over weighted points with scikit-learn.

    Parameters
    ----------
    points : (N, D) float32 ndarray
        Distinct colours in a clustering space; assumes ``N > k``.
    weights : (N,) ndarray
        Pixel count of each colour.
    k : int
        Number of clusters.
    random_state : int
        Seed of the k-means++ starts.

    Returns
    -------
    centers : (k, D) ndarray
    labels : (N,) int32 ndarray
        Cluster of each point.

    Examples
    --------
    >>> pts = np.array([[0, 0, 0], [1, 1, 1], [250, 250, 250]], dtype=np.float32)
    >>> centers, labels = weighted_kmeans(pts, np.array([1, 1, 2]), k=2, random_state=0)
    >>> sorted(centers.round().tolist())
    [[0.0, 0.0, 0.0], [250.0, 250.0, 250.0]]
    """
    from sklearn.cluster import KMeans

    model = KMeans(
        n_clusters=k, n_init=SKLEARN_N_INIT, random_state=random_state, algorithm="lloyd"
    )
    model.fit(points, sample_weight=weights.astype(points.dtype))
    return model.cluster_centers_, model.labels_.astype(np.int32)


def nearest_center(points: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of and squared distance to the nearest centre, for each point.

    Parameters
    ----------
    points : (N, 3) uint8 or float ndarray
        Colours, 8-bit or in a clustering space.
    centers : (k, 3) float ndarray

    Returns
    -------
    labels : (N,) int64 ndarray
        Ties go to the lowest index.
    distances : (N,) float64 ndarray

    Examples
    --------
    >>> nearest_center(np.array([[0, 0, 0], [9, 9, 9]]), np.array([[10.0, 10, 10], [1, 0, 0]]))
    (array([1, 0]), array([1., 3.]))
    """
    points = np.asarray(points)
    points = _colors(points, np.uint8 if points.dtype == np.uint8 else np.float64)
    labels = np.empty(len(points), dtype=np.int64)
    distances = np.empty(len(points), dtype=np.float64)
    _loops.nearest_center(points, _colors(centers), labels, distances)
    return labels, distances


def _colors(array, dtype=np.float64) -> np.ndarray:
    """``array`` as contiguous ``(N, 3)`` rows of ``dtype``, as the compiled loops need."""
    array = np.ascontiguousarray(array, dtype=dtype)
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"expected (N, 3) colours, got an array of shape {array.shape}")
    return array


class DaskKMeans:
    """``dask_ml.cluster.KMeans`` with explicit fixes for its known defects.

    dask-ml 2025.1 with scikit-learn 1.3+ crashes on ``init="k-means++"``,
    starts k-means|| from ``X[0]``, treats ``tol`` as an absolute shift, reports
    an inertia of *unsquared* distances, truncates centres of integer input and
    turns empty clusters into the zero vector (a fake black colour). This
    wrapper feeds it float32 data and an explicit k-means++ ``init`` computed
    with scikit-learn on a seeded subsample, scales ``tol`` by the data's
    variance as scikit-learn does, recomputes the inertia as a sum of squared
    distances, and drops clusters left empty.

    Parameters
    ----------
    n_clusters : int
    random_state : int
        Seeds the subsamples and the k-means++ starts.
    tol : float
        Relative tolerance, as in scikit-learn: iterations stop when the centres
        move by less than ``tol`` times the mean per-feature variance.
    max_iter : int
    init_sample_size : int
        Points drawn (without replacement) for the start.
    n_init : int
        With 1, the start is k-means++ on the subsample. Otherwise it is the best
        of ``n_init`` seeded k-means runs on the subsample (in memory, with
        scikit-learn), which the distributed iterations then refine on all points.

    Attributes
    ----------
    cluster_centers_ : (m, 3) float32 ndarray
        Non-empty cluster centres, ``m <= n_clusters``.
    inertia_ : float
        Sum of squared distances of the points to their nearest centre.
    n_iter_ : int
    n_empty_ : int
        Clusters dropped because no point was assigned to them.
    counts_ : (m,) int64 ndarray
        Points per cluster.

    Examples
    --------
    >>> import dask.array as da
    >>> points = np.array([[0, 0, 0], [0, 1, 0], [9, 9, 9], [9, 8, 9]], np.float32)
    >>> model = DaskKMeans(2, random_state=0).fit(da.from_array(points, chunks=(2, 3)))
    >>> sorted(model.cluster_centers_.tolist())
    [[0.0, 0.5, 0.0], [9.0, 8.5, 9.0]]
    """

    def __init__(
        self,
        n_clusters: int,
        *,
        random_state: int = 0,
        tol: float = 1e-4,
        max_iter: int = 300,
        init_sample_size: int = 10_000,
        n_init: int = 1,
    ):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.random_state = random_state
        self.tol = tol
        self.max_iter = max_iter
        self.init_sample_size = init_sample_size

    def fit(self, X: da.Array) -> DaskKMeans:
        """Fit on a dask array of colours, shape ``(N, 3)``, with known chunk sizes."""
        from dask_ml.cluster import KMeans as DaskMLKMeans

        X = X.astype(np.float32)
        n_points = X.shape[0]
        if n_points < self.n_clusters:
            raise ValueError(
                f"`n_clusters` ({self.n_clusters}) must not exceed the number of points "
                f"({n_points})"
            )
        rng = np.random.default_rng(self.random_state)
        take = np.sort(rng.choice(n_points, min(self.init_sample_size, n_points), replace=False))
        subsample, variances = dask.compute(X[take], X.var(axis=0, dtype=np.float64))
        model = DaskMLKMeans(
            n_clusters=self.n_clusters,
            init=self._initial_centers(subsample),
            max_iter=self.max_iter,
            # dask-ml compares the squared centre shift with `tol` as is; scale it
            # by the data's variance, as scikit-learn does.
            tol=float(self.tol * np.mean(variances)),
            random_state=self.random_state,
        )
        model.fit(X)
        centers = np.asarray(model.cluster_centers_, dtype=np.float32)
        counts, self.inertia_ = self._counts_and_inertia(X, centers)
        kept = counts > 0
        self.n_empty_ = int((~kept).sum())
        # An empty cluster holds no point, so dropping it moves no assignment.
        self.cluster_centers_ = centers[kept]
        self.counts_ = counts[kept]
        self.n_iter_ = int(model.n_iter_)
        return self

    def _initial_centers(self, subsample: np.ndarray) -> np.ndarray:
        """The best of ``n_init`` seeded k-means++ runs on the in-memory subsample."""
        from sklearn.cluster import KMeans, kmeans_plusplus
        from sklearn.exceptions import ConvergenceWarning

        if self.n_init == 1:
            init, _ = kmeans_plusplus(subsample, self.n_clusters, random_state=self.random_state)
        else:
            model = KMeans(self.n_clusters, n_init=self.n_init, random_state=self.random_state)
            with warnings.catch_warnings():
                # Fewer distinct points than clusters: the empty ones are dropped after the fit.
                warnings.simplefilter("ignore", ConvergenceWarning)
                init = model.fit(subsample).cluster_centers_
        return init.astype(np.float32)

    def predict(self, X: da.Array) -> da.Array:
        """Index of the nearest fitted centre for each row of ``X`` (a lazy dask array)."""
        return self._assign(X, self.cluster_centers_)[0]

    @classmethod
    def _counts_and_inertia(cls, X: da.Array, centers: np.ndarray) -> tuple[np.ndarray, float]:
        """Points per centre and the sum of squared distances, in one pass over ``X``."""
        import dask.array as da

        labels, d2 = cls._assign(X, centers)
        counts = da.bincount(labels, minlength=len(centers))
        counts, inertia = dask.compute(counts, d2.sum())
        return counts.astype(np.int64), float(inertia)

    @staticmethod
    def _assign(X: da.Array, centers: np.ndarray) -> tuple[da.Array, da.Array]:
        pairs = X.map_blocks(
            lambda block: np.stack(nearest_center(block, centers), axis=1),
            dtype=np.float64,
            chunks=(X.chunks[0], (2,)),
        )
        return pairs[:, 0].astype(np.int32), pairs[:, 1]


def dask_ml_centers(points: np.ndarray, *, k: int, random_state: int) -> np.ndarray:
    """Non-empty k-means centres of one image's pixels with :class:`DaskKMeans`.

    Runs on the calling thread; assumes more than ``k`` points.
    """
    import dask.array as da

    X = da.from_array(np.asarray(points, dtype=np.float32), chunks=(PIXEL_CHUNK_ROWS, -1))
    # Inside a worker task, nested computations must not go back to the cluster.
    with dask.config.set(scheduler="synchronous"):
        return DaskKMeans(k, random_state=random_state).fit(X).cluster_centers_


class HistogramPlan(NamedTuple):
    """How the histogram engine clusters up to ``max_k`` colours.

    The seeded restarts run on a ``coarse_bits`` grid (levels per channel, as
    bits) and the best is refined on a ``fine_bits`` grid.
    """

    max_k: int
    coarse_bits: int
    fine_bits: int
    n_init: int


# More clusters sit closer together: they need finer grids and more restarts to
# do as well as scikit-learn's n_init=10 (tests/test_quality.py). Five colours,
# the default, are found on grids of 16 and 32 levels; a coarse grid has a few
# hundred non-empty bins, the 64-level grid a few thousand.
HISTOGRAM_PLANS = (
    HistogramPlan(max_k=5, coarse_bits=4, fine_bits=5, n_init=4),
    HistogramPlan(max_k=8, coarse_bits=4, fine_bits=6, n_init=4),
    HistogramPlan(max_k=256, coarse_bits=5, fine_bits=6, n_init=8),
)


def histogram_plan(k: int) -> HistogramPlan:
    """The :class:`HistogramPlan` for ``k`` clusters.

    Examples
    --------
    >>> histogram_plan(5).fine_bits, histogram_plan(16).coarse_bits
    (5, 5)
    """
    return next(plan for plan in HISTOGRAM_PLANS if k <= plan.max_k)


# Images with so few colours go to the exact engine instead.
EXACT_BELOW_BINS = 64
LLOYD_MAX_ITER = 100


def color_histogram(pixels: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels binned on a grid of ``2**bits`` levels per channel.

    Returns ``(bin_of_pixel, counts, means)``: for each pixel the index of its
    bin among the non-empty ones (numbered in order of first appearance), and
    for each non-empty bin its pixel count and mean colour (float64, 0–255).

    Examples
    --------
    >>> px = np.array([[0, 0, 0], [2, 2, 2], [255, 255, 255]], np.uint8)
    >>> bins, counts, means = color_histogram(px, 5)
    >>> bins.tolist(), counts.tolist(), means.tolist()
    ([0, 0, 1], [2, 1], [[1.0, 1.0, 1.0], [255.0, 255.0, 255.0]])
    """
    bin_of_pixel, _, counts, sums = _loops.grid_histogram(_colors(pixels, np.uint8), bits)
    return bin_of_pixel, counts, sums / counts[:, None]


def weighted_kmeans_plusplus(
    points: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """Greedy k-means++ start on weighted points (``2 + log k`` trials a step, as scikit-learn).

    Examples
    --------
    >>> pts = np.array([[0.0, 0, 0], [1, 1, 1], [100, 100, 100]])
    >>> start = weighted_kmeans_plusplus(pts, np.ones(3), 2, np.random.default_rng(0))
    >>> sorted(start[:, 0].tolist())[-1]
    100.0
    """
    trials = 2 + int(np.log(k))
    uniforms = rng.random(1 + (k - 1) * trials)
    return _loops.kmeans_plusplus(
        _colors(points), np.ascontiguousarray(weights, dtype=np.float64), k, uniforms, trials
    )


def weighted_lloyd(
    points: np.ndarray,
    weights: np.ndarray,
    centers: np.ndarray,
    *,
    max_iter: int = LLOYD_MAX_ITER,
    tol: float = 1e-4,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd's k-means iterations on weighted points, from ``centers``.

    Stops when the labels settle, or when the centres move (in total squared
    distance) by less than ``tol`` times the points' mean per-channel variance,
    as scikit-learn does. A cluster that loses all its points keeps its centre.

    Returns ``(centers, labels, inertia)``, the labels and inertia for the
    returned centres.

    Examples
    --------
    >>> pts = np.array([[0.0, 0, 0], [2, 2, 2], [10, 10, 10]])
    >>> centers, labels, inertia = weighted_lloyd(pts, np.ones(3), pts[[0, 2]])
    >>> centers.tolist(), labels.tolist(), inertia
    ([[1.0, 1.0, 1.0], [10.0, 10.0, 10.0]], [0, 0, 1], 6.0)
    """
    points = _colors(points)
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    if tol > 0:
        mean = weights @ points / weights.sum()
        tol *= float(weights @ ((points - mean) ** 2).sum(axis=1)) / weights.sum() / 3
    return _loops.lloyd(points, weights, _colors(centers), max_iter, tol)


def histogram_kmeans(
    pixels: np.ndarray, *, k: int, color_space: str, random_state: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """K-means of an image's pixels through colour histograms: fast, and as good as restarts.

    Weighted k-means runs several times from seeded k-means++ starts on the
    mean colours of a coarse histogram; the best run is refined on a fine
    histogram until its labels settle, and every pixel then goes to its
    nearest centre. :func:`histogram_plan` says which grids and how many
    restarts.

    Parameters
    ----------
    pixels : (N, 3) uint8 ndarray
    k : int
    color_space : {"rgb", "lab", "oklab"}
    random_state : int

    Returns
    -------
    centers : (k, 3) float64 ndarray
        In ``color_space``.
    labels : (N,) int ndarray
        Cluster of each pixel.

    ``None`` instead when the fine histogram has at most ``EXACT_BELOW_BINS``
    bins (graphics, flat colours): the exact engine is then cheap and finds the
    best of the few possible groupings more reliably.
    """
    from .color import rgb_to_space

    pixels = _colors(pixels, np.uint8)
    plan = histogram_plan(k)
    bin_of_pixel, keys, fine_counts, fine_sums = _loops.grid_histogram(pixels, plan.fine_bits)
    if len(fine_counts) <= max(EXACT_BELOW_BINS, k):
        return None
    coarse_counts, coarse_sums = _loops.coarsen_histogram(
        keys, fine_counts, fine_sums, plan.fine_bits, plan.coarse_bits
    )
    coarse = rgb_to_space(coarse_sums / coarse_counts[:, None], color_space)
    rng = np.random.default_rng(random_state)
    best = None
    for _ in range(plan.n_init):
        start = weighted_kmeans_plusplus(coarse, coarse_counts, min(k, len(coarse)), rng)
        run = weighted_lloyd(coarse, coarse_counts, start)
        if best is None or run[2] < best[2]:
            best = run
    fine = rgb_to_space(fine_sums / fine_counts[:, None], color_space)
    centers, _, _ = weighted_lloyd(fine, fine_counts, best[0], tol=0.0)
    # Each pixel goes to its own nearest centre, not its bin's: exact at the boundaries.
    if color_space != "rgb":
        labels, _ = nearest_center(rgb_to_space(pixels, color_space), centers)
        return centers, labels
    labels = np.empty(len(pixels), dtype=np.uint8)
    _loops.nearest_center_binned(pixels, bin_of_pixel, keys, plan.fine_bits, centers, labels)
    return centers, labels
