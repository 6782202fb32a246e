"""Which datasets of a run failed, at which step and why (``OUT/failed.tsv``).

A dataset fails in the inventory (no reader can open it) or in ``convert`` (its pixels
cannot be read: a corrupt tile, a truncated plane). Both are properties of the input, so
they are recorded as outcomes and the run-level outputs go on for every other dataset;
the file is retried once it changes. Anything else (a full disk, a kill, a time limit)
fails the job itself, and Snakemake retries it on the next run.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bioingest import atomic, layout
from bioingest.records import (
    FailureReason,
    failing_checks,
    failure_json,
    is_failure,
    read_qc,
    read_source,
)

COLUMNS = ("dataset", "step", "file", "reason")


@dataclass(frozen=True)
class Failure:
    """One failed dataset."""

    dataset: str
    step: str
    file: str
    reason: str


def collect(
    inventory_json: Path, described: Iterable[Path], *, qc_reports: Iterable[Path] = ()
) -> list[Failure]:
    """Collect failures recorded by the inventory and by ``convert`` (``{dataset}.source.json``).

    With ``qc_fail_policy: stop``, also the datasets whose QC failed (``qc_reports``).
    """
    data = json.loads(inventory_json.read_text(encoding="utf-8"))
    failures = [
        Failure(d["name"], "inventory", d["main"], d["failure"])
        for d in data["datasets"]
        if d["failure"]
    ]
    mains = {d["name"]: d["main"] for d in data["datasets"]}
    for path in described:
        record = read_source(path)
        if is_failure(record):
            failure = record["failure"]
            name = layout.name_of_source_json(path)
            failures.append(Failure(name, failure["step"], mains.get(name, ""), failure["reason"]))
    for path in qc_reports:
        report = read_qc(path)
        if not is_failure(report) and report["status"] == "fail":
            name = layout.name_of_record(path)
            reason = "QC failed: " + ", ".join(failing_checks(report, "fail"))
            failures.append(Failure(name, "qc", mains.get(name, ""), reason))
    return sorted(failures, key=lambda f: f.dataset)


def format_failures(failures: Iterable[Failure]) -> str:
    """``failed.tsv``: a header, then one row per failed dataset."""
    lines = ["\t".join(COLUMNS)]
    for f in failures:
        # Plain TSV: no quoting, so no tab or line break inside a field.
        fields = (f.dataset, f.step, f.file, f.reason)
        lines.append("\t".join(" ".join(x.split()) for x in fields))
    return "\n".join(lines) + "\n"


def write_failures(path: Path, failures: Iterable[Failure]) -> None:
    """Write ``failed.tsv`` atomically."""
    atomic.write_text(path, format_failures(failures))


def read_failures(path: Path) -> list[Failure]:
    """Rows of ``failed.tsv``."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [Failure(**row) for row in rows]


def recorded_failure(source_json: Path | None) -> FailureReason | None:
    """Return the failure ``convert`` recorded in ``{dataset}.source.json``, if any."""
    if source_json is None or not source_json.is_file():
        return None
    record = read_source(source_json)
    return record["failure"] if is_failure(record) else None


def failure_record(dataset: str, failure: FailureReason) -> str:
    """Return the JSON a later stage writes for a dataset whose conversion failed."""
    return failure_json(dataset, failure)


def write_failed_store(store: Path, failure: FailureReason) -> None:
    """Write a store folder with only a note in it: what a reader opening it should know."""
    with atomic.atomic_dir(store) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        layout.not_converted(tmp).write_text(
            f"Not converted ({failure['step']}): {failure['reason']}\n"
            f"This folder holds no image; see {layout.FAILED} in the output folder.\n",
            encoding="utf-8",
        )


def write_failed_file(path: Path, failure: FailureReason) -> None:
    """Write a note where a file image (``NAME.ome.tif``) would be: it holds no image.

    TIFF readers refuse it (it is text, not a TIFF); the manifest and the BioImage Archive
    list leave the dataset out, as every file of a dataset ``failed.tsv`` lists.
    """
    atomic.write_text(
        path,
        f"Not converted ({failure['step']}): {failure['reason']}\n"
        f"This file holds no image; see {layout.FAILED} in the output folder.\n",
    )
