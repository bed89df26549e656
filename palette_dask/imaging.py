"""Decode, orient, colour-manage and resize images to the clustering budget.

The stage turns encoded bytes into a *sample*: an 8-bit sRGB array of at most
``max_pixels`` pixels plus an optional alpha channel, with the aspect ratio of
the upright image. Formats whose decoders can scale down on the way take that
fast path, straight to the smallest size at least as large as the sample:
JPEG's draft mode (DCT scaling by up to 8), JPEG 2000's resolution levels, and
HEIF's embedded thumbnails when they are a scaled copy of the picture. Every
other format is decoded in full by Pillow (or its plugins, see
:mod:`palette_dask.formats`), and TIFFs Pillow refuses by tifffile
(:mod:`palette_dask.tiffs`).

Resizing averages throughout: Pillow's box filter (each output pixel is the
mean of the source pixels whose centres it covers) on 8-bit opaque images, so
the decoded image is never copied to floating point; scikit-image's
area-weighted ``resize_local_mean`` on premultiplied colour for images with
transparency, so transparent pixels never bleed into the edges of opaque ones.
Colour profiles are applied to the sample (:mod:`palette_dask.profiles`):
40,000 pixels instead of the whole picture, averaged in the file's own
encoding as sRGB files are.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass

import numpy as np
import pyspng
from PIL import Image, ImageCms, UnidentifiedImageError

from . import profiles
from .color import round_to_uint8
from .errors import ImageError, reason
from .formats import (
    IMAGE_FORMATS,
    JPEG_FORMATS,
    check_declared_size,
    check_pixels,
    png_chunk,
    sniff,
)
from .tiffs import read_tiff

# palette-dask refuses oversized images itself, before decoding, against the job's
# `max_image_pixels`; Pillow's own process-wide guard would refuse some of them
# earlier with a different limit, so it is switched off.
Image.MAX_IMAGE_PIXELS = None

# What opening or decoding raises for bad data (RuntimeError: the JPEG XL plugin).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, RuntimeError, struct.error)
# EXIF orientation tag, and the transpose that makes each orientation upright
# (as ``ImageOps.exif_transpose``); orientations 5–8 swap width and height.
_ORIENTATION_TAG = 0x0112
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
# PNG (bit depth, colour type) pairs libspng decodes to the pixels Pillow gives; colour types.
_PNG_GREY, _PNG_ALPHA_TYPES = 0, (4, 6)
_SPNG_LAYOUTS = {(8, 0), (8, 2), (8, 3), (8, 4), (8, 6), (16, 0), (16, 2), (16, 6)}
# TIFF tags that say whether Pillow can decode a layout.
_TIFF_BITS_PER_SAMPLE, _TIFF_SAMPLES_PER_PIXEL, _TIFF_PLANAR_CONFIGURATION = 258, 277, 284
_TIFF_SAMPLE_FORMAT = 339
# JPEG 2000 codestream markers: start of codestream and image size, coding style (whose fifth
# parameter byte is the number of resolution levels below full size), start of tile.
_J2K_START, _J2K_COD, _J2K_TILE = b"\xff\x4f\xff\x51", 0xFF52, 0xFF90


@dataclass(frozen=True)
class Sample:
    """An image resized to the clustering budget.

    Attributes
    ----------
    rgb : (h, w, 3) uint8 ndarray
        Colour, upright (EXIF orientation applied).
    alpha : (h, w) uint8 ndarray or None
        Opacity, or ``None`` for images without transparency.
    format : str
        Pillow's name of the encoded format (``"JPEG"``, ``"PNG"`` …).
    width, height : int
        Size of the upright image before resizing.
    icc_profile : str or None
        What the file says its colours are (an embedded profile's description,
        or its colour signal; see :func:`palette_dask.profiles.conversion_for`),
        ``None`` when it says nothing and its numbers are taken as sRGB.
    warning : str or None
        Why the image's declared colours could not be applied, if they could not.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    format: str
    width: int
    height: int
    icc_profile: str | None = None
    warning: str | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.rgb.shape[:2]


def sample_shape(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """Height and width of the sample: aspect kept, at most ``max_pixels``, never upscaled.

    Examples
    --------
    >>> sample_shape(4000, 3000, 40_000)
    (173, 231)
    >>> sample_shape(100, 50, 40_000)
    (50, 100)
    """
    if width * height <= max_pixels:
        return height, width
    scale = math.sqrt(max_pixels / (width * height))
    out_w = max(1, math.floor(width * scale))
    out_h = max(1, math.floor(height * scale))
    # A side clamped to one pixel must not let the other break the budget.
    out_h = min(out_h, max(1, max_pixels // out_w))
    # Flooring both sides keeps the product under budget; one side may still grow by a pixel.
    if (out_w + 1) * out_h <= max_pixels and abs((out_w + 1) / out_h - width / height) < abs(
        out_w / out_h - width / height
    ):
        out_w += 1
    return out_h, out_w


def decode_sample(data: bytes, *, max_pixels: int, max_image_pixels: int) -> Sample:
    """Decode encoded image bytes into a :class:`Sample` of at most ``max_pixels`` pixels.

    Parameters
    ----------
    data : bytes
        The encoded file, in any of :data:`palette_dask.formats.IMAGE_FORMATS`
        (first frame or page of animations and multi-page files).
    max_pixels : int
        Pixel budget of the sample.
    max_image_pixels : int
        Images declaring more pixels than this are refused before decoding.

    Returns
    -------
    Sample

    Raises
    ------
    ImageError
        Empty, unrecognised, oversized, truncated or corrupt input.

    Examples
    --------
    >>> png = io.BytesIO()
    >>> Image.new("RGB", (400, 300)).save(png, "PNG")
    >>> decode_sample(png.getvalue(), max_pixels=1200, max_image_pixels=10**8).rgb.shape
    (30, 40, 3)
    """
    if not data:
        raise ImageError("empty file (0 bytes)")
    check_declared_size(data, max_image_pixels)
    try:
        opened = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        if sniff(data) == "TIFF":  # a TIFF layout Pillow does not know
            return _tiff_sample(data, max_pixels, max_image_pixels)
        raise ImageError(_unrecognised(data), format=sniff(data)) from None
    except _DECODE_ERRORS as exc:
        fmt = sniff(data)
        raise ImageError(f"corrupt {fmt or 'image'} header: {reason(exc)}", format=fmt) from None
    with opened:
        fmt = opened.format or "unknown"
        if fmt not in IMAGE_FORMATS:
            raise ImageError(
                f"unsupported image format {fmt}; supported: {', '.join(IMAGE_FORMATS)}",
                format=fmt,
            )
        width, height = opened.size
        check_pixels(width, height, max_image_pixels, fmt)
        if fmt == "TIFF" and not _pillow_reads_tiff(opened):
            return _tiff_sample(data, max_pixels, max_image_pixels)
        try:
            orientation = png_orientation(data) if fmt == "PNG" else exif_orientation(opened)
            if orientation in _TRANSPOSING_ORIENTATIONS:
                width, height = height, width
            target = sample_shape(width, height, max_pixels)
            conversion = profiles.conversion_for(opened, data)
            if fmt in JPEG_FORMATS:
                rgb, alpha = _decode_jpeg_draft(opened, target, orientation, conversion)
            elif fmt == "PNG":
                rgb, alpha = decode_png(opened, data, orientation)
            else:
                rgb, alpha = _decode_scaled(opened, data, target, orientation, conversion)
        except _DECODE_ERRORS as exc:
            if fmt == "TIFF":  # Pillow reads the header but not these pixels
                return _tiff_sample(data, max_pixels, max_image_pixels)
            raise ImageError(
                f"truncated or corrupt {fmt} data: {reason(exc)}", format=fmt
            ) from None
    return _sample(rgb, alpha, target, fmt, (width, height), conversion)


def _sample(rgb, alpha, target, fmt: str, size: tuple[int, int], conversion) -> Sample:
    """Decoded pixels resized to ``target``, their colours in sRGB, as a :class:`Sample`."""
    rgb, alpha = _resize_premultiplied(rgb, alpha, target)
    return Sample(
        rgb=profiles.apply(conversion, rgb),
        alpha=alpha,
        format=fmt,
        width=size[0],
        height=size[1],
        icc_profile=conversion.profile,
        warning=conversion.warning,
    )


def exif_orientation(opened: Image.Image) -> int | None:
    """The EXIF orientation tag of an opened image (1–8), or ``None``."""
    return opened.getexif().get(_ORIENTATION_TAG)


def png_orientation(data: bytes) -> int | None:
    """The EXIF orientation of a PNG, from its ``eXIf`` chunk wherever it is.

    Pillow looks for an ``eXIf`` chunk after the image data by decoding the whole
    image; walking the chunk headers finds it without decoding a pixel.
    """
    body = png_chunk(data, b"eXIf")
    if body is None:
        return None
    exif = Image.Exif()
    exif.load(body)
    return exif.get(_ORIENTATION_TAG)


def _unrecognised(data: bytes) -> str:
    """Say what a file that is not an image looks like."""
    fmt = sniff(data)
    if fmt is not None:
        return f"{fmt} file whose header cannot be decoded (starts with {data[:12]!r})"
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head[:256]:
        kind = "an HTML page"
    elif head.startswith((b"<?xml", b"<svg")):
        kind = "an XML or SVG document (vector images are not supported)"
    elif all(32 <= c < 127 or c in (9, 10, 13) for c in data[:256]):
        kind = "a text file"
    else:
        kind = "not a recognised image file"
        return f"{kind} (starts with {data[:12]!r})"
    return f"{kind}, not an image (starts with {data[:12]!r})"


def _tiff_sample(data: bytes, max_pixels: int, max_image_pixels: int) -> Sample:
    """A TIFF that Pillow cannot decode, read with tifffile (first page; no EXIF orientation)."""
    tiff = read_tiff(data, max_image_pixels)
    target = sample_shape(tiff.width, tiff.height, max_pixels)
    icc = tiff.icc_profile
    conversion = profiles.SRGB if icc is None else profiles.icc_conversion(icc, tiff.family)
    return _sample(tiff.rgb, tiff.alpha, target, "TIFF", (tiff.width, tiff.height), conversion)


def _pillow_reads_tiff(opened: Image.Image) -> bool:
    """Whether Pillow decodes this TIFF's layout faithfully: unsigned samples, at most four of
    them, and no planar layout of more than 8 bits (which it opens but misreads)."""
    tags = opened.tag_v2
    bits = max(_as_tuple(tags.get(_TIFF_BITS_PER_SAMPLE, 8)))
    planar = tags.get(_TIFF_PLANAR_CONFIGURATION, 1) == 2
    unsigned = set(_as_tuple(tags.get(_TIFF_SAMPLE_FORMAT, 1))) <= {1}
    return unsigned and tags.get(_TIFF_SAMPLES_PER_PIXEL, 1) <= 4 and not (planar and bits > 8)


def _as_tuple(value) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def _decode_jpeg_draft(opened, target, orientation, conversion):
    """Decode a JPEG straight to about the target size, then fit it exactly and turn it upright."""
    size = stored_size(target, orientation)
    return fit_draft(decode_draft(opened, size, conversion.cmyk), size, orientation), None


def stored_size(target: tuple[int, int], orientation: int | None) -> tuple[int, int]:
    """Pillow's ``(width, height)`` of a ``(height, width)`` target, in the stored orientation."""
    height, width = target
    return (height, width) if orientation in _TRANSPOSING_ORIENTATIONS else (width, height)


def decode_draft(opened: Image.Image, size: tuple[int, int], cmyk=None) -> Image.Image:
    """Decode an opened JPEG, in RGB, at the smallest DCT scale (1/1 to 1/8) at least ``size``.

    ``cmyk`` is the ICC transform of a CMYK JPEG's embedded profile, if it has one.
    """
    opened.draft("RGB", size)
    opened.load()
    return _to_rgb(opened, cmyk)


def _to_rgb(image: Image.Image, cmyk=None) -> Image.Image:
    if image.mode == "CMYK" and cmyk is not None:
        return ImageCms.applyTransform(image, cmyk)
    return image.convert("RGB") if image.mode != "RGB" else image


def fit_draft(image: Image.Image, size: tuple[int, int], orientation: int | None) -> np.ndarray:
    """Box-filter a draft (at most twice ``size``) down to ``size`` and turn it upright."""
    if image.size != size:
        image = image.resize(size, Image.Resampling.BOX)
    if orientation in _UPRIGHT:
        image = image.transpose(_UPRIGHT[orientation])
    return np.asarray(image)


def _decode_scaled(opened, data, target, orientation, conversion):
    """Decode a non-JPEG image, scaled down by its decoder where the format allows it."""
    size = stored_size(target, orientation)
    if opened.format == "JPEG2000":
        opened.reduce = jpeg2000_reduce(data, opened.size, size)
    elif opened.format == "HEIF":
        opened.draft(None, size)  # an embedded thumbnail, when it is a scaled copy
    return decode_pixels(opened, orientation, conversion.cmyk)


def jpeg2000_reduce(data: bytes, full: tuple[int, int], size: tuple[int, int]) -> int:
    """How many times a JPEG 2000 image can be halved by its decoder and stay at least ``size``.

    Examples
    --------
    >>> header = bytes.fromhex("ff4f ff51 0004 0000 ff52 000c 00 00 0001 00 05")  # 5 levels
    >>> jpeg2000_reduce(header, (4000, 3000), (231, 173))
    4
    """
    levels = _jpeg2000_levels(data)
    reduce = 0
    while (
        reduce < levels
        and -(-full[0] // 2 ** (reduce + 1)) >= size[0]
        and -(-full[1] // 2 ** (reduce + 1)) >= size[1]
    ):
        reduce += 1
    return reduce


def _jpeg2000_levels(data: bytes) -> int:
    """Resolution levels of a JPEG 2000 codestream, from its main header's markers (0 if unsure)."""
    start = data.find(_J2K_START, 0, 1 << 16)
    if start < 0:
        return 0
    position = start + 2
    while position + 10 <= len(data):
        marker, length = struct.unpack_from(">HH", data, position)
        if marker == _J2K_COD:
            return data[position + 9]
        if marker == _J2K_TILE or marker >> 8 != 0xFF:
            return 0
        position += 2 + length
    return 0


def decode_png(opened: Image.Image, data: bytes, orientation: int | None = None):
    """Decode a PNG with libspng (pyspng): about twice as fast as Pillow, the same pixels.

    Layouts libspng reads differently stay with Pillow: a ``tRNS`` chunk (libspng
    leaves transparency out), bit depths under 8, 16-bit grey with alpha. Like
    Pillow, 16-bit colour keeps its high byte; 16-bit grey is rescaled as in
    :func:`decode_pixels`.
    """
    depth, color_type = data[24], data[25]
    if "transparency" in opened.info or (depth, color_type) not in _SPNG_LAYOUTS:
        return decode_pixels(opened, orientation)
    if color_type == _PNG_GREY and depth == 16:
        pixels, alpha = _grey_to_rgb8(pyspng.load(data)[..., 0]), None
    elif color_type in _PNG_ALPHA_TYPES:
        rgba = pyspng.load(data, "RGBA")
        pixels, alpha = rgba[..., :3], rgba[..., 3]
    else:
        pixels, alpha = pyspng.load(data, "RGB"), None
    return _upright(pixels, alpha, orientation)


def decode_pixels(opened: Image.Image, orientation: int | None = None, cmyk=None):
    """Decode the first frame of an opened image to upright 8-bit RGB and optional alpha."""
    mode = opened.mode
    if mode.startswith(("I", "F")):
        # 16-bit and 32-bit greyscale: Pillow keeps the full range, we rescale.
        opened.load()
        pixels, alpha = _grey_to_rgb8(np.asarray(opened)), None
    elif mode in _ALPHA_MODES or "transparency" in opened.info:
        rgba = np.asarray(opened.convert("RGBA"))
        pixels, alpha = rgba[..., :3], rgba[..., 3]
    else:
        pixels, alpha = np.asarray(_to_rgb(opened, cmyk)), None
    return _upright(pixels, alpha, orientation)


def _upright(pixels: np.ndarray, alpha: np.ndarray | None, orientation: int | None):
    """Pixels (and alpha) turned upright by their EXIF orientation, contiguous."""
    if orientation in _UPRIGHT:
        pixels = _transpose(pixels, orientation)
        alpha = None if alpha is None else _transpose(alpha, orientation)
    return np.ascontiguousarray(pixels), None if alpha is None else np.ascontiguousarray(alpha)


def _transpose(pixels: np.ndarray, orientation: int) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels).transpose(_UPRIGHT[orientation]))


def _grey_to_rgb8(grey: np.ndarray) -> np.ndarray:
    if grey.dtype == np.uint16 or (grey.dtype.kind in "iu" and grey.max(initial=0) > 255):
        scaled = np.rint(grey.astype(np.float32) / 257.0)
    elif grey.dtype.kind == "f":
        scaled = np.rint(np.clip(grey, 0.0, 1.0) * 255.0)
    else:
        scaled = grey
    grey8 = np.clip(scaled, 0, 255).astype(np.uint8)
    return np.repeat(grey8[..., None], 3, axis=2)


def _resize_premultiplied(rgb: np.ndarray, alpha: np.ndarray | None, target: tuple[int, int]):
    """Anti-aliased resize to ``target``; colour is premultiplied by alpha so edges stay clean."""
    if rgb.shape[:2] == target:
        return rgb, alpha
    if alpha is None:
        # Pillow's box filter averages in 8-bit fixed point: no float copy of the image.
        image = Image.fromarray(np.ascontiguousarray(rgb))
        return np.asarray(image.resize(target[::-1], Image.Resampling.BOX)), None
    weight = alpha.astype(np.float32)[..., None] / 255.0
    stacked = np.concatenate([rgb * weight, weight * 255.0], axis=2, dtype=np.float32)
    scaled = _area_resize(stacked, target)
    new_alpha = scaled[..., 3:]
    with np.errstate(divide="ignore", invalid="ignore"):
        color = np.where(new_alpha > 0, scaled[..., :3] * 255.0 / new_alpha, 0.0)
    return round_to_uint8(color), round_to_uint8(new_alpha[..., 0])


def _area_resize(image: np.ndarray, target: tuple[int, int]) -> np.ndarray:
    """Downscale float32 ``(H, W, C)`` pixels to ``target`` by area averaging.

    scikit-image's ``resize_local_mean`` weighs every source pixel by the area it
    shares with each output pixel: anti-aliased by construction, and several
    times faster than Gaussian smoothing followed by interpolation. Imported
    here: only images with alpha take this path, and scikit-image's transforms
    load SciPy's image filters, which a worker need not load for the others.
    """
    from skimage.transform import resize_local_mean

    return resize_local_mean(image, target, preserve_range=True).astype(np.float32, copy=False)


def array_to_sample(pixels: np.ndarray, *, max_pixels: int) -> Sample:
    """A :class:`Sample` from in-memory RGB or RGBA pixels.

    Parameters
    ----------
    pixels : (H, W, 3) or (H, W, 4) uint8 ndarray
    max_pixels : int

    Examples
    --------
    >>> array_to_sample(np.zeros((400, 400, 4), np.uint8), max_pixels=100).rgb.shape
    (10, 10, 3)
    """
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4) or pixels.dtype != np.uint8:
        raise ValueError(
            f"`image` array must be (H, W, 3) or (H, W, 4) uint8, got {pixels.shape} {pixels.dtype}"
        )
    height, width = pixels.shape[:2]
    alpha = pixels[..., 3] if pixels.shape[2] == 4 else None
    rgb, alpha = _resize_premultiplied(
        np.ascontiguousarray(pixels[..., :3]), alpha, sample_shape(width, height, max_pixels)
    )
    return Sample(rgb=rgb, alpha=alpha, format="array", width=width, height=height)
