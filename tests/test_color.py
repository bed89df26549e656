import numpy as np
import pytest

from palette_dask.color import (
    COLOR_SPACES,
    hex_to_rgb,
    pack_rgb,
    rgb_to_hex,
    rgb_to_lab,
    rgb_to_space,
    space_to_rgb,
    unpack_rgb,
)


@pytest.fixture
def random_rgb():
    return np.random.default_rng(1).integers(0, 256, size=(5000, 3), dtype=np.uint8)


@pytest.mark.parametrize("space", COLOR_SPACES)
def test_round_trip_through_every_space_is_exact(space, random_rgb):
    coords = rgb_to_space(random_rgb, space)
    assert coords.dtype == np.float32
    back = space_to_rgb(coords, space)
    assert np.abs(back.astype(int) - random_rgb.astype(int)).max() == 0


@pytest.mark.parametrize("space", ["lab", "oklab"])
def test_perceptual_spaces_put_white_at_lightness_100(space):
    white = rgb_to_space(np.array([[255, 255, 255]], np.uint8), space)[0]
    np.testing.assert_allclose(white, [100, 0, 0], atol=0.01)


def test_lab_of_primary_red_matches_reference():
    # CIELAB D65 of sRGB red, as published by Bruce Lindbloom's calculator.
    np.testing.assert_allclose(
        rgb_to_lab(np.array([[255, 0, 0]], np.uint8))[0], [53.24, 80.09, 67.20], atol=0.02
    )


def test_out_of_gamut_coordinates_are_clipped():
    assert space_to_rgb(np.array([[150.0, 0, 0]]), "lab").tolist() == [[255, 255, 255]]
    assert space_to_rgb(np.array([[-5.0, 300.0, 12.4]]), "rgb").tolist() == [[0, 255, 12]]


def test_hex_codes_round_trip(random_rgb):
    codes = rgb_to_hex(random_rgb[:50])
    assert all(len(c) == 7 and c.startswith("#") and c == c.lower() for c in codes)
    assert np.array_equal(np.stack([hex_to_rgb(c) for c in codes]), random_rgb[:50])


@pytest.mark.parametrize("bad", ["#12345", "#12345g", "blue", ""])
def test_bad_hex_code_is_refused_with_the_value(bad):
    with pytest.raises(ValueError, match=repr(bad).replace("[", r"\[")):
        hex_to_rgb(bad)


def test_pack_and_unpack_are_inverse(random_rgb):
    keys = pack_rgb(random_rgb)
    assert keys.dtype == np.uint32
    assert np.array_equal(unpack_rgb(keys), random_rgb)


def test_unknown_space_is_refused():
    with pytest.raises(ValueError, match=r"`color_space` must be one of .* got 'hsv'"):
        rgb_to_space(np.zeros((1, 3), np.uint8), "hsv")
