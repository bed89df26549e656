"""A local HTTP server for the remote benchmark: a folder's files, each after a fixed latency.

Every request waits ``--latency`` seconds (an asyncio sleep, so waits overlap
like a distant server's), then gets the file from memory (or the byte range a
``Range`` header asks for; ``HEAD`` gives the headers alone). It listens on
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
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import unquote

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


class _Files:
    """The folder's files by name, each distinct file read once (linked names share it)."""

    def __init__(self, folder: Path):
        self.root = folder.resolve()
        self._data: dict[tuple[int, int], bytes] = {}

    def get(self, name: str) -> bytes | None:
        path = (self.root / unquote(name)).resolve()
        if path.parent != self.root or not path.is_file():
            return None
        stat = path.stat()
        key = (stat.st_dev, stat.st_ino)
        if key not in self._data:
            self._data[key] = path.read_bytes()
        return self._data[key]


def _response(
    status: str, body: bytes, content_type: str, *, head_only: bool = False, extra: str = ""
) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nAccept-Ranges: bytes\r\n{extra}"
        "Connection: keep-alive\r\n\r\n"
    )
    return head.encode() + (b"" if head_only else body)


def _file_response(data: bytes, request: bytes, head_only: bool) -> bytes:
    """The file, or the byte range a ``Range: bytes=FIRST-LAST`` header asks for."""
    for line in request.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"range":
            first, _, last = value.strip().removeprefix(b"bytes=").partition(b"-")
            start, end = int(first), min(len(data) - 1, int(last) if last else len(data) - 1)
            extra = f"Content-Range: bytes {start}-{end}/{len(data)}\r\n"
            return _response(
                "206 Partial Content",
                data[start : end + 1],
                "application/octet-stream",
                head_only=head_only,
                extra=extra,
            )
    return _response("200 OK", data, "application/octet-stream", head_only=head_only)


async def serve(folder: Path, latency: float, max_seconds: float) -> None:
    """Serve until ``max_seconds`` have passed or the parent process is gone.

    Plain HTTP/1.1 with keep-alive on asyncio streams, files kept in memory:
    the server's own work per request stays far below the job's, so that on a
    machine it shares with the job, the benchmark measures the reads rather
    than the server.
    """
    files = _Files(folder)
    served = {"requests": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                method, target = request.split(b" ", 2)[:2]
                name = target.decode("latin-1").lstrip("/")
                if name == "_stats":
                    writer.write(
                        _response("200 OK", json.dumps(served).encode(), "application/json")
                    )
                else:
                    served["requests"] += 1
                    await asyncio.sleep(latency)
                    data = files.get(name)
                    if data is None:
                        writer.write(_response("404 Not Found", b"not found\n", "text/plain"))
                    else:
                        writer.write(_file_response(data, request, method == b"HEAD"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    parent = os.getppid()
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_seconds
    try:
        while loop.time() < deadline and os.getppid() == parent:
            await asyncio.sleep(0.5)
    finally:
        server.close()


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
