"""Stage 1: read a source once into its final levels, hashing the pixels as they are read.

Each series becomes one array of an intermediate store, laid out and compressed as the
final store's level 0, and its further levels are built from the same bands
(``levels/SERIES/K``, :class:`~bioingest.levels.BandLevels`); ``pyramid`` then links them
into place. The pixel-content hash (:mod:`bioingest.pixelhash`) and each channel's data
range are taken from the pixels as the reader returned them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import zarr

from bioingest import __version__, arrays, atomic
from bioingest.arrays import StoreOptions
from bioingest.errors import IngestError, ServiceError
from bioingest.levels import LEVELS, RANGE_ATTR, BandLevels, Ranges, levels_of
from bioingest.progress import Progress
from bioingest.readers import ReaderChoice, SeriesInfo, SourceReader, open_source
from bioingest.records import (
    ATTR,
    PIXEL_HASH,
    SourceDescription,
    SourceRecord,
    is_failure,
    read_source,
    source_json,
    write_intermediate,
)

log = logging.getLogger("bioingest")


#: Largest band of full-width rows read at once, bytes (one chunk row when it fits).
BAND_BYTES = 64 * 1024 * 1024
#: Bytes of a spill file hashed at once.
SPILL_READ = 16 * 1024 * 1024


def _band_rows(info: SeriesInfo, chunk_rows: int) -> int:
    """Rows per band: one chunk row if it fits :data:`BAND_BYTES`, else fewer."""
    row = info.size_x * np.dtype(info.dtype).itemsize * info.samples
    return max(1, min(chunk_rows, BAND_BYTES // max(row, 1)))


def _read_band(
    reader: SourceReader, info: SeriesInfo, tcz: tuple[int, int, int], y: int, h: int, width: int
) -> np.ndarray:
    """Return rows ``y:y+h`` of plane ``tcz`` as ``(samples, h, size_x)``.

    The rows are read ``width`` columns at a time; a whole-width read of one sample is
    returned as the reader made it, without a copy.
    """
    t, c, z = tcz
    if info.samples == 1 and width >= info.size_x:
        return reader.read_tile(info.index, t, c, z, y, 0, h, info.size_x)[np.newaxis]
    band = np.empty((info.samples, h, info.size_x), dtype=info.dtype)
    for x in range(0, info.size_x, width):
        w = min(width, info.size_x - x)
        if info.samples == 1:
            band[0, :, x : x + w] = reader.read_tile(info.index, t, c, z, y, x, h, w)
        else:
            band[:, :, x : x + w] = reader.read_samples(info.index, t, c, z, y, x, h, w)
    return band


def _copy_series(
    reader: SourceReader, info: SeriesInfo, root: zarr.Group, opts: StoreOptions, tile: int
) -> str:
    """Write one series as the final levels; return the pixel hash of what was read.

    The source is read once, in bands of full-width rows (in tiles of ``tile`` columns
    unless the reader reads whole rows as cheaply), and each band is hashed in canonical
    order while the writer's threads encode the one before. Colour samples stored together
    are hashed in canonical order too: the first sample directly, the others from spill
    files once their planes are complete. Each band also goes to the further levels
    (``levels/SERIES``) and to its channel's data range (the series array's
    :data:`~bioingest.levels.RANGE_ATTR`).
    """
    arr = arrays.create_level(root, str(info.index), info.shape, info.dtype, opts)
    levels = root.require_group(LEVELS).create_group(str(info.index))
    ranges = Ranges(info.size_c)
    rows = _band_rows(info, int(arr.chunks[3]))
    step = info.samples
    little = np.dtype(info.dtype).newbyteorder("<")
    digest = hashlib.sha256()
    bands = range(0, info.size_y, rows)
    progress = Progress(
        f"convert {reader.path.name} series {info.index + 1}/{len(reader.series)}",
        info.size_t * info.size_c * info.size_z * len(bands),
    )
    width = info.size_x if reader.reads_whole_rows else tile
    path = arrays.array_path(root, str(info.index))
    with (
        arrays.Writer(path, workers=opts.workers) as writer,
        BandLevels(levels, info.shape, info.dtype, opts=opts) as smaller,
    ):
        for t in range(info.size_t):
            for c in range(0, info.size_c, step):
                with contextlib.ExitStack() as stack:
                    spills = [
                        stack.enter_context(tempfile.TemporaryFile()) for _ in range(step - 1)
                    ]
                    for z in range(info.size_z):
                        for y in bands:
                            h = min(rows, info.size_y - y)
                            band = _read_band(reader, info, (t, c, z), y, h, width)
                            ordered = band.astype(little, copy=False)
                            digest.update(np.ascontiguousarray(ordered[0]).data)
                            for spill, sample in zip(spills, ordered[1:], strict=True):
                                spill.write(np.ascontiguousarray(sample).data)
                            writer.write((t, slice(c, c + step), z, slice(y, y + h)), band)
                            for s, plane in enumerate(band):
                                ranges.add(c + s, plane)
                                smaller.add((t, c + s, z), plane, last=y + h >= info.size_y)
                            progress.advance(step)
                    for spill in spills:
                        spill.seek(0)
                        while piece := spill.read(SPILL_READ):
                            digest.update(piece)
    if (record := ranges.record()) is not None:
        arr.attrs[RANGE_ATTR] = record
    return digest.hexdigest()


def convert(
    source: Path,
    *,
    zarr_path: Path | None = None,
    ome_xml_path: Path | None = None,
    source_json_path: Path | None = None,
    series: tuple[int, int] | None = None,
    reader: ReaderChoice | SourceReader = "auto",
    tile_size: int = 1024,
    opts: StoreOptions | None = None,
    jar: str | None = None,
    maven: str | None = None,
    heap_mb: int = 1024,
    jvm_server: bool = False,
    single_file: bool = False,
    record_failure: bool = False,
) -> SourceRecord:
    """Convert ``source`` losslessly into an intermediate Zarr plus its OME-XML.

    Parameters
    ----------
    source
        The dataset's main file; companions are found by the reader.
    zarr_path
        Intermediate Zarr v3 store to create (one TCZYX array per series); None only
        describes the source (OME-XML and JSON), as the first step of a split conversion.
    ome_xml_path
        Where to keep the reader's complete OME-XML.
    source_json_path
        Where to keep the description (reader, format, files used, series shapes) as JSON.
    series
        ``(start, stop)``: convert only these series (a part of a split conversion, to be
        joined by :func:`assemble`); None converts them all.
    reader
        ``auto``, ``bioformats`` or ``tifffile``; or a :class:`SourceReader` already
        opened on ``source`` (read instead of opening the file, and closed when done).
    tile_size
        Width of the tiles read; with the pixel type it bounds the reader's memory use.
    opts
        Layout, codec and levels of the final store: each series is written as its
        levels, which ``pyramid`` links into the final store when its settings are the same
        (default: :class:`~bioingest.arrays.StoreOptions`).
    jar, maven, heap_mb
        Bio-Formats location and Java heap; see :func:`bioingest.java.start_jvm`.
    jvm_server
        Read through the machine's Bio-Formats server; see :func:`open_source`.
    single_file
        The inventory found the source to be an acquisition of one file: only then may
        ``auto`` read it with tifffile.
    record_failure
        When the source cannot be read (bad input), record why in the JSON description
        (``failure``), write an empty intermediate store and return, instead of raising.

    Returns
    -------
    SourceRecord
        The description stored in the intermediate store's attributes.
    """
    opts = opts or StoreOptions()
    ome_xml = ""
    description: SourceRecord
    try:
        opened = (
            reader
            if isinstance(reader, SourceReader)
            else open_source(
                source,
                reader=reader,
                jar=jar,
                maven=maven,
                heap_mb=heap_mb,
                jvm_server=jvm_server,
                single_file=single_file,
                threads=opts.workers,
            )
        )
        with opened as src:
            ome_xml = src.ome_xml
            description = _describe(source, src)
            log.info(
                "convert %s: %s via %s, %d series",
                source.name,
                src.format_name,
                src.name,
                len(src.series),
            )
            selected = src.series
            if series is not None:
                start, stop = series
                if not 0 <= start < stop <= len(src.series):
                    raise IngestError(
                        source, f"series {start}:{stop} out of range (it has {len(src.series)})"
                    )
                selected = src.series[start:stop]
            if zarr_path is not None:
                with atomic.atomic_dir(zarr_path) as tmp:
                    root = zarr.open_group(tmp, mode="w", zarr_format=opts.zarr_format)
                    for info in selected:
                        digest = _copy_series(src, info, root, opts, tile_size)
                        root[str(info.index)].attrs[PIXEL_HASH] = digest
                    write_intermediate(root, description)
    except IngestError as exc:
        if not record_failure or isinstance(exc, ServiceError):
            raise
        # Bad input: recorded as this dataset's outcome; the rest of the run goes on.
        problem = exc.problem.replace(f"{source.parent}{os.sep}", "")
        log.error("%s: %s", source.name, problem)
        description = {
            "source": source.name,
            "bioingest_version": __version__,
            "failure": {"step": "convert", "reason": problem},
        }
        if zarr_path is not None:
            with atomic.atomic_dir(zarr_path) as tmp:
                group = zarr.open_group(tmp, mode="w", zarr_format=opts.zarr_format)
                write_intermediate(group, description)
    if ome_xml_path is not None:
        atomic.write_text(ome_xml_path, ome_xml)
    if source_json_path is not None:
        atomic.write_text(source_json_path, source_json(description))
    return description


def _describe(source: Path, src: SourceReader) -> SourceDescription:
    """Return what the intermediate store and ``{dataset}.source.json`` say of the source."""
    return {
        "source": source.name,
        "reader": src.name,
        "format": src.format_name,
        "bioingest_version": __version__,
        "used_files": [p.name for p in src.used_files],
        "series": [
            {"index": s.index, "shape": list(s.shape), "dtype": s.dtype, "rgb": s.rgb}
            for s in src.series
        ],
    }


def assemble(parts: list[Path], *, source_json_path: Path, zarr_path: Path) -> None:
    """Join the part stores of a split conversion into one intermediate store.

    Each part holds disjoint series, written by its own job. The parts are checked first
    (same source, no series twice, none missing); then their arrays are hard-linked
    (copied across file systems) into a new store that appears under ``zarr_path`` only
    when complete. The parts are never changed: a kill at any point leaves them whole,
    so the rerun starts again from them.

    Parameters
    ----------
    parts
        Stores written by :func:`convert` with ``series`` set.
    source_json_path
        The description written when the source was described; the parts must match it.
    zarr_path
        The intermediate store to create, as :func:`convert` would have written it.
    """
    description = read_source(source_json_path)
    if is_failure(description):
        raise IngestError(source_json_path, "describes a source that could not be read")
    owner: dict[str, Path] = {}
    formats = set()
    for part in parts:
        group = zarr.open_group(part, mode="r")
        formats.add(group.metadata.zarr_format)
        written = group.attrs.get(ATTR)
        if not isinstance(written, dict) or written.get("series") != description["series"]:
            raise IngestError(part, f"is not a part of the source {source_json_path} describes")
        for name in sorted(group.array_keys(), key=int):
            if name in owner:
                raise IngestError(part, f"series {name} is also in {owner[name]}")
            owner[name] = part
    missing = [str(s["index"]) for s in description["series"] if str(s["index"]) not in owner]
    if missing:
        raise IngestError(zarr_path, f"no part holds series {', '.join(missing)}")
    if len(formats) > 1:
        raise IngestError(zarr_path, "the parts were written with different store settings")
    with atomic.atomic_dir(zarr_path) as tmp:
        root = zarr.open_group(tmp, mode="w", zarr_format=formats.pop())
        root.require_group(LEVELS)
        for name, part in owner.items():
            shutil.copytree(part / name, tmp / name, copy_function=atomic.link_or_copy)
            built = levels_of(part / name)
            if built.is_dir():
                shutil.copytree(built, levels_of(tmp / name), copy_function=atomic.link_or_copy)
        write_intermediate(root, description)
    log.info("assemble %s: %d series from %d parts", zarr_path.name, len(owner), len(parts))
