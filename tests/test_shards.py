"""Jobs over sharded corpora: WebDataset tar shards and Parquet files of images as inputs."""

import json
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from imagegen import encode, noisy_blocks
from jobtools import assert_same_dataset, kill_when_written, read_table, run_with_crashing_decoder
from test_containers import hf_table, shard_bytes, webdataset_members

from palette_dask import JobSpec, run_job
from palette_dask.cli import main
from palette_dask.containers import member_uri
from palette_dask.sources import image_id
from palette_dask.tables import SHARD_METADATA_KEY

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def photos(sample_dir):
    return sorted(sample_dir.iterdir())


def palettes_by_id(out) -> dict[str, list[str]]:
    """Each image's own palette as hex codes, by image id."""
    palettes = read_table(out, "palettes").to_pandas()
    return {key: rows["hex"].tolist() for key, rows in palettes.groupby("image_id")}


def partition_uris(out) -> list[list[str]]:
    """The URIs of each partition's ``images`` file, partitions in order."""
    return [
        pq.read_table(path, columns=["uri"]).column(0).to_pylist()
        for path in sorted((Path(out) / "images").glob("part-*.parquet"))
    ]


@pytest.fixture(scope="module")
def loose(photos, client2, tmp_path_factory):
    """The palettes of the loose photographs, by file name."""
    out = tmp_path_factory.mktemp("loose") / "out"
    run_job(JobSpec(input=[str(p) for p in photos], output=str(out)), client=client2)
    by_id = palettes_by_id(out)
    return {photo.name: by_id[image_id(str(photo))] for photo in photos}


def test_shards_and_parquet_files_give_the_palettes_of_the_loose_files(
    photos, loose, client2, tmp_path
):
    shards = tmp_path / "shards"
    shards.mkdir()
    members = webdataset_members(photos)
    corrupt = ("000000099.jpg", b"this member is text, not a JPEG")
    (shards / "shard-000000.tar").write_bytes(shard_bytes([*members[:9], corrupt, members[0]]))
    (shards / "shard-000001.tar").write_bytes(shard_bytes(members[9:]))
    (shards / "notes.md").write_text("not an input")
    train = shards / "train-00000-of-00001.parquet"
    pq.write_table(hf_table(photos, null_row=1), train, row_group_size=2)
    out = tmp_path / "out"
    spec = JobSpec(input=[str(shards)], output=str(out), partition_size=3)

    report = run_job(spec, client=client2)

    n = len(photos)
    # Every photograph twice (a shard member, a Parquet row) but the null cell, the corrupt
    # member, and the member name repeated in the first shard (counted, not processed).
    assert (report.images, report.errors, report.duplicates) == (2 * n + 1, 2, 1)
    assert report.not_images == {".md": 1}
    images = read_table(out, "images").to_pandas().set_index("uri")
    assert images.index.is_unique and images["image_id"].is_unique
    by_id = palettes_by_id(out)
    for i, photo in enumerate(photos):
        shard = shards / f"shard-00000{int(i >= 3)}.tar"
        name = f"{i:09d}{photo.suffix}"
        uri = member_uri(str(shard), name)
        assert images.loc[uri, "image_id"] == image_id(uri)
        assert images.loc[uri, "source_path"] == name
        assert by_id[image_id(uri)] == loose[photo.name], uri
        row = member_uri(str(train), i)
        if i == 1:
            assert images.loc[row, "error"] == "null image cell in column 'image'"
            continue
        assert images.loc[row, "source_path"] == photo.name
        assert by_id[image_id(row)] == loose[photo.name], row
    broken = images.loc[member_uri(str(shards / "shard-000000.tar"), corrupt[0])]
    assert broken["error"].startswith("a text file, not an image")
    assert not any(uri.endswith((".txt", ".json")) for uri in images.index)

    # Partitions follow the containers: a shard is one partition, row groups are never split.
    parts = partition_uris(out)
    shard_parts = [part for part in parts if ".tar#" in part[0]]
    assert sorted(len(part) for part in shard_parts) == [4, n - 3]
    for part in parts:
        assert len({uri.split("#")[0] for uri in part}) == 1
        if ".parquet#" in part[0]:
            rows = [int(uri.split("#")[1]) for uri in part]
            # Whole row groups of 2 (the last has 1), at most partition_size rows.
            assert rows[0] % 2 == 0 and rows == list(range(rows[0], rows[0] + len(rows)))
            assert len(rows) <= 3 and (len(rows) % 2 == 0 or rows[-1] == n - 1)

    # Image ids are stable: a second run over the same inputs gives the same tables.
    again = tmp_path / "again"
    run_job(JobSpec(input=[str(shards)], output=str(again), partition_size=3), client=client2)
    assert_same_dataset(out, again)


def test_a_truncated_or_missing_shard_keeps_what_was_read_and_names_the_shard(
    photos, client1, tmp_path
):
    members = [(f"{i}{p.suffix}", p.read_bytes()) for i, p in enumerate(photos[:3])]
    whole = shard_bytes(members)
    cut = 512 * 2 + len(members[0][1]) + 512 + len(members[1][1]) // 2  # in the 2nd member
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(whole[:cut])
    manifest = tmp_path / "shards.txt"
    manifest.write_text(f"{truncated}\n{tmp_path / 'missing.tar'}\n")
    out = tmp_path / "out"

    report = run_job(JobSpec(input=[str(manifest)], output=str(out)), client=client1)

    assert (report.images, report.ok, report.errors) == (3, 1, 2)
    images = read_table(out, "images").to_pandas().set_index("uri")
    assert images.loc[member_uri(str(truncated), members[0][0]), "status"] == "ok"
    assert images.loc[str(truncated), "error"].startswith("truncated or unreadable tar shard: ")
    missing = images.loc[str(tmp_path / "missing.tar"), "error"]
    assert missing.startswith(f"cannot read tar shard {tmp_path / 'missing.tar'}: ")


# Small photograph-like images: a job over them is mostly its partitions' work.
SIZE = (120, 160)


def write_shard(path: Path, indices) -> None:
    """A tar shard of noisy PNGs, each with a caption beside it."""
    members = []
    for i in indices:
        png = encode(noisy_blocks(i, SIZE), "PNG")
        members += [(f"{i:06d}.png", png), (f"{i:06d}.txt", b"caption")]
    path.write_bytes(shard_bytes(members))


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """12 shards of 10 noisy PNGs and a Parquet file of 40 more in row groups of 8."""
    folder = tmp_path_factory.mktemp("sharded")
    for shard in range(12):
        write_shard(folder / f"shard-{shard:06d}.tar", range(shard * 10, shard * 10 + 10))
    cells = [
        {"bytes": encode(noisy_blocks(i, SIZE), "PNG"), "path": f"{i}.png"} for i in range(120, 160)
    ]
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(
        pa.table({"image": pa.array(cells, image_type)}), folder / "rows.parquet", row_group_size=8
    )
    return folder


@pytest.fixture(scope="module")
def sharded_undisturbed(sharded, client2, tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded-undisturbed") / "out"
    run_job(JobSpec(input=[str(sharded)], output=str(out), partition_size=8), client=client2)
    return out


def test_a_killed_job_over_shards_resumes_to_the_same_tables(
    sharded, sharded_undisturbed, client2, tmp_path
):
    """The command killed mid-job, then the same job run again (here on the session's
    cluster: what is resumed is the dataset on disk)."""
    out = tmp_path / "out"
    command = [
        str(BIN / "palette-dask"),
        "run",
        "-i",
        str(sharded),
        "-o",
        str(out),
        "--workers",
        "2",
        "--partition-size",
        "8",
        "--no-progress",
    ]
    written = kill_when_written(command, out / "images", 3)
    assert written < 17, "the job finished before it could be killed"
    assert json.loads((out / "_job.json").read_text())["status"] == "running"

    second = run_job(
        JobSpec(input=[str(sharded)], output=str(out), partition_size=8), client=client2
    )

    assert second.resumed and second.skipped_partitions >= 3
    assert_same_dataset(out, sharded_undisturbed)
    assert not list(out.rglob(".*.tmp"))


def test_growing_by_a_shard_reads_only_the_new_shard(sharded, client2, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("shard-000000.tar", "shard-000001.tar", "rows.parquet"):
        shutil.copy(sharded / name, inputs / name)
    out = tmp_path / "out"
    spec = JobSpec(input=[str(inputs)], output=str(out), partition_size=8)
    first = run_job(spec, client=client2)
    before = read_table(out, "images")
    # Were the known shard read again, its rows would change: it now holds other images.
    shutil.copy(sharded / "shard-000005.tar", inputs / "shard-000000.tar")
    shutil.copy(sharded / "shard-000002.tar", inputs / "shard-000002.tar")

    grown = run_job(spec, client=client2)

    assert (first.images, grown.images, grown.skipped_images) == (60, 10, 60)
    assert grown.segment == 1 and grown.errors == 0
    images = read_table(out, "images").to_pandas()
    new = images[images.uri.str.startswith(str(inputs / "shard-000002.tar#"))]
    assert len(new) == 10 and len(images) == 70
    assert (
        read_table(out, "images")
        .filter(pads.field("uri").isin(before.column("uri")))
        .select(["image_id", "uri", "status"])
        .equals(before.select(["image_id", "uri", "status"]))
    )
    shard_files = [
        pq.read_schema(path).metadata.get(SHARD_METADATA_KEY.encode())
        for path in sorted((out / "images").glob("part-0001-*.parquet"))
    ]
    assert shard_files == [str(inputs / "shard-000002.tar").encode()]


def test_corpus_mode_rereads_shards_and_rows_as_it_caches_them(sharded, client2, tmp_path):
    inputs = [str(sharded / "shard-000003.tar"), str(sharded / "rows.parquet")]
    cached, reread = tmp_path / "cached", tmp_path / "reread"
    for out, assign in [(cached, "cache"), (reread, "reread")]:
        spec = JobSpec(
            input=inputs,
            output=str(out),
            mode="both",
            corpus_assign=assign,
            partition_size=8,
            sample_per_image=500,  # a small fit: what is compared is how images are found
        )
        report = run_job(spec, client=client2)
        assert report.corpus["images_assigned"] == 50
    assert_same_dataset(cached, reread)
    assert read_table(cached, "corpus_palette").equals(read_table(reread, "corpus_palette"))


def test_a_shard_that_crashes_workers_loses_only_the_crashing_member(photos, sample_dir, tmp_path):
    shard = tmp_path / "shard.tar"
    members = [(f"{i}{p.suffix}", p.read_bytes()) for i, p in enumerate(photos[:4])]
    members.insert(2, ("crash-me.jpg", (sample_dir / "retina.jpg").read_bytes()))
    shard.write_bytes(shard_bytes(members))
    out = tmp_path / "out"
    report = run_with_crashing_decoder(
        JobSpec(input=[str(shard)], output=str(out), partition_size=2), "crash-me"
    )
    assert (report.images, report.errors, report.partitions) == (5, 1, 1)
    images = read_table(out, "images").to_pandas().set_index("uri")
    crashed = images.loc[member_uri(str(shard), "crash-me.jpg")]
    assert "the process decoding this image died" in crashed["error"]
    assert (images.drop(member_uri(str(shard), "crash-me.jpg"))["status"] == "ok").all()
    assert pq.read_table(out / "images").column("uri").to_pylist() == [
        member_uri(str(shard), name) for name, _ in members
    ]


def test_a_dry_run_counts_shards_and_the_partitions_that_follow_containers(sharded, tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "run",
            "-i",
            str(sharded),
            "-o",
            str(tmp_path / "out"),
            "--partition-size",
            "16",
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    # 40 Parquet rows in row groups of 8: two partitions of two row groups, one of one.
    assert "inputs: 40 listed, 40 distinct" in result.output
    assert "tar shards: 12, a partition each" in result.output
    assert "partitions: 15 of up to 16 images" in result.output
    assert not (tmp_path / "out").exists()


def test_shards_written_by_the_webdataset_library_are_read(photos, loose, client2, tmp_path):
    """The README's recipe: a folder of photographs into shards with ``webdataset.ShardWriter``."""
    webdataset = pytest.importorskip("webdataset")
    (tmp_path / "shards").mkdir()
    pattern = str(tmp_path / "shards" / "shard-%06d.tar")
    with webdataset.ShardWriter(pattern, maxcount=4, verbose=0) as sink:
        for photo in photos:
            sink.write({"__key__": photo.stem, photo.suffix[1:]: photo.read_bytes(), "txt": "x"})
    shards = sorted((tmp_path / "shards").glob("*.tar"))
    assert len(shards) == -(-len(photos) // 4)
    out = tmp_path / "out"

    report = run_job(
        JobSpec(input=[str(tmp_path / "shards" / "*.tar")], output=str(out)), client=client2
    )

    assert (report.images, report.errors, report.partitions) == (len(photos), 0, len(shards))
    images = read_table(out, "images").to_pandas()
    by_id = palettes_by_id(out)
    for row in images.itertuples():
        assert by_id[row.image_id] == loose[row.source_path], row.uri
