"""Search benchmark: colour and likeness queries over synthetic indexes of 10⁶ and 10⁷ images.

Builds palettes of ``--images`` images (k=5, colours drawn around a few hundred
hues, shares from a Dirichlet law), stores them with the index format that
``palette-dask index`` writes, and times, on one core: loading the index, a
2-colour query and ``like`` queries for the top 20 and the top 100 (median
over five reference images, each query on freshly loaded arrays as a search
gets them), with the index's build time and size and the search process's
peak memory, for each size. Results go to
``benchmarks/results/search.{md,json}``.

    python benchmarks/search.py --images 1000000 10000000
"""

from __future__ import annotations

import argparse
import dataclasses
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
from benchtools import write_results
from threadpoolctl import threadpool_limits

from palette_dask.color import rgb_to_lab
from palette_dask.query import PaletteArrays, _like_ranking, color_ranking, read_index, save_index

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


def like_time(arrays: PaletteArrays, top: int) -> float:
    """Median time of a ``like`` query over five reference images, each on new arrays (a
    search loads them anew, so nothing it computes from them is kept)."""
    references = np.linspace(0, len(arrays) - 1, 5).astype(int)
    times = []
    for reference in references:
        fresh = dataclasses.replace(arrays)
        t0 = time.perf_counter()
        _like_ranking(fresh, int(reference), top)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started its program (``VmHWM``; the
    ``ru_maxrss`` of a process started by another counts that one's memory at the fork)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def measure(folder: str) -> dict:
    """Time the queries on the index in ``folder``, in this process (one core)."""
    with threadpool_limits(1):
        load_s = timed(lambda: read_index(folder), repeat=3)
        arrays = read_index(folder)
        query_s = timed(lambda: color_ranking(arrays, ["#1565a1", "#df8c18"], top=20))
        weighted_s = timed(lambda: color_ranking(arrays, ["#1565a1", "#df8c18"], [60, 40], top=20))
        like_s, like_100_s = (like_time(arrays, top) for top in (20, 100))
    return {
        "load_s": load_s,
        "two_color_query_s": query_s,
        "two_color_weighted_query_s": weighted_s,
        "like_query_s": like_s,
        "like_top_100_query_s": like_100_s,
        "search_peak_rss_mb": peak_rss_mb(),
    }


def run_size(n_images: int, work: Path) -> dict:
    """Build the index of ``n_images`` synthetic palettes, then measure the queries in a
    process of their own (its peak memory is the search's)."""
    folder = work / f"index-{n_images}"
    arrays = synthetic_arrays(n_images)
    t0 = time.perf_counter()
    save_index(str(folder), arrays, {"synthetic": True})
    build_s = time.perf_counter() - t0
    del arrays
    size = sum(f.stat().st_size for f in folder.iterdir())
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
        f"# Search: synthetic indexes (k={K}), one core, median",
        "",
        "| images | index build | index size | per image | load | 2-colour query "
        "| 2-colour query, weighted | like, top 20 | like, top 100 | search peak RSS |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['images']:,} | {r['index_build_s']:.1f} s | {r['index_mb']:.1f} MB "
        f"| {r['bytes_per_image']:.0f} B | {r['load_s']:.3f} s | {r['two_color_query_s']:.3f} s "
        f"| {r['two_color_weighted_query_s']:.3f} s | {r['like_query_s']:.3f} s "
        f"| {r['like_top_100_query_s']:.3f} s | {r['search_peak_rss_mb']:.0f} MB |"
        for r in rows
    ]
    write_results("search", {"sizes": rows}, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
