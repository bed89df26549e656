"""Search benchmark: a 2-colour query over a synthetic index of a million images.

Builds palettes of ``--images`` images (k=5, colours drawn around a few hundred
hues, shares from a Dirichlet law), stores them with the index format that
``palette-dask index`` writes, and times, on one core: loading the index, a
2-colour query and ``like`` queries for the top 20 and the top 100 (median
over five reference images, each query on freshly loaded arrays as a search
gets them). Results go to ``benchmarks/results/search.{md,json}``.

    python benchmarks/search.py --images 1000000
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="palette-search-bench-"))
    try:
        folder = str(work / "index")
        save_index(folder, synthetic_arrays(args.images), {"synthetic": True})
        size_mb = sum(f.stat().st_size for f in Path(folder).iterdir()) / 2**20
        with threadpool_limits(1):
            load_s = timed(lambda: read_index(folder), repeat=3)
            arrays = read_index(folder)
            query_s = timed(lambda: color_ranking(arrays, ["#1565a1", "#df8c18"], top=20))
            weighted_s = timed(
                lambda: color_ranking(arrays, ["#1565a1", "#df8c18"], [60, 40], top=20)
            )
            like_s, like_100_s = (like_time(arrays, top) for top in (20, 100))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {
        "images": args.images,
        "index_mb": size_mb,
        "load_s": load_s,
        "two_color_query_s": query_s,
        "two_color_weighted_query_s": weighted_s,
        "like_query_s": like_s,
        "like_top_100_query_s": like_100_s,
    }
    lines = [
        f"# Search: synthetic index of {args.images:,} images (k={K}), one core, median",
        "",
        "| index size | load | 2-colour query | 2-colour query, weighted | like, top 20 "
        "| like, top 100 |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| {size_mb:.1f} MB | {load_s:.3f} s | {query_s:.3f} s | {weighted_s:.3f} s "
        f"| {like_s:.3f} s | {like_100_s:.3f} s |",
    ]
    write_results("search", results, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
