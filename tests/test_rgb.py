"""Colour (RGB) sources: each tile is decoded once for its three samples.

Every channel equals what Bio-Formats' own ChannelSeparator returns.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from bioingest.convert import convert
from bioingest.readers import open_source
from bioingest.readers.bioformats import BioFormatsReader
from bioingest.tiles import tiles
from conftest import BIN, REAL

pytestmark = [pytest.mark.java]

EXTRA = REAL.parent / "real-extra"
# Every colour file of the real corpora that Bio-Formats reads (tifffile takes the RGB TIFF).
RGB = [
    REAL / "czi/Fluorescence_RGB.czi",
    REAL / "nikon-tiff/NikonTIF.tif",
    REAL / "svs/small.svs",
    REAL / "tiff-wsi/boxes.tiff",
    REAL / "dicom-wsi/boxes_0.dcm",
    REAL / "dicom-sm/sm_image.dcm",
    EXTRA / "aperio-svs-cmu1-jpeg/CMU-1-Small-Region.svs",
    EXTRA / "hamamatsu-ndpi/test3-DAPI-2-(387).ndpi",
]
TILE = 512


class CountingReader(BioFormatsReader):
    """The project's reader, counting the tiles it asks Bio-Formats to decode."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.decoded = 0
        java = self._reader
        owner = self

        class Counter:
            def __getattr__(self, name: str) -> Any:
                return getattr(java, name)

            def openBytes(self, *args: Any) -> Any:  # noqa: N802 (Java name)
                owner.decoded += 1
                return java.openBytes(*args)

        self._reader = Counter()


@pytest.mark.parametrize("path", RGB, ids=[p.name for p in RGB])
def test_rgb_tiles_equal_bioformats(path: Path, bioformats: Any) -> None:
    reference = bioformats(path)
    with BioFormatsReader(path) as reader:
        assert reader.series == reference.series
        assert any(s.samples == 3 and s.rgb for s in reader.series)
        for info in reader.series:
            for t, c, z in np.ndindex(info.size_t, info.size_c // info.samples, info.size_z):
                first = c * info.samples
                for y, x, h, w in tiles(info.size_y, info.size_x, TILE):
                    block = reader.read_samples(info.index, t, first, z, y, x, h, w)
                    assert block.shape == (info.samples, h, w)
                    for i in range(info.samples):
                        want = reference.read_tile(info.index, t, first + i, z, y, x, h, w)
                        np.testing.assert_array_equal(block[i], want)
                        got = reader.read_tile(info.index, t, first + i, z, y, x, h, w)
                        np.testing.assert_array_equal(got, want)


def test_convert_decodes_each_rgb_tile_once(tmp_path: Path, bioformats: Any) -> None:
    path = EXTRA / "aperio-svs-cmu1-jpeg/CMU-1-Small-Region.svs"
    reader = CountingReader(path)
    info = reader.series[0]
    assert (info.size_c, info.samples, info.size_z, info.size_t) == (3, 3, 1, 1)
    from bioingest.arrays import StoreOptions
    from bioingest.convert import _copy_series

    root = zarr.open_group(tmp_path / "o.zarr", mode="w", zarr_format=3)
    # Bands of one chunk row (TILE rows), read in tiles of TILE columns.
    _copy_series(reader, info, root, StoreOptions(chunk_size=TILE), TILE)
    reader.close()
    assert reader.decoded == len(tiles(info.size_y, info.size_x, TILE)) == 30
    reference = bioformats(path)
    for c in range(3):
        want = reference.read_tile(0, 0, c, 0, 0, 0, info.size_y, info.size_x)
        np.testing.assert_array_equal(root["0"][0, c, 0], want)


def test_rgb_through_the_jvm_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bioformats: Any
) -> None:
    from bioingest.readers import remote

    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(folder))
    started = len(remote._spawned)
    path = REAL / "czi/Fluorescence_RGB.czi"
    try:
        convert(path, zarr_path=tmp_path / "o.zarr", jvm_server=True, tile_size=100)
        with open_source(path, reader="bioformats", jvm_server=True) as served:
            block = served.read_samples(0, 0, 0, 0, 10, 20, 30, 40)
    finally:
        for proc in remote._spawned[started:]:
            proc.terminate()
            proc.wait(timeout=30)
    reference = bioformats(path)
    info = reference.series[0]
    stored = zarr.open_group(tmp_path / "o.zarr", mode="r")["0"]
    for c in range(3):
        want = reference.read_tile(0, 0, c, 0, 0, 0, info.size_y, info.size_x)
        np.testing.assert_array_equal(stored[0, c, 0], want)
        np.testing.assert_array_equal(block[c], want[10:40, 20:60])


def test_jpegls_dicom_alone_is_one_line(tmp_path: Path) -> None:
    """Check that a JPEG-LS tiled DICOM Bio-Formats cannot decode fails with one line.

    Bio-Formats 7.3.1 cannot decode this DICOM on its own (whole-plane openBytes fails
    too); the dataset fails with one line naming file and tile.
    """
    folder = tmp_path / "jls"
    folder.mkdir()
    path = folder / "sm_image_jpegls.dcm"
    shutil.copyfile(REAL / "dicom-sm/sm_image_jpegls.dcm", path)
    proc = subprocess.run(
        [str(BIN / "bioingest"), "convert", str(path), "--zarr", str(tmp_path / "o.zarr")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"ERROR {path}: Bio-Formats cannot decode series 0 plane t=0 c=0 z=0, tile at y=0 "
        "x=0 (java.lang.ArrayIndexOutOfBoundsException: arraycopy: last source index 30 out "
        "of bounds for byte[0] in DicomReader.getTile)"
    )
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "\tat " not in proc.stderr + proc.stdout
    assert not (tmp_path / "o.zarr").exists()
