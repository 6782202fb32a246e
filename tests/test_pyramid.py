"""Pyramid levels: downsampling methods, level plans, NGFF 0.4 output and label images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from bioingest.checksum import image_paths
from bioingest.pyramid import StoreOptions, downsample, level_shapes
from conftest import run_workflow

DTYPES = ["uint8", "uint16", "int16", "uint32", "float32", "float64"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_mean_keeps_dtype_and_rounds(dtype: str) -> None:
    block = np.array([[1, 2, 5], [2, 2, 7], [9, 9, 3]], dtype=dtype)
    out = downsample(block, "mean")
    assert out.dtype == np.dtype(dtype)
    # Odd edges repeat the last row/column: (5+5+7+7)/4 = 6, (9+9+9+9)/4 = 9, (3*4)/4 = 3.
    if np.issubdtype(np.dtype(dtype), np.integer):
        assert out.tolist() == [[2, 6], [9, 3]]  # 1.75 rounds to 2
    else:
        assert out.tolist() == [[1.75, 6.0], [9.0, 3.0]]


@pytest.mark.parametrize("dtype", DTYPES)
def test_nearest_and_mode_never_invent_values(dtype: str) -> None:
    block = np.array([[4, 4, 1, 2], [4, 7, 3, 3], [5, 6, 8, 8], [6, 5, 8, 9]], dtype=dtype)
    assert downsample(block, "nearest").tolist() == [[4, 1], [5, 8]]
    # Most frequent of each 2x2; ties go to the first in row-major order.
    assert downsample(block, "mode").tolist() == [[4, 3], [5, 8]]
    assert downsample(block, "mode").dtype == np.dtype(dtype)


@pytest.mark.parametrize(
    ("shape", "opts", "expected"),
    [
        ((512, 700), StoreOptions(chunk_size=1024), [(512, 700)]),
        (
            (5000, 3000),
            StoreOptions(chunk_size=1024),
            [(5000, 3000), (2500, 1500), (1250, 750), (625, 375)],
        ),
        ((30000, 200), StoreOptions(chunk_size=1024, min_size=64), [(30000, 200), (15000, 100)]),
        (
            (4096, 4096),
            StoreOptions(chunk_size=256, min_size=1000),
            [(4096, 4096), (2048, 2048), (1024, 1024)],
        ),
    ],
)
def test_level_shapes(
    shape: tuple[int, int], opts: StoreOptions, expected: list[tuple[int, int]]
) -> None:
    assert level_shapes(*shape, opts) == expected


def _sheet(folder: Path, rows: dict[str, tuple[Path, str]]) -> Path:
    sheet = folder / "samples.tsv"
    lines = ["dataset\tpath\tpyramid_method"]
    lines += [f"{name}\t{path}\t{method}" for name, (path, method) in rows.items()]
    sheet.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return sheet


@pytest.fixture(scope="module")
def ngff04(tmp_path_factory: pytest.TempPathFactory, real_dir: Path) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("ngff")
    rows = {
        "toxo": (real_dir / "dv" / "toxo.dv", ""),
        "scenes": (real_dir / "czi" / "S3_1Pos_2Mosaic_T2Z3_CH2_sm.czi", ""),
        "plate": (real_dir / "czi" / "WellD6-7_S2.czi", ""),
        "labels": (real_dir / "tiff" / "3d_monolayer_xy1_ch2_labels.tiff", "nearest"),
    }
    sheet = _sheet(base, rows)
    outs = {}
    for version in ("0.4", "0.5"):
        out = base / f"out{version}"
        run_workflow(
            base / f"w{version}",
            {"samples": sheet, "output_dir": out, "ngff_version": version, "chunk_size": 128},
        )
        outs[version] = out
    return outs["0.4"], outs["0.5"]


def _images(store: Path) -> list[Any]:
    root = zarr.open_group(store, mode="r")
    return [root[p] if p else root for p in image_paths(root)]


@pytest.mark.parametrize("name", ["toxo", "scenes", "plate", "labels"])
def test_ngff_04_is_zarr_v2_and_valid(ngff04: tuple[Path, Path], name: str) -> None:
    from ome_zarr_models import v04

    out04, out05 = ngff04
    store = out04 / name / f"{name}.ome.zarr"
    assert (store / ".zgroup").is_file() and not (store / "zarr.json").exists()
    root = zarr.open_group(store, mode="r")
    if name == "plate":
        v04.HCS.from_zarr(root)
    if name == "scenes":
        assert dict(root.attrs)["bioformats2raw.layout"] == 3
        v04.BioFormats2Raw.from_zarr(root)
    for image, image05 in zip(
        _images(store), _images(out05 / name / f"{name}.ome.zarr"), strict=True
    ):
        v04.Image.from_zarr(image)
        assert image["0"].metadata.dimension_separator == "/"
        assert dict(image.attrs)["multiscales"][0]["version"] == "0.4"
        for level in dict(image.attrs)["multiscales"][0]["datasets"]:
            np.testing.assert_array_equal(image[level["path"]][:], image05[level["path"]][:])


def test_label_image_keeps_label_values(ngff04: tuple[Path, Path]) -> None:
    _, out05 = ngff04
    (image,) = _images(out05 / "labels" / "labels.ome.zarr")
    multiscale = dict(image.attrs)["ome"]["multiscales"][0]
    assert multiscale["type"] == "nearest"
    assert len(multiscale["datasets"]) >= 2
    level0 = image["0"][:]
    level1 = image["1"][:]
    assert set(np.unique(level1)) <= set(np.unique(level0))
    np.testing.assert_array_equal(level1, level0[..., ::2, ::2])
