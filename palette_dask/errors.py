"""Errors an input can cause: the text of the ``error`` column."""

from __future__ import annotations


class ImageError(ValueError):
    """An input that cannot be turned into a palette; its message ends up in the ``error`` column.

    ``format`` is the encoded format when it was recognised before the failure.
    """

    def __init__(self, message: str, *, format: str | None = None):
        super().__init__(message)
        self.format = format
