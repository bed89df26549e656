"""Colour spaces and colour notation.

Every function here takes and returns plain NumPy arrays of shape ``(N, 3)``:
8-bit sRGB colours as ``uint8``, coordinates in a clustering space as
``float32``. The clustering spaces are

``rgb``
    sRGB values on the 0–255 scale, as in the classic recipe.
``lab``
    CIELAB under the D65 white point (L* in 0–100).
``oklab``
    Björn Ottosson's OKLab, scaled by 100 so that its lightness spans 0–100
    like CIELAB and a k-means tolerance means the same in both.
"""

from __future__ import annotations

import numpy as np

from .errors import UsageError
from .options import COLOR_SPACES

# Linear sRGB -> LMS and LMS' -> OKLab, from https://bottosson.github.io/posts/oklab/
_OKLAB_M1 = np.array(
    [
        [0.4122214708, 0.5363325363, 0.0514459929],
        [0.2119034982, 0.6806995451, 0.1073969566],
        [0.0883024619, 0.2817188376, 0.6299787005],
    ]
)
_OKLAB_M2 = np.array(
    [
        [0.2104542553, 0.7936177850, -0.0040720468],
        [1.9779984951, -2.4285922050, 0.4505937099],
        [0.0259040371, 0.7827717662, -0.8086757660],
    ]
)
_OKLAB_SCALE = 100.0


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)


def round_to_uint8(values: np.ndarray) -> np.ndarray:
    """Round and clip values on the 0–255 scale to ``uint8``.

    Examples
    --------
    >>> round_to_uint8(np.array([-3.0, 127.5, 128.4, 300.0]))
    array([  0, 128, 128, 255], dtype=uint8)
    """
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _to_uint8(unit_rgb: np.ndarray) -> np.ndarray:
    return round_to_uint8(unit_rgb * 255.0)


def rgb_to_oklab(rgb: np.ndarray) -> np.ndarray:
    """Convert 8-bit sRGB colours to OKLab (scaled by 100).

    Parameters
    ----------
    rgb : (N, 3) uint8 ndarray
        sRGB colours.

    Returns
    -------
    (N, 3) float32 ndarray
        ``L`` in 0–100, ``a`` and ``b`` roughly in −40–40.

    Examples
    --------
    >>> rgb_to_oklab(np.array([[255, 255, 255]], dtype=np.uint8)).round(2) + 0.0  # no -0.0
    array([[100.,   0.,   0.]], dtype=float32)
    """
    linear = _srgb_to_linear(np.asarray(rgb, dtype=np.float64) / 255.0)
    lms = np.cbrt(linear @ _OKLAB_M1.T)
    return (lms @ _OKLAB_M2.T * _OKLAB_SCALE).astype(np.float32)


def oklab_to_rgb(oklab: np.ndarray) -> np.ndarray:
    """Convert OKLab coordinates (scaled by 100) to 8-bit sRGB, clipping out-of-gamut values.

    Examples
    --------
    >>> oklab_to_rgb(np.array([[100.0, 0.0, 0.0]]))
    array([[255, 255, 255]], dtype=uint8)
    """
    lms = (np.asarray(oklab, dtype=np.float64) / _OKLAB_SCALE) @ np.linalg.inv(_OKLAB_M2).T
    linear = (lms**3) @ np.linalg.inv(_OKLAB_M1).T
    return _to_uint8(_linear_to_srgb(linear))


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Convert 8-bit sRGB colours to CIELAB (D65).

    Examples
    --------
    >>> rgb_to_lab(np.array([[255, 0, 0]], dtype=np.uint8)).round(1)
    array([[53.2, 80.1, 67.2]], dtype=float32)
    """
    from skimage import color as skcolor  # loaded when used: readers of a dataset seldom need it

    unit = np.asarray(rgb, dtype=np.float64).reshape(-1, 1, 3) / 255.0
    return skcolor.rgb2lab(unit, illuminant="D65").reshape(-1, 3).astype(np.float32)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Convert CIELAB (D65) coordinates to 8-bit sRGB, clipping out-of-gamut values.

    Examples
    --------
    >>> lab_to_rgb(np.array([[53.24, 80.09, 67.2]]))
    array([[255,   0,   0]], dtype=uint8)
    """
    from skimage import color as skcolor

    coords = np.asarray(lab, dtype=np.float64).reshape(-1, 1, 3)
    return _to_uint8(skcolor.lab2rgb(coords, illuminant="D65").reshape(-1, 3))


def rgb_to_space(rgb: np.ndarray, color_space: str) -> np.ndarray:
    """Coordinates of 8-bit sRGB colours in a clustering space.

    Parameters
    ----------
    rgb : (N, 3) uint8 ndarray
    color_space : {"rgb", "lab", "oklab"}

    Returns
    -------
    (N, 3) float32 ndarray

    Examples
    --------
    >>> rgb_to_space(np.array([[0, 128, 255]], dtype=np.uint8), "rgb")
    array([[  0., 128., 255.]], dtype=float32)
    """
    return _converters(color_space)[0](rgb)


def space_to_rgb(coords: np.ndarray, color_space: str) -> np.ndarray:
    """8-bit sRGB colours nearest to coordinates in a clustering space.

    Examples
    --------
    >>> space_to_rgb(np.array([[0.4, 127.6, 300.0]]), "rgb")
    array([[  0, 128, 255]], dtype=uint8)
    """
    return _converters(color_space)[1](coords)


def _rgb_identity(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(rgb, dtype=np.float32)


def _converters(color_space: str):
    """(to space, back to 8-bit sRGB) functions of a clustering space."""
    if color_space == "rgb":
        return _rgb_identity, round_to_uint8
    elif color_space == "lab":
        return rgb_to_lab, lab_to_rgb
    elif color_space == "oklab":
        return rgb_to_oklab, oklab_to_rgb
    else:
        raise UsageError(f"`color_space` must be one of {COLOR_SPACES}, got {color_space!r}")


def rgb_to_hex(rgb: np.ndarray) -> list[str]:
    """``#rrggbb`` codes of 8-bit sRGB colours.

    Examples
    --------
    >>> rgb_to_hex(np.array([[21, 101, 161]], dtype=np.uint8))
    ['#1565a1']
    """
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in np.asarray(rgb, dtype=np.uint8).tolist()]


def hex_to_rgb(code: str) -> np.ndarray:
    """The 8-bit sRGB colour of a ``#rrggbb`` (or ``rrggbb``) code.

    Examples
    --------
    >>> hex_to_rgb("#1565a1")
    array([ 21, 101, 161], dtype=uint8)
    """
    digits = code.strip().removeprefix("#")
    if len(digits) != 6 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise UsageError(f"colour must be a hex code like '#1565a1', got {code!r}")
    return np.array([int(digits[i : i + 2], 16) for i in (0, 2, 4)], dtype=np.uint8)


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Pack ``(N, 3)`` uint8 colours into ``uint32`` keys ``0xRRGGBB`` (for fast de-duplication).

    Examples
    --------
    >>> pack_rgb(np.array([[1, 2, 3]], dtype=np.uint8))
    array([66051], dtype=uint32)
    """
    rgb = np.asarray(rgb, dtype=np.uint32)
    return (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]


def unpack_rgb(keys: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_rgb`.

    Examples
    --------
    >>> unpack_rgb(np.array([66051], dtype=np.uint32))
    array([[1, 2, 3]], dtype=uint8)
    """
    keys = np.asarray(keys, dtype=np.uint32)
    return np.stack([keys >> 16, (keys >> 8) & 0xFF, keys & 0xFF], axis=1).astype(np.uint8)
