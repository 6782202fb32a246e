"""Pyramid levels: downsampling methods, level plans, NGFF 0.4 output and label images."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import zarr

from bioingest import ngff
from bioingest.errors import IngestError
from bioingest.levels import downsample, level_shapes
from bioingest.pyramid import StoreOptions
from bioingest.store import image_paths

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


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "uint32", "int32"])
def test_integer_mean_rounds_half_to_even_over_the_whole_range(dtype: str) -> None:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(5)
    # Full range, extremes included, and a narrow range with many exact halves.
    wide = rng.integers(info.min, info.max, (64, 64), dtype=dtype, endpoint=True)
    wide[:2, :2] = info.max
    wide[2:4, :2] = info.min
    narrow = rng.integers(info.min, info.min + 4, (64, 64), dtype=dtype, endpoint=True)
    for block in (wide, narrow):
        quads = block.reshape(32, 2, 32, 2).astype(np.float64).sum(axis=(1, 3)) / 4
        np.testing.assert_array_equal(downsample(block, "mean"), np.rint(quads).astype(dtype))


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


@pytest.fixture(scope="module")
def ngff04(target_runs: dict[str, Path]) -> tuple[Path, Path]:
    return target_runs["0.4"], target_runs["0.5"]


def _images(store: Path) -> list[Any]:
    root = zarr.open_group(store, mode="r")
    return [root[p] if p else root for p in image_paths(root)]


@pytest.mark.workflow
@pytest.mark.java
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


@pytest.mark.workflow
@pytest.mark.java
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


@pytest.mark.workflow
@pytest.mark.java
@pytest.mark.parametrize("name", ["toxo", "scenes", "plate"])
def test_qupath_target_writes_04_with_blosc_and_the_omero_block(
    ngff04: tuple[Path, Path], name: str
) -> None:
    out04, out05 = ngff04
    for image, image05 in zip(
        _images(out04 / name / f"{name}.ome.zarr"),
        _images(out05 / name / f"{name}.ome.zarr"),
        strict=True,
    ):
        level = image["0"]
        # Blosc-zstd: the Java Zarr v2 readers decode Blosc but not bare zstd.
        assert level.metadata.compressor.get_config() == {
            "id": "blosc",
            "cname": "zstd",
            "clevel": 5,
            "shuffle": 1,
            "blocksize": 0,
        }
        size_y, size_x = level.shape[3:]
        assert level.metadata.chunks == (1, 1, 1, min(128, size_y), min(128, size_x))
        omero04 = dict(image.attrs)["omero"]
        assert omero04 == dict(image05.attrs)["ome"]["omero"]
        assert omero04["channels"][0]["window"]["end"] == float(level[:, 0].max())


@pytest.mark.workflow
@pytest.mark.java
@pytest.mark.parametrize("name", ["toxo", "scenes", "plate"])
@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_stores_open_in_ome_zarr_py(ngff04: tuple[Path, Path], name: str, version: str) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    out = dict(zip(["0.4", "0.5"], ngff04, strict=True))[version]
    store = out / name / f"{name}.ome.zarr"
    for path in image_paths(zarr.open_group(store, mode="r")):
        location = parse_url(store / path if path else store)
        assert location is not None and location.version == version
        node = next(iter(Reader(location)()))
        image = zarr.open_group(store / path if path else store, mode="r")
        levels = [np.asarray(level) for level in node.data]
        assert len(levels) == len(list(image.array_keys()))
        np.testing.assert_array_equal(levels[0], image["0"][:])
        omero = _omero(image)
        assert node.metadata["channel_names"] == [c["label"] for c in omero["channels"]]
        assert node.metadata["contrast_limits"] == [
            [c["window"]["start"], c["window"]["end"]] for c in omero["channels"]
        ]


def _omero(image: zarr.Group) -> dict[str, Any]:
    attrs = dict(image.attrs)
    omero: dict[str, Any] = attrs.get("ome", attrs)["omero"]
    return omero


@pytest.mark.workflow
@pytest.mark.java
@pytest.mark.parametrize("name", ["toxo", "scenes", "plate"])
@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_tensorstore_reads_level_0_of_every_series_equal_to_the_source(
    ngff04: tuple[Path, Path], real_dir: Path, bioformats: Any, name: str, version: str
) -> None:
    import tensorstore as ts

    from conftest import LAYOUT_SAMPLES

    out = dict(zip(["0.4", "0.5"], ngff04, strict=True))[version]
    store = out / name / f"{name}.ome.zarr"
    reader = bioformats(real_dir / LAYOUT_SAMPLES[name][0])
    paths = image_paths(zarr.open_group(store, mode="r"))
    assert len(paths) == len(reader.series)
    for info, path in zip(reader.series, paths, strict=True):
        array = ts.open(
            {
                # Neuroglancer's drivers: zarr3 for Zarr v3 (sharded), zarr for Zarr v2.
                "driver": "zarr3" if version == "0.5" else "zarr",
                "kvstore": {"driver": "file", "path": str(store / path / "0")},
            },
            open=True,
            read=True,
        ).result()
        assert tuple(array.shape) == info.shape
        pixels = array.read().result()
        t, c, z, y, x = info.shape
        for ti in range(t):
            for ci in range(c):
                for zi in range(z):
                    np.testing.assert_array_equal(
                        pixels[ti, ci, zi], reader.read_tile(info.index, ti, ci, zi, 0, 0, y, x)
                    )


@pytest.mark.parametrize(("version", "zarr_format"), [("0.4", 2), ("0.5", 3)])
def test_metadata_that_does_not_validate_is_one_clear_error(
    tmp_path: Path, version: ngff.NgffVersion, zarr_format: Literal[2, 3]
) -> None:
    group = zarr.open_group(tmp_path / "bad.zarr", mode="w", zarr_format=zarr_format)
    # Four dimensions for five axes: ome-zarr-models refuses it as the store is written.
    group.create_array("0", shape=(1, 1, 4, 4), dtype="uint8", chunks=(1, 1, 4, 4))
    with pytest.raises(IngestError) as caught:
        ngff.write_multiscale(
            group,
            name="bad",
            level_paths=["0"],
            level_factors=[(1, 1)],
            physical_size_um=(1.0, 1.0, None),
            time_increment_s=None,
            method="mean",
            omero=ngff.omero(
                channels=[("a", "FFFFFF")], ranges=[(0, 1)], dtype=np.dtype("uint8"), default_z=0
            ),
            version=version,
        )
    assert caught.value.path == str(tmp_path / "bad.zarr")
    assert caught.value.problem.startswith(
        f"NGFF {version} image metadata does not validate: Value error, The multiscale "
        "metadata has 5 axes which does not match the dimensionality of the array"
    )
