"""Reading images' bytes: many at once, each within a deadline, retried when the failure passes.

A task hands :func:`read_many` its images' URIs and decodes each one as soon
as its bytes arrive, while the next ones are still on the way: network waits
overlap with decoding and clustering. Remote reads run on fsspec's I/O event
loop (one thread per process, shared with every fsspec file system of the
process):

- at most ``concurrency`` reads are in flight; when a task's images come from
  several hosts (or buckets), at most ``per_host`` of them to one host, so
  that one slow or rate-limiting host cannot take every slot;
- bytes read ahead of decoding stay under ``buffer_bytes`` (new reads wait
  while they would go over it, from the recent sizes of the reads);
- every try has a total deadline, ``timeout`` seconds from the request to the
  last byte, so no read waits forever;
- passing failures (time-outs, lost connections, HTTP 408, 429 and 5xx) are
  tried again up to ``retries`` times after a jittered exponential backoff, or
  after the server's ``Retry-After``; a missing or forbidden file is not;
- one request per object: HTTP(S) is a plain ``GET`` (the size checked from
  ``Content-Length`` before the body is read), object stores a ranged ``GET``
  of at most ``max_file_bytes + 1`` bytes, with no size probe.

Local files are read in the caller's own thread, in between: a read from the
page cache costs less than handing it to another thread. So are images inside
containers (``SHARD.tar#MEMBER``, ``FILE.parquet#ROW``, see
:mod:`palette_dask.containers`): each container a task names is read once,
front to back, local or remote.

Results come back in the order the reads finish, each with its index in the
input, so the caller can put its rows back in input order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import functools
import io
import itertools
import logging
import os
import queue
import random
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO
from urllib.parse import urlsplit

import fsspec.asyn
import pyarrow as pa
from fsspec.asyn import AsyncFileSystem

from .containers import Member, is_parquet, read_members, read_shard, split_member_uri
from .errors import ImageError, ReadError, file_too_large
from .options import ReadOptions
from .sources import IMAGE_EXTENSIONS
from .storage import filesystem, is_local, local_path

logger = logging.getLogger(__name__)

# Remote containers are read in blocks of this size; a tar shard's next blocks
# are on their way while one is used.
CONTAINER_BLOCK_BYTES = 8 * 2**20
CONTAINER_READ_AHEAD = 2
# Read by one plain GET each (see :mod:`palette_dask.http_reads`).
HTTP_SCHEMES = ("http", "https")
# Backoff before the first retry (doubled for each further one, at most the
# maximum), jittered down to half of it so that workers do not retry in step.
BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
# A server asking to wait longer than this (Retry-After) is given up on.
MAX_RETRY_AFTER_SECONDS = 120.0
# Object-store errors fsspec reports as OSError with these codes are passing
# (S3's InternalError, SlowDown and ServiceUnavailable among them).
_PASSING_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("EBUSY", "EREMOTEIO", "EIO", "ETIMEDOUT", "ECONNRESET", "ECONNABORTED", "EAGAIN")
    if hasattr(errno, name)
)
# First guess of an image's size, until this process has read some.
_INITIAL_SIZE_GUESS = 2 * 2**20


def read_bytes(uri: str, options: ReadOptions | None = None) -> bytes:
    """The whole content of one file or URL, read as :func:`read_many` reads.

    Raises
    ------
    ImageError
        When the read failed for good (time-outs, HTTP errors, a file over
        ``max_file_bytes``), with the ``error`` column's text.
    OSError
        For a local file that cannot be read, or a missing object.
    """
    with read_many([uri], options or ReadOptions()) as reads:
        [(_, outcome)] = reads
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def read_many(uris: Sequence[str], options: ReadOptions) -> Reads:
    """Start reading every URI; iterate for ``(index, bytes or exception)`` as reads finish.

    The reads start at once, in the background, and go on while the caller
    works on what it got. A failed read gives its exception instead of
    bytes, never raises. Every read has a deadline, so the iteration always
    ends; leaving the ``with`` block (or :meth:`Reads.close`) cancels what is
    left.

    Examples
    --------
    >>> fs = fsspec.filesystem("memory")
    >>> fs.pipe({"/reads/a": b"one", "/reads/b": b"two"})
    >>> with read_many(["memory://reads/a", "memory://reads/b"], ReadOptions()) as reads:
    ...     sorted(reads)
    [(0, b'one'), (1, b'two')]
    """
    return Reads(list(uris), options)


class Reads:
    """The reads of a batch of URIs, started on creation; see :func:`read_many`.

    ``source_paths`` maps the index of each image read from a container to its
    member's source path (tar member name, Parquet ``path`` field), once read.
    """

    def __init__(self, uris: list[str], options: ReadOptions):
        self._uris = uris
        self._limit = options.max_file_bytes
        members: dict[str, list[tuple[int, str]]] = defaultdict(list)
        local, remote = [], []
        for i, uri in enumerate(uris):
            if (split := split_member_uri(uri)) is not None:
                members[split[0]].append((i, split[1]))
            elif is_local(uri):
                local.append(i)
            else:
                remote.append((i, uri))
        self._inline_left = len(local) + sum(len(wanted) for wanted in members.values())
        self.source_paths: dict[int, str] = {}
        read = functools.partial(
            read_members,
            open_container=functools.partial(_open_container, options=options),
            image_extensions=IMAGE_EXTENSIONS,
            limit=self._limit,
            column=options.image_column,
        )
        # Remote containers are read from now on, ahead of their use (see _ReadAhead).
        remote_members = {c: wanted for c, wanted in members.items() if not is_local(c)}
        self._ahead = None
        if remote_members:
            self._ahead = _ReadAhead(
                functools.partial(read, remote_members), _outcome_bytes, options.buffer_bytes
            )
        self._inline = itertools.chain(
            ((i, _read_local_outcome(uris[i], self._limit), None) for i in local),
            read({c: wanted for c, wanted in members.items() if is_local(c)}),
            self._ahead or (),
        )
        self._finished: queue.SimpleQueue = queue.SimpleQueue()
        self._batch = None
        if remote:
            self._loop = fsspec.asyn.get_loop()
            self._budget = _Budget(options.buffer_bytes)
            self._batch = asyncio.run_coroutine_threadsafe(
                _read_all(remote, options, self._budget, self._finished.put), self._loop
            )

    def __iter__(self) -> Iterator[tuple[int, bytes | BaseException]]:
        for _ in self._uris:
            if self._inline_left and (self._batch is None or self._finished.empty()):
                # Local files and containers are read here, while the remote reads are on
                # their way.
                self._inline_left -= 1
                index, outcome, source_path = next(self._inline)
                if source_path is not None:
                    self.source_paths[index] = source_path
                yield index, outcome
                continue
            index, outcome = _next_finished(self._finished, self._batch)
            try:
                yield index, outcome
            finally:
                if isinstance(outcome, bytes):
                    self._loop.call_soon_threadsafe(self._budget.release, len(outcome))

    def close(self) -> None:
        """Cancel the reads still in flight."""
        if self._batch is not None:
            self._batch.cancel()
        if self._ahead is not None:
            self._ahead.close()

    def __enter__(self) -> Reads:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_tar_shard(uri: str, options: ReadOptions) -> Iterator[Member]:
    """The images of a whole tar shard, front to back (see :func:`.containers.read_shard`).

    A remote shard is read from the call on, ahead of its images' use (see :class:`_ReadAhead`).
    """
    opener = functools.partial(_open_container, options=options)
    read = functools.partial(read_shard, uri, opener, IMAGE_EXTENSIONS, options.max_file_bytes)
    if is_local(uri):
        # Read in the task's turn: on a busy worker, a thread of its own would only take
        # the interpreter from the decoding.
        return read()
    return _ReadAhead(read, lambda member: len(member.data or b""), options.buffer_bytes)


def _outcome_bytes(outcome: tuple) -> int:
    """Bytes of a :func:`.containers.read_members` outcome."""
    data = outcome[1]
    return len(data) if isinstance(data, bytes) else 0


class _ReadAhead:
    """The items of an iterator made in a thread of their own, ahead of their use.

    A remote container read in the task's turn to decode would leave the core
    idle for every block's round trip. Read this way from the moment its task
    starts, as loose URLs are (see :class:`Reads`), its first blocks come while
    the worker decodes another task's images, and the next ones while this task
    decodes. The thread stays ``budget`` bytes ahead at most (one item more
    when the queue is empty). Its failures are raised where the items are used;
    :meth:`close` stops it after the read in progress, which its deadline bounds.

    Examples
    --------
    >>> ahead = _ReadAhead(lambda: iter([b"one", b"two"]), len, budget=1)
    >>> list(ahead)
    [b'one', b'two']
    """

    def __init__(self, make: Callable[[], Iterator], size: Callable[[object], int], budget: int):
        self._items: deque = deque()
        self._bytes = 0
        self._budget = budget
        self._done = self._stopped = False
        self._failure: BaseException | None = None
        self._changed = threading.Condition()
        threading.Thread(
            target=self._produce, args=(make, size), name="palette-dask-read-ahead", daemon=True
        ).start()

    def _produce(self, make, size) -> None:
        failure = None
        try:
            items = make()
            try:
                for item in items:
                    with self._changed:
                        while self._items and self._bytes >= self._budget and not self._stopped:
                            self._changed.wait()
                        if self._stopped:
                            break
                        self._items.append((item, size(item)))
                        self._bytes += self._items[-1][1]
                        self._changed.notify_all()
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:  # raised again where the items are used
            failure = exc
        with self._changed:
            self._done, self._failure = True, failure
            self._changed.notify_all()

    def __iter__(self) -> _ReadAhead:
        return self

    def __next__(self):
        with self._changed:
            while not self._items and not self._done:
                self._changed.wait()
            if self._items:
                item, size = self._items.popleft()
                self._bytes -= size
                self._changed.notify_all()
                return item
            if self._failure is not None:
                raise self._failure
            raise StopIteration

    def close(self) -> None:
        """Stop reading ahead; the items not yet used are dropped."""
        with self._changed:
            self._stopped = True
            self._items.clear()
            self._changed.notify_all()


def _read_local_outcome(uri: str, limit: int) -> bytes | BaseException:
    """A local file's bytes, or what went wrong (missing, unreadable, too large)."""
    try:
        return _read_local(local_path(uri), limit)
    except (OSError, ImageError) as exc:
        return exc


def _open_container(uri: str, options: ReadOptions) -> BinaryIO:
    """A container opened for reading: large blocks, each request within the read deadline."""
    if is_local(uri):
        if is_parquet(uri):
            # A native file: Parquet's reader then reads without a Python call per read.
            return pa.OSFile(local_path(uri))
        shard = open(local_path(uri), "rb")  # noqa: SIM115 (the caller closes it)
        if hasattr(os, "posix_fadvise"):
            # Read front to back: the kernel reads further ahead of each member.
            os.posix_fadvise(shard.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        return shard
    fs, path = filesystem(uri, options.storage_options)
    if isinstance(fs, AsyncFileSystem) and fs.async_impl:
        # A tar shard is read front to back; Parquet reads jump to the row groups it needs.
        read_ahead = 0 if is_parquet(uri) else CONTAINER_READ_AHEAD
        raw = _RemoteContainer(fs, path, uri, options, read_ahead)
        return io.BufferedReader(raw, buffer_size=CONTAINER_BLOCK_BYTES)
    return fs.open(path, "rb", block_size=CONTAINER_BLOCK_BYTES, cache_type="readahead")


def _next_finished(finished: queue.SimpleQueue, batch) -> tuple[int, bytes | BaseException]:
    """The next finished read; raises if the batch itself failed (a bug, not a read)."""
    while True:
        try:
            return finished.get(timeout=1.0)
        except queue.Empty:
            if batch.done():
                batch.result()  # raises what broke the batch
                raise RuntimeError("the reads ended before every URI was read") from None


class _Budget:
    """Bytes read ahead of decoding, and whether another read may start.

    Used on the event loop only; the consumer thread releases bytes through
    ``call_soon_threadsafe``.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.held = 0
        self.in_flight = 0
        self._waiters: deque[asyncio.Future] = deque()

    def _room(self) -> bool:
        if self.held == 0 and self.in_flight == 0:
            return True  # always let one read through, however large
        return self.held + (self.in_flight + 1) * _size_guess() <= self.limit

    async def start(self) -> None:
        while not self._room():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        self.in_flight += 1

    def finish(self, size: int) -> None:
        self.in_flight -= 1
        self.held += size
        self._wake()

    def release(self, size: int) -> None:
        self.held -= size
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)


# Recent read sizes in this process (an exponential moving average), for the
# budget's guesses: a worker whose images grow adapts within a few reads.
_SIZE_SMOOTHING = 0.2
_size = {"mean": float(_INITIAL_SIZE_GUESS)}


def _size_guess() -> float:
    return _size["mean"]


def _record_size(size: int) -> None:
    _size["mean"] += _SIZE_SMOOTHING * (size - _size["mean"])


async def _read_all(items, options: ReadOptions, budget: _Budget, deliver) -> None:
    """Read every ``(index, uri)``, handing each ``(index, outcome)`` to ``deliver`` as it
    finishes."""
    slots = asyncio.Semaphore(options.concurrency)
    # One host alone may use every slot: the cap only keeps hosts from starving each other.
    several = len({urlsplit(uri).netloc for _, uri in items}) > 1
    per_host = options.per_host if several else options.concurrency
    host_slots: dict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(per_host))

    async def one(index: int, uri: str) -> None:
        async with host_slots[urlsplit(uri).netloc]:
            outcome = await _read_with_retries(uri, options, slots, budget)
        deliver((index, outcome))

    # Semaphores wake waiters first come, first served: reads start in input
    # order, each host's within its own share.
    tasks = [asyncio.ensure_future(one(i, uri)) for i, uri in items]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


async def _read_with_retries(
    uri: str, options: ReadOptions, slots: asyncio.Semaphore, budget: _Budget
) -> bytes | BaseException:
    async def once() -> bytes:
        async with slots:
            await budget.start()
            size = 0
            try:
                data = await asyncio.wait_for(_read_once(uri, options), options.timeout)
                size = len(data)
                _record_size(size)
                return data
            finally:
                budget.finish(size)

    return await _retrying(once, uri, options)


async def _retrying(once, uri: str, options: ReadOptions) -> bytes | BaseException:
    """``await once()`` until it gives bytes, a final failure, or ``options.retries`` run out.

    ``once`` holds its own deadline; its failures become outcomes (see :func:`_as_failure`).
    """
    tries = 0
    while True:
        tries += 1
        try:
            return await once()
        except Exception as exc:  # every failure is an outcome; see _as_failure
            failure = _as_failure(exc, uri, options)
        if not getattr(failure, "passing", False) or tries > options.retries:
            return _final(failure, tries)
        wait = _backoff(tries, failure.retry_after)
        if wait is None:
            return ReadError(
                f"{failure} (asked to wait {failure.retry_after:,.0f} s, more than "
                f"{MAX_RETRY_AFTER_SECONDS:.0f} s)",
                passing=True,
            )
        logger.debug("%s: %s; trying again in %.2f s", uri, failure, wait)
        await asyncio.sleep(wait)


class _RemoteContainer(io.RawIOBase):
    """A remote container read by ranged requests, each within the read deadline and retried
    like an image's read (see :class:`ReadOptions`): no read of a shard waits forever.

    The file is read in blocks of :data:`CONTAINER_BLOCK_BYTES` at multiples of
    that size. With ``read_ahead``, the next blocks are already requested while
    one is used: a tar shard read front to back never waits for the network
    between blocks while its images are decoded. A read elsewhere (a seek past
    the blocks asked for) drops them. Seeks cost nothing until the next read.
    """

    def __init__(
        self, fs: AsyncFileSystem, path: str, uri: str, options: ReadOptions, read_ahead: int = 0
    ):
        self._fs, self._path, self._uri, self._options = fs, path, uri, options
        self._read_ahead = read_ahead
        self._position = 0
        self._block_index, self._block = -1, b""
        self._coming: dict[int, concurrent.futures.Future] = {}
        info = self._run(lambda: fs._info(path))
        if read_ahead:
            # Read front to back: the first block is asked for with the size, not after it.
            self._coming[0] = self._request(0, CONTAINER_BLOCK_BYTES)
        try:
            self._size = info.result()["size"]
        except BaseException:
            self.close()
            raise

    async def _outcome(self, request):
        """The outcome of ``request()`` within the deadline and retries; raises a failure."""

        async def once():
            return await asyncio.wait_for(request(), self._options.timeout)

        outcome = await _retrying(once, self._uri, self._options)
        if isinstance(outcome, ReadError):
            raise ConnectionError(str(outcome)) from outcome
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _run(self, request) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(self._outcome(request), self._fs.loop)

    def _request(self, index: int, end: int | None = None) -> concurrent.futures.Future:
        """Block ``index``; ``end`` where the file's size is not known yet (the
        server answers a range past the end with the bytes there are)."""
        start = index * CONTAINER_BLOCK_BYTES
        end = min(self._size, start + CONTAINER_BLOCK_BYTES) if end is None else end
        return self._run(functools.partial(self._fs._cat_file, self._path, start=start, end=end))

    def _block_at(self, index: int) -> bytes:
        """Block ``index``, and the next ``read_ahead`` blocks requested."""
        if index != self._block_index:
            for stale in [i for i in self._coming if not index <= i <= index + self._read_ahead]:
                self._coming.pop(stale).cancel()
            coming = self._coming.pop(index, None) or self._request(index)
            last = (self._size - 1) // CONTAINER_BLOCK_BYTES
            for ahead in range(index + 1, min(index + self._read_ahead, last) + 1):
                if ahead not in self._coming:
                    self._coming[ahead] = self._request(ahead)
            block = coming.result()
            start = index * CONTAINER_BLOCK_BYTES
            if len(block) > min(self._size, start + CONTAINER_BLOCK_BYTES) - start:
                raise OSError(f"the server ignores byte ranges: {len(block):,} bytes for a block")
            self._block_index, self._block = index, block
        return self._block

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer) -> int:
        if self._position >= self._size:
            return 0
        index, offset = divmod(self._position, CONTAINER_BLOCK_BYTES)
        block = self._block_at(index)
        count = min(len(buffer), len(block) - offset)
        if count <= 0:
            raise OSError(f"the file ends at {index * CONTAINER_BLOCK_BYTES + len(block):,} bytes")
        buffer[:count] = memoryview(block)[offset : offset + count]
        self._position += count
        return count

    def close(self) -> None:
        for coming in self._coming.values():
            coming.cancel()
        self._coming.clear()
        super().close()


def _backoff(tries: int, retry_after: float | None) -> float | None:
    """Seconds to wait before try ``tries + 1``: the server's ``Retry-After`` when it gave one."""
    if retry_after is not None:
        return retry_after if retry_after <= MAX_RETRY_AFTER_SECONDS else None
    ceiling = min(MAX_BACKOFF_SECONDS, BACKOFF_SECONDS * 2 ** (tries - 1))
    return ceiling * random.uniform(0.5, 1.0)


def _final(failure: BaseException, tries: int) -> BaseException:
    """The outcome of a read that will not be tried again, its tries counted in the message."""
    if isinstance(failure, ReadError) and tries > 1:
        return ReadError(f"{failure} ({tries} tries)", passing=failure.passing)
    return failure


class _DeadlineInside(Exception):
    """A time-out raised below our own deadline (a client's or the server's)."""


def _as_failure(exc: Exception, uri: str, options: ReadOptions) -> BaseException:
    """What a failed try means: a :class:`ReadError` saying whether it passes, or a
    final failure that already says what happened (a missing file, named by ``uri``)."""
    if isinstance(exc, (FileNotFoundError, PermissionError)) and not exc.filename:
        # Object stores name neither the file nor the errno: say which file it was.
        code = errno.ENOENT if isinstance(exc, FileNotFoundError) else errno.EACCES
        named = type(exc)(code, os.strerror(code), uri)
        named.__cause__ = exc
        return named
    if isinstance(exc, ReadError):
        return exc
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return ReadError(f"timed out after {options.timeout:g} s", passing=True)
    if isinstance(exc, _DeadlineInside):
        return ReadError(f"timed out: {exc}", passing=True)
    from .http_reads import connection_failure  # loaded by the first failure

    connection = connection_failure(exc)
    if connection is not None:
        return connection
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, ImageError)):
        return exc
    if isinstance(exc, OSError) and exc.errno in _PASSING_ERRNOS:
        return ReadError(f"storage error: {exc.strerror or exc}", passing=True)
    return exc


async def _read_once(uri: str, options: ReadOptions) -> bytes:
    """One try at reading ``uri`` whole: one request, at most ``max_file_bytes + 1`` bytes."""
    fs, path = filesystem(uri, options.storage_options)
    limit = options.max_file_bytes
    try:
        if urlsplit(uri).scheme in HTTP_SCHEMES:
            from .http_reads import http_get  # aiohttp is loaded for HTTP inputs only

            return await http_get(fs, uri, limit)
        if isinstance(fs, AsyncFileSystem) and fs.async_impl:
            data = await _ranged_read(fs, path, limit)
        else:
            data = await asyncio.get_running_loop().run_in_executor(
                None, lambda: fs.cat_file(path, start=0, end=limit + 1)
            )
    except (TimeoutError, asyncio.TimeoutError) as exc:
        raise _DeadlineInside(str(exc) or type(exc).__name__) from exc
    if len(data) > limit:
        raise file_too_large(limit)
    return data


async def _ranged_read(fs: AsyncFileSystem, path: str, limit: int) -> bytes:
    """One ranged ``GET`` of at most ``limit + 1`` bytes, with no size probe."""
    try:
        return await fs._cat_file(path, start=0, end=limit + 1)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        # An empty object has no first byte, and stores refuse the range
        # (HTTP 416): read it whole, which then says it is empty.
        return await fs._cat_file(path)


def _read_local(path: str, limit: int) -> bytes:
    size = os.stat(path).st_size
    _check_size(size, limit)
    with open(path, "rb") as f:
        return f.read()


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise file_too_large(limit, size)
