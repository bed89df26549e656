"""Compaction: small files rewritten into large ones, readers and jobs undisturbed."""

import json
import shutil

import duckdb
import pytest
from imagegen import write_images
from jobtools import assert_same_dataset, invoke, read_table

from palette_dask import JobSpec, open_dataset, run_job
from palette_dask import compact as compaction
from palette_dask.compact import compact
from palette_dask.tables import COMPACTION_FILE, part_name, span_name

TABLES = ("images", "palettes", "assignments")


def table_names(out) -> dict[str, list[str]]:
    return {table: sorted(p.name for p in (out / table).iterdir()) for table in TABLES}


def assert_same_rows(out, reference) -> None:
    """Every table of ``out`` read through ``open_dataset`` equals the reference's, row for row."""
    for table in (*TABLES, "corpus_palette"):
        assert open_dataset(str(out)).table(table).equals(open_dataset(str(reference)).table(table))


@pytest.fixture()
def small_files(sample_dir, client2, tmp_path):
    """The sample photographs in partitions of 2 images (5 files a table), and a copy."""
    out = tmp_path / "out"
    run_job(JobSpec(input=[str(sample_dir)], output=str(out), partition_size=2), client=client2)
    reference = tmp_path / "reference"
    shutil.copytree(out, reference)
    return out, reference


def test_compaction_keeps_every_row_in_one_file_per_table(small_files):
    out, reference = small_files
    assert table_names(out)["palettes"] == [part_name(0, i) for i in range(5)]
    result = invoke("compact", out)
    assert result.returncode == 0, result.stderr
    assert "compacted 15 files into 3 (1 runs of partitions)" in result.stdout
    assert table_names(out) == {key: [span_name((0, 0), (0, 4))] for key in TABLES}
    assert_same_rows(out, reference)
    assert not (out / COMPACTION_FILE).exists() and not list(out.rglob(".*.tmp"))
    # A glob reader sees the same rows as before.
    query = "SELECT count(*), sum(pixel_count) FROM read_parquet('{}/palettes/*.parquet')"
    assert (
        duckdb.sql(query.format(out)).fetchall() == duckdb.sql(query.format(reference)).fetchall()
    )
    again = compact(str(out))  # nothing left to do
    assert (again.written, again.replaced, again.runs) == (0, 0, 0)


def test_a_compacted_dataset_grows_and_resumes(small_files, sample_dir, client2, tmp_path):
    out, _ = small_files
    compact(str(out))
    new = tmp_path / "new"
    write_images(new, range(5), size=(60, 80))
    spec = JobSpec(input=[str(sample_dir), str(new)], output=str(out), partition_size=2)
    grown = run_job(spec, client=client2)
    assert (grown.images, grown.skipped_images, grown.partitions) == (5, 9, 3)
    fresh = tmp_path / "fresh"
    run_job(spec.replace(output=str(fresh)), client=client2)
    assert_same_dataset(out, fresh)
    # The grown segment, interrupted before its last partition was written, resumes.
    record = json.loads((out / "_job.json").read_text())
    (out / "_job.json").write_text(json.dumps({**record, "status": "running"}))
    for table in TABLES:
        (out / table / part_name(1, 2)).unlink()
    resumed = run_job(spec, client=client2)
    assert (resumed.skipped_partitions, resumed.images) == (2, 1)
    assert_same_dataset(out, fresh)


@pytest.mark.parametrize("stop", ["before the images file", "before removing the small files"])
def test_a_stopped_compaction_is_read_right_and_finished_by_a_rerun(stop, small_files, monkeypatch):
    out, reference = small_files

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt("stopped")

    if stop == "before the images file":
        concatenate = compaction._concatenate

        def until_images(fs, sources, table, *args):
            if table == "images":
                stopped()
            return concatenate(fs, sources, table, *args)

        monkeypatch.setattr(compaction, "_concatenate", until_images)
    else:
        monkeypatch.setattr(compaction, "_remove_sources", stopped)
    with pytest.raises(KeyboardInterrupt):
        compact(str(out))
    monkeypatch.undo()
    compacted = span_name((0, 0), (0, 4))
    assert (out / COMPACTION_FILE).exists() and compacted in table_names(out)["palettes"]
    # Readers through palette-dask take the compacted file and leave out what it holds.
    assert_same_rows(out, reference)
    if stop == "before removing the small files":
        # A glob reader sees those rows twice until the small files are removed.
        glob = f"SELECT count(*) FROM read_parquet('{out}/images/*.parquet')"
        assert duckdb.sql(glob).fetchall() == [(18,)]
    done = compact(str(out))
    assert done.resumed and done.replaced == 15 and done.runs == 1
    assert table_names(out) == {key: [compacted] for key in TABLES}
    assert not (out / COMPACTION_FILE).exists()
    assert_same_rows(out, reference)
    assert read_table(out, "images").num_rows == 9
