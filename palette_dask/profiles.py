"""Colour management: what a file's numbers mean, converted to sRGB.

A palette's hex code is a claim about a colour: the sRGB colour a
colour-managed viewer shows. Files say what their numbers mean in several
ways; the first that a file has, in this order, is applied (PNG's own order of
precedence, with the other formats' signals in their place):

1. a PNG ``cICP`` chunk: coded primaries and transfer function;
2. an embedded ICC profile (any format; littleCMS through Pillow's ``ImageCms``),
   with the profile's own rendering intent;
3. a PNG ``sRGB`` chunk: sRGB already;
4. PNG ``gAMA`` (and ``cHRM``): a power-law transfer (and primaries); a gamma of
   1/2.2 without primaries is taken as sRGB, as browsers take it;
5. an ``nclx`` colour box (HEIF, AVIF): coded primaries and transfer function;
6. EXIF ``ColorSpace``: Adobe RGB when a camera marks it (``ColorSpace`` 2, or
   "uncalibrated" with the ``R03`` interoperability index);
7. nothing: the numbers are taken as sRGB.

A profile that maps every colour to within one 8-bit unit of itself is sRGB
and is not applied, so sRGB files cost nothing and stay bit-identical. A
profile that cannot be read, or does not fit the image, leaves the colours as
they are and says so in a warning; the image still gets its palette.
Conversions are built once per distinct profile and process. HDR transfer
functions (PQ, HLG) are not tone-mapped: such images keep their numbers and
get a warning.
"""

from __future__ import annotations

import functools
import io
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms

from .color import _linear_to_srgb, _srgb_to_linear
from .formats import ISOBMFF_META_BYTES, png_chunk

_SRGB = ImageCms.createProfile("sRGB")
# Chromaticities (x, y) of red, green, blue and white.
_D65 = (0.3127, 0.3290)
_SRGB_PRIMARIES = ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060), _D65)
_PRIMARIES = {  # ITU-T H.273 colour primaries codes
    1: ("BT.709", _SRGB_PRIMARIES),
    2: ("unspecified", _SRGB_PRIMARIES),
    9: ("BT.2020", ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046), _D65)),
    11: ("DCI-P3", ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060), (0.314, 0.351))),
    12: ("Display P3", ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060), _D65)),
}
_ADOBE_RGB = ((0.640, 0.330), (0.210, 0.710), (0.150, 0.060), _D65)
_ADOBE_GAMMA = 563 / 256
_HDR_TRANSFERS = {16: "PQ", 18: "HLG"}
_EXIF_IFD, _INTEROP_IFD, _COLOR_SPACE_TAG = 0x8769, 0xA005, 0xA001
# Bradford cone response matrix, for moving a white point to D65.
_BRADFORD = np.array(
    [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
)
_IDENTITY_TOLERANCE = 1
# sRGB codes of linear light in 65,536 steps: a step moves a code by at most 0.05 near black.
_ENCODE_STEPS = 1 << 16

# Every colour of a 16-level grid, as an image: what a conversion is tested on.
_PROBE = np.stack(
    np.meshgrid(*[np.linspace(0, 255, 16).round().astype(np.uint8)] * 3, indexing="ij"), axis=-1
).reshape(64, 64, 3)


@dataclass(frozen=True)
class Conversion:
    """How an image's colours become sRGB.

    Attributes
    ----------
    profile : str or None
        What the file declares: an ICC profile's description, or the colour
        signal (``"cICP: Display P3 primaries, transfer 13"``, ``"PNG gAMA 1.0"``,
        ``"EXIF: Adobe RGB"``); ``None`` when it declares nothing.
    warning : str or None
        Why the declared colours could not be applied.
    convert : callable or None
        Maps ``(h, w, 3)`` uint8 colours of the image's mode family to sRGB
        ``(h, w, 3)`` uint8; ``None`` when they are sRGB already.
    cmyk : ImageCms transform or None
        For CMYK images: the profile's transform of a CMYK Pillow image to sRGB.
    """

    profile: str | None = None
    warning: str | None = None
    convert: Callable[[np.ndarray], np.ndarray] | None = None
    cmyk: object | None = None


SRGB = Conversion()


def conversion_for(opened: Image.Image, data: bytes) -> Conversion:
    """How the colours of an opened image become sRGB, from its header and metadata.

    Parameters
    ----------
    opened : PIL.Image.Image
        The image, opened but not necessarily decoded.
    data : bytes
        Its encoded bytes (read for the signals Pillow does not parse).

    Examples
    --------
    >>> png = io.BytesIO()
    >>> Image.new("RGB", (4, 4)).save(png, "PNG")
    >>> conversion_for(Image.open(png), png.getvalue()) == SRGB
    True
    """
    fmt, info = opened.format, opened.info
    family = mode_family(opened.mode)
    if fmt == "PNG" and (cicp := png_cicp(data)) is not None:
        return coded_conversion("cICP", *cicp)
    if icc := info.get("icc_profile"):
        return icc_conversion(bytes(icc), family)
    if fmt == "PNG":
        if "srgb" in info:
            return SRGB
        if "gamma" in info:
            return gamma_conversion(float(info["gamma"]), info.get("chromaticity"))
    if fmt in ("HEIF", "AVIF") and (nclx := isobmff_nclx(data)) is not None:
        return coded_conversion("nclx", *nclx)
    if _exif_adobe_rgb(opened):
        return exif_adobe_rgb_conversion()
    return SRGB


def mode_family(mode: str) -> str:
    """``"L"``, ``"CMYK"`` or ``"RGB"``: the colour model of a Pillow mode."""
    if mode in ("1", "L", "LA", "La", "I", "F") or mode.startswith("I;"):
        return "L"
    return "CMYK" if mode == "CMYK" else "RGB"


def png_cicp(data: bytes) -> tuple[int, int] | None:
    """Colour primaries and transfer codes of a PNG's ``cICP`` chunk, if it has one."""
    body = png_chunk(data, b"cICP", before=b"IDAT")
    return (body[0], body[1]) if body is not None and len(body) >= 2 else None


def isobmff_nclx(data: bytes) -> tuple[int, int] | None:
    """Colour primaries and transfer codes of a HEIF/AVIF ``nclx`` colour box, if it has one."""
    at = data.find(b"colrnclx", 0, ISOBMFF_META_BYTES)
    if at < 0 or at + 12 > len(data):
        return None
    primaries, transfer = struct.unpack_from(">HH", data, at + 8)
    return primaries, transfer


@functools.lru_cache(maxsize=64)
def coded_conversion(source: str, primaries: int, transfer: int) -> Conversion:
    """The conversion of ITU-T H.273 coded primaries and transfer function (cICP, nclx)."""
    name = _PRIMARIES.get(primaries, (f"primaries {primaries}",))[0]
    profile = f"{source}: {name} primaries, transfer {transfer}"
    if transfer in _HDR_TRANSFERS:
        return Conversion(
            profile,
            f"HDR transfer {_HDR_TRANSFERS[transfer]} is not tone-mapped; colours taken as sRGB",
        )
    decode = _TRANSFERS.get(transfer)
    if primaries not in _PRIMARIES or decode is None:
        return Conversion(profile, f"{profile} is not supported; colours taken as sRGB")
    return _parametric(profile, _PRIMARIES[primaries][1], decode)


@functools.lru_cache(maxsize=64)
def gamma_conversion(gamma: float, chromaticity: tuple | None) -> Conversion:
    """The conversion of PNG ``gAMA`` (the encoding exponent) and ``cHRM`` chromaticities."""
    profile = f"PNG gAMA {gamma:g}" + (" and cHRM" if chromaticity else "")
    if gamma <= 0:
        return Conversion(profile, f"{profile}: gamma must be positive; colours taken as sRGB")
    if chromaticity is None:
        if abs(gamma * 2.2 - 1) < 0.01:
            return SRGB
        primaries = _SRGB_PRIMARIES
    else:
        wx, wy, rx, ry, gx, gy, bx, by = chromaticity
        primaries = ((rx, ry), (gx, gy), (bx, by), (wx, wy))
    return _parametric(profile, primaries, functools.partial(_power, 1 / gamma))


@functools.lru_cache(maxsize=1)
def exif_adobe_rgb_conversion() -> Conversion:
    """The conversion of an image a camera marked as Adobe RGB (1998) in its EXIF."""
    return _parametric("EXIF: Adobe RGB", _ADOBE_RGB, functools.partial(_power, _ADOBE_GAMMA))


@functools.lru_cache(maxsize=64)
def icc_conversion(icc: bytes, family: str = "RGB") -> Conversion:
    """The conversion of an embedded ICC profile, for an image of mode ``family``."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        description = (ImageCms.getProfileDescription(profile) or "").strip() or "unnamed"
        space = profile.profile.xcolor_space.strip()
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        return Conversion(
            None, f"embedded ICC profile cannot be read ({exc}); colours taken as sRGB"
        )
    mode = {"RGB": "RGB", "GRAY": "L", "CMYK": "CMYK"}.get(space)
    if mode != family:
        return Conversion(
            description,
            f"embedded {space} profile {description!r} does not fit a {family} image; "
            "colours taken as sRGB",
        )
    try:
        transform = ImageCms.buildTransform(
            profile,
            _SRGB,
            mode,
            "RGB",
            renderingIntent=ImageCms.Intent(profile.profile.rendering_intent),
            flags=ImageCms.Flags.NOCACHE,  # applied from several threads
        )
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        return Conversion(
            description,
            f"embedded ICC profile {description!r} cannot be applied ({exc}); "
            "colours taken as sRGB",
        )
    if mode == "CMYK":
        return Conversion(description, cmyk=transform)

    def convert(rgb: np.ndarray) -> np.ndarray:
        image = Image.fromarray(np.ascontiguousarray(rgb[..., 0] if mode == "L" else rgb))
        return np.asarray(ImageCms.applyTransform(image, transform))

    return Conversion(description, convert=None if _is_identity(convert) else convert)


def apply(conversion: Conversion, rgb: np.ndarray) -> np.ndarray:
    """``rgb`` in sRGB under ``conversion``.

    Examples
    --------
    >>> apply(SRGB, np.zeros((1, 1, 3), np.uint8)).tolist()
    [[[0, 0, 0]]]
    """
    return rgb if conversion.convert is None else conversion.convert(rgb)


def _exif_adobe_rgb(opened: Image.Image) -> bool:
    """Whether a camera marked the image as Adobe RGB in its EXIF (and embedded no profile).

    EXIF that cannot be read says nothing: the image is taken as sRGB.
    """
    if "exif" not in opened.info:
        return False
    try:
        exif = opened.getexif()
        space = exif.get_ifd(_EXIF_IFD).get(_COLOR_SPACE_TAG)
        index = exif.get_ifd(_INTEROP_IFD).get(1) if space == 0xFFFF else None
    except (OSError, ValueError, SyntaxError, struct.error):
        return False
    if space == 2:
        return True
    return isinstance(index, (str, bytes)) and index[:3] in ("R03", b"R03")


def _parametric(profile: str, primaries, decode: Callable[[np.ndarray], np.ndarray]) -> Conversion:
    """A conversion from RGB of ``primaries`` (red, green, blue, white) and transfer ``decode``."""
    to_srgb = np.linalg.inv(_rgb_to_xyz(_SRGB_PRIMARIES))
    matrix = (to_srgb @ _adapt_to_d65(primaries[3]) @ _rgb_to_xyz(primaries)).T.astype(np.float32)
    linear = decode(np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)

    def convert(rgb: np.ndarray) -> np.ndarray:
        # Tables both ways: 8-bit codes to linear light, linear light in 16-bit steps to sRGB.
        steps = np.clip(linear[rgb] @ matrix, 0.0, 1.0) * np.float32(_ENCODE_STEPS - 1)
        return _srgb_encode_table()[(steps + np.float32(0.5)).astype(np.uint16)]

    return Conversion(profile, convert=None if _is_identity(convert) else convert)


@functools.cache
def _srgb_encode_table() -> np.ndarray:
    """sRGB codes of linear light in :data:`_ENCODE_STEPS` steps (built on first use)."""
    steps = np.arange(_ENCODE_STEPS, dtype=np.float64) / (_ENCODE_STEPS - 1)
    return np.rint(_linear_to_srgb(steps) * 255.0).astype(np.uint8)


def _rgb_to_xyz(primaries) -> np.ndarray:
    """The matrix from linear RGB with these primaries to CIE XYZ (white at Y = 1)."""
    xy = np.array(primaries, dtype=np.float64)
    xyz = np.column_stack([xy[:, 0] / xy[:, 1], np.ones(4), (1 - xy[:, 0] - xy[:, 1]) / xy[:, 1]])
    columns = xyz[:3].T
    return columns * np.linalg.solve(columns, xyz[3])


def _adapt_to_d65(white) -> np.ndarray:
    """Bradford chromatic adaptation from ``white`` to D65 (identity when they are the same)."""
    if np.allclose(white, _D65, atol=1e-4):
        return np.eye(3)
    source = _BRADFORD @ _xy_to_xyz(white)
    target = _BRADFORD @ _xy_to_xyz(_D65)
    return np.linalg.inv(_BRADFORD) @ np.diag(target / source) @ _BRADFORD


def _xy_to_xyz(xy) -> np.ndarray:
    x, y = xy
    return np.array([x / y, 1.0, (1 - x - y) / y])


def _power(exponent: float, encoded: np.ndarray) -> np.ndarray:
    return encoded**exponent


def _bt709(encoded: np.ndarray) -> np.ndarray:
    """Inverse of the BT.709 / BT.2020 camera transfer function."""
    return np.where(encoded < 0.081, encoded / 4.5, ((encoded + 0.099) / 1.099) ** (1 / 0.45))


_TRANSFERS = {  # ITU-T H.273 transfer characteristics codes
    1: _bt709,
    2: _srgb_to_linear,  # unspecified
    4: functools.partial(_power, 2.2),
    5: functools.partial(_power, 2.8),
    6: _bt709,
    8: lambda encoded: encoded,
    13: _srgb_to_linear,
    14: _bt709,
    15: _bt709,
}


def _is_identity(convert: Callable[[np.ndarray], np.ndarray]) -> bool:
    """Whether ``convert`` keeps every colour of the probe grid within one unit."""
    moved = convert(_PROBE).astype(np.int16) - _PROBE
    return int(np.abs(moved).max()) <= _IDENTITY_TOLERANCE
