"""Search by colour and by likeness, on images whose colour content is known."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from imagegen import blocks, encode
from jobtools import invoke
from PIL import Image

from palette_dask import JobSpec, open_dataset, query, run_job
from palette_dask import index as index_module
from palette_dask.color import lab_to_rgb, rgb_to_hex
from palette_dask.errors import UsageError
from palette_dask.index import (
    COLOR_CELL,
    MEAN_CELL,
    PaletteArrays,
    build_index,
    load_index,
    read_index,
    save_index,
)
from palette_dask.query import (
    Reference,
    _like_ranking,
    _linear_program_distances,
    earth_movers_distance,
    relaxed_distance,
    search,
)

BLUE, ORANGE = (21, 101, 161), (223, 140, 24)
GREY, WHITE, GREEN = (128, 128, 128), (250, 250, 250), (40, 160, 60)
# name -> (colours, shares): the known content of each image.
CONTENT = {
    "blue70": ([BLUE, GREY], [0.7, 0.3]),
    "blue40": ([BLUE, WHITE], [0.4, 0.6]),
    "blue20": ([GREY, BLUE], [0.8, 0.2]),
    "orange60": ([ORANGE, GREY], [0.6, 0.4]),
    "both35": ([BLUE, ORANGE, GREY], [0.35, 0.35, 0.3]),
    "both25": ([WHITE, ORANGE, BLUE], [0.5, 0.25, 0.25]),
    "green": ([GREEN, WHITE], [0.55, 0.45]),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, sample_dir, client2):
    folder = tmp_path_factory.mktemp("known")
    for name, (colors, shares) in CONTENT.items():
        (folder / f"{name}.png").write_bytes(encode(blocks(colors, shares, size=(80, 100)), "PNG"))
    # A photograph, a re-encoded copy and a half-size copy, beside unrelated photographs.
    photo = np.asarray(Image.open(sample_dir / "astronaut.jpg").convert("RGB"))
    (folder / "photo.png").write_bytes(encode(photo, "PNG"))
    (folder / "photo-q60.jpg").write_bytes(encode(photo, "JPEG", quality=60))
    small = np.asarray(Image.fromarray(photo).resize((photo.shape[1] // 2, photo.shape[0] // 2)))
    (folder / "photo-half.webp").write_bytes(encode(small, "WEBP", quality=80))
    for other in ("coffee.jpg", "chelsea.png", "rocket.jpg", "retina.jpg"):
        (folder / other).write_bytes((sample_dir / other).read_bytes())
    out = tmp_path_factory.mktemp("search") / "out"
    run_job(JobSpec(input=[str(folder)], output=str(out)), client=client2)
    return open_dataset(str(out)), folder


def names(found):
    return [uri.rsplit("/", 1)[-1].split(".")[0] for uri in found["uri"]]


def test_one_colour_ranks_the_images_holding_it_by_their_share(dataset):
    ds, _ = dataset
    found = search(ds, colors=["#1565a1"], top=50)
    holding = sorted(
        (name for name, (colors, _) in CONTENT.items() if BLUE in colors),
        key=lambda n: -CONTENT[n][1][CONTENT[n][0].index(BLUE)],
    )
    assert names(found)[: len(holding)] == holding
    shares = [CONTENT[n][1][CONTENT[n][0].index(BLUE)] for n in names(found)[: len(holding)]]
    assert shares == sorted(shares, reverse=True)
    np.testing.assert_allclose(found["score"][: len(holding)], shares, atol=0.01)
    # Exact colour: full credit, and the matching palette colour is named.
    assert found["colors"][0] == ["#1565a1"]


def test_two_colours_rank_images_holding_both_first(dataset):
    ds, _ = dataset
    found = search(ds, colors=["#1565a1", "#df8c18"], top=50)
    assert names(found)[:2] == ["both35", "both25"]
    assert list(found["matched"][:2]) == [2, 2] and (found["matched"][2:] <= 1).all()
    # Weights: ask for mostly orange, and orange60 climbs above the blue-only images.
    weighted = search(ds, colors=["#1565a1", "#df8c18"], weights=[20, 80], top=50)
    assert names(weighted).index("orange60") < names(weighted).index("blue70")


def test_like_finds_the_image_then_its_copies(dataset):
    ds, folder = dataset
    found = search(ds, like=str(folder / "photo.png"), top=5)
    assert names(found)[0] == "photo" and found["score"][0] == 0
    assert set(names(found)[1:3]) == {"photo-q60", "photo-half"}
    assert list(found["score"]) == sorted(found["score"])


def test_index_gives_the_same_results_and_goes_stale(dataset, tmp_path):
    ds, folder = dataset
    before = search(ds, colors=["#1565a1", "#df8c18"], top=10)
    assert invoke("index", ds.path).returncode == 0
    assert load_index(ds, "image") is not None
    after = search(ds, colors=["#1565a1", "#df8c18"], top=10)
    assert names(after) == names(before)
    np.testing.assert_allclose(after["score"], before["score"], atol=2e-3)
    like = search(ds, like=str(folder / "photo.png"), top=3)
    assert names(like)[0] == "photo"


def test_an_indexed_search_ranks_as_the_tables_do_and_reads_none_of_them(dataset, tmp_path):
    ds, folder = dataset
    queries = [
        {"colors": ["#1565a1", "#df8c18"]},
        {"colors": ["#1565a1", "#df8c18"], "weights": [20, 80]},
        {"colors": ["#808080"], "radius": 40},
        {"like": str(folder / "photo.png")},
    ]
    from_tables = [search(ds, top=20, **asked) for asked in queries]
    copy = tmp_path / "copy"
    shutil.copytree(ds.path, copy)
    assert invoke("index", copy).returncode == 0
    # Without the tables' files, only the index can answer.
    for table in ("images", "palettes"):
        for part in (copy / table).iterdir():
            part.unlink()
    indexed = open_dataset(str(copy))
    for asked, expected in zip(queries, from_tables, strict=True):
        pd.testing.assert_frame_equal(search(indexed, top=20, **asked), expected)


# Run in a new interpreter: the loops this process has already used are loaded in it.
COMPILED_BY_A_SEARCH = """
import sys

from palette_dask import _color_loops, _transport, open_dataset, search


def loaded():
    modules = (_color_loops, _transport)
    loops = [f for m in modules for f in vars(m).values() if hasattr(f, "signatures")]
    return {(f.__name__, str(signature)) for f in loops for signature in f.signatures}


_color_loops.warm_up()
_transport.warm_up()
after_warm_up = loaded()
like = sys.argv[1]
for path in sys.argv[2:]:
    ds = open_dataset(path)
    search(ds, colors=["#1565a1", "#df8c18"], weights=[20, 80])
    search(ds, colors=["red"])
    search(ds, colors=["#808080"], radius=40)
    search(ds, like=like)
print(sorted(loaded() - after_warm_up))
"""


def test_the_install_warm_up_compiles_every_loop_a_search_runs(dataset, tmp_path):
    """``make install`` compiles the search loops once; searches, over arrays built from
    the tables and over a mapped index, then need no loop it left out (each process would
    compile it again, seconds of CPU)."""
    ds, folder = dataset
    tables, indexed = tmp_path / "tables", tmp_path / "indexed"
    shutil.copytree(ds.path, tables, ignore=shutil.ignore_patterns("_index"))
    shutil.copytree(tables, indexed)
    assert invoke("index", indexed).returncode == 0
    like = str(folder / "photo.png")
    result = subprocess.run(
        [sys.executable, "-c", COMPILED_BY_A_SEARCH, like, str(tables), str(indexed)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_building_the_index_again_leaves_a_running_search_its_files(tmp_path):
    """The index is read through memory maps: building it again writes new files and
    unlinks the old ones, which a search that mapped them reads to its end."""
    rng = np.random.default_rng(4)
    indexes = []
    for n in (300, 200):  # the second smaller: files rewritten in place would shrink
        lab, share = random_palettes(rng, n)
        ids = np.array([f"{i:032x}" for i in range(n)], dtype="S32")
        rgb = rng.integers(0, 256, lab.shape).astype(np.uint8)
        uris = pa.array([f"/photos/{i}.jpg" for i in range(n)], pa.large_string())
        indexes.append(PaletteArrays.from_lab(ids, lab, share, rgb, uris))
    folder = str(tmp_path / "index")
    save_index(folder, [indexes[0]], {})
    (running,) = read_index(folder)
    save_index(folder, [indexes[1]], {})
    assert sorted(p.name for p in (tmp_path / "index").iterdir())[-1] == "meta.json"
    assert len(list((tmp_path / "index").iterdir())) == 2  # the new files and meta.json
    for found, expected in ((running, indexes[0]), (read_index(folder)[0], indexes[1])):
        by_id = np.argsort(found.image_id)  # the index keeps rows in the order of their cells
        np.testing.assert_array_equal(found.lab[by_id], expected.lab)
        np.testing.assert_array_equal(found.share[by_id], expected.share)
        assert found.uri.take(pa.array(by_id)).equals(expected.uri)


def test_a_sharded_index_searched_on_a_cluster_ranks_as_one_search_here(dataset, client2, tmp_path):
    """Shards hold whole files of the palettes table; searched one after the other here,
    or a Dask task each on the cluster's workers, they give the unsharded search's results."""
    ds, folder = dataset
    out = tmp_path / "out"
    run_job(JobSpec(input=[str(folder)], output=str(out), partition_size=4), client=client2)
    assert invoke("index", out, "--shard-images", "4").returncode == 0
    meta = json.loads((out / "_index" / "image" / "meta.json").read_text())
    assert len(meta["shards"]) >= 3 and all(len(s["sources"]) == 1 for s in meta["shards"])
    sharded = open_dataset(str(out))
    assert len(load_index(sharded, "image")) == len(meta["shards"])
    for asked in [
        {"colors": ["#1565a1", "#df8c18"]},
        {"colors": ["#1565a1", "#df8c18"], "weights": [20, 80]},
        {"colors": ["#808080"], "radius": 40},
        {"like": str(folder / "photo.png")},
        {"like": str(folder / "blue70.png"), "top": 3},
    ]:
        asked = {"top": 20, **asked}
        expected = search(ds, **asked)
        assert len(expected) >= 3
        pd.testing.assert_frame_equal(search(sharded, **asked), expected)
        pd.testing.assert_frame_equal(search(sharded, scheduler=client2, **asked), expected)
    address = client2.scheduler.address
    args = ["search", out, "--color", "#df8c18", "--json"]
    on_cluster = invoke(*args, "--scheduler", address)
    assert on_cluster.returncode == 0, on_cluster.stderr
    assert on_cluster.stdout == invoke(*args).stdout and on_cluster.stdout.count("\n") >= 3


def test_indexing_a_grown_dataset_reads_only_the_new_files(client2, tmp_path, monkeypatch):
    folder, out = tmp_path / "images", tmp_path / "out"
    folder.mkdir()
    known = list(CONTENT)
    for name in known[:4]:
        colors, shares = CONTENT[name]
        (folder / f"{name}.png").write_bytes(encode(blocks(colors, shares, size=(40, 50)), "PNG"))
    spec = JobSpec(input=[str(folder)], output=str(out), partition_size=2)
    run_job(spec, client=client2)
    build_index(str(out), shard_images=2)
    index = out / "_index" / "image"
    before = json.loads((index / "meta.json").read_text())["shards"]
    stamps = {p: p.stat().st_mtime_ns for p in index.rglob("*.npy")}
    for name in known[4:]:
        colors, shares = CONTENT[name]
        (folder / f"{name}.png").write_bytes(encode(blocks(colors, shares, size=(40, 50)), "PNG"))
    run_job(spec, client=client2)  # a new segment
    ds = open_dataset(str(out))
    # The index of the smaller dataset is stale: never used, the tables answer.
    assert load_index(ds, "image") is None
    from_tables = search(ds, colors=["#28a03c"], top=10)
    assert names(from_tables)[0] == "green"
    with pytest.raises(UsageError, match="run `palette-dask index` first"):
        search(ds, colors=["#28a03c"], scheduler=client2)  # a cluster searches an index only
    read = []
    real_rows = index_module._palette_rows
    monkeypatch.setattr(
        index_module,
        "_palette_rows",
        lambda ds, kind, files: read.append(files) or real_rows(ds, kind, files),
    )
    build_index(str(out), shard_images=2)
    after = json.loads((index / "meta.json").read_text())["shards"]
    assert after[: len(before)] == before  # the first segment's shards, kept as they were
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in stamps.items())
    new = [name for shard in after[len(before) :] for name, _ in shard["sources"]]
    assert new and all(name.startswith("part-0001-") for name in new)
    # Only the new segment's files were read.
    assert sorted(f for files in read for f in files) == sorted(new)
    assert len(load_index(ds, "image")) == len(after)
    pd.testing.assert_frame_equal(search(ds, colors=["#28a03c"], top=10), from_tables)
    like = search(ds, like=str(folder / "both25.png"), top=10)
    shutil.rmtree(out / "_index")
    pd.testing.assert_frame_equal(like, search(ds, like=str(folder / "both25.png"), top=10))


def test_search_cli_prints_json(dataset):
    ds, _ = dataset
    done = invoke("search", ds.path, "--color", "#df8c18", "--top", "3", "--json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert rows[0]["uri"].rsplit("/", 1)[-1] == "orange60.png"
    assert {"image_id", "uri", "score", "matched", "colors"} <= set(rows[0])
    bad = invoke("search", ds.path)
    assert bad.returncode == 1 and "colors" in bad.stderr
    unknown = invoke("search", ds.path, "--like", "no/such.png")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == f"Error: not in {ds.path}: no/such.png"
    # For the library it is a KeyError, as a missing key is.
    with pytest.raises(KeyError, match=r"no/such\.png"):
        ds.find_images(["no/such.png"])


def test_earth_movers_distance_is_a_metric_on_palettes():
    a = ([[50, 0, 0], [70, 10, 0]], [0.5, 0.5])
    b = ([[50, 0, 0], [70, 10, 0]], [0.2, 0.8])
    assert earth_movers_distance(*a, *a) == 0
    d = earth_movers_distance(*a, *b)
    np.testing.assert_allclose(d, 0.3 * np.hypot(20, 10), rtol=1e-6)
    assert d == pytest.approx(earth_movers_distance(*b, *a))


def test_relaxed_distance_bounds_the_distance_from_below():
    rng = np.random.default_rng(0)
    lab = rng.uniform(-50, 90, (60, 5, 3))
    share = rng.dirichlet(np.ones(5), 60)
    share[::3, 3:] = 0  # shorter palettes, padded
    arrays = PaletteArrays.from_lab(np.arange(60).astype("S32"), lab, share).indexed()
    lab, share = arrays.lab, arrays.share
    bound = relaxed_distance(arrays, 0)
    exact = np.array([earth_movers_distance(lab[0], share[0], lab[i], share[i]) for i in range(60)])
    assert (bound <= exact).all() and bound[0] == pytest.approx(0, abs=0.02)
    assert (bound[1:] > 0.5 * exact[1:]).mean() > 0.9  # and close to it: it prunes
    # Pruning by the bound keeps the ranking exact.
    best = _like_ranking(arrays, Reference.of(arrays, 0), 10)
    np.testing.assert_allclose([d for d, _, _ in best], np.sort(exact)[:10], atol=1e-6)


def random_palettes(rng, n: int, k: int = 5):
    """``n`` palettes of up to ``k`` colours near 40 base colours, some shorter (padded)."""
    base = rng.uniform([0, -60, -60], [100, 60, 60], (40, 3))
    lab = base[rng.integers(0, 40, (n, k))] + rng.normal(0, 4, (n, k, 3))
    share = rng.dirichlet(np.ones(k), n)
    share[rng.random(n) < 0.3, 3:] = 0
    return lab.astype(np.float32), share.astype(np.float32)


def adversarial_palettes(rng):
    """Palettes that defeat the bounds: exact copies of one another (ties broken by id),
    copies moved by a hair, and palettes spread around the same mean colour."""
    lab, share = random_palettes(rng, 40)
    copies = np.repeat(np.arange(40), 8)
    nudged = lab[copies] + rng.normal(0, 1e-3, (len(copies), 5, 3)).astype(np.float32)
    center = np.array([50, 0, 0], np.float32)
    spread = rng.normal(0, 20, (120, 5, 3)).astype(np.float32)
    spread -= spread.mean(axis=1, keepdims=True)  # equal shares: the mean is the centre
    labs = [lab, lab[copies], nudged, center + spread]
    shares = [share, share[copies], share[copies], np.full((120, 5), 0.2, np.float32)]
    return np.concatenate(labs), np.concatenate(shares)


def border_palettes(rng):
    """Palettes whose colours and mean colours sit on the borders of the index's cells
    (multiples of both cell sizes, and a hair either side), many of them identical."""
    cell = max(MEAN_CELL, COLOR_CELL)
    lattice = np.stack(
        np.meshgrid(np.arange(2, 12), np.arange(-6, 7), np.arange(-6, 7), indexing="ij"), axis=-1
    ).reshape(-1, 3) * np.float32(cell)
    lab = lattice[rng.integers(0, len(lattice), (400, 5))].astype(np.float32)
    lab[100:200] += rng.choice([-1e-4, 0, 1e-4], (100, 5, 3)).astype(np.float32)
    share = np.tile(np.float32([0.5, 0.5, 0, 0, 0]), (400, 1))  # means on the lattice too
    share[200:] = rng.dirichlet(np.ones(5), 200)
    lab[300:] = lab[rng.integers(0, 300, 100)]  # copies
    return lab, share


@pytest.mark.parametrize("palettes", [random_palettes, adversarial_palettes, border_palettes])
def test_likeness_ranking_is_the_brute_force_one(palettes, monkeypatch):
    """Over several rounds of candidates (small rounds and batches), ids and order equal
    those of every distance measured by the linear program."""
    monkeypatch.setattr(query, "LIKE_ROUND", 50)
    monkeypatch.setattr(query, "LIKE_BATCH", 16)
    rng = np.random.default_rng(7)
    lab, share = palettes(rng) if palettes is not random_palettes else palettes(rng, 1000)
    ids = np.array([f"{i:032x}" for i in rng.permutation(len(lab))], dtype="S32")
    arrays = PaletteArrays.from_lab(ids, lab, share).indexed()
    ids, lab, share = arrays.image_id, arrays.lab, arrays.share
    for reference in (0, 45, len(lab) - 1):
        exact = np.round(
            _linear_program_distances(
                lab[reference].astype(float),
                share[reference].astype(float),
                lab.astype(float),
                share.astype(float),
            ),
            9,
        )
        expected = np.lexsort((ids, exact))[:30]
        best = _like_ranking(arrays, Reference.of(arrays, reference), 30)
        assert [i for _, i, _ in best] == ids[expected].tolist()
        np.testing.assert_allclose([d for d, _, _ in best], exact[expected], atol=1e-8)


@pytest.mark.parametrize("palettes", [random_palettes, adversarial_palettes, border_palettes])
def test_colour_ranking_over_the_postings_is_the_scans(palettes):
    """The rows holding a colour near the query's, found through the index's postings, rank
    as a scan of every row ranks them (ids, order, scores to the bit), with query colours
    on palette colours and palette colours exactly on the radius."""
    rng = np.random.default_rng(11)
    lab, share = palettes(rng) if palettes is not random_palettes else palettes(rng, 3000)
    ids = np.array([f"{i:032x}" for i in rng.permutation(len(lab))], dtype="S32")
    scan = PaletteArrays.from_lab(ids, lab, share)
    indexed = scan.indexed()
    assert indexed.postings is not None and scan.postings is None
    on_palette = rgb_to_hex(lab_to_rgb(lab[[0, 5], 0]))
    query_lab, _ = query._color_query(on_palette, None)
    # A radius that puts a palette colour exactly on the border: credit 0 on both sides.
    border = float(np.sqrt(((lab[7, 1] - query_lab[0]) ** 2).sum(dtype=np.float32)))
    for colors, weights, radius in [
        (on_palette[:1], None, query.RADIUS),
        (on_palette, None, query.RADIUS),
        (on_palette, [30, 70], 12.0),
        (on_palette[:1], None, border),
    ]:
        for top in (10, len(ids)):  # the rows holding every query colour may suffice
            expected = query.color_ranking(scan, colors, weights, top, radius)
            found = query.color_ranking(indexed, colors, weights, top, radius)
            assert len(expected[0]) > 0
            assert indexed.image_id[found[0]].tolist() == ids[expected[0]].tolist()
            assert np.array_equal(found[1], expected[1])
            assert np.array_equal(found[2], expected[2])


def test_searches_in_threads_rank_as_one_thread_does(dataset, monkeypatch):
    monkeypatch.setattr(query, "MIN_ROWS_PER_THREAD", 1)  # threads even for a few rows
    rng = np.random.default_rng(5)
    lab, share = random_palettes(rng, 2000)
    ids = np.array([f"{i:032x}" for i in range(len(lab))], dtype="S32")
    indexed = PaletteArrays.from_lab(ids, lab, share).indexed()
    colors = rgb_to_hex(lab_to_rgb(lab[[3, 9], 0]))
    alone = query.color_ranking(indexed, colors, [40, 60], 50, threads=1)
    threaded = query.color_ranking(indexed, colors, [40, 60], 50, threads=3)
    for ours, expected in zip(threaded[:3], alone[:3], strict=True):
        assert np.array_equal(ours, expected)
    reference = Reference.of(indexed, 7)
    alone, threaded = (query._like_ranking(indexed, reference, 40, threads=n) for n in (1, 3))
    assert threaded == alone and len(alone) == 40
    # And through the command line.
    ds, _ = dataset
    args = ["search", ds.path, "--color", "#df8c18", "--json"]
    assert invoke(*args, "--threads", "3").stdout == invoke(*args, "--threads", "1").stdout


def test_palette_rows_give_the_same_arrays_in_any_order():
    """An index is built from the tables' rows as they come: an image's rows together, as
    the job writes them, or apart."""
    rng = np.random.default_rng(2)
    lab, share = random_palettes(rng, 50)
    rgb = rng.integers(0, 256, lab.shape).astype(np.uint8)
    held = share > 0
    image, rank = np.nonzero(held)
    ids = np.array([f"{i:032x}" for i in range(50)], dtype="S32")
    rows = (ids[image], rank, rgb[held], lab[held], share[held])
    together = PaletteArrays.from_rows(*rows)
    shuffled = rng.permutation(len(image))
    apart = PaletteArrays.from_rows(*(r[shuffled] for r in rows))
    assert together.image_id.tolist() == ids.tolist()
    np.testing.assert_array_equal(together.lab, np.where(held[:, :, None], lab, 0))
    for name in ("image_id", "share", "lab"):
        np.testing.assert_array_equal(
            getattr(apart, name)[np.argsort(apart.image_id)], getattr(together, name)
        )


def test_the_transport_solver_gives_the_linear_programs_distances():
    rng = np.random.default_rng(3)
    for k in (1, 2, 5, 8):
        lab_a, share_a = random_palettes(rng, 1, k)
        labs_b, shares_b = random_palettes(rng, 200, k)
        ours = query.earth_movers_distances(lab_a[0], share_a[0], labs_b, shares_b)
        reference = _linear_program_distances(
            lab_a[0].astype(float),
            share_a[0].astype(float),
            labs_b.astype(float),
            shares_b.astype(float),
        )
        np.testing.assert_allclose(ours, reference, atol=1e-8)


def test_stats_on_the_sample_photographs(corpus, client1, tmp_path):
    from palette_dask.stats import collection_stats

    out = tmp_path / "out"
    run_job(JobSpec(input=[str(corpus)], output=str(out)), client=client1)
    ds = open_dataset(str(out))
    found = collection_stats(ds)
    images = ds.images
    assert found.images == len(images) and found.failed == (images.status != "ok").sum()
    assert found.errors.sum() == found.failed and len(found.errors) == 4  # four kinds of error
    palettes = ds.palettes.query("palette_kind == 'image'")
    assert set(found.dominant.hex) <= set(palettes.hex)  # real palette colours
    assert list(found.dominant.share) == sorted(found.dominant.share, reverse=True)
    assert found.dominant.share.sum() <= 1 + 1e-9
    for series in (found.lightness, found.chroma, found.hue):
        assert series.sum() == pytest.approx(1.0)
    # The CLI prints the same and draws the charts.
    done = invoke("stats", out, "--plots", tmp_path / "charts")
    assert done.returncode == 0, done.stderr
    assert found.dominant.hex[0] in done.stdout and f"{len(images)} (" in done.stdout
    for name in ("dominant", "lightness", "chroma", "hue"):
        chart = np.asarray(Image.open(tmp_path / "charts" / f"{name}.png"))
        assert len(np.unique(chart.reshape(-1, 3), axis=0)) > 3
