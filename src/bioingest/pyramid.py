"""Stage 2: the final OME-Zarr, its levels linked from convert's store (or built here)."""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr

from bioingest import arrays, atomic, metadata, ngff, omexml, provenance
from bioingest.arrays import Method, StoreOptions
from bioingest.display import display_channels
from bioingest.errors import IngestError
from bioingest.levels import (
    METHOD_ATTR,
    Ranges,
    downsample,
    finite_range,
    level_shapes,
    levels_of,
)
from bioingest.progress import Progress
from bioingest.records import (
    SeriesRecord,
    SourceDescription,
    is_failure,
    read_intermediate,
    value_of,
)
from bioingest.tiles import regions, tiles

log = logging.getLogger("bioingest")

Layout = Literal["image", "bioformats2raw", "plate"]


@dataclass(frozen=True)
class ImageInfo:
    """What the final store records about one series besides its pixels."""

    name: str
    physical_size_um: tuple[float | None, float | None, float | None]
    time_increment_s: float | None
    #: Label and hex colour of each channel, for the ``omero`` block.
    channels: list[tuple[str, str]]


def image_infos(xml: str, description: SourceDescription, *, dataset: str) -> list[ImageInfo]:
    """Names, scales and channel display of every series, from the metadata record."""
    records = metadata.build_record(xml, dataset=dataset)["series"]
    count = len(description["series"])
    infos = []
    for i, series in enumerate(description["series"]):
        record = records[i] if i < len(records) and len(records) == count else None

        def value(key: str, rec: SeriesRecord | None = record) -> Any:
            return value_of(rec, key) if rec else None

        default = dataset if count == 1 else f"{dataset} series {i}"
        infos.append(
            ImageInfo(
                name=value("name") or default,
                physical_size_um=(
                    value("physical_size_x_um"),
                    value("physical_size_y_um"),
                    value("physical_size_z_um"),
                ),
                time_increment_s=value("time_increment_s"),
                channels=display_channels(
                    record, int(series["shape"][1]), rgb=bool(series.get("rgb", False))
                ),
            )
        )
    return infos


def write_image(group: zarr.Group, source: Path, info: ImageInfo, *, opts: StoreOptions) -> None:
    """Write one multiscale image into ``group`` from a series ``convert`` wrote.

    ``source`` is the series' array folder in the intermediate store.

    Each level's chunk files are hard-linked from what ``convert`` wrote when it wrote
    that level with the same settings (level 0 always, the others with the same method
    too); else level 0 is re-encoded and each further level built from the one before,
    shard by shard. The ``omero`` block's display windows are the data ranges ``convert``
    measured, or are measured here from level 0.
    """
    series = zarr.open_array(source, mode="r")
    size_t, size_c, size_z, size_y, size_x = series.shape
    dtype = series.dtype
    planes = size_t * size_c * size_z
    shapes = level_shapes(size_y, size_x, opts)
    progress = Progress(f"pyramid {info.name}", planes * len(shapes))
    level0 = arrays.create_level(group, "0", series.shape, dtype, opts)
    _level_zero(source, level0, arrays.array_path(group, "0"), opts)
    progress.advance(planes)
    recorded = Ranges.recorded(series.attrs, size_c)
    measured = recorded is not None
    ranges = recorded or Ranges(size_c)
    built = levels_of(source)
    same_method = (
        built.is_dir() and zarr.open_group(built, mode="r").attrs.get(METHOD_ATTR) == opts.method
    )
    previous = arrays.array_path(group, "0")
    for k, (ly, lx) in enumerate(shapes[1:], start=1):
        arrays.create_level(group, str(k), (size_t, size_c, size_z, ly, lx), dtype, opts)
        path = arrays.array_path(group, str(k))
        ready = built / str(k)
        if same_method and ready.is_dir() and _metadata_of(ready) == _metadata_of(path):
            _link_chunks(ready, path)
            progress.advance(planes)
        else:
            _halve(previous, path, opts, None if measured else ranges, progress)
            measured = True
        previous = path
    if not measured:
        _scan(arrays.array_path(group, "0"), opts, ranges)
    omero = ngff.omero(
        channels=info.channels,
        ranges=ranges.windows(),
        dtype=np.dtype(dtype),
        default_z=size_z // 2,
    )
    ngff.write_multiscale(
        group,
        name=info.name,
        level_paths=[str(k) for k in range(len(shapes))],
        level_factors=[(2**k, 2**k) for k in range(len(shapes))],
        physical_size_um=info.physical_size_um,
        time_increment_s=info.time_increment_s,
        method=opts.method,
        omero=omero,
        version=opts.version,
    )


_METADATA_FILES = {"zarr.json", ".zarray", ".zattrs"}


def _metadata_of(path: Path) -> dict[str, Any]:
    """Return an array's metadata document, attributes left out."""
    name = "zarr.json" if (path / "zarr.json").is_file() else ".zarray"
    document = json.loads((path / name).read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    document.pop("attributes", None)
    return document


def _link_chunks(source: Path, target: Path) -> None:
    """Hard-link (or copy) an array's chunk files into an array created with its settings."""
    for item in sorted(source.iterdir()):
        if item.name in _METADATA_FILES:
            continue
        if item.is_dir():
            shutil.copytree(item, target / item.name, copy_function=atomic.link_or_copy)
        else:
            atomic.link_or_copy(str(item), str(target / item.name))


def _level_zero(source: Path, level0: zarr.Array[Any], target: Path, opts: StoreOptions) -> None:
    """Fill level 0 from the converted series: link its chunk files, or re-encode them."""
    if _metadata_of(source) == _metadata_of(target):
        _link_chunks(source, target)
        return
    # Written with other settings (a store option changed since convert): re-encode.
    reader = arrays.Reader(source, workers=opts.workers)
    indexes = regions(reader.shape, *arrays.block_edges(level0))
    with arrays.Writer(target, workers=opts.workers) as writer:
        for index, block in reader.blocks(indexes, held=arrays.IN_FLIGHT):
            writer.write(index, block)


def _halve(
    previous: Path, path: Path, opts: StoreOptions, ranges: Ranges | None, progress: Progress
) -> None:
    """Write level ``k`` at ``path`` from level ``k - 1``, one shard at a time.

    Each output shard is built from four input regions of at most one shard each, read
    ahead by the reader's threads and downsampled on a pool of threads; ``ranges`` (when
    given) collects each channel's range from the input regions, which cover the level.
    """
    reader = arrays.Reader(previous, workers=opts.workers)
    size_t, size_c, size_z, src_h, src_w = reader.shape
    out = zarr.open_array(path, mode="r")
    edge_y, edge_x = arrays.block_edges(out)
    ly, lx = int(out.shape[3]), int(out.shape[4])
    half_y, half_x = max(edge_y // 2, 1), max(edge_x // 2, 1)
    plan: list[tuple[tuple[int, int, int, int, int, int, int], tuple[Any, ...]]] = []
    for t in range(size_t):
        for c in range(size_c):
            for z in range(size_z):
                for y, x, h, w in tiles(ly, lx, edge_y, edge_x):
                    for oy, ox, oh, ow in tiles(h, w, half_y, half_x):
                        sy, sx = 2 * (y + oy), 2 * (x + ox)
                        region = (
                            t,
                            c,
                            z,
                            slice(sy, min(sy + 2 * oh, src_h)),
                            slice(sx, min(sx + 2 * ow, src_w)),
                        )
                        plan.append(((t, c, z, y, x, h, w), region))
    regions = [region for _, region in plan]
    quarters = Counter(key for key, _ in plan)
    blocks: dict[tuple[int, int, int, int, int, int, int], tuple[np.ndarray, list[int]]] = {}
    window: deque[tuple[tuple[int, int, int, int, int, int, int], Any, Future[Any]]] = deque()
    with (
        arrays.Writer(path, workers=opts.workers) as writer,
        ThreadPoolExecutor(max_workers=opts.workers) as pool,
    ):

        def place(key: tuple[int, int, int, int, int, int, int], region: Any, done: Any) -> None:
            t, c, z, y, x, h, w = key
            small, low, high = done.result()
            if ranges is not None:
                ranges.include(c, low, high)
            block, left = blocks.setdefault(key, (np.empty((h, w), dtype=reader.dtype), [0]))
            oy, ox = region[3].start // 2 - y, region[4].start // 2 - x
            block[oy : oy + small.shape[0], ox : ox + small.shape[1]] = small
            left[0] += 1
            if left[0] == quarters[key]:
                writer.write((t, c, z, slice(y, y + h), slice(x, x + w)), blocks.pop(key)[0])
                if (y, x) == (0, 0):
                    progress.advance()

        # Regions are downsampled on the pool's threads and placed in plan order.
        # held: regions still being downsampled when the next is asked for.
        inputs = reader.blocks(regions, held=opts.workers)
        for (key, _), (region, data) in zip(plan, inputs, strict=True):
            window.append((key, region, pool.submit(_quarter, data, opts.method, ranges)))
            if len(window) > opts.workers:
                place(*window.popleft())
        while window:
            place(*window.popleft())


def _quarter(
    data: np.ndarray, method: Method, ranges: Ranges | None
) -> tuple[np.ndarray, float, float]:
    """Downsample one input region; with ``ranges``, also return its finite range."""
    low, high = finite_range(data) if ranges is not None else (math.inf, -math.inf)
    return downsample(data, method), low, high


def _scan(path: Path, opts: StoreOptions, ranges: Ranges) -> None:
    """Collect each channel's range from a level that has no level after it."""
    reader = arrays.Reader(path, workers=opts.workers)
    for index, block in reader.blocks(regions(reader.shape, opts.block, opts.block), held=0):
        ranges.add(index[1], block)


def choose_layout(ome_xml: str, series_count: int) -> tuple[Layout, omexml.Plate | None]:
    """Plate layout for exactly one plate covering every series; bioformats2raw for several."""
    plates = omexml.plates(ome_xml)
    if len(plates) == 1:
        covered = [s for w in plates[0].wells for s in w.series]
        if sorted(covered) == list(range(series_count)):
            return "plate", plates[0]
    return ("bioformats2raw" if series_count > 1 else "image"), None


def _write_ome_group(root: zarr.Group, tmp: Path, xml: str) -> zarr.Group:
    ome = root.create_group("OME")
    atomic.write_text(tmp / "OME" / "METADATA.ome.xml", xml)
    return ome


def build(
    intermediate: Path,
    ome_xml_path: Path,
    out: Path,
    *,
    name: str,
    opts: StoreOptions,
    study: dict[str, Any] | None = None,
) -> Layout:
    """Write the final OME-Zarr for one dataset.

    Parameters
    ----------
    intermediate
        Store written by :func:`bioingest.convert.convert`.
    ome_xml_path
        The OME-XML saved next to it.
    out
        Final ``.ome.zarr`` folder; written atomically.
    name
        Dataset name, used for single images.
    opts
        Layout and compression options.
    study
        Study metadata for the store's own RO-Crate (licence, organism, modality).

    Returns
    -------
    str
        The layout written: ``image``, ``bioformats2raw`` or ``plate``.
    """
    src = zarr.open_group(intermediate, mode="r")
    description = read_intermediate(src)
    if is_failure(description):
        raise IngestError(intermediate, "holds no image: the source could not be read")
    count = len(description["series"])
    xml = ome_xml_path.read_text(encoding="utf-8")
    infos = image_infos(xml, description, dataset=name)

    layout, plate = choose_layout(xml, count)
    log.info("pyramid %s: %s layout, %d series, NGFF %s", name, layout, count, opts.version)
    zarr_format: Literal[2, 3] = 3 if opts.version == "0.5" else 2

    def series_array(i: int) -> Path:
        return intermediate / str(i)

    with atomic.atomic_dir(out) as tmp:
        root = zarr.open_group(tmp, mode="w", zarr_format=zarr_format)
        if layout == "image":
            write_image(root, series_array(0), infos[0], opts=opts)
        elif layout == "bioformats2raw":
            for i in range(count):
                write_image(root.create_group(str(i)), series_array(i), infos[i], opts=opts)
            ome = _write_ome_group(root, tmp, xml)
            ngff.write_collection(
                root, ome, series=[str(i) for i in range(count)], version=opts.version
            )
        else:
            assert plate is not None
            paths = _write_plate(root, plate, series_array, infos, name=name, opts=opts)
            ome = _write_ome_group(root, tmp, xml)
            ngff.describe_series(ome, series=paths, version=opts.version)
        provenance.write_store_crate(tmp, name=name, study=study)
    return layout


def _write_plate(
    root: zarr.Group,
    plate: omexml.Plate,
    series_array: Any,
    infos: list[ImageInfo],
    *,
    name: str,
    opts: StoreOptions,
) -> list[str]:
    """Write an NGFF plate; return each series' image path, in series order."""
    rows = [ngff.row_name(r, plate.row_naming) for r in range(plate.rows)]
    cols = [ngff.column_name(c, plate.column_naming) for c in range(plate.columns)]
    paths: dict[int, str] = {}
    for well in plate.wells:
        well_path = f"{rows[well.row]}/{cols[well.column]}"
        row_group = root.require_group(rows[well.row])
        well_group = row_group.create_group(cols[well.column])
        fields = []
        for field, s in enumerate(well.series):
            write_image(well_group.create_group(str(field)), series_array(s), infos[s], opts=opts)
            fields.append(str(field))
            paths[s] = f"{well_path}/{field}"
        ngff.write_well(well_group, fields=fields, version=opts.version)
    ngff.write_plate(
        root,
        name=plate.name or name,
        rows=rows,
        columns=cols,
        wells=[(w.row, w.column) for w in plate.wells],
        field_count=max(len(w.series) for w in plate.wells),
        version=opts.version,
    )
    return [paths[s] for s in sorted(paths)]


def write_step(
    intermediate: Path,
    ome_xml_path: Path,
    out: Path,
    *,
    source_json: Path | None,
    opts: StoreOptions,
    name: str,
    study: dict[str, Any] | None = None,
) -> bool:
    """Run the pyramid step of one dataset: its final store, or a note in its place.

    Parameters
    ----------
    intermediate, ome_xml_path, out, name, opts, study
        As for :func:`build`.
    source_json
        ``{dataset}.source.json``: when ``convert`` recorded a failure there, ``out`` gets
        a note saying why instead of images.

    Returns
    -------
    bool
        Whether a store with images was written.
    """
    from bioingest.outcomes import recorded_failure, write_failed_store

    if failure := recorded_failure(source_json):
        write_failed_store(out, failure)
        return False
    build(intermediate, ome_xml_path, out, name=name, opts=opts, study=study)
    return True
