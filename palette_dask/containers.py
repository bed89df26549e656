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

import bz2
import gzip
import io
import lzma
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import ImageError, UsageError, file_too_large, reason

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


def iter_tar(
    stream: BinaryIO, shard: str, image_extensions: tuple[str, ...], limit: int | None = None
) -> Iterator[Member]:
    """The images of a tar shard, read front to back from ``stream``.

    Parameters
    ----------
    stream : file object
        The shard, opened for reading, plain or gzip-, bzip2- or xz-compressed;
        read in one pass, front to back (see :func:`_tar_entries`).
    shard : str
        The shard's URI, the prefix of its members' URIs.
    image_extensions : tuple of str
        Lower-case extensions of the members that are images.
    limit : int, optional
        Members larger than this many bytes are passed over, never read into
        memory, and give an error member.

    Examples
    --------
    >>> import tarfile
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
        for entry in _tar_entries(_decompressed(stream)):
            if not entry.name.lower().endswith(image_extensions):
                continue
            uri = member_uri(shard, entry.name)
            if entry.kind in _LINK_TYPES:
                yield Member(
                    uri,
                    source_path=entry.name,
                    error=f"a link to {entry.link}, not a file: a shard is read as "
                    "one stream, so links are not followed",
                )
            elif entry.kind not in _FILE_TYPES or entry.name.endswith("/"):
                continue  # a folder, a device, a pipe
            elif limit is not None and entry.size > limit:
                yield Member(
                    uri, source_path=entry.name, error=str(file_too_large(limit, entry.size))
                )
            else:
                yield Member(uri, source_path=entry.name, data=entry.read())
    except (_TarFormatError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        yield Member(shard, error=f"truncated or unreadable tar shard: {reason(exc)}")


_BLOCK = 512
# Regular files (the last is a "contiguous file", a regular file elsewhere), and links.
_FILE_TYPES = (b"0", b"\0", b"7")
_LINK_TYPES = (b"1", b"2")
# Headers that describe the next member: POSIX pax records, GNU long names and link targets.
_PAX_TYPES = (b"x", b"g")
_GNU_LONG_NAME, _GNU_LONG_LINK = b"L", b"K"
# Skipped data is read in pieces of this size where the stream cannot seek.
_SKIP_BYTES = 1 << 20


class _TarFormatError(ValueError):
    """A tar stream that breaks the format: a damaged header, an early end."""


class _TarEntry:
    """One member's header, and its data, which is read (or passed over) once."""

    __slots__ = ("_done", "_stream", "kind", "link", "name", "size")

    def __init__(self, name: str, kind: bytes, size: int, link: str, stream: BinaryIO):
        self.name, self.kind, self.size, self.link = name, kind, size, link
        self._stream, self._done = stream, False

    def read(self) -> bytes:
        self._done = True
        data = _read_exactly(self._stream, self.size)
        if len(data) != self.size:
            raise _TarFormatError(
                f"member {self.name} ends after {len(data):,} of {self.size:,} bytes"
            )
        _skip(self._stream, -self.size % _BLOCK)
        return data

    def skip(self) -> None:
        if not self._done:
            self._done = True
            _skip(self._stream, self.size + -self.size % _BLOCK)


def _tar_entries(stream: BinaryIO) -> Iterator[_TarEntry]:
    """The members of an uncompressed tar stream, front to back, each once.

    Reads POSIX ustar headers with their pax extended records (``path``,
    ``linkpath``, ``size``) and GNU long names, the forms tar, Python's
    :mod:`tarfile`, img2dataset and the ``webdataset`` library write. The data
    of a member its consumer does not read is passed over with a forward seek
    where the stream allows, so a pass costs one read per block of the shard
    and a few Python operations per member. A damaged header, a member cut
    short, or an end before the end-of-archive block raises
    :class:`_TarFormatError`: a shard cut at a member's boundary is cut short
    too.
    """
    overrides: dict[str, str] = {}
    shared: dict[str, str] = {}
    offset = 0
    while True:
        header = _read_exactly(stream, _BLOCK)
        if len(header) < _BLOCK:
            what = "its end-of-archive block" if not header else "a whole header"
            raise _TarFormatError(f"the shard ends at byte {offset + len(header):,}, before {what}")
        if header == _ZERO_BLOCK:
            return
        _check_header(header, offset)
        kind = header[156:157]
        size = _tar_number(header[124:136], offset)
        entry = _TarEntry(
            _header_name(header), kind, size, _nul_terminated(header[157:257]), stream
        )
        offset += _BLOCK + size + -size % _BLOCK
        if kind in _PAX_TYPES or kind in (_GNU_LONG_NAME, _GNU_LONG_LINK):
            body = entry.read()
            if kind == _GNU_LONG_NAME:
                overrides["path"] = _nul_terminated(body)
            elif kind == _GNU_LONG_LINK:
                overrides["linkpath"] = _nul_terminated(body)
            else:
                (overrides if kind == b"x" else shared).update(_pax_records(body, offset))
            continue
        fields = {**shared, **overrides}
        overrides = {}
        entry.name = fields.get("path", entry.name)
        entry.link = fields.get("linkpath", entry.link)
        if "size" in fields:
            entry.size = int(fields["size"])
            offset += entry.size + -entry.size % _BLOCK - size - -size % _BLOCK
        yield entry
        entry.skip()


_ZERO_BLOCK = bytes(_BLOCK)


def _check_header(header: bytes, offset: int) -> None:
    """Raise unless the header's checksum (unsigned or, as some old tars, signed) matches."""
    try:
        stored = int(header[148:156].strip(b"\0 ") or b"-1", 8)
    except ValueError:
        stored = -1
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    if stored != unsigned and stored != unsigned - 256 * sum(
        b > 127 for b in header[:148] + header[156:]
    ):
        raise _TarFormatError(f"damaged header at byte {offset:,} (its checksum does not match)")


def _tar_number(field: bytes, offset: int) -> int:
    """A header's number: octal text, or GNU's base-256 for sizes over 8 GiB."""
    if field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    try:
        return int(field.strip(b"\0 ") or b"0", 8)
    except ValueError:
        raise _TarFormatError(f"damaged header at byte {offset:,} (a size of {field!r})") from None


def _header_name(header: bytes) -> str:
    name = _nul_terminated(header[:100])
    if header[257:263] == b"ustar\0":  # POSIX: long names are split into prefix/name
        prefix = _nul_terminated(header[345:500])
        if prefix:
            return f"{prefix}/{name}"
    return name


def _nul_terminated(field: bytes) -> str:
    # As tarfile: names are UTF-8, and bytes that are not are kept as surrogates.
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax_records(body: bytes, offset: int) -> dict[str, str]:
    """The ``LENGTH KEY=VALUE\\n`` records of a pax extended header."""
    records, at = {}, 0
    while at < len(body) and body[at : at + 1] != b"\0":
        space = body.find(b" ", at)
        try:
            length = int(body[at:space])
        except ValueError:
            raise _TarFormatError(f"damaged pax header before byte {offset:,}") from None
        key, _, value = body[space + 1 : at + length - 1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        at += length
    return records


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    """``size`` bytes, or fewer only where the stream ends."""
    data = stream.read(size)
    if data is None or len(data) == size:
        return data or b""
    pieces = [data]
    received = len(data)
    while received < size and (piece := stream.read(size - received)):
        pieces.append(piece)
        received += len(piece)
    return b"".join(pieces)


def _skip(stream: BinaryIO, size: int) -> None:
    """Pass over ``size`` bytes: a seek where the stream can, else reads of bounded size.

    A seek past the end goes unnoticed here; the next header read then finds the end.
    """
    if size <= 0:
        return
    if stream.seekable():
        stream.seek(size, io.SEEK_CUR)
        return
    while size > 0 and (piece := stream.read(min(size, _SKIP_BYTES))):
        size -= len(piece)


# The first bytes of a gzip, bzip2 or xz stream.
_DECOMPRESSORS = {
    b"\x1f\x8b": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    b"BZh": bz2.BZ2File,
    b"\xfd7zXZ\x00": lzma.LZMAFile,
}


def _decompressed(stream: BinaryIO) -> BinaryIO:
    """``stream`` as tar bytes: itself, or its decompression if it is gzip, bzip2 or xz."""
    if stream.seekable():
        start = stream.tell()
        head = _read_exactly(stream, 6)
        stream.seek(start)
    else:
        if not hasattr(stream, "peek"):
            stream = io.BufferedReader(stream)
        head = stream.peek(6)[:6]
    for magic, open_compressed in _DECOMPRESSORS.items():
        if head.startswith(magic):
            return open_compressed(stream)
    return stream


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
            raise UsageError(
                f"image_column {requested!r} is not a column of images "
                f"(binary, or a struct with binary 'bytes'); image columns: {images}"
            )
        return requested
    if DEFAULT_IMAGE_COLUMN in images:
        return DEFAULT_IMAGE_COLUMN
    if len(images) > 1:
        raise UsageError(f"several image columns {images}: choose one with image_column")
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
        row = starts[group]
        try:
            # One column: Arrow's threads would only compete with the decoding.
            for batch in parquet.iter_batches(
                _batch_rows(metadata.row_group(group)),
                row_groups=[group],
                columns=[column],
                use_threads=False,
            ):
                for body, path in _bytes_and_paths(batch.column(0)):
                    uri = member_uri(file, row)
                    row += 1
                    if body is None:
                        error = f"null image cell in column {column!r}"
                        yield Member(uri, source_path=path, error=error)
                    else:
                        yield Member(uri, source_path=path, data=body)
        except (OSError, pa.ArrowException) as exc:
            yield Member(file, error=f"unreadable Parquet row group {group}: {reason(exc)}")
            return


# Row groups are decoded in batches of about this many bytes: a few images, whose
# buffers the allocator reuses, rather than a whole row group in fresh memory.
PARQUET_BATCH_BYTES = 1 << 20


def _batch_rows(row_group: pq.RowGroupMetaData) -> int:
    """Rows of a batch of about :data:`PARQUET_BATCH_BYTES` in ``row_group``."""
    row_bytes = row_group.total_byte_size / max(row_group.num_rows, 1)
    return max(1, int(PARQUET_BATCH_BYTES // max(row_bytes, 1)))


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

    ``cells`` is a batch of about :data:`PARQUET_BATCH_BYTES`, whose bytes are
    copied out at once.
    """
    struct = pa.types.is_struct(cells.type)
    data = (cells.field("bytes") if struct else cells).to_pylist()
    if struct and cells.type.get_field_index("path") >= 0:
        paths = cells.field("path").to_pylist()
    else:
        paths = [None] * len(cells)
    # A null struct hides its fields' values.
    for ok, body, path in zip(cells.is_valid().to_pylist(), data, paths, strict=True):
        yield (body, path) if ok else (None, None)


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
                for found in _members_of(
                    container, stream, waiting, image_extensions, limit, column
                ):
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
            for found in iter_tar(stream, shard, image_extensions, limit):
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


def _members_of(container, stream, waiting, image_extensions, limit, requested) -> Iterator[Member]:
    if container.lower().endswith(TAR_EXTENSIONS):
        yield from iter_tar(stream, container, image_extensions, limit)
        return
    # Column chunks are read in pieces rather than whole (a row group's images).
    parquet = pq.ParquetFile(stream, buffer_size=PARQUET_BATCH_BYTES)
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
