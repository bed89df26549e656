"""Palettes people ask for: the background left out, near-duplicate colours merged, and
colours with names and families, from extract_palette to the tables, search and stats."""

import json

import numpy as np
import pyarrow.compute as pc
import pytest
from imagegen import blocks, encode
from jobtools import invoke

from palette_dask import JobSpec, extract_palette, open_dataset, run_job
from palette_dask.color import hex_to_rgb, pack_rgb, rgb_to_hex, rgb_to_lab
from palette_dask.names import FAMILIES, color_families, color_names, css_colors

RED, BLUE, GREEN = (200, 30, 40), (20, 90, 200), (40, 160, 60)
OBJECT = {RED: 0.5, BLUE: 0.3, GREEN: 0.2}  # shares within the object


def on_background(background, size=120, seed=0):
    """A 3-colour object (a third of the image) in the middle of ``background``: a colour,
    or ``"noisy"`` light grey."""
    rng = np.random.default_rng(seed)
    if background == "noisy":
        image = np.clip(rng.normal(222, 3, (size, size, 3)), 0, 255).astype(np.uint8)
    else:
        image = np.full((size, size, 3), background, np.uint8)
    top, side = size // 5, size // 5
    rows = size - 2 * top
    width = round(size * 0.45)
    start = top
    for color, share in OBJECT.items():
        height = round(rows * share)
        image[start : start + height, side : side + width] = color
        start += height
    return image


def pack(rgb):
    return pack_rgb(np.asarray(rgb, np.uint8).reshape(-1, 3)).reshape(np.shape(rgb)[:-1])


@pytest.mark.parametrize("background", [(255, 255, 255), "noisy"])
def test_ignore_background_gives_the_object_s_colours(background):
    image = on_background(background)
    plain = extract_palette(image)
    assert plain.background is None and len(plain.colors) > 3  # the background takes a colour
    found = extract_palette(image, ignore_background=True)
    assert sorted(map(tuple, found.colors.tolist())) == sorted(OBJECT)
    for color, share in zip(found.colors.tolist(), found.proportions, strict=True):
        assert abs(share - OBJECT[tuple(color)]) <= 0.01
    on_object = np.isin(pack(image), pack(np.array(list(OBJECT), np.uint8)))
    assert on_object.mean() < 0.4  # the background covers over 60 %
    assert np.array_equal(found.labels == 255, ~on_object)  # left out, as transparent pixels
    expected = np.array([[255, 255, 255]] if background != "noisy" else [[222, 222, 222]])
    distance = np.linalg.norm(rgb_to_lab(hex_to_rgb(found.background)[None]) - rgb_to_lab(expected))
    assert distance < 3, found.background


@pytest.mark.parametrize("photo", ["astronaut.jpg", "coffee.jpg", "chelsea.png", "motorcycle.png"])
def test_a_photograph_with_a_busy_border_is_unchanged(sample_dir, photo):
    plain = extract_palette(str(sample_dir / photo))
    found = extract_palette(str(sample_dir / photo), ignore_background=True)
    assert found.background is None
    assert np.array_equal(found.colors, plain.colors)
    assert np.array_equal(found.proportions, plain.proportions)
    assert np.array_equal(found.labels, plain.labels)


def shades_image():
    """Two shades within ΔE 5 of each other and three distinct colours, a fifth each."""
    colors = [(200, 30, 40), (203, 33, 42), BLUE, GREEN, (240, 200, 20)]
    lab = rgb_to_lab(np.array(colors[:2], np.uint8))
    assert np.linalg.norm(lab[0] - lab[1]) < 5
    return blocks(colors, [0.2] * 5, size=(100, 100)), colors


def test_min_delta_e_merges_near_duplicates_into_their_sum():
    image, colors = shades_image()
    assert len(extract_palette(image).colors) == 5
    merged = extract_palette(image, min_delta_e=8)
    assert len(merged.colors) == 4
    assert merged.proportions[0] == pytest.approx(0.4)  # the two shades' 20 % each
    merged_lab = rgb_to_lab(merged.colors[:1])
    for shade in colors[:2]:
        assert np.linalg.norm(merged_lab - rgb_to_lab(np.array([shade], np.uint8))) < 5
    assert sorted(map(tuple, merged.colors[1:].tolist())) == sorted(colors[2:])
    assert (merged.labels != 255).all() and set(np.unique(merged.labels)) == {0, 1, 2, 3}
    # Far-apart colours are never merged.
    assert len(extract_palette(image, min_delta_e=0.5).colors) == 5


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    images = tmp_path_factory.mktemp("words")
    for i, background in enumerate([(255, 255, 255), "noisy", (250, 250, 250), "noisy"]):
        (images / f"object{i}.png").write_bytes(encode(on_background(background, seed=i), "PNG"))
    (images / "shades.png").write_bytes(encode(shades_image()[0], "PNG"))
    for i, color in enumerate([BLUE, GREEN, (128, 128, 128)]):
        plain = blocks([color, (250, 250, 250)], [0.6, 0.4], size=(60, 80))
        (images / f"plain{i}.png").write_bytes(encode(plain, "PNG"))
    return images


def palettes_of(out):
    table = open_dataset(str(out)).table("palettes")
    return table.sort_by([("image_id", "ascending"), ("rank", "ascending")])


def test_the_options_in_a_job_are_bit_identical_across_workers_and_partitions(
    folder, client1, client2, tmp_path
):
    spec = JobSpec(
        input=[str(folder)],
        output=str(tmp_path / "a"),
        ignore_background=True,
        min_delta_e=8.0,
        partition_size=2,
    )
    run_job(spec, client=client1)
    run_job(spec.replace(output=str(tmp_path / "b"), partition_size=5), client=client2)
    assert palettes_of(tmp_path / "a").equals(palettes_of(tmp_path / "b"))
    ds = open_dataset(str(tmp_path / "a"))
    images = ds.images.set_index(ds.images.uri.str.rsplit("/", n=1).str[-1])
    assert images.loc["object0.png", "background"] == "#ffffff"
    assert (
        images.loc["shades.png", "background"] is None
        or images.loc["shades.png"].isna()["background"]
    )
    # The label image marks the background as left out, as transparent pixels are.
    (stored,) = ds.stored_palettes([images.loc["object0.png", "image_id"]], "image")
    assert (stored.labels == 255).mean() > 0.6
    shades = ds.palettes[ds.palettes.image_id == images.loc["shades.png", "image_id"]]
    assert len(shades) == 4 and shades.proportion.iloc[0] == pytest.approx(0.4)
    record = json.loads((tmp_path / "a" / "_job.json").read_text())["spec"]
    assert record["ignore_background"] is True and record["min_delta_e"] == 8.0
    # The command line's flags set the same options.
    done = invoke(
        "run",
        "-i",
        folder,
        "-o",
        tmp_path / "c",
        "--ignore-background",
        "--min-delta-e",
        "8",
        "--dry-run",
    )
    assert done.returncode == 0, done.stderr
    assert '"ignore_background": true' in done.stdout and '"min_delta_e": 8.0' in done.stdout


@pytest.mark.parametrize(
    ("code", "name", "family"),
    [
        ("#008080", "teal", "teal"),
        ("#c81e28", "firebrick", "red"),
        ("#ff0000", "red", "red"),
        ("#ffa500", "orange", "orange"),
        ("#ffff00", "yellow", "yellow"),
        ("#008000", "green", "green"),
        ("#0000ff", "blue", "blue"),
        ("#800080", "purple", "purple"),
        ("#ffc0cb", "pink", "pink"),
        ("#8b4513", "saddlebrown", "brown"),
        ("#808080", "gray", "grey"),
        ("#000000", "black", "black"),
        ("#ffffff", "white", "white"),
        ("#1565a1", "steelblue", "blue"),
    ],
)
def test_names_and_families_of_known_colours(code, name, family):
    rgb = hex_to_rgb(code)[None].astype(np.uint8)
    assert (color_names(rgb), color_families(rgb)) == ([name], [family])


def test_every_css_name_names_itself_and_every_family_is_used():
    names, rgb = css_colors()
    assert len(names) == 148 and names == tuple(sorted(names))
    found = color_names(rgb)
    # Each named colour is its own nearest, or an earlier name of the same colour (grey, gray).
    assert all(
        rgb_to_hex(rgb[names.index(f)][None]) == rgb_to_hex(c[None])
        for f, c in zip(found, rgb, strict=True)
    )
    assert set(color_families(rgb)) == set(FAMILIES)


def test_tables_name_every_colour_and_search_and_stats_speak_families(folder, client2, tmp_path):
    out = tmp_path / "out"
    run_job(JobSpec(input=[str(folder)], output=str(out)), client=client2)
    ds = open_dataset(str(out))
    palettes = ds.palettes
    rgb = palettes[["r", "g", "b"]].to_numpy(np.uint8)
    assert palettes.name.tolist() == color_names(rgb)
    assert palettes.family.tolist() == color_families(rgb)
    # One image holds red: a search by the family finds it first, as its hex code does.
    by_family = invoke("search", out, "--color", "red", "--json")
    by_code = invoke("search", out, "--color", "#c81e28", "--json")
    first = [json.loads(done.stdout.splitlines()[0])["uri"] for done in (by_family, by_code)]
    assert first[0] == first[1] and first[0].endswith("/shades.png")  # 40 % red
    reds = ds.arrow_dataset("palettes").to_table(filter=pc.field("family") == "red")
    holding = set(reds["image_id"].to_pylist())
    found = [json.loads(line) for line in by_family.stdout.splitlines()]
    assert {row["image_id"] for row in found} == holding  # exactly the images holding a red
    assert all(row["matched"] == 1 for row in found)
    named = invoke("search", out, "--color", "navy", "--json")  # a CSS name: its family, blue
    assert named.stdout == invoke("search", out, "--color", "blue", "--json").stdout
    stats = invoke("stats", out)
    assert stats.returncode == 0 and "families: red" in stats.stdout
    shown = invoke("show", str(folder / "object0.png"), "--ignore-background")
    assert "firebrick (red)" in shown.stdout and "background #ffffff left out" in shown.stdout
