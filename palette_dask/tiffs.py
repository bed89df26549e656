"""TIFFs that Pillow cannot decode, read with tifffile: float, many samples, unusual layouts.

Scientific instruments write TIFFs Pillow refuses: float32/float64 colour,
planar sample layouts, more than four samples per pixel, many pages. tifffile
(imageio's TIFF reader) reads them; this module turns the first page into the
8-bit RGB and optional alpha the rest of the stage expects, as the first frame
of a GIF is taken. The declared size is checked from the page's tags before
any pixel is read.

Mapping to 8 bits: unsigned integers by their type's full range (as 16-bit
PNGs are); floats in [0, 1] as they are, other floats and signed integers by
the page's ``SMinSampleValue``/``SMaxSampleValue`` tags, else by the range of
the finite values. Pixels that are not finite (NaN, inf) have no colour: they
become transparent and are left out of the palette.
"""

from __future__ import annotations

import io
import struct
from typing import NamedTuple

import numpy as np

from .errors import ImageError, reason
from .formats import check_pixels

# TIFF ExtraSamples values that are alpha (associated and unassociated).
_ALPHA_SAMPLES = (1, 2)
_PHOTOMETRIC_SEPARATED = 5  # CMYK
_ICC_PROFILE_TAG = 34675
# What tifffile and its codecs raise for data they cannot read (imagecodecs' errors are
# RuntimeErrors, tifffile's own ValueErrors).
_TIFF_ERRORS = (
    ValueError,
    OSError,
    RuntimeError,
    KeyError,
    IndexError,
    NotImplementedError,
    struct.error,
)


class TiffPicture(NamedTuple):
    """The first page of a TIFF in 8 bits per sample, and what says what its colours mean."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    width: int
    height: int
    icc_profile: bytes | None
    family: str  # "L" for grey samples, "RGB" for colour


def read_tiff(data: bytes, max_image_pixels: int) -> TiffPicture:
    """The first page of a TIFF as a :class:`TiffPicture`.

    Raises
    ------
    ImageError
        The page declares more than ``max_image_pixels`` pixels, or cannot be
        decoded (the message says what the file holds).

    Examples
    --------
    >>> import tifffile
    >>> buffer = io.BytesIO()
    >>> planar = np.full((2, 3, 4, 5), 0.5)  # 2 pages of 3 samples of 4 x 5 pixels
    >>> tifffile.imwrite(buffer, planar, photometric="rgb", planarconfig="separate")
    >>> picture = read_tiff(buffer.getvalue(), 10**6)
    >>> picture.rgb.shape, picture.rgb[0, 0].tolist(), picture.alpha, picture.family
    ((4, 5, 3), [128, 128, 128], None, 'RGB')
    """
    import tifffile  # imported here: most jobs never meet a TIFF that Pillow refuses

    try:
        tiff = tifffile.TiffFile(io.BytesIO(data))
    except _TIFF_ERRORS as exc:
        raise ImageError(f"corrupt TIFF header: {reason(exc)}", format="TIFF") from None
    with tiff:
        page = tiff.pages.first
        width, height = int(page.imagewidth), int(page.imagelength)
        check_pixels(width, height, max_image_pixels, "TIFF")
        try:
            pixels = page.asarray(maxworkers=1)
            rgb, alpha, family = _to_rgb8(pixels, page)
        except _TIFF_ERRORS as exc:
            raise ImageError(f"{describe(tiff)}: {reason(exc)}", format="TIFF") from None
        profile = page.tags.get(_ICC_PROFILE_TAG)
    icc = None if profile is None else bytes(profile.value)
    return TiffPicture(rgb, alpha, width, height, icc, family)


def describe(tiff) -> str:
    """What a TIFF holds, in words: ``TIFF with 2 pages of 3×10×10 float64 samples``."""
    page = tiff.pages.first
    pages = len(tiff.pages)
    shape = "×".join(str(n) for n in page.shape)
    return f"TIFF with {pages} page{'s' if pages != 1 else ''} of {shape} {page.dtype} samples"


def _to_rgb8(pixels: np.ndarray, page) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Height × width × samples, then colour and alpha in 8 bits, and the colour family."""
    axes = page.axes
    if "S" not in axes:
        pixels, axes = pixels[..., None], axes + "S"
    # Keep the first of any extra axes (pages of a stack stored in one page, depth …).
    for axis in [a for a in axes if a not in "YXS"]:
        pixels, axes = np.take(pixels, 0, axis=axes.index(axis)), axes.replace(axis, "")
    pixels = np.moveaxis(pixels, [axes.index("Y"), axes.index("X"), axes.index("S")], [0, 1, 2])
    n_samples = pixels.shape[2]
    extras = tuple(page.extrasamples or ())
    n_color = n_samples - len(extras) if extras else min(n_samples, 3)
    if int(page.photometric) == _PHOTOMETRIC_SEPARATED:
        raise ValueError("CMYK samples are not supported in this layout")
    color = pixels[..., :1] if n_color < 3 else pixels[..., :3]
    alpha_index = next(
        (n_color + i for i, kind in enumerate(extras) if int(kind) in _ALPHA_SAMPLES), None
    )
    finite = np.isfinite(pixels).all(axis=2) if pixels.dtype.kind == "f" else None
    color8 = to_uint8(color, page)
    if color8.shape[2] == 1:
        color8 = np.repeat(color8, 3, axis=2)
    alpha = None
    if alpha_index is not None:
        alpha = to_uint8(pixels[..., alpha_index : alpha_index + 1], page)[..., 0]
    if finite is not None and not finite.all():
        alpha = np.where(finite, 255 if alpha is None else alpha, 0).astype(np.uint8)
    return np.ascontiguousarray(color8), alpha, "L" if n_color < 3 else "RGB"


def to_uint8(samples: np.ndarray, page=None) -> np.ndarray:
    """Samples of any numeric type mapped to 0–255 (see the module's rules).

    Examples
    --------
    >>> to_uint8(np.array([0, 32768, 65535], np.uint16)).tolist()
    [0, 128, 255]
    >>> to_uint8(np.array([-1.0, 0.0, 3.0])).tolist()
    [0, 64, 255]
    """
    kind = samples.dtype.kind
    if kind == "b":
        return samples.astype(np.uint8) * 255
    if kind == "u":
        if samples.dtype == np.uint8:
            return samples
        top = float(np.iinfo(samples.dtype).max)
        return np.rint(samples.astype(np.float64) * (255.0 / top)).astype(np.uint8)
    low, high = _sample_range(samples, page)
    values = samples.astype(np.float64)
    scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return np.rint(np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255)).astype(np.uint8)


def _sample_range(samples: np.ndarray, page) -> tuple[float, float]:
    """The range mapped to 0–255: the page's tags, else [0, 1] when the data lie in it, else
    the finite data's own range."""
    tags = page.tags if page is not None else {}
    if "SMinSampleValue" in tags and "SMaxSampleValue" in tags:
        low = np.min(tags["SMinSampleValue"].value)
        high = np.max(tags["SMaxSampleValue"].value)
        if np.isfinite(low) and np.isfinite(high) and high > low:
            return float(low), float(high)
    finite = samples[np.isfinite(samples)] if samples.dtype.kind == "f" else samples
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    if samples.dtype.kind == "f" and low >= 0.0 and high <= 1.0:
        return 0.0, 1.0
    return low, high
