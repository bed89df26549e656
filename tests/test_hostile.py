"""Hostile inputs: one job over every kind of broken, odd or dangerous file."""

import json
import os
import shutil

import pytest
from hostile import MAX_FILE_BYTES, make_hostile_corpus
from jobtools import cli

from palette_dask import open_dataset


def without_root_file_access() -> list[str]:
    """A command prefix under which even root obeys file permissions."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: an unreadable file cannot be made")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, sample_dir):
    work = tmp_path_factory.mktemp("hostile")
    inputs, expected = make_hostile_corpus(work / "files", sample_dir)
    out = work / "out"
    args = [
        "run",
        "-o",
        str(out),
        "--workers",
        "2",
        "--partition-size",
        "4",
        "--max-file-bytes",
        str(MAX_FILE_BYTES),
        "--no-progress",
    ]
    for item in inputs:
        args += ["-i", item]
    result = cli(*args, prefix=without_root_file_access())
    assert result.returncode == 0, result.stderr
    return out, expected, result


def test_exactly_one_row_per_distinct_input(hostile_run):
    out, expected, result = hostile_run
    images = open_dataset(str(out)).images
    assert sorted(images["uri"]) == sorted(expected)
    assert images["image_id"].is_unique
    record = json.loads((out / "_job.json").read_text())
    assert (
        record["counts"]["duplicates"] == 2
    )  # good.jpg: once more in the manifest, and twice there
    failed = sum(1 for outcome in expected.values() if outcome)
    assert f"{len(expected)} images ({len(expected) - failed} ok, {failed} failed)" in result.stdout


def test_every_failure_has_its_precise_message(hostile_run):
    out, expected, _ = hostile_run
    images = open_dataset(str(out)).images.set_index("uri")
    for uri, outcome in expected.items():
        row = images.loc[uri]
        if outcome is None:
            assert row["status"] == "ok", (uri, row["error"])
        else:
            assert row["status"] == "error", uri
            assert outcome in row["error"], (uri, row["error"])


def test_odd_but_valid_images_get_the_right_palettes(hostile_run):
    out, expected, _ = hostile_run
    ds = open_dataset(str(out))
    images = ds.images.set_index("uri")
    palettes = ds.palettes

    def hexes(name):
        key = images.loc[next(u for u in expected if u.endswith(name)), "image_id"]
        return palettes[palettes["image_id"] == key].sort_values("rank")["hex"].tolist()

    assert hexes("one-pixel.png") == ["#0ac81e"]
    assert hexes("animated.gif") == ["#ff0000"]
    assert hexes("palette-transparent.png") == ["#ff0000"]
    assert hexes("grey.png") == ["#5a5a5a"]
    assert hexes("café au lait.png") == ["#785028"]
    assert hexes("sixteen-bit.png") == ["#9c9c9c"]
    cmyk = hexes("cmyk.jpg")
    assert len(cmyk) >= 1 and int(cmyk[0][1:3], 16) > 180 and int(cmyk[0][3:5], 16) < 70
    rotated = images.loc[next(u for u in expected if u.endswith("rotated.jpg"))]
    assert (rotated["width"], rotated["height"]) == (40, 60)
    bomb = images.loc[next(u for u in expected if u.endswith("bomb.png"))]
    assert bomb["format"] == "PNG" and bomb["elapsed_ms"] < 1000
