"""Stage 4: per-channel and per-plane quality metrics with pass/warn/fail flags, and thumbnails.

Everything is streamed from the final level 0, decoded again (bands of rows cut into
tiles), so memory does not grow with the image; the same pass hashes the pixels for the
fidelity check. docs/qc.md gives each formula and its source.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from bioingest import arrays, atomic, layout
from bioingest.display import display_channels
from bioingest.errors import IngestError
from bioingest.pixelhash import pixel_hash
from bioingest.progress import Progress
from bioingest.qc_checks import ChannelFacts, Thresholds, as_json, channel_checks, overall
from bioingest.qc_histogram import Histogram, exact_dtype
from bioingest.records import (
    ChannelQC,
    Flag,
    PlaneQC,
    QCReport,
    SeriesMeasures,
    SeriesQC,
    SeriesRecord,
    StoreInfo,
    is_failure,
    qc_json,
    read_intermediate,
    read_metadata,
    recorded_pixel_hash,
)
from bioingest.store import image_paths
from bioingest.tiles import regions, tiles

log = logging.getLogger("bioingest")
#: Bins of the histogram kept in qc.json for plots.
PLOT_BINS = 64
#: Most cells along a plane edge: larger planes get larger cells (bounded memory).
MAX_CELLS = 1024

__all__ = ["Thresholds", "power_log_log_slope", "run_qc", "thresholds_from_config"]


def thresholds_from_config(config: dict[str, Any]) -> Thresholds:
    """Thresholds from the workflow configuration (``qc_*`` keys, ``tile_size``)."""
    values: dict[str, Any] = {}
    for item in dataclasses.fields(Thresholds):
        key = "tile_size" if item.name == "tile_size" else f"qc_{item.name}"
        if key in config:
            default: Any = item.default
            values[item.name] = type(default)(config[key])
    return Thresholds(**values)


def power_log_log_slope(plane: np.ndarray) -> float | None:
    """Slope of log(radially averaged power spectrum) against log(spatial frequency).

    After CellProfiler's MeasureImageQuality ``PowerLogLogSlope``: sharper images keep more
    high-frequency power, so their slope is less negative.
    """
    img = plane.astype(np.float64)
    h, w = img.shape
    if min(h, w) < 8 or not np.isfinite(img).all() or not np.ptp(img) > 0:
        return None
    img = img - img.mean()
    power = np.abs(np.fft.fftshift(np.fft.fft2(img))) ** 2
    yy, xx = np.indices(power.shape)
    radius = np.hypot(yy - h // 2, xx - w // 2).astype(np.int64)
    limit = min(h, w) // 2
    sums = np.bincount(radius.ravel(), weights=power.ravel(), minlength=limit + 1)[: limit + 1]
    counts = np.bincount(radius.ravel(), minlength=limit + 1)[: limit + 1]
    freqs = np.arange(1, limit + 1)
    mean_power = sums[1:] / np.maximum(counts[1:], 1)
    keep = mean_power > 0
    if keep.sum() < 3:
        return None
    slope, _ = np.polyfit(np.log(freqs[keep]), np.log(mean_power[keep]), 1)
    return float(slope)


@dataclass
class _Channel:
    """Accumulators for one channel over all its planes."""

    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    saturated: int = 0
    zeros: int = 0
    cells: _CellTally = field(default_factory=lambda: _CellTally())
    regions: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))
    region_counts: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))
    hist: Histogram | None = None


def _bounds(size: int) -> list[int]:
    return [0, size // 3, 2 * size // 3, size]


def _region_parts(
    tile: np.ndarray, y: int, x: int, ys: list[int], xs: list[int], total: float | None = None
) -> list[tuple[int, int, float, int]]:
    """``(row, column, sum, pixels)`` of the parts of a tile in each ninth of the plane.

    ``total``, the tile's exact sum when known, is the sum of a tile inside one ninth.
    """
    h, w = tile.shape
    parts = []
    for i in range(3):
        y0, y1 = max(ys[i], y), min(ys[i + 1], y + h)
        if y0 >= y1:
            continue
        for j in range(3):
            x0, x1 = max(xs[j], x), min(xs[j + 1], x + w)
            if x0 >= x1:
                continue
            block = tile[y0 - y : y1 - y, x0 - x : x1 - x]
            if total is not None and block.size == tile.size:
                parts.append((i, j, total, block.size))
            else:
                parts.append((i, j, float(block.sum(dtype=np.float64)), block.size))
    return parts


def _region_sums(
    tile: np.ndarray, y: int, x: int, ys: list[int], xs: list[int], acc: _Channel
) -> None:
    for i, j, total, size in _region_parts(tile, y, x, ys, xs):
        acc.regions[i, j] += total
        acc.region_counts[i, j] += size


def _cell_starts(start: int, length: int, cell: int) -> np.ndarray:
    """Offsets (within a tile starting at ``start``) where a new cell begins."""
    first = -(-start // cell) * cell
    inner = np.arange(first, start + length, cell) - start
    return np.unique(np.concatenate([[0], inner[inner > 0]])).astype(np.intp)


#: Cell means are binned on a log scale: LOG_STEPS bins per doubling (1.1 % wide).
LOG_STEPS = 64


def _log_bin(means: np.ndarray) -> np.ndarray:
    """Bin of each cell mean: ``floor(log2(1 + mean) * LOG_STEPS)``; 0 for mean <= 0."""
    scaled = np.log2(1.0 + np.maximum(means, 0.0)) * LOG_STEPS
    bins: np.ndarray = np.floor(scaled).astype(np.int64)
    return bins


_CellPart = tuple[tuple[slice, slice], np.ndarray, np.ndarray | None]


class _Cells:
    """Per-plane grid of cells: pixel sums and zero counts (foreground and clipping)."""

    def __init__(self, size_y: int, size_x: int, edge: int) -> None:
        self.edge = max(edge, -(-max(size_y, size_x) // MAX_CELLS))
        shape = (-(-size_y // self.edge), -(-size_x // self.edge))
        rows = np.minimum(self.edge, size_y - np.arange(shape[0]) * self.edge)
        cols = np.minimum(self.edge, size_x - np.arange(shape[1]) * self.edge)
        self.area = np.outer(rows, cols).astype(np.int64)
        self.sums = np.zeros(shape)
        self.zeros = np.zeros(shape, dtype=np.int64)

    def add(self, tile: np.ndarray, zero: np.ndarray | None, y: int, x: int) -> None:
        """Add a tile's sums and zeros (``zero``: its zero pixels; None when it has none)."""
        self.merge(self.measure(tile, zero, y, x))

    def measure(self, tile: np.ndarray, zero: np.ndarray | None, y: int, x: int) -> _CellPart:
        """Return the cells a tile covers, with its sums and zero counts in them."""
        h, w = tile.shape
        e = self.edge
        r0, c0 = y // e, x // e
        if y % e == 0 and x % e == 0 and h % e == 0 and w % e == 0:
            # Whole cells: sums of an integer tile are exact in int64.
            where = (slice(r0, r0 + h // e), slice(c0, c0 + w // e))
            if tile.dtype.kind in "uib":
                # Rows of each cell first: contiguous additions, several times faster.
                rows = tile.reshape(h // e, e, w).sum(axis=1, dtype=np.int64)
                sums = rows.reshape(h // e, w // e, e).sum(axis=2)
            else:
                sums = tile.reshape(h // e, e, w // e, e).sum(axis=(1, 3), dtype=np.float64)
            zeros = None
            if zero is not None:
                zeros = np.count_nonzero(zero.reshape(h // e, e, w // e, e), (1, 3))
            return where, sums, zeros
        rs, cs = _cell_starts(y, h, e), _cell_starts(x, w, e)
        where = (slice(r0, r0 + rs.size), slice(c0, c0 + cs.size))
        f = tile.astype(np.float64, copy=False)
        sums = np.add.reduceat(np.add.reduceat(f, rs, axis=0), cs, axis=1)
        zeros = None
        if zero is not None:
            zeros = np.add.reduceat(np.add.reduceat(zero.astype(np.int64), rs, axis=0), cs, axis=1)
        return where, sums, zeros

    def merge(self, part: _CellPart) -> None:
        """Add what :meth:`measure` returned."""
        where, sums, zeros = part
        self.sums[where] += sums
        if zeros is not None:
            self.zeros[where] += zeros


def _next_to(mask: np.ndarray) -> np.ndarray:
    """Cells that touch a cell of ``mask`` (8-neighbourhood) without being in it."""
    padded = np.pad(mask, 1)
    h, w = mask.shape
    near = np.zeros_like(mask)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            near |= padded[dy : dy + h, dx : dx + w]
    out: np.ndarray = near & ~mask
    return out


class _CellTally:
    """Pixels and zeros of a channel's cells, by log-binned cell mean, over all planes.

    Memory is bounded, and the foreground level can be chosen once the channel is done.
    """

    def __init__(self) -> None:
        self.pixels = np.zeros(0, dtype=np.int64)
        self.zeros = np.zeros(0, dtype=np.int64)
        self.top = 0.0
        #: Pixels of cells that are entirely zero (padding or a subtracted background).
        self.empty = 0

    def add(self, cells: _Cells) -> None:
        means = cells.sums / cells.area
        self.top = max(self.top, float(means.max()))
        empty = cells.zeros == cells.area
        self.empty += int(cells.area[empty].sum())
        # Zeros of cells next to an empty cell are the edge of padding (a tile or mosaic
        # border, a deskew triangle), not clipped signal.
        zeros = np.where(_next_to(empty), 0, cells.zeros)
        bins = _log_bin(means).ravel()
        size = max(int(bins.max()) + 1, self.pixels.size)
        self.pixels = np.pad(self.pixels, (0, size - self.pixels.size))
        self.zeros = np.pad(self.zeros, (0, size - self.zeros.size))
        self.pixels += np.bincount(bins, weights=cells.area.ravel(), minlength=size).astype(
            np.int64
        )
        self.zeros += np.bincount(bins, weights=zeros.ravel(), minlength=size).astype(np.int64)

    def foreground(self, level: float) -> tuple[int, int]:
        """``(pixels, zeros)`` of the channel's foreground cells (to within one bin).

        A foreground cell's mean is at least ``level`` x the brightest cell mean of the
        channel.
        """
        if not self.top > 0:
            return 0, 0
        first = int(_log_bin(np.array([level * self.top]))[0])
        return int(self.pixels[first:].sum()), int(self.zeros[first:].sum())


#: Largest band of full-width rows read at once for the pixel hash, bytes; wider images
#: are hashed in a pass of their own.
HASH_BAND_BYTES = 64 * 1024 * 1024


class _Plane:
    """Accumulators of one plane: pixel count, sums, range and cells."""

    def __init__(self, size_y: int, size_x: int, cell_size: int) -> None:
        self.count = 0
        self.total = 0.0
        self.total_sq = 0.0
        self.low, self.high = math.inf, -math.inf
        self.cells = _Cells(size_y, size_x, cell_size)


def _add_tile(
    tile: np.ndarray,
    y: int,
    x: int,
    plane: _Plane,
    acc: _Channel,
    bounds: tuple[list[int], list[int]],
    saturation_value: float | None,
) -> None:
    """Add one tile to its plane's and its channel's accumulators."""
    f = tile.astype(np.float64)
    finite = np.isfinite(f)
    if tile.dtype.kind == "f" and not finite.all():
        f = np.where(finite, f, 0.0)
    valid = f[finite] if tile.dtype.kind == "f" else f
    plane.count += int(valid.size)
    plane.total += float(valid.sum())
    plane.total_sq += float((valid * valid).sum())
    if valid.size:
        plane.low = min(plane.low, float(valid.min()))
        plane.high = max(plane.high, float(valid.max()))
    if acc.hist is not None:
        acc.hist.add(tile)
    if saturation_value is not None:
        acc.saturated += int(np.count_nonzero(tile == saturation_value))
    zero = tile == 0
    acc.zeros += int(np.count_nonzero(zero))
    _region_sums(f, y, x, *bounds, acc)
    plane.cells.add(f, zero, y, x)


@dataclass
class _TileCounts:
    """What one 8- or 16-bit unsigned tile adds, measured apart from the accumulators.

    ``total`` and ``total_sq`` are exact integer sums over the values present, ``low``
    and ``high`` its range (the tile is never empty).
    """

    counts: np.ndarray
    total: int
    total_sq: int
    low: int
    high: int
    regions: list[tuple[int, int, float, int]]
    cells: _CellPart


def _count_tile(
    band: np.ndarray,
    at: tuple[int, int],
    edge: int,
    cells: _Cells,
    bounds: tuple[list[int], list[int]],
    dx: int,
) -> _TileCounts:
    """Measure the tile of ``band`` from column ``dx`` without changing any accumulator.

    ``band`` starts at plane offset ``at``; tiles measured so can be measured at once.
    The sums come from the counts: exact, and no BLAS call (whose threads spin). A tile
    inside one ninth of the plane takes its region sum from them too.
    """
    tile = band[:, dx : dx + edge]
    y, x = at[0], at[1] + dx
    counts = np.bincount(tile.ravel(), minlength=1 << (8 * tile.dtype.itemsize))
    seen = np.flatnonzero(counts)
    weights = counts[seen].astype(np.int64)
    values = seen.astype(np.int64)
    total = int((weights * values).sum())
    total_sq = int((weights * values * values).sum())
    zero = tile == 0 if counts[0] else None
    return _TileCounts(
        counts,
        total,
        total_sq,
        int(seen[0]),
        int(seen[-1]),
        _region_parts(tile, y, x, *bounds, total=float(total)),
        cells.measure(tile, zero, y, x),
    )


def _add_counts(
    part: _TileCounts, plane: _Plane, acc: _Channel, saturation_value: float | None
) -> None:
    """Add a tile measured by :func:`_count_tile`, in tile order.

    The counts give the sums, the range, the zeros and the saturated pixels exactly
    (each tile's sums are below 2**53, so they equal the float sums of the general path).
    """
    counts = part.counts
    plane.count += int(counts.sum())
    plane.total += float(part.total)
    plane.total_sq += float(part.total_sq)
    plane.low = min(plane.low, float(part.low))
    plane.high = max(plane.high, float(part.high))
    if acc.hist is not None:
        acc.hist.counts += counts
    if saturation_value is not None and saturation_value < counts.size:
        acc.saturated += int(counts[int(saturation_value)])
    acc.zeros += int(counts[0])
    for i, j, total, size in part.regions:
        acc.regions[i, j] += total
        acc.region_counts[i, j] += size
    plane.cells.merge(part.cells)


def _series_qc(
    array: arrays.Reader,
    record: SeriesRecord | None,
    labels: list[tuple[str, str]],
    th: Thresholds,
    progress: Progress,
    *,
    rgb: bool = False,
    workers: int = 1,
) -> tuple[SeriesMeasures, str]:
    """Measure one series; return the measures and the pixel hash of what was read.

    The planes are read in canonical order (T, C, Z), in bands of full-width rows read
    ahead, so the same pass hashes them (see :mod:`bioingest.pixelhash`). Bands wider
    than :data:`HASH_BAND_BYTES` are read as tiles, and hashed in a pass of their own.
    8- and 16-bit unsigned tiles are measured on ``workers`` threads.
    """
    _, size_c, size_z, size_y, size_x = array.shape
    dtype = np.dtype(array.dtype)
    significant = record["significant_bits"]["value"] if record else None
    saturation_value: float | None = None
    if dtype.kind in "ui":
        bits = int(significant or dtype.itemsize * 8)
        saturation_value = float(min(2**bits - 1, np.iinfo(dtype).max))
    channels = [_Channel() for _ in range(size_c)]
    for acc in channels:
        if exact_dtype(dtype):
            acc.hist = Histogram.for_dtype(dtype)
    bounds = (_bounds(size_y), _bounds(size_x))
    rows = th.tile_size
    digest = hashlib.sha256() if rows * size_x * dtype.itemsize <= HASH_BAND_BYTES else None
    little = dtype.newbyteorder("<")
    planes: list[PlaneQC] = []
    focus_edge = min(th.focus_crop, size_y, size_x)
    # Bands of full-width rows when the hash is taken in this pass, else single tiles.
    width = size_x if digest is not None else th.tile_size
    blocks = regions(array.shape, rows, width)
    counted = dtype.kind == "u" and dtype.itemsize <= 2
    plane = _Plane(size_y, size_x, th.cell_size)
    # The hash runs on a thread of its own, one band at a time and in order, while the
    # band is measured (hashlib lets go of the GIL).
    hashed: Future[None] | None = None
    with ThreadPoolExecutor(max_workers=workers) as pool, ThreadPoolExecutor(1) as hasher:
        # held=1: the hash of the band before may still run when the next is asked for.
        for index, block in array.blocks(blocks, held=1):
            t, c, z, y, x0 = index[0], index[1], index[2], index[3].start, index[4].start
            acc = channels[c]
            if digest is not None:
                if hashed is not None:
                    hashed.result()
                data = np.ascontiguousarray(block, dtype=little).data
                hashed = hasher.submit(digest.update, data)
            starts = range(0, block.shape[1], th.tile_size)
            if counted:
                # Tiles measured on the pool's threads (numpy lets go of the GIL), added in order.
                measure = functools.partial(
                    _count_tile, block, (y, x0), th.tile_size, plane.cells, bounds
                )
                for part in pool.map(measure, starts):
                    _add_counts(part, plane, acc, saturation_value)
            else:
                for dx in starts:
                    tile = block[:, dx : dx + th.tile_size]
                    _add_tile(tile, y, x0 + dx, plane, acc, bounds, saturation_value)
            if y + rows < size_y or x0 + width < size_x:
                continue
            acc.cells.add(plane.cells)
            n = max(plane.count, 1)
            acc.count += plane.count
            acc.total += plane.total
            acc.total_sq += plane.total_sq
            acc.low, acc.high = min(acc.low, plane.low), max(acc.high, plane.high)
            mean = plane.total / n
            variance_sum = max(plane.total_sq - n * mean * mean, 0.0)
            crop = _focus_crop(array, (t, c, z), th.focus_crop)
            planes.append(
                {
                    "t": t,
                    "c": c,
                    "z": z,
                    "min": plane.low if plane.count else None,
                    "max": plane.high if plane.count else None,
                    "blank": plane.low == plane.high or plane.count == 0,
                    "normalized_variance": variance_sum / (n * mean) if mean > 0 else None,
                    "power_log_log_slope": power_log_log_slope(crop),
                }
            )
            progress.advance()
            plane = _Plane(size_y, size_x, th.cell_size)
        if hashed is not None:
            hashed.result()
    planes.sort(key=lambda p: (p["c"], p["t"], p["z"]))
    out_channels = []
    for c, acc in enumerate(channels):
        if acc.hist is None:
            acc.hist = _second_pass_histogram(array, c, acc, th)
        out_channels.append(
            _channel_summary(
                c,
                acc,
                labels[c],
                planes,
                saturation_value,
                dtype,
                int(significant) if significant else None,
                (size_z, focus_edge),
                th,
                rgb=rgb,
            )
        )
    measures: SeriesMeasures = {"channels": out_channels, "planes": planes}
    return measures, digest.hexdigest() if digest is not None else pixel_hash(array)


def _focus_crop(array: arrays.Reader, tcz: tuple[int, int, int], crop: int) -> np.ndarray:
    """Return the central ``crop`` x ``crop`` region of a plane (the whole plane when smaller)."""
    t, c, z = tcz
    h, w = array.shape[3], array.shape[4]
    y0, x0 = max((h - crop) // 2, 0), max((w - crop) // 2, 0)
    return np.asarray(array[t, c, z, y0 : y0 + min(crop, h), x0 : x0 + min(crop, w)])


def _second_pass_histogram(
    array: arrays.Reader, c: int, acc: _Channel, th: Thresholds
) -> Histogram:
    """Bounded histogram over the channel's range (wide integers and floating point)."""
    hist = Histogram.for_range(acc.low, acc.high, integer=np.dtype(array.dtype).kind in "ui")
    size_t, _, size_z, size_y, size_x = array.shape
    for t in range(size_t):
        for z in range(size_z):
            for y, x, h, w in tiles(size_y, size_x, th.tile_size):
                hist.add(np.asarray(array[t, c, z, y : y + h, x : x + w]))
    return hist


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity: None instead."""
    return float(value) if math.isfinite(value) else None


def _nonzero(hist: Histogram, zeros: int) -> Histogram:
    """Return the histogram without the pixels that are exactly zero."""
    counts = hist.counts.copy()
    index = math.floor((0.0 - hist.low) / hist.width)
    if zeros and 0 <= index < counts.size:
        counts[index] -= zeros
    return Histogram(hist.low, hist.width, counts)


def _channel_summary(
    c: int,
    acc: _Channel,
    label: tuple[str, str],
    planes: list[PlaneQC],
    saturation_value: float | None,
    dtype: np.dtype[Any],
    significant: int | None,
    sizes: tuple[int, int],
    th: Thresholds,
    *,
    rgb: bool,
) -> ChannelQC:
    assert acc.hist is not None
    size_z, focus_edge = sizes
    hist = acc.hist
    count = max(acc.count, 1)
    mean = acc.total / count
    std = math.sqrt(max(acc.total_sq / count - mean * mean, 0.0))
    region_means = acc.regions / np.maximum(acc.region_counts, 1)
    top = float(region_means.max())
    uniformity = 100.0 * float(region_means.min()) / top if top > 0 else None
    mine = [p for p in planes if p["c"] == c]
    blank = [[p["t"], p["z"]] for p in mine if p["blank"]]
    first_t = [p for p in mine if p["t"] == 0]
    scored = [p for p in first_t if p["normalized_variance"] is not None]
    best = max(scored, key=lambda p: p["normalized_variance"] or 0.0) if scored else None
    fg_pixels, fg_zeros = acc.cells.foreground(th.foreground_level)
    nonzero = _nonzero(hist, acc.zeros)
    nonzero_median = nonzero.quantile(50.0) if acc.count > acc.zeros else math.nan
    # Non-zero pixels close to zero: none means the zeros are a fill value (padding).
    gap_pixels = (
        nonzero.count_between(nonzero.low, th.padding_gap * nonzero_median)
        if math.isfinite(nonzero_median)
        else 0
    )
    facts = ChannelFacts(
        kind=dtype.kind,
        bits=dtype.itemsize * 8,
        significant_bits=significant,
        count=count,
        low=acc.low,
        high=acc.high,
        saturation_value=saturation_value,
        saturated=acc.saturated,
        zeros=acc.zeros,
        padding_gap_pixels=gap_pixels,
        nonzero_median=nonzero_median if math.isfinite(nonzero_median) else 0.0,
        coverage=fg_pixels / count,
        empty=acc.cells.empty / count,
        foreground_zeros=fg_zeros,
        foreground_pixels=fg_pixels,
        rgb=rgb,
        uniformity_pct=uniformity,
        planes=len(mine),
        blank_planes=len(blank),
        best_slope=best["power_log_log_slope"] if best else None,
        focus_edge=focus_edge,
    )
    checks = channel_checks(facts, th)
    bits_used = (
        math.ceil(math.log2(acc.high - acc.low + 1)) if dtype.kind in "uib" and acc.count else None
    )
    high = acc.high if acc.high > acc.low else acc.low + 1
    return {
        "channel": c,
        "label": label[0],
        "color": label[1],
        "min": _finite(acc.low),
        "max": _finite(acc.high),
        "mean": _finite(mean),
        "std": _finite(std),
        "median": _finite(hist.quantile(50.0)),
        "p0_1": _finite(hist.quantile(0.1)),
        "p99_9": _finite(hist.quantile(99.9)),
        "histogram_exact": hist.exact,
        "saturation_value": saturation_value,
        "saturated_fraction": acc.saturated / count if saturation_value is not None else None,
        "zero_fraction": acc.zeros / count,
        "foreground_coverage": round(facts.coverage, 6),
        "empty_fraction": round(facts.empty, 6),
        "foreground_zero_fraction": (fg_zeros / fg_pixels if fg_pixels else None),
        "bits_used": bits_used,
        "bits_available": significant or dtype.itemsize * 8,
        "blank_planes": blank,
        "best_focus_z": best["z"] if best and size_z > 1 else None,
        "uniformity_pct": None if uniformity is None else round(uniformity, 3),
        "histogram": {
            "min": _finite(acc.low),
            "max": _finite(high),
            "counts": hist.plot(acc.low, high, PLOT_BINS) if acc.count else [],
        },
        **as_json(checks),
        "status": overall([ch.flag for ch in checks.values()]),
    }


def thumbnail(
    group: zarr.Group,
    labels: list[tuple[str, str]],
    *,
    size: int = 256,
    windows: list[tuple[float, float]],
) -> np.ndarray:
    """RGB max projection over Z (t = 0) of the smallest pyramid level at least ``size`` wide.

    Each channel is in its colour, with contrast from the given percentile windows.
    """
    attrs: dict[str, Any] = dict(group.attrs)
    datasets: list[dict[str, Any]] = attrs.get("ome", attrs)["multiscales"][0]["datasets"]
    levels = [group[str(d["path"])] for d in datasets]
    arrays = [a for a in levels if isinstance(a, zarr.Array)]
    level = arrays[0]
    for candidate in arrays:
        if max(candidate.shape[3:]) >= size:
            level = candidate
    data = np.asarray(level[0]).astype(np.float64)
    data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0).max(axis=1)  # (C, Y, X)
    rgb = np.zeros((*data.shape[1:], 3))
    for c, ((_, colour), (low, high)) in enumerate(zip(labels, windows, strict=True)):
        if not (math.isfinite(low) and math.isfinite(high)):
            low, high = float(data[c].min()), float(data[c].max())
        scaled = np.clip((data[c] - low) / ((high - low) or 1.0), 0, 1)
        weights = [int(colour[i : i + 2], 16) / 255 for i in (0, 2, 4)]
        rgb += scaled[..., None] * np.array(weights)
    step = max(1, math.ceil(max(rgb.shape[:2]) / size))
    image: np.ndarray = (np.clip(rgb[::step, ::step], 0, 1) * 255).round().astype(np.uint8)
    return image


def _window(channel: ChannelQC) -> tuple[float, float]:
    """Thumbnail contrast: p0.1 to p99.9 (NaN when the channel has no finite pixel)."""
    low, high = channel["p0_1"], channel["p99_9"]
    return (math.nan, math.nan) if low is None or high is None else (low, high)


def run_qc(
    intermediate: Path,
    record_path: Path,
    store: Path,
    *,
    out: Path,
    thumbnails: Path,
    thresholds: Thresholds,
    page: Path | None = None,
    ome_tiff_only: bool = False,
    threads: int = 0,
) -> QCReport:
    """Measure every series of a dataset; write ``qc.json``, thumbnails and the QC page.

    There is one thumbnail per series; the page is the dataset's QC page.

    Parameters
    ----------
    intermediate
        Intermediate store from ``convert``: its description of the series.
    record_path
        ``metadata.json`` (sanity flags, significant bits, the pixel hash of each series
        as read from the source).
    store
        OME-Zarr written by the pyramid step: its level 0 is measured and hashed, the
        thumbnails come from its small levels.
    out
        ``qc.json`` to write.
    thumbnails
        Folder for ``series-N.png``.
    thresholds
        Where each check applies and its limits.
    page
        ``qc.html`` to write (thumbnails, histograms, focus plots; links relative to
        ``out``'s folder), or None.
    ome_tiff_only
        The store is an intermediate and the OME-TIFF the delivered image
        (``ome_zarr: false``): ``qc.json`` records the store as not delivered, and the
        page tells how to open the OME-TIFF.
    threads
        Threads that decode and measure tiles; 0 uses every core this process may use.

    Returns
    -------
    QCReport
        The content of ``qc.json``.
    """
    from PIL import Image

    from bioingest.qc_page import dataset_page

    record = read_metadata(record_path)
    src = zarr.open_group(intermediate, mode="r")
    description = read_intermediate(src)
    if is_failure(record) or is_failure(description):
        raise IngestError(intermediate, "holds no image: the source could not be read")
    final = zarr.open_group(store, mode="r")
    paths = image_paths(final)
    workers = threads or len(os.sched_getaffinity(0)) or 1
    series_out: list[SeriesQC] = []
    total = sum(s["shape"][0] * s["shape"][1] * s["shape"][2] for s in description["series"])
    progress = Progress(f"qc {record['dataset']}", total)
    with atomic.atomic_dir(thumbnails) as thumbs:
        for i, info in enumerate(description["series"]):
            group = final[paths[i]] if paths[i] else final
            assert isinstance(group, zarr.Group)
            # The pixels measured are the final level 0, decoded here: this pass is not
            # the one that wrote them, so its hash checks them against the source's.
            array = arrays.Reader(arrays.array_path(group, "0"), workers=workers)
            rec = record["series"][i] if i < len(record["series"]) else None
            labels = display_channels(rec, int(info["shape"][1]), rgb=bool(info.get("rgb")))
            rgb = bool(info.get("rgb"))
            result, output_hash = _series_qc(
                array, rec, labels, thresholds, progress, rgb=rgb, workers=workers
            )
            source_hash = recorded_pixel_hash(rec) if rec else None
            fidelity: Flag = "pass" if source_hash == output_hash else "fail"
            flags = list(rec["flags"]) if rec else []
            windows = [_window(ch) for ch in result["channels"]]
            png = thumbs / layout.thumbnail(i)
            Image.fromarray(thumbnail(group, labels, windows=windows)).save(png, optimize=True)
            reasons: dict[str, str] = {}
            if fidelity == "fail":
                reasons["fidelity"] = "the final level 0 differs from the pixels read"
            statuses = [fidelity, *(ch["status"] for ch in result["channels"])]
            series_out.append(
                {
                    "series": i,
                    "path": paths[i],
                    "shape": info["shape"],
                    "dtype": info["dtype"],
                    "source_pixel_sha256": source_hash,
                    "output_pixel_sha256": output_hash,
                    "checks": {"fidelity": fidelity},
                    "reasons": reasons,
                    "status": overall(statuses),
                    "metadata": {"status": "warn" if flags else "pass", "flags": flags},
                    "thumbnail": f"{layout.THUMBNAILS}/{layout.thumbnail(i)}",
                    **result,
                }
            )
    store_info: StoreInfo = {"path": store.name, "zarr_format": final.metadata.zarr_format}
    if ome_tiff_only:
        store_info["delivered"] = False
    qc: QCReport = {
        "dataset": record["dataset"],
        "status": overall([s["status"] for s in series_out]),
        "metadata_status": overall([s["metadata"]["status"] for s in series_out]),
        "store": store_info,
        "thresholds": dataclasses.asdict(thresholds),
        "series": series_out,
    }
    if page is not None:
        atomic.write_text(page, dataset_page(qc, record, thumbnails=thumbnails, base=page.parent))
    # The record last: the steps after read it, so it exists only once the rest does.
    atomic.write_text(out, qc_json(qc))
    log.info("qc %s: %s (metadata %s)", record["dataset"], qc["status"], qc["metadata_status"])
    return qc
