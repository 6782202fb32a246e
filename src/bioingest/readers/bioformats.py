"""Bio-Formats through scyjava/JPype: reads anything Bio-Formats reads."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from bioingest.errors import IngestError
from bioingest.java import jimport, start_jvm
from bioingest.readers.base import SeriesInfo, SourceReader

_DTYPES = {
    "int8": "int8",
    "uint8": "uint8",
    "int16": "int16",
    "uint16": "uint16",
    "int32": "int32",
    "uint32": "uint32",
    "float": "float32",
    "double": "float64",
    "bit": "uint8",
}


def _java_problem(exc: BaseException) -> str:
    """Turn a Java exception into a short reason a user can act on."""
    cls = ""
    get_class = getattr(exc, "getClass", None)
    if get_class is not None:
        cls = str(get_class().getName())
    message = str(getattr(exc, "getMessage", lambda: str(exc))() or "").strip()
    if cls.endswith("UnknownFormatException"):
        return "unsupported or unrecognised file format"
    if cls.endswith("EOFException") or "EOF" in message:
        return f"truncated file ({message or 'unexpected end of file'})"
    if cls.endswith("FormatException"):
        return f"corrupt or invalid file ({message or cls})"
    if cls.endswith("FileNotFoundException"):
        return f"cannot open ({message})"
    if cls.endswith("IOException"):
        return f"read error, file corrupt or truncated ({message or cls})"
    return f"cannot read ({cls or type(exc).__name__}: {message})"


def _origin(exc: BaseException) -> str:
    """``Class.method`` of the innermost Bio-Formats frame of a Java exception, or empty."""
    frames: Any = getattr(exc, "getStackTrace", lambda: [])()
    for frame in frames:
        cls = str(frame.getClassName())
        if cls.startswith("loci."):
            return f"{cls.rsplit('.', 1)[-1]}.{frame.getMethodName()}"
    return ""


class BioFormatsReader(SourceReader):
    """Open a file with Bio-Formats once; serve full-resolution tiles of every series.

    Parameters
    ----------
    path
        Source file (for multi-file formats, the file Bio-Formats is pointed at).
    jar
        Optional explicit ``bioformats_package.jar``.
    maven
        Optional opt-in Maven coordinate used instead of a local jar.
    heap_mb
        Maximum Java heap in MiB.
    """

    name = "bioformats"

    def __init__(
        self,
        path: Path,
        *,
        jar: str | None = None,
        maven: str | None = None,
        heap_mb: int = 1024,
    ) -> None:
        super().__init__(path)
        start_jvm(jar=jar, maven=maven, heap_mb=heap_mb)
        image_reader = jimport("loci.formats.ImageReader")
        metadata_tools = jimport("loci.formats.MetadataTools")
        self._format_tools = jimport("loci.formats.FormatTools")
        self._meta: Any = metadata_tools.createOMEXMLMetadata()
        # No ChannelSeparator: it decodes a colour tile once per sample and fails on some
        # files (DICOM); colour tiles are read whole and split in numpy instead.
        self._reader: Any = image_reader()
        self._reader.setMetadataStore(self._meta)
        self._reader.setFlattenedResolutions(False)
        try:
            self._reader.setId(str(path))
        except Exception as exc:
            self._close_quietly()
            raise IngestError(path, _java_problem(exc)) from None
        self._series = [self._series_info(s) for s in range(self._reader.getSeriesCount())]
        if not self._series:
            raise IngestError(path, "no images in file")
        self._current = -1

    def _series_info(self, s: int) -> SeriesInfo:
        r = self._reader
        r.setSeries(s)
        r.setResolution(0)
        pixel_type = str(self._format_tools.getPixelTypeString(r.getPixelType()))
        return SeriesInfo(
            index=s,
            size_t=int(r.getSizeT()),
            size_c=int(r.getSizeC()),
            size_z=int(r.getSizeZ()),
            size_y=int(r.getSizeY()),
            size_x=int(r.getSizeX()),
            dtype=_DTYPES[pixel_type],
            rgb=bool(r.isRGB()) and int(r.getSizeC()) == 3,
            samples=max(1, int(r.getRGBChannelCount())),
        )

    @property
    def metadata(self) -> Any:
        """The reader's ``OMEXMLMetadata`` (Java object) for direct getter access."""
        return self._meta

    @property
    def format_name(self) -> str:
        """The file format, as Bio-Formats names it."""
        return str(self._reader.getFormat())

    @property
    def series(self) -> list[SeriesInfo]:
        """Every series at full resolution."""
        return self._series

    @property
    def ome_xml(self) -> str:
        """The complete OME-XML of all series, as Bio-Formats writes it."""
        return str(self._meta.dumpXML())

    @property
    def used_files(self) -> list[Path]:
        """Every file Bio-Formats used (main file and companions), resolved and sorted."""
        return sorted(Path(str(f)).resolve() for f in self._reader.getUsedFiles())

    def read_tile(
        self, series: int, t: int, c: int, z: int, y: int, x: int, height: int, width: int
    ) -> np.ndarray:
        """Return a ``(height, width)`` tile of one plane (its colour samples decoded together)."""
        samples = self._series[series].samples
        first = c - c % samples
        block = self.read_samples(series, t, first, z, y, x, height, width)
        return np.ascontiguousarray(block[c - first])

    def read_samples(
        self, series: int, t: int, c: int, z: int, y: int, x: int, height: int, width: int
    ) -> np.ndarray:
        """Return the ``(samples, height, width)`` block of a stored plane in native byte order."""
        r = self._reader
        if series != self._current:
            r.setSeries(series)
            r.setResolution(0)
            self._current = series
        info = self._series[series]
        # Bio-Formats numbers the stored planes; a colour plane holds `samples` channels.
        index = r.getIndex(z, c // info.samples, t)
        try:
            raw = r.openBytes(index, x, y, width, height)
        except Exception as exc:
            problem = _java_problem(exc)
            where = f"series {series} plane t={t} c={c} z={z}, tile at y={y} x={x}"
            if problem.startswith("cannot read ("):
                # Not an I/O or format error: Bio-Formats failed decoding these pixels.
                origin = _origin(exc)
                problem = (
                    f"Bio-Formats cannot decode {where} "
                    f"({problem.removeprefix('cannot read (')[:-1]}"
                    f"{f' in {origin}' if origin else ''})"
                )
            else:
                problem = f"{problem}, reading {where}"
            raise IngestError(self.path, problem) from None
        dtype = np.dtype(info.dtype).newbyteorder("<" if r.isLittleEndian() else ">")
        flat = np.frombuffer(memoryview(raw), dtype=dtype)
        if info.samples > 1 and r.isInterleaved():
            block = flat.reshape(height, width, info.samples).transpose(2, 0, 1)
        else:
            block = flat.reshape(info.samples, height, width)
        return block.astype(info.dtype, copy=True)

    def _close_quietly(self) -> None:
        # Closing a half-opened reader must not mask the error that got us here.
        with contextlib.suppress(Exception):
            self._reader.close()

    def close(self) -> None:
        """Close the Bio-Formats reader, ignoring errors."""
        self._close_quietly()
