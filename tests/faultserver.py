"""A real HTTP server on 127.0.0.1 that fails in chosen ways, for the remote-read tests.

The server speaks plain HTTP/1.1 over asyncio streams, in a thread of the test
process, so that it can misbehave below what an HTTP framework allows (close a
connection in the middle of a body, accept a request and never answer). The
path's first segment says what happens to a request:

==============  ==========================================================
``/ok/NAME``    the file, after ``delay`` seconds
``/hang/NAME``  nothing: the connection stays open, unanswered
``/flaky/NAME`` ``503 Service Unavailable`` for the first ``FLAKY_FAILURES``
                requests of that path, then the file
``/throttle/NAME``  ``429 Too Many Requests`` with ``Retry-After:
                RETRY_AFTER`` for the first request of that path, then the file
``/cut/NAME``   headers announcing the whole file, ``CUT_AT`` bytes of it, then
                the connection is closed
``/stall/NAME`` the file, but a request for a byte range that starts at or past
                ``STALL_AT`` is never answered
anything else   ``404 Not Found``
==============  ==========================================================

Answers honour ``HEAD`` and a ``Range: bytes=START-END`` header (``206 Partial
Content``). Every request is recorded with its path and arrival time (``time.monotonic``),
and the server tracks how many requests it is answering at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path

FLAKY_FAILURES = 2
RETRY_AFTER = 2
CUT_AT = 1024
STALL_AT = 64 * 1024
# No connection is held longer than this, so the server always stops.
HANG_LIMIT_SECONDS = 120


class FaultServer:
    """Serves the files of ``folder`` with the faults above; a context manager.

    Parameters
    ----------
    folder : Path
        Files served by name.
    delay : float
        Seconds every answered request waits before its answer.
    """

    def __init__(self, folder: Path, *, delay: float = 0.0):
        self.folder = Path(folder)
        self.delay = delay
        self.requests: list[tuple[float, str]] = []
        self.active = 0
        self.max_active = 0
        self.closed_hanging: list[float] = []
        # Bytes of the answers' bodies, for the tests of what is read.
        self.body_bytes = 0
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server = None
        self.port = 0

    def url(self, kind: str, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{kind}/{name}"

    def count(self, path_part: str) -> int:
        """Requests whose path contains ``path_part``."""
        with self._lock:
            return sum(1 for _, path in self.requests if path_part in path)

    def times(self, path_part: str) -> list[float]:
        with self._lock:
            return [t for t, path in self.requests if path_part in path]

    def __enter__(self) -> FaultServer:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop
        ).result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc) -> None:
        async def stop():
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            request = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        method, target = request.split(b" ", 2)[:2]
        path = target.decode()
        byte_range = _byte_range(request)
        with self._lock:
            self.requests.append((time.monotonic(), path))
            self._seen[path] += 1
            seen = self._seen[path]
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            await self._answer(path, seen, reader, writer, method == b"HEAD", byte_range)
        finally:
            with self._lock:
                self.active -= 1
            writer.close()

    async def _answer(self, path: str, seen: int, reader, writer, head, byte_range) -> None:
        _, kind, name = path.split("/", 2) if path.count("/") >= 2 else ("", "", "")
        file = self.folder / name
        if kind == "hang" or (kind == "stall" and byte_range and byte_range[0] >= STALL_AT):
            # Wait for the client to give up (it closes the connection), within a bound.
            try:
                await asyncio.wait_for(reader.read(), HANG_LIMIT_SECONDS)
            finally:
                with self._lock:
                    self.closed_hanging.append(time.monotonic())
            return
        if not name or not file.is_file():
            await self._send(writer, 404, "Not Found", b"not found\n")
            return
        await asyncio.sleep(self.delay)
        data = file.read_bytes()
        if kind == "flaky" and seen <= FLAKY_FAILURES:
            await self._send(writer, 503, "Service Unavailable", b"busy\n")
        elif kind == "throttle" and seen == 1:
            await self._send(
                writer, 429, "Too Many Requests", b"slow down\n", {"Retry-After": RETRY_AFTER}
            )
        elif kind == "cut":
            self.body_bytes += CUT_AT
            writer.write(self._head(200, "OK", len(data)) + data[:CUT_AT])
            await writer.drain()
        elif head:
            writer.write(self._head(200, "OK", len(data), {"Accept-Ranges": "bytes"}))
            await writer.drain()
        elif byte_range and kind in ("ok", "stall"):
            start, end = byte_range[0], min(byte_range[1] + 1, len(data))
            extra = {"Content-Range": f"bytes {start}-{end - 1}/{len(data)}"}
            await self._send(writer, 206, "Partial Content", data[start:end], extra)
        elif kind in ("ok", "flaky", "throttle", "stall"):
            await self._send(writer, 200, "OK", data)
        else:
            await self._send(writer, 404, "Not Found", b"not found\n")

    @staticmethod
    def _head(status: int, reason: str, length: int, headers=None) -> bytes:
        lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {length}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def _send(self, writer, status: int, reason: str, body: bytes, headers=None) -> None:
        self.body_bytes += len(body)
        writer.write(self._head(status, reason, len(body), headers) + body)
        await writer.drain()


def _byte_range(request: bytes) -> tuple[int, int] | None:
    """``(first, last)`` byte of a ``Range: bytes=FIRST-LAST`` header, if the request has one."""
    for line in request.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"range":
            first, _, last = value.strip().removeprefix(b"bytes=").partition(b"-")
            return int(first), int(last) if last else 2**62
    return None
