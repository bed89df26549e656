"""Deterministic benchmark corpora made from the photographs that ship with scikit-image."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
from skimage import data
from skimage.transform import resize

SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")


def make_web_corpus(folder: Path, n_images: int, *, megapixels: float = 1.0, seed: int = 0):
    """JPEGs of about ``megapixels`` MP: upscaled, noisy random crops of the sample photographs."""
    rng = np.random.default_rng(seed)
    photos = [getattr(data, name)()[..., :3] for name in SOURCES]
    side = int(np.sqrt(megapixels * 1e6 / 1.5))
    paths = []
    for i in range(n_images):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        ch, cw = rng.integers(h // 2, h + 1), rng.integers(w // 2, w + 1)
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = photo[top : top + ch, left : left + cw]
        big = resize(crop, (side, int(side * 1.5)), order=1, preserve_range=True)
        big = np.clip(big + rng.normal(0, 4, big.shape), 0, 255).astype(np.uint8)
        path = folder / f"web{i:05d}.jpg"
        iio.imwrite(path, big, quality=90)
        paths.append(path)
    return paths
