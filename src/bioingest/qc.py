"""Stage 3: per-channel and per-plane quality metrics with pass/warn/fail flags, and thumbnails.

Everything is streamed tile by tile from the intermediate store (exactly the pixels the
reader returned), so memory does not grow with the image. docs/qc.md gives each formula
and its source.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from bioingest import atomic, metadata
from bioingest.checksum import image_paths
from bioingest.convert import ATTR, tiles
from bioingest.pixelhash import pixel_hash
from bioingest.progress import Progress

log = logging.getLogger("bioingest")

STATUS_ORDER = {"pass": 0, "warn": 1, "fail": 2}
#: Bins of the histogram kept in qc.json for plots.
PLOT_BINS = 64


@dataclass(frozen=True)
class Thresholds:
    """Where each check turns to ``warn`` or ``fail`` (config keys ``qc_*``)."""

    saturation_warn: float = 0.001
    saturation_fail: float = 0.01
    zero_warn: float = 0.01
    zero_fail: float = 0.5
    bit_depth_warn: float = 0.5
    blank_planes_warn: int = 1
    uniformity_warn: float = 20.0
    uniformity_fail: float = 0.0
    focus_slope_warn: float = -3.5
    focus_crop: int = 1024
    tile_size: int = 1024


def worst(statuses: list[str]) -> str:
    """The most severe of ``pass``/``warn``/``fail`` (``pass`` for none)."""
    return max(statuses, key=STATUS_ORDER.__getitem__, default="pass")


def grade(value: float | None, warn: float, fail: float | None = None, *, low: bool) -> str:
    """Grade a value: with ``low`` small values are bad, otherwise large values are."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "pass"

    def beyond(limit: float) -> bool:
        return value < limit if low else value > limit

    if fail is not None and beyond(fail):
        return "fail"
    return "warn" if beyond(warn) else "pass"


def power_log_log_slope(plane: np.ndarray) -> float | None:
    """Slope of log(radially averaged power spectrum) against log(spatial frequency).

    After CellProfiler's MeasureImageQuality ``PowerLogLogSlope``: sharper images keep more
    high-frequency power, so their slope is less negative.
    """
    img = plane.astype(np.float64)
    h, w = img.shape
    if min(h, w) < 8 or not np.ptp(img) > 0:
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

    dtype: np.dtype[Any]
    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    saturated: int = 0
    zeros: int = 0
    regions: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))
    region_counts: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))
    hist: np.ndarray | None = None

    def exact_histogram(self) -> bool:
        return self.dtype.kind in "ub" or (self.dtype.kind == "i" and self.dtype.itemsize <= 2)


def _bounds(size: int) -> list[int]:
    return [0, size // 3, 2 * size // 3, size]


def _region_sums(
    tile: np.ndarray, y: int, x: int, ys: list[int], xs: list[int], acc: _Channel
) -> None:
    h, w = tile.shape
    for i in range(3):
        y0, y1 = max(ys[i], y), min(ys[i + 1], y + h)
        if y0 >= y1:
            continue
        for j in range(3):
            x0, x1 = max(xs[j], x), min(xs[j + 1], x + w)
            if x0 >= x1:
                continue
            block = tile[y0 - y : y1 - y, x0 - x : x1 - x]
            acc.regions[i, j] += float(block.sum(dtype=np.float64))
            acc.region_counts[i, j] += block.size


def _percentile(hist: np.ndarray, edges_low: float, width: float, q: float) -> float:
    """Value below which ``q`` percent of the histogram's counts lie."""
    cumulative = np.cumsum(hist)
    target = q / 100.0 * cumulative[-1]
    index = int(np.searchsorted(cumulative, target, side="left"))
    return float(edges_low + index * width)


def _series_qc(
    array: zarr.Array[Any],
    record: dict[str, Any] | None,
    labels: list[tuple[str, str]],
    th: Thresholds,
    progress: Progress,
) -> dict[str, Any]:
    size_t, size_c, size_z, size_y, size_x = array.shape
    dtype = np.dtype(array.dtype)
    bits = dtype.itemsize * 8
    significant = (record or {}).get("significant_bits", {}).get("value") or bits
    if dtype.kind in "ui":
        saturation_value: float | None = float(min(2 ** int(significant) - 1, np.iinfo(dtype).max))
    else:
        saturation_value = None
    channels = [_Channel(dtype=dtype) for _ in range(size_c)]
    ys, xs = _bounds(size_y), _bounds(size_x)
    plane_tiles = tiles(size_y, size_x, th.tile_size)
    planes: list[dict[str, Any]] = []
    offset = -int(np.iinfo(dtype).min) if dtype.kind == "i" else 0
    for c in range(size_c):
        acc = channels[c]
        if acc.exact_histogram():
            acc.hist = np.zeros(int(np.iinfo(dtype).max) + offset + 1, dtype=np.int64)
        for t in range(size_t):
            for z in range(size_z):
                p_sum = p_sq = 0.0
                p_low, p_high = math.inf, -math.inf
                for y, x, h, w in plane_tiles:
                    tile = np.asarray(array[t, c, z, y : y + h, x : x + w])
                    f = tile.astype(np.float64)
                    p_sum += float(f.sum())
                    p_sq += float((f * f).sum())
                    p_low = min(p_low, float(np.nanmin(f)))
                    p_high = max(p_high, float(np.nanmax(f)))
                    if acc.hist is not None:
                        acc.hist += np.bincount(
                            (tile.astype(np.int64) + offset).ravel(), minlength=acc.hist.size
                        )
                    if saturation_value is not None:
                        acc.saturated += int(np.count_nonzero(tile == saturation_value))
                    acc.zeros += int(np.count_nonzero(tile == 0))
                    _region_sums(f, y, x, ys, xs, acc)
                n = size_y * size_x
                acc.count += n
                acc.total += p_sum
                acc.total_sq += p_sq
                acc.low, acc.high = min(acc.low, p_low), max(acc.high, p_high)
                mean = p_sum / n
                variance_sum = max(p_sq - n * mean * mean, 0.0)
                crop = _focus_crop(array, (t, c, z), th.focus_crop)
                planes.append(
                    {
                        "t": t,
                        "c": c,
                        "z": z,
                        "min": p_low,
                        "max": p_high,
                        "blank": p_low == p_high,
                        "normalized_variance": variance_sum / (n * mean) if mean > 0 else None,
                        "power_log_log_slope": power_log_log_slope(crop),
                    }
                )
                progress.advance()
    out_channels = []
    for c, acc in enumerate(channels):
        if acc.hist is None:
            acc.hist = _second_pass_histogram(array, c, acc, th)
            base, width = acc.low, (acc.high - acc.low) / max(acc.hist.size, 1) or 1.0
        else:
            base, width = float(-offset), 1.0
        out_channels.append(
            _channel_summary(
                c,
                acc,
                base,
                width,
                labels[c],
                planes,
                saturation_value,
                int(significant),
                size_z,
                th,
            )
        )
    return {"channels": out_channels, "planes": planes}


def _focus_crop(array: zarr.Array[Any], tcz: tuple[int, int, int], crop: int) -> np.ndarray:
    """The central ``crop`` x ``crop`` region of a plane (the whole plane when smaller)."""
    t, c, z = tcz
    h, w = array.shape[3], array.shape[4]
    y0, x0 = max((h - crop) // 2, 0), max((w - crop) // 2, 0)
    return np.asarray(array[t, c, z, y0 : y0 + min(crop, h), x0 : x0 + min(crop, w)])


def _second_pass_histogram(
    array: zarr.Array[Any], c: int, acc: _Channel, th: Thresholds
) -> np.ndarray:
    """65536-bin histogram between the channel's min and max (32-bit and float data)."""
    bins = 65536
    hist = np.zeros(bins, dtype=np.int64)
    span = (acc.high - acc.low) or 1.0
    size_t, _, size_z, size_y, size_x = array.shape
    for t in range(size_t):
        for z in range(size_z):
            for y, x, h, w in tiles(size_y, size_x, th.tile_size):
                f = np.asarray(array[t, c, z, y : y + h, x : x + w]).astype(np.float64)
                f = f[np.isfinite(f)]
                idx = np.clip(((f - acc.low) / span * bins).astype(np.int64), 0, bins - 1)
                hist += np.bincount(idx, minlength=bins)
    return hist


def _channel_summary(
    c: int,
    acc: _Channel,
    base: float,
    width: float,
    label: tuple[str, str],
    planes: list[dict[str, Any]],
    saturation_value: float | None,
    significant: int,
    size_z: int,
    th: Thresholds,
) -> dict[str, Any]:
    assert acc.hist is not None
    mean = acc.total / acc.count
    std = math.sqrt(max(acc.total_sq / acc.count - mean * mean, 0.0))
    bits_used = math.ceil(math.log2(acc.high - acc.low + 1)) if acc.dtype.kind in "ui" else None
    region_means = acc.regions / np.maximum(acc.region_counts, 1)
    top = float(region_means.max())
    uniformity = 100.0 * float(region_means.min()) / top if top > 0 else None
    mine = [p for p in planes if p["c"] == c]
    blank = [[p["t"], p["z"]] for p in mine if p["blank"]]
    first_t = [p for p in mine if p["t"] == 0]
    scored = [p for p in first_t if p["normalized_variance"] is not None]
    best = max(scored, key=lambda p: p["normalized_variance"]) if scored else None
    saturated = acc.saturated / acc.count if saturation_value is not None else None
    zero_fraction = acc.zeros / acc.count
    checks = {
        "saturation": grade(saturated, th.saturation_warn, th.saturation_fail, low=False),
        "zero_clipping": grade(zero_fraction, th.zero_warn, th.zero_fail, low=False),
        "bit_depth": grade(
            None if bits_used is None else bits_used / significant, th.bit_depth_warn, low=True
        ),
        "blank_planes": "fail"
        if mine and len(blank) == len(mine)
        else ("warn" if len(blank) >= th.blank_planes_warn else "pass"),
        "uniformity": grade(uniformity, th.uniformity_warn, th.uniformity_fail, low=True),
        "focus": grade(
            best["power_log_log_slope"] if best else None, th.focus_slope_warn, low=True
        ),
    }
    # A coarse histogram for plots: PLOT_BINS bins between min and max.
    edges = np.linspace(acc.low, acc.high if acc.high > acc.low else acc.low + 1, PLOT_BINS + 1)
    centres = base + (np.arange(acc.hist.size) + 0.5) * width
    plot_hist, _ = np.histogram(centres, bins=edges, weights=acc.hist)
    return {
        "channel": c,
        "label": label[0],
        "color": label[1],
        "min": acc.low,
        "max": acc.high,
        "mean": mean,
        "std": std,
        "median": _percentile(acc.hist, base, width, 50.0),
        "p0_1": _percentile(acc.hist, base, width, 0.1),
        "p99_9": _percentile(acc.hist, base, width, 99.9),
        "saturation_value": saturation_value,
        "saturated_fraction": saturated,
        "zero_fraction": zero_fraction,
        "bits_used": bits_used,
        "bits_available": significant,
        "blank_planes": blank,
        "best_focus_z": best["z"] if best and size_z > 1 else None,
        "uniformity_pct": None if uniformity is None else round(uniformity, 3),
        "histogram": {
            "min": float(edges[0]),
            "max": float(edges[-1]),
            "counts": [int(v) for v in plot_hist],
        },
        "checks": checks,
        "status": worst(list(checks.values())),
    }


def thumbnail(
    group: zarr.Group,
    labels: list[tuple[str, str]],
    *,
    size: int = 256,
    windows: list[tuple[float, float]],
) -> np.ndarray:
    """RGB max projection over Z (t = 0) of the smallest pyramid level at least ``size``
    wide, each channel in its colour, contrast from the given percentile windows."""
    attrs: dict[str, Any] = dict(group.attrs)
    datasets: list[dict[str, Any]] = attrs.get("ome", attrs)["multiscales"][0]["datasets"]
    levels = [group[str(d["path"])] for d in datasets]
    arrays = [a for a in levels if isinstance(a, zarr.Array)]
    level = arrays[0]
    for candidate in arrays:
        if max(candidate.shape[3:]) >= size:
            level = candidate
    data = np.asarray(level[0]).astype(np.float64).max(axis=1)  # (C, Y, X)
    rgb = np.zeros((*data.shape[1:], 3))
    for c, ((_, colour), (low, high)) in enumerate(zip(labels, windows, strict=True)):
        scaled = np.clip((data[c] - low) / ((high - low) or 1.0), 0, 1)
        weights = [int(colour[i : i + 2], 16) / 255 for i in (0, 2, 4)]
        rgb += scaled[..., None] * np.array(weights)
    step = max(1, math.ceil(max(rgb.shape[:2]) / size))
    image: np.ndarray = (np.clip(rgb[::step, ::step], 0, 1) * 255).round().astype(np.uint8)
    return image


def run_qc(
    intermediate: Path,
    record_path: Path,
    store: Path,
    *,
    out: Path,
    thumbnails: Path,
    thresholds: Thresholds,
) -> dict[str, Any]:
    """Measure every series of a dataset; write ``qc.json`` and one thumbnail per series.

    Parameters
    ----------
    intermediate
        Intermediate store from ``convert`` (the pixels exactly as read).
    record_path
        ``metadata.json`` (sanity flags, significant bits, final pixel hashes).
    store
        Final OME-Zarr (thumbnails come from its small pyramid levels).
    out
        ``qc.json`` to write.
    thumbnails
        Folder for ``series-N.png``.
    thresholds
        Check thresholds.
    """
    from PIL import Image

    record = json.loads(record_path.read_text(encoding="utf-8"))
    src = zarr.open_group(intermediate, mode="r")
    description = src.attrs[ATTR]
    assert isinstance(description, dict)
    final = zarr.open_group(store, mode="r")
    paths = image_paths(final)
    series_out = []
    total = sum(s["shape"][0] * s["shape"][1] * s["shape"][2] for s in description["series"])
    progress = Progress(f"qc {record['dataset']}", total)
    with atomic.atomic_dir(thumbnails) as thumbs:
        for i, info in enumerate(description["series"]):
            array = src[str(i)]
            assert isinstance(array, zarr.Array)
            rec = record["series"][i] if i < len(record["series"]) else None
            labels = metadata.display_channels(
                rec, int(info["shape"][1]), rgb=bool(info.get("rgb"))
            )
            result = _series_qc(array, rec, labels, thresholds, progress)
            source_hash = pixel_hash(array)
            output_hash = (rec or {}).get("pixel_sha256", {}).get("value")
            fidelity = "pass" if source_hash == output_hash else "fail"
            flags = (rec or {}).get("flags", [])
            group = final[paths[i]] if paths[i] else final
            assert isinstance(group, zarr.Group)
            windows = [(ch["p0_1"], ch["p99_9"]) for ch in result["channels"]]
            png = thumbs / f"series-{i}.png"
            Image.fromarray(thumbnail(group, labels, windows=windows)).save(png, optimize=True)
            checks = {"fidelity": fidelity, "metadata": "warn" if flags else "pass"}
            statuses = [*checks.values(), *(ch["status"] for ch in result["channels"])]
            series_out.append(
                {
                    "series": i,
                    "shape": info["shape"],
                    "dtype": info["dtype"],
                    "source_pixel_sha256": source_hash,
                    "output_pixel_sha256": output_hash,
                    "metadata_flags": flags,
                    "checks": checks,
                    "status": worst(statuses),
                    "thumbnail": f"thumbnails/series-{i}.png",
                    **result,
                }
            )
    qc = {
        "dataset": record["dataset"],
        "status": worst([s["status"] for s in series_out]),
        "thresholds": thresholds.__dict__,
        "series": series_out,
    }
    atomic.write_text(out, json.dumps(qc, indent=1, ensure_ascii=False) + "\n")
    log.info("qc %s: %s", record["dataset"], qc["status"])
    return qc


QC_COLUMNS = [
    "dataset",
    "series",
    "channel",
    "label",
    "min",
    "max",
    "mean",
    "std",
    "median",
    "p0_1",
    "p99_9",
    "saturated_fraction",
    "zero_fraction",
    "bits_used",
    "bits_available",
    "blank_planes",
    "best_focus_z",
    "uniformity_pct",
    "fidelity",
    "status",
    "problems",
]


def qc_rows(qc: dict[str, Any]) -> list[dict[str, Any]]:
    """One tidy row per series and channel (``QC_COLUMNS``)."""
    rows = []
    for s in qc["series"]:
        for ch in s["channels"]:
            problems = [
                f"{k}:{v}" for k, v in {**s["checks"], **ch["checks"]}.items() if v != "pass"
            ]
            rows.append(
                {
                    "dataset": qc["dataset"],
                    "series": s["series"],
                    "channel": ch["channel"],
                    **{k: ch[k] for k in QC_COLUMNS[3:17] if k != "blank_planes"},
                    "blank_planes": len(ch["blank_planes"]),
                    "fidelity": s["checks"]["fidelity"],
                    "status": worst([ch["status"], *s["checks"].values()]),
                    "problems": ";".join(problems),
                }
            )
    return [{k: r.get(k) for k in QC_COLUMNS} for r in rows]
