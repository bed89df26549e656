"""Job settings: one frozen dataclass, read from TOML, overridden by CLI flags.

A job spec is a flat TOML table whose keys are the fields of :class:`JobSpec`::

    input = ["data/samples"]
    output = "out/sample"
    k = 5
    color_space = "lab"

Relative paths are relative to the directory the job is started from.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import tomllib

from ._checks import check_int
from .palette import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_IMAGE_PIXELS, MAX_K, PaletteOptions

MODES = ("image", "corpus", "both")
CORPUS_ASSIGN_SOURCES = ("cache", "reread")


@dataclass(frozen=True)
class JobSpec:
    """Everything a palette job needs to know.

    Parameters
    ----------
    input : tuple of str
        Files, folders, globs, fsspec URLs or manifests (see :mod:`palette_dask.sources`).
    output : str
        Dataset folder (local path or fsspec URL).
    k : int
        Largest number of colours per image, 1–254.
    color_space : {"rgb", "lab", "oklab"}
    engine : {"histogram", "sklearn", "dask-ml"}
    random_state : int
    max_pixels : int
        Pixel budget of each image's sample (200×200 by default).
    alpha_threshold : int
        Pixels with alpha below this are left out of clustering.
    max_image_pixels : int
        Images declaring more pixels are refused before decoding.
    max_file_bytes : int
        Files larger than this are refused before reading.
    mode : {"image", "corpus", "both"}
        ``image``: each image's own palette. ``corpus``: one palette shared by
        the whole corpus (fitted with dask-ml), every image described over it.
        ``both``: the two in one pass over the images.
    corpus_k : int
        Colours of the corpus palette, 1–254.
    sample_per_image : int
        Opaque pixels each image contributes to the corpus fit (at most).
    corpus_fit_pixels : int
        Cap on the pixels the corpus palette is fitted on; beyond it a uniform,
        seeded bottom-k sample of the contributed pixels is kept.
    corpus_assign : {"cache", "reread"}
        Where the corpus assignment pass gets each image's sample: a Parquet
        cache written by the first pass under ``OUTPUT/_cache`` (faster; deleted
        at the end), or decoding the image again (no extra disk).
    partition_size : int
        Images per Dask partition; each partition writes one file per table.
    wave_size : int
        Images submitted to the cluster at a time; rounded up to a whole
        number of partitions. Bounds client and scheduler memory.
    workers : int or None
        Worker processes of the embedded cluster (default: one per core).
    scheduler : str or None
        Address of a running Dask scheduler to submit to.
    scheduler_file : str or None
        Scheduler file of a running Dask cluster.
    tls_ca_file, tls_cert, tls_key : str or None
        Certificate authority, client certificate and key (PEM files) for a
        scheduler that requires TLS (``tls://`` addresses). Without them, the
        ``distributed.comm.tls`` Dask settings apply.
    overwrite : bool
        Replace an existing dataset at ``output``, even one made with other
        options. Without it, a job resumes an interrupted dataset or adds the
        new images to a complete one.
    performance_report : bool
        Write Dask's performance report of the job to
        ``OUTPUT/performance_report.html``.
    """

    input: tuple[str, ...]
    output: str
    k: int = 5
    color_space: str = "rgb"
    engine: str = "histogram"
    random_state: int = 0
    max_pixels: int = 40_000
    alpha_threshold: int = 128
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    mode: str = "image"
    corpus_k: int = 16
    sample_per_image: int = 2_000
    corpus_fit_pixels: int = 2_000_000
    corpus_assign: str = "cache"
    partition_size: int = 128
    wave_size: int = 32_768
    workers: int | None = None
    scheduler: str | None = None
    scheduler_file: str | None = None
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    overwrite: bool = field(default=False, compare=False)
    performance_report: bool = field(default=False, compare=False)

    def __post_init__(self):
        if isinstance(self.input, str):
            object.__setattr__(self, "input", (self.input,))
        else:
            object.__setattr__(self, "input", tuple(self.input))
        _check_spec(self)

    @classmethod
    def from_toml(cls, path: str | os.PathLike, **overrides) -> JobSpec:
        """Read a spec from a TOML file; ``overrides`` that are not ``None`` replace its values."""
        with open(path, "rb") as f:
            try:
                values = tomllib.load(f)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"job spec {os.fspath(path)!r} is not valid TOML: {exc}") from None
        return cls.from_dict(values, source=os.fspath(path), **overrides)

    @classmethod
    def from_dict(cls, values: dict, *, source: str = "job spec", **overrides) -> JobSpec:
        """Build a spec from a mapping of field names, rejecting unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown key(s) {', '.join(unknown)} in {source}; "
                f"known keys: {', '.join(sorted(known))}"
            )
        merged = {**values, **{k: v for k, v in overrides.items() if v is not None}}
        missing = [name for name in ("input", "output") if not merged.get(name)]
        if missing:
            raise ValueError(f"{source} needs {' and '.join(missing)}")
        return cls(**merged)

    def to_dict(self) -> dict:
        """The spec as plain values (for ``_job.json``)."""
        values = dataclasses.asdict(self)
        values["input"] = list(self.input)
        return values

    def replace(self, **changes) -> JobSpec:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def palette_options(self) -> PaletteOptions:
        """The options that turn each image into a palette."""
        return PaletteOptions(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(PaletteOptions)}
        )

    @property
    def partitions_per_wave(self) -> int:
        return -(-self.wave_size // self.partition_size)


def _check_spec(spec: JobSpec) -> None:
    if not spec.input or not all(isinstance(i, str) and i for i in spec.input):
        raise ValueError(f"`input` must be one or more non-empty strings, got {spec.input!r}")
    if not isinstance(spec.output, str) or not spec.output:
        raise ValueError(f"`output` must be a non-empty path, got {spec.output!r}")
    _ = spec.palette_options  # building it validates the clustering options
    if spec.mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, got {spec.mode!r}")
    check_int("corpus_k", spec.corpus_k, 1, MAX_K)
    check_int("sample_per_image", spec.sample_per_image, 1)
    check_int("corpus_fit_pixels", spec.corpus_fit_pixels, spec.corpus_k)
    if spec.corpus_assign not in CORPUS_ASSIGN_SOURCES:
        raise ValueError(
            f"`corpus_assign` must be one of {CORPUS_ASSIGN_SOURCES}, got {spec.corpus_assign!r}"
        )
    check_int("partition_size", spec.partition_size, 1)
    check_int("wave_size", spec.wave_size, 1)
    if spec.workers is not None:
        check_int("workers", spec.workers, 1)
    tls = (spec.tls_ca_file, spec.tls_cert, spec.tls_key)
    if any(tls) and not all(tls):
        raise ValueError("TLS needs all of `tls_ca_file`, `tls_cert` and `tls_key`")
    if spec.scheduler and spec.scheduler_file:
        raise ValueError("give either `scheduler` or `scheduler_file`, not both")
