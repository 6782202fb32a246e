"""A file that fails in convert costs one dataset: failed.tsv, run-level outputs, rerun."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from bioingest.outcomes import Failure, format_failures, read_failures
from conftest import run_workflow


def test_failed_tsv_round_trip(tmp_path: Path) -> None:
    failures = [
        Failure("a", "inventory", "x/a.czi", "empty file (0 bytes)"),
        Failure("b", "convert", "b c.tif", "corrupt file (tile 3 of plane 0)"),
    ]
    path = tmp_path / "failed.tsv"
    path.write_text(format_failures(failures), encoding="utf-8")
    assert read_failures(path) == failures


def _damaged_tiff(path: Path) -> np.ndarray:
    """Write a tiled, deflate-compressed OME-TIFF whose headers are fine but one tile is not."""
    data = np.random.default_rng(5).integers(0, 4000, (64, 64), dtype=np.uint16)
    tifffile.imwrite(path, data, ome=True, tile=(32, 32), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].dataoffsets[3]
        size = tif.pages[0].databytecounts[3]
    raw = bytearray(path.read_bytes())
    raw[offset + 2 : offset + size] = bytes(size - 2)
    path.write_bytes(bytes(raw))
    return data


@pytest.mark.workflow
@pytest.mark.java
def test_convert_failure_is_recorded_and_retried_when_fixed(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = np.arange(40 * 30, dtype=np.uint16).reshape(40, 30)
    tifffile.imwrite(inputs / "good.ome.tif", good, ome=True)
    data = _damaged_tiff(inputs / "damaged.ome.tif")
    out = tmp_path / "out"
    config = {"input_dir": inputs, "output_dir": out}
    proc = run_workflow(tmp_path / "w", config, check=False)
    console = proc.stdout + proc.stderr
    assert proc.returncode != 0
    [failure] = read_failures(out / "failed.tsv")
    assert (failure.dataset, failure.step, failure.file) == (
        "damaged",
        "convert",
        "damaged.ome.tif",
    )
    assert failure.reason.startswith("corrupt"), failure.reason
    assert f"FAILED {inputs / 'damaged.ome.tif'}: {failure.reason}" in console
    assert "Traceback" not in console
    assert not (out / "damaged" / "damaged.ome.zarr" / "zarr.json").exists()
    manifest = (out / "manifest-sha256.txt").read_text(encoding="utf-8")
    assert "good/good.ome.zarr/zarr.json" in manifest
    assert "damaged/" not in manifest
    assert (out / "summary" / "images.tsv").read_text().count("\n") == 2
    # Fixed input: the next run converts it and brings every run-level output up to date.
    tifffile.imwrite(inputs / "damaged.ome.tif", data, ome=True, tile=(32, 32), compression="zlib")
    run_workflow(tmp_path / "w", config)
    assert read_failures(out / "failed.tsv") == []
    manifest = (out / "manifest-sha256.txt").read_text(encoding="utf-8")
    assert "damaged/damaged.ome.zarr/zarr.json" in manifest
    assert (out / "summary" / "images.tsv").read_text().count("\n") == 3


@pytest.mark.workflow
@pytest.mark.java
def test_a_run_where_every_file_is_skipped_still_reports(tmp_path: Path) -> None:
    """Files still being written (all too recent) give an empty run that says why, not an error."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    tifffile.imwrite(inputs / "fresh.ome.tif", np.zeros((8, 8), np.uint8), ome=True)
    out = tmp_path / "out"
    run_workflow(tmp_path, {"input_dir": inputs, "output_dir": out, "min_file_age_s": 3600})
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "modified in the last 3600 s (may still be written): 1" in report
    assert read_failures(out / "failed.tsv") == []
    assert not (out / "fresh").exists()
