"""Test images made on the fly: solid colour blocks, every supported format, broken files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def blocks(colors, shares, *, size=(100, 120)) -> np.ndarray:
    """An RGB image of horizontal bands: band ``i`` is ``colors[i]`` over ``shares[i]`` of the rows.

    Shares are rounded to whole rows, so choose sizes where they divide evenly.
    """
    height, width = size
    rows = np.rint(np.cumsum([0, *shares]) * height).astype(int)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    for color, top, bottom in zip(colors, rows[:-1], rows[1:], strict=True):
        image[top:bottom] = color
    return image


def encode(pixels: np.ndarray, fmt: str, **options) -> bytes:
    """Encode pixels with Pillow (``fmt`` as Pillow names it: JPEG, PNG, WEBP, ...)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **options)
    return buffer.getvalue()


def noisy_blocks(i: int, size=(300, 400)) -> np.ndarray:
    """A photograph-like image, the same for the same ``i``: four seeded colour blocks with
    noise."""
    rng = np.random.default_rng(i)
    image = blocks(rng.integers(0, 256, (4, 3)), [0.4, 0.3, 0.2, 0.1], size=size)
    return np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)


def write_images(folder, indices, size=(300, 400)) -> None:
    """``folder/imgNNNN.png``, a :func:`noisy_blocks` image for each of ``indices``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in indices:
        (folder / f"img{i:04d}.png").write_bytes(encode(noisy_blocks(i, size), "PNG"))


def png16(pixels: np.ndarray) -> bytes:
    """A 16-bit PNG (RGB, RGBA or greyscale) written by hand: Pillow cannot write 16-bit colour."""
    height, width = pixels.shape[:2]
    color_type = {2: 0, 3: 2, 4: 6}[pixels.ndim if pixels.ndim == 2 else pixels.shape[2]]
    raw = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def jpeg_with_orientation(pixels: np.ndarray, orientation: int) -> bytes:
    """A JPEG whose EXIF orientation tag is ``orientation`` (pixels stored as given)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(pixels, "JPEG", quality=95, exif=exif.tobytes())


def palette_png_with_transparency(size=(20, 30)) -> bytes:
    """A palette PNG: left half red, right half the transparent palette entry."""
    index = np.zeros(size, dtype=np.uint8)
    index[:, size[1] // 2 :] = 1
    image = Image.fromarray(index, mode="P")
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", transparency=1)
    return buffer.getvalue()


def animated_gif(first, second, size=(16, 16)) -> bytes:
    """A two-frame GIF; only the first frame should count."""
    frames = [Image.new("RGB", size, tuple(c)) for c in (first, second)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def transparent_png(size=(10, 10)) -> bytes:
    """An RGBA PNG in which every pixel is fully transparent."""
    return encode(np.zeros((*size, 4), dtype=np.uint8), "PNG")


def truncated_jpeg(pixels: np.ndarray) -> bytes:
    """A JPEG cut off halfway through its data."""
    data = encode(pixels, "JPEG", quality=90)
    return data[: len(data) // 2]


def psd(pixels: np.ndarray) -> bytes:
    """A Photoshop file holding only its composite image (8-bit RGB, uncompressed).

    Pillow reads PSD but cannot write it; the format's composite is simple enough
    to write here: header, three empty sections, then one plane per channel.
    """
    height, width = pixels.shape[:2]
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3)
    empty_sections = struct.pack(">III", 0, 0, 0)
    planes = np.ascontiguousarray(pixels.transpose(2, 0, 1)).tobytes()
    return header + empty_sections + struct.pack(">H", 0) + planes


def picture(size=(96, 128)) -> np.ndarray:
    """A picture of five flat colours, as the format tests compare palettes on."""
    colors = [(200, 30, 40), (40, 160, 70), (20, 60, 200), (240, 220, 120), (90, 90, 90)]
    return blocks(colors, [0.25, 0.25, 0.25, 0.125, 0.125], size=size)


def cmyk_profile(corners: dict[tuple[int, int, int, int], tuple[float, float, float]]) -> bytes:
    """A minimal ICC v2 CMYK profile whose A2B0 table maps each CMYK corner to a CIELAB colour.

    ``corners`` gives the L*a*b* of the 16 corners (each ink 0 or 1); colours in
    between are interpolated by the colour engine. Enough for littleCMS to
    convert CMYK images through it, and unlike Pillow's naive CMYK → RGB.
    """

    def tag(signature: bytes, body: bytes) -> tuple[bytes, bytes]:
        return signature, body + bytes(-len(body) % 4)

    grid = b"".join(
        struct.pack(
            ">HHH",
            round(corners[(c, m, y, k)][0] / 100 * 65280),
            round((corners[(c, m, y, k)][1] + 128) * 256),
            round((corners[(c, m, y, k)][2] + 128) * 256),
        )
        for c in (0, 1) for m in (0, 1) for y in (0, 1) for k in (0, 1)
    )  # fmt: skip
    identity = struct.pack(">9i", 65536, 0, 0, 0, 65536, 0, 0, 0, 65536)
    ramp = struct.pack(">HH", 0, 65535)
    lut = b"mft2" + bytes(4) + bytes([4, 3, 2, 0]) + identity + struct.pack(">HH", 2, 2)
    lut += ramp * 4 + grid + ramp * 3
    text = b"CMYK test profile\x00"
    description = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 67)
    d50 = struct.pack(">3i", 63190, 65536, 54061)
    tags = [
        tag(b"desc", description),
        tag(b"wtpt", b"XYZ " + bytes(4) + d50),
        tag(b"A2B0", lut),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = struct.pack(">I4sI4s4s4s", size, b"none", 0x02100000, b"prtr", b"CMYK", b"Lab ")
    header += bytes(12) + b"acsp" + bytes(4 + 4 + 4 + 4 + 8) + struct.pack(">I", 0) + d50
    header += bytes(128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + data
