"""Job settings: one frozen dataclass, read from TOML, overridden by CLI flags.

A job spec is a flat TOML table whose keys are the fields of :class:`JobSpec`::

    input = ["data/samples"]
    output = "out/sample"
    k = 5
    color_space = "lab"

Relative paths are relative to the directory the job is started from.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import numbers
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import tomllib

from ._checks import check_int
from .errors import UsageError, UsageTypeError
from .options import MAX_K, PaletteOptions, ReadOptions

MODES = ("image", "corpus", "both")
CORPUS_ASSIGN_SOURCES = ("cache", "reread")
# The partition_size that sizes partitions for the job (see palette_dask.plan).
AUTO = "auto"


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
    ignore_background : bool
        Leave the image's background (the colour covering its border, where it
        reaches the border) out of clustering; see :func:`palette_dask.extract_palette`.
    min_delta_e : float
        Merge an image's own palette colours closer than this CIELAB ΔE (0: off).
    stop_after_failures : int
        Stop the job when this many images have failed and none has succeeded
        (inputs unreachable as a whole); 0: never, an error row per input.
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
    partition_size : int or "auto"
        Images per Dask partition; each partition is one task and writes one
        file per table. ``"auto"`` sizes them for the job (see
        :func:`palette_dask.plan.auto_partition_size`): up to 10,000 images,
        files readers like, but at least two partitions per worker when the
        input allows. A tar shard is a partition of its own, whatever its
        size, and a Parquet row group is never split between partitions.
    wave_size : int
        Images submitted to the cluster at a time; rounded up to a whole
        number of partitions, and at least two partitions per worker thread.
        Bounds client and scheduler memory.
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
    storage_options : dict
        Options of the fsspec file systems of remote inputs, manifests and the
        output (``s3://``, ``gs://``, ``http://`` …), as fsspec takes them:
        keys for every protocol, or a table per protocol name
        (``{"s3": {...}, "http": {...}}``) when several are used. Local
        paths ignore them. Credentials are better left to the usual
        environment variables; secrets given here are never written to
        ``_job.json``.
    read_concurrency : int
        Image reads in flight per task, overlapping network waits with decoding.
    read_per_host : int
        When a task's images come from several hosts (or buckets), at most this
        many of its reads go to one of them, so that a slow or rate-limiting
        host cannot take every slot. A task reading from one host uses them all.
    read_timeout : float
        Seconds one try of a read may take in all (connecting, waiting,
        receiving), not only between two packets.
    read_retries : int
        Further tries after a passing failure (time-out, lost connection,
        HTTP 408, 429 or 5xx), with jittered exponential backoff;
        ``Retry-After`` is honoured. Missing or forbidden files are not retried.
    read_buffer_bytes : int
        Bytes of images read ahead of decoding, per task: bounds the memory the
        concurrent reads hold (a worker of two threads holds two tasks' worth).
    image_column : str or None
        The column of Parquet inputs that holds images (binary, or a struct with
        binary ``bytes`` as Hugging Face datasets write it). By default a column
        named ``image``, else the only such column; a Parquet input without one
        is a manifest.
    """

    input: tuple[str, ...]
    output: str
    k: int = PaletteOptions.k
    color_space: str = PaletteOptions.color_space
    engine: str = PaletteOptions.engine
    random_state: int = PaletteOptions.random_state
    max_pixels: int = PaletteOptions.max_pixels
    alpha_threshold: int = PaletteOptions.alpha_threshold
    max_image_pixels: int = PaletteOptions.max_image_pixels
    max_file_bytes: int = PaletteOptions.max_file_bytes
    ignore_background: bool = PaletteOptions.ignore_background
    min_delta_e: float = PaletteOptions.min_delta_e
    stop_after_failures: int = 1000
    mode: str = "image"
    corpus_k: int = 16
    sample_per_image: int = 2_000
    corpus_fit_pixels: int = 2_000_000
    corpus_assign: str = "cache"
    partition_size: int | str = AUTO
    wave_size: int = 32_768
    workers: int | None = None
    scheduler: str | None = None
    scheduler_file: str | None = None
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    overwrite: bool = field(default=False, compare=False)
    performance_report: bool = field(default=False, compare=False)
    storage_options: dict = field(default_factory=dict)
    read_concurrency: int = ReadOptions.concurrency
    read_per_host: int = ReadOptions.per_host
    read_timeout: float = ReadOptions.timeout
    read_retries: int = ReadOptions.retries
    read_buffer_bytes: int = ReadOptions.buffer_bytes
    image_column: str | None = None

    def __post_init__(self):
        if isinstance(self.input, str):
            object.__setattr__(self, "input", (self.input,))
        else:
            object.__setattr__(self, "input", tuple(self.input))
        _check_spec(self)
        # A private copy: fsspec may change the nested tables it is given.
        object.__setattr__(self, "storage_options", copy.deepcopy(dict(self.storage_options)))

    @classmethod
    def from_toml(cls, path: str | os.PathLike, **overrides) -> JobSpec:
        """Read a spec from a TOML file; ``overrides`` that are not ``None`` replace its values."""
        with open(path, "rb") as f:
            try:
                values = tomllib.load(f)
            except tomllib.TOMLDecodeError as exc:
                raise UsageError(f"job spec {os.fspath(path)!r} is not valid TOML: {exc}") from None
        return cls.from_dict(values, source=os.fspath(path), **overrides)

    @classmethod
    def from_dict(cls, values: dict, *, source: str = "job spec", **overrides) -> JobSpec:
        """Build a spec from a mapping of field names, rejecting unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(
                f"unknown key(s) {', '.join(unknown)} in {source}; "
                f"known keys: {', '.join(sorted(known))}"
            )
        given = {k: v for k, v in overrides.items() if v is not None}
        merged = {**values, **given}
        if "storage_options" in values and "storage_options" in given:
            merged["storage_options"] = merge_options(
                values["storage_options"], given["storage_options"]
            )
        missing = [name for name in ("input", "output") if not merged.get(name)]
        if missing:
            raise UsageError(f"{source} needs {' and '.join(missing)}")
        return cls(**merged)

    def to_dict(self) -> dict:
        """The spec as plain values (for ``_job.json``), secrets in ``storage_options`` hidden."""
        values = dataclasses.asdict(self)
        values["input"] = list(self.input)
        values["storage_options"] = redact_secrets(self.storage_options)
        return values

    def replace(self, **changes) -> JobSpec:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def own_palettes(self) -> bool:
        """Whether the job writes each image's own palette (``image`` and ``both`` modes)."""
        return self.mode in ("image", "both")

    @property
    def fits_corpus(self) -> bool:
        """Whether the job fits the corpus palette (``corpus`` and ``both`` modes)."""
        return self.mode in ("corpus", "both")

    @property
    def caches_samples(self) -> bool:
        """Whether the first pass caches the samples for the corpus assignment."""
        return self.fits_corpus and self.corpus_assign == "cache"

    @property
    def palette_options(self) -> PaletteOptions:
        """The options that turn each image into a palette."""
        return PaletteOptions(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(PaletteOptions)}
        )

    @property
    def read_options(self) -> ReadOptions:
        """How each task reads its images' bytes."""
        return ReadOptions(
            concurrency=self.read_concurrency,
            per_host=self.read_per_host,
            timeout=float(self.read_timeout),
            retries=self.read_retries,
            buffer_bytes=self.read_buffer_bytes,
            max_file_bytes=self.max_file_bytes,
            storage_options=self.storage_options,
            image_column=self.image_column,
        )


# Storage option names whose values are credentials: shown as "***".
_SECRET_NAME = re.compile(
    r"secret|token|password|passwd|credential|signature|sas|(^|_)key$|private|auth",
    re.IGNORECASE,
)
REDACTED = "***"


def redact_secrets(options):
    """A copy of storage options with every credential's value replaced by ``"***"``.

    Examples
    --------
    >>> redact_secrets({"key": "AKIA…", "secret": "s", "client_kwargs": {"region_name": "eu"}})
    {'key': '***', 'secret': '***', 'client_kwargs': {'region_name': 'eu'}}
    """
    if isinstance(options, Mapping):
        return {
            name: REDACTED
            if _SECRET_NAME.search(str(name)) and not isinstance(value, Mapping)
            else redact_secrets(value)
            for name, value in options.items()
        }
    if isinstance(options, list):
        return [redact_secrets(value) for value in options]
    return options


def merge_options(base: Mapping, extra: Mapping) -> dict:
    """``base`` with ``extra`` laid over it, nested tables merged key by key.

    Examples
    --------
    >>> merge_options({"s3": {"anon": True, "x": 1}}, {"s3": {"anon": False}})
    {'s3': {'anon': False, 'x': 1}}
    """
    merged = copy.deepcopy(dict(base))
    for name, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(name), Mapping):
            merged[name] = merge_options(merged[name], value)
        else:
            merged[name] = copy.deepcopy(value)
    return merged


def parse_storage_options(pairs: Iterable[str]) -> dict:
    """Storage options from ``KEY=VALUE`` strings, as ``--storage-option`` gives them.

    Dots in ``KEY`` make nested tables; ``VALUE`` is read as JSON when it is
    valid JSON (``true``, ``3``, ``{"a": 1}``), else taken as a string.

    Examples
    --------
    >>> parse_storage_options(["anon=true", "client_kwargs.endpoint_url=http://127.0.0.1:9000"])
    {'anon': True, 'client_kwargs': {'endpoint_url': 'http://127.0.0.1:9000'}}
    """
    options: dict = {}
    for pair in pairs:
        name, equals, text = pair.partition("=")
        if not equals or not name or any(not part for part in name.split(".")):
            raise UsageError(f"a storage option must look like KEY=VALUE, got {pair!r}")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        *tables, last = name.split(".")
        for table in reversed(tables):
            value = {last: value}
            last = table
        options = merge_options(options, {last: value})
    return options


def _check_spec(spec: JobSpec) -> None:
    if not spec.input or not all(isinstance(i, str) and i for i in spec.input):
        raise UsageError(f"`input` must be one or more non-empty strings, got {spec.input!r}")
    if not isinstance(spec.output, str) or not spec.output:
        raise UsageError(f"`output` must be a non-empty path, got {spec.output!r}")
    _ = spec.palette_options  # building it validates the clustering options
    if spec.mode not in MODES:
        raise UsageError(f"`mode` must be one of {MODES}, got {spec.mode!r}")
    check_int("corpus_k", spec.corpus_k, 1, MAX_K)
    check_int("sample_per_image", spec.sample_per_image, 1)
    check_int("corpus_fit_pixels", spec.corpus_fit_pixels, spec.corpus_k)
    if spec.corpus_assign not in CORPUS_ASSIGN_SOURCES:
        raise UsageError(
            f"`corpus_assign` must be one of {CORPUS_ASSIGN_SOURCES}, got {spec.corpus_assign!r}"
        )
    if spec.partition_size != AUTO:
        if isinstance(spec.partition_size, str):
            raise UsageError(
                f"`partition_size` must be {AUTO!r} or a number of images, "
                f"got {spec.partition_size!r}"
            )
        check_int("partition_size", spec.partition_size, 1)
    check_int("wave_size", spec.wave_size, 1)
    check_int("stop_after_failures", spec.stop_after_failures, 0)
    if spec.workers is not None:
        check_int("workers", spec.workers, 1)
    tls = (spec.tls_ca_file, spec.tls_cert, spec.tls_key)
    if any(tls) and not all(tls):
        raise UsageError("TLS needs all of `tls_ca_file`, `tls_cert` and `tls_key`")
    if spec.scheduler and spec.scheduler_file:
        raise UsageError("give either `scheduler` or `scheduler_file`, not both")
    if not isinstance(spec.storage_options, Mapping) or not all(
        isinstance(name, str) for name in spec.storage_options
    ):
        raise UsageTypeError(
            f"`storage_options` must be a table of named options, got {spec.storage_options!r}"
        )
    check_int("read_concurrency", spec.read_concurrency, 1)
    check_int("read_per_host", spec.read_per_host, 1)
    check_int("read_retries", spec.read_retries, 0)
    check_int("read_buffer_bytes", spec.read_buffer_bytes, 1)
    timeout = spec.read_timeout
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise UsageTypeError(f"`read_timeout` must be a number of seconds, got {timeout!r}")
    if not timeout > 0:
        raise UsageError(f"`read_timeout` must be more than 0 seconds, got {timeout}")
