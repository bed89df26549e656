"""palette-dask: colour-palette datasets from image corpora, computed in parallel on Dask.

>>> import numpy as np, palette_dask
>>> img = np.zeros((8, 8, 3), np.uint8); img[:4] = (21, 101, 161)
>>> palette_dask.extract_palette(img, k=5).hex
['#000000', '#1565a1']
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("palette-dask")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

from .dataset import PaletteDataset, open_dataset
from .palette import Palette, extract_palette
from .pipeline import JobReport, run_job
from .search import search  # the function; the module stays importable by name
from .spec import JobSpec

__all__ = [
    "JobReport",
    "JobSpec",
    "Palette",
    "PaletteDataset",
    "__version__",
    "extract_palette",
    "open_dataset",
    "run_job",
    "search",
]
