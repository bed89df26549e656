import subprocess
import sys

import numpy as np
import pytest
from imagegen import blocks, encode, transparent_png

from palette_dask import extract_palette
from palette_dask.imaging import ImageError

COLORS = [(220, 40, 40), (30, 60, 200), (240, 220, 60), (20, 100, 50), (128, 128, 128)]
SHARES = [0.40, 0.25, 0.15, 0.12, 0.08]


def noisy(image, amplitude=3, seed=0):
    noise = np.random.default_rng(seed).integers(-amplitude, amplitude + 1, image.shape)
    return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)


def assert_matches_blocks(palette, colors, shares, color_tolerance=1, share_tolerance=0.005):
    assert len(palette.colors) == len(colors)
    # Palettes come largest share first, and the test shares are all different.
    expected_order = np.argsort(shares)[::-1]
    for rank, i in enumerate(expected_order):
        assert np.abs(palette.colors[rank].astype(int) - colors[i]).max() <= color_tolerance, (
            rank,
            palette,
        )
        assert abs(float(palette.proportions[rank]) - shares[i]) <= share_tolerance, (
            rank,
            palette,
        )


@pytest.mark.parametrize("color_space", ["rgb", "lab", "oklab"])
@pytest.mark.parametrize("engine", ["histogram", "sklearn", "dask-ml"])
def test_noisy_blocks_give_their_colours_and_shares(color_space, engine):
    image = noisy(blocks(COLORS, SHARES, size=(200, 150)))
    palette = extract_palette(image, k=5, color_space=color_space, engine=engine)
    assert_matches_blocks(palette, COLORS, SHARES)


@pytest.mark.parametrize("color_space", ["rgb", "lab", "oklab"])
def test_histogram_engine_on_blocks_with_many_shades(color_space):
    # Enough noise that the histogram engine really runs (no exact-engine fallback).
    from palette_dask.kmeans import EXACT_BELOW_BINS, color_histogram, histogram_plan

    image = noisy(blocks(COLORS, SHARES, size=(200, 150)), amplitude=10)
    fine_bins = color_histogram(image.reshape(-1, 3), histogram_plan(5).fine_bits)[1]
    assert len(fine_bins) > EXACT_BELOW_BINS
    palette = extract_palette(image, k=5, color_space=color_space, engine="histogram")
    assert_matches_blocks(palette, COLORS, SHARES)


@pytest.mark.parametrize("color_space", ["rgb", "lab", "oklab"])
@pytest.mark.parametrize("size", [(300, 400), (1200, 1000)])
def test_resized_blocks_stay_close_despite_blended_edges(color_space, size):
    # Anti-aliased downscaling blends every band edge into real in-between colours,
    # about 2 % of the sample, which k-means must absorb: they pull a colour by a few
    # units (most in CIELAB, where a blue-yellow blend is far from both), never more.
    # Each blended row is 1/173 of the sample and goes whole to one side or the
    # other, so shares hold within one percentage point.
    colors, shares = COLORS[:3], [0.5, 0.3, 0.2]
    palette = extract_palette(blocks(colors, shares, size=size), k=3, color_space=color_space)
    assert palette.labels.size <= 40_000
    assert_matches_blocks(palette, colors, shares, color_tolerance=8, share_tolerance=0.01)


def test_fewer_distinct_colours_than_k_gives_exactly_those_colours():
    image = blocks(COLORS[:3], [0.5, 0.3, 0.2], size=(100, 10))
    palette = extract_palette(image, k=5)
    assert palette.colors.tolist() == [list(c) for c in COLORS[:3]]
    assert palette.proportions.tolist() == pytest.approx([0.5, 0.3, 0.2])
    assert palette.counts.tolist() == [500, 300, 200]
    assert palette.mse_rgb == 0.0


def test_single_colour_image_has_one_entry():
    palette = extract_palette(np.full((9, 9, 3), 200, np.uint8), k=5)
    assert palette.hex == ["#c8c8c8"] and palette.proportions.tolist() == [1.0]


def test_palette_of_photograph_is_sorted_unique_and_consistent(sample_dir):
    palette = extract_palette(str(sample_dir / "chelsea.png"), k=16, color_space="lab")
    assert len(set(palette.hex)) == len(palette.hex) <= 16
    assert np.all(np.diff(palette.counts) <= 0)
    assert palette.proportions.sum() == pytest.approx(1.0, abs=1e-6)
    counted = np.bincount(palette.labels.ravel(), minlength=len(palette.colors))
    assert counted.tolist() == palette.counts.tolist()
    sample = palette.sample.rgb.reshape(-1, 3).astype(float)
    redrawn = palette.redraw().reshape(-1, 3).astype(float)
    assert palette.mse_rgb == pytest.approx(np.mean((sample - redrawn) ** 2), rel=1e-6)


def test_same_input_and_seed_give_identical_palettes(sample_dir):
    path = str(sample_dir / "coffee.jpg")
    first, second = extract_palette(path, k=8), extract_palette(path, k=8)
    assert np.array_equal(first.colors, second.colors)
    assert np.array_equal(first.counts, second.counts)
    assert np.array_equal(first.labels, second.labels)


def test_path_bytes_and_pixels_give_the_same_palette(tmp_path):
    image = noisy(blocks(COLORS, SHARES, size=(100, 80)))
    path = tmp_path / "blocks.png"
    path.write_bytes(encode(image, "PNG"))
    from_path = extract_palette(str(path))
    from_bytes = extract_palette(path.read_bytes())
    from_array = extract_palette(image)
    assert from_path.hex == from_bytes.hex == from_array.hex
    assert from_path.sample.format == "PNG" and from_array.sample.format == "array"


def test_transparent_pixels_are_left_out():
    image = np.zeros((40, 40, 4), np.uint8)
    image[:, :10] = (200, 30, 30, 255)  # opaque red
    image[:, 10:20] = (30, 30, 200, 150)  # semi-transparent blue, above the threshold
    image[:, 20:] = (0, 255, 0, 40)  # nearly invisible green
    palette = extract_palette(image, k=5)
    assert palette.hex == ["#1e1ec8", "#c81e1e"] or palette.hex == ["#c81e1e", "#1e1ec8"]
    assert palette.counts.sum() == 800
    assert (palette.labels[:, 20:] == 255).all()
    low = extract_palette(image, k=5, alpha_threshold=20)
    assert "#00ff00" in low.hex and low.counts.sum() == 1600


def test_all_transparent_image_is_an_error():
    with pytest.raises(ImageError, match="no opaque pixels"):
        extract_palette(transparent_png())


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"k": 0}, ValueError, "`k` must be between 1 and 254, got 0"),
        ({"k": 255}, ValueError, "`k` must be between 1 and 254, got 255"),
        ({"k": "5"}, TypeError, "`k` must be an integer, got '5'"),
        ({"color_space": "hsv"}, ValueError, "`color_space` must be one of .* got 'hsv'"),
        ({"engine": "magic"}, ValueError, "`engine` must be one of .* got 'magic'"),
        ({"max_pixels": 0}, ValueError, "`max_pixels` must be at least 1, got 0"),
        ({"alpha_threshold": 300}, ValueError, "`alpha_threshold` must be between 0 and 255"),
        ({"random_state": -1}, ValueError, "`random_state` must be between 0 and"),
    ],
)
def test_bad_options_are_refused_with_the_value(options, error, message):
    with pytest.raises(error, match=message):
        extract_palette(np.zeros((4, 4, 3), np.uint8), **options)


def test_bad_image_argument_is_refused():
    with pytest.raises(TypeError, match="`image` must be a path, URL, bytes or ndarray, got int"):
        extract_palette(42)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) or \(H, W, 4\) uint8, got \(4, 4\) uint8"):
        extract_palette(np.zeros((4, 4), np.uint8))


# Run in a new interpreter: the loops this process has already used are loaded in it.
COMPILED_BY_A_JOB = """
import sys
from pathlib import Path

from palette_dask import _loops
from palette_dask.corpus import fit_sample
from palette_dask.sources import image_id
from palette_dask.palette import load_sample, palette_from_sample, warm_up
from palette_dask.options import PaletteOptions


def loaded():
    loops = [f for f in vars(_loops).values() if hasattr(f, "signatures")]
    return {(f.__name__, str(signature)) for f in loops for signature in f.signatures}


warm_up()
after_warm_up = loaded()
options = PaletteOptions()
for path in sorted(Path(sys.argv[1]).iterdir()):
    sample = load_sample(path.read_bytes(), options)
    palette_from_sample(sample, options)
    fit_sample(sample, image_id(str(path)), options, size=1000)
print(sorted(loaded() - after_warm_up))
"""


def test_the_install_warm_up_compiles_every_loop_a_job_runs(sample_dir):
    """``make install`` compiles the loops once (:func:`warm_up`); a job's images, decoded
    the way its workers decode them, then need no loop that it left out (each worker would
    compile it again at its first image, ten seconds of CPU)."""
    result = subprocess.run(
        [sys.executable, "-c", COMPILED_BY_A_JOB, str(sample_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
