"""Errors an input can cause: the text of the ``error`` column."""

from __future__ import annotations


class ImageError(ValueError):
    """An input that cannot be turned into a palette; its message ends up in the ``error`` column.

    ``format`` is the encoded format when it was recognised before the failure.
    """

    def __init__(self, message: str, *, format: str | None = None):
        super().__init__(message)
        self.format = format


def reason(exc: BaseException) -> str:
    """A decoder's exception as one line for the ``error`` column.

    Decoders raise multi-line messages, some with advice for their own
    developers (the JPEG XL plugin's "Please build libjxl from source …"); the
    column keeps the first line, without that advice.

    Examples
    --------
    >>> reason(RuntimeError("Generic Error. Please build `libjxl` from source\\n  in debug mode"))
    'Generic Error.'
    """
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return first.split(" Please build")[0].strip()


def file_too_large(limit: int, size: int | None = None) -> ImageError:
    """The error of a file over ``max_file_bytes``, with its size when it is known.

    Examples
    --------
    >>> str(file_too_large(1000, 4096)), str(file_too_large(1000))
    ('file is 4,096 bytes, over max_file_bytes=1,000', 'file is over max_file_bytes=1,000')
    """
    what = "file is" if size is None else f"file is {size:,} bytes,"
    return ImageError(f"{what} over max_file_bytes={limit:,}")
