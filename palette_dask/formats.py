"""What an encoded file is: the formats the job decodes and what their headers declare.

Pillow decodes most formats itself; HEIC/HEIF comes from pillow-heif and JPEG XL
from pillow-jxl-plugin, both registered with Pillow when this module is
imported. Codecs that can run several threads are held to one: a worker
process decodes one image at a time and its cores are shared by the worker
processes, as the BLAS threads are.

Two plugins decode the pixels as soon as a file is opened (ICO, JPEG XL), so
their declared size is read here from the bytes before Pillow sees them; every
other format declares it in the header Pillow reads when it opens a file.
"""

from __future__ import annotations

import struct

import pillow_heif
import pillow_jxl.JpegXLImagePlugin as _jxl_plugin
from PIL import AvifImagePlugin

from .errors import ImageError

pillow_heif.register_heif_opener(thumbnails=True, depth_images=False, aux_images=False)
pillow_heif.options.DECODE_THREADS = 1
_jxl_plugin.DECODE_THREADS = 0  # 0: no decoding threads
AvifImagePlugin.DEFAULT_MAX_THREADS = 1

# Pillow's names of the formats decoded, most common first. MPO is the
# multi-picture JPEG many cameras write; DIB is a bitmap without BMP's file header;
# PPM covers PBM, PGM, PPM and PNM.
IMAGE_FORMATS = (
    "JPEG",
    "MPO",
    "PNG",
    "GIF",
    "WEBP",
    "TIFF",
    "BMP",
    "DIB",
    "AVIF",
    "HEIF",
    "JXL",
    "JPEG2000",
    "TGA",
    "PPM",
    "ICO",
    "PSD",
)
JPEG_FORMATS = ("JPEG", "MPO")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JXL_CODESTREAM = b"\xff\x0a"
_JXL_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"mif2")
_AVIF_BRANDS = (b"avif", b"avis")
# HEIF and AVIF put their metadata before the picture data; it is looked for this far.
ISOBMFF_META_BYTES = 1 << 16
# JPEG XL width as a ratio of height, by the size header's 3-bit ratio code.
_JXL_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}


def sniff(data: bytes) -> str | None:
    """The format an encoded file's first bytes announce (Pillow's name), or ``None``.

    Used to say what a file is when it cannot be opened, and to route TIFFs
    that Pillow refuses to tifffile.

    Examples
    --------
    >>> sniff(bytes.fromhex("ffd8ffe0")), sniff(b"II*" + bytes(9)), sniff(b"hello")
    ('JPEG', 'TIFF', None)
    """
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(_PNG_SIGNATURE):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith(_TIFF_SIGNATURES):
        return "TIFF"
    if head.startswith(b"BM"):
        return "BMP"
    if head[4:8] == b"ftyp":
        brands = [head[i : i + 4] for i in range(8, min(len(head), 32), 4)]
        if any(brand in _AVIF_BRANDS for brand in brands):
            return "AVIF"
        if any(brand in _HEIF_BRANDS for brand in brands):
            return "HEIF"
    if head.startswith((_JXL_CODESTREAM, _JXL_CONTAINER)):
        return "JXL"
    if head.startswith((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")):
        return "JPEG2000"
    if head.startswith(b"8BPS"):
        return "PSD"
    if head.startswith(b"\x00\x00\x01\x00"):
        return "ICO"
    if len(head) > 2 and head[0:1] == b"P" and head[1:2] in b"1234567" and head[2:3].isspace():
        return "PPM"
    return None


def check_declared_size(data: bytes, max_image_pixels: int) -> None:
    """Refuse, from the header alone, a file whose plugin would decode it on opening.

    JPEG XL and ICO files are decoded by Pillow's ``open``; their declared
    sizes are read here first, as are those of HEIF and AVIF, whose decoders
    parse the whole container on opening. Other formats are checked after
    ``open``, which reads only their header.

    Raises
    ------
    ImageError
        The file declares more than ``max_image_pixels`` pixels.
    """
    fmt = sniff(data)
    if fmt == "JXL":
        sizes = [jxl_size(data)]
    elif fmt == "ICO":
        sizes = ico_sizes(data)
    elif fmt in ("AVIF", "HEIF"):
        sizes = isobmff_sizes(data)
    else:
        return
    for size in sizes:
        if size is not None:
            check_pixels(*size, max_image_pixels, fmt)


def check_pixels(width: int, height: int, max_image_pixels: int, fmt: str) -> None:
    """Refuse an image declaring more than ``max_image_pixels`` pixels (a decompression bomb)."""
    if width * height > max_image_pixels:
        raise ImageError(
            f"image declares {width}x{height} = {width * height:,} pixels, "
            f"over max_image_pixels={max_image_pixels:,}",
            format=fmt,
        )


def jxl_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a JPEG XL file's size header (bare codestream or container).

    Examples
    --------
    >>> jxl_size(bytes.fromhex("ff0a 7f40"))  # a small size header: height 256, ratio 1:1
    (256, 256)
    """
    head = _jxl_codestream_head(data)
    if head is None or len(head) < 2:
        return None
    bits = int.from_bytes(head[2:18], "little")  # the header is read least significant bit first
    position = 0

    def read(n: int) -> int:
        nonlocal position
        value = (bits >> position) & ((1 << n) - 1)
        position += n
        return value

    def u32() -> int:
        return 1 + read((9, 13, 18, 30)[read(2)])

    small = read(1)
    height = (read(5) + 1) * 8 if small else u32()
    ratio = read(3)
    if ratio:
        num, den = _JXL_RATIOS[ratio]
        width = height * num // den
    else:
        width = (read(5) + 1) * 8 if small else u32()
    return width, height


def _jxl_codestream_head(data: bytes) -> bytes | None:
    """The start of a JPEG XL codestream: the file itself, or the first ``jxlc``/``jxlp`` box."""
    if data.startswith(_JXL_CODESTREAM):
        return data[:32]
    position = 0
    while position + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, position)
        header = 8
        if size == 1 and position + 16 <= len(data):
            size, header = struct.unpack_from(">Q", data, position + 8)[0], 16
        elif size == 0:
            size = len(data) - position
        if kind == b"jxlc":
            return data[position + header : position + header + 32]
        if kind == b"jxlp":  # partial codestream boxes start with a 4-byte index
            return data[position + header + 4 : position + header + 36]
        if size < header:
            return None
        position += size
    return None


def ico_sizes(data: bytes) -> list[tuple[int, int] | None]:
    """Width and height of every picture in an ICO file, from each picture's own header.

    The directory's one-byte sizes say at most 256; an embedded PNG may
    declare far more, and Pillow decodes the largest picture on opening.
    """
    if len(data) < 6:
        return []
    count = struct.unpack_from("<H", data, 4)[0]
    sizes = []
    for i in range(count):
        entry = 6 + 16 * i
        if entry + 16 > len(data):
            break
        width, height = data[entry] or 256, data[entry + 1] or 256
        offset = struct.unpack_from("<I", data, entry + 12)[0]
        picture = data[offset : offset + 24]
        if picture.startswith(_PNG_SIGNATURE) and len(picture) >= 24:
            width, height = struct.unpack_from(">II", picture, 16)
        elif len(picture) >= 12 and struct.unpack_from("<I", picture)[0] >= 12:
            # A bitmap picture: BITMAPINFOHEADER, its height counting the AND mask too.
            width, height = struct.unpack_from("<ii", picture, 4)
            width, height = abs(width), abs(height) // 2
        sizes.append((width, height))
    return sizes


def isobmff_sizes(data: bytes) -> list[tuple[int, int]]:
    """Width and height of every item of a HEIF or AVIF file, from its ``ispe`` properties.

    A picture made of tiles declares its full size on the grid item as well as
    each tile's, so the largest is the picture's.

    Examples
    --------
    >>> ispe = b"....ispe" + bytes(4) + (4000).to_bytes(4, "big") + (3000).to_bytes(4, "big")
    >>> isobmff_sizes(ispe)
    [(4000, 3000)]
    """
    sizes = []
    at = data.find(b"ispe", 0, ISOBMFF_META_BYTES)
    while at >= 0 and at + 16 <= len(data):
        sizes.append(struct.unpack_from(">II", data, at + 8))
        at = data.find(b"ispe", at + 16, ISOBMFF_META_BYTES)
    return sizes


def png_chunk(data: bytes, kind: bytes, *, before: bytes = b"IEND") -> bytes | None:
    """The body of a PNG's first ``kind`` chunk, found by walking the chunk headers.

    The walk stops at the first ``before`` chunk (``b"IDAT"`` for chunks that
    must come before the image data).

    Examples
    --------
    >>> png = _PNG_SIGNATURE + struct.pack(">I4s2sI", 2, b"cICP", b"\\x0c\\x0d", 0)
    >>> png_chunk(png, b"cICP"), png_chunk(png, b"eXIf")
    (b'\\x0c\\r', None)
    """
    position = len(_PNG_SIGNATURE)
    while position + 8 <= len(data):
        length, found = struct.unpack_from(">I4s", data, position)
        if found == kind:
            return data[position + 8 : position + 8 + length]
        if found == before:
            return None
        position += 12 + length
    return None
