"""Small HTML pieces shared by the run's summary page and the per-dataset QC pages.

The pieces: status badges, number formatting, inline SVG plots and how to open a store in
viewers.

Everything is inline (no network, no external files), and nothing depends on the time or
the output folder's location, so reruns give the same bytes.
"""

from __future__ import annotations

import html
import shlex
from collections.abc import Mapping
from typing import Any

from bioingest.records import ChannelQC, HistogramPlot, PlaneQC

#: CSS class of each status badge (short: the summary page repeats them 10,000 times).
CLASSES = {
    "pass": "p",
    "ok": "p",
    "warn": "w",
    "fail": "f",
    "failed": "f",
    "n/a": "n",
    "missing": "n",
}
STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem;color:#1f2328}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #d0d7de;
padding:.25rem .5rem;text-align:left;font-size:.85rem;vertical-align:top}
th{background:#f6f8fa}b.p,b.w,b.f,b.n{display:inline-block;padding:0 .45rem;
border-radius:.6rem;color:#fff;font-size:.8rem}b.p{background:#1a7f37}b.w{background:#9a6700}
b.f{background:#c62828}b.n{background:#6e7781}.series{display:flex;flex-wrap:wrap;gap:1.5rem}
figure{margin:0}figcaption{font-size:.8rem;color:#57606a}.reason{color:#c62828}
img.thumb{image-rendering:pixelated;border:1px solid #d0d7de;max-width:256px;min-width:128px}
.nw{white-space:nowrap}td.checks{min-width:18rem}
code{font-size:.8rem;background:#f6f8fa;padding:0 .2rem;word-break:break-all}
.note{color:#57606a;font-size:.85rem}
"""


def badge(status: str) -> str:
    """Return a coloured status label (short markup: the summary repeats it 30,000 times)."""
    return f"<b class={CLASSES.get(status, 'n')}>{html.escape(status)}</b>"


def fmt(value: Any) -> str:
    """Format a value for a table cell: 6 significant digits, escaped, empty for None."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return html.escape(str(value))


def svg_histogram(hist: HistogramPlot, colour: str) -> str:
    """Bars of a coarse histogram, square-root heights."""
    counts = hist["counts"]
    if not counts or max(counts) == 0:
        return ""
    width, height = 192, 64
    top = max(counts)
    bar = width / len(counts)
    # Square-root heights keep small populations visible next to the background peak.
    bars = "".join(
        f'<rect x="{i * bar:.2f}" y="{height - height * (c / top) ** 0.5:.2f}" '
        f'width="{bar:.2f}" height="{height * (c / top) ** 0.5:.2f}"/>'
        for i, c in enumerate(counts)
        if c
    )
    fill = "#" + (colour if colour != "FFFFFF" else "57606a")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 14}" '
        f'role="img"><title>histogram</title><g fill="{fill}">{bars}</g>'
        f'<text x="0" y="{height + 12}" font-size="10">{fmt(hist["min"])}</text>'
        f'<text x="{width}" y="{height + 12}" font-size="10" text-anchor="end">'
        f"{fmt(hist['max'])}</text></svg>"
    )


def svg_focus(planes: list[PlaneQC], channels: list[ChannelQC]) -> str:
    """Normalised variance against Z at t = 0, one line per channel."""
    width, height = 192, 64
    lines = []
    zs = sorted({p["z"] for p in planes})
    if len(zs) < 2:
        return ""
    for ch in channels:
        points = [
            (p["z"], p["normalized_variance"])
            for p in planes
            if p["t"] == 0 and p["c"] == ch["channel"] and p["normalized_variance"]
        ]
        if len(points) < 2:
            continue
        top = max(v for _, v in points)
        coords = " ".join(
            f"{z / (len(zs) - 1) * width:.1f},{height - v / top * (height - 4):.1f}"
            for z, v in points
        )
        colour = "#" + (ch["color"] if ch["color"] != "FFFFFF" else "57606a")
        lines.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coords}"/>'
        )
    if not lines:
        return ""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 14}" '
        f'role="img"><title>focus by Z</title>{"".join(lines)}'
        f'<text x="0" y="{height + 12}" font-size="10">z 0</text>'
        f'<text x="{width}" y="{height + 12}" font-size="10" text-anchor="end">'
        f"z {zs[-1]}</text></svg>"
    )


def napari_command(store: str) -> str:
    """Return the shell command that opens ``store`` (relative to the output folder) in napari."""
    return f"napari --plugin napari-ome-zarr {shlex.quote(store)}"


def napari_tiff_command(path: str) -> str:
    """Return the shell command that opens an OME-TIFF (relative to the output folder) in napari."""
    return f"napari {shlex.quote(path)}"


def delivers_store(store: Mapping[str, object]) -> bool:
    """Whether ``qc.json``'s store is delivered; else the OME-TIFF is, alone (``ome_zarr``)."""
    return store.get("delivered", True) is not False


def web_path(store: str, series_path: str) -> str:
    """Return the URL path of one image of a store, relative to the output folder.

    The path is for a viewer reading the folder over HTTP (vizarr, Neuroglancer, …); images
    of a bioformats2raw store or plate are opened one by one.
    """
    return f"{store}/{series_path}/" if series_path else f"{store}/"


VIEWER_HELP = (
    "<p class=note>Open a store in <b>napari</b> (with the napari-ome-zarr plugin) from "
    "this folder with the command shown. For a <b>web viewer</b> (vizarr, Neuroglancer, "
    "other Viv-based viewers), serve this folder over HTTP with Range requests (for "
    "example <code>npx http-server --cors</code>; Python's <code>http.server</code> "
    "ignores Range) and give the viewer the image's URL: the server's address followed "
    "by the relative link shown (Neuroglancer: prefix <code>zarr3://</code> for NGFF 0.5, "
    "<code>zarr2://</code> for 0.4).</p>"
)
#: How to open the images when only the OME-TIFF is delivered (``ome_zarr: false``).
TIFF_HELP = (
    "<p class=note>Only the pyramidal <b>OME-TIFF</b> is delivered (config "
    "<code>ome_zarr: false</code>): open it in <b>napari</b> from this folder with the "
    "command shown, or in QuPath, Fiji or OMERO, which read every series and pyramid "
    "level through Bio-Formats. Web viewers of OME-Zarr do not apply.</p>"
)
