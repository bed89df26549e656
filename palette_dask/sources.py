"""Where the images come from: inputs expanded into a stream of URIs.

An input is a file, a folder (walked recursively), a glob pattern, an fsspec
URL (``file://``, ``memory://``, ``s3://`` once its backend is installed) or a
manifest: a ``.txt`` file with one URI per line, or a ``.csv`` / ``.parquet``
file with a ``uri`` column. Everything is a generator: folders are walked and
manifests read in chunks as the job consumes them, so an input of a billion
images never sits in memory. Folder walks and globs take the files with an
image extension and can count the others by extension, so that a job can say
what it left out.
"""

from __future__ import annotations

import functools
import hashlib
import os
import posixpath
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import TypeVar

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from . import containers
from .containers import TAR_EXTENSIONS, is_parquet, is_tar_shard
from .errors import UsageError, UsageTypeError
from .storage import filesystem, is_local, local_path

# Every extension the decoder reads (see `imaging`); lower-case, matched case-insensitively.
IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".jpe", ".jfif",
    ".png", ".apng",
    ".gif",
    ".webp",
    ".tif", ".tiff",
    ".bmp", ".dib",
    ".avif", ".heic", ".heif", ".hif",
    ".jxl",
    ".jp2", ".j2k", ".j2c", ".jpc", ".jpx", ".jpf",
    ".tga",
    ".ppm", ".pgm", ".pbm", ".pnm",
    ".ico",
    ".psd",
)  # fmt: skip
# The key under which files without an extension are counted as not images.
NO_EXTENSION = "(none)"
MANIFEST_EXTENSIONS = (".txt", ".csv", ".parquet")
MANIFEST_COLUMN = "uri"
_GLOB_CHARS = ("*", "?", "[")
# Rows read from a CSV or Parquet manifest at a time.
MANIFEST_BATCH_ROWS = 65_536

T = TypeVar("T")


def normalize_uri(uri: str) -> str:
    """The canonical form of a URI: local paths absolute, other URLs unchanged.

    Examples
    --------
    >>> normalize_uri("file:///data/a.jpg")
    '/data/a.jpg'
    >>> normalize_uri("s3://bucket/a.jpg")
    's3://bucket/a.jpg'
    """
    return local_path(uri) if is_local(uri) else uri


def image_id(uri: str) -> str:
    """Stable identifier of an image: a 128-bit BLAKE2b hash of its normalised URI, in hex.

    Examples
    --------
    >>> image_id("/data/a.jpg") == image_id("file:///data/a.jpg")
    True
    >>> len(image_id("/data/a.jpg"))
    32
    """
    return hashlib.blake2b(normalize_uri(uri).encode("utf-8"), digest_size=16).hexdigest()


def may_be_remote(inputs: Iterable[str], image_column: str | None = None) -> bool:
    """Whether inputs may name images behind a network: a URL, or a manifest of URIs.

    A local Parquet file that holds images (see :func:`.containers.image_column`)
    is a container, not a manifest.

    Examples
    --------
    >>> may_be_remote(["photos/", "s3://bucket/more/"]), may_be_remote(["photos/"])
    (True, False)
    """
    return any(_may_be_remote(spec, image_column) for spec in inputs)


def _may_be_remote(spec: str, image_column: str | None) -> bool:
    if not is_local(spec):
        return True
    if not _has_extension(spec, MANIFEST_EXTENSIONS):
        return False
    try:
        return _image_rows(*filesystem(spec), image_column) is None
    except (OSError, ValueError, pa.ArrowException):  # a glob, or a file the job will refuse
        return True


def check_inputs(inputs: Sequence[str], storage_options: Mapping | None = None) -> None:
    """Fail early, before any graph exists, on an input that matches nothing.

    ``storage_options`` are the fsspec options of remote inputs (see
    :func:`palette_dask.storage.filesystem`). Remote inputs are checked
    together, :data:`CHECKS_IN_FLIGHT` at a time: each check is a round trip.
    """
    if not inputs:
        raise UsageError("no input given: pass at least one file, folder, glob or manifest")
    for spec in inputs:
        if not isinstance(spec, str) or not spec:
            raise UsageTypeError(f"each input must be a non-empty string, got {spec!r}")
    # A glob may legitimately match nothing.
    named = [spec for spec in inputs if not _is_glob(spec)]

    def exists(spec: str) -> bool:
        fs, path = filesystem(spec, storage_options)
        return fs.exists(path)

    for spec, found in zip(named, _ahead(exists, named), strict=True):
        if not found:
            raise FileNotFoundError(f"input {spec!r} does not exist")


# Inputs checked at once by `check_inputs` (threads waiting on their answers).
CHECKS_IN_FLIGHT = 16


def iter_uris(
    inputs: Iterable[str],
    storage_options: Mapping | None = None,
    *,
    skipped: Counter[str] | None = None,
    image_column: str | None = None,
    row_groups: bool = False,
) -> Iterator[str | tuple[str, ...]]:
    """Expand inputs into a stream of normalised image URIs, in a deterministic order.

    Files named explicitly are taken as images (or manifests, by extension);
    folders and globs contribute files with an image extension
    (:data:`IMAGE_EXTENSIONS`) and skip the others. Relative paths in a local
    manifest are relative to the manifest's folder. Remote inputs and manifests
    are opened with ``storage_options``.

    Parameters
    ----------
    inputs : iterable of str
        Files, folders, glob patterns, fsspec URLs or manifests.
    storage_options : mapping, optional
        fsspec options of remote inputs and manifests.
    skipped : collections.Counter, optional
        When given, every file a folder walk or a glob skips adds 1 under its
        lower-case extension (``".md"``), or under :data:`NO_EXTENSION` when it
        has none. It fills as the stream is consumed. Hidden files are files
        like any other: taken with an image extension, counted without one
        (``.DS_Store`` counts under ``"(none)"``).
    image_column : str, optional
        The image column of Parquet inputs. A Parquet file with an image column
        (named inputs, and files of folders and globs) gives one URI per row,
        ``FILE#ROW``; a named Parquet input without one is a manifest, and
        folders and globs skip it.
    row_groups : bool
        Yield the rows of each Parquet row group together, as one tuple, so
        that a job can keep them in one partition.

    Yields
    ------
    str
        Image URIs: local paths absolute, other URLs with their protocol. A
        tar shard (``.tar``: named, listed, walked or globbed) is one URI,
        whose images are its members (see :mod:`palette_dask.containers`).

    Examples
    --------
    >>> import fsspec
    >>> fs = fsspec.filesystem("memory")
    >>> fs.pipe({"/doc/b.png": b"", "/doc/a.jpg": b"", "/doc/notes.md": b""})
    >>> skipped = Counter()
    >>> list(iter_uris(["memory://doc"], skipped=skipped))
    ['memory:///doc/a.jpg', 'memory:///doc/b.png']
    >>> skipped
    Counter({'.md': 1})
    """
    for entry in _entries(inputs, storage_options, skipped, image_column):
        if isinstance(entry, tuple) and not row_groups:
            yield from entry
        else:
            yield entry


def _entries(inputs, storage_options, skipped, image_column) -> Iterator[str | tuple[str, ...]]:
    """What :func:`iter_uris` yields, a Parquet row group's rows as one tuple."""
    resolve = functools.partial(
        _input_kind, storage_options=storage_options, image_column=image_column
    )
    for spec, (fs, path, kind, rows) in zip(inputs, _ahead(resolve, inputs), strict=True):
        if kind == "glob":
            # `**` matches a folder and everything below it: what a walk of a
            # matched folder listed is not listed (or counted) again.
            walked: set[str] = set()
            for found in sorted(fs.glob(path)):
                if _below(found, walked):
                    continue
                if fs.isdir(found):
                    walked.add(found)
                    yield from _walk(fs, found, skipped, image_column)
                else:
                    yield from _listed(fs, found, skipped, image_column)
        elif kind == "folder":
            yield from _walk(fs, path, skipped, image_column)
        elif kind == "rows":
            yield from _row_uris(fs, path, rows)
        elif kind == "manifest":
            yield from iter_manifest(spec, storage_options)
        else:
            yield _to_uri(fs, path)


def _input_kind(spec: str, storage_options, image_column) -> tuple:
    """``(fs, path, kind, rows)`` of a named input: a glob, a folder, a Parquet file of
    images (with its row groups' sizes), a manifest or a file; remote ones cost a
    round trip or two to tell."""
    fs, path = filesystem(spec, storage_options)
    if _is_glob(spec):
        return fs, path, "glob", None
    if _named_file(fs, path):
        return fs, path, "file", None
    if not _is_local_fs(fs) and is_parquet(path):
        # Its footer first: an HTTP server asked whether a URL is a folder sends the
        # whole file. A folder named like a Parquet file (a Spark or Dask table) is
        # no file, and is asked about next.
        try:
            rows = _image_rows(fs, path, image_column)
        except (OSError, pa.ArrowException):
            pass
        else:
            return fs, path, ("manifest", "rows")[rows is not None], rows
    if fs.isdir(path):
        return fs, path, "folder", None
    if (rows := _image_rows(fs, path, image_column)) is not None:
        return fs, path, "rows", rows
    if _has_extension(path, MANIFEST_EXTENSIONS):
        return fs, path, "manifest", None
    return fs, path, "file", None


def _is_glob(spec: str) -> bool:
    return any(c in spec for c in _GLOB_CHARS)


def _ahead(function: Callable[[str], T], items: Iterable[str]) -> Iterator[T]:
    """``function`` of each item, in order, worked out up to :data:`CHECKS_IN_FLIGHT`
    items ahead in threads: the inputs' round trips overlap."""
    with ThreadPoolExecutor(CHECKS_IN_FLIGHT) as pool:
        coming: deque = deque()
        for item in items:
            coming.append(pool.submit(function, item))
            if len(coming) >= CHECKS_IN_FLIGHT:
                yield coming.popleft().result()
        while coming:
            yield coming.popleft().result()


def _named_file(fs, path: str) -> bool:
    """Whether a remote input is an image or a tar shard by its name alone.

    Asking the store whether it is a folder would cost a round trip per
    input; an object store's folder is never named like an image.
    """
    return not _is_local_fs(fs) and _has_extension(path, (*IMAGE_EXTENSIONS, *TAR_EXTENSIONS))


def describe_skipped(skipped: Mapping[str, int]) -> str:
    """One line saying how many files a walk skipped as not images, by extension.

    Examples
    --------
    >>> describe_skipped(Counter({".txt": 1, ".md": 2}))
    'skipped 3 files that are not images: .md 2, .txt 1'
    >>> describe_skipped({"(none)": 1})
    'skipped 1 file that is not an image: (none) 1'
    """
    total = sum(skipped.values())
    what = "file that is not an image" if total == 1 else "files that are not images"
    by_extension = ", ".join(f"{ext} {n}" for ext, n in sorted(skipped.items()))
    return f"skipped {total} {what}: {by_extension}"


def iter_manifest(manifest: str, storage_options: Mapping | None = None) -> Iterator[str]:
    """URIs listed in a manifest, read in bounded chunks.

    A ``.txt`` manifest has one URI per line (blank lines and ``#`` comments are
    skipped); ``.csv`` and ``.parquet`` manifests have a ``uri`` column.
    """
    base = os.path.dirname(local_path(manifest)) if is_local(manifest) else None
    for entry in _manifest_entries(manifest, storage_options):
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        if base is not None and "://" not in entry and not os.path.isabs(entry):
            entry = os.path.join(base, entry)
        yield normalize_uri(entry)


def _manifest_entries(manifest: str, storage_options: Mapping | None) -> Iterator[str]:
    lower = manifest.lower()
    fs, path = filesystem(manifest, storage_options)
    if lower.endswith(".txt"):
        with fs.open(path, "rt", encoding="utf-8") as f:
            yield from f
    elif lower.endswith(".csv"):
        with fs.open(path, "rb") as f:
            reader = pacsv.open_csv(f, read_options=pacsv.ReadOptions(block_size=1 << 22))
            if MANIFEST_COLUMN not in reader.schema.names:
                raise UsageError(
                    f"manifest {manifest!r} has no {MANIFEST_COLUMN!r} column "
                    f"(columns: {reader.schema.names})"
                )
            for batch in reader:
                yield from (u for u in batch.column(MANIFEST_COLUMN).to_pylist() if u)
    elif lower.endswith(".parquet"):
        with fs.open(path, "rb") as f:
            parquet = pq.ParquetFile(f)
            if MANIFEST_COLUMN not in parquet.schema_arrow.names:
                raise UsageError(
                    f"manifest {manifest!r} has no {MANIFEST_COLUMN!r} column "
                    f"(columns: {parquet.schema_arrow.names})"
                )
            for batch in parquet.iter_batches(MANIFEST_BATCH_ROWS, columns=[MANIFEST_COLUMN]):
                yield from (u for u in batch.column(0).to_pylist() if u)
    else:
        raise UsageError(f"manifest {manifest!r} must end in one of {MANIFEST_EXTENSIONS}")


def _walk(fs, root: str, skipped: Counter[str] | None, image_column: str | None) -> Iterator[str]:
    """Image URIs below ``root``, depth first, each folder's entries sorted by name."""
    if _is_local_fs(fs):
        yield from _walk_local(fs, root, skipped, image_column)
        return
    for path in sorted(fs.find(root)):
        yield from _listed(fs, path, skipped, image_column)


def _walk_local(fs, root: str, skipped: Counter[str] | None, image_column) -> Iterator[str]:
    with os.scandir(root) as entries:
        ordered = sorted(entries, key=lambda e: e.name)
    for entry in ordered:
        if entry.is_dir(follow_symlinks=True):
            yield from _walk_local(fs, entry.path, skipped, image_column)
        else:
            yield from _listed(fs, entry.path, skipped, image_column)


def _listed(fs, path: str, skipped: Counter[str] | None, image_column) -> Iterator[str]:
    """What a file found by a walk or a glob gives: itself, its images, or nothing."""
    if (rows := _image_rows(fs, path, image_column)) is not None:
        yield from _row_uris(fs, path, rows)
    elif is_tar_shard(path) or _is_image(path, skipped):
        yield _to_uri(fs, path)


def _image_rows(fs, path: str, image_column: str | None) -> list[int] | None:
    """The row groups' sizes of a Parquet file of images, from its footer; ``None`` for any
    other file."""
    if not is_parquet(path):
        return None
    with fs.open(path, "rb") as f:
        parquet = pq.ParquetFile(f)
        if containers.image_column(parquet.schema_arrow, image_column) is None:
            return None
        metadata = parquet.metadata
        return [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]


def _row_uris(fs, path: str, group_sizes: list[int]) -> Iterator[tuple[str, ...]]:
    """One URI per row of a Parquet file of images, ``FILE#ROW``, a tuple per row group."""
    uri = _to_uri(fs, path)
    start = 0
    for size in group_sizes:
        yield tuple(containers.member_uri(uri, row) for row in range(start, start + size))
        start += size


def _below(path: str, folders: set[str]) -> bool:
    """Whether ``path`` lies inside one of ``folders``, at any depth."""
    parent = posixpath.dirname(path)
    while parent not in folders:
        above = posixpath.dirname(parent)
        if above == parent:
            return False
        parent = above
    return True


def _is_image(path: str, skipped: Counter[str] | None) -> bool:
    """Whether a listed file has an image extension; counts it in ``skipped`` if not."""
    if _has_extension(path, IMAGE_EXTENSIONS):
        return True
    if skipped is not None:
        skipped[_extension(path)] += 1
    return False


def _extension(path: str) -> str:
    # splitext sees no extension in a leading dot: ".DS_Store" has none, as in `os.path`.
    ext = posixpath.splitext(path)[1].lower()
    return ext if len(ext) > 1 else NO_EXTENSION


def _is_local_fs(fs) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return "file" in protocols


def _to_uri(fs, path: str) -> str:
    if _is_local_fs(fs):
        return normalize_uri(path)
    return fs.unstrip_protocol(path)


def _has_extension(path: str, extensions: tuple[str, ...]) -> bool:
    return path.lower().endswith(extensions)


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last may be shorter), drawn lazily.

    Examples
    --------
    >>> list(chunked(range(5), 2))
    [[0, 1], [2, 3], [4]]
    """
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
