"""Every format the job decodes, TIFFs Pillow refuses, bombs refused from headers, colour profiles.

Files are made here with the encoders the installed packages ship (Pillow and its
AVIF and JPEG 2000 codecs, pillow-heif, pillow-jxl-plugin, tifffile; colour
profiles and conversions with imagecodecs' littleCMS, independent of the
``ImageCms`` path the job takes) and compared with the same picture as PNG.
"""

import io
import itertools
import json
import struct
import zlib

import imagecodecs
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from imagegen import cmyk_profile, encode, picture, png16, psd
from jobtools import read_table
from PIL import Image
from skimage.color import rgb2lab

from palette_dask import JobSpec, extract_palette, run_job
from palette_dask.cli import main
from palette_dask.color import _srgb_to_linear
from palette_dask.formats import IMAGE_FORMATS
from palette_dask.imaging import (
    ImageError,
    decode_pixels,
    decode_png,
    decode_sample,
    jpeg2000_reduce,
)
from palette_dask.sources import IMAGE_EXTENSIONS

BIG = 10**9
# (format, encoder options, largest difference allowed per colour channel)
FORMATS = [
    ("AVIF", {"quality": 95, "subsampling": "4:4:4"}, 2),
    ("HEIF", {"quality": 95, "chroma": 444}, 2),
    ("JXL", {"lossless": True}, 0),
    ("JPEG2000", {}, 0),
    ("TGA", {}, 0),
    ("PPM", {}, 0),
    ("ICO", {}, 0),
    ("PSD", {}, 0),
    ("DIB", {}, 0),
]
DISPLAY_P3 = [0.680, 0.320, 1.0, 0.265, 0.690, 1.0, 0.150, 0.060, 1.0]
ADOBE_RGB = [0.640, 0.330, 1.0, 0.210, 0.710, 1.0, 0.150, 0.060, 1.0]
D65 = [0.3127, 0.3290, 1.0]


def encoded(pixels: np.ndarray, fmt: str, **options) -> bytes:
    if fmt == "PSD":
        return psd(pixels)
    if fmt == "ICO":
        options = {"sizes": [pixels.shape[1::-1]]}
    return encode(pixels, fmt, **options)


def palette_of(data: bytes):
    return extract_palette(data)


def by_color(palette) -> np.ndarray:
    """The palette's colours in colour order (ranks swap between near-equal shares)."""
    return palette.colors[np.lexsort(palette.colors.T[::-1])].astype(int)


def largest_difference(palette, reference) -> int:
    assert palette.colors.shape == reference.colors.shape
    return int(np.abs(by_color(palette) - by_color(reference)).max())


@pytest.fixture(scope="module")
def reference():
    return palette_of(encode(picture(), "PNG"))


@pytest.mark.parametrize(("fmt", "options", "tolerance"), FORMATS, ids=[f[0] for f in FORMATS])
def test_format_gives_the_palette_of_the_png(fmt, options, tolerance, reference):
    palette = palette_of(encoded(picture(), fmt, **options))
    assert palette.sample.format == fmt
    assert (palette.sample.width, palette.sample.height) == (128, 96)
    assert largest_difference(palette, reference) <= tolerance
    np.testing.assert_allclose(palette.proportions, reference.proportions, atol=0.01)


def test_pgm_gives_the_palette_of_the_grey_png():
    grey = picture()[..., 1]
    palette = palette_of(encode(grey, "PPM"))
    assert palette.sample.format == "PPM"
    assert largest_difference(palette, palette_of(encode(grey, "PNG"))) == 0


def tiff(pages: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pages, **options)
    return buffer.getvalue()


def planar_pages(pixels: np.ndarray, dtype, scale) -> np.ndarray:
    """Two pages, samples first (planar); the second page is another picture."""
    planes = pixels.transpose(2, 0, 1).astype(np.float64) * scale
    return np.stack([planes, planes[::-1]]).astype(dtype)


@pytest.mark.parametrize(
    ("dtype", "scale"), [(np.float64, 1 / 255), (np.float32, 1 / 255), (np.uint16, 257)]
)
def test_multipage_planar_tiff_gives_the_palette_of_its_first_page(dtype, scale, reference):
    data = tiff(planar_pages(picture(), dtype, scale), photometric="rgb", planarconfig="separate")
    palette = palette_of(data)
    assert palette.sample.format == "TIFF"
    assert largest_difference(palette, reference) == 0


def test_tiff_with_many_samples_takes_its_colour_samples(reference):
    extra = np.zeros((*picture().shape[:2], 2), np.uint16)
    pixels = np.concatenate([picture().astype(np.uint16) * 257, extra], axis=2)
    data = tiff(pixels, photometric="rgb", extrasamples=[0, 0])
    assert largest_difference(palette_of(data), reference) == 0


def test_float_tiff_out_of_unit_range_is_scaled_and_nan_is_left_out():
    values = np.full((10, 10, 3), 500.0)
    values[:5] = 1500.0
    values[0, :] = np.nan  # a missing row: transparent, not black
    sample = decode_sample(tiff(values, photometric="rgb"), max_pixels=400, max_image_pixels=BIG)
    assert (
        sample.alpha is not None
        and (sample.alpha[0] == 0).all()
        and (sample.alpha[1:] == 255).all()
    )
    assert sample.rgb[1:5].min() == 255 and sample.rgb[5:].max() == 0


def test_undecodable_tiff_says_what_it_holds():
    pages = planar_pages(picture()[:10, :10], np.float64, 1 / 255)
    data = bytearray(tiff(pages, photometric="rgb", planarconfig="separate", compression="zlib"))
    start = bytes(data).find(zlib.compress(b"")[:1], 16)  # inside the first compressed strip
    data[start + 2 : start + 40] = bytes(38)
    with pytest.raises(ImageError) as caught:
        decode_sample(bytes(data), max_pixels=400, max_image_pixels=BIG)
    assert str(caught.value).startswith("TIFF with 2 pages of 3×10×10 float64 samples: ")


def test_unknown_bytes_and_known_formats_are_told_apart():
    with pytest.raises(ImageError, match="not a recognised image file"):
        decode_sample(b"\x01\x02\x03" * 20, max_pixels=400, max_image_pixels=BIG)
    heif = encoded(picture(), "HEIF", quality=50)
    with pytest.raises(ImageError, match=r"^HEIF file whose header cannot be decoded"):
        decode_sample(heif[:40], max_pixels=400, max_image_pixels=BIG)


@pytest.mark.parametrize(("fmt", "options", "_"), [*FORMATS, ("TIFF", {}, 0)], ids=lambda v: v)
def test_bomb_is_refused_from_its_header(fmt, options, _):
    noise = np.random.default_rng(0).integers(0, 256, (192, 256, 3), dtype=np.uint8)
    data = (
        tiff(noise / np.float32(255), photometric="rgb")
        if fmt == "TIFF"
        else encoded(noise, fmt, **options)
    )
    header_only = data[: len(data) // 2]  # the pixel data is cut: decoding it would fail
    with pytest.raises(ImageError, match=r"image declares 256x192 = 49,152 pixels, over max_image"):
        decode_sample(header_only, max_pixels=400, max_image_pixels=40_000)


def test_ico_picture_declaring_more_than_its_directory_is_refused():
    """The directory's sizes stop at 256; an embedded PNG's header can say far more."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + bytes(4)
    ico = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 22)
    with pytest.raises(ImageError, match="image declares 100000x100000"):
        decode_sample(ico + png, max_pixels=400, max_image_pixels=10**8)


def rgb_profile(primaries, **transfer) -> bytes:
    return imagecodecs.cms_profile("rgb", primaries=primaries, whitepoint=D65, **transfer)


SRGB_CURVE = {"transferfunction": _srgb_to_linear(np.linspace(0, 1, 4096)).astype(np.float32)}
PROFILES = {
    "Display P3": rgb_profile(DISPLAY_P3, **SRGB_CURVE),
    "Adobe RGB": rgb_profile(ADOBE_RGB, gamma=563 / 256),
}


def converted(pixels: np.ndarray, profile: bytes) -> np.ndarray:
    """sRGB pixels as another colour space encodes them (littleCMS via imagecodecs)."""
    srgb = imagecodecs.cms_profile("srgb")
    return imagecodecs.cms_transform(pixels, srgb, profile, colorspace="rgb", outcolorspace="rgb")


@pytest.mark.parametrize(
    ("space", "fmt"), [("Display P3", "PNG"), ("Adobe RGB", "PNG"), ("Display P3", "JPEG")]
)
def test_embedded_profile_gives_the_srgb_palette(space, fmt, reference):
    pixels = converted(picture(), PROFILES[space])
    options = {"quality": 100, "subsampling": 0} if fmt == "JPEG" else {}
    tagged = palette_of(encode(pixels, fmt, icc_profile=PROFILES[space], **options))
    stripped = palette_of(encode(pixels, fmt, **options))
    assert tagged.sample.icc_profile == "RGB built-in" and tagged.sample.warning is None
    assert largest_difference(tagged, reference) <= 2
    assert largest_difference(stripped, reference) > 10  # the test can fail


def png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    return struct.pack(">I", len(body)) + kind + body + crc


def with_png_chunk(png: bytes, kind: bytes, body: bytes) -> bytes:
    """A PNG with one more chunk right after its header (where cICP and gAMA go)."""
    return png[:33] + png_chunk(kind, body) + png[33:]


def test_png_cicp_display_p3_gives_the_srgb_palette(reference):
    pixels = converted(picture(), PROFILES["Display P3"])
    png = with_png_chunk(encode(pixels, "PNG"), b"cICP", bytes([12, 13, 0, 1]))
    palette = palette_of(png)
    assert palette.sample.icc_profile == "cICP: Display P3 primaries, transfer 13"
    assert largest_difference(palette, reference) <= 2


def test_png_linear_gamma_is_applied():
    linear = np.rint(_srgb_to_linear(picture() / 255.0) * 255).astype(np.uint8)
    png = with_png_chunk(encode(linear, "PNG"), b"gAMA", struct.pack(">I", 100_000))
    sample = decode_sample(png, max_pixels=40_000, max_image_pixels=BIG)
    assert sample.icc_profile == "PNG gAMA 1"
    # 8-bit linear light loses the darkest shades; colours come back within a few units.
    assert np.abs(sample.rgb.astype(int) - picture()).max() <= 6


def test_exif_adobe_rgb_without_profile_is_applied(reference):
    pixels = converted(picture(), PROFILES["Adobe RGB"])
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA001] = 2  # ColorSpace: Adobe RGB, as some cameras mark it
    palette = palette_of(encode(pixels, "PNG", exif=exif.tobytes()))
    assert palette.sample.icc_profile == "EXIF: Adobe RGB"
    assert largest_difference(palette, reference) <= 2


def test_broken_profile_is_a_warning_not_a_failure(reference):
    png = encode(picture(), "PNG", icc_profile=b"not an ICC profile at all" * 8)
    palette = palette_of(png)
    assert palette.sample.warning.startswith("embedded ICC profile cannot be read")
    assert largest_difference(palette, reference) == 0


def test_srgb_profile_leaves_pixels_untouched(reference):
    png = encode(picture(), "PNG", icc_profile=imagecodecs.cms_profile("srgb"))
    palette = palette_of(png)
    assert palette.sample.icc_profile is not None and palette.sample.warning is None
    assert largest_difference(palette, reference) == 0


EXTENSIONS = {
    "AVIF": "avif", "HEIF": "heic", "JXL": "jxl", "JPEG2000": "jp2",
    "TGA": "tga", "PPM": "ppm", "ICO": "ico", "PSD": "psd", "DIB": "dib",
}  # fmt: skip


def test_every_image_extension_names_a_decoded_format():
    """Folder walks take these extensions: each must be a format the job decodes."""
    registered = Image.registered_extensions()
    assert {
        ext: registered.get(ext)
        for ext in IMAGE_EXTENSIONS
        if registered.get(ext) not in IMAGE_FORMATS
    } == {}


def test_folder_of_mixed_formats_gives_one_row_per_picture(tmp_path, client1):
    folder = tmp_path / "coffee"
    (folder / "more").mkdir(parents=True)
    for fmt, options, _ in FORMATS:
        (folder / f"coffee.{EXTENSIONS[fmt]}").write_bytes(encoded(picture(), fmt, **options))
    p3 = encode(
        converted(picture(), PROFILES["Display P3"]), "PNG", icc_profile=PROFILES["Display P3"]
    )
    (folder / "more" / "coffee-p3.png").write_bytes(p3)
    (folder / "more" / "scan.tiff").write_bytes(
        tiff(
            planar_pages(picture(), np.float64, 1 / 255), photometric="rgb", planarconfig="separate"
        )
    )
    (folder / "notes.txt").write_text("shot on a phone")
    (folder / "more" / "camera.xmp").write_text("<x:xmpmeta/>")
    report = run_job(JobSpec(input=[str(folder)], output=str(tmp_path / "out")), client=client1)
    assert (report.images, report.ok, report.errors) == (len(FORMATS) + 2, len(FORMATS) + 2, 0)
    assert report.not_images == {".txt": 1, ".xmp": 1}
    images = read_table(tmp_path / "out", "images").to_pandas().set_index("uri")
    assert sorted(images["format"]) == sorted([*EXTENSIONS, "PNG", "TIFF"])
    assert images.loc[str(folder / "more" / "coffee-p3.png"), "icc_profile"] == "RGB built-in"
    assert images["warning"].isna().all()
    job = json.loads((tmp_path / "out" / "_job.json").read_text())
    assert job["counts"]["not_images"] == {".txt": 1, ".xmp": 1}


def test_heif_with_a_thumbnail_decodes_it_and_keeps_the_picture():
    big = np.kron(picture(), np.ones((16, 16, 1), np.uint8))  # 2048 x 1536
    heif = encode(big, "HEIF", quality=90, chroma=444, thumbnails=[512])
    with Image.open(io.BytesIO(heif)) as opened:
        assert opened.info["thumbnails"] and opened.draft(None, (231, 173)) is not None
    palette = palette_of(heif)
    assert (palette.sample.width, palette.sample.height) == (2048, 1536)
    assert largest_difference(palette, palette_of(encode(big, "PNG"))) <= 4


def png_kinds() -> dict[str, bytes]:
    rgba = np.dstack([picture(), np.linspace(0, 255, 128, dtype=np.uint8)[None, :].repeat(96, 0)])
    wide = picture().astype(np.uint16) * 257 + 100
    indexed = Image.fromarray(picture()).quantize(8)
    with_trns = io.BytesIO()
    indexed.save(with_trns, "PNG", transparency=2)
    return {
        "RGB": encode(picture(), "PNG"),
        "RGBA": encode(rgba, "PNG"),
        "grey": encode(picture()[..., 0], "PNG"),
        "grey and alpha": encode(np.dstack([picture()[..., 0], rgba[..., 3]]), "PNG"),
        "palette": encode(np.asarray(indexed.convert("RGB")), "PNG", optimize=True),
        "palette with tRNS": with_trns.getvalue(),
        "16-bit RGB": png16(wide),
        "16-bit RGBA": png16(np.dstack([wide, wide[..., :1]])),
        "16-bit grey": png16(wide[..., 0]),
        "1-bit": encode(picture()[..., 0] > 100, "PNG"),
    }


@pytest.mark.parametrize("kind", list(png_kinds()))
def test_png_decoder_gives_the_pixels_pillow_gives(kind):
    data = png_kinds()[kind]
    with Image.open(io.BytesIO(data)) as fast, Image.open(io.BytesIO(data)) as reference:
        rgb, alpha = decode_png(fast, data)
        expected_rgb, expected_alpha = decode_pixels(reference)
    np.testing.assert_array_equal(rgb, expected_rgb)
    np.testing.assert_array_equal(alpha, expected_alpha)


def test_png_orientation_is_read_from_a_chunk_after_the_pixels():
    exif = Image.Exif()
    exif[0x0112] = 6
    png = encode(picture(), "PNG")
    late = png[:-12] + png_chunk(b"eXIf", exif.tobytes()) + png[-12:]  # just before IEND
    sample = decode_sample(late, max_pixels=40_000, max_image_pixels=BIG)
    assert (sample.width, sample.height) == (96, 128)
    np.testing.assert_array_equal(sample.rgb, np.rot90(picture(), -1))


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "AVIF", "JXL", "JPEG2000", "TIFF"])
def test_truncated_file_is_an_image_error(fmt):
    noise = np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    data = encode(noise, fmt)
    with pytest.raises(ImageError) as caught:
        decode_sample(data[: len(data) * 3 // 4], max_pixels=400, max_image_pixels=BIG)
    message = str(caught.value)
    assert fmt in message and "\n" not in message and "Please build" not in message
    assert caught.value.format == fmt


def test_cmyk_images_are_converted_through_their_profile():
    """Cyan ink of this profile is a green-teal, not the #00ffff of a naive conversion."""

    def corner_lab(c, m, y, k):
        rgb = np.array([(1 - c) * (1 - 0.2 * m), (1 - m) * (1 - 0.1 * y), (1 - y) * (1 - 0.3 * c)])
        return tuple(rgb2lab((rgb * (1 - 0.9 * k))[None, None])[0, 0])

    profile = cmyk_profile(
        {corner: corner_lab(*corner) for corner in itertools.product((0, 1), repeat=4)}
    )
    cyan = Image.new("CMYK", (40, 30), (255, 0, 0, 0))
    for fmt in ("JPEG", "TIFF"):
        tagged, plain = io.BytesIO(), io.BytesIO()
        cyan.save(tagged, fmt, icc_profile=profile)
        cyan.save(plain, fmt)
        palette = palette_of(tagged.getvalue())
        assert palette.sample.icc_profile == "CMYK test profile"
        assert np.abs(palette.colors[0].astype(int) - (0, 255, 178)).max() <= 2
        assert palette_of(plain.getvalue()).hex == ["#00ffff"]


def test_grey_image_is_converted_through_its_grey_profile():
    linear_grey = imagecodecs.cms_profile("gray", gamma=1.0)
    png = io.BytesIO()
    Image.new("L", (20, 10), 128).save(png, "PNG", icc_profile=linear_grey)
    # Half the light is #bcbcbc in sRGB; taken as sRGB it would be #808080.
    assert palette_of(png.getvalue()).hex == ["#bcbcbc"]


def test_float_tiff_with_a_profile_is_converted(reference):
    pixels = converted(picture(), PROFILES["Display P3"]) / 255.0
    data = tiff(pixels, photometric="rgb", iccprofile=PROFILES["Display P3"])
    palette = palette_of(data)
    assert palette.sample.icc_profile == "RGB built-in"
    assert largest_difference(palette, reference) <= 2


def test_large_jpeg2000_is_decoded_at_a_lower_resolution_level(reference):
    big = np.kron(picture(), np.ones((16, 16, 1), np.uint8))  # 2048 x 1536
    data = encode(big, "JPEG2000")
    assert jpeg2000_reduce(data, (2048, 1536), (231, 173)) == 3
    palette = palette_of(data)
    assert (palette.sample.width, palette.sample.height) == (2048, 1536)
    # The wavelet's low-pass is not a box filter: edges between colours blend a little otherwise.
    assert largest_difference(palette, palette_of(encode(big, "PNG"))) <= 4


def test_show_says_which_profile_was_applied_and_warns_of_a_broken_one(tmp_path):
    p3 = tmp_path / "p3.png"
    p3.write_bytes(encode(picture(), "PNG", icc_profile=PROFILES["Display P3"]))
    broken = tmp_path / "broken.png"
    broken.write_bytes(encode(picture(), "PNG", icc_profile=b"not a profile" * 20))
    shown = CliRunner().invoke(main, ["show", str(p3)])
    assert "colours converted to sRGB from RGB built-in" in shown.output
    as_json = json.loads(CliRunner().invoke(main, ["show", str(broken), "--json"]).output)
    assert as_json["icc_profile"] is None
    assert as_json["warning"].startswith("embedded ICC profile cannot be read")
