"""Swatch strips, redrawn images and the HTML report, checked against the tables."""

import io
from pathlib import Path

import numpy as np
import pytest
from browser import Chromium, find_chromium
from jobtools import BAD_INPUTS, invoke
from PIL import Image

from palette_dask import JobSpec, open_dataset, run_job
from palette_dask.color import rgb_to_lab
from palette_dask.render import SWATCH_SIZE, TEXT_BAND, display_size


@pytest.fixture(scope="module")
def dataset(corpus, client2, tmp_path_factory):
    """Own and corpus palettes of the sample photographs, synthetic images and broken files."""
    out = tmp_path_factory.mktemp("pictures") / "out"
    spec = JobSpec(input=[str(corpus)], output=str(out), mode="both", corpus_k=8)
    run_job(spec, client=client2)
    return open_dataset(str(out))


def read_png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def runs(row: np.ndarray) -> list[tuple[tuple[int, ...], int]]:
    """``(colour, length)`` of each run of equal pixels along a row."""
    change = np.flatnonzero(np.any(row[1:] != row[:-1], axis=1)) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [len(row)]]))
    return [(tuple(row[s].tolist()), int(n)) for s, n in zip(starts, lengths, strict=True)]


def luminance(rgb) -> float:
    """WCAG relative luminance of an sRGB colour."""
    c = np.asarray(rgb, float) / 255
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(linear @ [0.2126, 0.7152, 0.0722])


def palette_rows(ds, uri, kind="image"):
    palettes = ds.palettes
    (image_id,) = ds.find_images([uri])
    mine = palettes[(palettes.image_id == image_id) & (palettes.palette_kind == kind)]
    return image_id, mine.sort_values("rank")


def render(ds, uri, out, *args):
    done = invoke("render", ds.path, "--image", uri, "--out", out, *args)
    assert done.returncode == 0, done.stderr
    name = Path(uri).name
    return out / f"{name}.swatches.png", out / f"{name}.redrawn.png"


@pytest.mark.parametrize("kind", ["image", "corpus"])
def test_swatch_blocks_have_the_palette_colours_and_widths(dataset, corpus, tmp_path, kind):
    for name in ["coffee.jpg", "astronaut.jpg", "synthetic/blocks1.jpg"]:
        uri = str(corpus / name)
        swatches_png, _ = render(dataset, uri, tmp_path, "--kind", kind)
        strip = read_png(swatches_png)
        assert strip.shape == (SWATCH_SIZE[1], SWATCH_SIZE[0], 3)
        _, rows = palette_rows(dataset, uri, kind)
        colors = list(zip(rows.r.tolist(), rows.g.tolist(), rows.b.tolist(), strict=True))
        exact = rows.proportion.to_numpy() / rows.proportion.sum() * SWATCH_SIZE[0]
        # Above the text band every block is its colour, in rank order, as wide as
        # its share to the pixel; a colour under one pixel's share may have none.
        for y in (0, int(SWATCH_SIZE[1] * TEXT_BAND) - 1):
            width_of = dict(runs(strip[y]))
            assert list(width_of) == [c for c in colors if c in width_of]
            widths = np.array([width_of.get(c, 0) for c in colors])
            assert np.all(np.abs(widths - exact) <= 1)


def test_hex_codes_are_written_in_a_contrasting_colour(dataset, corpus, tmp_path):
    uri = str(corpus / "coffee.jpg")
    swatches_png, _ = render(dataset, uri, tmp_path)
    strip = read_png(swatches_png).astype(int)
    _, rows = palette_rows(dataset, uri)
    text_rows = strip[int(SWATCH_SIZE[1] * TEXT_BAND) :]
    left = 0
    for color, share in zip(rows[["r", "g", "b"]].to_numpy(), rows.proportion, strict=True):
        block = text_rows[:, left + 2 : left + round(share * SWATCH_SIZE[0]) - 2]
        left += round(share * SWATCH_SIZE[0])
        ink = block[np.abs(block - color).sum(axis=2) > 60]
        if share < 0.15:
            continue  # too narrow to hold its hex code
        assert len(ink) > 20  # the code is there...
        # ...and its core (the pixel least like the block) reads at WCAG AA contrast.
        core = ink[np.abs(ink - color).sum(axis=1).argmax()]
        lighter, darker = sorted([luminance(core), luminance(color)], reverse=True)
        assert (lighter + 0.05) / (darker + 0.05) >= 4.5


@pytest.mark.parametrize("kind", ["image", "corpus"])
def test_redrawn_image_matches_the_assignments(dataset, corpus, tmp_path, kind):
    uri = str(corpus / "astronaut.jpg")
    _, redrawn_png = render(dataset, uri, tmp_path, "--kind", kind, "--size", "700")
    redrawn = read_png(redrawn_png)
    image_id, rows = palette_rows(dataset, uri, kind)
    images = dataset.images.set_index("image_id")
    width, height = images.loc[image_id, ["width", "height"]]
    assert redrawn.shape[1::-1] == display_size(width, height, 700)
    assignments = dataset.assignments
    stored = assignments[
        (assignments.image_id == image_id) & (assignments.palette_kind == kind)
    ].iloc[0]
    labels = np.frombuffer(stored.labels, np.uint8).reshape(
        stored.sample_height, stored.sample_width
    )
    colors = rows[["r", "g", "b"]].to_numpy(np.uint8)
    if kind == "corpus":
        corpus_colors = dataset.corpus_palette.sort_values("corpus_index")
        lut = corpus_colors[["r", "g", "b"]].to_numpy(np.uint8)
    else:
        lut = colors
    # Nearest-neighbour scaling: each output pixel shows the label under its centre.
    out_h, out_w = redrawn.shape[:2]
    ys = (np.arange(out_h) + 0.5) * stored.sample_height // out_h
    xs = (np.arange(out_w) + 0.5) * stored.sample_width // out_w
    expected = lut[labels[np.ix_(ys.astype(int), xs.astype(int))]]
    assert np.array_equal(redrawn[..., :3], expected)
    assert (redrawn[..., 3] == 255).all()
    used = {tuple(c) for c in redrawn[..., :3].reshape(-1, 3).tolist()}
    assert used <= {tuple(c) for c in colors.tolist()}


def test_show_draws_the_same_pictures_as_render_from_the_tables(dataset, corpus, tmp_path):
    uri = str(corpus / "coffee.jpg")
    from_tables = render(dataset, uri, tmp_path / "render")
    shown = invoke("show", uri, "--out", tmp_path / "show")
    assert shown.returncode == 0, shown.stderr
    for drawn in from_tables:
        assert (tmp_path / "show" / drawn.name).read_bytes() == drawn.read_bytes()


def test_left_out_pixels_are_transparent_in_the_redrawn_image(tmp_path):
    rgba = np.zeros((60, 80, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :40, 3] = 255  # left half opaque red, right half transparent
    path = tmp_path / "half.png"
    Image.fromarray(rgba).save(path)
    assert invoke("show", path, "--out", tmp_path, "--size", "0").returncode == 0
    redrawn = read_png(tmp_path / "half.png.redrawn.png")
    assert redrawn.shape == (60, 80, 4)
    assert (redrawn[:, :40] == [200, 0, 0, 255]).all() and (redrawn[:, 40:, 3] == 0).all()


def test_render_names_unknown_images(dataset, tmp_path):
    done = invoke("render", dataset.path, "--image", "no/such.jpg", "--out", tmp_path)
    assert done.returncode == 1
    assert "no/such.jpg" in done.stderr and "Traceback" not in done.stderr


def test_report_limit_keeps_the_best_represented_images(dataset, tmp_path):
    out = tmp_path / "report.html"
    done = invoke("report", dataset.path, "--out", out, "--limit", "3", "--kind", "image")
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    ok = dataset.images.query("status == 'ok'").sort_values(["mse_rgb", "uri"])
    shown = [part.split('"')[0] for part in page.split('data-image-id="')[1:]]
    assert shown == ok.image_id.head(3).tolist()
    assert f"{len(ok) - 3:,} left out" in page
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page


@pytest.mark.skipif(
    find_chromium() is None,
    reason="no Chromium on this machine (make test installs Debian's chromium package when it "
    "can; here it could not)",
)
def test_report_in_a_real_browser(dataset, tmp_path):
    out = tmp_path / "report.html"
    assert invoke("report", dataset.path, "--out", out, "--limit", "0").returncode == 0
    images = dataset.images
    ok = images[images.status == "ok"]
    palettes = dataset.palettes.query("palette_kind == 'image'")
    browser = Chromium(find_chromium())
    try:
        page = browser.page()
        page.open(out.as_uri())
        count = "document.querySelectorAll('.gallery .entry:not([hidden])').length"
        assert page.evaluate("document.querySelectorAll('.gallery .entry').length") == len(ok)
        assert page.evaluate(count) == len(ok)
        assert page.evaluate("document.querySelectorAll('.gallery .swatch').length") == len(
            palettes
        )
        assert page.evaluate("document.querySelectorAll('#failures tr').length") == len(BAD_INPUTS)
        assert page.evaluate("document.querySelectorAll('#corpus-palette .swatch').length") == (
            len(dataset.corpus_palette)
        )
        # Every picture decoded.
        assert page.evaluate(
            "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
        )
        # Filter by the top colour of one image: exactly the images holding a colour
        # within the distance stay.
        target = palettes.sort_values(["image_id", "rank"]).iloc[0]
        page.evaluate(
            "(() => { const f = document.getElementById('filter-on'); f.checked = true;"
            f" document.getElementById('filter-color').value = '{target.hex}';"
            " const d = document.getElementById('filter-distance'); d.value = '5';"
            " d.dispatchEvent(new Event('input')); })()"
        )
        lab = rgb_to_lab(palettes[["r", "g", "b"]].to_numpy(np.uint8))
        near = np.linalg.norm(lab - rgb_to_lab(np.array([[target.r, target.g, target.b]])), axis=1)
        expected = palettes[near <= 5].image_id.nunique()
        assert 1 <= page.evaluate(count) == expected < len(ok)
        assert page.evaluate("document.getElementById('filter-count').textContent") == str(expected)
        shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"))
        assert page.errors == []
    finally:
        browser.close()
    assert shot.shape[0] > 500 and shot.shape[1] > 500
    # Not blank: many distinct colours, from the pictures and swatches.
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 50


def test_readme_pictures_come_from_the_readme_commands(sample_dir, tmp_path):
    """Every picture of the README under docs/ that a `palette-dask show --out docs/...`
    command of the README draws is what that command draws."""
    root = Path(__file__).parent.parent
    readme = (root / "README.md").read_text()
    commands = [
        line.strip()
        for line in readme.splitlines()
        if line.startswith("palette-dask show") and "--out docs" in line
    ]
    assert len(commands) >= 3
    drawn = set()
    for command in commands:
        args = command.split("#")[0].split()[1:]
        args = [
            str(sample_dir / a.split("/")[-1]) if a.startswith("data/samples/") else a for a in args
        ]
        folder = args[args.index("--out") + 1]
        args[args.index("--out") + 1] = str(tmp_path / folder)
        assert invoke(*args).returncode == 0
        for picture in (tmp_path / folder).iterdir():
            name = f"{folder}/{picture.name}"
            assert f"({name})" in readme, f"{name} is drawn but not shown"
            assert picture.read_bytes() == (root / name).read_bytes(), name
            drawn.add(name)
    shown = {
        line.split("](")[1].rstrip(")") for line in readme.splitlines() if line.startswith("![")
    }
    # The other shows the search page: a screenshot, made by the README's chromium command.
    assert shown - drawn == {"docs/search-service.png"}
