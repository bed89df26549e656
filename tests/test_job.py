"""The whole job on real Dask clusters, read back with pyarrow, pandas and DuckDB."""

import json
import os

import duckdb
import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest
from jobtools import BAD_INPUTS, assert_same_dataset, read_table

from palette_dask import JobSpec, open_dataset, run_job
from palette_dask.tables import ASSIGNMENTS_SCHEMA, IMAGES_SCHEMA, PALETTES_SCHEMA, part_name


@pytest.fixture(scope="module")
def n_inputs(corpus):
    return sum(1 for p in corpus.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def dataset(corpus, client2, tmp_path_factory):
    out = tmp_path_factory.mktemp("job") / "out"
    report = run_job(
        JobSpec(input=[str(corpus)], output=str(out), partition_size=4), client=client2
    )
    return out, report


def test_every_input_gives_exactly_one_images_row(dataset, n_inputs):
    out, report = dataset
    images = read_table(out, "images").to_pandas()
    assert len(images) == n_inputs == report.images
    assert images["image_id"].is_unique and images["uri"].is_unique
    assert report.errors == len(BAD_INPUTS) and report.ok == n_inputs - len(BAD_INPUTS)


def test_report_and_job_file_split_the_workers_time(dataset):
    out, report = dataset
    images = read_table(out, "images").to_pandas()
    # Decoding and clustering take at least the images' own time and their reads,
    # and the two workers cannot have worked longer than twice the job.
    assert report.read_seconds > 0
    assert report.process_seconds >= images["elapsed_ms"].sum() / 1000 + report.read_seconds
    assert report.write_seconds > 0
    assert report.process_seconds + report.write_seconds < 2 * report.elapsed_s
    recorded = json.loads((out / "_job.json").read_text())["worker_seconds"]
    assert recorded == {
        "process": round(report.process_seconds, 3),
        "read": round(report.read_seconds, 3),
        "write": round(report.write_seconds, 3),
    }


def test_broken_files_become_error_rows_with_clear_messages(dataset):
    out, _ = dataset
    images = read_table(out, "images").to_pandas()
    images["name"] = images["uri"].map(os.path.basename)
    failed = images[images["status"] == "error"].set_index("name")
    assert sorted(failed.index) == sorted(BAD_INPUTS)
    for name, message in BAD_INPUTS.items():
        assert message in failed.loc[name, "error"], failed.loc[name, "error"]
    assert failed["n_pixels"].isna().all() and failed["mse_rgb"].isna().all()
    # The format is kept when it was recognised before the failure.
    assert failed.loc["truncated.jpg", "format"] == "JPEG"
    assert failed.loc["transparent.png", "format"] == "PNG"
    assert pd.isna(failed.loc["text.jpg", "format"])
    ok = images[images["status"] == "ok"]
    assert ok["error"].isna().all()
    assert (ok["sample_width"] * ok["sample_height"] <= 40_000).all()
    assert set(ok["format"]) >= {"JPEG", "PNG", "WEBP"}


def test_tables_have_their_declared_schemas(dataset):
    out, _ = dataset
    for name, schema in [
        ("images", IMAGES_SCHEMA),
        ("palettes", PALETTES_SCHEMA),
        ("assignments", ASSIGNMENTS_SCHEMA),
    ]:
        assert pads.dataset(out / name, format="parquet").schema.equals(schema), name


def test_palettes_agree_with_images_and_assignments(dataset):
    out, _ = dataset
    ds = open_dataset(str(out))
    images, palettes, assignments = ds.images, ds.palettes, ds.assignments
    ok = images[images["status"] == "ok"].set_index("image_id")
    assert set(palettes["image_id"]) == set(ok.index) == set(assignments["image_id"])
    per_image = palettes.groupby("image_id")
    np.testing.assert_allclose(per_image["proportion"].sum(), 1.0, atol=1e-5)
    assert (per_image["pixel_count"].sum() == ok["n_pixels"].reindex(per_image.size().index)).all()
    assert (per_image.size() <= 5).all()
    assert not palettes.duplicated(["image_id", "hex"]).any()
    assert (
        palettes["hex"] == palettes.apply(lambda r: f"#{r.r:02x}{r.g:02x}{r.b:02x}", axis=1)
    ).all()
    for row in assignments.itertuples():
        labels = np.frombuffer(row.labels, dtype=np.uint8)
        assert len(labels) == row.sample_width * row.sample_height
        counts = np.bincount(labels[labels != 255])
        expected = palettes[palettes["image_id"] == row.image_id].sort_values("rank")
        assert counts.tolist() == expected["pixel_count"].tolist()


def test_tables_read_with_pandas_and_duckdb(dataset):
    out, _ = dataset
    frame = pd.read_parquet(out / "palettes")
    count, top = duckdb.sql(
        f"SELECT count(*), max(proportion) FROM read_parquet('{out}/palettes/*.parquet')"
    ).fetchall()[0]
    assert count == len(frame) and top == pytest.approx(frame["proportion"].max())
    ok = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{out}/images/*.parquet') WHERE status = 'ok'"
    ).fetchall()[0][0]
    assert ok == frame["image_id"].nunique()


def test_job_record_describes_the_run(dataset, n_inputs):
    out, _ = dataset
    record = json.loads((out / "_job.json").read_text())
    assert record["spec"]["k"] == 5 and record["spec"]["partition_size"] == 4
    assert record["counts"]["images"] == n_inputs
    assert record["counts"]["errors"] == len(BAD_INPUTS)
    assert record["versions"]["dask"] and record["versions"]["palette-dask"]
    assert record["started"] <= record["finished"]


def test_no_temporary_file_is_left_behind(dataset):
    out, _ = dataset
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


@pytest.mark.parametrize(
    ("which", "partition_size"), [("client1", 1), ("client2", 7), ("client1", 7), ("client2", 1)]
)
def test_results_do_not_depend_on_workers_or_partitions(
    which, partition_size, corpus, dataset, tmp_path, request
):
    client = request.getfixturevalue(which)
    out = tmp_path / "out"
    run_job(
        JobSpec(input=[str(corpus)], output=str(out), partition_size=partition_size), client=client
    )
    reference, _ = dataset
    assert_same_dataset(out, reference)
    # Bit-identical, not merely close: compare the raw colour and share columns.
    a, b = read_table(out, "palettes"), read_table(reference, "palettes")
    assert (
        a.column("proportion").to_numpy().tobytes() == b.column("proportion").to_numpy().tobytes()
    )


def test_small_waves_cover_every_image_once(corpus, client2, tmp_path, n_inputs):
    out = tmp_path / "out"
    spec = JobSpec(input=[str(corpus)], output=str(out), partition_size=2, wave_size=3)
    report = run_job(spec, client=client2)
    n_partitions = -(-n_inputs // 2)
    assert report.partitions == n_partitions
    for table in ("images", "palettes", "assignments"):
        names = sorted(p.name for p in (out / table).iterdir())
        assert names == [part_name(0, i) for i in range(n_partitions)]
    images = read_table(out, "images").to_pandas()
    assert len(images) == n_inputs and images["image_id"].is_unique


def test_dask_ml_engine_runs_in_the_job(sample_dir, client2, tmp_path):
    out = tmp_path / "out"
    inputs = [str(sample_dir / "coffee.jpg"), str(sample_dir / "rocket.jpg")]
    run_job(
        JobSpec(input=inputs, output=str(out), engine="dask-ml", partition_size=1), client=client2
    )
    images = read_table(out, "images").to_pandas()
    assert (images["status"] == "ok").all() and (images["engine"] == "dask-ml").all()
    assert len(read_table(out, "palettes")) == 10


def test_rerun_skips_what_is_there_and_other_options_need_overwrite(
    corpus, client2, tmp_path, n_inputs
):
    out = tmp_path / "out"
    run_job(JobSpec(input=[str(corpus)], output=str(out), partition_size=1), client=client2)
    again = run_job(JobSpec(input=[str(corpus)], output=str(out), partition_size=1), client=client2)
    assert again.images == 0 and again.skipped_images == n_inputs
    with pytest.raises(FileExistsError, match=r"made with other options \(k=5 -> 6\)"):
        run_job(JobSpec(input=[str(corpus)], output=str(out), k=6), client=client2)
    run_job(
        JobSpec(input=[str(corpus)], output=str(out), k=6, partition_size=50, overwrite=True),
        client=client2,
    )
    # The old one-image partitions are gone, not mixed in.
    assert [p.name for p in (out / "images").iterdir()] == [part_name(0, 0)]
    assert (read_table(out, "images").column("k").to_numpy() == 6).all()


def test_non_dataset_folder_is_refused(corpus, tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="not a palette-dask dataset"):
        run_job(JobSpec(input=[str(corpus)], output=str(tmp_path), overwrite=True))
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_waves_are_drawn_lazily_and_stay_bounded(corpus, client2, tmp_path, n_inputs):
    from palette_dask.pipeline import one_task_per_element, run_waves
    from palette_dask.plan import InputPlan
    from palette_dask.state import prepare_output
    from palette_dask.tasks import process_partition

    spec = JobSpec(input=[str(corpus)], output=str(tmp_path / "out"), partition_size=1, wave_size=4)
    plan = InputPlan(spec, prepare_output(spec))
    wave_images = plan.partitioning.per_wave * plan.partitioning.size
    drawn = []

    def watched_waves():
        for wave in plan.waves():
            drawn.append(sum(len(items) for _, items in wave))
            yield wave

    done = 0
    make_outputs = one_task_per_element(process_partition, items=(0,), spec=spec, segment=0)
    for (future,), (_, items) in run_waves(client2, watched_waves(), make_outputs, refill_below=2):
        summary = future.result()
        assert summary["images"] == len(items)
        done += summary["images"]
        # Never more than two waves of images submitted but unfinished.
        assert sum(drawn) - done <= 2 * wave_images
    assert done == sum(drawn) == n_inputs
    assert len(drawn) == -(-n_inputs // wave_images)
