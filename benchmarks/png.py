"""PNG decoding: the project's Pillow path against libspng, libpng, Wuffs and the imageio path.

Run with ``python benchmarks/png.py`` (about a minute and a half with the defaults).
"Today" is palette-dask as committed at ``--rev`` (default HEAD), and the imageio
path is palette-dask at ``--imageio-rev`` (59404c8, the last revision that read
PNGs with imageio): each revision's ``palette_dask`` folder is extracted from git
into a temporary folder and imported from there (the imageio one under another
package name), so uncommitted edits change neither. Today a PNG's pixels come
from ``imaging.decode_pixels(opened, orientation)`` (Pillow ``convert``), after
``Image.open`` and ``exif_orientation``, whose ``getexif()`` loads, i.e. decodes,
a PNG to look for an eXIf chunk after the pixels; at 59404c8 from
``imaging._decode_with_imageio(data, mode, info)`` (imageio v3, ``plugin="pillow"``),
after the same header read, so decoding twice. Every decoder returns the same
thing: upright 8-bit RGB, plus alpha when the header says the image has
transparency (a mode with alpha, or a tRNS chunk), 16-bit grey rescaled by the
project's ``_grey_to_rgb8``.

Sets: the PNGs of run.py's "mixed" set (``make_photo_corpus(..., megapixels=0.3,
seed=3, formats=("png", "jpg"))``), and ``--per-kind`` images of each other kind
made from 0.3-megapixel photographs of the same kind (seed 4): RGBA, palette with
and without tRNS, RGB with a tRNS colour key, grey, grey+alpha, 16-bit RGB,
16-bit grey, Adam7-interlaced RGB, EXIF orientation 6, and colour chunks (gAMA
1.0 + iCCP; sRGB + gAMA). Pillow writes them, except 16-bit RGB and Adam7, which
Pillow cannot write: a minimal encoder here writes those (filter None).

Figures, single-threaded (threadpoolctl limit 1), all in one run: per kind, the
median over images of the fastest of ``--repeat`` tries, every column timed in
turns on each image, for the decoder alone and for the whole decode step (header,
orientation, pixels); pixel identity against today on every image; the whole
``extract_palette(path)`` on the mixed PNGs, today and with each candidate
patched in; inflate alone (zlib, zlib-ng, libdeflate) on the same PNGs' IDAT
streams, the bound on what a faster inflate could save; and what each decoder
raises on truncated or corrupt files. Results go to ``benchmarks/results/png.{md,json}``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import imagecodecs
import numpy as np
import pyspng
from benchtools import machine, make_photo_corpus, warm_up, write_results
from PIL import Image, ImageCms, features
from PIL.PngImagePlugin import PngInfo
from threadpoolctl import threadpool_limits

try:  # Wuffs: an sdist only (pip builds it with a C++ compiler); skipped when absent
    from pywuffs import ImageDecoderType, PixelFormat
    from pywuffs.aux import ImageDecoder, ImageDecoderConfig
except ImportError:
    ImageDecoder = None

REPO = Path(__file__).resolve().parent.parent
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")  # as the project's decoders
ORIENTATION_TAG = 0x0112
THRESHOLD = 1.3  # the speed-up asked of a new decoder
IMAGEIO = "imageio@59404c8"  # column name; --imageio-rev changes the code, not the name
CANDIDATES = ("pyspng", "imagecodecs.spng", "imagecodecs.png", "wuffs")


# --- the code under test, as committed --------------------------------------------------------


def import_revision(rev: str, folder: Path, name: str):
    """Import ``palette_dask`` as committed at ``rev``, named ``name``: (package, sha)."""
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", rev], capture_output=True, text=True, check=True
    ).stdout.strip()
    folder.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", sha, "palette_dask"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    if name != "palette_dask":
        (folder / "palette_dask").rename(folder / name)
    sys.path.insert(0, str(folder))
    package = importlib.import_module(name)
    if Path(package.__file__).parent != folder / name:
        raise RuntimeError(f"{name} imported from {package.__file__}, not from {folder}")
    return package, sha


# --- the sets ---------------------------------------------------------------------------------


def _chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


# Adam7 passes: first row, first column, row step, column step.
ADAM7 = (
    (0, 0, 8, 8),
    (0, 4, 8, 8),
    (4, 0, 8, 4),
    (0, 2, 4, 4),
    (2, 0, 4, 2),
    (0, 1, 2, 2),
    (1, 0, 2, 1),
)


def png_bytes(pixels: np.ndarray, *, interlace: bool = False) -> bytes:
    """A PNG of grey, grey+alpha, RGB or RGBA uint8/uint16 pixels: filter None, zlib level 6."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    height, width, channels = pixels.shape
    depth = 16 if pixels.dtype == np.uint16 else 8
    stored = pixels.astype(">u2") if depth == 16 else pixels

    def scanlines(image):
        rows = np.ascontiguousarray(image).reshape(image.shape[0], -1).view(np.uint8)
        return np.hstack([np.zeros((len(rows), 1), np.uint8), rows]).tobytes()

    if interlace:
        passes = (stored[y::dy, x::dx] for y, x, dy, dx in ADAM7)
        raw = b"".join(scanlines(p) for p in passes if p.size)
    else:
        raw = scanlines(stored)
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, int(interlace))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw, 6))
        + _chunk(b"IEND", b"")
    )


def _pillow_png(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


def _soft_alpha(height: int, width: int) -> np.ndarray:
    """Opaque centre fading to fully transparent corners."""
    yy, xx = np.mgrid[0:height, 0:width]
    r = np.hypot((yy - height / 2) / (height / 2), (xx - width / 2) / (width / 2))
    return np.clip((1.2 - r) * 510, 0, 255).astype(np.uint8)


def kind_bytes(kind: str, rgb: np.ndarray, rng: np.random.Generator) -> bytes:
    """Encode one 8-bit RGB photograph as a PNG of the given kind."""
    image = Image.fromarray(rgb)
    height, width = rgb.shape[:2]
    if kind == "rgba":
        return _pillow_png(Image.fromarray(np.dstack([rgb, _soft_alpha(height, width)])))
    if kind == "p":
        return _pillow_png(image.quantize(256))
    if kind == "p_trns":  # every 16th palette entry transparent, the next half-transparent
        table = bytes(0 if i % 16 == 0 else 128 if i % 16 == 1 else 255 for i in range(256))
        return _pillow_png(image.quantize(256), transparency=table)
    if kind == "rgb_trns":  # a colour key, painted on a block so that it occurs
        keyed = rgb.copy()
        keyed[:48, :48] = (1, 2, 3)
        return _pillow_png(Image.fromarray(keyed), transparency=(1, 2, 3))
    grey = np.asarray(image.convert("L"))
    if kind == "l":
        return _pillow_png(Image.fromarray(grey))
    if kind == "la":
        return _pillow_png(Image.fromarray(np.dstack([grey, _soft_alpha(height, width)]), "LA"))
    if kind == "rgb16":  # the photograph in the high bytes, noise in the low ones
        low = rng.integers(0, 256, rgb.shape, dtype=np.uint16)
        return png_bytes((rgb.astype(np.uint16) << 8) | low)
    if kind == "g16":
        low = rng.integers(0, 256, grey.shape, dtype=np.uint16)
        return _pillow_png(Image.fromarray((grey.astype(np.uint16) << 8) | low))  # mode I;16
    if kind == "adam7":
        return png_bytes(rgb, interlace=True)
    if kind == "exif6":
        exif = Image.Exif()
        exif[ORIENTATION_TAG] = 6
        return _pillow_png(image, exif=exif.tobytes())
    if kind == "gama_iccp":  # gamma 1.0: applying it would change every pixel
        info = PngInfo()
        info.add(b"gAMA", struct.pack(">I", 100000))
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
        return _pillow_png(image, pnginfo=info, icc_profile=srgb)
    if kind == "srgb_gama":
        info = PngInfo()
        info.add(b"sRGB", b"\x00")
        info.add(b"gAMA", struct.pack(">I", 45455))
        return _pillow_png(image, pnginfo=info)
    raise ValueError(kind)


EXTRA_KINDS = {
    "rgba": "RGBA 8-bit",
    "p": "palette, opaque",
    "p_trns": "palette + tRNS (0/128/255)",
    "rgb_trns": "RGB + tRNS colour key",
    "l": "grey 8-bit",
    "la": "grey+alpha 8-bit",
    "rgb16": "RGB 16-bit",
    "g16": "grey 16-bit",
    "adam7": "RGB Adam7-interlaced",
    "exif6": "RGB, EXIF orientation 6",
    "gama_iccp": "RGB + gAMA 1.0 + iCCP",
    "srgb_gama": "RGB + sRGB + gAMA",
}


def make_sets(work: Path, n_mixed: int, per_kind: int) -> dict[str, list[bytes]]:
    mixed = make_photo_corpus(
        work / "mixed", n_mixed, megapixels=0.3, seed=3, formats=("png", "jpg")
    )
    sets = {"mixed": [p.read_bytes() for p in mixed if p.suffix == ".png"]}
    bases = make_photo_corpus(work / "base", per_kind, megapixels=0.3, seed=4, formats=("png",))
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in bases]
    rng = np.random.default_rng(4)
    for kind in EXTRA_KINDS:
        sets[kind] = [kind_bytes(kind, photo, rng) for photo in photos]
    return sets


# --- decoders ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """What a decoder needs from the header: Pillow's mode and info, and the EXIF orientation."""

    mode: str
    info: dict
    alpha: bool
    orientation: int | None

    @property
    def grey16(self) -> bool:
        return self.mode.startswith(("I", "F"))


def png_orientation(data: bytes) -> int | None:
    """The orientation in a PNG's eXIf chunk, found by walking the chunks (no decoding)."""
    at = 8
    while at + 8 <= len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        tag = data[at + 4 : at + 8]
        if tag == b"eXIf":
            exif = Image.Exif()
            exif.load(data[at + 8 : at + 8 + length])
            return exif.get(ORIENTATION_TAG)
        if tag == b"IEND":
            break
        at += 12 + length
    return None


def read_header(data: bytes) -> Header:
    """``Image.open`` without loading the pixels, and the orientation from the eXIf chunk."""
    with Image.open(io.BytesIO(data)) as opened:
        mode, info = opened.mode, opened.info
    return Header(mode, info, mode in ALPHA_MODES or "transparency" in info, png_orientation(data))


def upright(pixels: np.ndarray, orientation: int | None) -> np.ndarray:
    """Apply an EXIF orientation as Pillow's ``ImageOps.exif_transpose`` does."""
    turned = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }.get(orientation)
    return pixels if turned is None else np.ascontiguousarray(turned(pixels))


def finish(pixels: np.ndarray, head: Header, grey_to_rgb8):
    """(rgb, alpha) from a decoder's array: grey, grey+alpha, RGB or RGBA, 8 or 16 bits.

    16-bit grey goes through today's ``_grey_to_rgb8``; other 16-bit data keeps its high
    byte, as Pillow does. A decoder that gives no alpha where the header announces it
    gets an opaque one, so that the pixel check shows what it left out.
    """
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    channels = pixels.shape[2]
    if pixels.dtype == np.uint16:
        if head.grey16 and channels == 1:
            return upright(grey_to_rgb8(pixels[..., 0]), head.orientation), None
        pixels = (pixels >> 8).astype(np.uint8)
    if channels <= 2:
        rgb = np.repeat(pixels[..., :1], 3, axis=2)
        alpha = pixels[..., 1] if channels == 2 else None
    else:
        rgb = np.ascontiguousarray(pixels[..., :3]) if channels == 4 else pixels
        alpha = np.ascontiguousarray(pixels[..., 3]) if channels == 4 else None
    if head.alpha and alpha is None:
        alpha = np.full(rgb.shape[:2], 255, np.uint8)
    elif not head.alpha:
        alpha = None
    rgb = upright(rgb, head.orientation)
    return rgb, None if alpha is None else upright(alpha, head.orientation)


def make_decoders(imaging, old_imaging) -> dict:
    """name -> (call, function(data, header) -> (rgb, alpha)): the decoder alone."""
    grey_to_rgb8 = imaging._grey_to_rgb8

    def today(data, head):
        with Image.open(io.BytesIO(data)) as opened:
            return imaging.decode_pixels(opened, head.orientation)

    def imageio(data, head):
        return old_imaging._decode_with_imageio(data, head.mode, head.info)

    def spng(data, head):
        if head.grey16:  # pyspng's automatic format for 16-bit grey is GA16
            return finish(pyspng.load(data)[..., 0], head, grey_to_rgb8)
        return finish(pyspng.load(data, "RGBA" if head.alpha else "RGB"), head, None)

    def icd_spng(data, head):
        return finish(imagecodecs.spng_decode(data), head, grey_to_rgb8)

    def icd_png(data, head):
        return finish(imagecodecs.png_decode(data), head, grey_to_rgb8)

    decoders = {
        "today": ("imaging.decode_pixels(Image.open(io.BytesIO(data)), orientation)", today),
        IMAGEIO: ("imaging._decode_with_imageio(data, mode, info)", imageio),
        "pyspng": ('pyspng.load(data, "RGB" or "RGBA")', spng),
        "imagecodecs.spng": ("imagecodecs.spng_decode(data)", icd_spng),
        "imagecodecs.png": ("imagecodecs.png_decode(data)", icd_png),
    }
    if ImageDecoder is not None:
        wuffs_decoders = {}
        for fmt in (PixelFormat.RGB, PixelFormat.RGBA_NONPREMUL, PixelFormat.Y_16LE):
            config = ImageDecoderConfig()
            config.enabled_decoders = [ImageDecoderType.PNG]
            config.pixel_format = fmt
            wuffs_decoders[fmt] = ImageDecoder(config)

        def wuffs(data, head):
            if head.grey16:
                fmt = PixelFormat.Y_16LE
            else:
                fmt = PixelFormat.RGBA_NONPREMUL if head.alpha else PixelFormat.RGB
            result = wuffs_decoders[fmt].decode(data)
            if result.error_message:  # Wuffs returns its errors; raise them as Pillow would
                raise OSError(f"wuffs: {result.error_message}")
            pixels = result.pixbuf
            if fmt == PixelFormat.Y_16LE:
                pixels = pixels.view("<u2")[..., 0]
            return finish(pixels, head, grey_to_rgb8)

        decoders["wuffs"] = (
            "ImageDecoder(config).decode(data).pixbuf, config.pixel_format = "
            "PixelFormat.RGB or RGBA_NONPREMUL",
            wuffs,
        )
    return decoders


def make_steps(imaging, old_imaging, decoders) -> dict:
    """name -> function(data) -> (rgb, alpha): all decode_sample spends on a PNG before resizing.

    Today and at 59404c8: ``Image.open``, ``exif_orientation`` (which loads the pixels), then
    the decoder. A candidate: ``Image.open`` and a walk over the chunks for eXIf, then itself.
    """

    def today(data):
        with Image.open(io.BytesIO(data)) as opened:
            return imaging.decode_pixels(opened, imaging.exif_orientation(opened))

    def imageio(data):
        with Image.open(io.BytesIO(data)) as opened:
            old_imaging.exif_orientation(opened)
            return old_imaging._decode_with_imageio(data, opened.mode, opened.info)

    def candidate(function):
        return lambda data: function(data, read_header(data))

    steps = {"today": today, IMAGEIO: imageio}
    return steps | {n: candidate(decoders[n][1]) for n in CANDIDATES if n in decoders}


# --- measurements -----------------------------------------------------------------------------


def median_ms(functions: dict, items, repeat: int) -> dict[str, float]:
    """Median over ``items`` of each function's fastest of ``repeat`` tries, run in turns."""
    best = {name: [] for name in functions}
    for item in items:
        times = {name: [] for name in functions}
        for _ in range(repeat):
            for name, function in functions.items():
                t0 = time.perf_counter()
                function(item)
                times[name].append((time.perf_counter() - t0) * 1000)
        for name in functions:
            best[name].append(min(times[name]))
    return {name: statistics.median(values) for name, values in best.items()}


def compare(got, want) -> dict:
    """How a candidate's (rgb, alpha) differs from today's."""
    (rgb, alpha), (rgb0, alpha0) = got, want
    if rgb.shape != rgb0.shape or (alpha is None) != (alpha0 is None):
        return {"shape": f"{rgb.shape}/{alpha is not None} vs {rgb0.shape}/{alpha0 is not None}"}
    out = {}
    for name, a, b in (("rgb", rgb, rgb0), ("alpha", alpha, alpha0)):
        if a is None:
            continue
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        per_pixel = diff.max(axis=2) if diff.ndim == 3 else diff
        out[name] = {"max": int(diff.max()), "pixels_pct": float((per_pixel > 0).mean() * 100)}
    return out


def identity(decoders: dict, items) -> dict:
    """Per decoder: "identical", a description of the differences, or the exception raised."""
    wants = [decoders["today"][1](data, head) for data, head in items]
    results = {}
    for name, (_, function) in decoders.items():
        worst, errors = {}, set()
        for (data, head), want in zip(items, wants, strict=True):
            try:
                diff = compare(function(data, head), want)
            except Exception as exc:
                errors.add(type(exc).__name__)
                continue
            for channel, d in diff.items():
                if channel == "shape":
                    worst["shape"] = d
                    continue
                seen = worst.setdefault(channel, {"max": 0, "pixels_pct": 0.0})
                seen["max"] = max(seen["max"], d["max"])
                seen["pixels_pct"] = max(seen["pixels_pct"], d["pixels_pct"])
        differs = {c: d for c, d in worst.items() if c == "shape" or d["max"] > 0}
        results[name] = {
            "identical": not errors and not differs,
            "errors": sorted(errors),
            "differs": differs,
        }
    return results


def describe(result: dict) -> str:
    if result["errors"]:
        return "raises " + ", ".join(result["errors"])
    if result["identical"]:
        return "identical"
    parts = []
    for channel, d in result["differs"].items():
        if channel == "shape":
            parts.append(f"shape {d}")
        else:
            parts.append(f"{channel} off by up to {d['max']} on {d['pixels_pct']:.1f}% of pixels")
    return "; ".join(parts)


def idat_stream(data: bytes) -> tuple[bytes, int]:
    """The concatenated IDAT data of a non-interlaced 8-bit PNG and its inflated size."""
    at, parts, raw = 8, [], 0
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        tag = data[at + 4 : at + 8]
        if tag == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", data[at + 8 : at + 18])
            channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
            raw = height * (1 + width * channels * depth // 8)
        elif tag == b"IDAT":
            parts.append(data[at + 8 : at + 8 + length])
        at += 12 + length
    return b"".join(parts), raw


def inflate_ms(items, repeat: int) -> dict[str, float]:
    streams = [idat_stream(data) for data, _ in items]
    functions = {
        "zlib (CPython's)": lambda s: zlib.decompress(s[0]),
        "zlib-ng": lambda s: imagecodecs.zlibng_decode(s[0], out=s[1]),
        "libdeflate": lambda s: imagecodecs.deflate_decode(s[0], out=s[1]),
    }
    return median_ms(functions, streams, repeat)


def broken_files(data: bytes) -> dict[str, bytes]:
    """A PNG truncated at 60%, with corrupt deflate data (CRC valid), and with a bad IDAT CRC."""
    idat = data.index(b"IDAT")
    (length,) = struct.unpack(">I", data[idat - 4 : idat])
    body = bytearray(data[idat + 4 : idat + 4 + length])
    for i in range(len(body) // 2, len(body) // 2 + 64):
        body[i] ^= 0x5A
    crc = struct.pack(">I", zlib.crc32(b"IDAT" + body))
    corrupt = data[: idat + 4] + bytes(body) + crc + data[idat + 8 + length :]
    end = idat + 4 + length
    bad_crc = data[:end] + bytes(b ^ 0xFF for b in data[end : end + 4]) + data[end + 4 :]
    return {
        "truncated at 60%": data[: len(data) * 6 // 10],
        "corrupt deflate data": corrupt,
        "bad IDAT CRC": bad_crc,
    }


def failures(decoders: dict, data: bytes, whole: dict, caught: tuple) -> dict:
    """What each decoder, and each revision's extract_palette, do with broken variants of a PNG."""
    good = decoders["today"][1](data, read_header(data))
    calls = {name: function for name, (_, function) in decoders.items()}
    for name, extract_palette in whole.items():
        calls[f"extract_palette {name}"] = lambda data, head, f=extract_palette: (
            f(data).sample.rgb,
            None,
        )
    results = {}
    for case, broken in broken_files(data).items():
        head = read_header(broken)
        results[case] = {}
        for name, function in calls.items():
            try:
                decoded = function(broken, head)
            except Exception as exc:
                results[case][name] = {
                    "raises": f"{type(exc).__module__}.{type(exc).__name__}".removeprefix(
                        "builtins."
                    ),
                    "message": str(exc)[:100],
                    "caught_by_decode_sample": type(exc).__name__ == "ImageError"
                    if name not in decoders
                    else isinstance(exc, caught),
                }
            else:
                diff = compare(decoded, good) if name in decoders else {}
                same = None if not diff else diff.get("rgb", {}).get("max") == 0
                results[case][name] = {"raises": None, "decoded_identical": same}
    return results


@contextlib.contextmanager
def stderr_to(path: Path):
    """Send file descriptor 2 (libpng's warnings) to ``path`` meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "wb") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def whole_step_ms(package, imaging, old_package, decoders, names, paths, repeat: int) -> dict:
    """``extract_palette(path)`` today, at 59404c8, and today with a candidate patched in.

    "eXIf scan + X": ``imaging.exif_orientation`` reads a PNG's orientation by walking its
    chunks instead of Pillow's ``getexif()``, which decodes the image, and X decodes the
    pixels in place of ``imaging._decode_scaled`` (Pillow's ``decode_pixels``) for PNGs.
    """
    originals = {name: getattr(imaging, name) for name in ("exif_orientation", "_decode_scaled")}

    def scan_orientation(opened):
        if opened.format != "PNG":
            return originals["exif_orientation"](opened)
        return png_orientation(opened.fp.getvalue())

    def decoding_with(function):
        def decode(opened, data, target, orientation, conversion):
            if opened.format != "PNG":
                return originals["_decode_scaled"](opened, data, target, orientation, conversion)
            alpha = opened.mode in ALPHA_MODES or "transparency" in opened.info
            return function(data, Header(opened.mode, opened.info, alpha, orientation))

        return decode

    def patched(swaps):
        def call(path):
            for attribute, function in swaps.items():
                setattr(imaging, attribute, function)
            try:
                return package.extract_palette(str(path))
            finally:
                for attribute, function in originals.items():
                    setattr(imaging, attribute, function)

        return call

    functions = {
        "today": patched({}),
        IMAGEIO: lambda path: old_package.extract_palette(str(path)),
    }
    for name in names:
        swaps = {"exif_orientation": scan_orientation}
        swaps["_decode_scaled"] = decoding_with(decoders[name][1])
        functions[f"eXIf scan + {name}"] = patched(swaps)
    same = {}
    for name, function in functions.items():
        pairs = [(function(p), functions["today"](p)) for p in paths]
        same[name] = all(
            np.array_equal(a.colors, b.colors) and np.array_equal(a.sample.rgb, b.sample.rgb)
            for a, b in pairs
        )
    return {"median_ms": median_ms(functions, paths, repeat), "same_palette": same}


def decoder_versions() -> dict[str, str]:
    versions = {
        "pillow": version("pillow"),
        "pillow zlib-ng": features.version_feature("zlib_ng") or "no",
        "imageio": version("imageio"),
        "pyspng": f"{version('pyspng')} (libspng {pyspng.c.spng_version_string()})",
        "imagecodecs": version("imagecodecs"),
    }
    for codec in ("spng", "png", "deflate", "zlibng"):
        versions[f"imagecodecs {codec}"] = getattr(imagecodecs, f"{codec}_version")()
    try:
        versions["pywuffs"] = version("pywuffs")
    except PackageNotFoundError:
        versions["pywuffs"] = "not installed"
    return versions


# --- report -----------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixed", type=int, default=24, help="run.py's mixed set (half PNGs)")
    parser.add_argument("--per-kind", type=int, default=6, help="images of each other kind")
    parser.add_argument("--repeat", type=int, default=5, help="tries per image (fastest kept)")
    parser.add_argument("--rev", default="HEAD", help="git revision of today's palette_dask")
    parser.add_argument("--imageio-rev", default="59404c8", help="revision reading with imageio")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    def progress(what):
        print(f"[{time.perf_counter() - started:5.1f} s] {what}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="palette-png-"))
    try:
        package, sha = import_revision(args.rev, work / "today", "palette_dask")
        old_package, old_sha = import_revision(
            args.imageio_rev, work / "imageio", "palette_dask_imageio"
        )
        imaging = importlib.import_module("palette_dask.imaging")
        old_imaging = importlib.import_module("palette_dask_imageio.imaging")
        decoders = make_decoders(imaging, old_imaging)
        steps = make_steps(imaging, old_imaging, decoders)
        names = [n for n in decoders if n != "today"]
        sets = make_sets(work, args.mixed, args.per_kind)
        progress(f"sets made: {', '.join(f'{k} {len(v)}' for k, v in sets.items())}")
        mixed_paths = [work / f"mixed-{i:03d}.png" for i in range(len(sets["mixed"]))]
        for path, data in zip(mixed_paths, sets["mixed"], strict=True):
            path.write_bytes(data)
        per_kind, checks = {}, {}
        stderr_log = work / "stderr.log"
        with threadpool_limits(1), stderr_to(stderr_log):
            warm_up()
            for kind, blobs in sets.items():
                items = [(data, read_header(data)) for data in blobs]
                checks[kind] = identity(decoders, items)
                ok = [n for n in decoders if not checks[kind][n]["errors"]]
                timed = {f"decode {n}": (lambda i, f=decoders[n][1]: f(*i)) for n in ok}
                timed |= {f"step {n}": (lambda i, f=steps[n]: f(i[0])) for n in ok}
                ms = median_ms(timed, items, args.repeat)
                decode = {n: ms[f"decode {n}"] for n in ok}
                step = {n: ms[f"step {n}"] for n in ok}
                per_kind[kind] = {
                    "images": len(items),
                    "mode": items[0][1].mode,
                    "kb": statistics.mean(len(d) for d in blobs) / 1024,
                    "decode_ms": decode,
                    "step_ms": step,
                    "decode_ratio": {n: decode["today"] / v for n, v in decode.items()},
                    "step_ratio": {n: step["today"] / v for n, v in step.items()},
                }
                progress(f"timed {kind}")
            mixed_items = [(data, read_header(data)) for data in sets["mixed"]]
            inflate = inflate_ms(mixed_items, args.repeat)
            same_on_mixed = [
                n for n in CANDIDATES if n in decoders and checks["mixed"][n]["identical"]
            ]
            whole = whole_step_ms(
                package, imaging, old_package, decoders, same_on_mixed, mixed_paths, args.repeat
            )
            progress("timed extract_palette")
            extract = {"today": package.extract_palette, IMAGEIO: old_package.extract_palette}
            caught = getattr(
                imaging, "_DECODE_ERRORS", (OSError, SyntaxError, ValueError, EOFError)
            )
            broken = failures(decoders, sets["mixed"][0], extract, caught)
        stderr_lines = stderr_log.read_text(errors="replace").splitlines()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    warnings = [line for line in stderr_lines if line.startswith("PNG warning")]
    for line in stderr_lines:
        if not line.startswith("PNG warning"):
            print(line, file=sys.stderr)

    mixed = per_kind["mixed"]
    whole_ms = whole["median_ms"]
    whole["step_share_today"] = mixed["step_ms"]["today"] / whole_ms["today"]
    whole["ratio"] = {n: whole_ms["today"] / v for n, v in whole_ms.items()}

    def kinds_where(name, identical):
        return [k for k in per_kind if checks[k][name]["identical"] == identical]

    spng = [n for n in ("pyspng", "imagecodecs.spng") if n in same_on_mixed]
    best = max(spng, key=lambda n: mixed["decode_ratio"][n], default=None)
    if best is None:
        verdict = "NO: no libspng decoder gives today's pixels on the mixed set PNGs."
    else:
        ratio = mixed["decode_ratio"][best]
        verdict = (
            f"{'YES' if ratio >= THRESHOLD else 'NO'}: {best} (libspng) decodes the mixed set "
            f"PNGs {ratio:.2f}x as fast as today's Pillow decode (threshold {THRESHOLD}x) and "
            f"{mixed['decode_ms'][IMAGEIO] / mixed['decode_ms'][best]:.2f}x as fast as the "
            f"imageio one; the whole decode step {mixed['step_ratio'][best]:.2f}x and "
            f"extract_palette {whole['ratio'][f'eXIf scan + {best}']:.2f}x as fast as today; "
            f"pixels identical on {len(kinds_where(best, True))}/{len(per_kind)} kinds, not on "
            f"{', '.join(kinds_where(best, False)) or 'none'}. No decoder tried inflates with "
            "libdeflate."
        )
    results = {
        "machine": machine(),
        "revisions": {"today": sha, IMAGEIO: old_sha},
        "versions": decoder_versions(),
        "calls": {name: call for name, (call, _) in decoders.items()},
        "kinds": {"mixed": "run.py's mixed set, its PNGs (RGB 8-bit)"} | EXTRA_KINDS,
        "per_kind": per_kind,
        "identity": checks,
        "extract_palette_mixed": whole,
        "inflate_only_mixed_ms": inflate,
        "broken_files": broken,
        "stderr_warnings": sorted(set(warnings)),
        "stderr_warning_count": len(warnings),
        "verdict": verdict,
        "seconds": time.perf_counter() - started,
    }
    write_results("png", results, report_lines(results, args.repeat, names))
    return 0


def report_lines(results: dict, repeat: int, names: list[str]) -> list[str]:
    per_kind, checks = results["per_kind"], results["identity"]

    def cell(kind, name, ms, ratio):
        if name not in ms:
            return "✗ " + ", ".join(checks[kind][name]["errors"])
        same = "=" if checks[kind][name]["identical"] else "≠"
        return f"{ms[name]:.2f} ({ratio[name]:.2f}x) {same}"

    def table(key):
        rows = [
            "| kind | n | KB | today | " + " | ".join(names) + " |",
            "| --- | --- | --- | --- | " + " | ".join("---" for _ in names) + " |",
        ]
        for kind, r in per_kind.items():
            ms, ratio = r[f"{key}_ms"], r[f"{key}_ratio"]
            cells = [cell(kind, n, ms, ratio) for n in names]
            rows.append(
                f"| {kind} | {r['images']} | {r['kb']:.0f} | {ms['today']:.2f} | "
                + " | ".join(cells)
                + " |"
            )
        return rows

    revisions = results["revisions"]
    lines = [
        f"# PNG decoding: today (Pillow, palette_dask@{revisions['today'][:10]}) against "
        f"candidates and the imageio path (palette_dask@{revisions[IMAGEIO][:10]})",
        "",
        f"Single thread; ms = median over images of the fastest of {repeat} tries, every "
        "column of both tables timed in turns on each image; (ratio) = today / column; = pixels "
        "identical to today on every image, ≠ not (see below), ✗ raises.",
        "",
        "## The decoder alone: bytes to upright (rgb, alpha)",
        "",
        *table("decode"),
        "",
        "## The decode step: all decode_sample spends on a PNG before resizing",
        "",
        "today and imageio: `Image.open` + `exif_orientation`, whose `getexif()` decodes a PNG "
        "to look for an eXIf chunk after the pixels, + the decoder (today's reuses that load, "
        "imageio decodes again). Candidates: `Image.open` + a walk over the chunks for eXIf "
        "(no decoding) + the decoder.",
        "",
        *table("step"),
        "",
        "Kinds: " + "; ".join(f"{k}: {v}" for k, v in results["kinds"].items()),
        "",
        "## Where decoders differ from today",
        "",
    ]
    for kind in per_kind:
        for n in names:
            if not checks[kind][n]["identical"]:
                lines.append(f"- {kind}, {n}: {describe(checks[kind][n])}")
    whole = results["extract_palette_mixed"]
    whole_ms = whole["median_ms"]
    lines += [
        "",
        "## `extract_palette(path)` on the mixed set PNGs",
        "",
        f"Today {whole_ms['today']:.2f} ms, of which the decode step "
        f"{whole['step_share_today'] * 100:.0f}%. Candidates patched into today's code: "
        "`imaging.exif_orientation` walks a PNG's chunks, `imaging._decode_scaled` calls the "
        "candidate.",
        "",
        "| variant | ms | today / variant | same palette and sample as today |",
        "| --- | --- | --- | --- |",
    ]
    for n, ratio in whole["ratio"].items():
        same = "yes" if whole["same_palette"][n] else "NO"
        lines.append(f"| {n} | {whole_ms[n]:.2f} | {ratio:.2f}x | {same} |")
    decode = per_kind["mixed"]["decode_ms"]
    lines += [
        "",
        "Inflate alone, the same PNGs' IDAT streams (median ms): "
        + ", ".join(f"{k} {v:.2f}" for k, v in results["inflate_only_mixed_ms"].items())
        + f"; whole decode: today {decode['today']:.2f}, pyspng {decode['pyspng']:.2f}.",
        "",
        "## Broken files (one mixed-set PNG)",
        "",
    ]
    columns = list(next(iter(results["broken_files"].values())))
    lines += [
        "| case | " + " | ".join(columns) + " |",
        "| --- | " + " | ".join("---" for _ in columns) + " |",
    ]
    for case, per in results["broken_files"].items():
        cells = []
        for r in per.values():
            if r["raises"] is None:
                same = {True: ", same pixels", False: ", other pixels", None: ""}
                cells.append("decodes" + same[r["decoded_identical"]])
            else:
                cells.append(r["raises"] + ("" if r["caught_by_decode_sample"] else " (escapes)"))
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "(escapes): for a decoder, not one of the exceptions today's decode_sample turns into "
        "ImageError around decoding; for extract_palette, not an ImageError. Wuffs returns its "
        "errors; the wrapper here raises them as OSError.",
    ]
    if results["stderr_warnings"]:
        lines.append(
            f"Printed on stderr {results['stderr_warning_count']} times: "
            + "; ".join(results["stderr_warnings"])
        )
    lines += [
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()),
        "",
        f"**Verdict**: {results['verdict']}",
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
