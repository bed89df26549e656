"""How an image becomes a palette and how its bytes are read: the options, their
defaults and their checks, in one place.

:func:`~palette_dask.extract_palette`, :class:`~palette_dask.JobSpec` and the
command line's help take their defaults from :class:`PaletteOptions` and
:class:`ReadOptions`. This module imports nothing heavier than the standard
library, so that reading a dataset or asking for ``--help`` does not load the
compute stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._checks import check_int
from .errors import UsageError

COLOR_SPACES = ("rgb", "lab", "oklab")
ENGINES = ("histogram", "sklearn", "dask-ml")
MAX_K = 254
# The label of pixels left out of clustering (alpha below the threshold) in
# label images; palettes have at most MAX_K colours, so it is never an index.
TRANSPARENT_LABEL = 255
# ignore_background: a border colour is the background when the border pixels
# within this CIELAB distance of it are at least this share of the border.
BACKGROUND_DELTA_E = 10.0
BACKGROUND_BORDER_SHARE = 0.5
# Images per shard of a search index: what one thread (or one Dask task) searches.
SHARD_IMAGES = 4_000_000


@dataclass(frozen=True)
class PaletteOptions:
    """How one image becomes a palette; validated on creation.

    The fields are those of :func:`~palette_dask.extract_palette`; a job's are
    in its :class:`~palette_dask.JobSpec`.

    Examples
    --------
    >>> PaletteOptions(k=8, color_space="lab").k
    8
    >>> PaletteOptions(k=0)
    Traceback (most recent call last):
    ...
    palette_dask.errors.UsageError: `k` must be between 1 and 254, got 0
    """

    k: int = 5
    color_space: str = "rgb"
    engine: str = "histogram"
    max_pixels: int = 40_000
    alpha_threshold: int = 128
    random_state: int = 0
    max_image_pixels: int = 250_000_000
    max_file_bytes: int = 256 * 2**20
    ignore_background: bool = False
    min_delta_e: float = 0.0

    def __post_init__(self):
        check_int("k", self.k, 1, MAX_K)
        if self.color_space not in COLOR_SPACES:
            raise UsageError(
                f"`color_space` must be one of {COLOR_SPACES}, got {self.color_space!r}"
            )
        if self.engine not in ENGINES:
            raise UsageError(f"`engine` must be one of {ENGINES}, got {self.engine!r}")
        check_int("max_pixels", self.max_pixels, 1)
        check_int("alpha_threshold", self.alpha_threshold, 0, 255)
        check_int("random_state", self.random_state, 0, 2**32 - 1)
        check_int("max_image_pixels", self.max_image_pixels, 1)
        check_int("max_file_bytes", self.max_file_bytes, 1)
        if not isinstance(self.ignore_background, bool):
            raise UsageError(
                f"`ignore_background` must be true or false, got {self.ignore_background!r}"
            )
        if (
            isinstance(self.min_delta_e, bool)
            or not isinstance(self.min_delta_e, (int, float))
            or not 0 <= self.min_delta_e < 1000
        ):
            raise UsageError(
                f"`min_delta_e` must be a number from 0 to 1000, got {self.min_delta_e!r}"
            )


@dataclass(frozen=True)
class ReadOptions:
    """How a task reads its images' bytes; a job's come from its :class:`~palette_dask.JobSpec`.

    Attributes
    ----------
    concurrency : int
        Reads in flight at once.
    per_host : int
        Reads in flight to one host (``netloc`` of the URI: a bucket, for object
        stores) when a task reads from several.
    timeout : float
        Seconds one try may take, from the request to the last byte.
    retries : int
        Further tries after a passing failure.
    buffer_bytes : int
        Bytes read ahead of decoding, at most (roughly: sizes are known only once read).
    max_file_bytes : int
        Files larger than this are refused, without reading more than this.
    storage_options : dict
        fsspec options of remote URIs (see :mod:`palette_dask.storage`).
    image_column : str or None
        The image column of Parquet containers (see :func:`palette_dask.containers.image_column`).

    Examples
    --------
    >>> ReadOptions(timeout=5).retries
    2
    """

    concurrency: int = 64
    per_host: int = 32
    timeout: float = 30.0
    retries: int = 2
    buffer_bytes: int = 32 * 2**20
    max_file_bytes: int = PaletteOptions.max_file_bytes
    storage_options: dict = field(default_factory=dict)
    image_column: str | None = None
