"""HTTP(S) reads of whole images: one ``GET`` each, on sessions kept per event loop.

:mod:`palette_dask.reads` sends an image URL here for each try, within its
deadline and retries. The status and the announced size are checked before
the body is read; a body that ends before its announced length, a lost
connection and a refused one are passing failures. aiohttp's failures are put
in the ``error`` column's words here too (:func:`connection_failure`), for
object stores as well, whose clients run on aiohttp. This module, and so
aiohttp, is loaded by a worker's first HTTP read or first failed remote read.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import email.utils
import http
import json
import os
import time
from collections.abc import Mapping

import aiohttp
import fsspec.asyn
from fsspec.implementations.http import HTTPFileSystem

from .errors import ReadError, file_too_large

# HTTP statuses that say "try again later"; every other 4xx or 5xx is final.
PASSING_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# A body of unannounced length is read in chunks of this size, counted as they come.
_CHUNK_BYTES = 256 * 2**10


def connection_failure(exc: Exception) -> ReadError | None:
    """A lost or refused connection as a passing :class:`ReadError`; ``None`` for other failures."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error
        reason = os.strerror(cause.errno) if cause.errno else str(cause)
        return ReadError(f"cannot connect to {exc.host}:{exc.port}: {reason}", passing=True)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ReadError("the server closed the connection without answering", passing=True)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return ReadError(f"connection closed before the end of the data: {exc}", passing=True)
    if isinstance(exc, (aiohttp.ClientError, ConnectionError)):
        return ReadError(f"connection error: {exc}", passing=True)
    return None


async def http_get(fs: HTTPFileSystem, uri: str, limit: int) -> bytes:
    """One ``GET``: the status and the announced size checked before the body is read."""
    session = await _http_session(fs.client_kwargs)
    async with session.get(fs.encode_url(uri), **fs.kwargs) as response:
        if response.status >= 400:
            raise _status_error(response)
        expected = response.content_length
        if response.headers.get("Content-Encoding", "identity") != "identity":
            expected = None  # the length counts compressed bytes
        if expected is not None and expected > limit:
            raise file_too_large(limit, expected)
        try:
            if expected is not None:
                data = await response.read()
            else:  # no length announced: count the bytes as they come
                data = await _read_within(response.content, limit)
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise _closed_early(response.content.total_bytes, expected) from exc
    if expected is not None and len(data) < expected:
        raise _closed_early(len(data), expected)
    return data


async def _read_within(content: aiohttp.StreamReader, limit: int) -> bytes:
    chunks, received = [], 0
    async for chunk in content.iter_chunked(_CHUNK_BYTES):
        received += len(chunk)
        if received > limit:
            raise file_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _closed_early(received: int, expected: int | None) -> ReadError:
    of = f" of {expected:,}" if expected is not None else ""
    return ReadError(f"connection closed after {received:,}{of} bytes", passing=True)


def _status_error(response: aiohttp.ClientResponse) -> ReadError:
    status = response.status
    try:
        reason = response.reason or http.HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    return ReadError(
        f"HTTP {status} {reason}".rstrip(),
        passing=status in PASSING_STATUSES,
        retry_after=_retry_after(response.headers.get("Retry-After")),
    )


def _retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (a number, or an HTTP date).

    Examples
    --------
    >>> _retry_after("2"), _retry_after(None), _retry_after("soon")
    (2.0, None, None)
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# One HTTP session per event loop and client options: connections are kept
# alive across tasks. Our own semaphores bound the connections, not aiohttp's.
_sessions: dict[str, tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession]] = {}
# A forked child starts a new event loop: its parent's sessions are not its own.
os.register_at_fork(after_in_child=_sessions.clear)


async def _http_session(client_kwargs: Mapping) -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    key = json.dumps(client_kwargs, sort_keys=True, default=repr)
    owner, session = _sessions.get(key, (None, None))
    if owner is not loop or session.closed:
        options = {"timeout": aiohttp.ClientTimeout(total=None), **client_kwargs}
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), **options)
        _sessions[key] = (loop, session)
    return session


@atexit.register
def _close_sessions() -> None:
    loop = fsspec.asyn.loop[0]
    if loop is None or not loop.is_running():
        return
    for _, session in list(_sessions.values()):
        if not session.closed:
            # The process is ending: a session that will not close loses nothing.
            with contextlib.suppress(Exception):
                fsspec.asyn.sync(loop, session.close, timeout=1)
    _sessions.clear()
