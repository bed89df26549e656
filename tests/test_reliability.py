"""Nothing lost: killed workers, killed jobs, crashing decoders, growing inputs, TLS, versions."""

import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pyarrow.dataset as pads
import pytest
from imagegen import write_images
from jobtools import (
    assert_same_dataset,
    cli,
    crashing_processes,
    fresh_cluster,
    invoke,
    kill_when_written,
    read_table,
    run_with_crashing_decoder,
    wait_for_files,
)

from palette_dask import JobSpec, run_job

BIN = Path(sys.executable).parent


# Noisy photograph-like PNGs: enough partitions of 4 to interrupt a job mid-way.
MANY = 160


@pytest.fixture(scope="module")
def many_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("many") / "images"
    write_images(folder, range(MANY), size=(120, 160))
    return folder


@pytest.fixture(scope="module")
def undisturbed(many_images, client2, tmp_path_factory):
    out = tmp_path_factory.mktemp("undisturbed") / "out"
    run_job(JobSpec(input=[str(many_images)], output=str(out), partition_size=4), client=client2)
    return out


class PollingReader(threading.Thread):
    """Reads every table of a dataset in a loop, recording any failure."""

    def __init__(self, out: Path):
        super().__init__(daemon=True)
        self.out = out
        self.failures: list[str] = []
        self.reads = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            for table in ("images", "palettes", "assignments"):
                folder = self.out / table
                if not folder.exists():
                    continue
                try:
                    pads.dataset(folder, format="parquet").to_table()
                    self.reads += 1
                except Exception as exc:  # the assertion is that this never happens
                    self.failures.append(f"{table}: {type(exc).__name__}: {exc}")
            time.sleep(0.01)


def test_killing_a_worker_mid_job_loses_nothing(many_images, undisturbed, tmp_path):
    out = tmp_path / "out"
    with fresh_cluster(2) as client:
        pids = client.run(os.getpid)
        outcome = {}
        job = threading.Thread(
            target=lambda: outcome.update(
                report=run_job(
                    JobSpec(input=[str(many_images)], output=str(out), partition_size=4),
                    client=client,
                )
            )
        )
        job.start()
        wait_for_files(out / "images", 5)
        victim = sorted(pids.values())[0]
        os.kill(victim, signal.SIGKILL)
        # The kill landed mid-job: partitions were still to be written.
        assert len(list((out / "images").glob("part-*"))) < MANY // 4
        job.join(timeout=300)
        assert victim not in client.run(os.getpid).values()
    assert not job.is_alive() and "report" in outcome
    assert outcome["report"].images == MANY and outcome["report"].errors == 0
    assert_same_dataset(out, undisturbed)


def test_killed_job_resumes_to_the_same_tables(many_images, undisturbed, client2, tmp_path):
    out = tmp_path / "out"
    args = ["run", "-i", str(many_images), "-o", str(out), "--partition-size", "4", "--no-progress"]
    command = [str(BIN / "palette-dask"), *args, "--workers", "2"]
    reader = PollingReader(out)
    reader.start()
    written = kill_when_written(command, out / "images", 8)
    assert written < MANY // 4, "the job finished before it could be killed"
    assert json.loads((out / "_job.json").read_text())["status"] == "running"

    # The same command again, on the session's cluster: where it runs changes no table.
    second = invoke(*args, "--scheduler", client2.scheduler.address)
    reader.stop.set()
    reader.join()
    assert second.returncode == 0, second.stderr
    skipped = int(second.stdout.split("skipped ")[1].split(" partitions")[0])
    assert skipped >= 8 and "resumed an interrupted job" in second.stdout
    assert_same_dataset(out, undisturbed)
    assert json.loads((out / "_job.json").read_text())["status"] == "complete"
    assert not list(out.rglob(".*.tmp"))
    assert reader.reads > 0 and reader.failures == []


def test_an_interrupted_job_resumes_only_with_the_same_partitions(sample_dir, tmp_path):
    from palette_dask.state import prepare_output
    from palette_dask.tables import write_job_file

    spec = JobSpec(input=[str(sample_dir)], output=str(tmp_path / "out"), partition_size=2)
    prepare_output(spec)
    write_job_file(spec.output, {"status": "running", "segment": 0, "spec": spec.to_dict()})
    assert prepare_output(spec).resumed
    with pytest.raises(FileExistsError, match="interrupted job with another partition_size"):
        prepare_output(spec.replace(partition_size=3))


@pytest.mark.parametrize("mode", ["image", "both"])
def test_growing_input_processes_only_new_images(mode, client2, tmp_path):
    folder = tmp_path / "images"
    write_images(folder, range(10), size=(60, 80))
    out = tmp_path / "out"
    spec = JobSpec(input=[str(folder)], output=str(out), partition_size=3, mode=mode, corpus_k=6)
    first = run_job(spec, client=client2)
    before = read_table(out, "images")
    write_images(folder, range(10, 15), size=(60, 80))
    second = run_job(spec, client=client2)
    assert (first.images, second.images, second.skipped_images) == (10, 5, 10)
    after = read_table(out, "images")
    assert after.num_rows == 15
    # The first ten rows were not recomputed: even their timings are untouched.
    old = after.filter(pads.field("image_id").isin(before.column("image_id")))
    assert old.equals(before)
    # And the grown dataset is the one a single job over all fifteen images makes.
    fresh = tmp_path / "fresh"
    run_job(spec.replace(output=str(fresh)), client=client2)
    assert_same_dataset(out, fresh)
    if mode == "both":
        assert read_table(out, "corpus_palette").equals(read_table(fresh, "corpus_palette"))


def test_an_image_that_crashes_workers_becomes_an_error_row(sample_dir, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for photo in ["coffee.jpg", "rocket.jpg", "astronaut.jpg", "chelsea.png"]:
        shutil.copy(sample_dir / photo, folder / photo)
    shutil.copy(sample_dir / "retina.jpg", folder / "crash-me.jpg")
    out = tmp_path / "out"
    report = run_with_crashing_decoder(
        JobSpec(input=[str(folder)], output=str(out), partition_size=5), "crash-me"
    )
    assert (report.images, report.errors) == (5, 1)
    images = read_table(out, "images").to_pandas().set_index("uri")
    crashed = images.loc[str(folder / "crash-me.jpg")]
    assert crashed["status"] == "error"
    assert "the process decoding this image died" in crashed["error"]
    assert (images.drop(str(folder / "crash-me.jpg"))["status"] == "ok").all()
    assert read_table(out, "palettes").num_rows == 4 * 5


def test_a_crashing_image_costs_two_child_processes_however_many_images_follow(tmp_path, caplog):
    from palette_dask.tasks import CRASH_MESSAGE, process_images_apart

    folder = tmp_path / "images"
    write_images(folder, range(7), size=(60, 80))
    (folder / "img0002.png").rename(folder / "img0002-crash-me.png")
    uris = sorted(str(p) for p in folder.iterdir())
    spec = JobSpec(input=[str(folder)], output=str(tmp_path / "out"))
    with crashing_processes("crash-me"), caplog.at_level("WARNING", "palette_dask.tasks"):
        tables, _, errors, internal, _ = process_images_apart(list(enumerate(uris)), spec)
    # One child died on the image after decoding the ones before it; one died on it
    # alone; a third did the rest.
    deaths = [r.getMessage() for r in caplog.records if "died with exit code" in r.getMessage()]
    assert [d.split(" images")[0] for d in deaths] == [
        "a process redoing 7",
        f"a process redoing {7 - uris.index(str(folder / 'img0002-crash-me.png'))}",
    ]
    images = tables["images"].to_pandas()
    assert images["uri"].tolist() == uris and (errors, internal) == (1, 0)
    crashed = images.set_index("uri").loc[str(folder / "img0002-crash-me.png")]
    assert crashed["status"] == "error" and crashed["error"] == CRASH_MESSAGE
    assert (images["status"] == "ok").sum() == 6


# A worker preload (it may run more than once in a worker: it keeps the first original).
BROKEN_DECODER = """
import palette_dask.tasks as tasks

if not hasattr(tasks, "working_palette_from_sample"):
    tasks.working_palette_from_sample = tasks.palette_from_sample


def broken_on_png(sample, options):
    if sample.format == "PNG":
        raise TypeError("a defect injected by the test")
    return tasks.working_palette_from_sample(sample, options)


tasks.palette_from_sample = broken_on_png
"""


def test_an_internal_error_is_logged_counted_and_fails_the_run_while_bad_images_do_not(
    sample_dir, client1, tmp_path
):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("coffee.jpg", "rocket.jpg", "chelsea.png"):
        shutil.copy(sample_dir / name, inputs / name)
    (inputs / "broken.jpg").write_bytes(b"not an image at all")
    preload = tmp_path / "broken_decoder.py"
    preload.write_text(BROKEN_DECODER)
    run = ["run", "-i", inputs, "--workers", 1, "--partition-size", 2, "--no-progress"]

    # Bad images are data: exit 0 (on the session's cluster; the broken decoder below
    # needs workers of its own).
    healthy = invoke(*run, "-o", tmp_path / "healthy", "--scheduler", client1.scheduler.address)
    assert healthy.returncode == 0, healthy.stderr
    assert "4 images (3 ok, 1 failed)" in healthy.stdout

    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__PRELOAD": json.dumps([str(preload)])}
    broken = cli(*run, "-o", tmp_path / "broken", env=env)
    assert broken.returncode == 3, broken.stderr
    assert "4 images (2 ok, 2 failed)" in broken.stdout
    assert "1 of the failures are internal errors of palette-dask" in broken.stderr
    # The worker logged the defect with its traceback.
    assert "internal error while processing" in broken.stderr
    assert "Traceback" in broken.stderr and "a defect injected by the test" in broken.stderr
    images = read_table(tmp_path / "broken", "images").to_pandas().set_index("uri")
    errors = images["error"].rename(lambda uri: Path(uri).name)
    assert errors["chelsea.png"] == "internal error: TypeError: a defect injected by the test"
    assert errors["broken.jpg"] and not errors["broken.jpg"].startswith("internal error")
    assert errors[["coffee.jpg", "rocket.jpg"]].isna().all()
    record = json.loads((tmp_path / "broken" / "_job.json").read_text())
    assert record["counts"]["errors"] == 2 and record["counts"]["internal_errors"] == 1


def test_other_options_are_refused_without_overwrite(client2, tmp_path, sample_dir):
    out = tmp_path / "out"
    run_job(JobSpec(input=[str(sample_dir / "coffee.jpg")], output=str(out)), client=client2)
    result = invoke(
        "run",
        "-i",
        sample_dir,
        "-o",
        out,
        "--color-space",
        "lab",
        "--scheduler",
        client2.scheduler.address,
    )
    assert result.returncode == 1
    assert "made with other options (color_space='rgb' -> 'lab')" in result.stderr
    assert "pass --overwrite" in result.stderr
