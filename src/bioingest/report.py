"""Stage 6: ``report.html``, one fast summary page for the whole run.

One row per dataset: run status (and, for a failure, its step and one-line reason), the
image-quality flag with the checks that fail or warn, metadata completeness apart from
image quality, sizes, and how to open the store. Actionable rows come first: failed
datasets, then QC ``fail``, then ``warn``; every column sorts with a click (a small inline
script; no network). The detail of each dataset (thumbnails, histograms, focus plots) is in
its own ``NAME/qc.html``, written by the ``qc`` step, which the summary links to. Nothing in
the page depends on the time or the output folder's path, so reruns give the same bytes.
"""

from __future__ import annotations

import csv
import html
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bioingest import atomic, layout
from bioingest.html_parts import (
    STYLE,
    TIFF_HELP,
    VIEWER_HELP,
    badge,
    delivers_store,
    napari_command,
    napari_tiff_command,
)
from bioingest.records import (
    MetadataRecord,
    QCReport,
    failing_checks,
    flagged_checks,
    is_failure,
    read_metadata,
    read_qc,
)

#: Sort rank of a dataset's state: what needs action first.
RANK = {"failed": 0, "fail": 1, "warn": 2, "missing": 3, "pass": 4, "n/a": 5}
SORT_SCRIPT = """
document.querySelectorAll('th[data-c]').forEach(function(th){th.addEventListener('click',
function(){var c=+th.dataset.c,b=document.getElementById('rows'),d=th.dataset.d==='1'?-1:1;
th.dataset.d=d===1?'1':'0';var rows=Array.prototype.slice.call(b.rows);
function key(r){var td=r.cells[c];return td.dataset.s!==undefined?+td.dataset.s:
td.textContent.toLowerCase();}
rows.sort(function(x,y){var a=key(x),z=key(y);return a<z?-d:a>z?d:0;});
var f=document.createDocumentFragment();rows.forEach(function(r){f.appendChild(r);});
b.appendChild(f);});});
"""


@dataclass(frozen=True)
class FailedDataset:
    """A dataset that did not complete: the step that failed and its one-line reason."""

    name: str
    step: str
    reason: str


def read_failed(path: Path) -> list[FailedDataset]:
    """Failed datasets from a TSV with the columns ``dataset``, ``step``, ``reason``.

    The TSV is the run's ``failed.tsv``; a missing file means none failed.
    """
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [
        FailedDataset(
            r["dataset"],
            r.get("step") or "",
            # failed.tsv names the file too: the reason reads "FILE: REASON".
            f"{r['file']}: {r.get('reason') or ''}" if r.get("file") else r.get("reason") or "",
        )
        for r in rows
    ]


def read_dataset_names(path: Path) -> list[str]:
    """Dataset names from a file with one per line (its first tab-separated column)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split("\t")[0] for line in lines if line.strip()]


def failure_reason(out_dir: Path, name: str) -> str | None:
    """Return the first ``ERROR`` line of the dataset's logs, without its level, or None."""
    failed = failure_from_logs(out_dir, name)
    return failed.reason if failed else None


def failure_from_logs(out_dir: Path, name: str) -> FailedDataset | None:
    """Return the dataset's first ``ERROR`` line in ``OUT/logs/NAME/STEP.log``, with its step.

    The logs read are those of its steps (:func:`bioingest.layout.step_logs`).
    """
    for log in layout.step_logs(out_dir, name):
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("ERROR "):
                return FailedDataset(name, log.stem, line[len("ERROR ") :])
    return None


def _first_reason(qc: QCReport, flag: str) -> str:
    """``check: reason`` of the first check with ``flag`` (series, then channel order)."""
    for s, ch, name in flagged_checks(qc, flag):
        if ch is None:
            return f"{name}: {s['reasons'].get(name, '')} (series {s['series']})"
        where = f"series {s['series']}, {ch['label']}"
        return f"{name}: {ch['reasons'].get(name, '')} ({where})"
    return ""


def _sizes(record: MetadataRecord) -> str:
    series = record["series"]
    if not series:
        return ""
    s = series[0]
    text = (
        f"{s['size_x']['value']}×{s['size_y']['value']} Z{s['size_z']['value']} "
        f"C{s['size_c']['value']} T{s['size_t']['value']} {s['pixel_type']['value']}"
    )
    return text + (f" +{len(series) - 1} series" if len(series) > 1 else "")


@dataclass(frozen=True)
class _Row:
    rank: int
    name: str
    html: str
    state: str
    metadata: str
    #: Only the OME-TIFF is delivered (``ome_zarr: false``).
    tiff_only: bool = False


def _row(out_dir: Path, name: str, failure: FailedDataset | None) -> _Row:
    esc = html.escape(name)
    record_path, qc_path = layout.metadata(out_dir, name), layout.qc(out_dir, name)
    loaded = read_metadata(record_path) if record_path.is_file() else None
    report = read_qc(qc_path) if qc_path.is_file() else None
    # A dataset whose conversion failed has failure records in their place.
    record = None if loaded is None or is_failure(loaded) else loaded
    qc = None if report is None or is_failure(report) else report
    state = "failed" if failure else ("ok" if qc else "missing")
    quality = "missing" if qc is None else str(qc["status"])
    metadata = "missing" if qc is None else str(qc.get("metadata_status", "missing"))
    rank = RANK["failed"] if failure else RANK[quality]
    if failure:
        problem = f"{html.escape(failure.step)}: {html.escape(failure.reason)}"
        detail = f'<td class="reason">{problem}</td>'
    elif qc:
        fails, warns = failing_checks(qc, "fail"), failing_checks(qc, "warn")
        worst = "fail" if fails else ("warn" if warns else "")
        listed = "; ".join(
            f"{flag} {', '.join(names)}"
            for flag, names in (("fail", fails), ("warn", warns))
            if names
        )
        first = html.escape(_first_reason(qc, worst)) if worst else ""
        detail = f"<td>{html.escape(listed)}" + (f"<br>{first}" if first else "") + "</td>"
    else:
        detail = "<td></td>"
    score = ""
    if record:
        c = record["completeness"]
        score = f"{html.escape(c['nbo_tier'])} ({c['tier1_pct']:g}/{c['tier2_pct']:g} %)"
    store = layout.join(name, qc["store"]["path"]) if qc else layout.store("", name)
    tiff_only = qc is not None and not delivers_store(qc["store"])
    if tiff_only:
        tiff = layout.ome_tiff("", name)
        opened = f"<code>{html.escape(napari_tiff_command(tiff))}</code>"
    elif qc:
        opened = (
            f"<code>{html.escape(napari_command(store))}</code> "
            f'<a href="{html.escape(store)}/">web</a>'
        )
    else:
        opened = ""
    link = f'<a href="{html.escape(layout.qc_page("", name))}">{esc}</a>' if qc else esc
    cells = (
        f"<td>{link}</td><td data-s={rank}>{badge(state)}</td>"
        f"<td data-s={RANK[quality]}>{badge(quality)}</td>{detail}"
        f"<td data-s={RANK[metadata]}>{badge(metadata)}</td><td>{score}</td>"
        f"<td>{html.escape(_sizes(record)) if record else ''}</td><td>{opened}</td>"
    )
    return _Row(
        rank, name, f"<tr>{cells}</tr>", "failed" if failure else quality, metadata, tiff_only
    )


def skipped_summary(inventory_tsv: Path) -> str:
    """One paragraph: how many files the inventory skipped, by reason, with a link."""
    with open(inventory_tsv, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    reasons = Counter(r["reason"] for r in rows if r["status"] == "skipped")
    listed = "; ".join(f"{html.escape(r)}: {n}" for r, n in sorted(reasons.items()))
    return (
        f"<p>{len(rows)} files under the input folder; {sum(reasons.values())} skipped"
        + (f" ({listed})" if listed else "")
        + f'. Every file and its dataset: <a href="{layout.INVENTORY_TSV}">'
        + f"{layout.INVENTORY_TSV}</a>.</p>"
    )


def build_report(
    out_dir: Path,
    datasets: Sequence[str],
    *,
    failed: Sequence[FailedDataset] | None = None,
    inventory: Path | None = None,
) -> str:
    """Build the summary page for ``datasets`` (names) in ``out_dir``, as HTML text.

    Parameters
    ----------
    out_dir
        The run's output folder (``NAME/qc.json``, ``NAME/metadata.json`` are read).
    datasets
        Every dataset of the run, failed ones included.
    failed
        Datasets that did not complete, with step and reason (the run's ``failed.tsv``);
        None reads the first ``ERROR`` line of each dataset's logs instead.
    inventory
        The run's ``inventory.tsv``: skipped files are counted by reason, with a link.
    """
    names = sorted(set(datasets) | {f.name for f in failed or ()})
    by_name = {f.name: f for f in failed or ()}
    rows = sorted(
        (
            _row(
                out_dir,
                n,
                by_name.get(n) if failed is not None else failure_from_logs(out_dir, n),
            )
            for n in names
        ),
        key=lambda r: (r.rank, r.name),
    )
    states = Counter(r.state for r in rows)
    meta = Counter(r.metadata for r in rows)
    failed_count = states["failed"]
    summary = (
        f"<p>{len(rows)} datasets, {len(rows) - failed_count} converted, "
        f"{failed_count} failed.</p><p>Image quality: "
        + ", ".join(f"{badge(s)} {states[s]}" for s in ("fail", "warn", "pass") if states[s])
        + " · metadata: "
        + ", ".join(f"{badge(s)} {meta[s]}" for s in ("warn", "pass") if meta[s])
        + "</p>"
        + (skipped_summary(inventory) if inventory is not None else "")
    )
    # Stores, the OME-TIFF alone (ome_zarr: false), or both kinds (folders of two runs).
    tiffs = {r.tiff_only for r in rows if r.state != "failed"}
    help_text = (TIFF_HELP if True in tiffs else "") + (VIEWER_HELP if False in tiffs else "")
    help_text = help_text or VIEWER_HELP
    header = "".join(
        f'<th data-c="{i}" title="sort">{label}</th>'
        for i, label in enumerate(
            (
                "dataset",
                "run",
                "image QC",
                "fail / warn: checks, first reason",
                "metadata",
                "completeness (tier 1/2)",
                "size (first series)",
                "open (napari, web)",
            )
        )
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>bioingest report</title>"
        f"<style>{STYLE}th[data-c]{{cursor:pointer}}</style></head><body>"
        f"<h1>bioingest report</h1>{summary}"
        "<p class=note>Failures and QC fails first; click a column to sort. Each dataset "
        "links to its QC page (thumbnails, histograms, focus plots, every check's reason); "
        "formulas and thresholds: docs/qc.md.</p>"
        f"{help_text}<table><thead><tr>{header}</tr></thead>"
        f'<tbody id="rows">{"".join(r.html for r in rows)}</tbody></table>'
        f"<script>{SORT_SCRIPT}</script></body></html>\n"
    )


def write_report(
    out_dir: Path,
    datasets: Sequence[str],
    *,
    out: Path | None = None,
    failed: Sequence[FailedDataset] | None = None,
    inventory: Path | None = None,
) -> Path:
    """Write ``report.html`` for ``datasets`` into ``out_dir`` (or ``out``).

    See :func:`build_report` for ``failed`` and ``inventory``.
    """
    target = out or layout.report(out_dir)
    atomic.write_text(target, build_report(out_dir, datasets, failed=failed, inventory=inventory))
    return target
