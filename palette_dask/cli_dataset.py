"""The commands that read a finished dataset: palettes, render, report, search, index, stats,
serve.

Each parses its arguments, calls one function of the read side and prints.
"""

from __future__ import annotations

import json
import os

import click

from .cli_options import CONTEXT, dataset_argument, kind_option, picture_size_option, swatch
from .color import hex_to_rgb
from .options import SHARD_IMAGES


@click.command(context_settings=CONTEXT)
@dataset_argument
@click.option("--limit", type=int, default=50, show_default=True, help="Images to list (0: all).")
@kind_option
def palettes(dataset, storage_options, limit, kind):
    """List the palettes of a finished DATASET, one image per line.

    \b
    Example:
      palette-dask palettes out/sample --limit 10
      palette-dask palettes out/corpus --kind corpus
    """
    from .dataset import dataset_and_kind

    ds, kind = dataset_and_kind(dataset, kind, storage_options)
    rows = ds.listing(kind, limit)
    names = [os.path.basename(row["uri"]) for row in rows]
    width = max(map(len, names), default=0)
    for name, row in zip(names, rows, strict=True):
        if row["status"] != "ok":
            click.echo(f"{name:<{width}}  error: {row['error']}")
            continue
        swatches = "  ".join(
            f"{swatch(rgb, 2)}{code} {share:5.1%}" for code, rgb, share in row["colors"]
        )
        click.echo(f"{name:<{width}}  {swatches}")


@click.command(context_settings=CONTEXT)
@dataset_argument
@click.option(
    "--image",
    "keys",
    multiple=True,
    required=True,
    help="Image to draw, by image_id or URI (repeat for more).",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write to.")
@kind_option
@picture_size_option
def render(dataset, storage_options, keys, out, kind, size):
    """Draw the palettes of images of a finished DATASET, from its tables alone.

    Writes NAME.swatches.png and NAME.redrawn.png per image, as `show --out`
    does, from the palettes and assignments tables: no image is decoded again.

    \b
    Example:
      palette-dask render out/sample --image data/samples/coffee.jpg --out pictures
    """
    from .dataset import dataset_and_kind
    from .render import write_pictures

    ds, kind = dataset_and_kind(dataset, kind, storage_options)
    ids = ds.find_images(keys)
    stored = ds.stored_palettes(ids, kind)
    drawn = {palette.image_id for palette in stored}
    for image_id, key in zip(ids, keys, strict=True):
        if image_id not in drawn:
            click.echo(f"{key}: no {kind} palette (the image failed, or no such pass)", err=True)
    names = [os.path.basename(palette.uri.rstrip("/")) for palette in stored]
    for palette, name in zip(stored, names, strict=True):
        if names.count(name) > 1:  # same file name in two folders
            name = f"{name}.{palette.image_id[:8]}"
        for path in write_pictures(
            out,
            name,
            (palette.colors, palette.proportions, palette.labels),
            (palette.width, palette.height),
            size,
        ):
            click.echo(f"wrote {path}", err=True)
    if len(stored) < len(ids):
        raise click.exceptions.Exit(1)


@click.command(context_settings=CONTEXT)
@dataset_argument
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="HTML file to write.")
@click.option(
    "--limit",
    type=int,
    default=200,
    show_default=True,
    help="Images in the gallery, best represented first (0: all).",
)
@kind_option
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


@click.command(context_settings=CONTEXT)
@dataset_argument
@click.option(
    "--color",
    "colors",
    multiple=True,
    help="Query colour: a hex code, or a family (red, orange, yellow, green, teal, blue, "
    "purple, pink, brown, grey, black, white) or CSS colour name, which means its family's "
    "colours (repeatable).",
)
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
@kind_option
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="Threads searching: a colour query's shards side by side, or a shard's "
    "candidates  [default: one per core].",
)
@click.option(
    "--scheduler",
    help="Search the index's shards on the Dask cluster at this address, a task per shard.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON lines.")
def search(
    dataset, storage_options, colors, weights, like, top, radius, kind, threads, scheduler, as_json
):
    """Find images of a finished DATASET by colour, or by likeness to one image.

    A palette colour counts for a query colour when it is within --radius in
    CIELAB, with credit falling off with distance; images holding more of the
    query colours come first, then those covering them best. --like ranks by
    the Earth Mover's distance between palettes. `palette-dask index` makes
    searches over large datasets fast; with an index, --scheduler searches it
    on a Dask cluster whose workers can read the dataset. The results are the
    same whichever way the search runs.

    \b
    Example:
      palette-dask search out/sample --color "#1565a1"
      palette-dask search s3://bucket/palettes --color "#1565a1"
      palette-dask search out/sample --color "#1565a1" --color "#df8c18" --weight 60 --weight 40
      palette-dask search out/sample --color teal --color orange
      palette-dask search out/sample --like data/samples/coffee.jpg --top 5
      palette-dask search out/sample --color "#1565a1" --scheduler tcp://10.0.0.5:8786
    """
    from .query import search as run_search

    found = run_search(
        dataset,
        colors=list(colors) or None,
        weights=list(weights) or None,
        like=like,
        top=top,
        kind=kind,
        radius=radius,
        threads=threads,
        scheduler=scheduler,
        storage_options=storage_options,
    )
    if as_json:
        for row in found.to_dict(orient="records"):
            click.echo(json.dumps(row))
        return
    width = max((len(os.path.basename(u)) for u in found["uri"]), default=0)
    for row in found.itertuples():
        swatches = " ".join(f"{swatch(hex_to_rgb(code), 2)}{code}" for code in row.colors)
        click.echo(f"{row.score:8.4f}  {os.path.basename(row.uri):<{width}}  {swatches}")


@click.command(context_settings=CONTEXT)
@dataset_argument
@kind_option
@click.option(
    "--shard-images",
    type=click.IntRange(min=1),
    default=SHARD_IMAGES,
    show_default=True,
    help="Images per shard of the index (whole files of the palettes table).",
)
def index(dataset, storage_options, kind, shard_images):
    """Build or bring up to date the search index of a finished DATASET (OUT/_index).

    Every image's palette as fixed-length arrays of colours and shares, as the
    tables hold them, with the images' URIs, in shards: a search ranks as it
    would from the tables and never reads them. Growing the dataset makes the
    index stale (`search` then reads the tables); indexing again reads only
    the palettes files that are new since, and keeps the other shards.

    \b
    Example:
      palette-dask index out/sample
      palette-dask index s3://bucket/palettes
    """
    from .index import build_index

    folder = build_index(dataset, kind, storage_options=storage_options, shard_images=shard_images)
    click.echo(f"wrote {folder}")


@click.command(context_settings=CONTEXT)
@dataset_argument
@click.option(
    "--colors",
    "n_colors",
    type=int,
    default=10,
    show_default=True,
    help="Dominant colours to list.",
)
@kind_option
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
    from .stats import collection_stats, write_charts

    found = collection_stats(dataset, kind=kind, n_colors=n_colors, storage_options=storage_options)
    click.echo(f"images: {found.images:,} ({found.ok:,} ok, {found.failed:,} failed)")
    for error, count in found.errors.items():
        click.echo(f"  {count:6,}  {error}")
    click.echo("dominant colours (share of the collection, images holding it):")
    for row in found.dominant.itertuples():
        click.echo(f"  {swatch(hex_to_rgb(row.hex), 2)}{row.hex}  {row.share:6.1%}  {row.images:,}")
    series = {
        "lightness": found.lightness,
        "chroma": found.chroma,
        "hue": found.hue,
        "families": found.families,
    }
    for name, values in series.items():
        click.echo(f"{name}: " + "  ".join(f"{b} {v:.0%}" for b, v in values.items()))
    for path in write_charts(found, plots) if plots else []:
        click.echo(f"wrote {path}", err=True)


@click.command(context_settings=CONTEXT)
@dataset_argument
@kind_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. 0.0.0.0 serves every network this machine is on: anyone "
    "who reaches it can search the dataset and see its URIs and palettes (read only).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="Port to listen on (0: a free one, named when the service starts).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="Searches and pictures made at once  [default: one per core].",
)
def serve(dataset, storage_options, kind, host, port, threads):
    """Serve the search of a finished DATASET: a JSON API and a web page.

    The palettes are opened once (the index, when fresh: `palette-dask index`
    first for large datasets); the service only reads the dataset. The page at
    / picks colours with weights, finds images like a clicked one, and keeps
    the query in its URL. The API answers GET /api/search?color=…&weight=…,
    /api/like/ID, /api/images/ID (and its swatches.png and redrawn.png),
    /api/stats and /healthz, in JSON; bad requests get a 4xx and a JSON error.
    Ctrl-C or SIGTERM stops it cleanly.

    \b
    Example:
      palette-dask serve out/sample      # then open http://127.0.0.1:8000/
      curl 'http://127.0.0.1:8000/api/search?color=%23c81e28&top=5'
    """
    from .serve import PaletteService
    from .serve import serve as run_service

    service = PaletteService(dataset, kind, threads=threads, storage_options=storage_options)

    def ready(url: str) -> None:
        click.echo(f"serving {service.images:,} {service.kind} palettes at {url}", err=True)

    run_service(service, host, port, ready)


COMMANDS = (palettes, render, report, search, index, stats, serve)
