"""Stage 6: one self-contained HTML page for the whole run (no scripts, no network).

It is built from whatever the output folder holds, so a partial run (some datasets failed)
still gets a report that lists every dataset with its status and, for failures, the reason
from the dataset's logs. Nothing in it depends on the time or the output folder's path, so
reruns give the same bytes.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from bioingest import atomic

COLOURS = {
    "pass": "#1a7f37",
    "warn": "#b7791f",
    "fail": "#c62828",
    "failed": "#c62828",
    "ok": "#1a7f37",
    "missing": "#6e7781",
}
STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem;color:#1f2328}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2.5rem;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #d0d7de;
padding:.25rem .5rem;text-align:left;font-size:.85rem;vertical-align:top}
th{background:#f6f8fa}.badge{display:inline-block;padding:0 .45rem;border-radius:.6rem;
color:#fff;font-weight:600;font-size:.8rem}.series{display:flex;flex-wrap:wrap;gap:1.5rem}
figure{margin:0}figcaption{font-size:.8rem;color:#57606a}.reason{color:#c62828}
img.thumb{image-rendering:pixelated;border:1px solid #d0d7de;max-width:256px}
.plot{margin-top:.5rem}
"""


def badge(status: str) -> str:
    """A coloured status label."""
    colour = COLOURS.get(status, "#6e7781")
    return f'<span class="badge" style="background:{colour}">{html.escape(status)}</span>'


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return html.escape(str(value))


def failure_reason(out_dir: Path, name: str) -> str | None:
    """The first ``ERROR`` line of the dataset's logs, without its level, or None."""
    logs = out_dir / "logs" / name
    if not logs.is_dir():
        return None
    for log in sorted(logs.glob("*.log")):
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("ERROR "):
                return line[len("ERROR ") :]
    return None


def _svg_histogram(hist: dict[str, Any], colour: str) -> str:
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
        f'<text x="0" y="{height + 12}" font-size="10">{_fmt(hist["min"])}</text>'
        f'<text x="{width}" y="{height + 12}" font-size="10" text-anchor="end">'
        f"{_fmt(hist['max'])}</text></svg>"
    )


def _svg_focus(planes: list[dict[str, Any]], channels: list[dict[str, Any]]) -> str:
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


def _load(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _summary_row(out_dir: Path, name: str) -> tuple[str, str]:
    record = _load(out_dir / name / "metadata.json")
    qc = _load(out_dir / name / "qc.json")
    reason = failure_reason(out_dir, name)
    status = "failed" if reason else ("ok" if qc else "missing")
    sizes = ""
    score = ""
    if record:
        sizes = "<br>".join(
            f"{s['size_x']['value']}×{s['size_y']['value']} Z{s['size_z']['value']} "
            f"C{s['size_c']['value']} T{s['size_t']['value']} {s['pixel_type']['value']}"
            for s in record["series"][:3]
        )
        if len(record["series"]) > 3:
            sizes += f"<br>… {len(record['series'])} series"
        c = record["completeness"]
        score = f"{html.escape(c['nbo_tier'])} ({c['tier1_pct']:g}% / {c['tier2_pct']:g}%)"
    flags = ""
    if qc:
        problems = sorted(
            {
                f"{k}:{v}"
                for s in qc["series"]
                for checks in (s["checks"], *(ch["checks"] for ch in s["channels"]))
                for k, v in checks.items()
                if v != "pass"
            }
        )
        flags = badge(qc["status"]) + " " + html.escape(", ".join(problems))
    row = (
        f'<tr><td><a href="#ds-{html.escape(name)}">{html.escape(name)}</a></td>'
        f"<td>{badge(status)}</td><td>{sizes}</td><td>{score}</td><td>{flags}</td>"
        f'<td class="reason">{html.escape(reason or "")}</td></tr>'
    )
    return status, row


def _dataset_section(out_dir: Path, name: str) -> str:
    record = _load(out_dir / name / "metadata.json")
    qc = _load(out_dir / name / "qc.json")
    reason = failure_reason(out_dir, name)
    parts = [f'<h2 id="ds-{html.escape(name)}">{html.escape(name)}</h2>']
    if reason:
        parts.append(f'<p class="reason">Failed: {html.escape(reason)}</p>')
    if record:
        parts.append(
            f"<p>Source {html.escape(record['source_file'])} "
            f"({html.escape(record['reader_format'])}), {len(record['series'])} series.</p>"
        )
    if not qc:
        return "".join(parts)
    figures = []
    for s in qc["series"]:
        png = out_dir / name / s["thumbnail"]
        data = base64.b64encode(png.read_bytes()).decode() if png.is_file() else ""
        rows = "".join(
            f"<tr><td>{_fmt(ch['label'])}</td><td>{badge(ch['status'])}</td>"
            f"<td>{_fmt(ch['min'])}–{_fmt(ch['max'])}</td><td>{_fmt(ch['mean'])}</td>"
            f"<td>{_fmt(ch['saturated_fraction'])}</td><td>{_fmt(ch['bits_used'])}/"
            f"{_fmt(ch['bits_available'])}</td><td>{len(ch['blank_planes'])}</td>"
            f"<td>{_fmt(ch['best_focus_z'])}</td><td>{_fmt(ch['uniformity_pct'])}</td>"
            f"<td>{_svg_histogram(ch['histogram'], ch['color'])}</td></tr>"
            for ch in s["channels"]
        )
        focus = _svg_focus(s["planes"], s["channels"])
        checks = ", ".join(f"{k} {badge(v)}" for k, v in s["checks"].items())
        figures.append(
            f'<figure><img class="thumb" alt="series {s["series"]} thumbnail" '
            f'src="data:image/png;base64,{data}"><figcaption>series {s["series"]} '
            f"{badge(s['status'])} {checks}</figcaption>"
            f"<table><tr><th>channel</th><th>QC</th><th>range</th><th>mean</th>"
            f"<th>saturated</th><th>bits</th><th>blank planes</th><th>best Z</th>"
            f"<th>uniformity %</th><th>histogram</th></tr>{rows}</table>"
            + (
                f'<div class="plot"><figcaption>Focus by Z (normalised variance)</figcaption>'
                f"{focus}</div>"
                if focus
                else ""
            )
            + "</figure>"
        )
    parts.append(f'<div class="series">{"".join(figures)}</div>')
    return "".join(parts)


def build_report(out_dir: Path, datasets: list[str]) -> str:
    """The report page for ``datasets`` (names) in ``out_dir``, as HTML text."""
    rows = [_summary_row(out_dir, n) for n in sorted(datasets)]
    failed = sum(1 for status, _ in rows if status == "failed")
    sections = "".join(_dataset_section(out_dir, n) for n in sorted(datasets))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>bioingest report</title>"
        f"<style>{STYLE}</style></head><body><h1>bioingest report</h1>"
        f"<p>{len(rows)} datasets, {len(rows) - failed} converted, {failed} failed.</p>"
        "<table><tr><th>dataset</th><th>status</th><th>sizes</th>"
        "<th>metadata completeness (tier 1 / tier 2)</th><th>QC</th><th>failure</th></tr>"
        + "".join(row for _, row in rows)
        + f"</table>{sections}</body></html>\n"
    )


def write_report(out_dir: Path, datasets: list[str], *, out: Path | None = None) -> Path:
    """Write ``report.html`` for ``datasets`` into ``out_dir`` (or ``out``)."""
    target = out or out_dir / "report.html"
    atomic.write_text(target, build_report(out_dir, datasets))
    return target
