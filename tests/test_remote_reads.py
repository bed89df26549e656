"""Remote reads against real HTTP servers on 127.0.0.1 that hang, fail, throttle and cut.

Each job runs on a real Dask cluster; every assertion is on the rows written
and on what the servers saw. Every test ends by itself: reads have deadlines,
and the servers hold no connection longer than ``HANG_LIMIT_SECONDS``.
"""

import shutil
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from faultserver import CUT_AT, FLAKY_FAILURES, RETRY_AFTER, STALL_AT, FaultServer
from imagegen import blocks, encode
from jobtools import invoke
from test_containers import shard_bytes

from palette_dask import JobSpec, extract_palette, open_dataset, run_job
from palette_dask.cluster import describe_cluster, threads_per_worker
from palette_dask.reads import (
    CONTAINER_BLOCK_BYTES,
    CONTAINER_READ_AHEAD,
    ReadError,
    ReadOptions,
    read_many,
    read_tar_shard,
)

# A job in these tests must end well within this; it fails the test otherwise.
JOB_BOUND_SECONDS = 180


@pytest.fixture(scope="module")
def served(tmp_path_factory, sample_dir):
    """Files to serve: a photograph, small block images, and plain 100 KB blobs."""
    folder = tmp_path_factory.mktemp("served")
    shutil.copy(sample_dir / "coffee.jpg", folder / "coffee.jpg")
    rng = np.random.default_rng(0)
    for i in range(12):
        image = blocks(rng.integers(0, 256, (3, 3)), [0.5, 0.3, 0.2], size=(60, 40))
        (folder / f"block{i:02d}.png").write_bytes(encode(image, "PNG"))
    for i in range(20):
        (folder / f"blob{i:02d}.bin").write_bytes(rng.bytes(100_000))
    return folder


def run_bounded(spec: JobSpec, client):
    """Run a job in a thread; fail unless it ends within ``JOB_BOUND_SECONDS``."""
    outcome = {}
    job = threading.Thread(target=lambda: outcome.update(report=run_job(spec, client=client)))
    job.start()
    job.join(timeout=JOB_BOUND_SECONDS)
    assert not job.is_alive(), f"the job did not end within {JOB_BOUND_SECONDS} s"
    return outcome["report"]


def manifest_job(tmp_path, urls, **settings) -> JobSpec:
    """A job over a manifest of ``urls``, writing to ``tmp_path / "out"``."""
    manifest = tmp_path / "urls.txt"
    manifest.write_text("\n".join(urls))
    return JobSpec(input=[str(manifest)], output=str(tmp_path / "out"), **settings)


def rows_by_name(out) -> dict:
    images = open_dataset(str(out)).images
    return {
        uri.rsplit("/", 2)[-2] + "/" + uri.rsplit("/", 1)[-1]: row
        for uri, row in zip(images["uri"], images.to_dict("records"), strict=True)
    }


def test_every_fault_gives_its_row_and_the_job_ends(served, client2, tmp_path):
    with FaultServer(served) as server:
        names = [
            "ok/coffee.jpg",
            "flaky/coffee.jpg",
            "throttle/block00.png",
            "cut/coffee.jpg",
            "missing/nothing.jpg",
            "hang/coffee.jpg",
        ]
        urls = [f"http://127.0.0.1:{server.port}/{name}" for name in names]
        spec = manifest_job(tmp_path, urls, partition_size=3, read_timeout=1, read_retries=2)
        report = run_bounded(spec, client2)
        out = spec.output
        rows = rows_by_name(out)
        size = (served / "coffee.jpg").stat().st_size

        assert report.images == 6 and report.errors == 3
        assert rows["ok/coffee.jpg"]["status"] == "ok"
        # Two 503s, then the image: three requests, and the row is ok.
        assert rows["flaky/coffee.jpg"]["status"] == "ok"
        assert server.count("/flaky/coffee.jpg") == FLAKY_FAILURES + 1
        # 429 with Retry-After: the second request waited at least that long.
        assert rows["throttle/block00.png"]["status"] == "ok"
        first, second = server.times("/throttle/block00.png")
        assert second - first >= RETRY_AFTER
        # A body cut short is a passing failure: tried three times, then an error row.
        assert rows["cut/coffee.jpg"]["error"] == (
            f"connection closed after {CUT_AT:,} of {size:,} bytes (3 tries)"
        )
        assert server.count("/cut/coffee.jpg") == 3
        # 404 is final: one request.
        assert rows["missing/nothing.jpg"]["error"] == "HTTP 404 Not Found"
        assert server.count("/missing/nothing.jpg") == 1
        # A server that never answers: each try ends at the deadline.
        assert rows["hang/coffee.jpg"]["error"] == "timed out after 1 s (3 tries)"
        assert server.count("/hang/coffee.jpg") == 3

    # The bytes are the same wherever they came from, and so are the palettes.
    ds = open_dataset(str(out))
    local = extract_palette(str(served / "coffee.jpg")).hex
    for name in ("ok/coffee.jpg", "flaky/coffee.jpg"):
        colors = ds.palettes[ds.palettes["image_id"] == rows[name]["image_id"]]
        assert colors.sort_values("rank")["hex"].tolist() == local


TIMEOUT = 2


def test_a_hanging_host_does_not_hold_up_the_others(served, client1, tmp_path):
    with FaultServer(served) as hanging, FaultServer(served) as answering:
        # In one task: two URLs of a host that never answers, then twelve of one that does.
        urls = [hanging.url("hang", f"block{i:02d}.png") for i in range(2)]
        urls += [answering.url("ok", f"block{i:02d}.png") for i in range(12)]
        spec = manifest_job(
            tmp_path,
            urls,
            partition_size=16,
            read_concurrency=4,
            read_per_host=2,
            read_timeout=TIMEOUT,
            read_retries=0,
        )
        run_bounded(spec, client1)
        out = spec.output
        start = min(hanging.times("/hang/"))
        # The answering host got every request before the hanging host's first deadline.
        assert max(answering.times("/ok/")) - start < TIMEOUT
    rows = rows_by_name(out)
    hung = [row for name, row in rows.items() if name.startswith("hang/")]
    assert [row["error"] for row in hung] == [f"timed out after {TIMEOUT} s"] * 2
    assert all(row["status"] == "ok" for name, row in rows.items() if name.startswith("ok/"))


def test_without_a_host_cap_a_hanging_host_takes_every_slot(served):
    with FaultServer(served) as hanging, FaultServer(served) as answering:
        urls = [hanging.url("hang", f"block{i:02d}.png") for i in range(4)]
        urls += [answering.url("ok", f"block{i:02d}.png") for i in range(4)]
        options = ReadOptions(concurrency=4, per_host=4, timeout=TIMEOUT, retries=0)
        started = time.monotonic()
        outcomes = dict(read_many(urls, options))
        assert all(isinstance(outcomes[i], ReadError) for i in range(4))
        assert all(isinstance(outcomes[i], bytes) for i in range(4, 8))
        # The answering host's first request waited for the first deadline, which runs
        # from the start of a read: after `started`, however slowly its request went out.
        assert min(answering.times("/ok/")) - started >= 0.99 * TIMEOUT


def blob_urls(server, n=20):
    return [server.url("ok", f"blob{i:02d}.bin") for i in range(n)]


def test_bytes_read_ahead_stay_within_the_budget(served):
    with FaultServer(served, delay=0.1) as server:
        options = ReadOptions(concurrency=16, per_host=16, buffer_bytes=350_000)
        # A first pass teaches the reader the size of these files.
        assert len(list(read_many(blob_urls(server), options))) == 20
        server.max_active = 0
        read = dict(read_many(blob_urls(server), options))
        assert sorted(read) == list(range(20))
        assert all(len(data) == 100_000 for data in read.values())
        assert server.max_active <= 3  # 3 x 100 KB within 350 KB

        server.max_active = 0
        roomy = ReadOptions(concurrency=16, per_host=16, buffer_bytes=100 * 2**20)
        assert len(dict(read_many(blob_urls(server), roomy))) == 20
        assert server.max_active >= 8


def test_a_read_never_waits_beyond_its_deadline(served):
    with FaultServer(served) as server:
        options = ReadOptions(timeout=0.5, retries=1)
        [(index, outcome)] = list(read_many([server.url("hang", "coffee.jpg")], options))
        assert index == 0 and isinstance(outcome, ReadError)
        assert str(outcome) == "timed out after 0.5 s (2 tries)"
        assert server.count("/hang/") == 2


def test_an_oversized_file_is_refused_from_its_headers(served):
    with FaultServer(served) as server:
        options = ReadOptions(max_file_bytes=50_000)
        [(_, outcome)] = list(read_many([server.url("ok", "blob00.bin")], options))
        assert str(outcome) == "file is 100,000 bytes, over max_file_bytes=50,000"


def local_spec(folder, tmp_path) -> JobSpec:
    return JobSpec(input=[str(folder)], output=str(tmp_path / "local"), partition_size=3)


def test_the_command_reads_urls_on_two_thread_workers_to_the_same_palettes(
    sample_dir, client2, tmp_path
):
    names = sorted(p.name for p in sample_dir.iterdir())
    with FaultServer(sample_dir, delay=0.05) as server:
        manifest = tmp_path / "urls.txt"
        manifest.write_text("\n".join(server.url("ok", name) for name in names))
        spec = JobSpec(input=[str(manifest)], output=str(tmp_path / "remote"), workers=2)
        assert "worker process(es) of two threads" in describe_cluster(spec)
        assert threads_per_worker(local_spec(sample_dir, tmp_path)) == 1
        args = ["run", "-i", manifest, "-o", tmp_path / "remote", "--workers", "2"]
        result = invoke(*args, "--partition-size", "2", "--no-progress")
        assert result.returncode == 0, result.stderr
        assert server.count("/ok/") == len(names)  # one request per image
    run_job(local_spec(sample_dir, tmp_path), client=client2)

    def colors(out):
        ds = open_dataset(str(out))
        names = ds.images.set_index("image_id")["uri"].map(lambda uri: uri.rsplit("/", 1)[-1])
        table = ds.palettes.assign(name=ds.palettes["image_id"].map(names))
        return table.drop(columns="image_id").sort_values(["name", "rank"]).reset_index(drop=True)

    assert len(colors(tmp_path / "remote")) > 0
    assert colors(tmp_path / "remote").equals(colors(tmp_path / "local"))


def test_a_shard_over_http_is_read_by_ranges_and_never_waits_forever(served, tmp_path):
    """A shard larger than a read block: a stalled block ends it with an error, in time."""
    members = [
        ("0.jpg", (served / "coffee.jpg").read_bytes()),
        ("0.bin", np.random.default_rng(1).bytes(CONTAINER_BLOCK_BYTES)),
        ("1.png", (served / "block00.png").read_bytes()),
    ]
    shard = shard_bytes(members)
    (tmp_path / "shard.tar").write_bytes(shard)
    assert len(shard) > CONTAINER_BLOCK_BYTES > STALL_AT
    options = ReadOptions(timeout=0.5, retries=1)
    with FaultServer(tmp_path) as server:
        whole = list(read_tar_shard(server.url("ok", "shard.tar"), options))
        assert [(m.source_path, m.data) for m in whole] == [members[0], members[2]]
        # One size request, then one ranged request per block.
        assert server.count("/ok/") == 3
        stalled = list(read_tar_shard(server.url("stall", "shard.tar"), options))
    assert [m.data for m in stalled[:-1]] == [members[0][1]]
    assert stalled[-1].uri == server.url("stall", "shard.tar")
    assert stalled[-1].error == "truncated or unreadable tar shard: timed out after 0.5 s (2 tries)"


def test_a_shards_next_blocks_are_on_their_way_while_one_is_used(served, tmp_path):
    """Read-ahead: the shard is read from the start of its task, and the blocks after the one
    in use are asked for at once, each only once."""
    members = [
        ("0.jpg", (served / "coffee.jpg").read_bytes()),
        ("0.bin", np.random.default_rng(2).bytes(3 * CONTAINER_BLOCK_BYTES)),
        ("1.png", (served / "block00.png").read_bytes()),
    ]
    (tmp_path / "shard.tar").write_bytes(shard_bytes(members))
    blocks = -(-(tmp_path / "shard.tar").stat().st_size // CONTAINER_BLOCK_BYTES)
    assert blocks > CONTAINER_READ_AHEAD + 1
    with FaultServer(tmp_path, delay=0.2) as server:
        shard = read_tar_shard(server.url("ok", "shard.tar"), ReadOptions(timeout=10))
        # The shard is read from the call on, before any of its images is asked for.
        deadline = time.monotonic() + 30
        while server.count("/ok/") < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.count("/ok/") >= 2
        read = list(shard)
        ranged = server.count("/ok/") - 1  # the size request
        most_at_once = server.max_active
    assert [(m.source_path, m.data) for m in read] == [members[0], members[2]]
    # The member in the middle is skipped, so not every block is needed; none is asked twice.
    assert ranged <= blocks
    assert most_at_once >= CONTAINER_READ_AHEAD + 1


def test_named_remote_inputs_are_checked_together_and_listed_without_a_request(served):
    """Each named URL is asked about once, the asks overlapping, and an image or a shard
    named by its URL is listed without asking the server whether it is a folder."""
    from palette_dask.sources import check_inputs, iter_uris

    names = [f"block{i:02d}.png" for i in range(8)]
    with FaultServer(served, delay=0.3) as server:
        urls = [server.url("ok", name) for name in names]
        check_inputs(urls)
        checked = server.count("/ok/")
        overlapping = server.max_active
        assert list(iter_uris(urls)) == urls
        listed = server.count("/ok/") - checked
        with pytest.raises(FileNotFoundError, match=r"missing\.png"):
            check_inputs([*urls[:2], server.url("missing", "missing.png")])
    assert checked == len(urls)
    assert overlapping > 1
    assert listed == 0


def test_a_parquet_file_named_by_its_url_is_listed_from_its_footer(served, tmp_path):
    """Its rows are listed from a read of its footer, not a download of the file (which is
    what asking an HTTP server whether a URL is a folder costs)."""
    from palette_dask.sources import iter_uris

    blobs = sorted(served.glob("blob*.bin"))
    pq.write_table(pa.table({"image": [p.read_bytes() for p in blobs]}), tmp_path / "t.parquet")
    size = (tmp_path / "t.parquet").stat().st_size
    with FaultServer(tmp_path) as server:
        url = server.url("ok", "t.parquet")
        assert list(iter_uris([url])) == [f"{url}#{row}" for row in range(len(blobs))]
        asked, sent = server.count("/ok/"), server.body_bytes
    assert size > 1_000_000
    assert asked <= 2
    assert sent < size / 10
