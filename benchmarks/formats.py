"""Formats and colour management: per-image time against a base revision, and per format.

Run with ``make bench`` (or ``python benchmarks/formats.py --camera 6 --web 24 --mixed 24``).
``extract_palette`` of this revision and of ``--base`` (a git revision, read
from this repository into a temporary package) run in turns on the same files,
in one process, single-threaded: the median over images of the fastest of
three tries. The sets are those of ``run.py`` — "camera" (12-megapixel JPEGs),
"web" (1-megapixel JPEGs), the PNGs of "mixed" — and the camera and web sets
again with a Display P3 ICC profile embedded in each file (the same JPEG data,
the profile added as an APP2 segment), which this revision converts and the
base ignores. A last table times each format on the same 1-megapixel pictures,
as a ratio to the PNG of the picture, and one compares the PNG decoders on the
mixed set's PNGs: Pillow's (``imaging.decode_pixels``) and libspng's
(``imaging.decode_png``), decoding alone, with a check that their pixels are
identical. Results go to ``benchmarks/results/formats.{md,json}``.
"""

from __future__ import annotations

import argparse
import importlib
import io
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import imagecodecs
import numpy as np
from benchtools import machine, make_photo_corpus, median_ms, warm_up, write_results
from PIL import Image
from threadpoolctl import threadpool_limits

from palette_dask import extract_palette
from palette_dask.imaging import decode_pixels, decode_png
from palette_dask.pipeline import package_versions

REPOSITORY = Path(__file__).resolve().parent.parent
# The last revision before the formats and colour-management work.
DEFAULT_BASE = "59404c8"
DISPLAY_P3 = imagecodecs.cms_profile(
    "rgb",
    primaries=[0.680, 0.320, 1.0, 0.265, 0.690, 1.0, 0.150, 0.060, 1.0],
    whitepoint=[0.3127, 0.3290, 1.0],
    gamma=2.2,
)
# Each format's encoder options, as a photograph would be saved.
FORMATS = {
    "PNG": {},
    "JPEG": {"quality": 90},
    "WEBP": {"quality": 90},
    "AVIF": {"quality": 80},
    "HEIF": {"quality": 80},
    "JXL": {"quality": 90, "lossless": False},
    "JPEG2000": {},
    "TIFF": {},
    "TGA": {},
    "PPM": {},
}


def base_package(revision: str, folder: Path):
    """``palette_dask`` as it was at ``revision``, imported as ``palette_dask_base``."""
    archive = subprocess.run(
        ["git", "-C", str(REPOSITORY), "archive", revision, "palette_dask"],
        check=True,
        capture_output=True,
    ).stdout
    folder.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    (folder / "palette_dask").rename(folder / "palette_dask_base")
    sys.path.insert(0, str(folder))
    return importlib.import_module("palette_dask_base")


def with_icc_profile(jpeg: bytes, profile: bytes) -> bytes:
    """The same JPEG with an ICC profile in an APP2 segment right after its start marker."""
    body = b"ICC_PROFILE\x00\x01\x01" + profile
    return jpeg[:2] + b"\xff\xe2" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def tagged_copies(paths, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in paths:
        copy = folder / path.name
        copy.write_bytes(with_icc_profile(path.read_bytes(), DISPLAY_P3))
        copies.append(copy)
    return copies


def encoded_set(paths, fmt: str, folder: Path) -> list[Path]:
    """The pictures of ``paths`` re-encoded as ``fmt``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path in paths:
        target = folder / f"{path.stem}.{fmt.lower()}"
        with Image.open(path) as im:
            im.convert("RGB").save(target, fmt, **FORMATS[fmt])
        out.append(target)
    return out


def files(paths) -> list[bytes]:
    """The files' bytes: read once, so that reading is not timed."""
    return [Path(p).read_bytes() for p in paths]


def png_decoders(paths) -> dict:
    """Pillow's and libspng's PNG decoding alone (median ms), and whether their pixels agree."""

    def pillow(data: bytes):
        with Image.open(io.BytesIO(data)) as opened:
            return decode_pixels(opened)

    def libspng(data: bytes):
        with Image.open(io.BytesIO(data)) as opened:
            return decode_png(opened, data)

    ms = median_ms({"pillow": pillow, "libspng": libspng}, files(paths))
    identical = all(
        all(np.array_equal(a, b) for a, b in zip(pillow(d), libspng(d), strict=True))
        for d in files(paths)
    )
    return {**ms, "pillow_over_libspng": ms["pillow"] / ms["libspng"], "identical": identical}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camera", type=int, default=6, help="12-megapixel JPEGs")
    parser.add_argument("--web", type=int, default=24, help="1-megapixel JPEGs")
    parser.add_argument("--mixed", type=int, default=24, help="small PNGs and JPEGs")
    parser.add_argument("--per-format", type=int, default=6, help="pictures per format")
    parser.add_argument("--base", default=DEFAULT_BASE, help="git revision to compare with")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="palette-formats-"))
    try:
        base = base_package(args.base, work / "base")
        web = make_photo_corpus(work / "web", args.web, megapixels=1, seed=2)
        camera = make_photo_corpus(work / "camera", args.camera, megapixels=12, seed=1)
        mixed = make_photo_corpus(
            work / "mixed", args.mixed, megapixels=0.3, seed=3, formats=("png", "jpg")
        )
        sets = {
            "camera": camera,
            "web": web,
            "mixed PNGs": [p for p in mixed if p.suffix == ".png"],
            "camera, Display P3 profile": tagged_copies(camera, work / "camera-p3"),
            "web, Display P3 profile": tagged_copies(web, work / "web-p3"),
        }
        pictures = web[: args.per_format]
        per_format = {fmt: encoded_set(pictures, fmt, work / fmt) for fmt in FORMATS}
        with threadpool_limits(1):
            warm_up()
            base.extract_palette(camera[0].read_bytes())
            versions = {"base": base.extract_palette, "this": extract_palette}
            compared = {}
            for name, paths in sets.items():
                ms = median_ms(versions, files(paths))
                compared[name] = {
                    "images": len(paths),
                    "base_ms": ms["base"],
                    "this_ms": ms["this"],
                    "this_over_base": ms["this"] / ms["base"],
                }
            formats = {}
            for fmt, paths in per_format.items():
                ms = median_ms({"this": extract_palette}, files(paths))["this"]
                formats[fmt] = {
                    "ms": ms,
                    "bytes": statistics.median(p.stat().st_size for p in paths),
                }
            for fmt in formats:
                formats[fmt]["over_png"] = formats[fmt]["ms"] / formats["PNG"]["ms"]
            decoders = png_decoders(sets["mixed PNGs"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {
        "machine": machine(),
        "versions": package_versions(),
        "base": args.base,
        "sets": compared,
        "formats": formats,
        "png_decoders": decoders,
    }
    lines = [
        f"# Per image against {args.base}, one process, single-threaded (median ms)",
        "",
        "| set | images | base | this revision | this / base |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, r in compared.items():
        lines.append(
            f"| {name} | {r['images']} | {r['base_ms']:.2f} | {r['this_ms']:.2f} "
            f"| {r['this_over_base']:.3f} |"
        )
    lines += [
        "",
        f"# Per format: {args.per_format} one-megapixel pictures (median ms per image)",
        "",
        "| format | ms | over PNG | median file size |",
        "| --- | --- | --- | --- |",
    ]
    for fmt, r in formats.items():
        lines.append(
            f"| {fmt} | {r['ms']:.2f} | {r['over_png']:.2f} | {r['bytes'] / 1024:.0f} KB |"
        )
    lines += [
        "",
        "# PNG decoding alone, the mixed set's PNGs (median ms per image)",
        "",
        "| Pillow | libspng | Pillow / libspng | identical pixels |",
        "| --- | --- | --- | --- |",
        f"| {decoders['pillow']:.2f} | {decoders['libspng']:.2f} "
        f"| {decoders['pillow_over_libspng']:.2f} | {decoders['identical']} |",
    ]
    write_results("formats", results, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
