"""Colour across a collection: counts, dominant colours and distributions.

All figures weigh every image equally: a palette colour stands for its share
of its image, divided by the number of images, so the collection's shares sum
to 1 whatever the images' sizes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from .color import lab_to_rgb, rgb_to_hex
from .dataset import PaletteDataset, dataset_and_kind
from .names import FAMILIES

MERGE_DISTANCE = 10.0
# Hue is left out below this chroma: greys have none worth counting.
MIN_CHROMA = 8.0
LIGHTNESS_BINS = np.linspace(0, 100, 11)
CHROMA_BINS = np.array([0, 10, 20, 30, 40, 50, 60, 80, 100, 150])
HUE_BINS = np.linspace(0, 360, 13)


@dataclass(frozen=True)
class CollectionStats:
    """What :func:`collection_stats` finds.

    Attributes
    ----------
    images, ok, failed : int
    errors : pandas.Series
        Failed images per kind of error, most frequent first.
    dominant : pandas.DataFrame
        ``hex`` (a real palette colour: the heaviest of its group), ``share``
        of the collection, ``images`` holding a colour of the group.
    lightness, chroma, hue : pandas.Series
        Share of the collection per bin (CIELAB L*, C*ab, h in degrees; hue
        over colours of chroma at least ``MIN_CHROMA``, as a share of those).
    families : pandas.Series
        Share of the collection per colour family (see :mod:`palette_dask.names`),
        in the order of :data:`~palette_dask.names.FAMILIES`.
    """

    images: int
    ok: int
    failed: int
    errors: pd.Series
    dominant: pd.DataFrame
    lightness: pd.Series
    chroma: pd.Series
    hue: pd.Series
    families: pd.Series


def error_kind(message: str) -> str:
    """The kind of an ``error`` message: its text before any detail.

    Examples
    --------
    >>> error_kind("truncated or corrupt JPEG data: image file is truncated")
    'truncated or corrupt JPEG data'
    >>> error_kind("file is 3,000,054 bytes, over max_file_bytes=2,000,000")
    'file is N bytes, over max_file_bytes=N'
    """
    head = re.split(r"[:(]", message, maxsplit=1)[0].strip()
    return re.sub(r"\d[\d,.]*", "N", head)


def merge_colors(lab: np.ndarray, weight: np.ndarray, distance: float = MERGE_DISTANCE):
    """Group colours greedily, heaviest first: each joins the first group within ``distance``.

    Returns each colour's group and each group's founding (heaviest) colour index.

    Examples
    --------
    >>> lab = np.array([[50.0, 0, 0], [52, 0, 0], [90, 0, 0]])
    >>> group, founder = merge_colors(lab, np.array([0.5, 0.2, 0.3]))
    >>> group.tolist(), founder.tolist()
    ([0, 0, 1], [0, 2])
    """
    order = np.argsort(-weight, kind="stable")
    group = np.full(len(lab), -1, dtype=np.int64)
    founders: list[int] = []
    for i in order:
        if group[i] >= 0:
            continue
        founders.append(int(i))
        # Every colour not yet grouped within reach of this founder joins it.
        near = (group < 0) & (np.sqrt(((lab - lab[i]) ** 2).sum(axis=1)) <= distance)
        group[near] = len(founders) - 1
    return group, np.array(founders, dtype=np.int64)


def _histogram(values, weights, bins) -> pd.Series:
    counts, edges = np.histogram(values, bins=bins, weights=weights)
    total = counts.sum()
    labels = [f"{edges[i]:g}–{edges[i + 1]:g}" for i in range(len(counts))]
    return pd.Series(counts / total if total else counts, index=labels)


def collection_stats(
    dataset: str | PaletteDataset,
    *,
    kind: str | None = None,
    n_colors: int = 10,
    merge_distance: float = MERGE_DISTANCE,
    storage_options: Mapping | None = None,
) -> CollectionStats:
    """Counts, dominant colours and colour distributions of a finished dataset.

    ``storage_options`` open a dataset given by URL (see :func:`palette_dask.open_dataset`).
    """
    ds, kind = dataset_and_kind(dataset, kind, storage_options)
    images = ds.arrow_dataset("images").to_table(columns=["status", "error"]).to_pandas()
    failed = images[images.status != "ok"]
    errors = failed.error.fillna("").map(error_kind).value_counts()
    palettes = (
        ds.arrow_dataset("palettes")
        .to_table(
            columns=["image_id", "hex", "family", "lab_l", "lab_a", "lab_b", "proportion"],
            filter=pc.field("palette_kind") == kind,
        )
        .to_pandas()
    )
    n_images = max(palettes.image_id.nunique(), 1)
    palettes["weight"] = palettes.proportion / n_images
    # The same colour in many palettes counts once, with all its weight.
    colors = palettes.groupby("hex").agg(
        lab_l=("lab_l", "first"),
        lab_a=("lab_a", "first"),
        lab_b=("lab_b", "first"),
        weight=("weight", "sum"),
    )
    lab = colors[["lab_l", "lab_a", "lab_b"]].to_numpy(dtype=np.float64)
    group, founders = merge_colors(lab, colors.weight.to_numpy(), merge_distance)
    palettes["group"] = group[colors.index.get_indexer(palettes.hex)]
    by_group = palettes.groupby("group").agg(
        share=("weight", "sum"), images=("image_id", "nunique")
    )
    by_group["hex"] = colors.index.to_numpy()[founders[by_group.index]]
    dominant = (
        by_group.sort_values(["share", "hex"], ascending=[False, True])
        .head(n_colors)
        .reset_index(drop=True)[["hex", "share", "images"]]
    )
    chroma = np.hypot(palettes.lab_a, palettes.lab_b)
    hue = np.degrees(np.arctan2(palettes.lab_b, palettes.lab_a)) % 360
    colored = chroma >= MIN_CHROMA
    return CollectionStats(
        images=len(images),
        ok=int((images.status == "ok").sum()),
        failed=len(failed),
        errors=errors,
        dominant=dominant,
        lightness=_histogram(palettes.lab_l, palettes.weight, LIGHTNESS_BINS),
        chroma=_histogram(chroma, palettes.weight, CHROMA_BINS),
        hue=_histogram(hue[colored], palettes.weight[colored], HUE_BINS),
        families=palettes.groupby("family").weight.sum().reindex(FAMILIES, fill_value=0.0),
    )


def bar_chart(values: pd.Series, colors: list[str], title: str, size=(640, 300)) -> np.ndarray:
    """A bar chart of ``values`` (one bar per bin, in ``colors``) drawn with Pillow."""
    from PIL import Image, ImageDraw, ImageFont

    from .color import hex_to_rgb

    width, height = size
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=12)
    draw.text((10, 6), title, fill="black", font=font)
    top, bottom, left = 28, height - 36, 10
    slot = (width - 2 * left) / max(len(values), 1)
    peak = max(float(values.max()), 1e-12)
    for i, (label, value) in enumerate(values.items()):
        x0 = left + i * slot + 2
        bar_top = bottom - (bottom - top) * float(value) / peak
        draw.rectangle((x0, bar_top, x0 + slot - 4, bottom), fill=tuple(hex_to_rgb(colors[i])))
        draw.text((x0, bottom + 4), str(label), fill="black", font=font)
        draw.text((x0, max(top, bar_top - 14)), f"{value:.0%}", fill="black", font=font)
    return np.asarray(image)


def chart_colors(stats: CollectionStats) -> dict[str, list[str]]:
    """Bar colours of the charts: the dominant colours, greys by lightness, hues."""
    mid = lambda edges: (edges[:-1] + edges[1:]) / 2  # noqa: E731
    lightness = np.stack([mid(LIGHTNESS_BINS), np.zeros(10), np.zeros(10)], axis=1)
    chroma = np.stack([np.full(9, 60.0), mid(CHROMA_BINS) * 0.7, np.zeros(9)], axis=1)
    hues = np.radians(mid(HUE_BINS))
    hue = np.stack([np.full(12, 65.0), 45 * np.cos(hues), 45 * np.sin(hues)], axis=1)
    return {
        "dominant": stats.dominant.hex.tolist(),
        "lightness": rgb_to_hex(lab_to_rgb(lightness)),
        "chroma": rgb_to_hex(lab_to_rgb(chroma)),
        "hue": rgb_to_hex(lab_to_rgb(hue)),
    }


def write_charts(stats: CollectionStats, folder: str) -> list[str]:
    """Write the bar charts of ``stats`` as PNG files into ``folder``: the dominant
    colours, lightness, chroma and hue. Returns their paths."""
    from .render import write_pngs  # Pillow, as bar_chart

    colors = chart_colors(stats)
    charts = {
        "dominant": stats.dominant.set_index("hex")["share"],
        "lightness": stats.lightness,
        "chroma": stats.chroma,
        "hue": stats.hue,
    }
    return write_pngs(
        folder, {name: bar_chart(values, colors[name], name) for name, values in charts.items()}
    )
