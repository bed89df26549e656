"""A local HTTP server for the remote benchmark: a folder's files, each after a fixed latency.

Every request waits ``--latency`` seconds (an asyncio sleep, so waits overlap
like a distant server's), then gets the file with ``sendfile``. It listens on
127.0.0.1 only, counts the files it served (``GET /_stats`` gives the count as
JSON) and stops by itself after ``--max-seconds``, or as soon as the process
that started it is gone.

Run it in its own process, so that it never holds the benchmark's GIL::

    with LatencyServer(folder, latency=0.2) as server:
        url = server.url("photo00001.jpg")
        ...
        served = server.requests()
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from aiohttp import web

# The server stops after this long whatever happens, so none outlives a benchmark.
MAX_SECONDS = 2 * 3600.0


class LatencyServer:
    """Serves ``folder`` from a child process, ``latency`` seconds before each answer.

    Used as a context manager: entering starts the server and waits for its
    port, leaving terminates it.
    """

    def __init__(self, folder: Path, *, latency: float, max_seconds: float = MAX_SECONDS):
        self.folder = Path(folder)
        self.latency = latency
        self.max_seconds = max_seconds
        self.port: int | None = None
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> LatencyServer:
        command = [
            sys.executable,
            __file__,
            str(self.folder),
            "--latency",
            str(self.latency),
            "--max-seconds",
            str(self.max_seconds),
        ]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        line = self._process.stdout.readline()
        if not line.strip().isdigit():
            self._stop()
            raise RuntimeError(f"the latency server did not report its port, got {line!r}")
        self.port = int(line)
        return self

    def __exit__(self, *exc) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process.stdout.close()
        self._process = None

    def url(self, name: str) -> str:
        """The URL of the file ``name`` of the folder."""
        return f"http://127.0.0.1:{self.port}/{name}"

    def requests(self) -> int:
        """Files served so far (``/_stats`` itself not counted)."""
        with urllib.request.urlopen(self.url("_stats"), timeout=30) as response:
            return json.load(response)["requests"]


def make_app(folder: Path, latency: float) -> web.Application:
    """The server's routes: ``/_stats``, then every file of ``folder`` by name."""
    served = {"requests": 0}
    root = folder.resolve()

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(served)

    async def file(request: web.Request) -> web.StreamResponse:
        served["requests"] += 1
        await asyncio.sleep(latency)
        path = (root / request.match_info["name"]).resolve()
        if path.parent != root or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/_stats", stats)
    app.router.add_get("/{name}", file)
    return app


async def serve(folder: Path, latency: float, max_seconds: float) -> None:
    """Serve until ``max_seconds`` have passed or the parent process is gone."""
    parent = os.getppid()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    runner = web.AppRunner(make_app(folder, latency), access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock, backlog=1024).start()
    print(sock.getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_seconds
    try:
        while loop.time() < deadline and os.getppid() == parent:
            await asyncio.sleep(0.5)
    finally:
        await runner.cleanup()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder whose files are served")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds before each answer")
    parser.add_argument(
        "--max-seconds", type=float, default=MAX_SECONDS, help="stop after this many seconds"
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.folder, args.latency, args.max_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
