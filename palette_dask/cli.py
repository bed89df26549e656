"""The ``palette-dask`` command line."""

from __future__ import annotations

import json
import logging
import os
import sys

import click

from . import __version__
from .cluster import VersionMismatchError
from .color import COLOR_SPACES, hex_to_rgb
from .kmeans import ENGINES
from .reads import (
    DEFAULT_READ_BUFFER_BYTES,
    DEFAULT_READ_CONCURRENCY,
    DEFAULT_READ_PER_HOST,
    DEFAULT_READ_RETRIES,
    DEFAULT_READ_TIMEOUT,
)
from .spec import CORPUS_ASSIGN_SOURCES, MODES, parse_storage_options

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
# Errors a user can fix: shown as one clean line with exit status 1, no traceback.
USER_ERRORS = (
    ValueError,
    TypeError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    VersionMismatchError,
)


class _UserErrors(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_UserErrors, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="palette-dask")
def main():
    """Colour-palette datasets from image corpora, computed in parallel on Dask.

    \b
    Try it on the bundled sample photographs:
      palette-dask samples data/samples
      palette-dask run --input data/samples --output out/sample
      palette-dask palettes out/sample
    """


def _kind_option(command):
    return click.option(
        "--kind",
        type=click.Choice(["image", "corpus"]),
        help="Each image's own palette, or the image over the corpus palette. "
        "[default: image, or corpus for a corpus-mode dataset]",
    )(command)


class _PartitionSize(click.ParamType):
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


def _storage_option(command):
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


def _dataset_argument(command):
    """The DATASET argument (local folder or fsspec URL) and its --storage-option."""
    return click.argument("dataset")(_storage_option(command))


def _picture_size_option(command):
    return click.option(
        "--size",
        type=int,
        default=800,
        show_default=True,
        help="Longer side of the redrawn picture in pixels (0: the image's own size).",
    )(command)


def _clustering_options(command):
    options = [
        click.option(
            "-k", "k", type=int, help="Largest number of colours per image (1-254). [default: 5]"
        ),
        click.option(
            "--color-space",
            type=click.Choice(COLOR_SPACES),
            help="Space the pixels are clustered in. [default: rgb]",
        ),
        click.option(
            "--engine",
            type=click.Choice(ENGINES),
            help="Clustering engine: histogram (fast weighted k-means on colour histograms), "
            "sklearn (k-means on the image's distinct colours) or dask-ml (the slow "
            "reference). [default: histogram]",
        ),
        click.option(
            "--random-state", type=int, help="Seed; same seed, same palettes. [default: 0]"
        ),
        click.option(
            "--max-pixels",
            type=int,
            help="Resize each image to at most this many pixels. [default: 40000]",
        ),
        click.option(
            "--alpha-threshold",
            type=int,
            help="Leave out pixels with alpha below this (0-255). [default: 128]",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command(context_settings=CONTEXT)
@click.argument("spec", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-i",
    "--input",
    "inputs",
    multiple=True,
    help="File, folder, glob, fsspec URL or manifest (.txt/.csv/.parquet); repeatable.",
)
@click.option("-o", "--output", help="Dataset folder to write.")
@_clustering_options
@click.option(
    "--max-image-pixels",
    type=int,
    help="Refuse images declaring more pixels, before decoding. [default: 250000000]",
)
@click.option(
    "--max-file-bytes",
    type=int,
    help="Refuse files larger than this, before reading. [default: 268435456]",
)
@click.option(
    "--mode",
    type=click.Choice(MODES),
    help="image: each image's own palette; corpus: one shared palette for all images, "
    "every image described over it; both. [default: image]",
)
@click.option("--corpus-k", type=int, help="Colours of the corpus palette (1-254). [default: 16]")
@click.option(
    "--sample-per-image",
    type=int,
    help="Pixels each image contributes to the corpus fit. [default: 2000]",
)
@click.option(
    "--corpus-assign",
    type=click.Choice(CORPUS_ASSIGN_SOURCES),
    help="Corpus assignment reads a cache of resized samples, or decodes images again. "
    "[default: cache]",
)
@click.option(
    "--partition-size",
    type=_PartitionSize(),
    help="Images per Dask partition and per file of each table, or 'auto': up to 10,000, "
    "and at least two partitions per worker (a tar shard is one, whatever its size). "
    "[default: auto]",
)
@click.option(
    "--wave-size", type=int, help="Images submitted to the cluster at a time. [default: 32768]"
)
@click.option(
    "--workers", type=int, help="Worker processes of the embedded cluster. [default: one per core]"
)
@click.option(
    "--scheduler",
    help="Submit to the Dask scheduler at this address (or set DASK_SCHEDULER_ADDRESS).",
)
@click.option(
    "--scheduler-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Submit to the Dask cluster described by this scheduler file.",
)
@click.option(
    "--tls-ca-file",
    type=click.Path(exists=True, dir_okay=False),
    help="CA certificate (PEM) of a TLS-secured scheduler.",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False),
    help="Client certificate (PEM) for a TLS-secured scheduler.",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False),
    help="Client private key (PEM) for a TLS-secured scheduler.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    default=None,
    help="Replace an existing dataset, even one made with other options. Without it, an "
    "interrupted job resumes and a complete dataset grows by the new images.",
)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar. [default: on]")
@click.option(
    "--performance-report",
    is_flag=True,
    default=None,
    help="Write Dask's performance report to OUTPUT/performance_report.html.",
)
@_storage_option
@click.option(
    "--read-concurrency",
    type=int,
    help=f"Image reads in flight per task. [default: {DEFAULT_READ_CONCURRENCY}]",
)
@click.option(
    "--read-per-host",
    type=int,
    help="When a task reads from several hosts or buckets, at most this many of its reads "
    f"to one of them. [default: {DEFAULT_READ_PER_HOST}]",
)
@click.option(
    "--read-timeout",
    type=float,
    help=f"Seconds one try of a read may take in all. [default: {DEFAULT_READ_TIMEOUT:g}]",
)
@click.option(
    "--read-retries",
    type=int,
    help="Further tries after a passing read failure (time-out, lost connection, HTTP 408, 429 "
    f"or 5xx). [default: {DEFAULT_READ_RETRIES}]",
)
@click.option(
    "--image-column",
    help="Column of Parquet inputs holding the images (default: 'image', else the only binary "
    "or struct-with-bytes column).",
)
@click.option(
    "--read-buffer-bytes",
    type=int,
    help="Bytes of images read ahead of decoding, per task. "
    f"[default: {DEFAULT_READ_BUFFER_BYTES}]",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="What the job logs to standard error, stage by stage.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the resolved spec, the inputs and partitions, and the cluster; run nothing.",
)
def run(spec, inputs, output, progress, log_level, dry_run, **options):
    """Compute the palette of every image and write the dataset's tables.

    SPEC is an optional TOML job spec (see jobs/); flags override its values.
    Without a scheduler, the job starts an embedded Dask cluster on this machine.

    \b
    Example:
      palette-dask run jobs/sample.toml
      palette-dask run -i data/samples -o out/lab -k 8 --color-space lab --workers 2
      palette-dask run -i data/samples -o out/corpus --mode both --corpus-k 12
      palette-dask run -i s3://bucket/images/ -o s3://bucket/palettes/ \\
        --storage-option client_kwargs.region_name=eu-west-1
    """
    from .pipeline import run_job
    from .sources import describe_skipped
    from .spec import JobSpec

    _log_to_stderr(log_level)
    overrides = {"input": inputs or None, "output": output, **options}
    job = (
        JobSpec.from_toml(spec, **overrides)
        if spec
        else JobSpec.from_dict({}, source="the command line", **overrides)
    )
    if dry_run:
        _dry_run(job)
        return
    report = run_job(job, progress=progress)
    if report.resumed:
        click.echo(
            f"resumed an interrupted job: skipped {report.skipped_partitions} partitions "
            "already written"
        )
    if report.skipped_images:
        click.echo(f"skipped {report.skipped_images} images already in the dataset")
    if report.duplicates:
        click.echo(f"ignored {report.duplicates} duplicate inputs")
    if report.not_images:
        click.echo(describe_skipped(report.not_images))
    click.echo(
        f"{report.images} images ({report.ok} ok, {report.errors} failed) "
        f"in {report.elapsed_s:.1f} s -> {report.output}"
    )


@main.command(context_settings=CONTEXT)
@click.argument("image")
@_clustering_options
@click.option("--json", "as_json", is_flag=True, help="Print the palette as JSON.")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Also write IMAGE.swatches.png and IMAGE.redrawn.png into this folder.",
)
@_picture_size_option
def show(image, as_json, out, size, **options):
    """Print the palette of one IMAGE (path or URL), without Dask.

    With --out, also draw it: IMAGE.swatches.png, one block per colour as wide
    as its share, labelled with its hex code; IMAGE.redrawn.png, every pixel in
    its palette colour, at the image's aspect ratio.

    \b
    Example:
      palette-dask show data/samples/coffee.jpg -k 5
      palette-dask show data/samples/coffee.jpg --out pictures
    """
    from .palette import extract_palette

    palette = extract_palette(image, **{k: v for k, v in options.items() if v is not None})
    if out:
        sample = palette.sample
        for path in _write_pictures(
            out,
            os.path.basename(image.rstrip("/")),
            (palette.colors, palette.proportions, palette.labels),
            (sample.width, sample.height),
            size,
        ):
            click.echo(f"wrote {path}", err=True)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "image": image,
                    "colors": [
                        {
                            "hex": h,
                            "rgb": rgb,
                            "proportion": round(float(p), 6),
                            "pixel_count": int(n),
                        }
                        for h, rgb, p, n in zip(
                            palette.hex,
                            palette.colors.tolist(),
                            palette.proportions,
                            palette.counts,
                            strict=True,
                        )
                    ],
                    "mse_rgb": palette.mse_rgb,
                    "icc_profile": palette.sample.icc_profile,
                    "warning": palette.sample.warning,
                },
                indent=2,
            )
        )
        return
    click.echo(f"{image}: {len(palette.colors)} colours, mse_rgb {palette.mse_rgb:.1f}")
    if palette.sample.icc_profile:
        click.echo(f"  colours converted to sRGB from {palette.sample.icc_profile}")
    if palette.sample.warning:
        click.echo(f"warning: {palette.sample.warning}", err=True)
    for hex_code, rgb, share in zip(
        palette.hex, palette.colors.tolist(), palette.proportions, strict=True
    ):
        click.echo(f"  {_swatch(rgb, 6)}{hex_code}  {share:6.1%}")


@main.command(context_settings=CONTEXT)
@_dataset_argument
@click.option("--limit", type=int, default=50, show_default=True, help="Images to list (0: all).")
@_kind_option
def palettes(dataset, storage_options, limit, kind):
    """List the palettes of a finished DATASET, one image per line.

    \b
    Example:
      palette-dask palettes out/sample --limit 10
      palette-dask palettes out/corpus --kind corpus
    """
    import pyarrow.compute as pc

    from .dataset import open_dataset

    ds = open_dataset(dataset, storage_options)
    kind = kind or ("corpus" if ds.job["spec"].get("mode") == "corpus" else "image")
    images = ds.arrow_dataset("images").to_table(columns=["image_id", "uri", "status", "error"])
    images = images.sort_by("uri")
    if limit:
        images = images.slice(0, limit)
    wanted = images.column("image_id")
    colors = (
        ds.arrow_dataset("palettes")
        .to_table(filter=pc.field("image_id").isin(wanted) & (pc.field("palette_kind") == kind))
        .sort_by([("image_id", "ascending"), ("rank", "ascending")])
        .to_pandas()
    )
    by_image = dict(tuple(colors.groupby("image_id")))
    names = [os.path.basename(uri) for uri in images.column("uri").to_pylist()]
    width = max(map(len, names), default=0)
    for name, row in zip(names, images.to_pylist(), strict=True):
        if row["status"] != "ok":
            click.echo(f"{name:<{width}}  error: {row['error']}")
            continue
        swatches = "  ".join(
            f"{_swatch((r.r, r.g, r.b), 2)}{r.hex} {r.proportion:5.1%}"
            for r in by_image[row["image_id"]].itertuples()
        )
        click.echo(f"{name:<{width}}  {swatches}")


@main.command(context_settings=CONTEXT)
@_dataset_argument
@click.option(
    "--image",
    "keys",
    multiple=True,
    required=True,
    help="Image to draw, by image_id or URI (repeat for more).",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write to.")
@_kind_option
@_picture_size_option
def render(dataset, storage_options, keys, out, kind, size):
    """Draw the palettes of images of a finished DATASET, from its tables alone.

    Writes NAME.swatches.png and NAME.redrawn.png per image, as `show --out`
    does, from the palettes and assignments tables: no image is decoded again.

    \b
    Example:
      palette-dask render out/sample --image data/samples/coffee.jpg --out pictures
    """
    from .dataset import open_dataset

    ds = open_dataset(dataset, storage_options)
    kind = kind or ds.default_kind()
    try:
        ids = ds.find_images(keys)
    except KeyError as exc:
        raise click.ClickException(exc.args[0]) from None
    stored = ds.stored_palettes(ids, kind)
    drawn = {palette.image_id for palette in stored}
    for image_id, key in zip(ids, keys, strict=True):
        if image_id not in drawn:
            click.echo(f"{key}: no {kind} palette (the image failed, or no such pass)", err=True)
    names = [os.path.basename(palette.uri.rstrip("/")) for palette in stored]
    for palette, name in zip(stored, names, strict=True):
        if names.count(name) > 1:  # same file name in two folders
            name = f"{name}.{palette.image_id[:8]}"
        for path in _write_pictures(
            out,
            name,
            (palette.colors, palette.proportions, palette.labels),
            (palette.width, palette.height),
            size,
        ):
            click.echo(f"wrote {path}", err=True)
    if len(stored) < len(ids):
        raise click.exceptions.Exit(1)


@main.command(context_settings=CONTEXT)
@_dataset_argument
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="HTML file to write.")
@click.option(
    "--limit",
    type=int,
    default=200,
    show_default=True,
    help="Images in the gallery, best represented first (0: all).",
)
@_kind_option
def report(dataset, storage_options, out, limit, kind):
    """Write a self-contained HTML report of a finished DATASET.

    One file, no network: a summary of the job, the corpus palette if any, a
    gallery of images redrawn with their palettes and their swatches (best
    represented first, with a filter by colour), and the failed images with
    their errors.

    \b
    Example:
      palette-dask report out/sample --out report.html
    """
    from .report import report_html
    from .storage import write_atomic

    page = report_html(dataset, limit=limit, kind=kind, storage_options=storage_options)
    write_atomic(os.path.abspath(out), page.encode("utf-8"))
    click.echo(f"wrote {out} ({len(page) / 1024:,.0f} KiB)")


@main.command(context_settings=CONTEXT)
@_dataset_argument
@click.option("--color", "colors", multiple=True, help="Query colour as a hex code (repeatable).")
@click.option(
    "--weight",
    "weights",
    multiple=True,
    type=float,
    help="How much of the image each --color should cover, in the same order (relative).",
)
@click.option("--like", help="Rank images by how close their palettes are to this image's.")
@click.option("--top", type=int, default=20, show_default=True, help="Results to show.")
@click.option(
    "--radius",
    type=float,
    default=25.0,
    show_default=True,
    help="CIELAB distance at which a palette colour stops counting for a query colour.",
)
@_kind_option
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON lines.")
def search(dataset, storage_options, colors, weights, like, top, radius, kind, as_json):
    """Find images of a finished DATASET by colour, or by likeness to one image.

    A palette colour counts for a query colour when it is within --radius in
    CIELAB, with credit falling off with distance; images holding more of the
    query colours come first, then those covering them best. --like ranks by
    the Earth Mover's distance between palettes. `palette-dask index` makes
    searches over large datasets faster.

    \b
    Example:
      palette-dask search out/sample --color "#1565a1"
      palette-dask search s3://bucket/palettes --color "#1565a1"
      palette-dask search out/sample --color "#1565a1" --color "#df8c18" --weight 60 --weight 40
      palette-dask search out/sample --like data/samples/coffee.jpg --top 5
    """
    from .search import search as run_search

    try:
        found = run_search(
            dataset,
            colors=list(colors) or None,
            weights=list(weights) or None,
            like=like,
            top=top,
            kind=kind,
            radius=radius,
            storage_options=storage_options,
        )
    except KeyError as exc:
        raise click.ClickException(exc.args[0]) from None
    if as_json:
        for row in found.to_dict(orient="records"):
            click.echo(json.dumps(row))
        return
    width = max((len(os.path.basename(u)) for u in found["uri"]), default=0)
    for row in found.itertuples():
        swatches = " ".join(f"{_swatch(hex_to_rgb(code), 2)}{code}" for code in row.colors)
        click.echo(f"{row.score:8.4f}  {os.path.basename(row.uri):<{width}}  {swatches}")


@main.command(context_settings=CONTEXT)
@_dataset_argument
@_kind_option
def index(dataset, storage_options, kind):
    """Build the search index of a finished DATASET (OUT/_index), used by `search`.

    Every image's palette as fixed-length arrays of CIELAB colours and shares
    in 16-bit floats. Growing the dataset makes it stale: `search` then reads
    the tables until the index is built again.

    \b
    Example:
      palette-dask index out/sample
      palette-dask index s3://bucket/palettes
    """
    from .search import build_index

    folder = build_index(dataset, kind, storage_options=storage_options)
    click.echo(f"wrote {folder}")


@main.command(context_settings=CONTEXT)
@_dataset_argument
@click.option(
    "--target-images",
    type=click.IntRange(min=2),
    default=10_000,
    show_default=True,
    help="Images a compacted file holds at least.",
)
def compact(dataset, storage_options, target_images):
    """Rewrite a DATASET's small files into large ones (OUT/TABLE/part-…-….parquet).

    Runs of consecutive files of fewer than --target-images images (and under
    64 MB in every table) become one file per table, the same rows in the same
    order. Readers through palette-dask never see a row twice or miss one
    while it runs; a glob reader (DuckDB, Spark) sees the rows of the run in
    progress twice until its old files are removed. A stopped compaction is
    finished by running it again. The dataset stays resumable and growable.

    \b
    Example:
      palette-dask compact out/sample
      palette-dask compact s3://bucket/palettes --target-images 50000
    """
    from .compact import compact as compact_dataset

    done = compact_dataset(dataset, target_images=target_images, storage_options=storage_options)
    finished = "finished the stopped compaction, then " if done.resumed else ""
    click.echo(
        f"{finished}compacted {done.replaced:,} files into {done.written:,} "
        f"({done.runs:,} runs of partitions)"
    )


@main.command(context_settings=CONTEXT)
@_dataset_argument
@click.option(
    "--colors",
    "n_colors",
    type=int,
    default=10,
    show_default=True,
    help="Dominant colours to list.",
)
@_kind_option
@click.option("--plots", type=click.Path(file_okay=False), help="Also write PNG charts here.")
def stats(dataset, storage_options, n_colors, kind, plots):
    """Colour across a finished DATASET: counts, dominant colours, distributions.

    Every image weighs the same. Dominant colours merge the images' palette
    colours within 10 CIELAB units of a heavier one, and are named by that
    heaviest (real) palette colour; lightness, chroma and hue are CIELAB.

    \b
    Example:
      palette-dask stats out/sample --plots charts
    """
    from .render import png_bytes
    from .stats import bar_chart, chart_colors, collection_stats
    from .storage import write_atomic

    found = collection_stats(dataset, kind=kind, n_colors=n_colors, storage_options=storage_options)
    click.echo(f"images: {found.images:,} ({found.ok:,} ok, {found.failed:,} failed)")
    for error, count in found.errors.items():
        click.echo(f"  {count:6,}  {error}")
    click.echo("dominant colours (share of the collection, images holding it):")
    for row in found.dominant.itertuples():
        click.echo(
            f"  {_swatch(hex_to_rgb(row.hex), 2)}{row.hex}  {row.share:6.1%}  {row.images:,}"
        )
    series = {"lightness": found.lightness, "chroma": found.chroma, "hue": found.hue}
    for name, values in series.items():
        click.echo(f"{name}: " + "  ".join(f"{b} {v:.0%}" for b, v in values.items()))
    if plots:
        colors = chart_colors(found)
        dominant = found.dominant.set_index("hex")["share"]
        charts = {"dominant": dominant, **series}
        for name, values in charts.items():
            path = os.path.join(os.path.abspath(plots), f"{name}.png")
            write_atomic(path, png_bytes(bar_chart(values, colors[name], name)))
            click.echo(f"wrote {path}", err=True)


def _write_pictures(folder, name, palette, image_size, longest) -> list[str]:
    """Write NAME.swatches.png and NAME.redrawn.png; ``palette`` is (colors, shares, labels)."""
    from .render import display_size, png_bytes, redraw, swatches
    from .storage import write_atomic

    colors, proportions, labels = palette
    size = display_size(*image_size, longest) if longest else (image_size)
    pictures = {
        "swatches": swatches(colors, proportions),
        "redrawn": redraw(labels, colors, size=size),
    }
    paths = []
    for suffix, pixels in pictures.items():
        path = os.path.join(os.path.abspath(folder), f"{name}.{suffix}.png")
        write_atomic(path, png_bytes(pixels))
        paths.append(path)
    return paths


def _swatch(rgb, width: int) -> str:
    """A block of colour on a terminal; nothing when the output is piped or redirected."""
    if not sys.stdout.isatty():
        return ""
    return click.style(" " * width, bg=tuple(int(c) for c in rgb)) + " "


@main.command(context_settings=CONTEXT)
@click.argument("folder", type=click.Path(file_okay=False))
def samples(folder):
    """Write the sample colour photographs that ship with scikit-image into FOLDER.

    \b
    Example:
      palette-dask samples data/samples
    """
    from .samples import export_samples

    paths = export_samples(folder)
    click.echo(f"{len(paths)} sample images in {folder}")


def _dry_run(job) -> None:
    """Print what a job would do: its spec, its inputs and partitions, its cluster."""
    from .cluster import default_workers, describe_cluster, scheduler_address, threads_per_worker
    from .plan import InputPlan
    from .sources import check_inputs, describe_skipped
    from .state import DatasetState
    from .tasks import is_shard_partition

    check_inputs(job.input, job.storage_options)
    # The embedded cluster's size; a running cluster's is known once the job connects.
    external = scheduler_address(job) or job.scheduler_file
    workers = 1 if external else job.workers or default_workers()
    plan = InputPlan(
        job, DatasetState(), workers=workers, threads=workers * threads_per_worker(job)
    )
    partitions = shards = distinct = 0
    for _, items in plan.partitions():
        partitions += 1
        if is_shard_partition(items):
            shards += 1
        else:
            distinct += len(items)
    click.echo(json.dumps(job.to_dict(), indent=2))
    click.echo(f"inputs: {distinct + plan.duplicates:,} listed, {distinct:,} distinct")
    if shards:
        click.echo(f"tar shards: {shards:,}, a partition each (their images are counted as read)")
    if plan.not_images:
        click.echo(describe_skipped(plan.not_images))
    sized = plan.partitioning
    for_workers = f", sized for {workers} worker(s)" if job.partition_size == "auto" else ""
    click.echo(
        f"partitions: {partitions:,} of up to {sized.size:,} images{for_workers} "
        f"(tar shards whole, Parquet row groups unsplit), "
        f"in waves of {sized.per_wave:,} partitions"
    )
    click.echo(f"cluster: {describe_cluster(job)}")
    click.echo("dry run: nothing was computed or written")


def _log_to_stderr(level: str = "info") -> None:
    logging.getLogger("palette_dask").setLevel(level.upper())
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.WARNING,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        for noisy in ("distributed", "bokeh", "tornado", "dask_ml"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


if __name__ == "__main__":
    main()
