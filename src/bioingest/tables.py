"""Run-wide summary tables (TSV and Parquet) built from per-dataset records with pandas."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bioingest import atomic, layout
from bioingest.qc_checks import overall
from bioingest.records import MetadataRecord, QCReport, is_failure, read_metadata, read_qc, value_of

IMAGE_COLUMNS = [
    "dataset",
    "source_file",
    "series",
    "name",
    "reader_format",
    "size_x",
    "size_y",
    "size_z",
    "size_c",
    "size_t",
    "pixel_type",
    "physical_size_x_um",
    "physical_size_y_um",
    "physical_size_z_um",
    "time_increment_s",
    "acquisition_date",
    "instrument",
    "objective_model",
    "objective_magnification",
    "objective_na",
    "immersion",
    "significant_bits",
]
CHANNEL_COLUMNS = [
    "dataset",
    "series",
    "channel",
    "name",
    "excitation_nm",
    "emission_nm",
    "fluor",
    "color",
    "illumination_type",
    "contrast_method",
    "exposure_s",
    "detector",
]


def image_rows(record: MetadataRecord) -> list[dict[str, Any]]:
    """One tidy row per series (``IMAGE_COLUMNS``)."""
    rows = []
    for s in record["series"]:
        row: dict[str, Any] = {
            "dataset": record["dataset"],
            "source_file": record["source_file"],
            "reader_format": record["reader_format"],
        }
        row.update({k: value_of(s, k) for k in IMAGE_COLUMNS if k in s})
        rows.append({k: row.get(k) for k in IMAGE_COLUMNS})
    return rows


def channel_rows(record: MetadataRecord) -> list[dict[str, Any]]:
    """One tidy row per channel (``CHANNEL_COLUMNS``)."""
    rows = []
    for s in record["series"]:
        for ch in s["channels"]:
            row: dict[str, Any] = {"dataset": record["dataset"], "series": s["series"]["value"]}
            row.update({k: value_of(ch, k) for k in CHANNEL_COLUMNS if k in ch})
            rows.append({k: row.get(k) for k in CHANNEL_COLUMNS})
    return rows


QC_COLUMNS = [
    "dataset",
    "series",
    "channel",
    "label",
    "min",
    "max",
    "mean",
    "std",
    "median",
    "p0_1",
    "p99_9",
    "saturated_fraction",
    "zero_fraction",
    "foreground_coverage",
    "foreground_zero_fraction",
    "empty_fraction",
    "bits_used",
    "bits_available",
    "blank_planes",
    "best_focus_z",
    "uniformity_pct",
    "fidelity",
    "status",
    "problems",
    "metadata",
]
#: Columns copied from a channel of qc.json as they are.
_CHANNEL_COLUMNS = QC_COLUMNS[3:21]


def qc_rows(qc: QCReport) -> list[dict[str, Any]]:
    """One tidy row per series and channel (``QC_COLUMNS``).

    ``problems`` lists the image checks that warn or fail, ``metadata`` the series'
    metadata flags.
    """
    rows = []
    for s in qc["series"]:
        for ch in s["channels"]:
            problems = [
                f"{k}:{v}"
                for k, v in {**s["checks"], **ch["checks"]}.items()
                if v in ("warn", "fail")
            ]
            rows.append(
                {
                    "dataset": qc["dataset"],
                    "series": s["series"],
                    "channel": ch["channel"],
                    **{k: value for k, value in ch.items() if k in _CHANNEL_COLUMNS},
                    "blank_planes": len(ch["blank_planes"]),
                    "fidelity": s["checks"]["fidelity"],
                    "status": overall([ch["status"], *s["checks"].values()]),
                    "problems": ";".join(problems),
                    "metadata": ";".join(s["metadata"]["flags"]),
                }
            )
    return [{k: r.get(k) for k in QC_COLUMNS} for r in rows]


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
        elif frame[col].dtype == object and col not in IMAGE_COLUMNS[:1]:
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
    rows: list[dict[str, Any]] = []
    for path in sorted(reports):
        report = read_qc(path)
        if not is_failure(report):  # a dataset that was not converted has no rows
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
        record = read_metadata(path)
        if is_failure(record):  # a dataset that was not converted has no rows
            continue
        images.extend(image_rows(record))
        channels.extend(channel_rows(record))
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(_frame(images, IMAGE_COLUMNS), out_dir, "images")
    _write(_frame(channels, CHANNEL_COLUMNS), out_dir, "channels")


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
