"""Every real sample converts losslessly through the real workflow into valid OME-Zarr."""

from __future__ import annotations

import itertools
import re
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from bioingest.inventory import Dataset
from bioingest.java import jimport
from conftest import REAL, manifest_rows, real_datasets

pytestmark = [pytest.mark.workflow, pytest.mark.java, pytest.mark.slow]

ROWS = manifest_rows()
DIMS = re.compile(r"(\d+)x(\d+) Z(\d+) C(\d+) T(\d+)(?: rgb(\d+))?")


@cache
def datasets() -> dict[Path, Dataset]:
    """Every real file -> the dataset it belongs to."""
    return {f: d for d in real_datasets() for f in d.files}


def image_paths(root: zarr.Group, count: int) -> list[str]:
    """Group path of each series' multiscale image, in series order."""
    attrs = dict(root.attrs).get("ome", {})
    if "multiscales" in attrs:
        return [""]
    series = dict(root["OME"].attrs)["ome"]["series"]
    assert len(series) == count
    return [str(s) for s in series]


def micrometres(length: Any) -> float | None:
    """Return a Bio-Formats Length in µm, or None when absent or not a physical unit."""
    if length is None:
        return None
    value = length.value(jimport("ome.units.UNITS").MICROMETER)
    return None if value is None else float(value.doubleValue())


def validate(root: zarr.Group, layout: str, paths: list[str]) -> None:
    """Validate with ome-zarr-models (NGFF 0.5) and open with ome-zarr-py."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr_models.v05 import HCS, Image

    if layout == "plate":
        HCS.from_zarr(root)
    for p in paths:
        group = root[p] if p else root
        Image.from_zarr(group)
        location = parse_url(str(Path(root.store.root) / p))
        assert location is not None
        nodes = list(Reader(location)())
        level0 = nodes[0].data[0]
        assert tuple(level0.shape) == tuple(group["0"].shape)


@pytest.mark.parametrize("row", ROWS, ids=[r["file"] for r in ROWS])
def test_real_sample(row: dict[str, str], real_run: Path, bioformats: Any) -> None:
    path = REAL / row["file"]
    dataset = datasets()[path]
    if dataset.main != path:
        # Companion or merged file: part of exactly one dataset, never ingested on its own.
        owners = [d for d in real_datasets() if path in d.files]
        assert owners == [dataset]
        assert not (real_run / path.stem / f"{path.stem}.ome.zarr").exists() or (
            path.stem == dataset.name
        )
        return

    store = real_run / dataset.name / f"{dataset.name}.ome.zarr"
    assert (real_run / dataset.name / f"{dataset.name}.ome.xml").is_file()
    root = zarr.open_group(store, mode="r")
    assert root.metadata.zarr_format == 3
    reference = bioformats(path)
    meta = reference.metadata
    count = len(reference.series)
    assert count == int(row["series"]), "series count differs from the manifest"

    first = DIMS.match(row["dims"])
    assert first is not None
    x, y, z, c, t, _rgb = first.groups()
    assert reference.series[0].shape == (int(t), int(c), int(z), int(y), int(x))
    assert reference.series[0].dtype == row["pixel_type"]

    paths = image_paths(root, count)
    layout = "image" if paths == [""] else ("plate" if "plate" in root.attrs["ome"] else "b2r")
    for s, info in enumerate(reference.series):
        group = root[paths[s]] if paths[s] else root
        level0 = group["0"]
        assert level0.shape == info.shape
        assert level0.dtype == np.dtype(info.dtype)
        assert level0.metadata.dimension_names == ("t", "c", "z", "y", "x")
        for ti in range(info.size_t):
            for ci in range(info.size_c):
                for zi in range(info.size_z):
                    expected = reference.read_tile(s, ti, ci, zi, 0, 0, info.size_y, info.size_x)
                    np.testing.assert_array_equal(
                        level0[ti, ci, zi], expected, err_msg=f"series {s} t{ti} c{ci} z{zi}"
                    )
        multiscale = dict(group.attrs)["ome"]["multiscales"][0]
        scale = multiscale["datasets"][0]["coordinateTransformations"][0]["scale"]
        px = micrometres(meta.getPixelsPhysicalSizeX(s))
        py = micrometres(meta.getPixelsPhysicalSizeY(s))
        pz = micrometres(meta.getPixelsPhysicalSizeZ(s))
        if px is not None and py is not None:
            assert scale[4] == pytest.approx(px, rel=1e-9)
            assert scale[3] == pytest.approx(py, rel=1e-9)
            assert {a["name"]: a.get("unit") for a in multiscale["axes"]}["x"] == "micrometer"
            if pz is not None:
                assert scale[2] == pytest.approx(pz, rel=1e-9)
        else:
            assert scale[3:] == [1.0, 1.0]
        # Full resolution first; every further level halves Y and X.
        shapes = [group[d["path"]].shape for d in multiscale["datasets"]]
        assert shapes[0] == info.shape
        for a, b in itertools.pairwise(shapes):
            assert b[3:] == (-(-a[3] // 2), -(-a[4] // 2))
    validate(root, layout, paths)


def test_one_store_per_dataset(real_run: Path) -> None:
    """56 datasets from 62 files: .ids companions and DICOM folders are not ingested twice."""
    expected = sorted(d.name for d in real_datasets())
    assert len(expected) == 56
    stores = sorted(p.parent.name for p in real_run.glob("*/*.ome.zarr"))
    assert stores == expected
    assert all((real_run / n / f"{n}.ome.zarr" / "zarr.json").is_file() for n in expected)


@pytest.mark.parametrize(
    ("name", "layout", "paths"),
    [
        ("dv_toxo", "image", [""]),
        ("czi_S3_1Pos_2Mosaic_T2Z3_CH2_sm", "bioformats2raw", ["0", "1", "2"]),
        ("czi_WellD6-7_S2", "plate", ["D/6/0", "D/7/0"]),
        # Two plates in one file: no single NGFF plate fits, so every series is kept as is.
        (
            "ome-tiff_6x4y1z1t1c8b-swatch-2s2p4w2ws.ome-v-Match",
            "bioformats2raw",
            [str(i) for i in range(22)],
        ),
        ("dicom-wsi_boxes_0", "bioformats2raw", ["0", "1"]),
        ("ome-tiff_largeimg", "image", [""]),
    ],
)
def test_layout(real_run: Path, name: str, layout: str, paths: list[str]) -> None:
    store = real_run / name / f"{name}.ome.zarr"
    root = zarr.open_group(store, mode="r")
    ome = dict(root.attrs)["ome"]
    assert ome["version"] == "0.5"
    if layout == "image":
        assert "multiscales" in ome
        assert not (store / "OME").exists()
        return
    assert image_paths(root, len(paths)) == paths
    xml = (store / "OME" / "METADATA.ome.xml").read_text(encoding="utf-8")
    assert xml == (real_run / name / f"{name}.ome.xml").read_text(encoding="utf-8")
    assert xml.count("<Image ") == len(paths)
    if layout == "plate":
        plate = ome["plate"]
        assert [w["path"] for w in plate["wells"]] == sorted({p.rsplit("/", 1)[0] for p in paths})
        assert "bioformats2raw.layout" not in ome
    else:
        assert ome["bioformats2raw.layout"] == 3
        from ome_zarr_models.v05 import BioFormats2Raw

        BioFormats2Raw.from_zarr(root)
