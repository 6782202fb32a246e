"""Stage 1: read a source once and stream its full-resolution pixels into an intermediate Zarr."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import zarr
from zarr.codecs import BloscCodec

from bioingest import __version__, atomic
from bioingest.errors import IngestError, ServiceError
from bioingest.progress import Progress
from bioingest.readers import ReaderChoice, SeriesInfo, SourceReader, open_source
from bioingest.records import (
    ATTR,
    SourceDescription,
    SourceRecord,
    is_failure,
    read_source,
    source_json,
    write_intermediate,
)
from bioingest.tiles import tiles

log = logging.getLogger("bioingest")


def _copy_series(reader: SourceReader, info: SeriesInfo, root: zarr.Group, tile: int) -> None:
    chunks = (1, 1, 1, min(tile, info.size_y), min(tile, info.size_x))
    arr = root.create_array(
        str(info.index),
        shape=info.shape,
        dtype=info.dtype,
        chunks=chunks,
        dimension_names=["t", "c", "z", "y", "x"],
        compressors=BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
        fill_value=0,
    )
    plane_tiles = tiles(info.size_y, info.size_x, tile)
    progress = Progress(
        f"convert {reader.path.name} series {info.index + 1}/{len(reader.series)}",
        info.size_t * info.size_c * info.size_z * len(plane_tiles),
    )
    # Channels stored together (colour samples) are read as one block: one decode per tile.
    step = info.samples
    for t in range(info.size_t):
        for c in range(0, info.size_c, step):
            for z in range(info.size_z):
                for y, x, h, w in plane_tiles:
                    if step == 1:
                        block = reader.read_tile(info.index, t, c, z, y, x, h, w)[None]
                    else:
                        block = reader.read_samples(info.index, t, c, z, y, x, h, w)
                    arr[t, c : c + step, z, y : y + h, x : x + w] = block
                    progress.advance(step)


def convert(
    source: Path,
    *,
    zarr_path: Path | None = None,
    ome_xml_path: Path | None = None,
    source_json_path: Path | None = None,
    series: tuple[int, int] | None = None,
    reader: ReaderChoice | SourceReader = "auto",
    tile_size: int = 1024,
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
        Edge of the tiles read and written; with the pixel type it bounds memory use.
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
                    root = zarr.open_group(tmp, mode="w", zarr_format=3)
                    for info in selected:
                        _copy_series(src, info, root, tile_size)
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
                write_intermediate(zarr.open_group(tmp, mode="w", zarr_format=3), description)
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


def split(series_count: int, per_part: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each part when ``per_part`` series are converted per job."""
    return [
        (start, min(start + per_part, series_count)) for start in range(0, series_count, per_part)
    ]


def _link_or_copy(src: str, dst: str) -> None:
    # A hard link shares the bytes without touching the part; nothing writes to either.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


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
    for part in parts:
        group = zarr.open_group(part, mode="r")
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
    with atomic.atomic_dir(zarr_path) as tmp:
        root = zarr.open_group(tmp, mode="w", zarr_format=3)
        for name, part in owner.items():
            shutil.copytree(part / name, tmp / name, copy_function=_link_or_copy)
        write_intermediate(root, description)
    log.info("assemble %s: %d series from %d parts", zarr_path.name, len(owner), len(parts))
