"""The ``palette-dask`` command line."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys

import click

from . import __version__
from .cli_dataset import COMMANDS as DATASET_COMMANDS
from .cli_options import (
    CONTEXT,
    clustering_options,
    dataset_argument,
    job_flags,
    picture_size_option,
    swatch,
)
from .errors import JobStopped, PaletteDaskError

# Errors a user can fix: shown as one clean line with exit status 1, no traceback.
# Anything else is a defect of palette-dask, and shows its traceback.
USER_ERRORS = (
    PaletteDaskError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)
# `run`'s exit status when the job completed but some images met an internal error,
# and when it was interrupted.
INTERNAL_ERRORS_EXIT = 3
INTERRUPTED_EXIT = 130


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


@main.command(context_settings=CONTEXT)
@click.argument("arguments", nargs=-1, metavar="[SPEC] [INPUT]...")
@click.option(
    "-i",
    "--input",
    "inputs",
    multiple=True,
    help="File, folder, glob, fsspec URL or manifest (.txt/.csv/.parquet); repeatable.",
)
@click.option("-o", "--output", help="Dataset folder to write.")
@clustering_options
@job_flags
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
def run(arguments, inputs, output, progress, log_level, dry_run, **options):
    """Compute the palette of every image and write the dataset's tables.

    SPEC is an optional TOML job spec (see jobs/); flags override its values.
    INPUTs are inputs as -i takes them, so that a glob the shell expands
    (photos/*.jpg) names every file; with inputs given, the spec's are not used.
    Without a scheduler, the job starts an embedded Dask cluster on this machine.

    Exit status: 0 when the job completed (bad images are rows with an error),
    1 when it stopped early (the message says why, what was kept and what to
    do; running the same command again resumes), 2 on wrong usage, 3 when it
    completed but some images met an internal error of palette-dask, 130 when
    interrupted (Ctrl-C; a second Ctrl-C exits at once).

    \b
    Example:
      palette-dask run jobs/sample.toml
      palette-dask run data/samples/*.jpg -o out/photos
      palette-dask run -i data/samples -o out/lab -k 8 --color-space lab --workers 2
      palette-dask run -i data/samples -o out/corpus --mode both --corpus-k 12
      palette-dask run -i s3://bucket/images/ -o s3://bucket/palettes/ \\
        --storage-option client_kwargs.region_name=eu-west-1
    """
    from .pipeline import run_job
    from .sources import describe_skipped
    from .spec import JobSpec

    _log_to_stderr(log_level)
    spec, positional = _spec_and_inputs(arguments)
    inputs = (*inputs, *positional)
    overrides = {"input": inputs or None, "output": output, **options}
    job = (
        JobSpec.from_toml(spec, **overrides)
        if spec
        else JobSpec.from_dict({}, source="the command line", **overrides)
    )
    if dry_run:
        from .pipeline import dry_run as describe

        click.echo(describe(job))
        return
    signal.signal(signal.SIGINT, _interrupted)
    try:
        report = run_job(job, progress=progress)
    except JobStopped as stopped:
        click.echo(f"error: {stopped}", err=True)
        raise SystemExit(stopped.exit_code) from None
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
    click.echo(str(report))
    if report.internal_errors:
        click.echo(
            f"error: {report.internal_errors} of the failures are internal errors of palette-dask, "
            "not bad images (their error starts with 'internal error:'; the workers logged "
            "the tracebacks); please report them",
            err=True,
        )
        raise SystemExit(INTERNAL_ERRORS_EXIT)


def _interrupted(signum, frame):
    """The first Ctrl-C stops the job (it says what it kept); a second one exits at once."""
    signal.signal(signal.SIGINT, lambda *_: os._exit(INTERRUPTED_EXIT))
    raise KeyboardInterrupt


def _spec_and_inputs(arguments: tuple[str, ...]) -> tuple[str | None, list[str]]:
    """The job spec (the one ``.toml`` among the arguments) and the inputs."""
    specs = [a for a in arguments if a.lower().endswith(".toml")]
    if len(specs) > 1:
        raise click.UsageError(f"one job spec at most, got {len(specs)}: {', '.join(specs)}")
    spec = click.Path(exists=True, dir_okay=False).convert(specs[0], None, None) if specs else None
    return spec, [a for a in arguments if a not in specs]


@main.command(context_settings=CONTEXT)
@click.argument("image")
@clustering_options
@click.option("--json", "as_json", is_flag=True, help="Print the palette as JSON.")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Also write IMAGE.swatches.png and IMAGE.redrawn.png into this folder.",
)
@picture_size_option
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
    from .render import write_pictures

    palette = extract_palette(image, **{k: v for k, v in options.items() if v is not None})
    if out:
        sample = palette.sample
        for path in write_pictures(
            out,
            os.path.basename(image.rstrip("/")),
            (palette.colors, palette.proportions, palette.labels),
            (sample.width, sample.height),
            size,
        ):
            click.echo(f"wrote {path}", err=True)
    if as_json:
        click.echo(json.dumps({"image": image, **palette.to_dict()}, indent=2))
        return
    click.echo(f"{image}: {len(palette.colors)} colours, mse_rgb {palette.mse_rgb:.1f}")
    if palette.sample.icc_profile:
        click.echo(f"  colours converted to sRGB from {palette.sample.icc_profile}")
    if palette.background:
        click.echo(f"  background {palette.background} left out")
    if palette.sample.warning:
        click.echo(f"warning: {palette.sample.warning}", err=True)
    for color in palette.to_dict()["colors"]:
        name = f"{color['name']} ({color['family']})"
        click.echo(f"  {swatch(color['rgb'], 6)}{color['hex']}  {color['proportion']:6.1%}  {name}")


@main.command(context_settings=CONTEXT)
@dataset_argument
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


def _log_to_stderr(level: str = "info") -> None:
    logging.getLogger("palette_dask").setLevel(level.upper())
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.WARNING,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        for noisy in ("bokeh", "tornado", "dask_ml"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    # Dask's own logs of a stopping job (a lost scheduler, a failed task) are tracebacks:
    # the job's message says what happened, and --log-level debug shows them.
    quiet = logging.WARNING if level.lower() == "debug" else logging.CRITICAL
    for name in ["distributed", *logging.root.manager.loggerDict]:
        if name.split(".")[0] == "distributed":  # Dask's settings give some their own level
            logging.getLogger(name).setLevel(quiet)


for _command in DATASET_COMMANDS:
    main.add_command(_command)

if __name__ == "__main__":
    main()
