"""An in-memory source for the fast tests: numpy arrays and the OME-XML describing them.

:class:`ArrayReader` implements :class:`bioingest.readers.SourceReader` over TCZYX arrays
(one per series), so ``convert(..., reader=ArrayReader(...))`` runs the pipeline without a
file, a JVM or Snakemake.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from bioingest.readers import SeriesInfo, SourceReader

OME_NS = "http://www.openmicroscopy.org/Schemas/OME/2016-06"
#: OME pixel type of each numpy dtype.
PIXEL_TYPES = {
    "uint8": "uint8",
    "int8": "int8",
    "uint16": "uint16",
    "int16": "int16",
    "uint32": "uint32",
    "int32": "int32",
    "float32": "float",
    "float64": "double",
}


@dataclass
class Image:
    """One series: TCZYX pixels and what its OME-XML says about them."""

    pixels: np.ndarray
    name: str = ""
    channels: Sequence[str] = ()
    #: Physical pixel size in X, Y and Z, micrometres (None: not in the OME-XML).
    size_um: tuple[float | None, float | None, float | None] = (None, None, None)
    rgb: bool = False

    def __post_init__(self) -> None:
        assert self.pixels.ndim == 5, "pixels must be TCZYX"
        assert not self.rgb or self.pixels.shape[1] == 3, "RGB needs three channels"


@dataclass
class Plate:
    """A plate whose wells ``(row, column)`` each hold one series (``wells[i]`` is series i)."""

    rows: int
    columns: int
    wells: Sequence[tuple[int, int]]
    name: str = "plate"


@dataclass
class ArrayReader(SourceReader):
    """A :class:`SourceReader` over in-memory arrays, counting the tiles read."""

    path: Path
    images: Sequence[Image]
    plate: Plate | None = None
    name: str = "memory"
    tiles_read: int = field(default=0, init=False)
    closed: bool = field(default=False, init=False)

    @property
    def format_name(self) -> str:
        return "In-memory arrays (tests)"

    @property
    def series(self) -> list[SeriesInfo]:
        return [
            SeriesInfo(
                i,
                *img.pixels.shape,
                dtype=img.pixels.dtype.name,
                rgb=img.rgb,
                samples=3 if img.rgb else 1,
            )
            for i, img in enumerate(self.images)
        ]

    @property
    def used_files(self) -> list[Path]:
        return [self.path]

    @property
    def ome_xml(self) -> str:
        return ome_xml(self.images, self.plate)

    def read_tile(
        self, series: int, t: int, c: int, z: int, y: int, x: int, height: int, width: int
    ) -> np.ndarray:
        assert not self.closed, "read after close"
        self.tiles_read += 1
        tile: np.ndarray = self.images[series].pixels[t, c, z, y : y + height, x : x + width]
        assert tile.shape == (height, width), "tile outside the plane"
        return tile.copy()

    def close(self) -> None:
        self.closed = True


def ome_xml(images: Sequence[Image], plate: Plate | None = None) -> str:
    """Minimal valid OME-XML for ``images`` (and the plate holding them)."""
    parts = [f'<?xml version="1.0" encoding="UTF-8"?><OME xmlns="{OME_NS}">']
    if plate is not None:
        parts.append(
            f'<Plate ID="Plate:0" Name={quoteattr(plate.name)} Rows="{plate.rows}" '
            f'Columns="{plate.columns}" RowNamingConvention="letter" '
            'ColumnNamingConvention="number">'
        )
        for i, (row, column) in enumerate(plate.wells):
            parts.append(
                f'<Well ID="Well:0:{i}" Row="{row}" Column="{column}">'
                f'<WellSample ID="WellSample:0:{i}:0" Index="{i}">'
                f'<ImageRef ID="Image:{i}"/></WellSample></Well>'
            )
        parts.append("</Plate>")
    for i, img in enumerate(images):
        t, c, z, y, x = img.pixels.shape
        sizes = "".join(
            f' PhysicalSize{axis}="{value}" PhysicalSize{axis}Unit="µm"'
            for axis, value in zip("XYZ", img.size_um, strict=True)
            if value is not None
        )
        name = f" Name={quoteattr(img.name)}" if img.name else ""
        parts.append(
            f'<Image ID="Image:{i}"{name}><Pixels ID="Pixels:{i}" DimensionOrder="XYCZT" '
            f'Type="{PIXEL_TYPES[img.pixels.dtype.name]}" SizeX="{x}" SizeY="{y}" '
            f'SizeZ="{z}" SizeC="{c}" SizeT="{t}"{sizes}>'
        )
        if img.rgb:
            label = quoteattr(img.channels[0] if img.channels else "RGB")
            parts.append(f'<Channel ID="Channel:{i}:0" SamplesPerPixel="3" Name={label}/>')
        else:
            for k in range(c):
                label = f" Name={quoteattr(img.channels[k])}" if k < len(img.channels) else ""
                parts.append(f'<Channel ID="Channel:{i}:{k}" SamplesPerPixel="1"{label}/>')
        parts.append("</Pixels></Image>")
    parts.append("</OME>")
    return "".join(parts)
