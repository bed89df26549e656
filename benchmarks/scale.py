"""Scale benchmark: a million images through the job, the client and the scheduler kept flat.

Run with ``make bench-scale`` (about 19 minutes of it here; not part of ``make bench``), or
``python benchmarks/scale.py --sizes 20000 100000`` for a quick run. ``--distinct``
small JPEGs of ``--pixels`` pixels a side are generated, and every URI of the
manifests is a hard link to one of them under its own name (a distinct image for
the job, as in a web corpus). For each size in ``--sizes``:

- a real ``dask scheduler`` and ``--workers`` single-threaded ``dask worker``
  processes start on 127.0.0.1;
- ``palette-dask run -i MANIFEST -o OUT --scheduler-file …`` runs as a process of
  its own with the default settings (``partition_size = "auto"``): its peak
  resident memory is polled every 0.1 s, its CPU seconds come from the
  operating system when it exits (``wait4``); the scheduler's and the
  workers' CPU seconds are read before and after the job;
- the files of each table are counted, and the README's DuckDB query
  (images with a dark colour over 30 %) is timed on the dataset as written
  and on the same rows in files of 128 images, the layout of partitions of
  128 (the median of ``--repeat`` runs each).

Every size but the largest runs ``--smaller-runs`` times, and the run of
median images/s is reported beside the others' figures: a job of 10⁵ images
lasts a minute, short enough for a busy moment of the machine to move it.

Results go to ``benchmarks/results/scale.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import psutil
import pyarrow.parquet as pq
from benchtools import Meter, machine, write_results
from distributed import Client
from PIL import Image

from palette_dask.pipeline import package_versions

BIN = Path(sys.executable).parent
TABLES = ("images", "palettes", "assignments")
OLD_PARTITION_SIZE = 128
DARK_QUERY = """
    SELECT i.uri, p.hex, p.proportion
    FROM '{out}/palettes/*.parquet' p JOIN '{out}/images/*.parquet' i USING (image_id)
    WHERE p.lab_l < 20 AND p.proportion > 0.3
    ORDER BY p.proportion DESC
"""


def make_images(folder: Path, distinct: int, pixels: int, count: int) -> list[Path]:
    """``count`` names, each a hard link to one of ``distinct`` small JPEGs of noisy blocks."""
    originals = folder / "originals"
    originals.mkdir(parents=True)
    rng = np.random.default_rng(0)
    bodies = []
    for i in range(distinct):
        blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(blocks).resize((pixels, pixels), Image.Resampling.NEAREST)
        path = originals / f"{i:04d}.jpg"
        image.save(path, quality=90)
        bodies.append(path)
    linked = folder / "images"
    linked.mkdir()
    paths = []
    for i in range(count):
        # Folders of 10,000 names, as a crawler's output is laid out.
        sub = linked / f"{i // 10_000:05d}"
        if i % 10_000 == 0:
            sub.mkdir()
        path = sub / f"{i:09d}.jpg"
        os.link(bodies[i % distinct], path)
        paths.append(path)
    return paths


def start_cluster(folder: Path, workers: int) -> tuple[list[subprocess.Popen], Path]:
    """A ``dask scheduler`` and ``workers`` single-threaded ``dask worker`` processes."""
    scheduler_file = folder / "scheduler.json"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": folder}
    common = ["--no-dashboard", "--host", "127.0.0.1"]
    processes = [
        subprocess.Popen(
            [
                str(BIN / "dask"),
                "scheduler",
                "--port",
                "0",
                "--scheduler-file",
                str(scheduler_file),
                *common,
            ],
            **quiet,
        )
    ]
    deadline = time.monotonic() + 60
    while not scheduler_file.exists():
        if time.monotonic() > deadline or processes[0].poll() is not None:
            raise RuntimeError("the scheduler did not start")
        time.sleep(0.1)
    for _ in range(workers):
        worker = [str(BIN / "dask"), "worker", "--scheduler-file", str(scheduler_file)]
        processes.append(subprocess.Popen([*worker, "--nthreads", "1", *common], **quiet))
    return processes, scheduler_file


def run_size(folder: Path, paths: list[Path], workers: int) -> dict:
    """One job over ``paths`` on a fresh external cluster, in ``folder``: its costs at
    the client, scheduler and workers, and its files."""
    folder.mkdir()
    manifest = folder / "manifest.txt"
    manifest.write_text("".join(f"{p}\n" for p in paths))
    out = folder / "out"
    processes, scheduler_file = start_cluster(folder, workers)
    try:
        # Every worker connects before the job counts them.
        with Client(scheduler_file=str(scheduler_file), timeout=30) as probe:
            probe.wait_for_workers(workers, timeout=60)
        worker_pids = [
            child.pid
            for p in processes[1:]
            for child in psutil.Process(p.pid).children(recursive=True)
        ] + [p.pid for p in processes[1:]]
        started = time.perf_counter()
        log = folder / "client.log"
        client = subprocess.Popen(
            [
                str(BIN / "palette-dask"),
                "run",
                "-i",
                str(manifest),
                "-o",
                str(out),
                "--scheduler-file",
                str(scheduler_file),
                "--no-progress",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )
        # Polled: the peak the kernel reports at exit counts the pages this process
        # held when it started the client.
        with Meter([client.pid, processes[0].pid, *worker_pids]) as meter:
            _, status, usage = os.wait4(client.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"the job failed: {log.read_text()[-2000:]}")
        cpu = meter.cpu_seconds()
        scheduler_cpu, worker_cpu = cpu[1], sum(cpu[2:])
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=60)
    record = json.loads((out / "_job.json").read_text())
    n = record["counts"]["images"]
    return {
        "images": n,
        "errors": record["counts"]["errors"],
        "partition_size": record["partitioning"]["partition_size"],
        "partitions": record["counts"]["partitions"],
        "job_s": record["elapsed_s"],
        "wall_s": wall,
        "images_per_second": n / record["elapsed_s"],
        "client_peak_mb": meter.peak_mb()[0],
        "client_cpu_ms_per_image": (usage.ru_utime + usage.ru_stime) * 1000 / n,
        "scheduler_cpu_ms_per_image": scheduler_cpu * 1000 / n,
        "worker_cpu_ms_per_image": worker_cpu * 1000 / n,
        "files_per_table": {t: len(list((out / t).glob("*.parquet"))) for t in TABLES},
        "bytes_per_image": {
            t: sum(f.stat().st_size for f in (out / t).glob("*.parquet")) / n for t in TABLES
        },
        "scheduler_cpu_ms_per_partition": scheduler_cpu * 1000 / record["counts"]["partitions"],
        # What the client holds, and the scheduler receives, for each partition in flight.
        "partition_graph_bytes": len(
            pickle.dumps(
                [
                    (i, str(p))
                    for i, p in enumerate(paths[: record["partitioning"]["partition_size"]])
                ]
            )
        ),
        "output": str(out),
    }


def median_run(tries: list[dict]) -> dict:
    """The run of median throughput, with every run's throughput and client peak."""
    ranked = sorted(tries, key=lambda r: r["images_per_second"])
    return {
        **ranked[len(ranked) // 2],
        "images_per_second_runs": [r["images_per_second"] for r in tries],
        "client_peak_mb_runs": [r["client_peak_mb"] for r in tries],
    }


def as_small_files(out: Path, target: Path, rows: int) -> None:
    """The dataset's tables in files of ``rows`` images, as partitions of that size write them."""
    for table in ("images", "palettes"):
        (target / table).mkdir(parents=True)
        whole = pq.read_table(out / table)
        ids = whole.column("image_id").to_numpy(zero_copy_only=False)
        # A file per run of `rows` images: cut where the image changes.
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])[::rows]
        ends = [*starts[1:], len(ids)]
        for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
            pq.write_table(
                whole.slice(start, end - start), target / table / f"part-{i:09d}.parquet"
            )


def query_seconds(out: Path, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        duckdb.sql(DARK_QUERY.format(out=out)).fetchall()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--distinct", type=int, default=256, help="distinct images")
    parser.add_argument("--pixels", type=int, default=32, help="side of each image")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each DuckDB query")
    parser.add_argument(
        "--smaller-runs", type=int, default=3, help="jobs of each size but the largest"
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="palette-bench-scale-"))
    try:
        paths = make_images(work / "corpus", args.distinct, args.pixels, max(args.sizes))
        runs = {}
        for size in args.sizes:
            runs[size] = median_run(
                [
                    run_size(work / f"run-{size}-{i}", paths[:size], args.workers)
                    for i in range(1 if size == max(args.sizes) else args.smaller_runs)
                ]
            )
            print(json.dumps(runs[size]), flush=True)
        largest = Path(runs[max(args.sizes)]["output"])
        old = work / "old-layout"
        as_small_files(largest, old, OLD_PARTITION_SIZE)
        query = {
            "files_per_table_new": runs[max(args.sizes)]["files_per_table"]["palettes"],
            "files_per_table_old": len(list((old / "palettes").iterdir())),
            "new_layout_s": query_seconds(largest, args.repeat),
            "old_layout_s": query_seconds(old, args.repeat),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    smallest, biggest = runs[min(args.sizes)], runs[max(args.sizes)]
    results = {
        "machine": machine(),
        "versions": package_versions(),
        "pixels": args.pixels,
        "workers": args.workers,
        "runs": {
            str(size): {k: v for k, v in r.items() if k != "output"} for size, r in runs.items()
        },
        "client_peak_ratio": biggest["client_peak_mb"] / smallest["client_peak_mb"],
        "throughput_ratio": biggest["images_per_second"] / smallest["images_per_second"],
        "duckdb": query,
    }
    lines = [
        f"# Scale: tiny JPEGs ({args.pixels}×{args.pixels}) from a manifest, {args.workers} "
        "workers of a `dask scheduler`, default settings",
        "",
        "| images | partitions of | partitions | files per table | job s | images/s "
        "| client peak MB | client CPU ms/image | scheduler CPU ms/image | worker CPU ms/image |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size, r in runs.items():
        lines.append(
            f"| {size:,} | {r['partition_size']:,} | {r['partitions']:,} | "
            f"{max(r['files_per_table'].values())} | {r['job_s']:.1f} | "
            f"{r['images_per_second']:.0f} | {r['client_peak_mb']:.0f} | "
            f"{r['client_cpu_ms_per_image']:.3f} | {r['scheduler_cpu_ms_per_image']:.4f} | "
            f"{r['worker_cpu_ms_per_image']:.3f} |"
        )
    for size, r in runs.items():
        if len(r["images_per_second_runs"]) > 1:
            lines.append(
                f"\n{size:,} images ran {len(r['images_per_second_runs'])} times; the row is "
                "the run of median images/s. Images/s: "
                + ", ".join(f"{v:.0f}" for v in r["images_per_second_runs"])
                + "; client peak MB: "
                + ", ".join(f"{v:.0f}" for v in r["client_peak_mb_runs"])
            )
    bytes_per_image = biggest["bytes_per_image"]
    lines += [
        "",
        "- bytes per image: "
        + ", ".join(f"{t} {b:.0f}" for t, b in bytes_per_image.items())
        + f"; scheduler CPU per partition {biggest['scheduler_cpu_ms_per_partition']:.1f} ms; "
        f"a partition's URIs pickled: {biggest['partition_graph_bytes'] / 2**20:.2f} MB",
        f"- client peak memory, {max(args.sizes):,} over {min(args.sizes):,} images: "
        f"{results['client_peak_ratio']:.2f}x; images/s: {results['throughput_ratio']:.2f}x",
        f"- the README's DuckDB query on the {max(args.sizes):,} images: "
        f"{query['new_layout_s']:.2f} s over {query['files_per_table_new']} files a table, "
        f"{query['old_layout_s']:.2f} s over {query['files_per_table_old']} files of "
        f"{OLD_PARTITION_SIZE} images (median of {args.repeat})",
    ]
    write_results("scale", results, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
