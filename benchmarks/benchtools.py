"""Shared by the benchmarks: deterministic corpora made from the photographs that ship
with scikit-image, worker memory polling, jobs on fresh clusters, and result files."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import psutil
from skimage import data
from skimage.transform import resize

RESULTS = Path(__file__).parent / "results"

SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")


def make_photo_corpus(
    folder: Path,
    n_images: int,
    *,
    megapixels: float = 1.0,
    seed: int = 0,
    formats: tuple[str, ...] = ("jpg",),
    prefix: str = "photo",
) -> list[Path]:
    """Images of about ``megapixels`` MP: upscaled, noisy random crops of the sample photographs.

    The light noise keeps them from compressing trivially; ``formats`` are used
    in turn, so ``("png", "jpg")`` gives a mixed set.
    """
    rng = np.random.default_rng(seed)
    photos = [getattr(data, name)()[..., :3] for name in SOURCES]
    side = int(np.sqrt(megapixels * 1e6 / 1.5))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_images):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        ch, cw = rng.integers(h // 2, h + 1), rng.integers(w // 2, w + 1)
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = photo[top : top + ch, left : left + cw].astype(np.float32)
        big = resize(crop, (side, int(side * 1.5)), order=1, preserve_range=True)
        big = np.clip(big + rng.normal(0, 4, big.shape).astype(np.float32), 0, 255)
        ext = formats[i % len(formats)]
        path = folder / f"{prefix}{i:05d}.{ext}"
        iio.imwrite(path, big.astype(np.uint8), **({"quality": 90} if ext == "jpg" else {}))
        paths.append(path)
    return paths


def median_ms(functions: dict, items, repeat: int = 3) -> dict[str, float]:
    """Median over ``items`` of each function's fastest of ``repeat`` tries, run in turns.

    Taking the functions in turns on each item spreads the machine's noise over all of them.
    """
    best = {name: [] for name in functions}
    for item in items:
        times = {name: [] for name in functions}
        for _ in range(repeat):
            for name, function in functions.items():
                t0 = time.perf_counter()
                function(item)
                times[name].append((time.perf_counter() - t0) * 1000)
        for name in functions:
            best[name].append(min(times[name]))
    return {name: statistics.median(values) for name, values in best.items()}


def linked_copies(paths, folder: Path, n_images: int, *, link: bool = True) -> list[Path]:
    """``n_images`` names for ``paths`` in turn: hard links, or copies where links fail.

    ``link=False`` makes every name a file of its own, as in a real corpus: its
    bytes then have pages of their own in the page cache, as a container's do.
    """
    folder.mkdir(parents=True)
    copies = []
    for i in range(n_images):
        source = paths[i % len(paths)]
        copy = folder / f"{i:06d}-{source.name}"
        try:
            if not link:
                raise OSError("a copy is asked for")
            os.link(source, copy)
        except OSError:
            shutil.copyfile(source, copy)
        copies.append(copy)
    return copies


class Meter:
    """Polls the resident memory of the given processes in a background thread, and
    counts the CPU seconds they use while it runs.

    CPU time, unlike wall time, hardly changes when other programs share the
    machine: it compares read paths whose difference is smaller than a shared
    machine's noise in wall time.
    """

    def __init__(self, pids, interval: float = 0.1):
        self._processes = {pid: psutil.Process(pid) for pid in pids}
        self.peak = dict.fromkeys(pids, 0)
        self._cpu_start = dict.fromkeys(pids, 0.0)
        self._cpu_last = dict.fromkeys(pids, 0.0)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _cpu(self, pid: int) -> float:
        times = self._processes[pid].cpu_times()
        return times.user + times.system

    def _read(self) -> None:
        for pid, process in self._processes.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                self.peak[pid] = max(self.peak[pid], process.memory_info().rss)
                self._cpu_last[pid] = self._cpu(pid)

    def _poll(self):
        while not self._stop.is_set():
            self._read()
            self._stop.wait(self._interval)

    def __enter__(self):
        for pid in self._processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                self._cpu_start[pid] = self._cpu_last[pid] = self._cpu(pid)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._read()

    def peak_mb(self) -> list[float]:
        return [round(v / 2**20, 1) for v in self.peak.values()]

    def cpu_seconds(self) -> list[float]:
        """Each process's CPU seconds (user and system) while metered, to its last poll."""
        return [self._cpu_last[pid] - self._cpu_start[pid] for pid in self._processes]


def worker_pids(client) -> list[int]:
    """Process ids of a cluster's workers."""
    return list(client.run(os.getpid).values())


def warm_up() -> None:
    """Import palette-dask and load its compiled loops, as a long-running worker has.

    The remote reads' module is imported too: a worker loads it with its first
    remote read, once among the millions of a long job.
    """
    import palette_dask.http_reads  # noqa: F401
    from palette_dask import extract_palette

    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    extract_palette(iio.imwrite("<bytes>", noise, extension=".jpg"))


def run_job_on_fresh_cluster(spec, workers: int, warm_up_spec=None):
    """Run one job on a new embedded cluster, as ``palette-dask run --workers N`` makes it.

    Returns the job's report, each worker's peak resident memory (MB) and the
    CPU seconds the workers used in all. The workers are warmed up
    (:func:`warm_up`) before the clock starts; ``warm_up_spec``, a small job
    run first on the same cluster, also has them read inputs of the measured
    job's kind, as the workers of a long job have for all but its first images.
    """
    from distributed import Client

    from palette_dask import run_job
    from palette_dask.cluster import embedded_cluster, threads_per_worker

    with (
        embedded_cluster(workers, threads_per_worker(spec), dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        client.run(warm_up)
        if warm_up_spec is not None:
            run_job(warm_up_spec, client=client)
        with Meter(worker_pids(client)) as meter:
            report = run_job(spec, client=client)
    return report, meter.peak_mb(), sum(meter.cpu_seconds())


def machine() -> dict:
    """What the figures were measured on."""
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }


def write_results(name: str, results: dict, lines: list[str]) -> None:
    """Write ``results/NAME.json`` and the Markdown ``lines`` to ``results/NAME.md``; print them."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2))
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def palettes_by_file(output: Path, columns):
    """A dataset's palettes ``columns`` keyed by their image's ``file`` name (a container
    member's own name, else the URI's last part), in a fixed order."""
    from palette_dask import open_dataset

    dataset = open_dataset(str(output))
    images = dataset.images
    loose_names = images["uri"].map(lambda uri: uri.rsplit("/", 1)[-1])
    files = images[["image_id"]].assign(file=images["source_path"].fillna(loose_names))
    palettes = dataset.palettes.merge(files, on="image_id")
    ordered = palettes[["file", *columns]].sort_values(["file", "palette_kind", "rank"])
    return ordered.reset_index(drop=True)
