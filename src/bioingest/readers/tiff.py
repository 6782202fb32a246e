"""tifffile: the JVM-free fast path for plain TIFF, ImageJ TIFF and single-file OME-TIFF.

It takes a file only when it reads it exactly as Bio-Formats would (the tests compare
both on every real sample); anything else goes to Bio-Formats.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from bioingest import omexml
from bioingest.errors import IngestError
from bioingest.probe import OME_TIFF_SUFFIXES, Probe
from bioingest.readers.base import SeriesInfo, SourceReader

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
_LOSSLESS = {
    tifffile.COMPRESSION.NONE,
    tifffile.COMPRESSION.LZW,
    tifffile.COMPRESSION.ADOBE_DEFLATE,
    tifffile.COMPRESSION.DEFLATE,
    tifffile.COMPRESSION.PACKBITS,
    tifffile.COMPRESSION.ZSTD,
    tifffile.COMPRESSION.LZMA,
}
# Vendor flavours whose metadata Bio-Formats interprets with a reader of its own.
_VENDOR_FLAGS = (
    "lsm",
    "stk",
    "svs",
    "scn",
    "ndpi",
    "nih",
    "micromanager",
    "fluoview",
    "metaseries",
    "qpi",
    "philips",
    "sis",
    "mdgel",
    "sem",
    "andor",
    "epics",
    "tvips",
    "eer",
    "streak",
    "bif",
    "indica",
    "avs",
    "mmstack",
    "ndtiff",
    "geotiff",
    "fei",
    "vista",
    "scanimage",
    "agilent",
    "uic",
    "dng",
    "nuvu",
    "zif",
    "subifd_pyramid",
)
_UNIT_NAMES = {
    "micron": "µm",
    "microns": "µm",
    "um": "µm",
    "µm": "µm",
    "\\u00B5m": "µm",
    "nm": "nm",
    "mm": "mm",
    "cm": "cm",
    "m": "m",
    "pixel": "pixel",
}


class _NameTheFile(logging.Filter):
    """Turn tifffile's log records into warnings that name the file being read.

    tifffile logs what it tolerates (a bad tag, an odd offset) as ``ERROR`` without the
    file name, although the file may read fine; an error of the dataset is raised as
    :class:`IngestError` instead. Each complaint is logged once per file, although the
    file is opened twice (:func:`accepts`, then :class:`TiffReader`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.path: Path | None = None
        self._seen: set[tuple[Path, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.path is None:
            return True
        message = record.getMessage()
        if (self.path, message) in self._seen:
            return False
        self._seen.add((self.path, message))
        record.msg = "%s: tifffile: %s"
        record.args = (self.path, message)
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_naming = _NameTheFile()
logging.getLogger("tifffile").addFilter(_naming)


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Name ``path`` in whatever tifffile logs while the block runs."""
    previous, _naming.path = _naming.path, path
    try:
        yield
    finally:
        _naming.path = previous


def _pick_series(tif: tifffile.TiffFile) -> list[Any] | None:
    """Return the series to ingest, or ``None`` when this file should go to Bio-Formats."""
    if any(getattr(tif, f"is_{flag}", False) for flag in _VENDOR_FLAGS):
        return None
    series = list(tif.series)
    if tif.is_ome:
        xml = tif.pages.first.description
        names = {Path(n).name for n in _ome_file_names(xml)}
        if names - {Path(tif.filehandle.path).name} or "BinaryOnly" in xml:
            return None
    elif not (tif.is_imagej or tif.is_shaped or len(series) == 1) or len(series) != 1:
        return None
    for s in series:
        if any(p.compression not in _LOSSLESS for p in s.pages if p is not None):
            return None
        if _axis_plan(s) is None:
            return None
    return series


def _ome_file_names(xml: str) -> list[str]:
    root = omexml.parse(xml)
    return [e.attrib["FileName"] for e in root.iter() if "FileName" in e.attrib]


def _axis_plan(series: Any) -> list[tuple[str, str, int]] | None:
    """Map each stored axis to a TCZYX dimension: ``(axis, dim, size)``, modulo axes included.

    Modulo axes (OME ModuloAlong*) follow their parent dimension and vary faster than it,
    which is how Bio-Formats folds them into Z, C or T. Leading unnamed axes of plain
    multi-page files become T, as in Bio-Formats.
    """
    axes = series.axes
    shape = series.shape
    plan: list[tuple[str, str, int]] = []
    parent: str | None = None
    for axis, size in zip(axes, shape, strict=True):
        if axis in "TCZ":
            parent = axis
            plan.append((axis, axis, size))
        elif axis in "YX":
            plan.append((axis, axis, size))
        elif axis == "S":
            plan.append((axis, "C", size))
        elif parent is not None:
            plan.append((axis, parent, size))
        elif axis in "QIR" and size >= 1:
            plan.append((axis, "T", size))
        else:
            return None
    dims = [d for _, d, _ in plan]
    if dims.count("Y") != 1 or dims.count("X") != 1:
        return None
    if dims.count("T") > 1 and "T" in axes and any(a in "QI" for a in axes):
        return None
    return plan


class _Plain:
    """The tiles or strips of a series whose pages are plain planes, decoded into place.

    A plain page holds one sample per pixel in one plane of tiles or strips, none of them
    empty; each region read decodes the segments it covers once, straight into the region.
    That takes a third less CPU than tifffile's Zarr view (which copies each segment
    several times), and reads each strip once per band of full-width rows.
    """

    def __init__(self, pages: list[Any], pool: ThreadPoolExecutor | None) -> None:
        self._pages = pages
        key = pages[0].keyframe
        self._tiled = bool(key.is_tiled)
        self._length = int(key.tilelength if self._tiled else key.rowsperstrip)
        self._width = int(key.tilewidth if self._tiled else key.imagewidth)
        self._across = -(-int(key.imagewidth) // self._width)
        self._dtype = np.dtype(key.dtype)
        self._pool = pool

    @staticmethod
    def _geometry(key: Any) -> tuple[Any, ...] | None:
        """Return what placing a key page's segments depends on; None when it is not plain."""
        if (
            key.samplesperpixel != 1
            or key.imagedepth != 1
            or key.compression not in _LOSSLESS
            or (key.is_tiled and key.tiledepth != 1)
        ):
            return None
        segment = (key.tilelength, key.tilewidth) if key.is_tiled else (key.rowsperstrip,)
        return key.shape, np.dtype(key.dtype), bool(key.is_tiled), segment

    @classmethod
    def of(cls, series: Any, planes: int, pool: ThreadPoolExecutor | None) -> _Plain | None:
        """Reader of ``series`` when every page is a plain plane; None: the Zarr view reads it."""
        pages = list(series.pages)
        if len(pages) != planes or any(p is None for p in pages) or "S" in series.axes:
            return None
        if series.axes[-2:] != "YX":
            return None
        shapes = {cls._geometry(k) for k in {id(p.keyframe): p.keyframe for p in pages}.values()}
        if len(shapes) != 1 or None in shapes:
            return None
        (geometry,) = shapes
        assert geometry is not None
        if geometry[0] != tuple(series.shape[-2:]) or not all(
            len(p.dataoffsets) and all(p.databytecounts) for p in pages
        ):
            return None
        return cls(pages, pool)

    def read(self, plane: int, y: int, x: int, height: int, width: int) -> np.ndarray:
        """Return rows ``y:y+height``, columns ``x:x+width`` of page ``plane``."""
        page = self._pages[plane]
        out = np.empty((height, width), dtype=self._dtype)
        length, cols = self._length, self._width
        first_col = x // cols if self._tiled else 0
        last_col = (x + width - 1) // cols if self._tiled else 0
        jobs: list[tuple[int, int, int, bytes]] = []
        fh = page.parent.filehandle
        with fh.lock:
            for row in range(y // length, (y + height - 1) // length + 1):
                for col in range(first_col, last_col + 1):
                    index = row * self._across + col
                    fh.seek(page.dataoffsets[index])
                    jobs.append((row, col, index, fh.read(page.databytecounts[index])))

        def place(job: tuple[int, int, int, bytes]) -> None:
            row, col, index, data = job
            # (1, rows, columns, 1): a whole tile, padded at the edges, or one strip.
            segment = page.keyframe.decode(data, index, _fullsize=self._tiled)[0]
            tile = segment.reshape(segment.shape[1], segment.shape[2])
            top, left = row * length, col * cols
            y0, y1 = max(y, top), min(y + height, top + tile.shape[0])
            x0, x1 = max(x, left), min(x + width, left + tile.shape[1])
            out[y0 - y : y1 - y, x0 - x : x1 - x] = tile[y0 - top : y1 - top, x0 - left : x1 - left]

        if self._pool is None or len(jobs) < 2:
            for job in jobs:
                place(job)
        else:
            list(self._pool.map(place, jobs))
        return out


class TiffReader(SourceReader):
    """Read a TIFF-family file with tifffile, region by region.

    Plain tiled or striped planes are decoded segment by segment straight into the region
    read (:class:`_Plain`); the other layouts go through tifffile's Zarr view.

    Parameters
    ----------
    path
        The file.
    threads
        Above 1, the tiles or strips of one read are decoded on that many threads.
    """

    name = "tifffile"
    #: Whole rows read at once cost no more here (each segment is decoded once per read).
    reads_whole_rows = True

    def __init__(self, path: Path, *, threads: int = 1) -> None:
        super().__init__(path)
        self._threads = threads
        self._pool = ThreadPoolExecutor(threads) if threads > 1 else None
        with _reading(path):
            self._open(path)

    def _open(self, path: Path) -> None:
        import zarr  # here: the inventory's OME-TIFF probe needs no Zarr

        try:
            self._tif = tifffile.TiffFile(path)
        except Exception as exc:
            raise IngestError(path, f"not a readable TIFF ({exc})") from None
        picked = _pick_series(self._tif)
        if picked is None:
            self._tif.close()
            raise IngestError(path, "not a TIFF flavour the tifffile fast path reads exactly")
        self._plans = [_axis_plan(s) or [] for s in picked]
        self._arrays: list[Any] = []
        self._plain: list[_Plain | None] = []
        self._series: list[SeriesInfo] = []
        for i, (s, plan) in enumerate(zip(picked, self._plans, strict=True)):
            size = {d: 1 for d in "TCZYX"}
            for _, dim, n in plan:
                size[dim] *= n
            self._series.append(
                SeriesInfo(
                    index=i,
                    size_t=size["T"],
                    size_c=size["C"],
                    size_z=size["Z"],
                    size_y=size["Y"],
                    size_x=size["X"],
                    dtype=str(np.dtype(s.dtype)),
                    rgb="S" in s.axes and size["C"] == 3,
                )
            )
            # Above one thread, the tiles or strips of one read are decoded in parallel.
            store = s.aszarr(level=0, maxworkers=self._threads)
            self._arrays.append(zarr.open_array(store, mode="r"))
            planes = size["T"] * size["C"] * size["Z"]
            self._plain.append(_Plain.of(s, planes, self._pool))
        self._xml = self._tif.ome_metadata if self._tif.is_ome else self._make_ome_xml(picked[0])

    def _physical(self, page: Any) -> dict[str, Any]:
        """Physical sizes the way Bio-Formats derives them from resolution tags."""
        meta: dict[str, Any] = {}
        ij = self._tif.imagej_metadata or {}
        tags = page.tags
        xres, yres = tags.get("XResolution"), tags.get("YResolution")
        unit_tag = tags.get("ResolutionUnit")
        res_unit = int(unit_tag.value) if unit_tag is not None else 2
        factor = {1: 1.0, 2: 25400.0, 3: 10000.0}.get(res_unit, 1.0)
        unit = "µm"
        if ij:
            factor = 1.0
            unit = _UNIT_NAMES.get(str(ij.get("unit", "")), "")
        if unit:
            for key, tag in (("X", xres), ("Y", yres)):
                if tag is not None and tag.value[0] > 0:
                    meta[f"PhysicalSize{key}"] = factor * tag.value[1] / tag.value[0]
                    meta[f"PhysicalSize{key}Unit"] = unit
            if ij.get("spacing"):
                meta["PhysicalSizeZ"] = float(ij["spacing"])
                meta["PhysicalSizeZUnit"] = unit
        if ij.get("finterval"):
            meta["TimeIncrement"] = float(ij["finterval"])
            meta["TimeIncrementUnit"] = "s"
        return meta

    def _make_ome_xml(self, series: Any) -> str:
        info = self._series[0]
        ome = tifffile.OmeXml()
        # RGB samples become ordinary channels, as Bio-Formats' TIFF reader reports them.
        ome.addimage(
            np.dtype(info.dtype),
            info.shape,
            (info.size_t * info.size_c * info.size_z, 1, 1, info.size_y, info.size_x, 1),
            axes="TCZYX",
            Name=self.path.name,
            **self._physical(series.pages[0]),
        )
        # tifffile stamps a random UUID; drop it (optional in OME) so reruns are identical.
        return re.sub(r' UUID="urn:uuid:[0-9a-f-]+"', "", str(ome.tostring()), count=1)

    @property
    def format_name(self) -> str:
        """The file format: ``OME-TIFF``, ``ImageJ TIFF`` or ``TIFF``."""
        if self._tif.is_ome:
            return "OME-TIFF"
        return "ImageJ TIFF" if self._tif.is_imagej else "TIFF"

    @property
    def series(self) -> list[SeriesInfo]:
        """Every series at full resolution."""
        return self._series

    @property
    def ome_xml(self) -> str:
        """The file's OME-XML, or one made from its tags when the file is not an OME-TIFF."""
        return str(self._xml)

    @property
    def used_files(self) -> list[Path]:
        """The file itself: files with companions go to Bio-Formats."""
        return [self.path.resolve()]

    def read_tile(
        self, series: int, t: int, c: int, z: int, y: int, x: int, height: int, width: int
    ) -> np.ndarray:
        """Return a ``(height, width)`` tile of one plane (TCZ split over the file's axes)."""
        wanted = {"T": t, "C": c, "Z": z}
        # Split each TCZ index over its axes, last (fastest) axis first.
        parts: dict[str, list[int]] = {"T": [], "C": [], "Z": []}
        for _, dim, size in reversed(self._plans[series]):
            if dim in parts:
                parts[dim].append(wanted[dim] % size)
                wanted[dim] //= size
        index: list[Any] = []
        for _, dim, _size in self._plans[series]:
            if dim == "Y":
                index.append(slice(y, y + height))
            elif dim == "X":
                index.append(slice(x, x + width))
            else:
                index.append(parts[dim].pop())
        plain = self._plain[series]
        with _reading(self.path):
            try:
                if plain is not None:
                    planes = [n for _, dim, n in self._plans[series] if dim not in "YX"]
                    at = [i for i in index if not isinstance(i, slice)]
                    plane = int(np.ravel_multi_index(at, planes)) if planes else 0
                    return plain.read(plane, y, x, height, width)
                return np.ascontiguousarray(self._arrays[series][tuple(index)])
            except MemoryError:
                raise
            except Exception as exc:
                # Damaged compressed data (e.g. a deflate tile): the file is corrupt.
                where = (
                    f"series {series} plane t={t} c={c} z={z}, "
                    f"rows {y}-{y + height - 1}, columns {x}-{x + width - 1}"
                )
                problem = f"{type(exc).__name__}: {exc}"
                raise IngestError(
                    self.path, f"corrupt or invalid file (cannot decode {where}: {problem})"
                ) from None

    def close(self) -> None:
        """Close the TIFF file."""
        if self._pool is not None:
            self._pool.shutdown()
        self._tif.close()


def _read_exactly(path: Path) -> tuple[bool, list[Any]] | None:
    """Return whether ``path`` is an OME-TIFF, and its series, if the fast path reads it."""
    try:
        with _reading(path), tifffile.TiffFile(path) as tif:
            series = _pick_series(tif)
            return None if series is None else (bool(tif.is_ome), series)
    except Exception:
        return None


def accepts(path: Path) -> bool:
    """Return whether the tifffile fast path reads ``path`` exactly."""
    return path.name.lower().endswith(TIFF_SUFFIXES) and _read_exactly(path) is not None


def ome_probe(path: Path) -> Probe | None:
    """Describe a single-file OME-TIFF as Bio-Formats' probe would, without a JVM.

    Only an OME-TIFF by name and content that :func:`accepts` reads and whose OME-XML
    names no other file qualifies: Bio-Formats then opens it with ``OMETiffReader``, as
    an acquisition of this one file, with the series tifffile lists. Whether a neighbour
    could claim it instead is the caller's question (the inventory asks it of the
    whole tree); the tests compare this with Bio-Formats' probe on every real sample.

    Parameters
    ----------
    path
        An absolute file path.

    Returns
    -------
    Probe or None
        What :func:`bioingest.probe.probe` returns for the file; None when the file is
        anything else, or tifffile cannot tell.
    """
    read = _read_exactly(path) if path.name.lower().endswith(OME_TIFF_SUFFIXES) else None
    if read is None or not read[0] or not read[1]:
        return None
    sizes = tuple(int(np.prod(s.shape)) * s.dtype.itemsize for s in read[1])
    text = str(path)
    return Probe(
        path=text,
        reader="OMETiffReader",
        format="OME-TIFF",
        main=text,
        used=(text,),
        series_bytes=sizes,
    )
