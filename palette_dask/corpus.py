"""One shared palette for a whole corpus, and every image described over it.

The corpus palette is fitted in three steps, each a pure function here:

1. :func:`fit_sample` draws, from every image, up to ``sample_per_image``
   opaque pixels, each with a random *priority*. Both come from a generator
   seeded by the job's ``random_state`` and the image's id, so an image's
   contribution never depends on which partition or worker handled it.
2. :func:`merge_fit_samples` keeps the ``limit`` pixels of lowest priority
   (a bottom-k sample). Merging is associative and exact, so the corpus sample
   is the same whatever the order and grouping of merges, and its size never
   exceeds ``limit`` however large the corpus.
3. :func:`fit_corpus_palette` clusters that sample with
   :class:`~palette_dask.kmeans.DaskKMeans`, on a dask array kept on the workers.

:func:`assign_to_corpus` then maps every sample pixel of an image to its
nearest corpus colour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .color import pack_rgb, rgb_to_space, space_to_rgb, unpack_rgb
from .imaging import Sample
from .kmeans import DaskKMeans, nearest_center
from .palette import Palette, PaletteOptions, clustered_pixels, ranked_palette

if TYPE_CHECKING:
    import dask.array as da

# Rows per chunk of the gathered sample; fixed so the fit never depends on the cluster.
FIT_CHUNK_ROWS = 65_536
# The start of the corpus fit: the best of N_INIT scikit-learn runs on a seeded
# subsample of INIT_SAMPLE_SIZE pixels, then refined by dask-ml on the whole sample.
# On photographs this matches scikit-learn's n_init=3 on all points (tests/test_corpus.py).
N_INIT = 10
INIT_SAMPLE_SIZE = 100_000
# Share of an image's pixels a corpus colour must cover to count the image in `n_images`.
PRESENCE_SHARE = 0.01


@dataclass(frozen=True)
class FitSample:
    """Pixels drawn for the corpus fit, with their priorities.

    Attributes
    ----------
    priorities : (n,) float64 ndarray
        Random keys; a bottom-k sample keeps the lowest.
    coords : (n, 3) float32 ndarray
        The pixels in the job's colour space.
    """

    priorities: np.ndarray
    coords: np.ndarray

    def __len__(self) -> int:
        return len(self.priorities)

    @classmethod
    def empty(cls) -> FitSample:
        return cls(np.empty(0, np.float64), np.empty((0, 3), np.float32))


@dataclass(frozen=True)
class CorpusPalette:
    """The shared palette of a corpus.

    Attributes
    ----------
    colors : (m, 3) uint8 ndarray
        sRGB colours; the row is the colour's ``corpus_index``. Ordered by how
        many fit-sample pixels each colour took, largest first.
    centers : (m, 3) float32 ndarray
        The cluster centres in the job's colour space, used for assignment.
    color_space : str
    inertia : float
        Sum of squared distances of the fit sample to its nearest centre.
    n_iter : int
    sample_size : int
        Pixels in the fit sample.
    n_dropped : int
        Clusters dropped because they came out empty or repeated a colour.
    """

    colors: np.ndarray
    centers: np.ndarray
    color_space: str
    inertia: float
    n_iter: int
    sample_size: int
    n_dropped: int


def _image_seed(image_id: str, random_state: int) -> np.random.Generator:
    return np.random.default_rng([random_state, int(image_id[:16], 16), int(image_id[16:], 16)])


def fit_sample(sample: Sample, image_id: str, options: PaletteOptions, *, size: int) -> FitSample:
    """Up to ``size`` opaque pixels of one image, drawn without replacement, with priorities.

    Examples
    --------
    >>> from palette_dask.imaging import array_to_sample
    >>> s = array_to_sample(np.zeros((10, 10, 3), np.uint8), max_pixels=100)
    >>> len(fit_sample(s, "0" * 32, PaletteOptions(), size=30))
    30
    """
    pixels, _, _ = clustered_pixels(sample, options)
    rng = _image_seed(image_id, options.random_state)
    take = min(size, len(pixels))
    chosen = np.sort(rng.choice(len(pixels), size=take, replace=False))
    return FitSample(
        priorities=rng.random(take),
        coords=rgb_to_space(pixels[chosen], options.color_space),
    )


def merge_fit_samples(*parts: FitSample, limit: int) -> FitSample:
    """The ``limit`` lowest-priority pixels of all parts, sorted by priority.

    Examples
    --------
    >>> a = FitSample(np.array([0.5, 0.1]), np.zeros((2, 3), np.float32))
    >>> b = FitSample(np.array([0.3]), np.ones((1, 3), np.float32))
    >>> merge_fit_samples(a, b, limit=2).priorities.tolist()
    [0.1, 0.3]
    """
    parts = [p for p in parts if len(p)]
    if not parts:
        return FitSample.empty()
    priorities = np.concatenate([p.priorities for p in parts])
    coords = np.concatenate([p.coords for p in parts])
    if len(priorities) > limit:
        # Only pixels at or below the limit-th priority can be kept: sort just those.
        cutoff = np.partition(priorities, limit - 1)[limit - 1]
        candidates = np.flatnonzero(priorities <= cutoff)
    else:
        candidates = np.arange(len(priorities))
    order = candidates[np.argsort(priorities[candidates], kind="stable")]
    ranked = priorities[order]
    if np.any(ranked[1:] == ranked[:-1]):
        # Equal priorities (vanishingly rare): break ties by the pixel's coordinates,
        # so the result is the same whatever the order and grouping of the parts.
        c = coords[candidates]
        order = candidates[np.lexsort((c[:, 2], c[:, 1], c[:, 0], priorities[candidates]))]
    order = order[:limit]
    return FitSample(priorities=priorities[order], coords=coords[order])


def fit_corpus_palette(
    coords: da.Array, *, k: int, color_space: str, random_state: int
) -> CorpusPalette:
    """Cluster the gathered fit sample (a dask array) into the corpus palette.

    Clusters that come out empty are dropped by :class:`DaskKMeans`; clusters
    whose centres round to the same 8-bit colour are merged by keeping the
    larger, so the palette never shows a fake or repeated colour.
    """
    n_points = coords.shape[0]
    if n_points == 0:
        raise ValueError(
            "no opaque pixel in any image: there is nothing to fit a corpus palette to"
        )
    # Persisted once: every k-means step then reads the same chunks, wherever they live.
    coords = coords.rechunk((FIT_CHUNK_ROWS, 3)).persist()
    model = DaskKMeans(
        min(k, n_points),
        random_state=random_state,
        n_init=N_INIT,
        init_sample_size=INIT_SAMPLE_SIZE,
    ).fit(coords)
    colors = space_to_rgb(model.cluster_centers_, color_space)
    # Largest cluster first, ties by colour value; then keep the first of any repeated colour.
    order = np.lexsort((pack_rgb(colors), -model.counts_))
    _, first = np.unique(pack_rgb(colors[order]), return_index=True)
    keep = order[np.sort(first)]
    return CorpusPalette(
        colors=colors[keep],
        centers=model.cluster_centers_[keep],
        color_space=color_space,
        inertia=model.inertia_,
        n_iter=model.n_iter_,
        sample_size=int(n_points),
        n_dropped=model.n_empty_ + len(order) - len(keep),
    )


def assign_to_corpus(sample: Sample, corpus: CorpusPalette, options: PaletteOptions) -> Palette:
    """Describe one image over the corpus palette.

    Every opaque sample pixel goes to its nearest corpus colour (in the job's
    colour space). The result is a :class:`Palette` of the corpus colours the
    image uses, largest share first, with ``corpus_index`` naming each one.
    """
    pixels, included, background = clustered_pixels(sample, options)
    keys, inverse = np.unique(pack_rgb(pixels), return_inverse=True)
    distinct_labels, _ = nearest_center(
        rgb_to_space(unpack_rgb(keys), options.color_space), corpus.centers
    )
    n_colors = len(corpus.colors)
    return ranked_palette(
        sample,
        options,
        pixels=pixels,
        opaque=included,
        colors=corpus.colors,
        color_of_pixel=distinct_labels[inverse],
        tie_keys=np.arange(n_colors),
        corpus_index=np.arange(n_colors, dtype=np.int16),
        background=background,
    )
