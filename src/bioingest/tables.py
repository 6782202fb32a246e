"""Run-wide summary tables (TSV and Parquet) built from per-dataset records with pandas."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bioingest import atomic, layout, metadata

INT_COLUMNS = {
    "series",
    "channel",
    "size_x",
    "size_y",
    "size_z",
    "size_c",
    "size_t",
    "significant_bits",
    "bits_used",
    "bits_available",
    "blank_planes",
    "best_focus_z",
}


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> Any:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=columns)
    for col in columns:
        if col in INT_COLUMNS:
            frame[col] = frame[col].astype("Int64")
        elif frame[col].dtype == object and col not in metadata.IMAGE_COLUMNS[:1]:
            numeric = pd.to_numeric(frame[col], errors="coerce")
            if numeric.notna().sum() == frame[col].notna().sum() and frame[col].notna().any():
                frame[col] = numeric.astype("float64")
    return frame


def _write(frame: Any, out_dir: Path, stem: str) -> None:
    tsv = frame.to_csv(sep="\t", index=False, na_rep="", lineterminator="\n")
    atomic.write_text(out_dir / f"{stem}.tsv", tsv)
    tmp = out_dir / f".{stem}.parquet.partial"
    frame.to_parquet(tmp, index=False)
    tmp.replace(out_dir / f"{stem}.parquet")


def write_qc_table(reports: Iterable[Path], out_dir: Path) -> None:
    """Write ``qc.tsv`` (one row per series and channel) from ``qc.json`` files."""
    from bioingest.qc import QC_COLUMNS, qc_rows

    rows: list[dict[str, Any]] = []
    for path in sorted(reports):
        report = json.loads(path.read_text(encoding="utf-8"))
        if "failure" not in report:  # a dataset that was not converted has no rows
            rows.extend(qc_rows(report))
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = _frame(rows, QC_COLUMNS)
    atomic.write_text(
        out_dir / f"{layout.QC_TABLE}.tsv",
        frame.to_csv(sep="\t", index=False, na_rep="", lineterminator="\n"),
    )


def write_metadata_tables(records: Iterable[Path], out_dir: Path) -> None:
    """Write ``images`` and ``channels`` tables (TSV and Parquet) into ``out_dir``.

    Parameters
    ----------
    records
        ``metadata.json`` files written by ``bioingest metadata``.
    out_dir
        Folder for ``images.tsv``, ``channels.tsv`` and their Parquet copies.
    """
    images: list[dict[str, Any]] = []
    channels: list[dict[str, Any]] = []
    for path in sorted(records):
        record = json.loads(path.read_text(encoding="utf-8"))
        if "failure" in record:  # a dataset that was not converted has no rows
            continue
        images.extend(metadata.image_rows(record))
        channels.extend(metadata.channel_rows(record))
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(_frame(images, metadata.IMAGE_COLUMNS), out_dir, "images")
    _write(_frame(channels, metadata.CHANNEL_COLUMNS), out_dir, "channels")


def write_tables(records: Iterable[Path], out_dir: Path, *, table: str | None = None) -> None:
    """Write the run's tables from ``metadata.json`` and ``qc.json`` files.

    Parameters
    ----------
    records
        ``metadata.json`` and ``qc.json`` files, told apart by name.
    out_dir
        Folder for the tables.
    table
        ``"metadata"`` or ``"qc"``: write that table, with headers only when no record is
        given (a run with no converted dataset); None writes the tables the records make.
    """
    paths = list(records)
    qc = [p for p in paths if p.name == layout.QC]
    described = [p for p in paths if p.name != layout.QC]
    if table == "qc":
        write_qc_table(qc, out_dir)
    elif table == "metadata":
        write_metadata_tables(described, out_dir)
    else:
        if described:
            write_metadata_tables(described, out_dir)
        if qc:
            write_qc_table(qc, out_dir)
