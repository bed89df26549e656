"""Object storage for real: an S3-compatible server on 127.0.0.1 (moto), s3fs as the client.

Inputs listed from a bucket, manifests stored in it, datasets written to it,
read back, resumed after a kill, searched and reported, by the library and by
the command line. Every request goes to the local server: the endpoint is
always given, in the storage options or in ``AWS_ENDPOINT_URL``.
"""

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from imagegen import write_images
from jobtools import SORT_KEYS, cli, read_table

from palette_dask import JobSpec, open_dataset, run_job, search
from palette_dask.cli import main
from palette_dask.reads import ReadOptions, read_many
from palette_dask.sources import IMAGE_EXTENSIONS, check_inputs, iter_uris

s3fs = pytest.importorskip("s3fs")
boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

BIN = Path(sys.executable).parent
BUCKET = "palettes"
TABLES = ("images", "palettes", "assignments")
# Settings of the AWS SDK that could send requests elsewhere, or read credentials
# and configuration from this machine.
AWS_SETTINGS = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


@pytest.fixture(scope="module")
def server():
    """``(storage_options, environment)`` of a fresh S3-compatible server on 127.0.0.1."""
    moto = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    assert host == "127.0.0.1"
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }
    env = {k: v for k, v in os.environ.items() if k not in AWS_SETTINGS}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_ENDPOINT_URL=endpoint,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    isolation = {k: env[k] for k in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")}
    with pytest.MonkeyPatch.context() as patch:
        for name in AWS_SETTINGS:
            patch.delenv(name, raising=False)
        for name, value in isolation.items():
            patch.setenv(name, value)
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket=BUCKET)
        yield options, env
    moto.stop()


@pytest.fixture(scope="module")
def s3(server):
    return s3fs.S3FileSystem(**server[0])


@pytest.fixture(scope="module")
def options(server):
    return server[0]


def upload(s3, folder: Path, prefix: str) -> list[str]:
    """Copy every file below ``folder`` to ``s3://BUCKET/prefix/``; their relative names."""
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    s3.pipe({f"{BUCKET}/{prefix}/{name}": (folder / name).read_bytes() for name in names})
    return names


@pytest.fixture(scope="module")
def uploaded(s3, corpus):
    """The test corpus (photographs, synthetic and broken files) under ``s3://BUCKET/images/``."""
    return upload(s3, corpus, "images")


@pytest.fixture(scope="module")
def local_run(corpus, client2, tmp_path_factory):
    """The job over the corpus on local files, in ``both`` mode."""
    out = tmp_path_factory.mktemp("local") / "out"
    run_job(spec([str(corpus)], str(out)), client=client2)
    return out


@pytest.fixture(scope="module")
def s3_run(uploaded, options, client2):
    """The same job over the bucket's copy of the corpus, written to the bucket."""
    output = f"s3://{BUCKET}/out"
    report = run_job(
        spec([f"s3://{BUCKET}/images/"], output, storage_options=options), client=client2
    )
    assert report.images == len(uploaded)
    return output


def spec(inputs, output, **changes) -> JobSpec:
    return JobSpec(
        input=inputs,
        output=output,
        mode="both",
        corpus_k=6,
        partition_size=5,
        **changes,
    )


def s3_table(s3, url: str, name: str) -> pa.Table:
    """A table of a dataset in the bucket, read with pyarrow through s3fs."""
    root = url.removeprefix("s3://")
    s3.invalidate_cache(f"{root}/{name}")  # written since by other processes
    return pads.dataset(f"{root}/{name}", format="parquet", filesystem=s3).to_table()


def by_name(table: pa.Table, images: pa.Table, root: str, name: str) -> pa.Table:
    """``table`` with image ids and URIs replaced by the file's name below ``root``, sorted.

    The same file has another URI, hence another id, locally and in the bucket.
    """
    names = {
        image: uri.removeprefix(root).lstrip("/")
        for image, uri in zip(
            images.column("image_id").to_pylist(), images.column("uri").to_pylist(), strict=True
        )
    }
    keyed = table.set_column(
        table.schema.get_field_index("image_id"),
        "image_id",
        pa.array([names[i] for i in table.column("image_id").to_pylist()], pa.string()),
    )
    drop = [c for c in ("uri", "elapsed_ms") if c in keyed.column_names]
    if "error" in keyed.column_names:
        errors = [
            None if e is None else e.replace(root, "") for e in keyed.column("error").to_pylist()
        ]
        keyed = keyed.set_column(
            keyed.schema.get_field_index("error"), "error", pa.array(errors, pa.string())
        )
    keyed = keyed.drop_columns(drop)
    if name != "images":
        keyed = keyed.filter(pads.field("palette_kind") == "image")
    return keyed.sort_by([(key, "ascending") for key in SORT_KEYS[name]])


def option_flags(options: dict) -> list[str]:
    """The storage options as ``--storage-option KEY=VALUE`` flags."""
    client = options["client_kwargs"]
    pairs = [
        f"key={options['key']}",
        f"secret={options['secret']}",
        *(f"client_kwargs.{name}={value}" for name, value in client.items()),
    ]
    return [arg for pair in pairs for arg in ("--storage-option", pair)]


def test_inputs_are_listed_from_a_bucket_prefix_and_a_glob(uploaded, options):
    listed = list(iter_uris([f"s3://{BUCKET}/images/"], options))
    images = [n for n in uploaded if n.lower().endswith(IMAGE_EXTENSIONS)]
    assert listed == [f"s3://{BUCKET}/images/{n}" for n in sorted(images)]
    globbed = list(iter_uris([f"s3://{BUCKET}/images/synthetic/*.png"], options))
    assert globbed == [
        f"s3://{BUCKET}/images/{n}"
        for n in sorted(images)
        if n.startswith("synthetic/") and n.endswith(".png")
    ]
    assert len(globbed) == 2
    check_inputs([f"s3://{BUCKET}/images/"], options)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_inputs([f"s3://{BUCKET}/nothing-here/"], options)


def test_a_job_on_the_bucket_matches_the_job_on_local_files(s3_run, local_run, corpus, s3, options):
    s3_images = s3_table(s3, s3_run, "images")
    local_images = read_table(local_run, "images")
    assert s3_images.num_rows == local_images.num_rows > 0
    assert set(s3_images.column("status").to_pylist()) == {"ok", "error"}
    for name in TABLES:
        remote = by_name(s3_table(s3, s3_run, name), s3_images, f"s3://{BUCKET}/images", name)
        local = by_name(read_table(local_run, name), local_images, str(corpus), name)
        assert remote.equals(local), name
    # Broken files say the same from the bucket as from disk, an empty object included.
    empty = s3_images.filter(pads.field("uri") == f"s3://{BUCKET}/images/broken/empty.jpg")
    assert empty.column("error").to_pylist() == ["empty file (0 bytes)"]
    # pandas reads the same tables through s3fs with the same options.
    frame = pd.read_parquet(f"{s3_run}/palettes", storage_options=options)
    assert len(frame) == s3_table(s3, s3_run, "palettes").num_rows
    # Both passes of the corpus mode ran on the bucket, and the sample cache is gone.
    corpus_rows = s3_table(s3, s3_run, "corpus_palette")
    assert 0 < corpus_rows.num_rows <= 6
    ok = s3_images.filter(pads.field("status") == "ok").num_rows
    kinds = s3_table(s3, s3_run, "assignments").column("palette_kind").to_pylist()
    assert kinds.count("corpus") == kinds.count("image") == ok
    s3.invalidate_cache()
    assert not s3.exists(f"{BUCKET}/out/_cache")
    record = json.loads(s3.cat(f"{BUCKET}/out/_job.json"))
    assert record["status"] == "complete"
    # Secrets never reach the job record.
    assert record["spec"]["storage_options"]["secret"] == "***"
    assert "testing" not in s3.cat(f"{BUCKET}/out/_job.json").decode()


def test_manifests_stored_in_the_bucket(uploaded, s3, options, client2):
    uris = [f"s3://{BUCKET}/images/{n}" for n in uploaded if n.startswith("synthetic/")]
    s3.pipe(f"{BUCKET}/lists/images.txt", ("# synthetic\n" + "\n".join(uris) + "\n").encode())
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"uri": uris[::-1]}), sink)
    s3.pipe(f"{BUCKET}/lists/images.parquet", sink.getvalue().to_pybytes())
    assert list(iter_uris([f"s3://{BUCKET}/lists/images.txt"], options)) == uris
    assert list(iter_uris([f"s3://{BUCKET}/lists/images.parquet"], options)) == uris[::-1]

    output = f"s3://{BUCKET}/from-manifest"
    report = run_job(
        JobSpec(
            input=[f"s3://{BUCKET}/lists/images.parquet"],
            output=output,
            partition_size=2,
            storage_options=options,
        ),
        client=client2,
    )
    assert (report.images, report.errors) == (len(uris), 0)
    assert sorted(s3_table(s3, output, "images").column("uri").to_pylist()) == sorted(uris)


def test_a_killed_job_writing_to_the_bucket_resumes_to_the_same_tables(
    s3, server, client2, tmp_path
):
    options, env = server
    write_images(tmp_path / "many", range(24), size=(160, 200))  # 12 partitions
    upload(s3, tmp_path / "many", "many")
    source = f"s3://{BUCKET}/many/"
    undisturbed = f"s3://{BUCKET}/undisturbed"
    run_job(
        JobSpec(input=[source], output=undisturbed, partition_size=2, storage_options=options),
        client=client2,
    )
    output = f"s3://{BUCKET}/killed"
    command = [
        str(BIN / "palette-dask"),
        "run",
        "-i",
        source,
        "-o",
        output,
        "--workers",
        "2",
        "--partition-size",
        "2",
        "--no-progress",
    ]
    first = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    written = []
    try:
        deadline = time.monotonic() + 120
        while len(written) < 3:
            assert time.monotonic() < deadline, "no partition was written in time"
            assert first.poll() is None, first.stderr.read().decode()
            s3.invalidate_cache()
            if s3.exists(f"{BUCKET}/killed/images"):
                written = s3.glob(f"{BUCKET}/killed/images/part-*.parquet")
            time.sleep(0.05)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
        first.stderr.close()
    s3.invalidate_cache()
    assert len(s3.glob(f"{BUCKET}/killed/images/part-*.parquet")) < 12, "finished before the kill"
    assert json.loads(s3.cat(f"{BUCKET}/killed/_job.json"))["status"] == "running"

    # Run again (on the session's cluster: what is resumed is the dataset in the bucket).
    second = run_job(
        JobSpec(input=[source], output=output, partition_size=2, storage_options=options),
        client=client2,
    )
    assert second.resumed and second.skipped_partitions >= 3
    s3.invalidate_cache()
    assert json.loads(s3.cat(f"{BUCKET}/killed/_job.json"))["status"] == "complete"
    for name in TABLES:
        drop = ["elapsed_ms"] if name == "images" else []
        resumed = s3_table(s3, output, name).drop_columns(drop)
        expected = s3_table(s3, undisturbed, name).drop_columns(drop)
        keys = [(key, "ascending") for key in SORT_KEYS[name]]
        assert resumed.sort_by(keys).equals(expected.sort_by(keys)), name


def test_search_and_open_dataset_on_the_bucket(s3_run, options, s3):
    ds = open_dataset(s3_run, storage_options=options)
    assert ds.fs.protocol[0] == "s3" or ds.fs.protocol == "s3"
    assert len(ds.images) == s3_table(s3, s3_run, "images").num_rows
    assert ds.job["status"] == "complete"
    top = ds.palettes.query("palette_kind == 'image' and rank == 0").iloc[0]
    found = search(s3_run, colors=[top.hex], top=50, kind="image", storage_options=options)
    assert found["score"].is_monotonic_decreasing and found.iloc[0]["score"] > 0
    assert top.hex in found.set_index("image_id").loc[top.image_id, "colors"]
    reference = ds.uris([top.image_id])[top.image_id]
    like = search(ds, like=reference, top=3, kind="image")
    assert like.iloc[0]["uri"] == reference and like.iloc[0]["score"] == pytest.approx(0)


def test_index_search_and_report_commands_on_the_bucket(s3_run, server, s3, tmp_path):
    options, env = server
    built = cli("index", s3_run, "--kind", "image", env=env)
    assert built.returncode == 0, built.stderr
    assert f"{s3_run}/_index/image" in built.stdout
    s3.invalidate_cache()
    assert s3.exists(f"{BUCKET}/out/_index/image/meta.json")

    flags = option_flags(options)
    found = CliRunner().invoke(
        main, ["search", s3_run, "--color", "#1565a1", "--top", "3", "--json", *flags]
    )
    assert found.exit_code == 0, found.output
    rows = [json.loads(line) for line in found.output.splitlines()]
    assert len(rows) == 3 and all(row["uri"].startswith(f"s3://{BUCKET}/images/") for row in rows)

    page = tmp_path / "report.html"
    made = CliRunner().invoke(main, ["report", s3_run, "--out", str(page), *flags])
    assert made.exit_code == 0, made.output
    assert f"Palettes of {s3_run}" in page.read_text()


def test_storage_options_on_the_command_line(uploaded, options, tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "run",
            "-i",
            f"s3://{BUCKET}/images/",
            "-o",
            f"s3://{BUCKET}/dry",
            *option_flags(options),
            "--read-timeout",
            "12.5",
            "--read-concurrency",
            "8",
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout[: result.stdout.index("\ninputs:")])
    assert shown["storage_options"] == {
        "key": "***",
        "secret": "***",
        "client_kwargs": options["client_kwargs"],
    }
    assert (shown["read_timeout"], shown["read_concurrency"]) == (12.5, 8)
    assert "testing" not in result.output
    images = [n for n in uploaded if n.lower().endswith(IMAGE_EXTENSIONS)]
    assert f"inputs: {len(images)} listed" in result.stdout

    bad = CliRunner().invoke(main, ["run", "-i", "x", "-o", "y", "--storage-option", "anon"])
    assert bad.exit_code == 2 and "KEY=VALUE" in bad.output and "Traceback" not in bad.output
    missing = CliRunner().invoke(main, ["search", str(tmp_path / "nope"), "--color", "#000000"])
    assert missing.exit_code == 1 and "Traceback" not in missing.output
    assert missing.output.strip().splitlines() == [
        f"Error: dataset {str(tmp_path / 'nope')!r} does not exist"
    ]


def test_members_of_containers_in_the_bucket_are_read_as_local_ones(s3, options, corpus):
    """A tar shard and a Parquet file of images, in the bucket, give the bytes of their members."""
    photos = sorted(p for p in corpus.iterdir() if p.suffix in (".jpg", ".png"))[:4]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for photo in photos:
            tar.add(photo, arcname=photo.name)
    table = io.BytesIO()
    pq.write_table(pa.table({"image": [p.read_bytes() for p in photos]}), table, row_group_size=2)
    s3.pipe(
        {
            f"{BUCKET}/shards/shard-0.tar": buffer.getvalue(),
            f"{BUCKET}/shards/t.parquet": table.getvalue(),
        }
    )
    uris = [f"s3://{BUCKET}/shards/shard-0.tar#{p.name}" for p in reversed(photos)]
    uris += [f"s3://{BUCKET}/shards/t.parquet#{row}" for row in (3, 0)]
    with read_many(uris, ReadOptions(storage_options=options)) as reads:
        outcomes = dict(reads)
    expected = [p.read_bytes() for p in reversed(photos)] + [
        photos[3].read_bytes(),
        photos[0].read_bytes(),
    ]
    assert [outcomes[i] for i in range(len(uris))] == expected
    listed = list(iter_uris([f"s3://{BUCKET}/shards/*.parquet"], options))
    assert listed == [f"s3://{BUCKET}/shards/t.parquet#{row}" for row in range(4)]
    assert list(iter_uris([f"s3://{BUCKET}/shards/t.parquet"], options)) == listed
    # A folder named like a Parquet file, as Spark and Dask write tables, is walked.
    s3.pipe(f"{BUCKET}/table.parquet/part-0.parquet", table.getvalue())
    walked = list(iter_uris([f"s3://{BUCKET}/table.parquet"], options))
    assert walked == [f"s3://{BUCKET}/table.parquet/part-0.parquet#{row}" for row in range(4)]


def test_a_job_over_shards_in_the_bucket_matches_the_job_over_local_shards(
    s3, options, corpus, client2, tmp_path
):
    """Tar shards and a Parquet file of images, listed from a prefix, and the dataset grown."""
    photos = sorted(p for p in corpus.iterdir() if p.suffix in (".jpg", ".png"))
    local = tmp_path / "sharded"
    local.mkdir()
    for shard, chosen in [("shard-000000.tar", photos[:3]), ("shard-000001.tar", photos[3:5])]:
        with tarfile.open(local / shard, "w") as tar:
            for photo in chosen:
                tar.add(photo, arcname=f"{photo.stem}/{photo.name}")
    cells = [{"bytes": p.read_bytes(), "path": p.name} for p in photos[5:]] + [None]
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(
        pa.table({"image": pa.array(cells, image_type)}), local / "rows.parquet", row_group_size=2
    )
    later = local / "shard-000001.tar"
    held_back = later.read_bytes()
    later.unlink()
    upload(s3, local, "sharded")
    remote_out = f"s3://{BUCKET}/sharded-out"
    job = JobSpec(
        input=[f"s3://{BUCKET}/sharded/"],
        output=remote_out,
        partition_size=2,
        storage_options=options,
    )
    first = run_job(job, client=client2)
    later.write_bytes(held_back)
    s3.pipe(f"{BUCKET}/sharded/shard-000001.tar", held_back)
    grown = run_job(job, client=client2)
    assert (first.images, grown.images, grown.skipped_images) == (
        3 + len(photos) - 4,
        2,
        3 + len(photos) - 4,
    )
    local_out = tmp_path / "out"
    run_job(JobSpec(input=[str(local)], output=str(local_out), partition_size=2), client=client2)
    remote_images = s3_table(s3, remote_out, "images")
    local_images = read_table(local_out, "images")
    assert remote_images.num_rows == local_images.num_rows == len(photos) + 1
    for name in TABLES:
        remote = by_name(
            s3_table(s3, remote_out, name), remote_images, f"s3://{BUCKET}/sharded", name
        )
        mine = by_name(read_table(local_out, name), local_images, str(local), name)
        assert remote.equals(mine), name
    errors = remote_images.filter(pads.field("status") == "error").column("error").to_pylist()
    assert errors == ["null image cell in column 'image'"]
    source_paths = set(remote_images.column("source_path").to_pylist())
    assert f"{photos[0].stem}/{photos[0].name}" in source_paths and photos[5].name in source_paths
