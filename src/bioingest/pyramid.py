"""Stage 4: intermediate Zarr -> final OME-Zarr with multiscale pyramids, streamed by block."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from numcodecs import Blosc
from zarr.codecs import BloscCodec

from bioingest import atomic, metadata, ngff, omexml, provenance
from bioingest.display import display_channels
from bioingest.errors import IngestError
from bioingest.progress import Progress
from bioingest.records import (
    SeriesRecord,
    SourceDescription,
    is_failure,
    read_intermediate,
    value_of,
)
from bioingest.targets import NgffVersion
from bioingest.tiles import tiles

log = logging.getLogger("bioingest")

Method = Literal["mean", "nearest", "mode"]
Layout = Literal["image", "bioformats2raw", "plate"]
AXES = ["t", "c", "z", "y", "x"]


@dataclass(frozen=True)
class StoreOptions:
    """How the final arrays are laid out and compressed.

    Attributes
    ----------
    version
        NGFF version: ``0.5`` (Zarr v3) or ``0.4`` (Zarr v2).
    chunk_size
        Edge of a chunk in Y and X.
    shard_chunks
        Chunks per shard edge (0.5 only); 0 or 1 disables sharding.
    compression_level
        zstd level of the final arrays.
    method
        Downsampling: ``mean`` for intensities, ``nearest`` or ``mode`` for labels.
    min_size
        Stop adding levels before the smaller plane edge drops below this.
    """

    version: NgffVersion = "0.5"
    chunk_size: int = 1024
    shard_chunks: int = 4
    compression_level: int = 5
    method: Method = "mean"
    min_size: int = 64

    @property
    def block(self) -> int:
        """Edge of the region written at once: one shard, so no shard is rewritten."""
        return self.chunk_size * max(self.shard_chunks, 1)


def level_shapes(size_y: int, size_x: int, opts: StoreOptions) -> list[tuple[int, int]]:
    """Plane shapes of every level: halve until the plane fits one chunk or gets too small."""
    shapes = [(size_y, size_x)]
    y, x = size_y, size_x
    while max(y, x) > opts.chunk_size and min(math.ceil(y / 2), math.ceil(x / 2)) >= opts.min_size:
        y, x = math.ceil(y / 2), math.ceil(x / 2)
        shapes.append((y, x))
    return shapes


def downsample(block: np.ndarray, method: Method) -> np.ndarray:
    """Halve a 2-D block in Y and X; odd edges are padded by repetition."""
    h, w = block.shape
    if h % 2 or w % 2:
        block = np.pad(block, ((0, h % 2), (0, w % 2)), mode="edge")
    if method == "nearest":
        nearest: np.ndarray = block[::2, ::2].copy()
        return nearest
    quads = np.stack([block[0::2, 0::2], block[0::2, 1::2], block[1::2, 0::2], block[1::2, 1::2]])
    if method == "mode":
        counts = np.stack([(quads == quads[i]).sum(axis=0) for i in range(4)])
        pick = counts.argmax(axis=0)[None]
        picked: np.ndarray = np.take_along_axis(quads, pick, axis=0)[0]
        return picked
    mean: np.ndarray = quads.mean(axis=0, dtype=np.float64)
    if np.issubdtype(block.dtype, np.integer):
        mean = np.rint(mean)
    result: np.ndarray = mean.astype(block.dtype)
    return result


def _create_level(
    group: zarr.Group, path: str, shape: tuple[int, ...], dtype: Any, opts: StoreOptions
) -> zarr.Array[Any]:
    cy, cx = min(opts.chunk_size, shape[3]), min(opts.chunk_size, shape[4])
    chunks = (1, 1, 1, cy, cx)
    if opts.version == "0.4":
        return group.create_array(
            path,
            shape=shape,
            dtype=dtype,
            chunks=chunks,
            # Blosc, not bare zstd: the Java Zarr v2 readers (Bio-Formats, OMERO, QuPath)
            # decode Blosc and zlib only.
            compressors=Blosc(cname="zstd", clevel=opts.compression_level, shuffle=Blosc.SHUFFLE),
            chunk_key_encoding={"name": "v2", "separator": "/"},
            fill_value=0,
        )
    shards = None
    if opts.shard_chunks > 1:
        ky = min(opts.shard_chunks, math.ceil(shape[3] / cy))
        kx = min(opts.shard_chunks, math.ceil(shape[4] / cx))
        shards = (1, 1, 1, cy * ky, cx * kx)
    return group.create_array(
        path,
        shape=shape,
        dtype=dtype,
        chunks=chunks,
        shards=shards,
        dimension_names=AXES,
        compressors=BloscCodec(cname="zstd", clevel=opts.compression_level, shuffle="shuffle"),
        fill_value=0,
    )


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


def write_image(
    group: zarr.Group, source: zarr.Array[Any], info: ImageInfo, *, opts: StoreOptions
) -> None:
    """Write one multiscale image into ``group`` from a TCZYX intermediate array.

    The ``omero`` block's display windows come from the data range measured while level 0
    is written.
    """
    size_t, size_c, size_z, size_y, size_x = source.shape
    low = np.full(size_c, np.inf)
    high = np.full(size_c, -np.inf)
    shapes = level_shapes(size_y, size_x, opts)
    progress = Progress(f"pyramid {info.name}", size_t * size_c * size_z * len(shapes))
    previous: Any = source
    for k, (ly, lx) in enumerate(shapes):
        level = _create_level(group, str(k), (size_t, size_c, size_z, ly, lx), source.dtype, opts)
        for t in range(size_t):
            for c in range(size_c):
                for z in range(size_z):
                    for y, x, h, w in tiles(ly, lx, opts.block):
                        if k == 0:
                            out = previous[t, c, z, y : y + h, x : x + w]
                            if out.size and not np.all(np.isnan(out)):
                                low[c] = min(low[c], float(np.nanmin(out)))
                                high[c] = max(high[c], float(np.nanmax(out)))
                        else:
                            out = _downsampled_block(previous, (t, c, z), y, x, h, w, opts)
                        level[t, c, z, y : y + h, x : x + w] = out
                    progress.advance()
        previous = level
    omero = ngff.omero(
        channels=info.channels,
        ranges=[(lo, hi) if lo <= hi else (0.0, 0.0) for lo, hi in zip(low, high, strict=True)],
        dtype=np.dtype(source.dtype),
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


def _downsampled_block(
    previous: Any, tcz: tuple[int, int, int], y: int, x: int, h: int, w: int, opts: StoreOptions
) -> np.ndarray:
    """One output block of level k, built in quarters so memory stays near one block."""
    t, c, z = tcz
    src_h, src_w = previous.shape[3], previous.shape[4]
    out = np.empty((h, w), dtype=previous.dtype)
    half = max(opts.block // 2, 1)
    for oy, ox, oh, ow in tiles(h, w, half):
        sy, sx = 2 * (y + oy), 2 * (x + ox)
        region = previous[t, c, z, sy : min(sy + 2 * oh, src_h), sx : min(sx + 2 * ow, src_w)]
        out[oy : oy + oh, ox : ox + ow] = downsample(np.asarray(region), opts.method)
    return out


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

    def series_array(i: int) -> zarr.Array[Any]:
        arr = src[str(i)]
        assert isinstance(arr, zarr.Array)
        return arr

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
