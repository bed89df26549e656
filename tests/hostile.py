"""A corpus of hostile inputs: every way an image file can be broken, odd or dangerous.

``make_hostile_corpus`` writes the files and returns what the job must say about
each of them: ``None`` for an image that must be processed, or a fragment of
the expected error message.
"""

from __future__ import annotations

import io
import shutil
import socket
import struct
import zlib
from pathlib import Path

import numpy as np
from imagegen import (
    animated_gif,
    encode,
    jpeg_with_orientation,
    palette_png_with_transparency,
    png16,
    transparent_png,
    truncated_jpeg,
)
from PIL import Image

# The job runs with this file-size limit, so that one input can exceed it cheaply.
MAX_FILE_BYTES = 2_000_000


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares a huge image (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + chunk(b"IEND", b"")
    )


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_hostile_corpus(folder: Path, sample_dir: Path) -> tuple[list[str], dict[str, str | None]]:
    """Write the corpus; return the job's inputs and, per distinct input, the expected outcome."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    expected: dict[str, str | None] = {}

    def put(name: str, data: bytes, outcome: str | None) -> Path:
        path = folder / name
        path.write_bytes(data)
        expected[str(path)] = outcome
        return path

    good = folder / "good.jpg"
    shutil.copy(sample_dir / "coffee.jpg", good)
    expected[str(good)] = None
    photo = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    put("truncated.jpg", truncated_jpeg(photo), "truncated or corrupt JPEG data")
    put("zero.png", b"", "empty file (0 bytes)")
    put(
        "random.png",
        rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "not a recognised image file",
    )
    put(
        "page.jpg",
        b"<!DOCTYPE html>\n<html><body>Not Found</body></html>\n",
        "an HTML page, not an image",
    )
    put(
        "bomb.png",
        png_declaring(100_000, 100_000),
        "declares 100000x100000 = 10,000,000,000 pixels, over max_image_pixels=250,000,000",
    )
    put(
        "huge.bmp",
        encode(rng.integers(0, 256, (1000, 1000, 3), dtype=np.uint8), "BMP"),
        f"over max_file_bytes={MAX_FILE_BYTES:,}",
    )
    put("transparent.png", transparent_png(), "no opaque pixels")
    put("one-pixel.png", encode(np.full((1, 1, 3), (10, 200, 30), np.uint8), "PNG"), None)
    put("sixteen-bit.png", png16(np.full((20, 30, 3), 40000, np.uint16)), None)
    cmyk = io.BytesIO()
    Image.fromarray(np.full((20, 30, 3), (200, 40, 40), np.uint8)).convert("CMYK").save(
        cmyk, "JPEG", quality=95
    )
    put("cmyk.jpg", cmyk.getvalue(), None)
    put("palette-transparent.png", palette_png_with_transparency(), None)
    put("animated.gif", animated_gif((255, 0, 0), (0, 0, 255)), None)
    upright = np.zeros((40, 60, 3), np.uint8)
    upright[:, :30] = (250, 250, 250)
    put("rotated.jpg", jpeg_with_orientation(upright, 6), None)
    put("grey.png", encode(np.full((16, 16), 90, np.uint8), "PNG"), None)
    put("café au lait.png", encode(np.full((8, 8, 3), (120, 80, 40), np.uint8), "PNG"), None)
    put("写真 1.jpg", encode(np.full((8, 8, 3), (20, 80, 160), np.uint8), "JPEG"), None)
    secret = put("secret.jpg", encode(photo, "JPEG"), "permission denied")
    secret.chmod(0)

    missing = folder / "gone" / "ghost.jpg"
    port = closed_port()
    unreachable = f"http://127.0.0.1:{port}/x.jpg"
    manifest = folder.parent / f"{folder.name}-manifest.txt"
    manifest.write_text("\n".join([str(good), str(missing), unreachable, str(good)]) + "\n")
    expected[str(missing)] = "file not found"
    expected[unreachable] = f"cannot connect to 127.0.0.1:{port}: Connection refused (3 tries)"
    return [str(folder), str(manifest)], expected
