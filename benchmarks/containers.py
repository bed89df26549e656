"""Container benchmark: the web set as loose files, as tar shards and as Parquet files of images.

Run with ``make bench`` (or ``python benchmarks/containers.py --images 768 --big-shard-mb 128``
for a quick run). A set of web-like JPEGs (``--distinct`` photographs of about
1 MP made from scikit-image's samples, copied under as many names as
``--images`` asks) is processed by 2 workers, as ``palette-dask run --workers
2`` makes them, each configuration on a fresh embedded cluster whose workers
first process a few other images of the same kind, read the same way (as the
workers of a long job have done for all but its first images), every
configuration in turn, ``--runs`` rounds:

- loose files (a folder of JPEGs);
- the same files packed as WebDataset tar shards of ``--partition-size``
  images, each image beside a caption and a JSON record, as img2dataset
  writes them (a shard is a partition);
- the same files as Parquet files of ``--parquet-rows`` rows in Hugging Face's
  ``struct<bytes, path>`` image column, row groups of 100 rows;
- each of these from disk: the inputs' pages are dropped from the page cache
  (``posix_fadvise(DONTNEED)``) before the job, as a corpus larger than
  memory is read (the other local runs read the page cache);
- each of these over HTTP from ``http://127.0.0.1``, served by
  :mod:`latency_server` in its own process, which waits ``LATENCY_S`` before
  answering each request, as a distant object store does: the loose files as a
  manifest of their URLs, the containers read by byte ranges.

Every job has partitions of ``--partition-size`` images (two row groups of
Parquet rows, a tar shard), the same images in each, so that the
configurations differ only in how the images are read.

Each configuration's wall time, its processing time per image (in the
task's turn to decode, reads included), the part of that spent reading (or
waiting for bytes on their way) and its workers' CPU time per image are
compared with the loose files read the same way in the same round (the
median of the rounds' ratios counts; each round takes the inputs of a read
mode in another order). At a few thousand images the wall time also depends
on how the last partitions fall on the two workers and on what else the
machine runs, while the processing, read and CPU times are what a read path
costs however large the job. The read time is the one measure of the read
path alone: the others are mostly decoding, the same in every configuration,
and move by a few per cent between runs when other programs share the
machine. Each configuration's palettes are compared with the local loose
files', image by image (matched by file name: a tar member's name, a Parquet
row's ``path``). Last, two shards of about
``--big-shard-mb`` MB each are processed, for the workers' peak memory.
Results go to ``benchmarks/results/containers.{md,json}``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tarfile
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
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
# Each HTTP request waits this long for its answer, as from a distant object store.
LATENCY_S = 0.05
ROW_GROUP_ROWS = 100
# Images of each kind every job's workers process before the measured job: a
# worker's first container read pays one-off costs (Arrow's buffers and threads)
# that a long job pays once among millions of images.
WARM_UP_IMAGES = 16
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
PALETTE_COLUMNS = ("palette_kind", "rank", "hex", "proportion", "pixel_count")
# The measures compared with the loose files': the job's wall time, the time in
# the tasks' turn to decode (reads included), the part of it spent reading, and
# the CPU the workers spent.
RATIOS = {
    "wall": "wall_s",
    "processing": "process_ms_per_image",
    "reads": "read_ms_per_image",
    "cpu": "worker_cpu_ms_per_image",
}


def add_member(tar: tarfile.TarFile, name: str, body: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(body)
    tar.addfile(info, io.BytesIO(body))


def pack_shards(paths: list[Path], folder: Path, per_shard: int) -> list[Path]:
    """WebDataset shards of ``per_shard`` images, each with a caption and a JSON record."""
    folder.mkdir(parents=True)
    shards = []
    for start in range(0, len(paths), per_shard):
        shard = folder / f"shard-{start // per_shard:06d}.tar"
        with tarfile.open(shard, "w") as tar:
            for path in paths[start : start + per_shard]:
                key = path.stem
                # The bytes, not the file: the files are hard links, which tar stores as links.
                add_member(tar, path.name, path.read_bytes())
                add_member(tar, f"{key}.txt", f"a photograph, {key}".encode())
                add_member(tar, f"{key}.json", json.dumps({"key": key}).encode())
        shards.append(shard)
    return shards


def pack_parquet(paths: list[Path], folder: Path, per_file: int) -> list[Path]:
    """Parquet files of ``per_file`` images in a ``struct<bytes, path>`` column, row groups of
    :data:`ROW_GROUP_ROWS` rows, written a row group at a time."""
    folder.mkdir(parents=True)
    files = []
    schema = pa.schema([("image", IMAGE_TYPE), ("caption", pa.string())])
    for start in range(0, len(paths), per_file):
        target = folder / f"train-{start // per_file:05d}.parquet"
        chosen = paths[start : start + per_file]
        with pq.ParquetWriter(target, schema) as writer:
            for first in range(0, len(chosen), ROW_GROUP_ROWS):
                group = chosen[first : first + ROW_GROUP_ROWS]
                cells = [{"bytes": p.read_bytes(), "path": p.name} for p in group]
                captions = [f"a photograph, {p.stem}" for p in group]
                writer.write_table(
                    pa.table({"image": pa.array(cells, IMAGE_TYPE), "caption": captions}, schema)
                )
        files.append(target)
    return files


def big_shards(photos: list[Path], folder: Path, megabytes: int, count: int = 2) -> list[Path]:
    """``count`` shards of about ``megabytes`` MB each, of the photographs under many names."""
    folder.mkdir(parents=True)
    bodies = [photo.read_bytes() for photo in photos]
    shards = []
    for shard_index in range(count):
        shard = folder / f"big-{shard_index:06d}.tar"
        with tarfile.open(shard, "w") as tar:
            i = written = 0
            while written < megabytes * 2**20:
                body = bodies[i % len(bodies)]
                add_member(tar, f"{shard_index:03d}{i:07d}.jpg", body)
                written += len(body)
                i += 1
        shards.append(shard)
    return shards


def rotated(items: list, turn: int) -> list:
    return items[turn:] + items[:turn]


def run(inputs: list, out: Path, warm_inputs: list | None = None, **spec_options) -> dict:
    """One job on a fresh cluster of ``WORKERS`` workers: its time and memory.

    ``warm_inputs``, a few images of the same kind, are processed first on the
    same cluster (not measured), as by the workers of a long job.
    """
    spec = JobSpec(input=[str(p) for p in inputs], output=str(out), overwrite=True, **spec_options)
    warm_up_spec = None
    if warm_inputs:
        warm_up_spec = JobSpec(
            input=[str(p) for p in warm_inputs],
            output=f"{out}-warm-up",
            overwrite=True,
            partition_size=WARM_UP_IMAGES // WORKERS,
        )
    report, peak_mb, worker_cpu_s = run_job_on_fresh_cluster(spec, WORKERS, warm_up_spec)
    return {
        "images": report.images,
        "errors": report.errors,
        "partitions": report.partitions,
        "wall_s": report.elapsed_s,
        "images_per_second": report.images / report.elapsed_s,
        "process_ms_per_image": report.process_seconds * 1000 / report.images,
        "read_ms_per_image": report.read_seconds * 1000 / report.images,
        "write_ms_per_image": report.write_seconds * 1000 / report.images,
        "worker_cpu_ms_per_image": worker_cpu_s * 1000 / report.images,
        "peak_worker_mb": peak_mb,
    }


def over_http(name: str) -> str:
    return f"{name}, over HTTP at {LATENCY_S * 1000:.0f} ms"


def from_disk(name: str) -> str:
    return f"{name}, from disk"


def drop_from_page_cache(paths: list[Path]) -> None:
    """Evict the files' pages from the page cache, so that the next job reads them from disk.

    A corpus of millions of images is never in memory; this is how its reads go.
    """
    files = [f for p in paths for f in (sorted(p.rglob("*")) if p.is_dir() else [p])]
    for path in files:
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)  # dirty pages cannot be dropped
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def served_inputs(server: LatencyServer, paths: list[Path], work: Path) -> list[str]:
    """The job inputs naming ``paths`` on ``server``: loose files (a folder) as a manifest
    of their URLs, containers by their URLs."""
    if not paths[0].is_dir():
        return [server.url(p.name) for p in paths]
    manifest = work / f"urls-{paths[0].name}.txt"
    names = sorted(p.name for p in paths[0].iterdir())
    manifest.write_text("".join(f"{server.url(name)}\n" for name in names))
    return [str(manifest)]


def run_over_http(
    paths: list[Path], warm_paths: list[Path], work: Path, out: Path, **spec_options
) -> dict:
    """:func:`run` with the inputs (and the warm-up's) served over HTTP, each folder by a
    :class:`LatencyServer`."""

    def folder(paths: list[Path]) -> Path:
        return paths[0] if paths[0].is_dir() else paths[0].parent

    with (
        LatencyServer(folder(paths), latency=LATENCY_S) as server,
        LatencyServer(folder(warm_paths), latency=LATENCY_S) as warm_server,
    ):
        inputs = served_inputs(server, paths, work)
        warm_inputs = served_inputs(warm_server, warm_paths, work / "warm-up")
        before = server.requests()
        measured = run(inputs, out, warm_inputs, **spec_options)
        measured["requests_per_image"] = (server.requests() - before) / measured["images"]
    return measured


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3072, help="images in each job")
    parser.add_argument("--distinct", type=int, default=48, help="distinct photographs")
    parser.add_argument(
        "--partition-size", type=int, default=200, help="images per partition and per tar shard"
    )
    parser.add_argument("--parquet-rows", type=int, default=600, help="images per Parquet file")
    parser.add_argument("--big-shard-mb", type=int, default=1024, help="size of the big shards")
    parser.add_argument("--runs", type=int, default=5, help="rounds of every configuration")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="palette-bench-containers-"))
    try:
        photos = make_photo_corpus(work / "photos", args.distinct, megapixels=1, seed=2)
        # Copies, not links: the loose files' bytes have their own pages, as a container's do.
        loose = linked_copies(photos, work / "loose", args.images, link=False)
        loose_warm_up = linked_copies(
            photos, work / "warm-up" / "loose", WARM_UP_IMAGES, link=False
        )
        per_container = WARM_UP_IMAGES // WORKERS
        tar_name = f"tar shards of {args.partition_size}"
        parquet_name = f"Parquet, {args.parquet_rows} rows a file, row groups of {ROW_GROUP_ROWS}"
        inputs = {
            "loose files": [work / "loose"],
            tar_name: pack_shards(loose, work / "tar", args.partition_size),
            parquet_name: pack_parquet(loose, work / "parquet", args.parquet_rows),
        }
        warm_up = {
            "loose files": [work / "warm-up" / "loose"],
            tar_name: pack_shards(loose_warm_up, work / "warm-up" / "tar", per_container),
            parquet_name: pack_parquet(loose_warm_up, work / "warm-up" / "parquet", per_container),
        }
        cold = {from_disk(name): paths for name, paths in inputs.items()}
        served = {over_http(name): paths for name, paths in inputs.items()}
        warm_up |= {from_disk(name): paths for name, paths in warm_up.items()}
        warm_up |= {over_http(name): warm_up[name] for name in inputs}
        # Each configuration against the loose files read the same way.
        baseline = {name: "loose files" for name in inputs}
        baseline |= {name: from_disk("loose files") for name in cold}
        baseline |= {name: over_http("loose files") for name in served}
        groups = [list(inputs.items()), list(cold.items()), list(served.items())]
        best: dict[str, dict] = {}
        ratios = {metric: {name: [] for name in baseline} for metric in RATIOS}
        identical: dict[str, bool] = dict.fromkeys(baseline, True)
        reference = None
        for round_index in range(args.runs):
            measured_now = {}
            # Each round takes the inputs of a read mode in another order, so that
            # none is always the first or the last job of its mode.
            turn = round_index % len(inputs)
            for name, paths in [item for group in groups for item in rotated(group, turn)]:
                out = work / "out"
                options = {"partition_size": args.partition_size}
                if name in cold:
                    drop_from_page_cache(paths)
                measured = (
                    run_over_http(paths, warm_up[name], work, out, **options)
                    if name in served
                    else run(paths, out, warm_up[name], **options)
                )
                palettes = palettes_by_file(out, PALETTE_COLUMNS)
                if reference is None:
                    reference = palettes
                identical[name] &= len(palettes) > 0 and palettes.equals(reference)
                shutil.rmtree(out, ignore_errors=True)
                measured_now[name] = measured
                if name not in best or measured["wall_s"] < best[name]["wall_s"]:
                    best[name] = measured
            # Each round's ratios: a slow spell of the machine slows a whole round.
            for metric, key in RATIOS.items():
                for name in baseline:
                    ratio = measured_now[name][key] / measured_now[baseline[name]][key]
                    ratios[metric][name].append(ratio)
        for name, measured in best.items():
            for metric in RATIOS:
                measured[f"{metric}_over_loose_by_round"] = ratios[metric][name]
                measured[f"{metric}_over_loose"] = statistics.median(ratios[metric][name])
            measured["identical_palettes"] = identical[name]
        shutil.rmtree(work / "tar")
        shutil.rmtree(work / "parquet")
        shards = big_shards(photos, work / "big", args.big_shard_mb)
        big = run(shards, work / "out-big")
        big["shard_mb"] = [round(s.stat().st_size / 2**20) for s in shards]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {
        "machine": machine(),
        "versions": package_versions(),
        "images": args.images,
        "runs": best,
        "big_shards": big,
    }
    lines = [
        f"# Containers: {args.images} JPEGs of ~1 MP, {WORKERS} workers, partitions of "
        f"{args.partition_size} images, {args.runs} rounds",
        "",
        "The fastest run of each input (wall time, and per image: the time in the tasks' "
        "turn to decode, reads included, the part of it spent reading or waiting for "
        "bytes, and the workers' CPU). Ratios to the loose files "
        "read the same way: the median over the rounds of each round's ratio (the rounds' "
        "ratios in brackets). CPU time hardly changes when other programs share the "
        "machine; wall time does.",
        "",
        "| input | partitions | wall s | over loose | processing ms/image | over loose "
        "| reads ms/image | over loose | worker CPU ms/image | over loose "
        "| requests per image | identical palettes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in best.items():
        requests = f"{r['requests_per_image']:.3f}" if "requests_per_image" in r else "–"
        cells = [name, str(r["partitions"])]
        for metric, key in RATIOS.items():
            by_round = ", ".join(f"{x:.2f}" for x in r[f"{metric}_over_loose_by_round"])
            cells += [f"{r[key]:.2f}", f"{r[f'{metric}_over_loose']:.2f}x ({by_round})"]
        cells += [requests, "yes" if r["identical_palettes"] else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"- two tar shards of {' and '.join(f'{mb} MB' for mb in big['shard_mb'])} "
        f"({big['images']} images, one partition each): peak memory per worker "
        f"{', '.join(f'{m:.0f} MB' for m in big['peak_worker_mb'])}; "
        f"{big['wall_s']:.2f} s, {big['errors']} errors",
    ]
    write_results("containers", results, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
