"""Run-wide summary tables (TSV and Parquet) built from per-dataset records.

Every column has one declared type (:data:`INT_COLUMNS`, :data:`FLOAT_COLUMNS`, text for
the rest), whatever the records hold: tables of different runs can be pooled, and a
column that is empty in one run is still typed in its Parquet file.
"""

from __future__ import annotations

import csv
import io
import json
import math
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


#: QC measures that are real numbers, in their columns' order.
_QC_MEASURES = [
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
]
QC_COLUMNS = [
    "dataset",
    "series",
    "channel",
    "label",
    *_QC_MEASURES,
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


#: Columns of whole numbers (Parquet ``int64``).
INT_COLUMNS = frozenset(
    {
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
)
#: Columns of real numbers (Parquet ``double``; written as Python's shortest repr).
FLOAT_COLUMNS = frozenset(
    {
        "physical_size_x_um",
        "physical_size_y_um",
        "physical_size_z_um",
        "time_increment_s",
        "objective_magnification",
        "objective_na",
        "excitation_nm",
        "emission_nm",
        "exposure_s",
        *_QC_MEASURES,
        "uniformity_pct",
    }
)


def _cell(column: str, value: Any) -> int | float | str | None:
    """``value`` as its column's type; None when missing (or not a finite number)."""
    if value is None:
        return None
    if column in INT_COLUMNS:
        return int(value)
    if column in FLOAT_COLUMNS:
        number = float(value)
        return number if math.isfinite(number) else None
    return str(value)


def _columns(rows: list[dict[str, Any]], columns: list[str]) -> dict[str, list[Any]]:
    """Return the rows as typed columns."""
    return {col: [_cell(col, row.get(col)) for row in rows] for col in columns}


def _tsv(table: dict[str, list[Any]]) -> str:
    """Tab-separated text: a header, then a line per row; missing values are empty."""
    text = io.StringIO()
    writer = csv.writer(text, delimiter="\t", lineterminator="\n")
    writer.writerow(table)
    for row in zip(*table.values(), strict=True):
        writer.writerow("" if v is None else repr(v) if isinstance(v, float) else v for v in row)
    return text.getvalue()


def _parquet(table: dict[str, list[Any]], path: Path) -> None:
    """Write ``table`` to ``path`` as Parquet with the declared column types, atomically.

    The rows reach Arrow as JSON lines: building arrays from Python values imports pandas
    (0.25 s, a third of a table job), and JSON keeps every float exactly.
    """
    import pyarrow as pa
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    def kind(col: str) -> pa.DataType:
        if col in INT_COLUMNS:
            return pa.int64()
        return pa.float64() if col in FLOAT_COLUMNS else pa.string()

    schema = pa.schema([(col, kind(col)) for col in table])
    lines = "".join(
        json.dumps(dict(zip(table, row, strict=True))) + "\n"
        for row in zip(*table.values(), strict=True)
    )
    parse = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
    arrow = (
        pj.read_json(
            io.BytesIO(lines.encode()),
            read_options=pj.ReadOptions(use_threads=False),
            parse_options=parse,
        )
        if lines
        else schema.empty_table()
    )
    tmp = path.with_name(f".{path.name}.partial")
    pq.write_table(arrow, tmp)
    tmp.replace(path)


def _write(rows: list[dict[str, Any]], columns: list[str], out_dir: Path, stem: str) -> None:
    table = _columns(rows, columns)
    atomic.write_text(out_dir / f"{stem}.tsv", _tsv(table))
    _parquet(table, out_dir / f"{stem}.parquet")


def write_qc_table(reports: Iterable[Path], out_dir: Path) -> None:
    """Write ``qc.tsv`` (one row per series and channel) from ``qc.json`` files."""
    rows: list[dict[str, Any]] = []
    for path in sorted(reports):
        report = read_qc(path)
        if not is_failure(report):  # a dataset that was not converted has no rows
            rows.extend(qc_rows(report))
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out_dir / f"{layout.QC_TABLE}.tsv", _tsv(_columns(rows, QC_COLUMNS)))


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
    _write(images, IMAGE_COLUMNS, out_dir, "images")
    _write(channels, CHANNEL_COLUMNS, out_dir, "channels")


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
