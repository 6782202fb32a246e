"""The pyramidal OME-TIFF delivered alone (``ome_zarr: false``).

The store is then an intermediate, gone after the run; the OME-TIFF is the image the
manifest, the BioImage Archive list, the pages and ``verify --pixels`` deal with.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import tifffile

from bioingest.checksum import read_manifest
from bioingest.schemas import load_schema
from conftest import BIN, run_workflow

pytestmark = [pytest.mark.workflow, pytest.mark.java]

FAKE = "multi&series=2&sizeX=64&sizeY=48&sizeC=2.fake"
#: The dataset name the inventory gives the .fake file.
MULTI = "multi_series_2_sizeX_64_sizeY_48_sizeC_2"


@pytest.fixture(scope="module")
def alone(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    """Run with ``ome_zarr=False ome_tiff=True``; return inputs, output folder, Z-stack."""
    base = tmp_path_factory.mktemp("alone")
    inputs, out = base / "in", base / "out"
    inputs.mkdir()
    stack = np.random.default_rng(3).integers(0, 4000, (2, 3, 200, 300), dtype=np.uint16)
    tifffile.imwrite(inputs / "stack.ome.tif", stack, ome=True, metadata={"axes": "CZYX"})
    (inputs / FAKE).touch()
    config = {
        "input_dir": inputs,
        "output_dir": out,
        "ome_zarr": False,
        "ome_tiff": True,
        # Two levels for the 200 x 300 stack.
        "chunk_size": 128,
    }
    run_workflow(base / "work", config)
    return inputs, out, stack


def _names(out: Path) -> list[str]:
    return sorted(p.parent.name for p in out.glob("*/metadata.json"))


def _tiff_level0(path: Path) -> list[np.ndarray]:
    """Level 0 of every series of an OME-TIFF, as (T, C, Z, Y, X) by its OME-XML."""
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        arrays = []
        for series in tif.series:
            shape = dict(zip(series.get_axes(False), series.get_shape(False), strict=True))
            arrays.append(series.asarray().reshape([shape.get(a, 1) for a in "TCZYX"]))
        return arrays


def _verify(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "bioingest"), "verify", str(out), "--pixels"],
        capture_output=True,
        text=True,
        check=False,
    )


def test_no_store_is_left_and_each_dataset_has_its_ome_tiff(
    alone: tuple[Path, Path, np.ndarray],
) -> None:
    _, out, _ = alone
    assert _names(out) == [MULTI, "stack"]
    assert list(out.rglob("*.ome.zarr")) == []
    for name in _names(out):
        assert (out / name / f"{name}.ome.tif").is_file()
        qc = json.loads((out / name / "qc.json").read_text(encoding="utf-8"))
        assert qc["status"] != "fail" and qc["store"]["delivered"] is False
        jsonschema.validate(qc, load_schema("qc.schema.json"))
        record = json.loads((out / name / "metadata.json").read_text(encoding="utf-8"))
        jsonschema.validate(record, load_schema("metadata.schema.json"))


def test_the_ome_tiff_holds_the_source_pixels(
    alone: tuple[Path, Path, np.ndarray], bioformats: Any
) -> None:
    inputs, out, stack = alone
    (level0,) = _tiff_level0(out / "stack" / "stack.ome.tif")
    np.testing.assert_array_equal(level0, stack[np.newaxis])
    source = bioformats(inputs / FAKE)
    fake = _tiff_level0(out / MULTI / f"{MULTI}.ome.tif")
    assert len(fake) == len(source.series) == 2
    for info, level in zip(source.series, fake, strict=True):
        t, c, z, y, x = info.shape
        assert level.shape == (t, c, z, y, x)
        for ti in range(t):
            for ci in range(c):
                for zi in range(z):
                    want = source.read_tile(info.index, ti, ci, zi, 0, 0, y, x)
                    np.testing.assert_array_equal(level[ti, ci, zi], want)
    with tifffile.TiffFile(out / "stack" / "stack.ome.tif") as tif:
        assert len(tif.series[0].levels) == 2


def test_the_manifest_and_bia_list_name_the_ome_tiff_and_no_store(
    alone: tuple[Path, Path, np.ndarray],
) -> None:
    _, out, _ = alone
    manifest = read_manifest(out / "manifest-sha256.txt")
    assert [r for r in manifest if ".ome.zarr" in r or r.startswith("intermediate/")] == []
    lines = (out / "bia-file-list.tsv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]
    images = sorted(r["Files"] for r in rows if r["Type"] == "image")
    assert images == [f"{MULTI}/{MULTI}.ome.tif", "stack/stack.ome.tif"]
    assert {r["Format"] for r in rows if r["Type"] == "image"} == {"OME-TIFF"}
    for row in rows:
        assert row["Files"] in manifest
    for name in _names(out):
        assert f"{name}/{name}.ome.tif" in manifest
    crate = json.loads((out / "ro-crate-metadata.json").read_text(encoding="utf-8"))
    ids = {e["@id"] for e in crate["@graph"]}
    assert "stack/stack.ome.tif" in ids and not [i for i in ids if ".ome.zarr" in i]
    root = next(e for e in crate["@graph"] if e["@id"] == "./")
    assert "to pyramidal OME-TIFF by" in root["description"]


def test_the_pages_say_how_to_open_the_ome_tiff(alone: tuple[Path, Path, np.ndarray]) -> None:
    _, out, _ = alone
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "<code>napari stack/stack.ome.tif</code>" in report
    assert "napari-ome-zarr" not in report
    page = (out / "stack" / "qc.html").read_text(encoding="utf-8")
    assert "<code>napari stack/stack.ome.tif</code>" in page and ".ome.zarr/" not in page


def test_a_rerun_has_nothing_to_do(alone: tuple[Path, Path, np.ndarray]) -> None:
    inputs, out, _ = alone
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    config = {
        "input_dir": inputs,
        "output_dir": out,
        "ome_zarr": False,
        "ome_tiff": True,
        "chunk_size": 128,
    }
    # The intermediate store is gone: nothing is rebuilt for it.
    run_workflow(out.parent / "work", config)
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after.keys() == before.keys()
    changed = [p for p in before if before[p] != after[p] and "logs" not in p.parts]
    assert changed == []


def test_verify_pixels_checks_the_ome_tiff(
    alone: tuple[Path, Path, np.ndarray], tmp_path: Path
) -> None:
    _, out, _ = alone
    proc = _verify(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    tiff = copy / "stack" / "stack.ome.tif"
    # Plane 0 takes the tiles of plane 1: still a valid file, other pixels.
    with tifffile.TiffFile(tiff, mode="r+b") as tif:
        first, second = tif.pages[0], tif.pages[1]
        assert isinstance(first, tifffile.TiffPage) and isinstance(second, tifffile.TiffPage)
        for tag in ("TileOffsets", "TileByteCounts"):
            first.tags[tag].overwrite(second.tags[tag].value)
    with tifffile.TiffFile(tiff) as tif:
        page = tif.pages[0]
        assert isinstance(page, tifffile.TiffPage)
        assert page.shape == (200, 300)
    proc = _verify(copy)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert "pixels changed: stack series 0" in lines
    assert "changed: stack/stack.ome.tif" in lines
    assert not [line for line in lines if MULTI in line]


def test_a_failed_dataset_gets_a_note_and_the_others_are_delivered(tmp_path: Path) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    tifffile.imwrite(inputs / "good.ome.tif", np.ones((40, 30), np.uint16), ome=True)
    damaged = inputs / "damaged.ome.tif"
    data = np.random.default_rng(5).integers(0, 4000, (64, 64), dtype=np.uint16)
    tifffile.imwrite(damaged, data, ome=True, tile=(32, 32), compression="zlib")
    with tifffile.TiffFile(damaged) as tif:
        offset, size = tif.pages[0].dataoffsets[3], tif.pages[0].databytecounts[3]
    raw = bytearray(damaged.read_bytes())
    raw[offset + 2 : offset + size] = bytes(size - 2)
    damaged.write_bytes(bytes(raw))
    config = {"input_dir": inputs, "output_dir": out, "ome_zarr": False, "ome_tiff": True}
    proc = run_workflow(tmp_path / "work", config, check=False)
    # Bad input fails its dataset, not the run: every run-level output is written.
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert (
        (out / "failed.tsv")
        .read_text(encoding="utf-8")
        .splitlines()[1]
        .startswith("damaged\tconvert\t")
    )
    note = (out / "damaged" / "damaged.ome.tif").read_text(encoding="utf-8")
    assert note.startswith("Not converted (convert): corrupt")
    manifest = read_manifest(out / "manifest-sha256.txt")
    assert "good/good.ome.tif" in manifest
    assert not [r for r in manifest if r.startswith("damaged/") or ".ome.zarr" in r]
    assert list(out.rglob("*.ome.zarr")) == []
    assert _verify(out).returncode == 0


def test_nothing_to_deliver_is_one_config_error(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    tifffile.imwrite(inputs / "plane.tif", np.zeros((8, 8), np.uint8))
    proc = run_workflow(
        tmp_path / "work",
        {"input_dir": inputs, "output_dir": tmp_path / "out", "ome_zarr": False},
        check=False,
    )
    assert proc.returncode == 1
    assert not (tmp_path / "out").exists()
    assert (
        "config: ome_zarr false needs an OME-TIFF (ome_tiff true, or a target that writes "
        "one): nothing would be delivered"
    ) in proc.stderr
    assert "Traceback" not in proc.stderr
