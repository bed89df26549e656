"""Remote-read benchmark: the job on local files and on the same files over HTTP with latency.

Run with ``make bench`` (or ``python benchmarks/remote.py --images 256 --camera 4
--camera-images 64``
for a quick run). A set of web-like JPEGs (``--distinct`` photographs of about
``--megapixels`` MP made from scikit-image's samples, linked under as many
names as ``--images`` asks) is processed by 2 workers, as ``palette-dask run
--workers 2`` makes them (two task threads each for URLs, one for local files),
each configuration on a fresh embedded cluster with its workers warmed up, the
configurations in turn, ``--runs`` times, the fastest run of each counting: from
local files, then from ``http://127.0.0.1`` served by
:mod:`latency_server` in its own process, which waits 50 ms, then 200 ms,
before answering each request. The input is a ``.txt`` manifest of paths or
URLs, in the same order; every job uses the default JobSpec settings and
partitions. The palettes read over HTTP are compared with the local ones,
image by image (matched by file name). Last, 12-megapixel JPEGs (``--camera``
photographs linked under ``--camera-images`` names, several partitions per
worker) are read over HTTP at 200 ms, for the workers' peak memory.

``--sweep`` instead runs the job at 200 ms with several ``read_concurrency``
values, to choose the default by measurement (``read_per_host`` plays no part:
every image comes from one host, and one host may use every slot).
Results go to ``benchmarks/results/remote.{md,json}`` (``remote_sweep`` with
``--sweep``).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
from benchtools import (
    linked_copies,
    machine,
    make_photo_corpus,
    palettes_by_file,
    run_job_on_fresh_cluster,
    write_results,
)
from latency_server import LatencyServer

from palette_dask import JobSpec
from palette_dask.pipeline import package_versions

WORKERS = 2
LATENCIES_S = (0.05, 0.2)
SWEEP_LATENCY_S = 0.2
SWEEP_CONCURRENCY = (16, 32, 64, 128)
# Every palette column but the image's id, which differs between a path and a URL.
PALETTE_COLUMNS = (
    "palette_kind",
    "rank",
    "r",
    "g",
    "b",
    "hex",
    "lab_l",
    "lab_a",
    "lab_b",
    "proportion",
    "pixel_count",
)


def write_manifest(path: Path, uris: list[str]) -> Path:
    """A ``.txt`` manifest: one URI per line, in order."""
    path.write_text("".join(f"{uri}\n" for uri in uris))
    return path


# Partitions of a fixed size, so that the figures compare across versions.
PARTITION_SIZE = 128


def run(manifest: Path, out: Path, server: LatencyServer | None = None, **spec_options) -> dict:
    """One job on a fresh cluster of ``WORKERS`` workers; its times, memory and requests."""
    spec_options.setdefault("partition_size", PARTITION_SIZE)
    spec = JobSpec(input=[str(manifest)], output=str(out), overwrite=True, **spec_options)
    before = server.requests() if server else 0
    report, peak_mb, _ = run_job_on_fresh_cluster(spec, WORKERS)
    result = {
        "images": report.images,
        "errors": report.errors,
        "partitions": report.partitions,
        "wall_s": report.elapsed_s,
        "images_per_second": report.images / report.elapsed_s,
        "images_per_second_per_worker": report.images / report.elapsed_s / WORKERS,
        "process_ms_per_image": report.process_seconds * 1000 / report.images,
        "write_ms_per_image": report.write_seconds * 1000 / report.images,
        "peak_worker_mb": peak_mb,
    }
    if server:
        result["requests"] = server.requests() - before
        result["requests_per_image"] = result["requests"] / report.images
    return result


def fastest(best: dict | None, measured: dict) -> dict:
    """The faster of two runs of one configuration (``best`` may be None)."""
    if best is not None and best["wall_s"] <= measured["wall_s"]:
        return best
    return measured


def same_palettes(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return len(a) > 0 and a.equals(b)


def main_runs(args, work: Path, job: list[Path]) -> tuple[dict, list[str]]:
    """Local, 50 ms and 200 ms runs, and the camera set at 200 ms."""
    local_manifest = write_manifest(work / "local.txt", [str(p) for p in job])
    local = fastest(None, run(local_manifest, work / "out-local"))
    reference = palettes_by_file(work / "out-local", PALETTE_COLUMNS)
    remote: dict[float, dict] = dict.fromkeys(LATENCIES_S)
    with contextlib.ExitStack() as servers:
        served = {
            latency: servers.enter_context(LatencyServer(job[0].parent, latency=latency))
            for latency in LATENCIES_S
        }
        # Configurations in turn, each run ``--runs`` times: the fastest run of each counts.
        for round_ in range(args.runs):
            if round_:
                local = fastest(local, run(local_manifest, work / "out-local"))
            for latency, server in served.items():
                urls = [server.url(p.name) for p in job]
                manifest = write_manifest(work / f"urls-{latency * 1000:.0f}ms.txt", urls)
                out = work / f"out-{latency * 1000:.0f}ms"
                measured = run(manifest, out, server)
                identical = same_palettes(reference, palettes_by_file(out, PALETTE_COLUMNS))
                shutil.rmtree(out, ignore_errors=True)
                if remote[latency] is not None:
                    identical &= remote[latency]["identical_palettes"]
                remote[latency] = fastest(remote[latency], measured)
                remote[latency]["identical_palettes"] = identical  # in every run
    for latency, measured in remote.items():
        measured["latency_s"] = latency
        measured["over_local"] = measured["wall_s"] / local["wall_s"]
    photos = make_photo_corpus(work / "camera-photos", args.camera, megapixels=12, seed=1)
    camera_files = linked_copies(photos, work / "camera", args.camera_images)
    with LatencyServer(work / "camera", latency=LATENCIES_S[-1]) as server:
        manifest = write_manifest(work / "camera.txt", [server.url(p.name) for p in camera_files])
        camera = run(manifest, work / "out-camera", server)
    camera["file_mb"] = sum(p.stat().st_size for p in camera_files) / len(camera_files) / 2**20
    results = {"local": local, **{f"http_{lat * 1000:.0f}ms": r for lat, r in remote.items()}}
    results["camera_http_200ms"] = camera
    lines = [
        f"# Remote reads: {args.images} JPEGs of ~{args.megapixels:g} MP, {WORKERS} workers, "
        f"partitions of {PARTITION_SIZE}, the fastest of {args.runs} runs each",
        "",
        "| input | wall s | over local | images/s per worker | requests per image "
        "| identical palettes | errors |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| local files | {local['wall_s']:.2f} | 1.00x | "
        f"{local['images_per_second_per_worker']:.1f} | – | – | {local['errors']} |",
    ]
    for latency, r in remote.items():
        lines.append(
            f"| HTTP, {latency * 1000:.0f} ms latency | {r['wall_s']:.2f} | "
            f"{r['over_local']:.2f}x | {r['images_per_second_per_worker']:.1f} | "
            f"{r['requests_per_image']:.2f} | {'yes' if r['identical_palettes'] else 'no'} | "
            f"{r['errors']} |"
        )
    lines += [
        "",
        f"- 12-megapixel JPEGs over HTTP at {LATENCIES_S[-1] * 1000:.0f} ms "
        f"({args.camera_images} images, {camera['file_mb']:.1f} MB each, "
        f"{camera['partitions']} partitions): peak memory per worker "
        f"{', '.join(f'{m:.0f} MB' for m in camera['peak_worker_mb'])}; "
        f"{camera['wall_s']:.2f} s, {camera['requests_per_image']:.2f} requests per image, "
        f"{camera['errors']} errors",
    ]
    return results, lines


def sweep_runs(args, work: Path, job: list[Path]) -> tuple[dict, list[str]]:
    """The job at ``SWEEP_LATENCY_S`` with each ``read_concurrency``."""
    runs = []
    with LatencyServer(job[0].parent, latency=SWEEP_LATENCY_S) as server:
        manifest = write_manifest(work / "urls.txt", [server.url(p.name) for p in job])
        for concurrency in args.concurrency:
            r = run(manifest, work / "out-sweep", server, read_concurrency=concurrency)
            runs.append({"read_concurrency": concurrency, **r})
    lines = [
        f"# Read settings at {SWEEP_LATENCY_S * 1000:.0f} ms latency: {args.images} JPEGs of "
        f"~{args.megapixels:g} MP, {WORKERS} workers, partitions of {PARTITION_SIZE}",
        "",
        "| read_concurrency | wall s | images/s | images/s per worker | requests per image |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        lines.append(
            f"| {r['read_concurrency']} | {r['wall_s']:.2f} | "
            f"{r['images_per_second']:.1f} | {r['images_per_second_per_worker']:.1f} | "
            f"{r['requests_per_image']:.2f} |"
        )
    return {"latency_s": SWEEP_LATENCY_S, "runs": runs}, lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3072, help="images in each job (linked)")
    parser.add_argument("--distinct", type=int, default=64, help="distinct photographs")
    parser.add_argument("--megapixels", type=float, default=0.5, help="size of the photographs")
    parser.add_argument(
        "--runs", type=int, default=2, help="runs of each configuration; the fastest counts"
    )
    parser.add_argument("--camera", type=int, default=8, help="distinct 12-megapixel JPEGs")
    parser.add_argument(
        "--camera-images", type=int, default=512, help="12-megapixel images read over HTTP"
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="run the job at 200 ms with several read_concurrency values",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=list(SWEEP_CONCURRENCY),
        help="read_concurrency values of the sweep",
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="palette-remote-bench-"))
    try:
        photos = make_photo_corpus(work / "photos", args.distinct, megapixels=args.megapixels)
        job = linked_copies(photos, work / "job", args.images)
        if args.sweep:
            measured, lines = sweep_runs(args, work, job)
        else:
            measured, lines = main_runs(args, work, job)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {
        "machine": machine(),
        "versions": package_versions(),
        "images": args.images,
        "distinct": args.distinct,
        "megapixels": args.megapixels,
        "workers": WORKERS,
        "partition_size": PARTITION_SIZE,
        "runs": args.runs,
        **measured,
    }
    write_results("remote_sweep" if args.sweep else "remote", results, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
