"""Worker memory on the largest default partition: 10,000 camera JPEGs of about 12 MP.

Run with ``make bench-scale`` (about 8 minutes of it), or ``python
benchmarks/camera_partition.py --images 1000`` for a quick run. ``--distinct``
JPEGs of about 12 MP are made from scikit-image's samples and linked under
``--images`` names; one job on a fresh embedded cluster of one worker cuts them
into one partition of ``AUTO_PARTITION_IMAGES`` (10,000), the largest that
``partition_size = "auto"`` makes. The worker's resident memory is polled every
0.1 s. Results go to ``benchmarks/results/camera_partition.{md,json}``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from benchtools import (
    linked_copies,
    machine,
    make_photo_corpus,
    run_job_on_fresh_cluster,
    write_results,
)

from palette_dask import JobSpec
from palette_dask.pipeline import package_versions
from palette_dask.plan import AUTO_PARTITION_IMAGES


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=AUTO_PARTITION_IMAGES)
    parser.add_argument("--distinct", type=int, default=6, help="distinct photographs")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="palette-bench-camera-"))
    try:
        photos = make_photo_corpus(work / "photos", args.distinct, megapixels=12, seed=1)
        names = linked_copies(photos, work / "images", args.images)
        spec = JobSpec(
            input=[str(work / "images")],
            output=str(work / "out"),
            partition_size=AUTO_PARTITION_IMAGES,
            overwrite=True,
        )
        report, peak_mb, _ = run_job_on_fresh_cluster(spec, workers=1)
        megabytes = sum(p.stat().st_size for p in photos) / len(photos) / 2**20
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {
        "machine": machine(),
        "versions": package_versions(),
        "images": len(names),
        "file_mb": megabytes,
        "partitions": report.partitions,
        "errors": report.errors,
        "wall_s": report.elapsed_s,
        "peak_worker_mb": peak_mb,
    }
    lines = [
        f"# The largest default partition: {len(names):,} JPEGs of about 12 MP "
        f"({megabytes:.1f} MB each), one worker",
        "",
        f"- {report.partitions} partition(s), {report.errors} errors, {report.elapsed_s:.0f} s; "
        f"peak worker memory {peak_mb[0]:.0f} MB",
    ]
    write_results("camera_partition", results, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
