"""Corpus-mode benchmark: time per stage and peak worker memory as the corpus grows.

Runs corpus mode on 2 single-threaded workers over a small and a four times
larger corpus of small JPEGs, polling every worker process's resident memory,
and compares the two ways the assignment pass can get its pixels (a cache of
resized samples written by the first pass, or decoding the images again).
Results go to ``benchmarks/results/corpus.{md,json}``.

    python benchmarks/corpus.py --images 5000
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from benchtools import make_photo_corpus, run_job_on_fresh_cluster, write_results

from palette_dask import JobSpec


def run_corpus(images: Path, out: Path, corpus_assign: str) -> dict:
    """One corpus job on a fresh 2-worker cluster; stage times and peak memory per worker."""
    spec = JobSpec(
        input=[str(images)],
        output=str(out),
        mode="corpus",
        corpus_k=16,
        corpus_assign=corpus_assign,
        overwrite=True,
    )
    report, peak_mb, _ = run_job_on_fresh_cluster(spec, workers=2)
    corpus = report.corpus
    first_pass = report.elapsed_s - corpus["fit_seconds"] - corpus["assign_seconds"]
    return {
        "images": report.images,
        "corpus_assign": corpus_assign,
        "total_s": report.elapsed_s,
        "first_pass_s": first_pass,
        "fit_s": corpus["fit_seconds"],
        "assign_s": corpus["assign_seconds"],
        "fit_sample": corpus["sample_size"],
        "peak_worker_mb": peak_mb,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="images in the larger corpus")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="palette-corpus-bench-"))
    try:
        large = work / "large"
        large.mkdir()
        make_photo_corpus(large, args.images, megapixels=0.08)
        small = work / "small"
        small.mkdir()
        for path in sorted(large.iterdir())[: args.images // 4]:
            (small / path.name).symlink_to(path)
        runs = [
            run_corpus(small, work / "out-small", "cache"),
            run_corpus(small, work / "out-small-reread", "reread"),
            run_corpus(large, work / "out-large", "cache"),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    small_run, reread_run, large_run = runs
    memory_ratio = max(large_run["peak_worker_mb"]) / max(small_run["peak_worker_mb"])
    results = {
        "runs": runs,
        "peak_worker_memory_large_over_small": memory_ratio,
        "assign_reread_over_cache": reread_run["assign_s"] / small_run["assign_s"],
        "total_reread_over_cache": reread_run["total_s"] / small_run["total_s"],
    }
    lines = [
        "# Corpus mode: 2 workers, 1 thread each, corpus_k=16, ~0.08 MP JPEGs",
        "",
        "| images | assignment from | total s | first pass s | fit s | assign s "
        "| fit sample | peak MB per worker |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *(
            f"| {r['images']} | {r['corpus_assign']} | {r['total_s']:.1f} | "
            f"{r['first_pass_s']:.1f} | {r['fit_s']:.1f} | {r['assign_s']:.1f} | "
            f"{r['fit_sample']:,} | {', '.join(map(str, r['peak_worker_mb']))} |"
            for r in runs
        ),
        "",
        f"- peak worker memory, {large_run['images']} over {small_run['images']} images: "
        f"{memory_ratio:.2f}x",
        f"- assignment pass, re-reading images over reading the cache: "
        f"{results['assign_reread_over_cache']:.2f}x",
    ]
    write_results("corpus", results, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
