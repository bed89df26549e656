"""The search service: a real server on 127.0.0.1, its API against the CLI, bad requests,
many clients at once, and its page in a real browser."""

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import yarl
from browser import Chromium, find_chromium
from imagegen import blocks, encode
from jobtools import invoke

from palette_dask import JobSpec, open_dataset, run_job

BLUE, ORANGE, GREY = (21, 101, 161), (223, 140, 24), (128, 128, 128)
WHITE, GREEN = (250, 250, 250), (40, 160, 60)
CONTENT = {
    "blue70": ([BLUE, GREY], [0.7, 0.3]),
    "blue40": ([BLUE, WHITE], [0.4, 0.6]),
    "orange60": ([ORANGE, GREY], [0.6, 0.4]),
    "both35": ([BLUE, ORANGE, GREY], [0.35, 0.35, 0.3]),
    "both25": ([WHITE, ORANGE, BLUE], [0.5, 0.25, 0.25]),
    "green": ([GREEN, WHITE], [0.55, 0.45]),
}
PHOTOS = ("coffee.jpg", "astronaut.jpg")


@pytest.fixture(scope="module")
def images(tmp_path_factory, sample_dir):
    folder = tmp_path_factory.mktemp("served-images")
    for name, (colors, shares) in CONTENT.items():
        (folder / f"{name}.png").write_bytes(encode(blocks(colors, shares, size=(80, 100)), "PNG"))
    for photo in PHOTOS:
        (folder / photo).write_bytes((sample_dir / photo).read_bytes())
    return folder


def start_service(out: Path, kind: str) -> tuple[subprocess.Popen, str]:
    """``palette-dask serve OUT`` on a free port of 127.0.0.1; the process and its URL."""
    command = [str(Path(sys.executable).parent / "palette-dask"), "serve", str(out)]
    command += ["--port", "0", "--kind", kind]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    line = ""
    while "serving" not in line:
        line = process.stderr.readline()
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the service did not start: {line}")
    url = line.split(" at ")[-1].strip()
    assert url.startswith("http://127.0.0.1:")
    return process, url


@pytest.fixture(scope="module")
def both(images, client2, tmp_path_factory):
    """A dataset of both kinds of palettes; the corpus ones indexed."""
    out = tmp_path_factory.mktemp("served") / "out"
    run_job(JobSpec(input=[str(images)], output=str(out), mode="both", corpus_k=8), client2)
    # The service opens an index, or arrays built from the tables.
    assert invoke("index", out, "--kind", "corpus").returncode == 0
    return out


@pytest.fixture(scope="module", params=["image", "corpus"])
def served(request, both):
    """The service of each kind of palettes: ``(out, url, kind)``."""
    out = both
    process, url = start_service(out, request.param)
    yield out, url, request.param
    # Ctrl-C, or SIGTERM as a service manager stops it: either way a clean exit.
    process.send_signal({"image": signal.SIGINT, "corpus": signal.SIGTERM}[request.param])
    try:
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()  # a no-op once it has exited


def get(url: str, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    """``(status, content type, body)`` of one request, its path sent as written."""

    async def fetch():
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, yarl.URL(url.rstrip("/") + path, encoded=True)) as answer,
        ):
            return answer.status, answer.content_type, await answer.read()

    return asyncio.run(fetch())


def api(url: str, path: str):
    status, kind, body = get(url, path)
    assert (status, kind) == (200, "application/json"), body[:300]
    return json.loads(body)


def cli_search(out: Path, kind: str, *args) -> list[dict]:
    done = invoke("search", out, "--kind", kind, *args, "--json")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_api_rankings_are_the_cli_s(served, images):
    out, url, kind = served
    two = "color=%231565a1&color=%23df8c18"
    for query, args in [
        (f"{two}&top=10", ["--color", "#1565a1", "--color", "#df8c18", "--top", "10"]),
        (
            f"{two}&weight=20&weight=80&top=10",
            ["--color", "#1565a1", "--color", "#df8c18", "--weight", "20", "--weight", "80"],
        ),
        ("color=%23808080&radius=40&top=5", ["--color", "#808080", "--radius", "40", "--top", "5"]),
    ]:
        found = api(url, f"/api/search?{query}")["results"]
        assert found and found == cli_search(out, kind, *args)[: len(found)]
    photo = api(url, "/api/search?color=%23808080&top=50")["results"][0]["image_id"]
    like = api(url, f"/api/like/{photo}?top=7")["results"]
    assert len(like) == 7 and like[0]["image_id"] == photo and like[0]["score"] == 0
    assert like == cli_search(out, kind, "--like", photo, "--top", "7")


def test_image_details_and_pictures_are_render_s(served, tmp_path):
    out, url, kind = served
    first = api(url, "/api/search?color=%23df8c18&top=1")["results"][0]["image_id"]
    details = api(url, f"/api/images/{first}")
    assert (details["image_id"], details["status"], details["kind"]) == (first, "ok", kind)
    assert details["width"] > 0 and abs(sum(c["share"] for c in details["palette"]) - 1) < 1e-3
    assert all(("corpus_index" in c) == (kind == "corpus") for c in details["palette"])
    rows = open_dataset(str(out)).palettes.query("image_id == @first and palette_kind == @kind")
    rows = rows.sort_values("rank")
    assert [c["hex"] for c in details["palette"]] == rows["hex"].tolist()
    assert [c["share"] for c in details["palette"]] == rows["proportion"].tolist()
    if kind == "corpus":
        assert [c["corpus_index"] for c in details["palette"]] == rows["corpus_index"].tolist()
    done = invoke("render", out, "--image", first, "--out", tmp_path, "--kind", kind)
    assert done.returncode == 0, done.stderr
    for which in ("swatches", "redrawn"):
        status, content, png = get(url, f"/api/images/{first}/{which}.png")
        assert (status, content) == (200, "image/png")
        (drawn,) = tmp_path.glob(f"*.{which}.png")
        assert png == drawn.read_bytes()
    small = get(url, f"/api/images/{first}/redrawn.png?size=40")[2]
    assert small.startswith(b"\x89PNG") and len(small) < len(png)


def test_bad_requests_get_a_4xx_and_a_json_error(served):
    _, url, _ = served
    ok = api(url, "/api/search?color=%23df8c18&top=1")["results"][0]["image_id"]
    red = "color=%23c81e28"
    bad = [
        ("/api/search", 400, "give at least one `color`"),
        ("/api/search?color=zz", 400, "hex code"),
        ("/api/search?color=%23c81e2", 400, "hex code"),
        (f"/api/search?{red}&weight=1&weight=2", 400, "one `weight` per colour"),
        (f"/api/search?{red}&weight=-1", 400, "positive"),
        (f"/api/search?{red}&weight=nan", 400, "positive"),
        (f"/api/search?{red}&top=-1", 400, "between 1 and 200"),
        (f"/api/search?{red}&top={10**9}", 400, "between 1 and 200"),
        (f"/api/search?{red}&top=ten", 400, "must be a number"),
        (f"/api/search?{red}&top=1&top=2", 400, "at most once"),
        (f"/api/search?{red}&radius=0", 400, "between"),
        ("/api/search?" + "&".join([red] * 9), 400, "at most 8 colours"),
        (f"/api/search?{red}&x={'a' * 100_000}", 414, "longer than 4096 bytes"),
        ("/api/like/not-an-image-id", 400, "32 lowercase hex digits"),
        ("/api/like/" + "0" * 32, 404, "0" * 32),
        ("/api/like/..%2F..%2F..%2Fetc%2Fpasswd", None, ""),
        ("/api/images/../../../../etc/passwd", 404, ""),
        ("/api/images/" + "0" * 32, 404, "no image"),
        ("/api/images/" + "0" * 32 + "/redrawn.png", 404, "palette"),
        (f"/api/images/{ok}/redrawn.png?size=99999", 400, "`size`"),
        (f"/api/images/{ok}/original.png", 404, ""),
        ("/static/..%2F__init__.py", 404, ""),
        ("/static/serve.py", 404, "no static file"),
        ("/../../../../etc/passwd", 404, ""),
        ("/no/such/page", 404, ""),
    ]
    assert len(bad) >= 15
    for path, status, message in bad:
        got, kind, body = get(url, path)
        assert (got if status else got // 100) == (status or 4), (path, got, body[:200])
        assert kind == "application/json", path
        assert message in json.loads(body)["error"], (path, body[:200])
        assert b"Traceback" not in body
    got, kind, body = get(url, "/api/search", method="POST")
    assert (got, kind) == (405, "application/json") and "error" in json.loads(body)
    assert api(url, "/healthz")["status"] == "ok"  # and it keeps answering


def test_many_clients_at_once_get_the_answers_one_gets(served):
    _, url, _ = served
    paths = [
        "/api/search?color=%231565a1&top=5",
        "/api/search?color=%23df8c18&color=%23808080&weight=3&weight=1",
        "/api/stats",
    ]
    alone = {path: get(url, path) for path in paths}

    async def clients():
        async with aiohttp.ClientSession() as session:

            async def one(path):
                async with session.get(url.rstrip("/") + path) as answer:
                    return path, (answer.status, answer.content_type, await answer.read())

            return await asyncio.gather(*(one(paths[i % 3]) for i in range(48)))

    for path, answer in asyncio.run(clients()):
        assert answer == alone[path]


@pytest.mark.skipif(
    find_chromium() is None,
    reason="no Chromium on this machine (make test installs Debian's chromium package when it "
    "can; here it could not)",
)
@pytest.mark.parametrize("served", ["image"], indirect=True)  # the page is the same for both
def test_the_page_in_a_real_browser_shows_the_api_s_results(served):
    _, url, _ = served
    query = "color=%231565a1&color=%23df8c18&weight=60&weight=40"
    expected = [r["image_id"] for r in api(url, f"/api/search?{query}&top=24")["results"]]
    browser = Chromium(find_chromium())
    try:
        page = browser.page()
        page.open(f"{url}?{query}")
        shown = "[...document.querySelectorAll('#results .result')].map(e => e.dataset.imageId)"
        wait_for(page, f"{shown}.length > 0")
        assert page.evaluate(shown) == expected
        assert page.evaluate("document.querySelectorAll('#colors .row').length") == 2
        wait_for(page, "document.querySelectorAll('#dominant button').length > 0")
        # A click on a result searches for palettes like it; the URL keeps the query.
        first = expected[0]
        page.evaluate("document.querySelector('#results .result').click()")
        wait_for(page, f"document.getElementById('results').dataset.query === 'like={first}'")
        liked = [r["image_id"] for r in api(url, f"/api/like/{first}?top=24")["results"]]
        assert page.evaluate(shown) == liked
        assert page.evaluate("location.search") == f"?like={first}"
        wait_for(page, "[...document.images].every(i => i.complete && i.naturalWidth > 0)")
        assert page.errors == []
    finally:
        browser.close()


def wait_for(page, condition: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not page.evaluate(condition):
        if time.monotonic() > deadline:
            raise TimeoutError(condition)
        wait = "new Promise(r => setTimeout(r, 50))"
        page.call("Runtime.evaluate", expression=wait, awaitPromise=True)


def test_serve_help_says_what_0_0_0_0_exposes():
    done = invoke("serve", "--help")
    assert done.returncode == 0 and "0.0.0.0" in done.stdout and "read only" in done.stdout
