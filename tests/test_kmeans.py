"""The dask-ml workarounds in DaskKMeans, each checked against the defect it fixes."""

import dask
import dask.array as da
import numpy as np
import pytest
from dask_ml.cluster import KMeans as DaskMLKMeans
from sklearn.cluster import KMeans

from palette_dask.kmeans import DaskKMeans, nearest_center, weighted_kmeans


@pytest.fixture(autouse=True)
def in_this_thread():
    """Each dask-ml step is a small graph: computed in this thread rather than handed to a
    thread pool, a fit takes a fraction of the time, with the same results."""
    with dask.config.set(scheduler="sync"):
        yield


def blobs(n=3000, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    centers = np.array([[20, 20, 20], [200, 40, 40], [40, 200, 90], [90, 90, 230]], float)
    points = centers[rng.integers(0, 4, n)] + rng.normal(0, 6, (n, 3))
    return (points * scale).astype(np.float32)


def as_dask(points, chunk=500):
    return da.from_array(points, chunks=(chunk, -1))


def test_dask_ml_kmeans_plus_plus_still_crashes_and_we_avoid_it():
    X = as_dask(blobs())
    with pytest.raises(TypeError):
        DaskMLKMeans(n_clusters=4, init="k-means++", random_state=0).fit(X)
    model = DaskKMeans(4, random_state=0).fit(X)
    assert model.cluster_centers_.shape == (4, 3)


def test_inertia_is_the_sum_of_squared_distances():
    points = blobs()
    model = DaskKMeans(4, random_state=0).fit(as_dask(points))
    _, d2 = nearest_center(points, model.cluster_centers_)
    assert model.inertia_ == pytest.approx(d2.sum(), rel=1e-6)
    # dask-ml's own figure, whenever it stops on its tolerance before the labels
    # settle, is a sum of *unsquared* distances.
    raw = DaskMLKMeans(n_clusters=4, init=points[:4], tol=50.0).fit(as_dask(points))
    _, raw_d2 = nearest_center(points, raw.cluster_centers_)
    assert raw.inertia_ == pytest.approx(np.sqrt(raw_d2).sum(), rel=1e-4)
    assert raw.inertia_ < raw_d2.sum() / 3


def test_fit_matches_scikit_learn_on_blobs():
    points = blobs()
    ours = DaskKMeans(4, random_state=0).fit(as_dask(points))
    reference = KMeans(4, n_init=3, random_state=0).fit(points)
    assert ours.inertia_ <= reference.inertia_ * 1.001
    ours_sorted = np.sort(ours.cluster_centers_, axis=0)
    np.testing.assert_allclose(ours_sorted, np.sort(reference.cluster_centers_, axis=0), atol=0.05)


def test_integer_data_does_not_truncate_centres():
    # Two points per cluster, one unit apart: the centres sit on half units.
    points = np.array([[0, 0, 0], [1, 1, 1], [100, 100, 100], [101, 101, 101]], dtype=np.uint8)
    model = DaskKMeans(2, random_state=0).fit(as_dask(points, chunk=2))
    assert sorted(model.cluster_centers_.tolist()) == [[0.5] * 3, [100.5] * 3]


def test_empty_cluster_is_dropped_not_made_black():
    # Only two distinct colours, asked for three clusters: one must end up empty.
    points = np.repeat(np.array([[250, 250, 250], [200, 10, 10]], np.float32), 50, axis=0)
    raw = DaskMLKMeans(
        n_clusters=3, init=np.array([[250, 250, 250], [200, 10, 10], [250, 250, 250]], np.float32)
    )
    raw.fit(as_dask(points, chunk=25))
    assert [0, 0, 0] in raw.cluster_centers_.tolist()  # the defect: a fake black centre
    model = DaskKMeans(3, random_state=0).fit(as_dask(points, chunk=25))
    assert model.n_empty_ == 1
    assert sorted(model.cluster_centers_.tolist()) == [[200, 10, 10], [250, 250, 250]]
    assert model.counts_.sum() == 100


def test_tolerance_is_relative_to_the_data_scale():
    # The same data in other units must converge in the same number of steps.
    small = DaskKMeans(4, random_state=0).fit(as_dask(blobs(scale=0.01)))
    large = DaskKMeans(4, random_state=0).fit(as_dask(blobs(scale=100.0)))
    assert small.n_iter_ == large.n_iter_
    np.testing.assert_allclose(small.cluster_centers_ * 1e4, large.cluster_centers_, rtol=1e-3)


def test_start_does_not_depend_on_the_first_row():
    # k-means|| always starts from X[0]; our seeded k-means++ start does not care
    # which row comes first, so moving an outlier to the front changes nothing.
    points = blobs()
    outlier_first = np.concatenate([[[255, 255, 0]], points]).astype(np.float32)
    outlier_last = np.concatenate([points, [[255, 255, 0]]]).astype(np.float32)
    first = DaskKMeans(4, random_state=0).fit(as_dask(outlier_first))
    last = DaskKMeans(4, random_state=0).fit(as_dask(outlier_last))
    np.testing.assert_allclose(
        np.sort(first.cluster_centers_, axis=0), np.sort(last.cluster_centers_, axis=0), atol=0.5
    )


def test_same_seed_same_chunks_give_identical_centres():
    points = blobs()
    a = DaskKMeans(4, random_state=7).fit(as_dask(points))
    b = DaskKMeans(4, random_state=7).fit(as_dask(points))
    assert np.array_equal(a.cluster_centers_, b.cluster_centers_)


def test_predict_assigns_nearest_centre():
    points = blobs()
    model = DaskKMeans(4, random_state=0).fit(as_dask(points))
    labels = model.predict(as_dask(points)).compute()
    assert np.array_equal(labels, nearest_center(points, model.cluster_centers_)[0])


def test_weighted_kmeans_equals_kmeans_on_repeated_points():
    rng = np.random.default_rng(3)
    distinct = rng.integers(0, 256, (300, 3)).astype(np.float32)
    weights = rng.integers(1, 20, 300)
    centers, labels = weighted_kmeans(distinct, weights, k=5, random_state=0)
    repeated = np.repeat(distinct, weights, axis=0)
    _, d2_weighted = nearest_center(repeated, centers)
    reference = KMeans(5, n_init=10, random_state=0).fit(repeated)
    assert d2_weighted.sum() <= reference.inertia_ * 1.01
    assert labels.shape == (300,)


def test_too_few_points_is_refused():
    with pytest.raises(
        ValueError, match="`n_clusters` \\(5\\) must not exceed the number of points"
    ):
        DaskKMeans(5).fit(as_dask(np.zeros((3, 3), np.float32)))
