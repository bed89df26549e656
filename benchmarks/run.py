"""Per-image and job benchmark: palette-dask against the classic recipe and the JPEG decode floor.

Run with ``make bench`` (or ``python benchmarks/run.py --camera 6 --web 48 --mixed 24
--job-images 4608``). Three deterministic sets made from the photographs that ship
with scikit-image: "camera" (about 12-megapixel JPEGs), "web" (about 1-megapixel
JPEGs) and "mixed" (small PNGs and JPEGs); the job runs on the web set's files
linked under as many names as ``--job-images`` asks. Everything is measured in
one run on the same files and reported as ratios, since absolute times on a
shared machine are noisy: per-image figures are the median over images of the
fastest of three tries, taken in turns with the decode floor; job figures are
the faster of two runs. Results go to ``benchmarks/results/latest.{md,json}``.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from benchtools import (
    linked_copies,
    machine,
    make_photo_corpus,
    median_ms,
    run_job_on_fresh_cluster,
    warm_up,
    write_results,
)
from PIL import Image
from skimage.transform import resize
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from palette_dask import JobSpec, extract_palette
from palette_dask.imaging import (
    Sample,
    _resize_premultiplied,
    decode_draft,
    decode_pixels,
    decode_png,
    exif_orientation,
    fit_draft,
    png_orientation,
    sample_shape,
    stored_size,
)
from palette_dask.palette import PaletteOptions, palette_from_sample
from palette_dask.pipeline import package_versions

# Partitions of a fixed size, so that the job's figures compare across versions.
JOB_PARTITION_SIZE = 128


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


def stage_split(paths, repeat: int = 3) -> dict[str, float]:
    """Median milliseconds of our stages (fastest of ``repeat``): read, decode, resize, cluster.

    Decode includes opening the file and reading its header; JPEGs take the
    draft path, PNGs libspng, as :func:`palette_dask.imaging.decode_sample` does.
    """
    options = PaletteOptions()
    stages = {"read": [], "decode": [], "resize": [], "cluster": []}
    for path in paths:
        tries = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            data = Path(path).read_bytes()
            t1 = time.perf_counter()
            with Image.open(io.BytesIO(data)) as im:
                png = im.format == "PNG"
                orientation = png_orientation(data) if png else exif_orientation(im)
                target = sample_shape(*im.size, options.max_pixels)
                if im.format == "JPEG":
                    size = stored_size(target, orientation)
                    draft = decode_draft(im, size)
                    t2 = time.perf_counter()
                    rgb = fit_draft(draft, size, orientation)
                else:
                    pixels, alpha = decode_png(im, data, orientation) if png else decode_pixels(im)
                    t2 = time.perf_counter()
                    rgb, alpha = _resize_premultiplied(pixels, alpha, target)
            t3 = time.perf_counter()
            sample = Sample(rgb=rgb, alpha=None, format="", width=0, height=0)
            palette_from_sample(sample, options)
            t4 = time.perf_counter()
            tries.append([(t1 - t0), (t2 - t1), (t3 - t2), (t4 - t3)])
        for name, seconds in zip(stages, np.min(tries, axis=0), strict=True):
            stages[name].append(seconds * 1000)
    return {name: statistics.median(values) for name, values in stages.items()}


def one_pass_ms(paths) -> float:
    """Mean milliseconds of ``extract_palette`` per image over ``paths``, one pass, one process:
    the job's own work, done without it."""
    t0 = time.perf_counter()
    for path in paths:
        extract_palette(str(path))
    return (time.perf_counter() - t0) * 1000 / len(paths)


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


def run_on_cluster(paths, workers: int, out: Path, runs: int = 1, **spec_options) -> dict:
    """The fastest of ``runs`` jobs, each on a fresh cluster: images per second, worker memory,
    and the workers' milliseconds per image decoding and clustering, and writing."""
    spec = JobSpec(input=[str(p) for p in paths], output=str(out), overwrite=True, **spec_options)
    best = None
    for _ in range(runs):
        report, peak_mb, _ = run_job_on_fresh_cluster(spec, workers)
        if best is None or report.elapsed_s < best[0].elapsed_s:
            best = report, peak_mb
    report, peak_mb = best
    return {
        "images_per_second": report.images / report.elapsed_s,
        "ms_per_image": report.elapsed_s * 1000 / report.images,
        "process_ms_per_image": report.process_seconds * 1000 / report.images,
        "write_ms_per_image": report.write_seconds * 1000 / report.images,
        "peak_worker_mb": peak_mb,
        "partitions": report.partitions,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camera", type=int, default=6, help="12-megapixel JPEGs")
    parser.add_argument("--web", type=int, default=48, help="1-megapixel JPEGs")
    parser.add_argument("--mixed", type=int, default=24, help="small PNGs and JPEGs")
    parser.add_argument(
        "--job-images", type=int, default=4608, help="images in the job (web set, linked)"
    )
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
            warm_up()
            for name, paths in sets.items():
                jpegs = [p for p in paths if p.suffix == ".jpg"]
                floor = median_ms({"floor": decode_floor}, jpegs)["floor"]
                ours = median_ms(
                    {"floor": decode_floor, "ours": lambda p: extract_palette(str(p))}, paths
                )["ours"]
                classic = median_ms({"recipe": recipe}, paths, repeat=1)["recipe"]
                per_set[name] = {
                    "images": len(paths),
                    "median_ms": {"decode_floor": floor, "palette_dask": ours, "recipe": classic},
                    "stages_ms": stage_split(paths),
                    "ratios": {"recipe_over_ours": classic / ours, "ours_over_floor": ours / floor},
                    "quality": {k: quality_ratio(paths[:12], k) for k in (5, 8, 16)},
                }
            job_set = linked_copies(sets["web"], work / "job", args.job_images)
            single_process = one_pass_ms(job_set[: args.job_images // 4])
        options = {"partition_size": JOB_PARTITION_SIZE}
        one = run_on_cluster(job_set, 1, work / "job1", runs=2, **options)
        two = run_on_cluster(job_set, 2, work / "job2", runs=2, **options)
        corpus = run_on_cluster(job_set, 2, work / "corpus", mode="corpus", **options)
        camera = run_on_cluster(sets["camera"], 2, work / "camera-job", partition_size=2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    job = {
        "images": args.job_images,
        "partition_size": JOB_PARTITION_SIZE,
        "1_worker": one,
        "2_workers": two,
        "corpus_2_workers": corpus,
        "2_workers_over_1": two["images_per_second"] / one["images_per_second"],
        "extract_palette_one_pass_ms": single_process,
        "1_worker_ms_per_image_over_extract_palette": one["ms_per_image"] / single_process,
        "corpus_over_image_mode_time": two["images_per_second"] / corpus["images_per_second"],
        "split_1_worker_ms": {
            "decode_and_cluster": one["process_ms_per_image"],
            "write": one["write_ms_per_image"],
            "scheduling_and_start": one["ms_per_image"]
            - one["process_ms_per_image"]
            - one["write_ms_per_image"],
        },
        "camera_peak_worker_mb": camera["peak_worker_mb"],
    }
    results = {
        "machine": machine(),
        "versions": package_versions(),
        "sets": per_set,
        "job": job,
    }
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
            f"| {name} | {r['images']} | {ms['decode_floor']:.2f} | {ms['palette_dask']:.2f} | "
            f"{ms['recipe']:.1f} | {r['ratios']['ours_over_floor']:.2f}x | "
            f"{r['ratios']['recipe_over_ours']:.1f}x | {st['read']:.2f} | {st['decode']:.2f} | "
            f"{st['resize']:.2f} | {st['cluster']:.2f} | "
            f"{q[5]:.4f} / {q[8]:.4f} / {q[16]:.4f} |"
        )
    lines += [
        "",
        "Quality: mean mse_rgb over scikit-learn `KMeans(n_init=10)` on the same sample pixels.",
        "",
        f"# The job: {args.job_images} web-set images, partitions of {JOB_PARTITION_SIZE}",
        "",
        f"- 1 worker: {one['images_per_second']:.1f} images/s; 2 workers: "
        f"{two['images_per_second']:.1f} images/s (**{job['2_workers_over_1']:.2f}x**)",
        f"- per-image cost on 1 worker over `extract_palette` in one process "
        f"({single_process:.2f} ms, one pass over a quarter of the job's files): "
        f"**{job['1_worker_ms_per_image_over_extract_palette']:.2f}x** "
        f"({one['ms_per_image']:.2f} ms = decode and cluster "
        f"{job['split_1_worker_ms']['decode_and_cluster']:.2f} + write "
        f"{job['split_1_worker_ms']['write']:.2f} + scheduling and start-up "
        f"{job['split_1_worker_ms']['scheduling_and_start']:.2f})",
        f"- corpus mode on 2 workers: {corpus['images_per_second']:.1f} images/s "
        f"(image mode is {job['corpus_over_image_mode_time']:.2f}x as fast)",
        f"- peak memory per worker on the camera set (12 MP JPEGs): "
        f"{', '.join(f'{m:.0f} MB' for m in camera['peak_worker_mb'])}",
    ]
    write_results("latest", results, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
