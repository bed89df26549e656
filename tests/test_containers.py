"""Tar shards and Parquet image columns, read as streams of images."""

import io
import tarfile
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from jobtools import read_table

from palette_dask import JobSpec, extract_palette, run_job
from palette_dask.cluster import threads_per_worker
from palette_dask.containers import (
    image_column,
    iter_parquet,
    iter_tar,
    member_uri,
    split_member_uri,
)
from palette_dask.imaging import ImageError
from palette_dask.reads import ReadOptions, read_many
from palette_dask.sources import IMAGE_EXTENSIONS, image_id, iter_uris


class SequentialOnly(io.RawIOBase):
    """A file that can only be read front to back, as a network stream is."""

    def __init__(self, data: bytes):
        self._data, self._position = data, 0

    def readable(self):
        return True

    def readinto(self, buffer):
        chunk = self._data[self._position : self._position + len(buffer)]
        buffer[: len(chunk)] = chunk
        self._position += len(chunk)
        return len(chunk)


def shard_bytes(members: list[tuple[str, bytes]], format: int = tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=format) as tar:
        for name, body in members:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photos(sample_dir):
    return sorted(sample_dir.iterdir())


def webdataset_members(photos) -> list[tuple[str, bytes]]:
    """Each photograph under a WebDataset key, with a caption and metadata beside it."""
    members = []
    for i, photo in enumerate(photos):
        key = f"{i:09d}"
        members += [
            (f"{key}{photo.suffix}", photo.read_bytes()),
            (f"{key}.txt", f"caption of {photo.name}".encode()),
            (f"{key}.json", b'{"width": 0}'),
        ]
    return members


def test_tar_members_give_the_palettes_of_the_loose_files(photos):
    shard = shard_bytes(webdataset_members(photos))
    members = list(iter_tar(SequentialOnly(shard), "s3://b/shard-000042.tar", IMAGE_EXTENSIONS))
    assert [m.source_path for m in members] == [f"{i:09d}{p.suffix}" for i, p in enumerate(photos)]
    assert members[0].uri == f"s3://b/shard-000042.tar#000000000{photos[0].suffix}"
    for member, photo in zip(members, photos, strict=True):
        assert member.error is None
        assert extract_palette(member.data).hex == extract_palette(str(photo)).hex
    ids = [image_id(m.uri) for m in members]
    assert len(set(ids)) == len(ids) and ids == [image_id(m.uri) for m in members]


def test_corrupt_member_is_bytes_that_fail_to_decode(photos):
    shard = shard_bytes([("0.jpg", b"not a jpeg at all"), ("1.png", photos[0].read_bytes())])
    first, second = iter_tar(io.BytesIO(shard), "shard.tar", IMAGE_EXTENSIONS)
    with pytest.raises(ImageError, match="a text file, not an image"):
        extract_palette(first.data)
    assert second.data == photos[0].read_bytes()


def test_truncated_shard_keeps_whole_members_and_names_the_shard(photos):
    members = [(f"{i}.jpg", p.read_bytes()) for i, p in enumerate(photos[:3])]
    shard = shard_bytes(members)
    cut = 512 * 2 + len(members[0][1]) + 512 + len(members[1][1]) // 2  # inside the 2nd member
    read = list(iter_tar(io.BytesIO(shard[:cut]), "/data/shard.tar", IMAGE_EXTENSIONS))
    assert [m.uri for m in read] == ["/data/shard.tar#0.jpg", "/data/shard.tar"]
    assert read[0].data == members[0][1]
    assert read[1].data is None and read[1].error.startswith("truncated or unreadable tar shard")


@pytest.mark.parametrize(
    "format", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT], ids=str
)
def test_long_and_non_ascii_member_names_are_read_as_tar_writes_them(format):
    """pax records, GNU long names and the ustar prefix each carry names over 100 bytes."""
    names = [f"{'d' * 90}/{'e' * 60}/0001.jpg", "0002.jpg", "café-0003.jpg"]
    if format == tarfile.USTAR_FORMAT:
        names = names[:2]  # ustar has no way to write a non-ASCII name
    members = [(name, f"body {i}".encode() * 100) for i, name in enumerate(names)]
    read = list(iter_tar(io.BytesIO(shard_bytes(members, format)), "s.tar", IMAGE_EXTENSIONS))
    assert [(m.source_path, m.data) for m in read] == members


def test_a_shard_cut_between_members_or_with_a_damaged_header_names_the_shard():
    members = [(f"{i}.jpg", bytes([i]) * 700) for i in range(3)]
    shard = shard_bytes(members)
    second_header = 512 + 1024  # the first member's header and its 700 bytes, padded
    cut = list(iter_tar(io.BytesIO(shard[:second_header]), "s.tar", IMAGE_EXTENSIONS))
    assert [m.source_path for m in cut] == ["0.jpg", None]
    assert cut[1].error == (
        "truncated or unreadable tar shard: the shard ends at byte 1,536, "
        "before its end-of-archive block"
    )
    damaged = bytearray(shard)
    damaged[second_header + 10] ^= 0xFF  # inside the second member's name
    read = list(iter_tar(io.BytesIO(bytes(damaged)), "s.tar", IMAGE_EXTENSIONS))
    assert [m.source_path for m in read] == ["0.jpg", None]
    assert read[1].uri == "s.tar" and "damaged header at byte 1,536" in read[1].error


def test_members_over_the_size_limit_are_passed_over_not_read():
    members = [("big.jpg", b"x" * 5000), ("small.jpg", b"y" * 10)]
    stream = io.BytesIO(shard_bytes(members))
    big, small = iter_tar(stream, "s.tar", IMAGE_EXTENSIONS, limit=1000)
    assert big.data is None and big.error == "file is 5,000 bytes, over max_file_bytes=1,000"
    assert small.data == b"y" * 10


@pytest.mark.parametrize("compression", ["gz", "bz2", "xz"])
def test_compressed_shards_are_read_as_streams(compression):
    # Bodies that do not compress, so that half the stream holds a whole member.
    members = [(f"{i}.jpg", np.random.default_rng(i).bytes(3000)) for i in range(3)]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}") as tar:
        for name, body in members:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    whole = buffer.getvalue()
    read = list(iter_tar(SequentialOnly(whole), f"s.tar.{compression}", IMAGE_EXTENSIONS))
    assert [(m.source_path, m.data) for m in read] == members
    cut = list(iter_tar(io.BytesIO(whole[: len(whole) // 2]), "s.tar", IMAGE_EXTENSIONS))
    assert cut[-1].uri == "s.tar" and cut[-1].error.startswith("truncated or unreadable")
    if compression != "bz2":  # bzip2 gives nothing of a block until its end
        assert len(cut) > 1
    assert all(m.data == body for m, (_, body) in zip(cut[:-1], members, strict=False))


def hf_table(photos, null_row: int | None = None) -> pa.Table:
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    cells = [{"bytes": p.read_bytes(), "path": p.name} for p in photos]
    if null_row is not None:
        cells[null_row] = None
    labels = pa.array(range(len(photos)), pa.int64())
    return pa.table({"image": pa.array(cells, image_type), "label": labels})


def test_parquet_rows_give_the_palettes_of_the_loose_files(tmp_path, photos):
    path = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(hf_table(photos, null_row=2), path, row_group_size=2)
    parquet = pq.ParquetFile(path)
    assert parquet.metadata.num_row_groups > 1
    members = list(iter_parquet(parquet, str(path), image_column(parquet.schema_arrow)))
    assert [m.uri for m in members] == [member_uri(str(path), i) for i in range(len(photos))]
    for i, (member, photo) in enumerate(zip(members, photos, strict=True)):
        if i == 2:
            assert member.data is None and member.error == "null image cell in column 'image'"
            continue
        assert member.source_path == photo.name
        assert extract_palette(member.data).hex == extract_palette(str(photo)).hex
    later = list(iter_parquet(parquet, str(path), "image", row_groups=[1]))
    assert [m.uri for m in later] == [member_uri(str(path), 2), member_uri(str(path), 3)]


def test_image_column_is_chosen_by_name_type_or_the_spec():
    binary, text = pa.binary(), pa.string()
    assert image_column(pa.schema([("jpeg", binary), ("caption", text)])) == "jpeg"
    assert image_column(pa.schema([("uri", text)])) is None
    two = pa.schema([("thumb", binary), ("full", binary)])
    with pytest.raises(ValueError, match="several image columns"):
        image_column(two)
    assert image_column(two, "full") == "full"
    with pytest.raises(ValueError, match="'caption' is not a column of images"):
        image_column(pa.schema([("jpeg", binary), ("caption", text)]), "caption")


def test_read_many_reads_members_of_containers_once_each(tmp_path, photos):
    shard = tmp_path / "shard-000001.tar"
    shard.write_bytes(shard_bytes(webdataset_members(photos)))
    table = tmp_path / "train.parquet"
    pq.write_table(hf_table(photos, null_row=1), table, row_group_size=2)
    uris = [
        str(photos[0]),
        member_uri(str(shard), f"000000002{photos[2].suffix}"),
        member_uri(str(table), 3),
        member_uri(str(shard), f"000000000{photos[0].suffix}"),
        member_uri(str(table), 1),
        member_uri(str(shard), "000000000.txt"),
        member_uri(str(tmp_path / "missing.tar"), "0.jpg"),
    ]
    with read_many(uris, ReadOptions()) as reads:
        outcomes = dict(reads)
    assert sorted(outcomes) == list(range(len(uris)))
    assert outcomes[0] == outcomes[3] == photos[0].read_bytes()
    assert outcomes[1] == photos[2].read_bytes() and outcomes[2] == photos[3].read_bytes()
    assert str(outcomes[4]) == "null image cell in column 'image'"
    assert str(outcomes[5]) == f"{shard} has no image '000000000.txt'"
    assert str(outcomes[6]).startswith(f"cannot read {tmp_path / 'missing.tar'}: ")


def test_member_uris_are_split_after_the_container_name():
    assert split_member_uri("s3://b/a.tar#x#1.jpg") == ("s3://b/a.tar", "x#1.jpg")
    assert split_member_uri("/photos/a#1.jpg") is None
    assert split_member_uri("/data/shard.tar") is None


def test_parquet_inputs_list_one_uri_per_row_from_their_footer(tmp_path, photos):
    pq.write_table(hf_table(photos), tmp_path / "train-0.parquet", row_group_size=2)
    pq.write_table(pa.table({"uri": [str(photos[0])]}), tmp_path / "manifest.parquet")
    train = str(tmp_path / "train-0.parquet")
    rows = [member_uri(train, i) for i in range(len(photos))]
    assert list(iter_uris([train])) == rows
    skipped = Counter()
    assert list(iter_uris([str(tmp_path / "*.parquet")], skipped=skipped)) == rows
    assert skipped == {".parquet": 1}  # the manifest, found by the glob
    assert list(iter_uris([str(tmp_path / "manifest.parquet")])) == [str(photos[0])]


def test_a_job_over_a_parquet_file_gives_the_palettes_of_the_loose_files(tmp_path, photos, client1):
    table = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(hf_table(photos, null_row=1), table, row_group_size=2)
    spec = JobSpec(input=[str(table)], output=str(tmp_path / "out"), partition_size=3)
    report = run_job(spec, client=client1)
    assert (report.images, report.ok, report.errors) == (len(photos), len(photos) - 1, 1)
    images = read_table(tmp_path / "out", "images").to_pandas().set_index("uri")
    palettes = read_table(tmp_path / "out", "palettes").to_pandas()
    for row, photo in enumerate(photos):
        uri = member_uri(str(table), row)
        assert images.loc[uri, "image_id"] == image_id(uri)
        if row == 1:
            assert images.loc[uri, "error"] == "null image cell in column 'image'"
            continue
        hexes = palettes[palettes.image_id == image_id(uri)].sort_values("rank")["hex"].tolist()
        assert hexes == extract_palette(str(photo)).hex


def test_compressed_shards_are_streams_too_and_links_are_errors(tmp_path, photos):
    members = [(f"{i}{p.suffix}", p.read_bytes()) for i, p in enumerate(photos[:2])]
    shard = tmp_path / "shard.tar.gz"
    with tarfile.open(shard, "w:gz") as tar:
        for name, body in members:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        link = tarfile.TarInfo("copy.jpg")
        link.type, link.linkname = tarfile.LNKTYPE, members[0][0]
        tar.addfile(link)
    with open(shard, "rb") as f:
        read = list(iter_tar(SequentialOnly(f.read()), str(shard), IMAGE_EXTENSIONS))
    assert [(m.source_path, m.data) for m in read[:2]] == members
    assert read[2].uri == member_uri(str(shard), "copy.jpg") and read[2].data is None
    assert read[2].error.startswith(f"a link to {members[0][0]}, not a file")
    assert list(iter_uris([str(tmp_path)])) == [str(shard)]


def test_a_local_parquet_file_of_images_needs_no_thread_for_the_network(tmp_path, photos):
    """A Parquet file of images is a container; one of URIs, a manifest of remote images."""
    images = tmp_path / "train.parquet"
    pq.write_table(hf_table(photos[:2]), images)
    manifest = tmp_path / "uris.parquet"
    pq.write_table(pa.table({"uri": ["http://127.0.0.1:9/a.jpg"]}), manifest)
    out = str(tmp_path / "out")
    assert threads_per_worker(JobSpec(input=[str(images)], output=out)) == 1
    assert threads_per_worker(JobSpec(input=[str(manifest)], output=out)) == 2
    assert threads_per_worker(JobSpec(input=[str(images), str(manifest)], output=out)) == 2
