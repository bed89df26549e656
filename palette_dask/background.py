"""An image's plain background, found from its border, to leave out of clustering.

Product shots, logos and scans sit on a plain background that would dominate
their palette. The background is estimated from the sample's border: the
colour whose CIELAB neighbourhood (``delta_e``) holds most of the border's
pixels, when it holds at least ``border_share`` of them; its colour is the
mean of those pixels. The pixels within ``delta_e`` of that colour and
connected to the border through such pixels (4-connected) are the background,
with the specks of noise they enclose; the same colour inside the object, cut
off from the border, is kept. A busy border (a photograph) has no such colour,
and nothing is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .color import pack_rgb, rgb_to_hex, rgb_to_lab, round_to_uint8

# Regions of other colours this small (pixels, or share of the image) inside the
# background are noise, not the object.
SPECK_PIXELS = 4
SPECK_SHARE = 0.0005


@dataclass(frozen=True)
class Background:
    """``mask``: (h, w) bool, the pixels of the background; ``hex``: its colour."""

    mask: np.ndarray
    hex: str


def border_background(
    rgb: np.ndarray,
    included: np.ndarray | None,
    delta_e: float,
    border_share: float,
) -> Background | None:
    """The background of the (h, w, 3) uint8 image ``rgb``, or ``None`` when its border has
    no colour covering ``border_share`` of it within ``delta_e``.

    ``included`` (h, w) bool marks the pixels that take part (opaque ones), or
    ``None`` for all; the others are neither border nor background.

    Examples
    --------
    >>> image = np.full((20, 20, 3), 250, np.uint8); image[5:15, 5:15] = (200, 30, 40)
    >>> found = border_background(image, None, delta_e=10, border_share=0.5)
    >>> found.hex, int(found.mask.sum())
    ('#fafafa', 300)
    """
    from scipy import ndimage  # loaded by jobs that leave backgrounds out only

    height, width = rgb.shape[:2]
    edge = np.zeros((height, width), bool)
    edge[[0, -1], :] = True
    edge[:, [0, -1]] = True
    if included is not None:
        edge &= included
    border = rgb[edge]
    if not len(border):
        return None
    keys, first, counts = np.unique(pack_rgb(border), return_index=True, return_counts=True)
    lab = rgb_to_lab(border[first]).astype(np.float64)
    near = ((lab[:, None] - lab[None]) ** 2).sum(axis=2) <= delta_e**2
    covered = near @ counts
    # The most covering colour; of equal ones, the most frequent, then the lowest key.
    best = np.lexsort((keys, -counts, -covered))[0]
    if covered[best] < border_share * len(border):
        return None
    color_lab = (lab[near[best]] * counts[near[best], None]).sum(axis=0) / covered[best]
    pixel_lab = rgb_to_lab(rgb.reshape(-1, 3)).astype(np.float64)
    close = (((pixel_lab - color_lab) ** 2).sum(axis=1) <= delta_e**2).reshape(height, width)
    if included is not None:
        close &= included
    regions, _ = ndimage.label(close)
    touching = np.unique(regions[edge & close])
    mask = np.isin(regions, touching[touching > 0])
    # Specks of noise beyond delta_e inside the background are background too.
    others, n_others = ndimage.label(~mask if included is None else ~mask & included)
    sizes = np.bincount(others.reshape(-1), minlength=n_others + 1)
    specks = np.flatnonzero(sizes <= max(SPECK_PIXELS, SPECK_SHARE * height * width))
    mask |= np.isin(others, specks[specks > 0])
    mean_rgb = round_to_uint8(rgb[edge & mask].astype(np.float64).mean(axis=0))
    return Background(mask=mask, hex=rgb_to_hex(mean_rgb[None])[0])
