"""Search benchmark: colour and likeness queries over synthetic datasets of 10⁶ and 10⁷ images.

Writes the tables of ``--images`` images in the project's schema (k=5,
colours drawn around a few hundred hues, shares from a Dirichlet law), builds
their index with ``palette-dask index`` (shards of the default size), and
times, through :func:`palette_dask.search` on the opened dataset, in a process
of its own: the first search (the index's shards mapped, the compiled loops
loaded), then, on every core and on one, a 2-colour query, a weighted one and
``like`` queries for the top 20 and the top 100 (medians; ``like`` over five
reference images). Every search reads the index's ``meta.json`` and returns
URIs and hex codes. With the index's build time and size and the search
process's peak memory, for each size. Results go to
``benchmarks/results/search.{md,json}``.

    python benchmarks/search.py --images 1000000 10000000
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from benchtools import write_results
from threadpoolctl import threadpool_limits

from palette_dask import open_dataset, search
from palette_dask.color import rgb_to_lab
from palette_dask.index import PaletteArrays
from palette_dask.query import default_threads
from palette_dask.tables import SCHEMAS, color_columns, part_name

K = 5


def synthetic_arrays(n_images: int, seed: int = 0) -> PaletteArrays:
    """Palettes of ``n_images`` images: colours near 300 base colours, shares from Dirichlet(1)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (300, 3))
    picks = base[rng.integers(0, len(base), (n_images, K))] + rng.integers(
        -12, 13, (n_images, K, 3)
    )
    rgb = np.clip(picks, 0, 255).astype(np.uint8)
    lab = rgb_to_lab(rgb.reshape(-1, 3)).reshape(n_images, K, 3)
    share = np.sort(rng.dirichlet(np.ones(K), n_images), axis=1)[:, ::-1]
    ids = np.char.mod("%032x", np.arange(n_images)).astype("S32")
    uris = pa.array(np.char.mod("s3://photos/%09d.jpg", np.arange(n_images)).astype(str))
    return PaletteArrays.from_lab(ids, lab, share, rgb=rgb, uri=uris)


def timed(function, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        function()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def write_tables(folder: Path, arrays: PaletteArrays, per_file: int = 1_000_000) -> None:
    """A dataset of ``arrays`` in the project's schema: ``images`` and ``palettes`` files of
    ``per_file`` images each, and its ``_job.json``, as an image-mode job writes them."""
    for table in ("images", "palettes"):
        (folder / table).mkdir(parents=True)
    k = arrays.share.shape[1]
    for number, start in enumerate(range(0, len(arrays), per_file)):
        rows = np.arange(start, min(start + per_file, len(arrays)))
        ids = pa.array(arrays.image_id[rows].astype(str))
        n = len(rows)
        images = {
            "image_id": ids,
            "uri": arrays.uri.take(pa.array(rows)).cast(pa.string()),
            "status": pa.array(np.full(n, "ok")),
            "k": pa.array(np.full(n, k, np.int16)),
            "color_space": pa.array(np.full(n, "lab")),
            "engine": pa.array(np.full(n, "histogram")),
            "random_state": pa.array(np.zeros(n, np.int64)),
            "elapsed_ms": pa.array(np.zeros(n, np.float32)),
        }
        schema = SCHEMAS["images"]
        table = pa.table(
            {f.name: images.get(f.name, pa.nulls(n, f.type)) for f in schema}, schema=schema
        )
        name = part_name(0, number)
        pq.write_table(table, folder / "images" / name)
        rgb = arrays.colors_rgb[arrays.color[rows]].reshape(-1, 3)
        flat = {
            "image_id": pa.array(np.repeat(arrays.image_id[rows].astype(str), k)),
            "palette_kind": pa.array(np.full(n * k, "image")),
            "rank": pa.array(np.tile(np.arange(k, dtype=np.uint8), n)),
            **color_columns(rgb, arrays.share[rows].ravel(), np.zeros(n * k, np.int64)),
            "corpus_index": pa.nulls(n * k, pa.int16()),
        }
        pq.write_table(pa.table(flat, schema=SCHEMAS["palettes"]), folder / "palettes" / name)
    job = {"spec": {"mode": "image"}, "segment": 0, "finished": "synthetic", "status": "complete"}
    (folder / "_job.json").write_text(json.dumps(job))


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started its program (``VmHWM``; the
    ``ru_maxrss`` of a process started by another counts that one's memory at the fork)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def like_time(ds, references: list[str], top: int, threads: int | None) -> float:
    """Median time of a ``like`` query over the ``references``."""
    times = []
    for reference in references:
        t0 = time.perf_counter()
        search(ds, like=reference, top=top, threads=threads)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(path: str) -> dict:
    """Time the queries through :func:`palette_dask.search` on the opened dataset at
    ``path``, in this process: the first search, then each query on every core and on one."""
    ds = open_dataset(path)
    ids = ds.arrow_dataset("images").head(1_000_000, columns=["image_id"]).column(0)
    references = [ids[int(i)].as_py() for i in np.linspace(0, len(ids) - 1, 5)]
    two = ["#1565a1", "#df8c18"]
    t0 = time.perf_counter()
    search(ds, colors=two, top=20)
    first_s = time.perf_counter() - t0
    search(ds, like=references[0], top=1)  # the likeness loops loaded
    measured = {"first_search_s": first_s}
    with threadpool_limits(1):
        for label, threads in (("", None), ("one_core_", 1)):
            measured |= {
                f"{label}two_color_query_s": timed(
                    lambda t=threads: search(ds, colors=two, top=20, threads=t)
                ),
                f"{label}two_color_weighted_query_s": timed(
                    lambda t=threads: search(ds, colors=two, weights=[60, 40], top=20, threads=t)
                ),
                f"{label}like_query_s": like_time(ds, references, 20, threads),
                f"{label}like_top_100_query_s": like_time(ds, references, 100, threads),
            }
    return {**measured, "search_peak_rss_mb": peak_rss_mb()}


def run_size(n_images: int, work: Path) -> dict:
    """Write the tables of ``n_images`` synthetic palettes, build their index with
    ``palette-dask index``, then measure the queries in a process of their own (its peak
    memory is the search's)."""
    folder = work / f"dataset-{n_images}"
    write_tables(folder, synthetic_arrays(n_images))
    t0 = time.perf_counter()
    command = Path(sys.executable).parent / "palette-dask"
    subprocess.run([str(command), "index", str(folder)], check=True, capture_output=True)
    build_s = time.perf_counter() - t0
    index = folder / "_index" / "image"
    size = sum(f.stat().st_size for f in index.rglob("*") if f.is_file())
    shards = len(json.loads((index / "meta.json").read_text())["shards"])
    measured = subprocess.run(
        [sys.executable, __file__, "--measure", str(folder)],
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        "images": n_images,
        "index_build_s": build_s,
        "index_mb": size / 2**20,
        "bytes_per_image": size / n_images,
        "shards": shards,
        **json.loads(measured.stdout),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0
    work = Path(tempfile.mkdtemp(prefix="palette-search-bench-"))
    try:
        rows = [run_size(n, work) for n in args.images]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        f"# Search: synthetic datasets (k={K}), palette_dask.search, median",
        "",
        f"On every core ({default_threads()}) and on one:",
        "",
        "| images | index build | index size | per image | shards | first search "
        "| 2-colour query | weighted | like, top 20 | like, top 100 "
        "| one core: 2-colour | weighted | like, top 20 | like, top 100 | search peak RSS |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- "
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['images']:,} | {r['index_build_s']:.1f} s | {r['index_mb']:.1f} MB "
        f"| {r['bytes_per_image']:.0f} B | {r['shards']} | {r['first_search_s']:.3f} s "
        + " ".join(
            f"| {r[f'{label}{name}']:.3f} s"
            for label in ("", "one_core_")
            for name in (
                "two_color_query_s",
                "two_color_weighted_query_s",
                "like_query_s",
                "like_top_100_query_s",
            )
        )
        + f" | {r['search_peak_rss_mb']:.0f} MB |"
        for r in rows
    ]
    write_results("search", {"sizes": rows}, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
