"""Search service benchmark: many clients at once against ``palette-dask serve``.

Writes a synthetic dataset of ``--images`` images in the project's schema (as
``benchmarks/search.py`` does), indexes it, starts ``palette-dask serve`` on a
free port of 127.0.0.1, and runs ``--clients`` concurrent clients for
``--seconds`` seconds, each sending request after request: colour queries
(one or two colours drawn from a fixed list, weighted or not), likeness
queries and image details, in a fixed mix. Reports requests per second, the
latency percentiles of each kind and in all, and every error (any answer
other than 200, or a failed connection). Results go to
``benchmarks/results/serve.{md,json}``.

    python benchmarks/serve.py --images 1000000 --clients 16 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np
from benchtools import write_results
from search import synthetic_arrays, write_tables

COLORS = ["#1565a1", "#df8c18", "#c81e28", "#28a046", "#808080", "#f0e0c0", "#202830", "#7a3fa0"]


def start_service(folder: Path) -> tuple[subprocess.Popen, str]:
    command = [
        str(Path(sys.executable).parent / "palette-dask"),
        "serve",
        str(folder),
        "--port",
        "0",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    line = ""
    while "serving" not in line:
        line = process.stderr.readline()
        if process.poll() is not None:
            raise RuntimeError(f"the service did not start: {line}")
    return process, line.split(" at ")[-1].strip().rstrip("/")


def requests_of(rng: random.Random, ids: list[str]):
    """An endless mix of requests: ``(kind, path)``."""
    while True:
        draw = rng.random()
        if draw < 0.5:
            colors = rng.sample(COLORS, rng.choice([1, 2]))
            query = "&".join(f"color=%23{c[1:]}" for c in colors)
            if len(colors) == 2 and rng.random() < 0.5:
                query += "&weight=60&weight=40"
            yield "colour", f"/api/search?{query}&top=20"
        elif draw < 0.8:
            yield "like", f"/api/like/{rng.choice(ids)}?top=20"
        else:
            yield "image", f"/api/images/{rng.choice(ids)}"


async def load(url: str, ids: list[str], clients: int, seconds: float) -> dict:
    """``clients`` clients sending requests for ``seconds`` seconds; their latencies."""
    latencies: dict[str, list[float]] = {"colour": [], "like": [], "image": []}
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=60)

    async def client(number: int) -> None:
        requests = requests_of(random.Random(number), ids)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < deadline:
                kind, path = next(requests)
                t0 = time.perf_counter()
                try:
                    async with session.get(url + path) as answer:
                        await answer.read()
                        if answer.status != 200:
                            errors.append(f"{answer.status} {path}")
                            continue
                except (aiohttp.ClientError, asyncio.TimeoutError) as failure:
                    errors.append(f"{type(failure).__name__} {path}")
                    continue
                latencies[kind].append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    return {"elapsed_s": time.perf_counter() - t0, "latencies": latencies, "errors": errors}


def percentiles(values: list[float]) -> dict:
    ms = np.asarray(values) * 1000
    return {f"p{p}_ms": float(np.percentile(ms, p)) for p in (50, 95, 99)} | {"requests": len(ms)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="palette-serve-bench-"))
    try:
        folder = work / "dataset"
        arrays = synthetic_arrays(args.images)
        write_tables(folder, arrays)
        command = Path(sys.executable).parent / "palette-dask"
        subprocess.run([str(command), "index", str(folder)], check=True, capture_output=True)
        ids = [i.decode() for i in arrays.image_id[:: max(1, args.images // 1000)].tolist()]
        process, url = start_service(folder)
        try:
            found = asyncio.run(load(url, ids, args.clients, args.seconds))
        finally:
            process.terminate()
            process.wait(timeout=30)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    every = [t for times in found["latencies"].values() for t in times]
    by_kind = {kind: percentiles(times) for kind, times in found["latencies"].items() if times}
    results = {
        "images": args.images,
        "clients": args.clients,
        "seconds": found["elapsed_s"],
        "requests_per_s": len(every) / found["elapsed_s"],
        "errors": len(found["errors"]),
        "first_errors": found["errors"][:10],
        "all": percentiles(every),
        **by_kind,
    }
    rows = [("all", results["all"]), *by_kind.items()]
    lines = [
        f"# Search service: {args.clients} clients for {args.seconds:.0f} s, "
        f"{args.images:,} images (127.0.0.1)",
        "",
        f"{results['requests_per_s']:.0f} requests/s, {results['errors']} errors.",
        "",
        "| requests | count | p50 | p95 | p99 |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {kind} | {r['requests']:,} | {r['p50_ms']:.1f} ms | {r['p95_ms']:.1f} ms "
            f"| {r['p99_ms']:.1f} ms |"
            for kind, r in rows
        ),
    ]
    write_results("serve", results, lines)
    return 0 if not found["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
