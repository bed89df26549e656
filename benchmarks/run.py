"""Throughput and quality benchmark: palette-dask against the recipe and the decode floor.

Run with ``make bench`` (or ``python benchmarks/run.py --images 60``). Everything
is measured in one run on the same files, and reported as ratios, because
absolute times on a shared machine are noisy. Results go to
``benchmarks/results/latest.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from corpora import make_web_corpus
from PIL import Image
from skimage.transform import resize
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from palette_dask import JobSpec, extract_palette, run_job
from palette_dask.pipeline import package_versions

RESULTS = Path(__file__).parent / "results"


def per_image_ms(function, paths) -> float:
    times = []
    for path in paths:
        t0 = time.perf_counter()
        function(path)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def recipe(path):
    """The classic recipe: imageio read, resize to 200x200, scikit-learn KMeans(k=5)."""
    image = iio.imread(path)[..., :3]
    small = resize(image, (200, 200), anti_aliasing=True, preserve_range=True)
    KMeans(n_clusters=5, random_state=0).fit(small.reshape(-1, 3))


def decode_floor(path):
    """Decoding alone, with JPEG draft mode to about 200x200: no method can avoid this."""
    with Image.open(path) as im:
        im.draft("RGB", (200, 200))
        np.asarray(im.convert("RGB"))


def quality_ratio(paths, k: int) -> float:
    ours, reference = [], []
    for path in paths:
        palette = extract_palette(str(path), k=k)
        X = palette.sample.rgb.reshape(-1, 3).astype(np.float64)
        model = KMeans(n_clusters=k, n_init=10, random_state=0).fit(X)
        ours.append(palette.mse_rgb)
        reference.append(np.mean((model.cluster_centers_[model.labels_] - X) ** 2))
    return float(np.mean(ours) / np.mean(reference))


def job_images_per_second(paths, workers: int, folder: Path) -> float:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        client.run(lambda: __import__("palette_dask"))  # warm the workers' imports
        spec = JobSpec(
            input=[str(p) for p in paths],
            output=str(folder / f"out{workers}"),
            partition_size=8,
            overwrite=True,
        )
        report = run_job(spec, client=client)
    return report.images / report.elapsed_s


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48, help="1-megapixel JPEGs to generate")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="palette-bench-"))
    try:
        paths = make_web_corpus(folder, args.images)
        with threadpool_limits(1):
            floor = per_image_ms(decode_floor, paths)
            ours = per_image_ms(lambda p: extract_palette(str(p), k=5), paths)
            classic = per_image_ms(recipe, paths)
            quality = {k: quality_ratio(paths[:12], k) for k in (5, 8, 16)}
        one = job_images_per_second(paths, 1, folder)
        two = job_images_per_second(paths, 2, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    results = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "versions": package_versions(),
        "images": args.images,
        "median_ms_per_image": {"decode_floor": floor, "palette_dask": ours, "recipe": classic},
        "ratios": {
            "recipe_over_ours (speed-up)": classic / ours,
            "ours_over_floor": ours / floor,
            "job_2_workers_over_1": two / one,
            "job_1_worker_per_image_over_extract_palette": (1000 / one) / ours,
        },
        "job_images_per_second": {"1_worker": one, "2_workers": two},
        "quality_mse_over_sklearn_n_init_10": quality,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))
    lines = [
        f"# Benchmark: {args.images} JPEGs of about 1 megapixel, k=5, one thread per process",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| decode floor (JPEG draft to ~200x200), median ms/image | {floor:.1f} |",
        f"| palette-dask `extract_palette`, median ms/image | {ours:.1f} |",
        f"| the recipe (imageio, resize 200x200, KMeans), median ms/image | {classic:.1f} |",
        f"| speed-up over the recipe | {classic / ours:.1f}x |",
        f"| ours over the decode floor | {ours / floor:.2f}x |",
        f"| job, 1 worker, images/s | {one:.1f} |",
        f"| job, 2 workers, images/s | {two:.1f} |",
        f"| 2 workers over 1 | {two / one:.2f}x |",
        *(
            f"| mean mse_rgb over scikit-learn n_init=10, k={k} | {r:.4f} |"
            for k, r in quality.items()
        ),
    ]
    (RESULTS / "latest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
