"""Where bytes live: local paths, and fsspec file systems opened with the job's storage options.

Every URL the project reads or writes goes through :func:`filesystem`, which
hands the job's ``storage_options`` to fsspec as fsspec takes them: options
for every protocol at the top level, or a table per protocol name when a job
mixes several (``{"s3": {...}, "http": {...}}``). fsspec keeps one instance
per set of options in each process, so every worker process makes its own
(fsspec's asynchronous file systems must not cross a ``fork``).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping

import fsspec
from fsspec.implementations.local import LocalFileSystem


def is_local(uri: str) -> bool:
    """Whether a URI names a file on the local file system (a plain path or ``file://``)."""
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    """The absolute local path of a local URI."""
    return os.path.abspath(os.path.expanduser(uri.removeprefix("file://")))


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
    # fsspec pops the protocol's own table out of what it is given: hand it a copy.
    return fsspec.core.url_to_fs(url, **copy.deepcopy(dict(storage_options or {})))
