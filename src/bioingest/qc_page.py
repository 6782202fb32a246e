"""The per-dataset QC page, ``OUT/{dataset}/qc.html``, written by the ``qc`` step.

It holds the detail the run's summary page leaves out: every check with its reason, per
channel statistics, histograms, focus-by-Z plots, thumbnails (linked, not inlined) and how
to open each image in a viewer. No scripts and no network.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path

from bioingest import atomic, layout
from bioingest.html_parts import (
    STYLE,
    TIFF_HELP,
    VIEWER_HELP,
    badge,
    delivers_store,
    fmt,
    napari_command,
    napari_tiff_command,
    svg_focus,
    svg_histogram,
    web_path,
)
from bioingest.outcomes import failure_record
from bioingest.records import FailureReason, MetadataRecord, QCReport, SeriesQC


def _check_cells(checks: Mapping[str, str], reasons: Mapping[str, str]) -> str:
    """One line per check that is not ``pass`` (fail first) with its reason.

    The checks that pass follow, on one line.
    """
    order = {"fail": 0, "warn": 1, "n/a": 2, "pass": 3}
    # A pass with a reason (e.g. a background-subtracted floor) is shown with it.
    flagged = sorted(
        ((name, flag) for name, flag in checks.items() if flag != "pass" or name in reasons),
        key=lambda kv: (order[kv[1]], kv[0]),
    )
    lines = [
        f"<span class=nw>{html.escape(name)} {badge(flag)}</span> "
        f"{html.escape(reasons.get(name, ''))}"
        for name, flag in flagged
    ]
    passed = [name for name, flag in checks.items() if flag == "pass" and name not in reasons]
    if passed:
        lines.append(f"{badge('pass')} {html.escape(', '.join(passed))}")
    return "<br>".join(lines)


def _open_lines(s: SeriesQC, name: str, store: str | None) -> str:
    """How to open a series: napari and a web link for a store, napari for the OME-TIFF.

    ``store`` is None when the OME-TIFF is delivered alone.
    """
    if store is None:
        tiff = layout.ome_tiff("", name)
        return (
            f"<p>napari: <code>{html.escape(napari_tiff_command(tiff))}</code> "
            f"(series {s['series']} of the OME-TIFF)</p>"
        )
    link = web_path(store, s["path"])
    # Commands run in the output folder; links are relative to this page.
    target = f"{name}/{store}/{s['path']}" if s["path"] else f"{name}/{store}"
    return (
        f"<p>napari: <code>{html.escape(napari_command(target))}</code><br>"
        f'web viewer: <a href="{html.escape(link)}">{html.escape(link)}</a></p>'
    )


def _series_block(s: SeriesQC, name: str, store: str | None, thumbs: str) -> str:
    rows = "".join(
        f"<tr><td>{fmt(ch['label'])}</td><td>{badge(ch['status'])}</td>"
        f"<td class=checks>{_check_cells(ch['checks'], ch['reasons'])}</td>"
        f"<td>{fmt(ch['min'])}–{fmt(ch['max'])}</td><td>{fmt(ch['mean'])}</td>"
        f"<td>{fmt(ch['p0_1'])} / {fmt(ch['median'])} / {fmt(ch['p99_9'])}</td>"
        f"<td>{fmt(ch['saturated_fraction'])}</td><td>{fmt(ch['zero_fraction'])}</td>"
        f"<td>{fmt(ch['foreground_coverage'])}</td>"
        f"<td>{fmt(ch['bits_used'])}/{fmt(ch['bits_available'])}</td>"
        f"<td>{len(ch['blank_planes'])}</td><td>{fmt(ch['best_focus_z'])}</td>"
        f"<td>{fmt(ch['uniformity_pct'])}</td>"
        f"<td>{svg_histogram(ch['histogram'], ch['color'])}</td></tr>"
        for ch in s["channels"]
    )
    focus = svg_focus(s["planes"], s["channels"])
    meta = s["metadata"]
    flags = ", ".join(meta["flags"]) or "none"
    return (
        f'<figure id="series-{s["series"]}"><img class="thumb" '
        f'alt="series {s["series"]} thumbnail" '
        f'src="{html.escape(thumbs)}/{layout.thumbnail(s["series"])}">'
        f"<figcaption>series {s['series']} {badge(s['status'])} "
        f"{_check_cells(s['checks'], s['reasons'])}; metadata {badge(meta['status'])} "
        f"flags: {html.escape(flags)}</figcaption>"
        f"{_open_lines(s, name, store)}"
        "<table><tr><th>channel</th><th>QC</th><th>checks</th><th>range</th><th>mean</th>"
        "<th>p0.1 / median / p99.9</th><th>saturated</th><th>zeros</th>"
        "<th>foreground</th><th>bits</th><th>blank planes</th><th>best Z</th>"
        f"<th>uniformity %</th><th>histogram</th></tr>{rows}</table>"
        + ("<figcaption>Focus by Z (normalised variance)</figcaption>" + focus if focus else "")
        + "</figure>"
    )


def dataset_page(qc: QCReport, record: MetadataRecord, *, thumbnails: Path, base: Path) -> str:
    """HTML of ``qc.html`` for one dataset.

    Parameters
    ----------
    qc
        Content of the dataset's ``qc.json``.
    record
        Its ``metadata.json`` (source, completeness).
    thumbnails
        Folder of the thumbnails; linked relative to ``base``.
    base
        Folder the page is written to (the dataset's output folder).
    """
    name = qc["dataset"]
    delivered = delivers_store(qc["store"])
    store = qc["store"]["path"]
    thumbs = thumbnails.relative_to(base).as_posix() if thumbnails.is_relative_to(base) else ""
    score = record["completeness"]
    completeness = (
        f"{html.escape(str(score['nbo_tier']))} (tier 1 {score['tier1_pct']:g} %, "
        f"tier 2 {score['tier2_pct']:g} %)"
    )
    version = "0.5" if qc["store"]["zarr_format"] == 3 else "0.4"
    thumbs = thumbs or layout.THUMBNAILS
    shown = store if delivered else None
    blocks = "".join(_series_block(s, name, shown, thumbs) for s in qc["series"])
    image = (
        f"store <code>{html.escape(store)}</code> (NGFF {version}). Run the commands in the "
        "run's output folder; the links work when that folder is served over HTTP."
        if delivered
        else f"image <code>{html.escape(name + layout.OME_TIFF_SUFFIX)}</code> (pyramidal "
        "OME-TIFF; the OME-Zarr was an intermediate, not delivered). Run the commands in the "
        "run's output folder."
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(name)}: QC</title><style>{STYLE}</style></head><body>"
        f'<p><a href="../{layout.REPORT}">← run report</a></p>'
        f"<h1>{html.escape(name)}</h1>"
        f"<p>Image quality {badge(qc['status'])} · metadata {badge(qc['metadata_status'])}"
        f" · completeness {completeness}</p>"
        f"<p>Source {html.escape(record['source_file'])} "
        f"({html.escape(record['reader_format'])}), {len(qc['series'])} series; "
        f"{image}</p>"
        f"{VIEWER_HELP if delivered else TIFF_HELP}"
        f'<div class="series">{blocks}</div></body></html>\n'
    )


def not_converted_page(name: str, failure: FailureReason) -> str:
    """HTML of ``qc.html`` for a dataset whose conversion failed: why, nothing else."""
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(name)}"
        f"</title></head><body><h1>{html.escape(name)}</h1><p>Not converted "
        f"({html.escape(failure['step'])}): {html.escape(failure['reason'])}</p></body></html>\n"
    )


def write_not_converted(
    name: str, failure: FailureReason, *, out: Path, thumbnails: Path, page: Path | None
) -> None:
    """Write the QC step's outputs for a dataset whose conversion failed.

    These are a failure record as ``qc.json``, an empty thumbnails folder and, when asked
    for, the page saying why.
    """
    atomic.write_text(out, failure_record(name, failure))
    thumbnails.mkdir(parents=True, exist_ok=True)
    if page:
        atomic.write_text(page, not_converted_page(name, failure))
