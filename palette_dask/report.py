"""A dataset as one self-contained HTML page: summary, corpus palette, gallery, failures.

The page has inline CSS, images as PNG data URIs and a few lines of plain
JavaScript for the colour filter: it opens from a file, offline, in any
browser. Its size is bounded by ``limit``: the gallery shows the images whose
palettes represent them best (lowest ``mse_rgb``) first, and says how many it
leaves out.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from datetime import datetime

import numpy as np
import pyarrow.compute as pc

from .color import rgb_to_hex, rgb_to_lab
from .dataset import PaletteDataset, StoredPalette, dataset_and_kind
from .render import display_size, png_bytes, redraw, text_color

THUMBNAIL_SIDE = 192
DEFAULT_LIMIT = 200
MAX_ERRORS_SHOWN = 1000

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fafafa; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.muted { color: #666; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; }
dl.summary dt { color: #666; } dl.summary dd { margin: 0; }
.strip { display: flex; height: 40px; border-radius: 4px; overflow: hidden; }
.swatch { display: flex; align-items: flex-end; justify-content: center; min-width: 0;
  font: 11px/1.2 ui-monospace, monospace; padding-bottom: 3px; overflow: hidden;
  white-space: nowrap; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr));
  gap: 14px; }
.entry { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 8px;
  margin: 0; }
.entry img { display: block; margin: 0 auto; max-width: 100%; max-height: 150px; width: auto;
  height: auto; image-rendering: pixelated;
  background: repeating-conic-gradient(#eee 0 25%, #fff 0 50%) 0 0 / 16px 16px; }
.entry .swatch { font-size: 0; }
.entry .name { font-size: 12px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap;
  margin: 6px 0 4px; }
.entry .strip { height: 30px; }
.filter { display: flex; gap: 12px; align-items: center; margin: 8px 0 14px; flex-wrap: wrap; }
table.errors { border-collapse: collapse; } table.errors td { padding: 3px 10px;
  border-bottom: 1px solid #e4e4e4; vertical-align: top; }
"""

# Keeps the gallery entries holding a colour within the chosen CIELAB distance.
_SCRIPT = """
(function () {
  var picker = document.getElementById("filter-color");
  var distance = document.getElementById("filter-distance");
  var enabled = document.getElementById("filter-on");
  var shown = document.getElementById("filter-count");
  function lab(hex) {
    var c = [1, 3, 5].map(function (i) {
      var v = parseInt(hex.substr(i, 2), 16) / 255;
      return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    var xyz = [
      (0.4124 * c[0] + 0.3576 * c[1] + 0.1805 * c[2]) / 0.95047,
      0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2],
      (0.0193 * c[0] + 0.1192 * c[1] + 0.9505 * c[2]) / 1.08883
    ].map(function (t) { return t > 0.008856 ? Math.cbrt(t) : 7.787 * t + 16 / 116; });
    return [116 * xyz[1] - 16, 500 * (xyz[0] - xyz[1]), 200 * (xyz[1] - xyz[2])];
  }
  function apply() {
    var target = lab(picker.value), limit = parseFloat(distance.value), count = 0;
    document.getElementById("filter-distance-value").textContent = distance.value;
    document.querySelectorAll(".gallery .entry").forEach(function (entry) {
      var keep = !enabled.checked || JSON.parse(entry.dataset.lab).some(function (c) {
        return Math.hypot(c[0] - target[0], c[1] - target[1], c[2] - target[2]) <= limit;
      });
      entry.hidden = !keep;
      if (keep) { count += 1; }
    });
    shown.textContent = count;
  }
  [picker, distance, enabled].forEach(function (el) { el.addEventListener("input", apply); });
  enabled.addEventListener("change", apply);
  apply();
})();
"""


def _data_uri(pixels: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels)).decode("ascii")


def _strip(colors: np.ndarray, proportions: np.ndarray) -> str:
    """Swatches as HTML: one block per colour, as wide as its share, with its hex code."""
    blocks = []
    for color, share, code in zip(colors.tolist(), proportions, rgb_to_hex(colors), strict=True):
        ink = rgb_to_hex(np.array([text_color(color)], np.uint8))[0]
        blocks.append(
            f'<div class="swatch" style="flex: {float(share):.6f} 1 0; background: {code}; '
            f'color: {ink}" title="{code} {share:.1%}" data-hex="{code}">'
            f"{code}</div>"
        )
    return '<div class="strip">' + "".join(blocks) + "</div>"


def _entry(stored: StoredPalette) -> str:
    size = display_size(stored.width, stored.height, THUMBNAIL_SIDE)
    picture = _data_uri(redraw(stored.labels, stored.colors, size=size))
    lab = json.dumps(np.round(rgb_to_lab(stored.colors), 2).tolist())
    name = stored.uri.rsplit("/", 1)[-1]
    shares = ", ".join(
        f"{code} {share:.0%}"
        for code, share in zip(rgb_to_hex(stored.colors), stored.proportions, strict=True)
    )
    return (
        f'<figure class="entry" data-image-id="{stored.image_id}" data-lab=\'{lab}\'>'
        f'<img src="{picture}" alt="{html.escape(name)} redrawn with its palette" '
        f'width="{size[0]}" height="{size[1]}">'
        f'<figcaption><div class="name" title="{html.escape(stored.uri)}">'
        f"{html.escape(name)}</div>{_strip(stored.colors, stored.proportions)}"
        f'<div class="muted" style="font-size: 11px">{html.escape(shares)}</div>'
        "</figcaption></figure>"
    )


def _summary(ds: PaletteDataset, n_ok: int, n_failed: int, kind: str) -> str:
    job = ds.job
    spec = job.get("spec", {})
    rows = {
        "images": f"{n_ok + n_failed:,} ({n_ok:,} ok, {n_failed:,} failed)",
        "palettes shown": "over the corpus palette" if kind == "corpus" else "each image's own",
        "mode": spec.get("mode"),
        "colours (k)": spec.get("k"),
        "colour space": spec.get("color_space"),
        "engine": spec.get("engine"),
        "seed": spec.get("random_state"),
        "sample pixels": spec.get("max_pixels"),
        "status": job.get("status"),
        "started": job.get("started"),
        "time taken": f"{job['elapsed_s']:.1f} s" if "elapsed_s" in job else None,
        "palette-dask": job.get("versions", {}).get("palette-dask"),
    }
    items = "".join(
        f"<dt>{html.escape(name)}</dt><dd>{html.escape(str(value))}</dd>"
        for name, value in rows.items()
        if value is not None
    )
    return f'<dl class="summary">{items}</dl>'


def _corpus_section(ds: PaletteDataset) -> str:
    corpus = ds.corpus_palette
    if corpus.empty:
        return ""
    colors = corpus[["r", "g", "b"]].to_numpy(dtype=np.uint8)
    shares = corpus["proportion"].to_numpy()
    order = np.argsort(-shares, kind="stable")
    return (
        f"<h2>Corpus palette ({len(corpus)} colours)</h2>"
        f'<section id="corpus-palette">{_strip(colors[order], shares[order])}</section>'
    )


def _failures_section(failed) -> str:
    if not len(failed):
        return ""
    listed = failed.head(MAX_ERRORS_SHOWN)
    rows = "".join(
        f'<tr><td title="{html.escape(uri)}">{html.escape(uri.rsplit("/", 1)[-1])}</td>'
        f"<td>{html.escape(error or '')}</td></tr>"
        for uri, error in zip(listed["uri"], listed["error"], strict=True)
    )
    more = len(failed) - MAX_ERRORS_SHOWN
    note = f'<p class="muted">and {more:,} more</p>' if more > 0 else ""
    return (
        f"<h2>Failed images ({len(failed):,})</h2>"
        f'<table class="errors" id="failures">{rows}</table>{note}'
    )


def report_html(
    dataset: str | PaletteDataset,
    *,
    limit: int = DEFAULT_LIMIT,
    kind=None,
    storage_options: Mapping | None = None,
) -> str:
    """The HTML report of a finished dataset.

    Parameters
    ----------
    dataset : str or PaletteDataset
        The job's output folder, or the opened dataset.
    limit : int
        Images in the gallery, best represented by their palette (lowest
        ``mse_rgb``) first; 0 shows all.
    kind : {"image", "corpus"}, optional
        Which palettes to show; default: the dataset's own (see
        :meth:`PaletteDataset.default_kind`).
    storage_options : dict, optional
        fsspec options of a dataset given by URL (see :func:`palette_dask.open_dataset`).

    Returns
    -------
    str
    """
    ds, kind = dataset_and_kind(dataset, kind, storage_options)
    images = ds.arrow_dataset("images").to_table(
        columns=["image_id", "uri", "status", "error", "mse_rgb"]
    )
    ok = images.filter(pc.field("status") == "ok").to_pandas()
    failed = images.filter(pc.field("status") != "ok").to_pandas().sort_values("uri")
    # Corpus-mode images have no own palette, hence no mse_rgb: order them by name.
    ok = ok.sort_values(["mse_rgb", "uri"], na_position="last")
    shown = ok if not limit else ok.head(limit)
    entries = "".join(map(_entry, ds.stored_palettes(shown["image_id"], kind)))
    left_out = len(ok) - len(shown)
    more = (
        f'<p class="muted">Showing the {len(shown):,} best-represented of {len(ok):,} images '
        f"(lowest mse_rgb first); {left_out:,} left out (raise --limit).</p>"
        if left_out
        else ""
    )
    title = f"Palettes of {ds.path}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p class="muted">Made by palette-dask on {datetime.now().strftime("%Y-%m-%d %H:%M")}.</p>
{_summary(ds, len(ok), len(failed), kind)}
{_corpus_section(ds)}
<h2>Images</h2>
{more}
<div class="filter">
  <label><input type="checkbox" id="filter-on"> only images holding a colour near</label>
  <input type="color" id="filter-color" value="#1565a1">
  <label>within CIELAB distance <input type="range" id="filter-distance" min="2" max="60"
    value="20"> <span id="filter-distance-value">20</span></label>
  <span class="muted"><span id="filter-count">{len(shown)}</span> shown</span>
</div>
<div class="gallery" id="gallery">{entries}</div>
{_failures_section(failed)}
<script>{_SCRIPT}</script>
</body>
</html>
"""
