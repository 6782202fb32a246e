"""Conversion split across jobs by series: parts are disjoint and join into the same store."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import zarr

from bioingest.convert import assemble, convert
from bioingest.errors import IngestError
from bioingest.plan import split
from conftest import BIN, run_workflow

SWATCH = "ome-tiff/6x4y1z1t1c8b-swatch-2s2p4w2ws.ome-v-Match.ome.tiff"
# Dataset, file, series count: Bio-Formats multi-series and plate CZIs, a 22-series
# OME-TIFF on the tifffile path, and a single-series DeltaVision file.
SAMPLES = {
    "mosaic": ("czi/S3_1Pos_2Mosaic_T2Z3_CH2_sm.czi", 3),
    "plate": ("czi/WellD6-7_S2.czi", 2),
    "swatch": (SWATCH, 22),
    "toxo": ("dv/toxo.dv", 1),
}
PER_JOB = 2


@pytest.mark.parametrize(
    ("count", "per_part", "expected"),
    [
        (1, 1, [(0, 1)]),
        (3, 2, [(0, 2), (2, 3)]),
        (4, 2, [(0, 2), (2, 4)]),
        (2, 5, [(0, 2)]),
    ],
)
def test_split_ranges(count: int, per_part: int, expected: list[tuple[int, int]]) -> None:
    assert split(count, per_part) == expected


def manifest_without_logs(out: Path) -> list[str]:
    lines = (out / "manifest-sha256.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if "  logs/" not in line]


@pytest.mark.workflow
@pytest.mark.java
def test_split_workflow_matches_whole_conversion(real_dir: Path, tmp_path: Path) -> None:
    sheet = tmp_path / "samples.tsv"
    rows = [f"{name}\t{real_dir / file}" for name, (file, _) in SAMPLES.items()]
    sheet.write_text("dataset\tpath\n" + "\n".join(rows) + "\n", encoding="utf-8")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run_workflow(tmp_path / "w1", {"samples": sheet, "output_dir": whole})
    run_workflow(
        tmp_path / "w2",
        {
            "samples": sheet,
            "output_dir": parts,
            "split_series_above_mb": 0,
            "series_per_job": PER_JOB,
        },
    )
    assert manifest_without_logs(parts) == manifest_without_logs(whole)
    for name, (_, count) in SAMPLES.items():
        if count == 1:
            continue  # one series: nothing to split
        logs = parts / "logs" / name
        # convert writes the first part, convert_part jobs the others.
        jobs = sorted(p.name for p in logs.glob("convert_part*.log"))
        parts_count = -(-count // PER_JOB)
        assert len(jobs) == parts_count - 1, jobs
        assert (logs / "convert.log").is_file()
        assert f"{count} series from {parts_count} parts" in (logs / "assemble.log").read_text()
    assert not (parts / "intermediate").exists()
    verify = subprocess.run([str(BIN / "bioingest"), "verify", str(parts)], check=False)
    assert verify.returncode == 0


@pytest.fixture
def swatch_parts(real_dir: Path, tmp_path: Path) -> tuple[Path, list[Path]]:
    """Describe the 22-series OME-TIFF and convert it in two parts; return the JSON and parts."""
    source = real_dir / SWATCH
    described = tmp_path / "source.json"
    convert(source, source_json_path=described)
    parts = [tmp_path / "p0.zarr", tmp_path / "p1.zarr"]
    convert(source, zarr_path=parts[0], series=(0, 11))
    convert(source, zarr_path=parts[1], series=(11, 22))
    return described, parts


@pytest.mark.java
def test_assembled_parts_equal_whole_conversion(
    real_dir: Path, tmp_path: Path, swatch_parts: tuple[Path, list[Path]]
) -> None:
    described, parts = swatch_parts
    joined, whole = tmp_path / "joined.zarr", tmp_path / "whole.zarr"
    assemble(parts, source_json_path=described, zarr_path=joined)
    convert(real_dir / SWATCH, zarr_path=whole)
    a, b = zarr.open_group(joined, mode="r"), zarr.open_group(whole, mode="r")
    assert a.attrs.asdict() == b.attrs.asdict()
    assert sorted(a.array_keys(), key=int) == [str(i) for i in range(22)]
    for key in b.array_keys():
        x, y = a[key], b[key]
        assert isinstance(x, zarr.Array) and isinstance(y, zarr.Array)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x[...], y[...])


@pytest.mark.java
def test_assemble_missing_part(tmp_path: Path, swatch_parts: tuple[Path, list[Path]]) -> None:
    described, parts = swatch_parts
    target = tmp_path / "joined.zarr"
    with pytest.raises(IngestError, match=r"no part holds series 11, 12, .*, 21$"):
        assemble(parts[:1], source_json_path=described, zarr_path=target)
    assert not target.exists()
    assert len(list(zarr.open_group(parts[0], mode="r").array_keys())) == 11


@pytest.mark.java
def test_assemble_overlapping_parts(tmp_path: Path, swatch_parts: tuple[Path, list[Path]]) -> None:
    described, parts = swatch_parts
    twin = tmp_path / "twin.zarr"
    shutil.copytree(parts[0], twin)
    target = tmp_path / "joined.zarr"
    with pytest.raises(IngestError, match=r"twin.zarr: series 0 is also in \S*p0.zarr$"):
        assemble([parts[0], twin, parts[1]], source_json_path=described, zarr_path=target)
    assert not target.exists()
    assemble(parts, source_json_path=described, zarr_path=target)
    assert len(list(zarr.open_group(target, mode="r").array_keys())) == 22


@pytest.mark.java
def test_assemble_foreign_part(
    real_dir: Path, tmp_path: Path, swatch_parts: tuple[Path, list[Path]]
) -> None:
    described, parts = swatch_parts
    other = tmp_path / "other.zarr"
    convert(real_dir / "tiff" / "5channel.tif", zarr_path=other)
    target = tmp_path / "joined.zarr"
    with pytest.raises(IngestError, match=r"other.zarr: is not a part of the source"):
        assemble([parts[0], other], source_json_path=described, zarr_path=target)
    assert not target.exists()


@pytest.mark.java
@pytest.mark.parametrize(
    ("series", "message"),
    [
        ("20:23", "series 20:23 out of range (it has 22)"),
        ("3:3", "series 3:3 out of range (it has 22)"),
        ("3-5", "argument --series: expected START:STOP, got '3-5'"),
    ],
)
def test_convert_series_option_errors(
    real_dir: Path, tmp_path: Path, series: str, message: str
) -> None:
    proc = subprocess.run(
        [
            str(BIN / "bioingest"),
            "convert",
            str(real_dir / SWATCH),
            "--zarr",
            str(tmp_path / "p.zarr"),
            "--series",
            series,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (tmp_path / "p.zarr").exists()


# Runs `bioingest assemble` and SIGKILLs it at its N-th link, copy or rename: a kill -9 at
# a chosen point of the hand-over, without a hook in the code under test.
KILL_AT = """
import os, shutil, signal, sys
left = int(sys.argv[1])
def killing(call):
    def wrapped(*args, **kwargs):
        global left
        left -= 1
        if left == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        return call(*args, **kwargs)
    return wrapped
os.link, os.replace, os.rename = killing(os.link), killing(os.replace), killing(os.rename)
shutil.copyfile = killing(shutil.copyfile)
from bioingest.cli import main
sys.exit(main(sys.argv[2:]))
"""


def store_files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in store.rglob("*") if p.is_file()}


@pytest.mark.java
@pytest.mark.parametrize("seed", range(5))
def test_assemble_killed_leaves_parts_whole(
    tmp_path: Path, swatch_parts: tuple[Path, list[Path]], seed: int
) -> None:
    """Kill -9 during assemble: the parts are unchanged and nothing looks complete.

    The rerun joins every series with the parts' exact pixels.
    """
    described, parts = swatch_parts
    before = {part: store_files(part) for part in parts}
    target = tmp_path / "joined.zarr"
    args = [*map(str, parts), "--source-json", str(described), "--zarr", str(target)]
    kill_at = int(np.random.default_rng(seed).integers(1, 23))
    killed = subprocess.run(
        [str(BIN / "python"), "-c", KILL_AT, str(kill_at), "assemble", *args],
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -9, killed.stderr
    assert not target.exists()
    assert {part: store_files(part) for part in parts} == before
    subprocess.run([str(BIN / "bioingest"), "assemble", *args], check=True)
    joined = zarr.open_group(target, mode="r")
    assert sorted(joined.array_keys(), key=int) == [str(i) for i in range(22)]
    for part in parts:
        group = zarr.open_group(part, mode="r")
        for key in group.array_keys():
            np.testing.assert_array_equal(joined[key][...], group[key][...])
