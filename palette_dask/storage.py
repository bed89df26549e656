"""Where bytes live: local paths, and fsspec file systems opened with the job's storage options.

Every URL the project reads or writes goes through :func:`filesystem`, which
hands the job's ``storage_options`` to fsspec as fsspec takes them: options
for every protocol at the top level, or a table per protocol name when a job
mixes several (``{"s3": {...}, "http": {...}}``). fsspec keeps one instance
per set of options in each process, so every worker process makes its own
(fsspec's asynchronous file systems must not cross a ``fork``).

Object stores cache directory listings in that instance, while other
processes write the files: :func:`fresh` drops them before a decision is
taken from a listing.
"""

from __future__ import annotations

import copy
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping

import fsspec
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from .errors import UsageError


def is_local(uri: str) -> bool:
    """Whether a URI names a file on the local file system (a plain path or ``file://``)."""
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    """The absolute local path of a local URI.

    Examples
    --------
    >>> local_path("file:///data/./a.jpg")
    '/data/a.jpg'
    """
    path = uri.removeprefix("file://")
    if path.startswith("/"):
        return os.path.normpath(path)  # as abspath would, at a fraction of its cost
    return os.path.abspath(os.path.expanduser(path))


def filesystem(
    url: str, storage_options: Mapping | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec file system holding ``url``, and the path of ``url`` on it.

    Local paths get the local file system and never the storage options.

    Examples
    --------
    >>> fs, path = filesystem("memory://bucket/a.jpg")
    >>> fs.protocol, path
    ('memory', '/bucket/a.jpg')
    """
    if is_local(url):
        return LocalFileSystem(), local_path(url)
    try:
        # fsspec pops the protocol's own table out of what it is given: hand it a copy.
        return fsspec.core.url_to_fs(url, **copy.deepcopy(dict(storage_options or {})))
    except (ValueError, TypeError, ImportError) as exc:
        # An unknown protocol, its package missing, or options it does not take.
        raise UsageError(f"cannot open {url!r}: {exc}") from exc


def join(base: str, *parts: str) -> str:
    """Join path segments onto a local path or URL.

    Examples
    --------
    >>> join("s3://bucket/out/", "images", "part.parquet")
    's3://bucket/out/images/part.parquet'
    """
    return "/".join([base.rstrip("/"), *parts]) if "://" in base else os.path.join(base, *parts)


def fresh(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """``path``, after dropping what ``fs`` remembers of its listings there.

    Object-store file systems cache directory listings per instance, and
    fsspec keeps one instance per process: files written since by other
    processes (the workers) are only seen once the cache is dropped.
    """
    fs.invalidate_cache(path)
    return path


class AtomicFile:
    """A file written under a temporary name that appears at ``path`` only once committed.

    The temporary file is local: a hidden name next to ``path`` for a local
    path, published by a rename; a file in the system's temporary folder for a
    URL, published by one upload (object stores make an object visible only
    once its upload completes). A reader never sees half a file, and a file
    written in pieces holds none of them in memory.

    Examples
    --------
    >>> import tempfile
    >>> target = os.path.join(tempfile.mkdtemp(), "table.parquet")
    >>> with AtomicFile(target) as f:
    ...     _ = open(f.temporary, "wb").write(b"PAR1")
    ...     os.path.exists(target)
    False
    >>> os.path.exists(target)
    True
    """

    def __init__(self, path: str, storage_options: Mapping | None = None):
        self.path = path
        self._storage_options = storage_options
        if is_local(path):
            final = local_path(path)
            folder, name = os.path.split(final)
            os.makedirs(folder, exist_ok=True)
            self.temporary = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
        else:
            handle, self.temporary = tempfile.mkstemp(prefix="palette-dask-", suffix=".tmp")
            os.close(handle)

    def commit(self) -> None:
        """Publish the temporary file's bytes at ``path``."""
        try:
            if is_local(self.path):
                with open(self.temporary, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(self.temporary, local_path(self.path))
            else:
                fs, remote = filesystem(self.path, self._storage_options)
                fs.put_file(self.temporary, remote)
        finally:
            self.discard()

    def discard(self) -> None:
        """Remove the temporary file; ``path`` stays as it was."""
        if os.path.exists(self.temporary):
            os.remove(self.temporary)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


def write_atomic(path: str, data: bytes, storage_options: Mapping | None = None) -> None:
    """Write ``data`` so that ``path`` appears only once complete (see :class:`AtomicFile`).

    Object stores publish an object only when its upload completes, so bytes
    already in memory go to a URL directly.
    """
    if not is_local(path):
        fs, remote = filesystem(path, storage_options)
        with fs.open(remote, "wb") as f:
            f.write(data)
        return
    with AtomicFile(path) as target, open(target.temporary, "wb") as f:
        f.write(data)


def read_parquet_rows(
    path: str, columns: list[str] | None = None, storage_options: Mapping | None = None
) -> list[dict]:
    """All rows of one Parquet file (local path or URL) as dictionaries."""
    return list(iter_parquet_rows(path, columns, storage_options))


# Rows of a Parquet file decoded at a time by `iter_parquet_rows`.
PARQUET_ROWS_AT_ONCE = 64


def iter_parquet_rows(
    path: str,
    columns: list[str] | None = None,
    storage_options: Mapping | None = None,
    batch_rows: int = PARQUET_ROWS_AT_ONCE,
) -> Iterator[dict]:
    """The rows of one Parquet file (local path or URL) as dictionaries, ``batch_rows``
    decoded at a time: a file of large rows (resized samples) is never all in memory."""
    fs, where = filesystem(path, storage_options)
    with fs.open(where, "rb") as f:
        for batch in pq.ParquetFile(f).iter_batches(batch_rows, columns=columns):
            yield from batch.to_pylist()
