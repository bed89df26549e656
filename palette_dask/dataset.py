"""Reading a finished dataset back: Arrow tables, pandas frames and the job record."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from .errors import UnknownImageError, UsageError, UsageTypeError
from .options import TRANSPARENT_LABEL
from .sources import normalize_uri
from .storage import filesystem, fresh, join
from .tables import INDEX_FOLDER, JOB_FILE, SCHEMAS, listed_visible_files, read_job_file


@dataclass(frozen=True)
class StoredPalette:
    """One image's palette as a dataset holds it: enough to draw it, no image decoded.

    Attributes
    ----------
    image_id, uri : str
    kind : {"image", "corpus"}
        The image's own palette, or the image over the corpus palette.
    colors : (n, 3) uint8 ndarray
        Largest share first.
    proportions : (n,) float32 ndarray
    labels : (h, w) uint8 ndarray
        Index into ``colors`` of each sample pixel, 255 where left out.
    width, height : int
        Size of the upright image.
    """

    image_id: str
    uri: str
    kind: str
    colors: np.ndarray
    proportions: np.ndarray
    labels: np.ndarray
    width: int
    height: int


# Reads of a table, each from a fresh listing, before a vanished file is an error.
_READS = 3


class PaletteDataset:
    """The tables of a palette dataset.

    Parameters
    ----------
    path : str
        The job's output folder (local path or fsspec URL).
    storage_options : dict, optional
        fsspec options of a remote ``path`` (see :class:`palette_dask.JobSpec`);
        every read of the dataset goes through the one file system they open.

    Attributes
    ----------
    path : str
    storage_options : dict
    fs : fsspec.AbstractFileSystem
        The file system holding the dataset.
    root : str
        The dataset's folder on ``fs``.

    Examples
    --------
    >>> ds = open_dataset("out/sample")                      # doctest: +SKIP
    >>> ds.palettes.query("rank == 0")[["image_id", "hex"]]  # doctest: +SKIP
    >>> open_dataset("s3://bucket/palettes", storage_options={"anon": True})  # doctest: +SKIP
    """

    def __init__(self, path: str, storage_options: Mapping | None = None):
        if not isinstance(path, str) or not path:
            raise UsageTypeError(f"`path` must be a non-empty string, got {path!r}")
        self.path = path
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = filesystem(path, self.storage_options)
        # A job (other processes) may have written the dataset since this process listed it.
        for name in (*SCHEMAS, INDEX_FOLDER):
            fresh(self.fs, join(self.root, name))
        if not self.fs.exists(self.root):
            raise FileNotFoundError(f"dataset {path!r} does not exist")
        if not self.fs.exists(join(self.root, "images")):
            raise FileNotFoundError(f"{path!r} is not a palette-dask dataset (no images table)")

    def table(self, name: str) -> pa.Table:
        """One table as a :class:`pyarrow.Table`, with its declared schema.

        ``corpus_palette`` is empty for a dataset made in ``image`` mode.
        """
        if name == "corpus_palette" and not self.fs.exists(join(self.root, name)):
            return SCHEMAS[name].empty_table()
        # A compaction removes the files it replaced: one may go between the listing and
        # the read, and the next listing has the file that holds its rows instead.
        for _ in range(_READS - 1):
            try:
                return self.arrow_dataset(name).to_table()
            except FileNotFoundError:
                continue
        return self.arrow_dataset(name).to_table()

    def arrow_dataset(self, name: str) -> pads.Dataset:
        """One table as a lazy :class:`pyarrow.dataset.Dataset` (for filters and projections)."""
        if name not in SCHEMAS:
            raise UsageError(f"table must be one of {tuple(SCHEMAS)}, got {name!r}")
        folder = join(self.root, name)
        # Only the files readers take: not those a compaction has replaced (see compact).
        files = [join(folder, file) for file in listed_visible_files(self.fs, folder)]
        return pads.dataset(files, schema=SCHEMAS[name], format="parquet", filesystem=self.fs)

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

    def default_kind(self) -> str:
        """``corpus`` for a dataset made in ``corpus`` mode, else ``image``."""
        return "corpus" if self.job["spec"].get("mode") == "corpus" else "image"

    def find_images(self, keys: Iterable[str]) -> list[str]:
        """The ``image_id`` of each key, given as an image id or a URI (paths as given).

        Raises
        ------
        UnknownImageError
            Naming the keys the dataset does not hold (a ``KeyError``).
        """
        keys = list(keys)
        wanted = set(keys) | {normalize_uri(key) for key in keys}
        found = (
            self.arrow_dataset("images")
            .to_table(
                columns=["image_id", "uri"],
                filter=pc.field("image_id").isin(wanted) | pc.field("uri").isin(wanted),
            )
            .to_pylist()
        )
        by_key = {row["image_id"]: row["image_id"] for row in found}
        by_key.update({row["uri"]: row["image_id"] for row in found})
        ids, missing = [], []
        for key in keys:
            image = by_key.get(key) or by_key.get(normalize_uri(key))
            (ids if image else missing).append(image or key)
        if missing:
            raise UnknownImageError(f"not in {self.path}: {', '.join(missing)}")
        return ids

    def listing(self, kind: str, limit: int = 0) -> list[dict]:
        """The images in URI order (the first ``limit``; 0: all): ``image_id``, ``uri``,
        ``status``, ``error`` and ``colors``, the palette of ``kind`` as
        ``(hex, (r, g, b), proportion)``, largest share first."""
        images = self.arrow_dataset("images").to_table(
            columns=["image_id", "uri", "status", "error"]
        )
        images = images.sort_by("uri")
        if limit:
            images = images.slice(0, limit)
        wanted = pc.field("image_id").isin(images.column("image_id"))
        colors = (
            self.arrow_dataset("palettes")
            .to_table(
                columns=["image_id", "rank", "hex", "r", "g", "b", "proportion"],
                filter=wanted & (pc.field("palette_kind") == kind),
            )
            .sort_by([("image_id", "ascending"), ("rank", "ascending")])
            .to_pylist()
        )
        by_image: dict[str, list] = {}
        for c in colors:
            by_image.setdefault(c["image_id"], []).append(
                (c["hex"], (c["r"], c["g"], c["b"]), c["proportion"])
            )
        return [{**row, "colors": by_image.get(row["image_id"], [])} for row in images.to_pylist()]

    def uris(self, image_ids: Iterable[str]) -> dict[str, str]:
        """``image_id -> uri`` for these images."""
        rows = self.arrow_dataset("images").to_table(
            columns=["image_id", "uri"], filter=pc.field("image_id").isin(list(image_ids))
        )
        return dict(zip(rows["image_id"].to_pylist(), rows["uri"].to_pylist(), strict=True))

    def stored_palettes(self, image_ids: Iterable[str], kind: str) -> list[StoredPalette]:
        """The :class:`StoredPalette` of each image (``ok`` images only), in the given order.

        Reads only the rows of these images from the ``images``, ``palettes`` and
        ``assignments`` tables.
        """
        image_ids = list(image_ids)
        ids = pa.array(image_ids, pa.string())
        of_kind = pc.field("image_id").isin(ids) & (pc.field("palette_kind") == kind)
        images = {
            row["image_id"]: row
            for row in self.arrow_dataset("images")
            .to_table(
                columns=["image_id", "uri", "width", "height"],
                filter=pc.field("image_id").isin(ids) & (pc.field("status") == "ok"),
            )
            .to_pylist()
        }
        colors = (
            self.arrow_dataset("palettes")
            .to_table(
                columns=["image_id", "rank", "r", "g", "b", "proportion", "corpus_index"],
                filter=of_kind,
            )
            .to_pandas()
            .sort_values(["image_id", "rank"])
        )
        colors_of = dict(tuple(colors.groupby("image_id")))
        labels_of = {
            row["image_id"]: row
            for row in self.arrow_dataset("assignments").to_table(filter=of_kind).to_pylist()
        }
        found = []
        for image_id in image_ids:
            if image_id not in images or image_id not in labels_of:
                continue
            rows, stored = colors_of[image_id], labels_of[image_id]
            labels = np.frombuffer(stored["labels"], dtype=np.uint8)
            if kind == "corpus":
                # Corpus labels name corpus colours: turn them into this image's ranks.
                rank_of = np.full(256, TRANSPARENT_LABEL, dtype=np.uint8)
                rank_of[rows["corpus_index"].to_numpy(dtype=np.int64)] = rows["rank"].to_numpy()
                labels = rank_of[labels]
            found.append(
                StoredPalette(
                    image_id=image_id,
                    uri=images[image_id]["uri"],
                    kind=kind,
                    colors=rows[["r", "g", "b"]].to_numpy(dtype=np.uint8),
                    proportions=rows["proportion"].to_numpy(dtype=np.float32),
                    labels=labels.reshape(stored["sample_height"], stored["sample_width"]),
                    width=images[image_id]["width"],
                    height=images[image_id]["height"],
                )
            )
        return found

    @property
    def job(self) -> dict:
        """The job record (``_job.json``): spec, versions, times and counts."""
        record = read_job_file(self.path, self.storage_options)
        if record is None:
            raise FileNotFoundError(f"{self.path} has no {JOB_FILE}: not a finished dataset")
        return record

    def __repr__(self) -> str:
        return f"PaletteDataset({self.path!r})"


def open_dataset(path: str, storage_options: Mapping | None = None) -> PaletteDataset:
    """Open the dataset a job wrote to ``path`` (local path or fsspec URL).

    ``storage_options`` are the fsspec options of a remote ``path``, as a job
    spec takes them (``{"anon": True}``, ``{"s3": {...}}``).
    """
    return PaletteDataset(path, storage_options)


def as_dataset(dataset, storage_options: Mapping | None = None) -> PaletteDataset:
    """``dataset`` itself if it is an opened :class:`PaletteDataset`, else the one at that path."""
    if isinstance(dataset, PaletteDataset):
        return dataset
    return PaletteDataset(dataset, storage_options)


def dataset_and_kind(
    dataset, kind: str | None, storage_options: Mapping | None = None
) -> tuple[PaletteDataset, str]:
    """The dataset (see :func:`as_dataset`) and the palette kind to read: ``kind``, or by
    default the dataset's own (:meth:`PaletteDataset.default_kind`)."""
    ds = as_dataset(dataset, storage_options)
    return ds, kind or ds.default_kind()
