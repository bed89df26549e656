"""Pictures of palettes: swatch strips and images redrawn with their palette colours.

Pure functions from palette data (colours, shares, label images) to 8-bit
arrays and PNG bytes, drawn with Pillow. They serve ``palette-dask show``,
``render`` and ``report`` alike, so a picture made from a finished dataset is
the same as one made from the image itself; :func:`write_pictures` writes an
image's two pictures as PNG files (:func:`write_pngs`).
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .color import rgb_to_hex
from .options import TRANSPARENT_LABEL
from .storage import write_atomic

SWATCH_SIZE = (600, 120)
# Fraction of a swatch block's height kept free of text, from the top.
TEXT_BAND = 0.65


def block_widths(proportions: np.ndarray, width: int) -> np.ndarray:
    """Pixel widths of swatch blocks: proportional to the shares, summing to ``width``.

    Largest-remainder rounding keeps every block within one pixel of its exact
    share of ``width``.

    Examples
    --------
    >>> block_widths(np.array([0.5, 0.3, 0.2]), 99).tolist()
    [49, 30, 20]
    """
    shares = np.asarray(proportions, dtype=np.float64)
    exact = shares / shares.sum() * width
    widths = np.floor(exact).astype(np.int64)
    # The blocks whose widths lost the most get the pixels left; earlier blocks win ties.
    short = width - int(widths.sum())
    widths[np.argsort(-(exact - widths), kind="stable")[:short]] += 1
    return widths


def text_color(rgb) -> tuple[int, int, int]:
    """Black or white, whichever contrasts more with ``rgb`` (WCAG relative luminance).

    Examples
    --------
    >>> text_color((250, 240, 20)), text_color((20, 30, 120))
    ((0, 0, 0), (255, 255, 255))
    """
    channel = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(channel <= 0.04045, channel / 12.92, ((channel + 0.055) / 1.055) ** 2.4)
    luminance = float(linear @ [0.2126, 0.7152, 0.0722])
    # Contrast ratios against black, (L + 0.05) / 0.05, and white, 1.05 / (L + 0.05).
    return (0, 0, 0) if (luminance + 0.05) ** 2 > 0.0525 else (255, 255, 255)


def swatches(
    colors: np.ndarray, proportions: np.ndarray, *, size: tuple[int, int] = SWATCH_SIZE
) -> np.ndarray:
    """A strip of colour blocks, one per palette colour, as wide as its share.

    Each block carries its hex code (and share) near the bottom, in black or
    white for contrast, when it fits; the top ``TEXT_BAND`` of every block is
    plain colour.

    Parameters
    ----------
    colors : (n, 3) uint8 ndarray
    proportions : (n,) ndarray
        Shares, in the order of ``colors``.
    size : (width, height)

    Returns
    -------
    (height, width, 3) uint8 ndarray

    Examples
    --------
    >>> strip = swatches(np.array([[255, 0, 0], [0, 0, 255]], np.uint8), np.array([0.75, 0.25]))
    >>> strip.shape, strip[0, 0].tolist(), strip[0, -1].tolist()
    ((120, 600, 3), [255, 0, 0], [0, 0, 255])
    """
    width, height = size
    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    widths = block_widths(proportions, width)
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(10, height // 8))
    left = 0
    for color, block, share, code in zip(
        colors.tolist(), widths, proportions, rgb_to_hex(colors), strict=True
    ):
        if block:
            draw.rectangle((left, 0, left + block - 1, height - 1), fill=tuple(color))
        for line, top in ((code, TEXT_BAND), (f"{share:.1%}", TEXT_BAND + 0.17)):
            text_width = draw.textlength(line, font=font)
            if text_width + 8 <= block:
                xy = (left + (block - text_width) / 2, int(height * top) + 2)
                draw.text(xy, line, fill=text_color(color), font=font)
        left += block
    return np.asarray(image)


def redraw(
    labels: np.ndarray, colors: np.ndarray, *, size: tuple[int, int] | None = None
) -> np.ndarray:
    """The label image painted with the palette colours, scaled up without blur.

    Parameters
    ----------
    labels : (h, w) uint8 ndarray
        Palette index of each sample pixel, ``TRANSPARENT_LABEL`` where left out.
    colors : (n, 3) uint8 ndarray
        The colour of each index.
    size : (width, height), optional
        Output size; each output pixel takes its nearest label, so the picture
        holds only palette colours. Default: the label image's own size.

    Returns
    -------
    (height, width, 4) uint8 ndarray
        RGBA: left-out pixels are fully transparent, all others opaque.

    Examples
    --------
    >>> labels = np.array([[0, 1], [1, 255]], np.uint8)
    >>> out = redraw(labels, np.array([[255, 0, 0], [0, 0, 255]], np.uint8), size=(4, 4))
    >>> out.shape, out[0, 0].tolist(), out[3, 3].tolist()
    ((4, 4, 4), [255, 0, 0, 255], [0, 0, 0, 0])
    """
    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    if len(colors) > TRANSPARENT_LABEL:
        raise ValueError(f"at most {TRANSPARENT_LABEL} colours, got {len(colors)}")
    lut = np.zeros((256, 4), dtype=np.uint8)
    lut[: len(colors), :3] = colors
    lut[: len(colors), 3] = 255
    labels = np.asarray(labels, dtype=np.uint8)
    if size is not None and size != labels.shape[1::-1]:
        labels = labels[
            np.ix_(
                _nearest_index(labels.shape[0], size[1]), _nearest_index(labels.shape[1], size[0])
            )
        ]
    return lut[labels]


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """For each of ``n_out`` output pixels, the input pixel under its centre (exact integers)."""
    return (2 * np.arange(n_out) + 1) * n_in // (2 * n_out)


def display_size(width: int, height: int, longest: int) -> tuple[int, int]:
    """``(width, height)`` with the same aspect ratio and the longer side ``longest``.

    Examples
    --------
    >>> display_size(4000, 3000, 800)
    (800, 600)
    """
    scale = longest / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def png_bytes(pixels: np.ndarray) -> bytes:
    """An 8-bit RGB or RGBA array encoded as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def write_pictures(
    folder: str,
    name: str,
    palette: tuple[np.ndarray, np.ndarray, np.ndarray],
    image_size: tuple[int, int],
    longest: int,
) -> list[str]:
    """Write ``NAME.swatches.png`` and ``NAME.redrawn.png`` into ``folder``; their paths.

    ``palette`` is ``(colors, proportions, labels)``; the redrawn picture has the
    image's aspect ratio, its longer side ``longest`` pixels (0: the image's size).
    """
    colors, proportions, labels = palette
    size = display_size(*image_size, longest) if longest else image_size
    return write_pngs(
        folder,
        {
            f"{name}.swatches": swatches(colors, proportions),
            f"{name}.redrawn": redraw(labels, colors, size=size),
        },
    )


def write_pngs(folder: str, pictures: dict[str, np.ndarray]) -> list[str]:
    """Write each picture as ``folder/NAME.png``, atomically; their paths."""
    paths = []
    for name, pixels in pictures.items():
        path = os.path.join(os.path.abspath(folder), f"{name}.png")
        write_atomic(path, png_bytes(pixels))
        paths.append(path)
    return paths
