"""A palette dataset's search service: an HTTP API and a web page (``palette-dask serve``).

One process serves one dataset, read only: its palettes are opened once (the
index's shards, or arrays built from the tables when there is no fresh index)
and every search runs on them in a pool of threads, off the event loop, so
that many clients are served at once. The rankings are :func:`palette_dask.search`'s;
the pictures are :mod:`palette_dask.render`'s, drawn from the tables (no image
decoded again) and kept in a small cache.

Every request is checked before it is run: a malformed colour, weights that do
not match the colours, ``top`` or ``radius`` out of range, an id that is not an
image id, an unknown image, an oversized query string, an unknown path or
method each get a 4xx answer with a JSON ``{"error": ...}`` saying what is
wrong. The only files served are the package's own static files.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.resources
import logging
import math
import re
import signal
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from .color import rgb_to_hex
from .dataset import PaletteDataset, dataset_and_kind
from .errors import UnknownImageError
from .index import palette_shards
from .names import family_of_name
from .query import RADIUS, default_threads, search
from .render import display_size, png_bytes, redraw, swatches

logger = logging.getLogger(__name__)

MAX_TOP = 200
MAX_COLORS = 8
MAX_RADIUS = 200.0
MAX_PICTURE = 2000
# Longest query string read (bytes): requests with more are refused whole.
MAX_QUERY = 4096
# What the HTTP parser takes in a request line before it refuses it itself (not
# in JSON): larger than MAX_QUERY, so that the service answers such requests.
MAX_LINE = 256 * 1024
PICTURES_CACHED = 512
STATIC_FILES = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}
_HEX = re.compile(r"#?[0-9a-fA-F]{6}")
_IMAGE_ID = re.compile(r"[0-9a-f]{32}")


class BadRequest(web.HTTPBadRequest):
    """A request the service cannot answer as asked; its text says why."""

    def __init__(self, reason: str):
        super().__init__(reason=reason)


class PaletteService:
    """One dataset's palettes, opened once, searched and drawn for many requests.

    Parameters
    ----------
    dataset : str or PaletteDataset
    kind : {"image", "corpus"}, optional
        The palettes served; default: the dataset's own.
    threads : int, optional
        Searches and pictures run at once (default: one per core).
    storage_options : dict, optional
        fsspec options of a dataset given by URL.
    """

    def __init__(
        self,
        dataset: str | PaletteDataset,
        kind: str | None = None,
        *,
        threads: int | None = None,
        storage_options: Mapping | None = None,
    ):
        self.dataset, self.kind = dataset_and_kind(dataset, kind, storage_options)
        self.shards = palette_shards(self.dataset, self.kind)
        self.images = sum(len(shard) for shard in self.shards)
        self._pool = ThreadPoolExecutor(threads or default_threads())

    async def run(self, function, *args, **kwargs):
        """``function(*args, **kwargs)`` in the service's threads."""
        call = functools.partial(function, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def search(self, **asked) -> list[dict]:
        """:func:`palette_dask.search` over the opened palettes, as JSON-ready records."""
        found = search(
            self.dataset, kind=self.kind, shards=self.shards, threads=1, **asked
        ).to_dict(orient="records")
        return [{**row, "score": float(row["score"])} for row in found]

    def image(self, image_id: str) -> dict:
        """One image's row of the ``images`` table and its palette of the served kind
        (``hex``, ``share``; and ``corpus_index`` for corpus palettes)."""
        import pyarrow.compute as pc

        rows = (
            self.dataset.arrow_dataset("images")
            .to_table(
                columns=["image_id", "uri", "status", "error", "width", "height"],
                filter=pc.field("image_id") == image_id,
            )
            .to_pylist()
        )
        if not rows:
            raise UnknownImageError(f"no image {image_id}")
        return {**rows[0], "kind": self.kind, "palette": self._palette(image_id)}

    def _palette(self, image_id: str) -> list[dict]:
        """The image's palette of the served kind from the opened arrays (none for an image
        that failed): ``hex`` and ``share``, largest first, and the ``corpus_index`` of
        each colour of a corpus palette."""
        key = image_id.encode("ascii")
        for shard in self.shards:
            for row in shard.rows_of(key):
                held = shard.share[row] > 0
                codes = rgb_to_hex(shard.colors_rgb[shard.color[row][held]])
                palette = [
                    {"hex": code, "share": float(share)}
                    for code, share in zip(codes, shard.share[row][held], strict=True)
                ]
                if self.kind == "corpus":
                    for color in palette:
                        color["corpus_index"] = self._corpus_index[color["hex"]]
                return palette
        return []

    @functools.cached_property
    def _corpus_index(self) -> dict[str, int]:
        """``hex -> corpus_index`` of the corpus palette."""
        table = self.dataset.table("corpus_palette")
        return dict(zip(table["hex"].to_pylist(), table["corpus_index"].to_pylist(), strict=True))

    @functools.lru_cache(maxsize=PICTURES_CACHED)  # noqa: B019 - one service per process
    def picture(self, image_id: str, which: str, size: int) -> bytes:
        """An image's ``swatches`` or ``redrawn`` PNG, as ``palette-dask render`` draws it."""
        stored = self.dataset.stored_palettes([image_id], self.kind)
        if not stored:
            raise UnknownImageError(f"no {self.kind} palette for {image_id}")
        palette = stored[0]
        if which == "swatches":
            return png_bytes(swatches(palette.colors, palette.proportions))
        shape = display_size(palette.width, palette.height, size) if size else None
        return png_bytes(
            redraw(palette.labels, palette.colors, size=shape or (palette.width, palette.height))
        )

    @functools.cached_property
    def stats(self) -> dict:
        """The collection statistics of ``palette-dask stats``, as JSON-ready values."""
        from .stats import collection_stats

        found = collection_stats(self.dataset, kind=self.kind)
        return {
            "images": found.images,
            "ok": found.ok,
            "failed": found.failed,
            "errors": {str(k): int(v) for k, v in found.errors.items()},
            "dominant": [
                {"hex": r.hex, "share": float(r.share), "images": int(r.images)}
                for r in found.dominant.itertuples()
            ],
            **{
                name: {str(k): float(v) for k, v in getattr(found, name).items()}
                for name in ("lightness", "chroma", "hue", "families")
            },
        }

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _one(request: web.Request, name: str, default: str | None = None) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise BadRequest(f"give `{name}` at most once")
    return values[0] if values else default


def _number(request: web.Request, name: str, kind, default, low, high):
    """The query parameter ``name`` as a ``kind`` number in [``low``, ``high``]."""
    text = _one(request, name)
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise BadRequest(f"`{name}` must be a number, got {text[:40]!r}") from None
    if not (math.isfinite(value) and low <= value <= high):
        raise BadRequest(f"`{name}` must be between {low} and {high}, got {text[:40]}")
    return value


def _colors(request: web.Request) -> tuple[list[str], list[float] | None]:
    colors = request.query.getall("color", [])
    if not colors:
        raise BadRequest("give at least one `color` (a hex code such as #c81e28)")
    if len(colors) > MAX_COLORS:
        raise BadRequest(f"give at most {MAX_COLORS} colours")
    for color in colors:
        if not _HEX.fullmatch(color) and family_of_name(color[:40]) is None:
            raise BadRequest(
                f"`color` must be a hex code such as #c81e28, or a colour family or CSS name "
                f"such as teal, got {color[:40]!r}"
            )
    texts = request.query.getall("weight", [])
    if not texts:
        return colors, None
    if len(texts) != len(colors):
        raise BadRequest(f"give one `weight` per colour ({len(colors)}), or none")
    weights = []
    for text in texts:
        try:
            weight = float(text)
        except ValueError:
            raise BadRequest(f"`weight` must be a number, got {text[:40]!r}") from None
        if not (math.isfinite(weight) and weight > 0):
            raise BadRequest(f"`weight` must be positive, got {text[:40]}")
        weights.append(weight)
    return colors, weights


def _image_id(request: web.Request) -> str:
    image_id = request.match_info["image_id"]
    if not _IMAGE_ID.fullmatch(image_id):
        raise BadRequest("an image id is 32 lowercase hex digits")
    return image_id


def _top(request: web.Request) -> int:
    return _number(request, "top", int, 20, 1, MAX_TOP)


SERVICE = web.AppKey("service", PaletteService)
routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    return web.json_response({"status": "ok", "images": service.images, "kind": service.kind})


@routes.get("/api/search")
async def api_search(request: web.Request) -> web.Response:
    colors, weights = _colors(request)
    top = _top(request)
    radius = _number(request, "radius", float, RADIUS, 1e-3, MAX_RADIUS)
    service = request.app[SERVICE]
    found = await service.run(
        service.search, colors=colors, weights=weights, top=top, radius=radius
    )
    return web.json_response({"results": found})


@routes.get("/api/like/{image_id}")
async def api_like(request: web.Request) -> web.Response:
    image_id, top = _image_id(request), _top(request)
    service = request.app[SERVICE]
    found = await service.run(service.search, like=image_id, top=top)
    return web.json_response({"results": found})


@routes.get("/api/images/{image_id}")
async def api_image(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    return web.json_response(await service.run(service.image, _image_id(request)))


@routes.get("/api/images/{image_id}/{which:swatches|redrawn}.png")
async def api_picture(request: web.Request) -> web.Response:
    image_id = _image_id(request)
    size = _number(request, "size", int, 800, 0, MAX_PICTURE)
    service = request.app[SERVICE]
    png = await service.run(service.picture, image_id, request.match_info["which"], size)
    return web.Response(
        body=png, content_type="image/png", headers={"Cache-Control": "max-age=3600"}
    )


@routes.get("/api/stats")
async def api_stats(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    return web.json_response(await service.run(lambda: service.stats))


@routes.get("/")
async def page(request: web.Request) -> web.Response:
    return _static("index.html")


@routes.get("/static/{name}")
async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound(reason=f"no static file {name[:60]!r}")
    return _static(name)


@functools.cache
def _static_bytes(name: str) -> bytes:
    return importlib.resources.files("palette_dask").joinpath("static", name).read_bytes()


def _static(name: str) -> web.Response:
    return web.Response(body=_static_bytes(name), content_type=STATIC_FILES[name])


@web.middleware
async def json_errors(request: web.Request, handler) -> web.StreamResponse:
    """Every failure as a JSON ``{"error": ...}``: 4xx for what the request asked,
    500 (logged, no traceback sent) for the service's own faults."""
    if len(request.query_string) > MAX_QUERY:
        return _error(414, f"the query string is longer than {MAX_QUERY} bytes")
    try:
        return await handler(request)
    except web.HTTPException as failure:
        if failure.status < 400:
            raise
        return _error(failure.status, failure.reason)
    except UnknownImageError as failure:
        return _error(404, str(failure.args[0] if failure.args else failure))
    except Exception:
        logger.exception("%s %s failed", request.method, request.path_qs[:200])
        return _error(500, "the service failed on this request; its log says why")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def make_app(service: PaletteService) -> web.Application:
    """The aiohttp application of ``service``."""
    app = web.Application(middlewares=[json_errors])
    app[SERVICE] = service
    app.add_routes(routes)

    async def closed(app: web.Application) -> None:
        app[SERVICE].close()

    app.on_cleanup.append(closed)
    return app


def serve(service: PaletteService, host: str = "127.0.0.1", port: int = 8000, ready=print) -> None:
    """Serve ``service`` on ``host``:``port`` (0: a free port) until interrupted (Ctrl-C)
    or terminated (SIGTERM, as service managers stop a service); ``ready`` is called
    with the service's URL once it listens. Either way it stops cleanly and returns."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(service, host, port, ready))


async def _serve(service: PaletteService, host: str, port: int, ready) -> None:
    runner = web.AppRunner(
        make_app(service), max_line_size=MAX_LINE, max_field_size=MAX_LINE, access_log=None
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_port = runner.addresses[0][1]
        shown = f"[{host}]" if ":" in host else host
        terminated = asyncio.Event()
        if threading.current_thread() is threading.main_thread():  # signals reach it only
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, terminated.set)
        ready(f"http://{shown}:{bound_port}/")
        await terminated.wait()  # or until cancelled by Ctrl-C
    finally:
        await runner.cleanup()
