"""palette-dask: colour-palette datasets from image corpora, computed in parallel on Dask.

>>> import numpy as np, palette_dask
>>> img = np.zeros((8, 8, 3), np.uint8); img[:4] = (21, 101, 161)
>>> palette_dask.extract_palette(img, k=5).hex
['#000000', '#1565a1']

The names below are loaded on first use (PEP 562), so that reading a dataset
or asking the command line for help does not import the compute stack (Dask's
distributed scheduler, numba, scikit-learn, scikit-image).
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("palette-dask")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

# Each public name and the module that defines it.
_PUBLIC = {
    "JobReport": "pipeline",
    "JobSpec": "spec",
    "Palette": "palette",
    "PaletteDataset": "dataset",
    "extract_palette": "palette",
    "open_dataset": "dataset",
    "run_job": "pipeline",
    "search": "query",
}

__all__ = ["__version__", *sorted(_PUBLIC)]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
