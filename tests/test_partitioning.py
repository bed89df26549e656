"""Partitions sized for the job: ``partition_size = "auto"``, waves, resuming with the same cut."""

import json
import os

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from jobtools import assert_same_dataset, read_table
from PIL import Image

from palette_dask import JobSpec, plan, run_job
from palette_dask.cli import main
from palette_dask.plan import (
    AUTO_PARTITION_IMAGES,
    InputPlan,
    auto_partition_size,
    partitions_per_wave,
)
from palette_dask.state import DatasetState, IdSet
from palette_dask.tables import part_name
from palette_dask.tasks import ROWS_PER_WRITE

TABLES = ("images", "palettes", "assignments")


def files_per_table(out) -> dict[str, int]:
    return {table: len(list((out / table).iterdir())) for table in TABLES}


@pytest.fixture(scope="module")
def photos(sample_dir) -> list:
    return sorted(p for p in sample_dir.iterdir() if p.is_file())


def test_the_sample_photographs_still_run_as_two_partitions_per_worker(photos, client2, tmp_path):
    out = tmp_path / "out"
    report = run_job(JobSpec(input=[str(p) for p in photos], output=str(out)), client=client2)
    assert report.images == len(photos) == 9
    # 9 images on 2 workers: partitions of 9 // (2 * 2) = 2 images, the last of 1.
    assert report.partitions == 5
    assert files_per_table(out) == dict.fromkeys(TABLES, 5)
    record = json.loads((out / "_job.json").read_text())
    assert record["spec"]["partition_size"] == "auto"
    assert record["partitioning"]["partition_size"] == 2
    assert (record["partitioning"]["workers"], record["partitioning"]["threads"]) == (2, 2)


def test_many_tiny_images_make_partitions_of_the_largest_size(tmp_path, client1, monkeypatch):
    """Every URI a distinct image (hard links of a few small pictures, as a big corpus has):
    on one worker, more images than two partitions of the largest size hold.

    The largest size is lowered to 1,000 images here, each partition still
    written in several batches; its default is checked on the plan alone
    (:func:`test_auto_partitions_follow_the_new_images_and_the_workers`).
    """
    monkeypatch.setattr(plan, "AUTO_PARTITION_IMAGES", 1_000)
    largest = plan.AUTO_PARTITION_IMAGES
    assert largest > 2 * ROWS_PER_WRITE
    folder = tmp_path / "tiny"
    folder.mkdir()
    colours = [(200, 30, 40), (40, 160, 70), (30, 60, 200), (240, 220, 60)]
    originals = []
    for i, colour in enumerate(colours):
        path = tmp_path / f"tiny-{i}.png"
        Image.new("RGB", (4, 4), colour).save(path)
        originals.append(path)
    n_images = 2 * largest + largest // 4
    for i in range(n_images):
        os.link(originals[i % len(originals)], folder / f"{i:06d}.png")
    out = tmp_path / "out"
    report = run_job(JobSpec(input=[str(folder)], output=str(out)), client=client1)
    assert (report.images, report.errors) == (n_images, 0)
    # Partitions of the largest size, the last one smaller: one file each per table.
    assert report.partitions == 3
    assert files_per_table(out) == dict.fromkeys(TABLES, 3)
    images = read_table(out, "images")
    assert images.num_rows == n_images and len(set(images.column("image_id").to_pylist())) == (
        n_images
    )
    rows_per_file = sorted(pq.read_metadata(f).num_rows for f in (out / "images").iterdir())
    assert rows_per_file == [n_images - 2 * largest, *[largest] * 2]


def test_auto_partitions_follow_the_new_images_and_the_workers(tmp_path):
    manifest = tmp_path / "urls.txt"
    manifest.write_text("".join(f"https://127.0.0.1:9/{i}.jpg\n" for i in range(60_000)))
    spec = JobSpec(input=[str(manifest)], output=str(tmp_path / "out"))
    for workers, threads, sizes in [
        (2, 4, [10_000] * 6),  # at most 10,000 images a partition
        (8, 8, [3_750] * 16),  # at least two partitions per worker
    ]:
        plan = InputPlan(spec, DatasetState(), workers=workers, threads=threads)
        assert [len(items) for _, items in plan.partitions()] == sizes
        # Every thread keeps a partition waiting while the next wave is submitted.
        assert plan.partitioning.per_wave >= 2 * threads
    assert auto_partition_size(None, workers=1) == AUTO_PARTITION_IMAGES
    assert partitions_per_wave(32_768, 128, threads=2) == 256


def test_a_resumed_auto_job_cuts_its_input_as_the_interrupted_one_did(
    photos, client1, client2, tmp_path
):
    spec = JobSpec(input=[str(p) for p in photos], output=str(tmp_path / "out"))
    run_job(spec, client=client2)  # two workers: partitions of 2 images
    reference = tmp_path / "reference"
    run_job(spec.replace(output=str(reference)), client=client2)
    out = tmp_path / "out"
    record = json.loads((out / "_job.json").read_text())
    (out / "_job.json").write_text(json.dumps({**record, "status": "running"}))
    for table in TABLES:  # the last partitions were not written when the job stopped
        for partition in (3, 4):
            (out / table / part_name(0, partition)).unlink()
    # On one worker, "auto" alone would cut partitions of 4 images.
    again = run_job(spec, client=client1)
    assert (again.skipped_partitions, again.partitions, again.images) == (3, 2, 3)
    assert_same_dataset(out, reference)


def test_partition_size_is_auto_or_a_number_of_images(sample_dir, tmp_path):
    with pytest.raises(ValueError, match="`partition_size` must be 'auto' or a number of images"):
        JobSpec(input=[str(sample_dir)], output=str(tmp_path), partition_size="large")
    result = CliRunner().invoke(
        main,
        ["run", "-i", str(sample_dir), "-o", str(tmp_path / "out"), "--workers", "2", "--dry-run"],
    )
    assert result.exit_code == 0, result.output
    assert "partitions: 5 of up to 2 images, sized for 2 worker(s)" in result.output
    result = CliRunner().invoke(
        main, ["run", "-i", str(sample_dir), "-o", str(tmp_path), "--partition-size", "big"]
    )
    assert result.exit_code == 2 and "'big' is neither 'auto' nor a number" in result.output


def test_the_id_set_answers_as_a_set_whatever_its_runs(monkeypatch):
    """Ids added in many batches, with merges capped small so that many runs stay apart:
    every answer is a Python set's, and no run holds more than the cap allows."""
    import numpy as np

    monkeypatch.setattr(IdSet, "MERGED_KEYS", 64)
    rng = np.random.default_rng(5)
    pool = [f"{v:032x}" for v in rng.integers(0, 2**62, 3000)]
    ids, reference = IdSet(), set()
    for _ in range(60):
        batch = list(rng.choice(pool, 80))
        new = ids.add_new(batch).tolist()
        expected = []
        for i in batch:
            expected.append(i not in reference)
            reference.add(i)
        assert new == expected
        assert len(ids) == len(reference)
        # A batch is a run of its own; merges never make one over half the set.
        assert max(len(run) for run in ids._runs) <= max(64, len(ids) // 2, len(batch))
    probe = list(rng.choice(pool, 500))
    assert ids.contains(probe).tolist() == [i in reference for i in probe]
    assert len(ids._runs) > 3  # the cap kept runs apart
