"""Reading a finished dataset back: Arrow tables, pandas frames and the job record."""

from __future__ import annotations

import json

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from .tables import JOB_FILE, SCHEMAS, join


class PaletteDataset:
    """The tables of a palette dataset.

    Parameters
    ----------
    path : str
        The job's output folder (local path or fsspec URL).

    Examples
    --------
    >>> ds = open_dataset("out/sample")                      # doctest: +SKIP
    >>> ds.palettes.query("rank == 0")[["image_id", "hex"]]  # doctest: +SKIP
    """

    def __init__(self, path: str):
        fs, root = fsspec.core.url_to_fs(path)
        if not fs.exists(join(root, "images")):
            raise FileNotFoundError(f"{path!r} is not a palette-dask dataset (no images table)")
        self.path = path
        self._fs = fs
        self._root = root

    def table(self, name: str) -> pa.Table:
        """One table as a :class:`pyarrow.Table`, with its declared schema.

        ``corpus_palette`` is empty for a dataset made in ``image`` mode.
        """
        if name == "corpus_palette" and not self._fs.exists(join(self._root, name)):
            return SCHEMAS[name].empty_table()
        return self.arrow_dataset(name).to_table()

    def arrow_dataset(self, name: str) -> pads.Dataset:
        """One table as a lazy :class:`pyarrow.dataset.Dataset` (for filters and projections)."""
        if name not in SCHEMAS:
            raise ValueError(f"table must be one of {tuple(SCHEMAS)}, got {name!r}")
        return pads.dataset(
            join(self._root, name), schema=SCHEMAS[name], format="parquet", filesystem=self._fs
        )

    def to_pandas(self, name: str) -> pd.DataFrame:
        """One table as a pandas DataFrame."""
        return self.table(name).to_pandas()

    @property
    def images(self) -> pd.DataFrame:
        return self.to_pandas("images")

    @property
    def palettes(self) -> pd.DataFrame:
        return self.to_pandas("palettes")

    @property
    def assignments(self) -> pd.DataFrame:
        return self.to_pandas("assignments")

    @property
    def corpus_palette(self) -> pd.DataFrame:
        return self.to_pandas("corpus_palette")

    @property
    def job(self) -> dict:
        """The job record (``_job.json``): spec, versions, times and counts."""
        with self._fs.open(join(self._root, JOB_FILE), "r") as f:
            return json.load(f)

    def __repr__(self) -> str:
        return f"PaletteDataset({self.path!r})"


def open_dataset(path: str) -> PaletteDataset:
    """Open the dataset a job wrote to ``path``."""
    return PaletteDataset(path)
