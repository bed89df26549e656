"""Argument checks shared by the public entry points."""

from __future__ import annotations

import numbers

from .errors import UsageError, UsageTypeError


def check_int(name: str, value, low: int, high: int | None = None) -> None:
    """Raise unless ``value`` is an integer in ``[low, high]``, naming the parameter.

    Examples
    --------
    >>> check_int("k", 0, 1, 254)
    Traceback (most recent call last):
    ...
    palette_dask.errors.UsageError: `k` must be between 1 and 254, got 0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UsageTypeError(f"`{name}` must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise UsageError(f"`{name}` must be {bound}, got {value}")
