"""Per-image benchmark: palette-dask against the classic recipe and the JPEG decode floor.

Run with ``make bench`` (or ``python benchmarks/run.py --camera 6 --web 48 --mixed 24``).
Three deterministic sets made from the photographs that ship with scikit-image:
"camera" (about 12-megapixel JPEGs), "web" (about 1-megapixel JPEGs) and "mixed"
(small PNGs and JPEGs). Everything is measured in one run on the same files and
reported as ratios, since absolute times on a shared machine are noisy. Results
go to ``benchmarks/results/latest.{md,json}``.
"""

from __future__ import annotations

import argparse
import io
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
from benchtools import make_photo_corpus, run_job_on_fresh_cluster
from PIL import Image
from skimage.transform import resize
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from palette_dask import JobSpec, extract_palette
from palette_dask.imaging import _resize_premultiplied, sample_shape
from palette_dask.palette import PaletteOptions, load_sample, palette_from_sample
from palette_dask.pipeline import package_versions

RESULTS = Path(__file__).parent / "results"


def median_ms(function, paths) -> float:
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
    """Decoding alone, JPEG draft mode to about 200x200: the one cost no method avoids."""
    with Image.open(path) as im:
        im.draft("RGB", (200, 200))
        np.asarray(im.convert("RGB"))


def stage_split(paths) -> dict[str, float]:
    """Median milliseconds of our stages: read, decode (with draft), resize, cluster."""
    options = PaletteOptions()
    stages = {"read": [], "decode": [], "resize": [], "cluster": []}
    for path in paths:
        t0 = time.perf_counter()
        data = Path(path).read_bytes()
        t1 = time.perf_counter()
        with Image.open(io.BytesIO(data)) as im:
            target = sample_shape(*im.size, options.max_pixels)
            if im.format == "JPEG":
                im.draft("RGB", (2 * target[1], 2 * target[0]))
            pixels = np.asarray(im.convert("RGB"))
        t2 = time.perf_counter()
        rgb, _ = _resize_premultiplied(pixels, None, target)
        t3 = time.perf_counter()
        palette_from_sample(load_sample(rgb, options), options)
        t4 = time.perf_counter()
        for name, (a, b) in zip(stages, [(t0, t1), (t1, t2), (t2, t3), (t3, t4)], strict=True):
            stages[name].append((b - a) * 1000)
    return {name: statistics.median(values) for name, values in stages.items()}


def quality_ratio(paths, k: int) -> float:
    """Mean mse_rgb of ours over scikit-learn KMeans(n_init=10) on the same sample pixels."""
    ours, reference = [], []
    for path in paths:
        palette = extract_palette(str(path), k=k)
        X = palette.sample.rgb.reshape(-1, 3).astype(np.float64)
        model = KMeans(n_clusters=k, n_init=10, random_state=0).fit(X)
        ours.append(palette.mse_rgb)
        reference.append(np.mean((model.cluster_centers_[model.labels_] - X) ** 2))
    return float(np.mean(ours) / np.mean(reference))


def run_on_cluster(paths, workers: int, out: Path, **spec_options) -> tuple[float, list[float]]:
    """Images per second of one job on a fresh cluster, and each worker's peak memory (MB)."""
    spec = JobSpec(input=[str(p) for p in paths], output=str(out), overwrite=True, **spec_options)
    report, peak_mb = run_job_on_fresh_cluster(spec, workers)
    return report.images / report.elapsed_s, peak_mb


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camera", type=int, default=6, help="12-megapixel JPEGs")
    parser.add_argument("--web", type=int, default=48, help="1-megapixel JPEGs")
    parser.add_argument("--mixed", type=int, default=24, help="small PNGs and JPEGs")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="palette-bench-"))
    try:
        sets = {
            "camera": make_photo_corpus(work / "camera", args.camera, megapixels=12, seed=1),
            "web": make_photo_corpus(work / "web", args.web, megapixels=1, seed=2),
            "mixed": make_photo_corpus(
                work / "mixed", args.mixed, megapixels=0.3, seed=3, formats=("png", "jpg")
            ),
        }
        per_set = {}
        with threadpool_limits(1):
            for name, paths in sets.items():
                floor = median_ms(decode_floor, [p for p in paths if p.suffix == ".jpg"])
                ours = median_ms(lambda p: extract_palette(str(p), k=5), paths)
                classic = median_ms(recipe, paths)
                per_set[name] = {
                    "images": len(paths),
                    "median_ms": {"decode_floor": floor, "palette_dask": ours, "recipe": classic},
                    "stages_ms": stage_split(paths),
                    "ratios": {"recipe_over_ours": classic / ours, "ours_over_floor": ours / floor},
                    "quality": {k: quality_ratio(paths[:12], k) for k in (5, 8, 16)},
                }
        web = sets["web"]
        one, _ = run_on_cluster(web, 1, work / "job1", partition_size=8)
        two, _ = run_on_cluster(web, 2, work / "job2", partition_size=8)
        corpus, _ = run_on_cluster(web, 2, work / "corpus", partition_size=8, mode="corpus")
        _, camera_memory = run_on_cluster(sets["camera"], 2, work / "camera-job", partition_size=2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    web_ours = per_set["web"]["median_ms"]["palette_dask"]
    job = {
        "web_images_per_second": {"1_worker": one, "2_workers": two, "corpus_2_workers": corpus},
        "2_workers_over_1": two / one,
        "1_worker_ms_per_image_over_extract_palette": (1000 / one) / web_ours,
        "corpus_over_image_mode_time": two / corpus,
        "camera_peak_worker_mb": camera_memory,
    }
    results = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "versions": package_versions(),
        "sets": per_set,
        "job": job,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))
    lines = [
        "# Per image, one process, single-threaded BLAS, k=5 (median ms)",
        "",
        "| set | images | decode floor | palette-dask | recipe | ours / floor | recipe / ours "
        "| read | decode | resize | cluster | quality k=5 / 8 / 16 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in per_set.items():
        ms, st, q = r["median_ms"], r["stages_ms"], r["quality"]
        lines.append(
            f"| {name} | {r['images']} | {ms['decode_floor']:.1f} | {ms['palette_dask']:.1f} | "
            f"{ms['recipe']:.1f} | {r['ratios']['ours_over_floor']:.2f}x | "
            f"{r['ratios']['recipe_over_ours']:.1f}x | {st['read']:.1f} | {st['decode']:.1f} | "
            f"{st['resize']:.1f} | {st['cluster']:.1f} | "
            f"{q[5]:.4f} / {q[8]:.4f} / {q[16]:.4f} |"
        )
    lines += [
        "",
        "Quality: mean mse_rgb over scikit-learn `KMeans(n_init=10)` on the same sample pixels.",
        "",
        "# The job (web set)",
        "",
        f"- 1 worker: {one:.1f} images/s; 2 workers: {two:.1f} images/s "
        f"({job['2_workers_over_1']:.2f}x)",
        f"- per-image cost on 1 worker over `extract_palette`: "
        f"{job['1_worker_ms_per_image_over_extract_palette']:.2f}x",
        f"- corpus mode on 2 workers: {corpus:.1f} images/s "
        f"(image mode is {job['corpus_over_image_mode_time']:.2f}x as fast)",
        f"- peak memory per worker on the camera set (12 MP JPEGs): "
        f"{', '.join(f'{m:.0f} MB' for m in camera_memory)}",
    ]
    (RESULTS / "latest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
