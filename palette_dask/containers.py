"""Images inside containers: WebDataset tar shards and Parquet files with an image column.

Collections of 10⁸–10⁹ images are stored as shards rather than loose files:
tar files of about 10,000 images (WebDataset, img2dataset), or Parquet files
whose column holds each image's bytes (Hugging Face datasets store an
``Image`` feature as ``struct<bytes: binary, path: string>``). This module
reads both as streams of :class:`Member` — one per image, in file order —
from a file object the caller opened:

- a tar shard (also gzip-, bzip2- or xz-compressed) is read in one pass,
  front to back (never whole in memory, never a request per member); members
  with an image extension are images, the others (captions, JSON, class
  labels) are not and give nothing; a link with an image extension is an
  error (a pass that does not go back cannot reach its target);
- a Parquet file is read one row group at a time, only its image column.

Each image has a URI of its own: ``CONTAINER_URI#MEMBER_NAME`` for a tar
member, ``CONTAINER_URI#ROW`` (0-based row number in the file) for a Parquet
cell. A container that cannot be read to its end yields the images read whole
before the failure and then one member naming the container and what went
wrong.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import ImageError, file_too_large, reason

# Compressed shards are read as one stream too (gzip, bzip2, xz).
TAR_EXTENSIONS = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
PARQUET_EXTENSIONS = (".parquet",)
# The column an image column is taken from when the spec names none.
DEFAULT_IMAGE_COLUMN = "image"
MEMBER_SEPARATOR = "#"


@dataclass(frozen=True)
class Member:
    """One image of a container: its bytes, or why there are none.

    Attributes
    ----------
    uri : str
        ``CONTAINER_URI#NAME`` or ``CONTAINER_URI#ROW``; the container's own URI
        for a failure of the container itself.
    source_path : str or None
        The tar member's name, or the Parquet struct's ``path`` field.
    data : bytes or None
        The encoded image.
    error : str or None
        What went wrong when ``data`` is ``None``.
    """

    uri: str
    source_path: str | None = None
    data: bytes | None = None
    error: str | None = None


def member_uri(container: str, member: str | int) -> str:
    """The URI of an image inside a container.

    Examples
    --------
    >>> member_uri("s3://b/shard-000042.tar", "000042017.jpg")
    's3://b/shard-000042.tar#000042017.jpg'
    >>> member_uri("/data/train-00000-of-00010.parquet", 1234)
    '/data/train-00000-of-00010.parquet#1234'
    """
    return f"{container}{MEMBER_SEPARATOR}{member}"


def iter_tar(stream: BinaryIO, shard: str, image_extensions: tuple[str, ...]) -> Iterator[Member]:
    """The images of a tar shard, read front to back from ``stream``.

    Parameters
    ----------
    stream : file object
        The shard, opened for reading; read in one pass, front to back (see
        :func:`_tar_mode`).
    shard : str
        The shard's URI, the prefix of its members' URIs.
    image_extensions : tuple of str
        Lower-case extensions of the members that are images.

    Examples
    --------
    >>> import io
    >>> buffer = io.BytesIO()
    >>> with tarfile.open(fileobj=buffer, mode="w") as tar:
    ...     for name, body in [("0001.jpg", b"JPEG"), ("0001.txt", b"a caption")]:
    ...         info = tarfile.TarInfo(name)
    ...         info.size = len(body)
    ...         tar.addfile(info, io.BytesIO(body))
    >>> _ = buffer.seek(0)
    >>> [(m.uri, m.data) for m in iter_tar(buffer, "shard.tar", (".jpg",))]
    [('shard.tar#0001.jpg', b'JPEG')]
    """
    try:
        with tarfile.open(fileobj=stream, mode=_tar_mode(stream)) as tar:
            for info in tar:
                if not info.name.lower().endswith(image_extensions):
                    continue
                if info.islnk() or info.issym():
                    yield Member(
                        member_uri(shard, info.name),
                        source_path=info.name,
                        error=f"a link to {info.linkname}, not a file: a shard is read as "
                        "one stream, so links are not followed",
                    )
                    continue
                if not info.isfile():
                    continue
                member = tar.extractfile(info)
                data = member.read() if member is not None else b""
                if len(data) != info.size:
                    raise tarfile.ReadError(
                        f"member {info.name} ends after {len(data):,} of {info.size:,} bytes"
                    )
                yield Member(member_uri(shard, info.name), source_path=info.name, data=data)
    except (tarfile.TarError, EOFError, OSError) as exc:
        yield Member(shard, error=f"truncated or unreadable tar shard: {reason(exc)}")


# The first bytes of a gzip, bzip2 or xz stream.
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")


def _tar_mode(stream: BinaryIO) -> str:
    """How :mod:`tarfile` reads ``stream``: by offsets where it can, else as a pure stream.

    An uncompressed shard in a seekable file is read with ``"r:"``: tarfile
    then moves forward between members with seeks within the buffered bytes
    (still one pass, front to back), which costs a third of what its
    stream mode's copying through 10 KB records does. Compressed shards and
    unseekable streams are read in stream mode, which detects the compression.
    """
    if not stream.seekable():
        return "r|*"
    start = stream.tell()
    head = stream.read(6)
    stream.seek(start)
    return "r|*" if head.startswith(_COMPRESSED_MAGIC) else "r:"


def image_column(schema: pa.Schema, requested: str | None = None) -> str | None:
    """The column of a Parquet schema that holds images, or ``None`` if it has none.

    An image column is binary, or a struct with a binary ``bytes`` field (and
    optionally a ``path``), as Hugging Face datasets write it. ``requested``
    names it; otherwise a column named ``image`` is taken, else the only
    image column.

    Raises
    ------
    ValueError
        ``requested`` is not an image column, or the schema has several image
        columns and none is named ``image``.

    Examples
    --------
    >>> schema = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
    ...                     ("label", pa.int64())])
    >>> image_column(schema), image_column(pa.schema([("uri", pa.string())]))
    ('image', None)
    """
    images = [field.name for field in schema if _holds_images(field.type)]
    if requested is not None:
        if requested not in images:
            raise ValueError(
                f"image_column {requested!r} is not a column of images "
                f"(binary, or a struct with binary 'bytes'); image columns: {images}"
            )
        return requested
    if DEFAULT_IMAGE_COLUMN in images:
        return DEFAULT_IMAGE_COLUMN
    if len(images) > 1:
        raise ValueError(f"several image columns {images}: choose one with image_column")
    return images[0] if images else None


def iter_parquet(
    parquet: pq.ParquetFile, file: str, column: str, row_groups: Iterable[int] | None = None
) -> Iterator[Member]:
    """The images of a Parquet file's image ``column``, one row group at a time.

    ``row_groups`` limits the read to some row groups (all by default); row
    numbers count from the start of the file whatever is read.
    """
    metadata = parquet.metadata
    starts = [0]
    for i in range(metadata.num_row_groups):
        starts.append(starts[-1] + metadata.row_group(i).num_rows)
    groups = range(metadata.num_row_groups) if row_groups is None else row_groups
    for group in groups:
        try:
            # One column: Arrow's threads would only compete with the decoding.
            table = parquet.read_row_group(group, columns=[column], use_threads=False)
        except (OSError, pa.ArrowException) as exc:
            yield Member(file, error=f"unreadable Parquet row group {group}: {reason(exc)}")
            return
        cells = table.column(0).combine_chunks()
        for offset, (body, path) in enumerate(_bytes_and_paths(cells)):
            uri = member_uri(file, starts[group] + offset)
            if body is None:
                yield Member(uri, source_path=path, error=f"null image cell in column {column!r}")
            else:
                yield Member(uri, source_path=path, data=body)


def _holds_images(kind: pa.DataType) -> bool:
    if _is_binary(kind):
        return True
    if pa.types.is_struct(kind):
        index = kind.get_field_index("bytes")
        return index >= 0 and _is_binary(kind.field(index).type)
    return False


def _is_binary(kind: pa.DataType) -> bool:
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind)


def _bytes_and_paths(cells: pa.Array) -> Iterator[tuple[bytes | None, str | None]]:
    """Each cell's bytes (``None`` for a null cell) and path (``None`` where there is none).

    The bytes are made one cell at a time, as they are used: a row group's
    images are never all copied at once.
    """
    struct = pa.types.is_struct(cells.type)
    data = cells.field("bytes") if struct else cells
    paths = cells.field("path") if struct and cells.type.get_field_index("path") >= 0 else None
    # A null struct hides its fields' values.
    valid = cells.is_valid().to_pylist()
    for i, ok in enumerate(valid):
        if not ok:
            yield None, None
        else:
            yield data[i].as_py(), paths[i].as_py() if paths is not None else None


def split_member_uri(uri: str) -> tuple[str, str] | None:
    """``(container, member)`` of a URI naming an image inside a container, else ``None``.

    The member starts after the first ``#`` that follows a ``.tar`` or
    ``.parquet`` name; member names may hold ``#`` themselves.

    Examples
    --------
    >>> split_member_uri("s3://b/shard-000042.tar#000042017.jpg")
    ('s3://b/shard-000042.tar', '000042017.jpg')
    >>> split_member_uri("/data/train.parquet#12"), split_member_uri("/photos/a#1.jpg")
    (('/data/train.parquet', '12'), None)
    """
    at = uri.find(MEMBER_SEPARATOR)
    while at > 0:
        if uri[:at].lower().endswith(TAR_EXTENSIONS + PARQUET_EXTENSIONS) and at + 1 < len(uri):
            return uri[:at], uri[at + 1 :]
        at = uri.find(MEMBER_SEPARATOR, at + 1)
    return None


def read_members(
    wanted: Mapping[str, list[tuple[int, str]]],
    open_container: Callable[[str], BinaryIO],
    image_extensions: tuple[str, ...],
    limit: int,
    column: str | None = None,
) -> Iterator[tuple[int, bytes | ImageError]]:
    """The bytes of the named members, each container read once, front to back.

    Parameters
    ----------
    wanted : mapping
        Container URI → ``(index, member)`` pairs: tar member names, Parquet row numbers.
    open_container : callable
        Opens a container's URI for reading.
    image_extensions : tuple of str
        The tar members that are images.
    limit : int
        Members larger than this many bytes are refused.
    column : str, optional
        The image column of Parquet containers (default: see :func:`image_column`).

    Yields
    ------
    (index, bytes or ImageError, source_path)
        One outcome per wanted member; a member the container does not hold, or
        one its container could not give, is an :class:`ImageError`.
        ``source_path`` is the member's (see :class:`Member`), when read.
    """
    for container, members in wanted.items():
        waiting: dict[str, list[int]] = {}
        for index, member in members:
            waiting.setdefault(member, []).append(index)
        failure = None
        try:
            with open_container(container) as stream:
                for found in _members_of(container, stream, waiting, image_extensions, column):
                    if found.data is None and found.uri == container:
                        failure = found.error
                        break
                    name = found.uri[len(container) + 1 :]
                    for index in waiting.pop(name, ()):
                        yield index, _member_outcome(found, limit), found.source_path
                    if not waiting:
                        break  # the rest of the container is not needed
        except (OSError, ValueError, pa.ArrowException) as exc:
            failure = f"cannot read {container}: {reason(exc)}"
        for name, indices in waiting.items():
            message = failure or f"{container} has no image {name!r}"
            for index in indices:
                yield index, ImageError(message), None


def read_shard(
    shard: str,
    open_container: Callable[[str], BinaryIO],
    image_extensions: tuple[str, ...],
    limit: int,
) -> Iterator[Member]:
    """Every image of a tar shard, front to back, each member's bytes checked against ``limit``.

    A shard that cannot be opened, or not read to its end, ends the stream
    with one member naming the shard and what went wrong (see :func:`iter_tar`).
    """
    try:
        with open_container(shard) as stream:
            for found in iter_tar(stream, shard, image_extensions):
                outcome = _member_outcome(found, limit)
                if isinstance(outcome, ImageError):
                    yield Member(found.uri, found.source_path, error=str(outcome))
                else:
                    yield found
    except OSError as exc:
        yield Member(shard, error=f"cannot read tar shard {shard}: {reason(exc)}")


def is_parquet(uri: str) -> bool:
    """Whether a URI names a Parquet file (not one of its rows)."""
    return uri.lower().endswith(PARQUET_EXTENSIONS)


def is_tar_shard(uri: str) -> bool:
    """Whether a URI names a whole tar shard (not one of its members).

    Examples
    --------
    >>> is_tar_shard("s3://b/shard-000042.tar"), is_tar_shard("s3://b/shard-000042.tar#1.jpg")
    (True, False)
    """
    return uri.lower().endswith(TAR_EXTENSIONS) and split_member_uri(uri) is None


def _members_of(container, stream, waiting, image_extensions, requested) -> Iterator[Member]:
    if container.lower().endswith(TAR_EXTENSIONS):
        yield from iter_tar(stream, container, image_extensions)
        return
    parquet = pq.ParquetFile(stream)
    column = image_column(parquet.schema_arrow, requested)
    if column is None:
        raise ValueError("it has no image column")
    rows = sorted(int(name) for name in waiting if name.isdigit())
    yield from iter_parquet(parquet, container, column, _row_groups(parquet, rows))


def _row_groups(parquet: pq.ParquetFile, rows: list[int]) -> list[int]:
    """The row groups holding ``rows`` (sorted row numbers)."""
    groups, start = [], 0
    for group in range(parquet.metadata.num_row_groups):
        end = start + parquet.metadata.row_group(group).num_rows
        if any(start <= row < end for row in rows):
            groups.append(group)
        start = end
    return groups


def _member_outcome(found: Member, limit: int) -> bytes | ImageError:
    if found.data is None:
        return ImageError(found.error)
    if len(found.data) > limit:
        return file_too_large(limit, len(found.data))
    return found.data
