"""Ask Bio-Formats what one file is: the reader it picks, the main file and the files used.

The inventory calls :func:`probe` once per file that no acquisition has claimed yet. It
reads headers only (``setId``), never pixels, so a probe costs what opening costs.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bioingest.java import jimport

#: Endings Bio-Formats' OME-TIFF reader claims by name.
OME_TIFF_SUFFIXES = (".ome.tif", ".ome.tiff", ".ome.btf", ".ome.tf8", ".ome.tf2")
#: Bio-Formats pixel types and their size in bytes.
_BYTES = {
    "int8": 1,
    "uint8": 1,
    "bit": 1,
    "int16": 2,
    "uint16": 2,
    "int32": 4,
    "uint32": 4,
    "float": 4,
    "double": 8,
}


@dataclass(frozen=True)
class Probe:
    """What Bio-Formats made of one file.

    ``reader`` is empty when no reader recognises the file; ``error`` is set when a
    reader recognises it but cannot open it (or cannot list its files).
    """

    path: str
    reader: str = ""
    format: str = ""
    main: str = ""
    used: tuple[str, ...] = ()
    series_bytes: tuple[int, ...] = ()
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form (for the inventory cache and the JVM server)."""
        return {
            "path": self.path,
            "reader": self.reader,
            "format": self.format,
            "main": self.main,
            "used": list(self.used),
            "series_bytes": list(self.series_bytes),
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Probe:
        """Inverse of :meth:`to_json`."""
        return cls(
            path=str(data["path"]),
            reader=str(data["reader"]),
            format=str(data["format"]),
            main=str(data["main"]),
            used=tuple(str(u) for u in data["used"]),
            series_bytes=tuple(int(b) for b in data["series_bytes"]),
            error=str(data["error"]),
        )


def _absolute(path: str) -> str:
    return os.path.normpath(os.path.abspath(path))


def _reader_name(reader: Any) -> str:
    return str(reader.getClass().getSimpleName())


def probe(path: Path) -> Probe:
    """Open ``path`` with Bio-Formats (the JVM must be running) and describe it.

    Parameters
    ----------
    path
        An absolute file path.

    Returns
    -------
    Probe
        The reader class, format, main file (``getCurrentFile``), used files (all of
        them, sorted) and the pixel bytes of each series; or the reason it failed.
    """
    from bioingest.readers.bioformats import _java_problem

    image_reader = jimport("loci.formats.ImageReader")()
    text = str(path)
    try:
        chosen = image_reader.getReader(text)
    except Exception as exc:
        cls = str(exc.getClass().getName()) if hasattr(exc, "getClass") else ""
        if cls.endswith("UnknownFormatException"):
            return Probe(path=text)
        return Probe(path=text, reader="?", error=_java_problem(exc))
    name = _reader_name(chosen)
    try:
        image_reader.setFlattenedResolutions(False)
        image_reader.setId(text)
        fmt = str(image_reader.getFormat())
        main = str(image_reader.getCurrentFile())
        # Absolute but not resolved: a symbolic link stays where the user put it.
        used = tuple(sorted({_absolute(str(f)) for f in image_reader.getUsedFiles()}))
        format_tools = jimport("loci.formats.FormatTools")
        sizes = []
        for s in range(int(image_reader.getSeriesCount())):
            image_reader.setSeries(s)
            pixel_type = str(format_tools.getPixelTypeString(image_reader.getPixelType()))
            sizes.append(
                int(image_reader.getImageCount())
                * int(image_reader.getSizeX())
                * int(image_reader.getSizeY())
                * int(image_reader.getRGBChannelCount())
                * _BYTES.get(pixel_type, 1)
            )
    except Exception as exc:
        return Probe(path=text, reader=name, error=_java_problem(exc))
    finally:
        with contextlib.suppress(Exception):
            image_reader.close()
    if not sizes:
        return Probe(path=text, reader=name, format=fmt, error="no images in file")
    return Probe(
        path=text,
        reader=name,
        format=fmt,
        main=_absolute(main),
        used=used,
        series_bytes=tuple(sizes),
    )
