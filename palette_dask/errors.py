"""The library's errors: those an input can cause (the text of the ``error`` column),
and those that stop a job.

Every error palette-dask raises on purpose derives from :class:`PaletteDaskError`;
the command line shows its message as one line. Anything else is a defect.
"""

from __future__ import annotations


class PaletteDaskError(Exception):
    """An error palette-dask raises on purpose, its message written for the user."""


class UsageError(PaletteDaskError, ValueError):
    """A setting, input or argument palette-dask cannot take; the message says which
    and what it takes instead."""


class UsageTypeError(UsageError, TypeError):
    """A setting, input or argument of the wrong type."""


class ImageError(PaletteDaskError, ValueError):
    """An input that cannot be turned into a palette; its message ends up in the ``error`` column.

    ``format`` is the encoded format when it was recognised before the failure.
    """

    def __init__(self, message: str, *, format: str | None = None):
        super().__init__(message)
        self.format = format


class ReadError(ImageError):
    """A failed read, whose message is the ``error`` column's text.

    ``passing`` tells whether trying again may help (a time-out, HTTP 503) or
    not (HTTP 404); ``retry_after`` is the wait the server asked for (HTTP
    ``Retry-After``), if any.
    """

    def __init__(self, message: str, *, passing: bool, retry_after: float | None = None):
        super().__init__(message)
        self.passing = passing
        self.retry_after = retry_after


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


class VersionMismatchError(PaletteDaskError, RuntimeError):
    """The workers run other versions of the packages that decide the results."""


class UnknownImageError(PaletteDaskError, KeyError):
    """Images named by id or URI that a dataset does not hold; the message names them."""

    def __str__(self) -> str:
        # KeyError's own text is the quoted key, not a message.
        return str(self.args[0])


class SchedulerUnreachableError(PaletteDaskError, ConnectionError):
    """The Dask scheduler a job names cannot be reached at its start."""


class JobStopped(PaletteDaskError):
    """A job that stopped before it completed: what happened, in the user's words
    (``reason``), what it kept (``kept``), what to do (``advice``).

    ``status`` is what ``_job.json`` records (``failed`` or ``interrupted``), and
    ``exit_code`` the command line's (1, or 130 when interrupted).
    """

    def __init__(self, reason: str, *, kept: str = "", advice: str = "", status: str = "failed"):
        super().__init__(reason)
        self.reason, self.kept, self.advice, self.status = reason, kept, advice, status

    @property
    def exit_code(self) -> int:
        return 130 if self.status == "interrupted" else 1

    def __str__(self) -> str:
        return "\n".join(line for line in (self.reason, self.kept, self.advice) if line)
