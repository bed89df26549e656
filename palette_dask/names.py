"""Colours in words: the nearest CSS named colour, and a family from a short list.

Search and analytics users think in words ("teal", "warm reds"), not hex
codes. Every palette colour gets

- ``name``: the nearest of the 148 named colours of CSS Color Module Level 4
  (``data/css_named_colors.csv``, from https://www.w3.org/TR/css-color-4/#named-colors)
  by CIELAB distance (ΔE 1976); of names for the same colour (``gray`` and
  ``grey``), the first in alphabetical order;
- ``family``: one of :data:`FAMILIES`, from the colour's OKLCh lightness ``L``
  (0–100), chroma ``C`` and hue ``h`` (degrees), OKLab's hues being close to
  those people name:

  ======  ===============================================================
  black   ``L < 18``, or ``C < 3.5`` and ``L < 25``
  white   ``C < 3.5`` and ``L > 93``, or ``C < 5`` and ``L > 96``
  grey    other colours of ``C < 3.5``
  pink    ``h ≥ 330`` or ``h < 20``, and ``L ≥ 60``
  brown   ``35 ≤ h < 90`` and ``L < 58``; or ``20 ≤ h < 90``, ``C < 8`` and ``L < 85``
  red     ``h ≥ 345`` or ``h < 40``
  orange  ``40 ≤ h < 80``
  yellow  ``80 ≤ h < 120``
  green   ``120 ≤ h < 170``
  teal    ``170 ≤ h < 220``
  blue    ``220 ≤ h < 290``
  purple  ``290 ≤ h < 345``
  ======  ===============================================================

  (the first row that holds gives the family).

A search by a family (``--color teal``), or by a CSS name (``--color navy``:
its family, here blue), counts the palette colours of that family.
"""

from __future__ import annotations

import csv
import functools
import importlib.resources

import numpy as np

from .color import hex_to_rgb, rgb_to_lab, rgb_to_oklab

FAMILIES = (
    "red",
    "orange",
    "yellow",
    "green",
    "teal",
    "blue",
    "purple",
    "pink",
    "brown",
    "grey",
    "black",
    "white",
)
# Colours named at once: their distances to every named colour, 8 MB at a time.
NAMED_AT_ONCE = 8192
_HUES = (  # (family, first hue) of the chromatic families, by hue
    ("red", 0),
    ("orange", 40),
    ("yellow", 80),
    ("green", 120),
    ("teal", 170),
    ("blue", 220),
    ("purple", 290),
    ("red", 345),
)


@functools.cache
def css_colors() -> tuple[tuple[str, ...], np.ndarray]:
    """``(names, rgb)``: the CSS named colours in alphabetical order, and their (n, 3) uint8
    sRGB values."""
    text = importlib.resources.files("palette_dask").joinpath("data", "css_named_colors.csv")
    rows = list(csv.DictReader(line for line in text.read_text().splitlines() if line[:1] != "#"))
    rows.sort(key=lambda row: row["name"])
    return tuple(r["name"] for r in rows), np.stack([hex_to_rgb(r["hex"]) for r in rows])


@functools.cache
def _css_lab() -> np.ndarray:
    return rgb_to_lab(css_colors()[1]).astype(np.float64)


def color_names(rgb: np.ndarray) -> list[str]:
    """The nearest CSS named colour of each (n, 3) uint8 sRGB colour, by CIELAB distance.

    Examples
    --------
    >>> color_names(np.array([[0, 128, 128], [200, 30, 40]], np.uint8))
    ['teal', 'firebrick']
    """
    names, _ = css_colors()
    lab = rgb_to_lab(np.asarray(rgb, np.uint8).reshape(-1, 3)).astype(np.float64)
    nearest = np.empty(len(lab), np.int64)
    for start in range(0, len(lab), NAMED_AT_ONCE):  # a bounded distance matrix at a time
        part = lab[start : start + NAMED_AT_ONCE]
        squared = ((part[:, None, :] - _css_lab()[None]) ** 2).sum(axis=2)
        # argmin takes the first of equal distances: names in alphabetical order.
        nearest[start : start + len(part)] = np.argmin(squared, axis=1)
    return [names[i] for i in nearest]


def family_codes(rgb: np.ndarray) -> np.ndarray:
    """(n,) uint8: each (n, 3) uint8 sRGB colour's family, an index into :data:`FAMILIES`."""
    oklab = rgb_to_oklab(np.asarray(rgb, np.uint8).reshape(-1, 3)).astype(np.float64)
    lightness, chroma = oklab[:, 0], np.hypot(oklab[:, 1], oklab[:, 2])
    hue = np.degrees(np.arctan2(oklab[:, 2], oklab[:, 1])) % 360
    starts = np.array([start for _, start in _HUES])
    by_hue = np.array([FAMILIES.index(name) for name, _ in _HUES], np.uint8)
    codes = by_hue[np.searchsorted(starts, hue, side="right") - 1]
    code = {name: np.uint8(FAMILIES.index(name)) for name in FAMILIES}
    brown = ((hue >= 35) & (hue < 90) & (lightness < 58)) | (
        (hue >= 20) & (hue < 90) & (chroma < 8) & (lightness < 85)
    )
    rules = [  # the last that holds wins: the table of the module's docstring, upwards
        (brown, code["brown"]),
        (((hue >= 330) | (hue < 20)) & (lightness >= 60), code["pink"]),
        (chroma < 3.5, code["grey"]),
        (((chroma < 3.5) & (lightness > 93)) | ((chroma < 5) & (lightness > 96)), code["white"]),
        ((lightness < 18) | ((chroma < 3.5) & (lightness < 25)), code["black"]),
    ]
    for holds, family in rules:
        codes = np.where(holds, family, codes)
    return codes.astype(np.uint8)


def color_families(rgb: np.ndarray) -> list[str]:
    """The family of each (n, 3) uint8 sRGB colour (see the module's docstring).

    Examples
    --------
    >>> color_families(np.array([[0, 128, 128], [200, 30, 40], [250, 250, 250]], np.uint8))
    ['teal', 'red', 'white']
    """
    return [FAMILIES[code] for code in family_codes(rgb)]


def family_of_name(word: str) -> int | None:
    """The family code a word names: a family (``teal``) or a CSS named colour (``navy``:
    its own family); ``None`` for other words.

    Examples
    --------
    >>> FAMILIES[family_of_name("navy")], FAMILIES[family_of_name("Teal")]
    ('blue', 'teal')
    """
    word = word.strip().lower()
    if word in FAMILIES:
        return FAMILIES.index(word)
    if word == "gray":
        return FAMILIES.index("grey")
    names, rgb = css_colors()
    if word in names:
        return int(family_codes(rgb[names.index(word)][None])[0])
    return None
