"""The command line's shared options: flags made from the settings' defaults, the
dataset argument, colour swatches on a terminal."""

from __future__ import annotations

import sys

import click

from .options import COLOR_SPACES, ENGINES, MAX_K, PaletteOptions
from .spec import CORPUS_ASSIGN_SOURCES, MODES, JobSpec, parse_storage_options

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def kind_option(command):
    return click.option(
        "--kind",
        type=click.Choice(["image", "corpus"]),
        help="Each image's own palette, or the image over the corpus palette. "
        "[default: image, or corpus for a corpus-mode dataset]",
    )(command)


class PartitionSize(click.ParamType):
    """``auto`` or a number of images."""

    name = "auto|N"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "auto":
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is neither 'auto' nor a number of images", param, ctx)


def _parse_storage_options(ctx, param, pairs) -> dict | None:
    try:
        return parse_storage_options(pairs) or None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def storage_option(command):
    return click.option(
        "--storage-option",
        "storage_options",
        multiple=True,
        metavar="KEY=VALUE",
        callback=_parse_storage_options,
        help="fsspec option of remote inputs and outputs (s3://, gs://, ...); dotted keys "
        "nest (client_kwargs.endpoint_url=...), values are JSON or text; repeatable. "
        "Credentials are best left to the usual environment variables.",
    )(command)


def dataset_argument(command):
    """The DATASET argument (local folder or fsspec URL) and its --storage-option."""
    return click.argument("dataset")(storage_option(command))


def picture_size_option(command):
    return click.option(
        "--size",
        type=int,
        default=800,
        show_default=True,
        help="Longer side of the redrawn picture in pixels (0: the image's own size).",
    )(command)


# `show`'s and `run`'s flags that set the PaletteOptions field of their name.
CLUSTERING_FLAGS = (
    ("-k", int, f"Largest number of colours per image (1-{MAX_K})."),
    ("--color-space", click.Choice(COLOR_SPACES), "Space the pixels are clustered in."),
    (
        "--engine",
        click.Choice(ENGINES),
        "Clustering engine: histogram (fast weighted k-means on colour histograms), sklearn "
        "(k-means on the image's distinct colours) or dask-ml (the slow reference).",
    ),
    ("--random-state", int, "Seed; same seed, same palettes."),
    ("--max-pixels", int, "Resize each image to at most this many pixels."),
    ("--alpha-threshold", int, "Leave out pixels with alpha below this (0-255)."),
    (
        "--ignore-background",
        bool,
        "Leave out the background: the colour covering half the image's border or more, "
        "where it reaches the border (product shots, logos, scans).",
    ),
    (
        "--min-delta-e",
        float,
        "Merge an image's palette colours closer than this CIELAB distance (0: off); a "
        "palette may then have fewer than k colours.",
    ),
)


def _flags(declared, defaults):
    """Options setting the field named by each flag, their help showing its default
    (the attribute of that name of ``defaults``)."""

    def add(command):
        for flag, kind, text in reversed(declared):
            default = getattr(defaults, flag.lstrip("-").replace("-", "_"))
            if kind is bool:  # a switch, off unless given (a job spec may turn it on)
                command = click.option(flag, is_flag=True, default=None, help=text)(command)
                continue
            if default is not None:
                text += f" [default: {f'{default:g}' if isinstance(default, float) else default}]"
            command = click.option(flag, type=kind, help=text)(command)
        return command

    return add


clustering_options = _flags(CLUSTERING_FLAGS, PaletteOptions)


_EXISTING_FILE = click.Path(exists=True, dir_okay=False)
# `run`'s flags that set the JobSpec field of their name, with their help; the
# default the help shows is the JobSpec's. (The clustering flags are shared
# with `show`: see clustering_options.)
JOB_FLAGS = (
    ("--max-image-pixels", int, "Refuse images declaring more pixels, before decoding."),
    ("--max-file-bytes", int, "Refuse files larger than this, before reading."),
    (
        "--mode",
        click.Choice(MODES),
        "image: each image's own palette; corpus: one shared palette for all images, every "
        "image described over it; both.",
    ),
    ("--corpus-k", int, f"Colours of the corpus palette (1-{MAX_K})."),
    ("--sample-per-image", int, "Pixels each image contributes to the corpus fit."),
    (
        "--corpus-assign",
        click.Choice(CORPUS_ASSIGN_SOURCES),
        "Corpus assignment reads a cache of resized samples, or decodes images again.",
    ),
    (
        "--partition-size",
        PartitionSize(),
        "Images per Dask partition and per file of each table, or 'auto': up to 10,000, and "
        "at least two partitions per worker (a tar shard is one, whatever its size).",
    ),
    ("--wave-size", int, "Images submitted to the cluster at a time."),
    (
        "--stop-after-failures",
        int,
        "Stop when this many images have failed and none has succeeded (inputs unreachable "
        "as a whole); 0: never, an error row per input.",
    ),
    ("--workers", int, "Worker processes of the embedded cluster (default: one per core)."),
    (
        "--scheduler",
        str,
        "Submit to the Dask scheduler at this address (or set DASK_SCHEDULER_ADDRESS).",
    ),
    (
        "--scheduler-file",
        _EXISTING_FILE,
        "Submit to the Dask cluster described by this scheduler file.",
    ),
    ("--tls-ca-file", _EXISTING_FILE, "CA certificate (PEM) of a TLS-secured scheduler."),
    ("--tls-cert", _EXISTING_FILE, "Client certificate (PEM) for a TLS-secured scheduler."),
    ("--tls-key", _EXISTING_FILE, "Client private key (PEM) for a TLS-secured scheduler."),
    ("--read-concurrency", int, "Image reads in flight per task."),
    (
        "--read-per-host",
        int,
        "When a task reads from several hosts or buckets, at most this many of its reads to "
        "one of them.",
    ),
    ("--read-timeout", float, "Seconds one try of a read may take in all."),
    (
        "--read-retries",
        int,
        "Further tries after a passing read failure (time-out, lost connection, HTTP 408, 429 "
        "or 5xx).",
    ),
    (
        "--image-column",
        str,
        "Column of Parquet inputs holding the images (default: 'image', else the only binary "
        "or struct-with-bytes column).",
    ),
    ("--read-buffer-bytes", int, "Bytes of images read ahead of decoding, per task."),
)


def job_flags(command):
    command = storage_option(command)
    command = click.option(
        "--performance-report",
        is_flag=True,
        default=None,
        help="Write Dask's performance report to OUTPUT/performance_report.html.",
    )(command)
    command = click.option(
        "--progress/--no-progress", default=True, help="Show a progress bar. [default: on]"
    )(command)
    command = click.option(
        "--overwrite",
        is_flag=True,
        default=None,
        help="Replace an existing dataset, even one made with other options. Without it, an "
        "interrupted job resumes and a complete dataset grows by the new images.",
    )(command)
    return _flags(JOB_FLAGS, JobSpec)(command)


def swatch(rgb, width: int) -> str:
    """A block of colour on a terminal; nothing when the output is piped or redirected."""
    if not sys.stdout.isatty():
        return ""
    return click.style(" " * width, bg=tuple(int(c) for c in rgb)) + " "
