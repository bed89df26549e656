"""One image, from its pixels to a :class:`Palette`.

This is the unit of work of the whole project: the job runs it once per image
inside a Dask task, and ``palette-dask show`` runs it directly.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from threadpoolctl import ThreadpoolController

from ._loops import squared_error_sum
from .background import border_background
from .color import (
    lab_to_rgb,
    pack_rgb,
    rgb_to_hex,
    rgb_to_lab,
    rgb_to_space,
    space_to_rgb,
    unpack_rgb,
)
from .errors import UsageTypeError
from .imaging import ImageError, Sample, array_to_sample, decode_sample
from .kmeans import dask_ml_centers, histogram_kmeans, nearest_center, weighted_kmeans
from .names import color_families, color_names
from .options import (
    BACKGROUND_BORDER_SHARE,
    BACKGROUND_DELTA_E,
    COLOR_SPACES,
    TRANSPARENT_LABEL,
    PaletteOptions,
    ReadOptions,
)
from .reads import read_bytes


@functools.cache
def _thread_pools() -> ThreadpoolController:
    # Inspecting the loaded BLAS/OpenMP libraries costs milliseconds: do it once.
    return ThreadpoolController()


def single_threaded():
    """A context in which BLAS and OpenMP use one thread.

    Parallelism comes from running many images at once; one thread each keeps
    workers from oversubscribing the cores and floating-point results identical
    on every machine.
    """
    return _thread_pools().limit(limits=1)


@dataclass(frozen=True)
class Palette:
    """The colour palette of one image.

    Attributes
    ----------
    colors : (n, 3) uint8 ndarray
        sRGB colours, largest share first; ``n <= k``, fewer when the image has
        fewer distinct colours.
    proportions : (n,) float32 ndarray
        Share of the clustered pixels per colour; sums to 1.
    counts : (n,) int64 ndarray
        Clustered pixels per colour.
    labels : (h, w) uint8 ndarray
        Palette index of every sample pixel, 255 where the pixel was left out
        (alpha below the threshold, or background with ``ignore_background``).
    color_space : str
        Space the clustering ran in.
    mse_rgb : float
        Mean squared error (0–255 RGB, per channel) of the sample redrawn with
        the palette colours against the sample, over clustered pixels.
    sample : Sample
        The resized image the palette was computed from.
    corpus_index : (n,) int16 ndarray or None
        For an image described over a corpus palette, the corpus colour of
        each entry; ``None`` for the image's own palette.
    background : str or None
        The background colour left out of clustering (``ignore_background``),
        as a hex code; ``None`` when none was.
    """

    colors: np.ndarray
    proportions: np.ndarray
    counts: np.ndarray
    labels: np.ndarray
    color_space: str
    mse_rgb: float
    sample: Sample
    corpus_index: np.ndarray | None = None
    background: str | None = None

    @property
    def hex(self) -> list[str]:
        """``#rrggbb`` code of each colour."""
        return rgb_to_hex(self.colors)

    @cached_property
    def lab(self) -> np.ndarray:
        """(n, 3) float32 CIELAB (D65) coordinates of each colour."""
        return rgb_to_lab(self.colors)

    def redraw(self) -> np.ndarray:
        """The sample with every clustered pixel replaced by its palette colour.

        Left-out pixels are returned black; use ``labels == 255`` to mask them.
        """
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[: len(self.colors)] = self.colors
        return lut[self.labels]

    def to_dict(self) -> dict:
        """The palette as plain values (``palette-dask show --json``): each colour's hex
        code, RGB, share and pixel count, the error, and where its colours came from."""
        colors = zip(
            self.hex,
            color_names(self.colors),
            color_families(self.colors),
            self.colors.tolist(),
            self.proportions,
            self.counts,
            strict=True,
        )
        return {
            "colors": [
                {
                    "hex": h,
                    "name": name,
                    "family": family,
                    "rgb": rgb,
                    "proportion": round(float(p), 6),
                    "pixel_count": int(n),
                }
                for h, name, family, rgb, p, n in colors
            ],
            "background": self.background,
            "mse_rgb": self.mse_rgb,
            "icc_profile": self.sample.icc_profile,
            "warning": self.sample.warning,
        }

    def __repr__(self) -> str:
        shares = ", ".join(f"{h} {p:.1%}" for h, p in zip(self.hex, self.proportions, strict=True))
        return f"Palette({shares})"


def extract_palette(
    image,
    *,
    k: int = PaletteOptions.k,
    color_space: str = PaletteOptions.color_space,
    engine: str = PaletteOptions.engine,
    max_pixels: int = PaletteOptions.max_pixels,
    alpha_threshold: int = PaletteOptions.alpha_threshold,
    random_state: int = PaletteOptions.random_state,
    max_image_pixels: int = PaletteOptions.max_image_pixels,
    max_file_bytes: int = PaletteOptions.max_file_bytes,
    ignore_background: bool = PaletteOptions.ignore_background,
    min_delta_e: float = PaletteOptions.min_delta_e,
) -> Palette:
    """Extract the ``k``-colour palette of one image, without Dask.

    Parameters
    ----------
    image : str, os.PathLike, bytes or (H, W, 3|4) uint8 ndarray
        A path or fsspec URL, the encoded file's bytes, or RGB(A) pixels.
    k : int
        Largest number of colours, 1–254.
    color_space : {"rgb", "lab", "oklab"}
        Space the pixels are clustered in.
    engine : {"histogram", "sklearn", "dask-ml"}
        Clustering engine; see :mod:`palette_dask.kmeans`.
    max_pixels : int
        The image is resized (never upscaled) to at most this many pixels.
    alpha_threshold : int
        Pixels with alpha below this (0–255) are left out.
    random_state : int
        Seed; the same image and seed always give the same palette.
    max_image_pixels : int
        Refuse images declaring more pixels than this, before decoding.
    max_file_bytes : int
        Refuse files larger than this, before reading them.
    ignore_background : bool
        Leave the background out of clustering, as transparent pixels are: the
        colour covering at least half of the border pixels (within ΔE 10), where
        it reaches the border (see :mod:`palette_dask.background`). Its colour is
        the palette's ``background``; an image with a busy border is unchanged.
    min_delta_e : float
        After clustering, merge palette colours closer than this CIELAB ΔE
        (1976), the closest pair first, into their share-weighted mean colour:
        a palette may then have fewer than ``k`` colours. 0 (the default) merges
        none.

    Returns
    -------
    Palette

    Raises
    ------
    ImageError
        If the image cannot be decoded or has no opaque pixel.

    Examples
    --------
    >>> img = np.zeros((10, 10, 3), np.uint8); img[:, :3] = (255, 0, 0)
    >>> extract_palette(img, k=5)
    Palette(#000000 70.0%, #ff0000 30.0%)
    """
    options = PaletteOptions(
        k=k,
        color_space=color_space,
        engine=engine,
        max_pixels=max_pixels,
        alpha_threshold=alpha_threshold,
        random_state=random_state,
        max_image_pixels=max_image_pixels,
        max_file_bytes=max_file_bytes,
        ignore_background=ignore_background,
        min_delta_e=min_delta_e,
    )
    sample = load_sample(image, options)
    with single_threaded():
        return palette_from_sample(sample, options)


def warm_up() -> None:
    """Compile the clustering stage's loops into numba's on-disk cache.

    A process would otherwise compile them at its first image, about ten
    seconds of CPU; ``make install`` runs this once, and every process after
    it (the job's workers included) loads the compiled code.
    """
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    # Decoders hand some images over read-only, and numba compiles the loops once
    # for each kind of array.
    read_only = pixels.copy()
    read_only.setflags(write=False)
    for image in (pixels, read_only):
        for color_space in COLOR_SPACES:
            extract_palette(image, color_space=color_space)


def load_sample(image, options: PaletteOptions, read_options: ReadOptions | None = None) -> Sample:
    """The resized :class:`Sample` of a path, URL, encoded bytes or pixel array.

    A path or URL is read with ``read_options`` (default settings otherwise),
    within ``options.max_file_bytes``.
    """
    if isinstance(image, np.ndarray):
        return array_to_sample(image, max_pixels=options.max_pixels)
    if isinstance(image, (str, os.PathLike)):
        read_options = dataclasses.replace(
            read_options or ReadOptions(), max_file_bytes=options.max_file_bytes
        )
        image = read_bytes(os.fspath(image), read_options)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_sample(
            bytes(image), max_pixels=options.max_pixels, max_image_pixels=options.max_image_pixels
        )
    raise UsageTypeError(
        f"`image` must be a path, URL, bytes or ndarray, got {type(image).__name__}"
    )


def palette_from_sample(sample: Sample, options: PaletteOptions) -> Palette:
    """Cluster a sample's opaque pixels into a :class:`Palette`; assumes validated options.

    An image with at most ``k`` distinct colours gets exactly those colours;
    otherwise the chosen engine clusters them. Clusters whose colours round to
    the same 8-bit value are merged, so a
    palette never repeats a colour, and colours are sorted by share (ties by
    colour value) so the result is fully deterministic.
    """
    k, color_space, engine = options.k, options.color_space, options.engine
    pixels, included, background = clustered_pixels(sample, options)

    found = None
    if engine == "histogram":
        found = histogram_kmeans(
            pixels, k=k, color_space=color_space, random_state=options.random_state
        )
    if found is not None:
        centers, cluster_of_pixel = found
        centers_rgb = space_to_rgb(centers, color_space)
    else:
        centers_rgb, cluster_of_pixel = _cluster_distinct(pixels, options)
    if options.min_delta_e > 0:
        centers_rgb, cluster_of_pixel = merge_near_colors(
            centers_rgb, cluster_of_pixel, options.min_delta_e
        )

    # Merge clusters that land on the same 8-bit colour.
    center_keys, cluster_to_color = np.unique(pack_rgb(centers_rgb), return_inverse=True)
    return ranked_palette(
        sample,
        options,
        pixels=pixels,
        opaque=included,
        colors=unpack_rgb(center_keys),
        color_of_pixel=cluster_to_color[cluster_of_pixel],
        tie_keys=center_keys,
        background=background,
    )


def merge_near_colors(
    colors: np.ndarray, color_of_pixel: np.ndarray, min_delta_e: float
) -> tuple[np.ndarray, np.ndarray]:
    """Merge the colours (n, 3) uint8 closer than ``min_delta_e`` in CIELAB, the closest
    pair first (ties: the lowest indexes), each pair into its pixel-weighted mean colour,
    until no two are that close; returns the colours left and each pixel's colour.

    Examples
    --------
    >>> colors = np.array([[200, 30, 40], [203, 33, 42], [20, 90, 200]], np.uint8)
    >>> merged, of_pixel = merge_near_colors(colors, np.array([0, 0, 1, 2]), 8.0)
    >>> merged.tolist(), of_pixel.tolist()
    ([[201, 31, 41], [20, 90, 200]], [0, 0, 0, 1])
    """
    counts = np.bincount(color_of_pixel, minlength=len(colors)).astype(np.float64)
    used = np.flatnonzero(counts)
    lab = rgb_to_lab(colors[used]).astype(np.float64)
    weight = counts[used]
    group = np.arange(len(used))  # each used colour's merged colour
    alive = np.ones(len(used), bool)
    while alive.sum() > 1:
        live = np.flatnonzero(alive)
        squared = ((lab[live, None] - lab[None, live]) ** 2).sum(axis=2)
        squared[np.tril_indices(len(live))] = np.inf
        i, j = np.unravel_index(np.argmin(squared), squared.shape)
        if squared[i, j] >= min_delta_e**2:
            break
        keep, gone = live[i], live[j]
        total = weight[keep] + weight[gone]
        lab[keep] = (lab[keep] * weight[keep] + lab[gone] * weight[gone]) / total
        weight[keep], alive[gone] = total, False
        group[group == gone] = keep
    live = np.flatnonzero(alive)
    renumber = np.zeros(len(used), np.int64)
    renumber[live] = np.arange(len(live))
    of_color = np.zeros(len(colors), np.int64)
    of_color[used] = renumber[group]
    return lab_to_rgb(lab[live]), of_color[color_of_pixel]


def _cluster_distinct(pixels: np.ndarray, options: PaletteOptions):
    """Cluster an image's distinct colours, weighted by pixel count (the exact objective).

    Returns the 8-bit centre colours and each pixel's cluster. An image with at
    most ``k`` distinct colours gets exactly those colours.
    """
    keys, inverse, key_counts = np.unique(pack_rgb(pixels), return_inverse=True, return_counts=True)
    distinct = unpack_rgb(keys)
    if len(distinct) <= options.k:
        return distinct, inverse
    coords = rgb_to_space(distinct, options.color_space)
    if options.engine == "dask-ml":
        centers = dask_ml_centers(coords[inverse], k=options.k, random_state=options.random_state)
        # Equal colours have equal coordinates, hence the same nearest centre.
        distinct_labels, _ = nearest_center(coords, centers)
    else:
        centers, distinct_labels = weighted_kmeans(
            coords, key_counts, k=options.k, random_state=options.random_state
        )
    return space_to_rgb(centers, options.color_space), distinct_labels[inverse]


def ranked_palette(
    sample: Sample,
    options: PaletteOptions,
    *,
    pixels: np.ndarray,
    opaque: np.ndarray | None,
    colors: np.ndarray,
    color_of_pixel: np.ndarray,
    tie_keys: np.ndarray,
    corpus_index: np.ndarray | None = None,
    background: str | None = None,
) -> Palette:
    """The :class:`Palette` of pixels assigned to candidate colours.

    Colours no pixel took are dropped; the rest are ranked by pixel count,
    largest first, ties broken by ``tie_keys`` so the order is deterministic.
    ``corpus_index`` (one per candidate colour) is carried along when given.
    """
    counts = np.bincount(color_of_pixel, minlength=len(colors))
    used = np.flatnonzero(counts)
    used = used[np.lexsort((tie_keys[used], -counts[used]))]
    rank_of_color = np.full(len(colors), TRANSPARENT_LABEL, dtype=np.uint8)
    rank_of_color[used] = np.arange(len(used), dtype=np.uint8)
    pixel_ranks = rank_of_color[color_of_pixel]
    # An exact integer sum: the error does not depend on summation order.
    squared_error = squared_error_sum(pixels, np.ascontiguousarray(colors[used]), pixel_ranks)
    return Palette(
        colors=colors[used],
        proportions=(counts[used] / counts.sum()).astype(np.float32),
        counts=counts[used].astype(np.int64),
        labels=full_labels(pixel_ranks, opaque, sample.shape),
        color_space=options.color_space,
        mse_rgb=squared_error / (3 * len(pixels)),
        sample=sample,
        corpus_index=None if corpus_index is None else corpus_index[used],
        background=background,
    )


def opaque_pixels(sample: Sample, alpha_threshold: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The sample's pixels that take part in clustering, and the mask that picked them.

    Returns ``(pixels, opaque)``: ``(n, 3)`` uint8 colours and a flat boolean
    mask, or ``None`` when the sample has no alpha channel.

    Raises
    ------
    ImageError
        When no pixel reaches ``alpha_threshold``.
    """
    rgb = sample.rgb.reshape(-1, 3)
    if sample.alpha is None:
        return rgb, None
    opaque = sample.alpha.reshape(-1) >= alpha_threshold
    pixels = rgb[opaque]
    if len(pixels) == 0:
        raise ImageError(
            f"no opaque pixels: every pixel has alpha below alpha_threshold={alpha_threshold}",
            format=sample.format,
        )
    return pixels, opaque


def clustered_pixels(
    sample: Sample, options: PaletteOptions
) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """The sample's pixels that take part in clustering, the flat mask that picked them
    (``None``: all), and the hex code of the background left out (``None``: none).

    Opaque pixels (see :func:`opaque_pixels`), less the background with
    ``options.ignore_background`` (see :mod:`palette_dask.background`), unless
    it would leave less than 1 % of them.
    """
    pixels, opaque = opaque_pixels(sample, options.alpha_threshold)
    if not options.ignore_background:
        return pixels, opaque, None
    height, width = sample.shape
    found = border_background(
        sample.rgb,
        None if opaque is None else opaque.reshape(height, width),
        BACKGROUND_DELTA_E,
        BACKGROUND_BORDER_SHARE,
    )
    if found is None:
        return pixels, opaque, None
    included = ~found.mask.reshape(-1) if opaque is None else opaque & ~found.mask.reshape(-1)
    if included.sum() < 0.01 * len(pixels):
        return pixels, opaque, None  # all but nothing is background: keep the image whole
    return sample.rgb.reshape(-1, 3)[included], included, found.hex


def full_labels(ranks: np.ndarray, opaque: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """The ``(h, w)`` label image: ``ranks`` at opaque pixels, 255 elsewhere."""
    if opaque is None:
        return ranks.astype(np.uint8).reshape(shape)
    labels = np.full(opaque.shape, TRANSPARENT_LABEL, dtype=np.uint8)
    labels[opaque] = ranks
    return labels.reshape(shape)
