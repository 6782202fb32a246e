"""Pyramidal OME-TIFF: pixel-equal round trips, the complete OME-XML, identical bytes.

The OME-TIFF round-trips pixel-equal through Bio-Formats and tifffile, keeps the complete
OME-XML, and is byte-identical between runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr

from bioingest import omexml
from bioingest.ometiff import layout_xml
from bioingest.store import image_paths
from conftest import run_workflow

BIN = Path(sys.executable).parent
NAMES = ["toxo", "scenes", "plate"]


def _levels(store: Path) -> list[list[np.ndarray]]:
    root = zarr.open_group(store, mode="r")
    out = []
    for path in image_paths(root):
        group = root[path] if path else root
        assert isinstance(group, zarr.Group)
        keys = sorted(group.array_keys(), key=int)
        out.append([np.asarray(group[k][:]) for k in keys])
    return out


@pytest.mark.workflow
@pytest.mark.java
def test_only_the_targets_that_want_it_get_an_ome_tiff(target_runs: dict[str, Path]) -> None:
    for name in NAMES:
        assert (target_runs["0.4"] / name / f"{name}.ome.tif").is_file()
        assert not (target_runs["0.5"] / name / f"{name}.ome.tif").exists()
    manifest = (target_runs["0.4"] / "manifest-sha256.txt").read_text(encoding="utf-8")
    assert "  toxo/toxo.ome.tif\n" in manifest


@pytest.mark.workflow
@pytest.mark.java
@pytest.mark.parametrize("name", NAMES)
def test_tifffile_reads_every_level_of_every_series(
    target_runs: dict[str, Path], name: str
) -> None:
    folder = target_runs["0.4"] / name
    expected = _levels(folder / f"{name}.ome.zarr")
    with tifffile.TiffFile(folder / f"{name}.ome.tif") as tif:
        assert tif.is_ome and tif.is_bigtiff
        assert len(tif.series) == len(expected)
        for series, levels in zip(tif.series, expected, strict=True):
            assert len(series.levels) == len(levels)
            for level, want in zip(series.levels, levels, strict=True):
                np.testing.assert_array_equal(level.asarray().reshape(want.shape), want)
            page = series.pages[0]
            assert page.is_tiled and page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE


@pytest.mark.workflow
@pytest.mark.java
@pytest.mark.parametrize("name", NAMES)
def test_bioformats_reads_the_same_pixels_pyramid_and_metadata(
    target_runs: dict[str, Path], bioformats: Any, name: str
) -> None:
    folder = target_runs["0.4"] / name
    expected = _levels(folder / f"{name}.ome.zarr")
    reader = bioformats(folder / f"{name}.ome.tif")
    assert reader.format_name == "OME-TIFF"
    assert len(reader.series) == len(expected)
    raw = reader._reader
    for info, levels in zip(reader.series, expected, strict=True):
        t, c, z, y, x = levels[0].shape
        assert info.shape == (t, c, z, y, x)
        for ti in range(t):
            for ci in range(c):
                for zi in range(z):
                    np.testing.assert_array_equal(
                        reader.read_tile(info.index, ti, ci, zi, 0, 0, y, x),
                        levels[0][ti, ci, zi],
                    )
        raw.setSeries(info.index)
        assert raw.getResolutionCount() == len(levels)
    # The reader's own metadata survives: channel names, physical sizes, plates.
    source = omexml.parse((folder / f"{name}.ome.xml").read_text(encoding="utf-8"))
    meta = reader.metadata
    for i, image in enumerate(omexml.children(source, "Image")):
        pixels = omexml.children(image, "Pixels")[0]
        assert str(meta.getImageName(i)) == image.get("Name")
        for k, channel in enumerate(omexml.children(pixels, "Channel")):
            name_k = meta.getChannelName(i, k)
            assert (None if name_k is None else str(name_k)) == channel.get("Name")
        size = meta.getPixelsPhysicalSizeX(i)
        if pixels.get("PhysicalSizeX") is not None:
            assert float(size.value()) == pytest.approx(float(pixels.get("PhysicalSizeX")))
    assert meta.getPlateCount() == len(omexml.children(source, "Plate"))


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory: pytest.TempPathFactory, real_dir: Path) -> Path:
    """Run the default target (NGFF 0.5) with ``ome_tiff=True``; return the output folder.

    The inputs are colour pixels, 22 tiny series and a FLIM file with 16 channels.
    """
    base = tmp_path_factory.mktemp("odd")
    out = base / "out"
    sheet = base / "samples.tsv"
    rows = {
        "rgb": "tiff/Fluorescence_RGB.tif",
        "swatch": "ome-tiff/6x4y1z1t1c8b-swatch-2s2p4w2ws.ome-v-Match.ome.tiff",
        "flim": "ome-tiff/mini-flim-moduloC.ome.tiff",
    }
    lines = ["dataset\tpath", *(f"{n}\t{real_dir / p}" for n, p in rows.items())]
    sheet.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run_workflow(base / "work", {"samples": sheet, "output_dir": out, "ome_tiff": True})
    return out


@pytest.mark.parametrize(
    ("name", "series", "channels"), [("rgb", 1, 3), ("swatch", 22, 1), ("flim", 1, 16)]
)
@pytest.mark.workflow
@pytest.mark.java
def test_ome_tiff_next_to_05_for_colour_many_series_and_many_channels(
    odd_run: Path, bioformats: Any, name: str, series: int, channels: int
) -> None:
    folder = odd_run / name
    assert (zarr.open_group(folder / f"{name}.ome.zarr", mode="r").metadata.zarr_format) == 3
    expected = _levels(folder / f"{name}.ome.zarr")
    reader = bioformats(folder / f"{name}.ome.tif")
    assert reader.format_name == "OME-TIFF"
    assert len(reader.series) == len(expected) == series
    for info, levels in zip(reader.series, expected, strict=True):
        t, c, z, y, x = levels[0].shape
        assert info.shape == (t, c, z, y, x) and c == channels
        # Colour samples are written as separate channels, one sample each.
        assert not info.rgb
        for ti in range(t):
            for ci in range(c):
                for zi in range(z):
                    np.testing.assert_array_equal(
                        reader.read_tile(info.index, ti, ci, zi, 0, 0, y, x),
                        levels[0][ti, ci, zi],
                    )


@pytest.mark.workflow
@pytest.mark.java
def test_reruns_are_byte_identical(target_runs: dict[str, Path], tmp_path: Path) -> None:
    folder = target_runs["0.4"] / "scenes"
    again = tmp_path / "again.ome.tif"
    subprocess.run(
        [
            str(BIN / "bioingest"),
            "ome-tiff",
            str(folder / "scenes.ome.zarr"),
            "--ome-xml",
            str(folder / "scenes.ome.xml"),
            "--out",
            str(again),
        ],
        check=True,
        capture_output=True,
    )
    # Without --metadata the pixel hashes come from the store: the same bytes.
    assert again.read_bytes() == (folder / "scenes.ome.tif").read_bytes()


def test_the_uuid_follows_the_content() -> None:
    xml = (
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06" '
        'UUID="urn:uuid:00000000-0000-0000-0000-000000000000">'
        '<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint8" '
        'SizeX="2" SizeY="2" SizeZ="1" SizeC="3" SizeT="1" BigEndian="true">'
        '<Channel ID="Channel:0:0" SamplesPerPixel="3" Name="RGB"/>'
        '<TiffData IFD="7"/><Plane TheZ="0" TheC="0" TheT="0"/></Pixels></Image></OME>'
    )
    one = layout_xml(xml, planes=[3], content_hash="ab" * 32)
    assert one == layout_xml(xml, planes=[3], content_hash="ab" * 32)
    assert one != layout_xml(xml, planes=[3], content_hash="cd" * 32)
    assert one == (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06" '
        'UUID="urn:uuid:d4575b6e-2113-501f-82ea-4639045f26f5">'
        '<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYZCT" Type="uint8" '
        'SizeX="2" SizeY="2" SizeZ="1" SizeC="3" SizeT="1" BigEndian="false" '
        'Interleaved="false">'
        '<Channel ID="Channel:0:0" SamplesPerPixel="1" Name="RGB" />'
        '<Channel ID="Channel:0:1" SamplesPerPixel="1" Name="RGB" />'
        '<Channel ID="Channel:0:2" SamplesPerPixel="1" Name="RGB" />'
        '<TiffData IFD="0" PlaneCount="3" /><Plane TheZ="0" TheC="0" TheT="0" />'
        "</Pixels></Image></OME>"
    )


def test_a_series_count_mismatch_is_one_clear_error() -> None:
    xml = (
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"><Image ID="Image:0"/></OME>'
    )
    with pytest.raises(ValueError, match=r"^OME-XML has 1 images, the store 2 series$"):
        layout_xml(xml, planes=[1, 1], content_hash="00" * 32)
