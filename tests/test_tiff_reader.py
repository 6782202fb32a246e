"""The tifffile reader returns the written pixels whatever its thread count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from bioingest.readers.tiff import TiffReader

RNG = np.random.default_rng(15)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "layout",
    [
        {"tile": (64, 64), "compression": "zlib"},
        {"rowsperstrip": 16, "compression": "zlib"},
        {"tile": (32, 48), "compression": "zstd", "predictor": True},
    ],
    ids=["tiled", "strips", "tiled-predictor"],
)
def test_regions_equal_the_written_pixels(
    tmp_path: Path, threads: int, layout: dict[str, object]
) -> None:
    # Two channels of three planes each, sizes not multiples of the tiles.
    image = RNG.integers(0, 65535, (2, 3, 150, 200), dtype=np.uint16)
    path = tmp_path / "planes.ome.tif"
    tifffile.imwrite(path, image, ome=True, metadata={"axes": "CZYX"}, **layout)
    with TiffReader(path, threads=threads) as reader:
        (info,) = reader.series
        assert (info.size_c, info.size_z, info.size_y, info.size_x) == (2, 3, 150, 200)
        for c in range(2):
            for z in range(3):
                for y, x, h, w in [(0, 0, 150, 200), (17, 33, 100, 150), (149, 199, 1, 1)]:
                    got = reader.read_tile(0, 0, c, z, y, x, h, w)
                    np.testing.assert_array_equal(got, image[c, z, y : y + h, x : x + w])
