"""The tifffile reader returns the written pixels whatever its layout and thread count."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from bioingest.readers.tiff import TiffReader

RNG = np.random.default_rng(15)

LAYOUTS: dict[str, dict[str, Any]] = {
    "tiled": {"tile": (64, 64), "compression": "zlib"},
    "strips": {"rowsperstrip": 16, "compression": "zlib"},
    "tiled-predictor": {"tile": (32, 48), "compression": "zstd", "predictor": True},
    "strips-uneven-lzw": {"rowsperstrip": 7, "compression": "lzw"},
    "one-strip": {"rowsperstrip": 1000, "compression": None},
    "tiled-packbits-big-endian": {"tile": (16, 16), "compression": "packbits", "byteorder": ">"},
    "tiled-uint8": {"tile": (32, 32), "compression": "zlib", "dtype": "uint8"},
    "strips-float32-predictor": {
        "rowsperstrip": 10,
        "compression": "zlib",
        "predictor": True,
        "dtype": "float32",
    },
}


def _image(dtype: str) -> np.ndarray:
    # Two channels of three planes each, sizes not multiples of the tiles.
    if dtype == "float32":
        return RNG.normal(100, 30, (2, 3, 150, 200)).astype(np.float32)
    return RNG.integers(0, np.iinfo(dtype).max, (2, 3, 150, 200), dtype=dtype)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("layout", list(LAYOUTS), ids=list(LAYOUTS))
def test_regions_equal_the_written_pixels(tmp_path: Path, threads: int, layout: str) -> None:
    options = dict(LAYOUTS[layout])
    image = _image(str(options.pop("dtype", "uint16")))
    path = tmp_path / "planes.ome.tif"
    tifffile.imwrite(path, image, ome=True, metadata={"axes": "CZYX"}, **options)
    with TiffReader(path, threads=threads) as reader:
        (info,) = reader.series
        assert (info.size_c, info.size_z, info.size_y, info.size_x) == (2, 3, 150, 200)
        # Plain planes of tiles or strips are decoded straight into the region read.
        assert reader._plain[0] is not None
        for c in range(2):
            for z in range(3):
                for y, x, h, w in [(0, 0, 150, 200), (17, 33, 100, 150), (149, 199, 1, 1)]:
                    got = reader.read_tile(0, 0, c, z, y, x, h, w)
                    assert got.dtype.isnative
                    np.testing.assert_array_equal(got, image[c, z, y : y + h, x : x + w])


def test_colour_samples_are_read_through_the_zarr_view(tmp_path: Path) -> None:
    image = RNG.integers(0, 255, (150, 200, 3), dtype=np.uint8)
    path = tmp_path / "rgb.ome.tif"
    tifffile.imwrite(path, image, ome=True, photometric="rgb", tile=(64, 64))
    with TiffReader(path) as reader:
        assert reader._plain[0] is None
        for c in range(3):
            got = reader.read_tile(0, 0, c, 0, 10, 20, 100, 150)
            np.testing.assert_array_equal(got, image[10:110, 20:170, c])
