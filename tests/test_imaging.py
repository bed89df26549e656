import numpy as np
import pytest
from imagegen import (
    animated_gif,
    blocks,
    encode,
    jpeg_with_orientation,
    palette_png_with_transparency,
    png16,
    transparent_png,
    truncated_jpeg,
)
from PIL import Image

from palette_dask.imaging import ImageError, decode_sample, sample_shape

TEAL = (0, 128, 128)
BIG = 10**9


def decode(data, max_pixels=40_000):
    return decode_sample(data, max_pixels=max_pixels, max_image_pixels=BIG)


def solid(color, size=(20, 30)):
    return np.full((*size, 3), color, dtype=np.uint8)


@pytest.mark.parametrize(
    ("fmt", "options", "tolerance"),
    [
        ("PNG", {}, 0),
        ("BMP", {}, 0),
        ("TIFF", {}, 0),
        ("WEBP", {"lossless": True}, 0),
        ("GIF", {}, 0),
        ("JPEG", {"quality": 95}, 3),
    ],
)
def test_every_format_decodes_to_its_colour(fmt, options, tolerance):
    sample = decode(encode(solid(TEAL), fmt, **options))
    assert sample.format == fmt
    assert sample.rgb.shape == (20, 30, 3) and sample.rgb.dtype == np.uint8
    assert sample.alpha is None
    assert np.abs(sample.rgb.astype(int) - TEAL).max() <= tolerance
    assert (sample.width, sample.height) == (30, 20)


def test_greyscale_png_becomes_grey_rgb():
    sample = decode(encode(np.full((8, 8), 77, np.uint8), "PNG"))
    assert sample.rgb.shape == (8, 8, 3)
    assert (sample.rgb == 77).all()


@pytest.mark.parametrize("channels", [3, 1])
def test_sixteen_bit_png_is_scaled_to_eight_bits(channels):
    value = np.array([40000, 1000, 65535][:channels], dtype=np.uint16)
    pixels = np.broadcast_to(value, (6, 7, channels)).copy()
    sample = decode(png16(pixels if channels == 3 else pixels[..., 0]))
    expected = np.rint(value / 257.0)
    assert np.abs(sample.rgb[0, 0].astype(int) - expected).max() <= 1


def test_palette_png_transparency_becomes_alpha():
    sample = decode(palette_png_with_transparency())
    assert sample.alpha is not None
    assert (sample.alpha[:, :15] == 255).all() and (sample.alpha[:, 15:] == 0).all()
    assert (sample.rgb[:, :15] == (255, 0, 0)).all()


def test_rgba_png_keeps_alpha():
    pixels = np.zeros((10, 10, 4), np.uint8)
    pixels[..., :3] = TEAL
    pixels[:, :4, 3] = 255
    sample = decode(encode(pixels, "PNG"))
    assert (sample.alpha[:, :4] == 255).all() and (sample.alpha[:, 4:] == 0).all()


def test_animated_gif_uses_first_frame():
    sample = decode(animated_gif((255, 0, 0), (0, 0, 255)))
    assert (sample.rgb == (255, 0, 0)).all()


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_is_applied(orientation):
    # A 40x60 (h x w) image, its top-left quarter red, the rest black.
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:20, :30] = (255, 0, 0)
    sample = decode(jpeg_with_orientation(pixels, orientation))
    upright = {1: pixels, 3: np.rot90(pixels, 2), 6: np.rot90(pixels, -1), 8: np.rot90(pixels, 1)}
    expected = upright[orientation]
    assert sample.rgb.shape == expected.shape
    assert (sample.width, sample.height) == (expected.shape[1], expected.shape[0])
    red = sample.rgb[..., 0] > 128
    assert (red == (expected[..., 0] > 128)).mean() > 0.97


def test_large_image_is_resized_to_budget_keeping_aspect():
    sample = decode(
        encode(blocks([(255, 0, 0), (0, 0, 255)], [0.5, 0.5], size=(600, 900)), "PNG"),
        max_pixels=40_000,
    )
    h, w = sample.rgb.shape[:2]
    assert h * w <= 40_000
    assert h * w >= 0.98 * 40_000
    assert abs(w / h - 1.5) < 0.01
    assert (sample.width, sample.height) == (900, 600)


def test_small_image_is_never_upscaled():
    sample = decode(encode(solid(TEAL, (10, 12)), "PNG"), max_pixels=40_000)
    assert sample.rgb.shape[:2] == (10, 12)


def test_jpeg_draft_decodes_at_least_twice_the_target():
    pixels = np.random.default_rng(0).integers(0, 256, (1600, 2400, 3), dtype=np.uint8)
    data = encode(pixels, "JPEG", quality=80)
    target_h, target_w = sample_shape(2400, 1600, 40_000)
    with Image.open(__import__("io").BytesIO(data)) as im:
        im.draft("RGB", (2 * target_w, 2 * target_h))
        assert im.size[0] >= 2 * target_w and im.size[1] >= 2 * target_h
        assert im.size[0] < 2400  # draft really scaled the decode down
    sample = decode(data)
    assert sample.rgb.shape[:2] == (target_h, target_w)


def test_resize_does_not_bleed_transparent_colour_into_edges():
    # Opaque red on the left, transparent *green* on the right: no green may appear.
    pixels = np.zeros((400, 400, 4), np.uint8)
    pixels[:, :200] = (255, 0, 0, 255)
    pixels[:, 200:] = (0, 255, 0, 0)
    sample = decode(encode(pixels, "PNG"), max_pixels=2_500)
    visible = sample.alpha > 0
    assert sample.rgb[visible][:, 1].max() <= 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"hello, this is text and not an image at all", "a text file, not an image"),
        (b"<!DOCTYPE html><html><body>404</body></html>", "an HTML page, not an image"),
        (bytes(range(256)) * 4, "not a recognised image file"),
        (
            truncated_jpeg(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)),
            "truncated or corrupt JPEG",
        ),
    ],
)
def test_undecodable_input_raises_clear_error(data, message):
    with pytest.raises(ImageError, match=message):
        decode(data)


def test_declared_size_over_limit_is_refused_before_decoding():
    data = encode(solid(TEAL, (100, 100)), "PNG")
    with pytest.raises(ImageError, match="100x100 = 10,000 pixels, over max_image_pixels=9,999"):
        decode_sample(data, max_pixels=100, max_image_pixels=9_999)


def test_all_transparent_png_decodes_with_zero_alpha():
    sample = decode(transparent_png())
    assert (sample.alpha == 0).all()


@pytest.mark.parametrize(("w", "h", "budget"), [(4000, 3000, 40_000), (1, 5000, 100), (7, 7, 49)])
def test_sample_shape_stays_within_budget(w, h, budget):
    out_h, out_w = sample_shape(w, h, budget)
    assert 1 <= out_h <= h and 1 <= out_w <= w
    assert out_h * out_w <= budget
