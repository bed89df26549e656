"""Sample photographs: the colour photographs that scikit-image ships in its wheel."""

from __future__ import annotations

import os

import imageio.v3 as iio
from skimage import data

from .storage import write_atomic

# Loader name in skimage.data -> file written; a mix of JPEG and PNG on purpose.
SAMPLE_PHOTOGRAPHS = {
    "astronaut": "astronaut.jpg",
    "chelsea": "chelsea.png",
    "coffee": "coffee.jpg",
    "rocket": "rocket.jpg",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "immunohistochemistry.png",
    "retina": "retina.jpg",
    "motorcycle_left": "motorcycle.png",
    "colorwheel": "colorwheel.png",
}


def _load(name: str):
    if name == "motorcycle_left":
        return data.stereo_motorcycle()[0]
    return getattr(data, name)()


def export_samples(folder: str) -> list[str]:
    """Write the sample photographs into ``folder`` (no network needed) and return their paths.

    Existing files are kept, so calling this again is cheap.
    """
    os.makedirs(folder, exist_ok=True)
    paths = []
    for name, filename in SAMPLE_PHOTOGRAPHS.items():
        path = os.path.join(folder, filename)
        if not os.path.exists(path):
            pixels = _load(name)
            extension = os.path.splitext(filename)[1]
            options = {"quality": 92} if extension == ".jpg" else {}
            encoded = iio.imwrite("<bytes>", pixels[..., :3], extension=extension, **options)
            write_atomic(path, encoded)
        paths.append(path)
    return paths
