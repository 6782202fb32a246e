"""The pyramid's levels: their shapes, the 2 x 2 downsampling, and levels built from bands.

``convert`` builds every level while it reads the source, so the pixels are decoded once
(:class:`BandLevels`); ``pyramid`` links those levels into the final store, or builds them
from level 0 when they were made with other settings.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from bioingest import arrays
from bioingest.arrays import Method, StoreOptions

if TYPE_CHECKING:
    import zarr

#: Subgroup of an intermediate store with the levels ``convert`` built: ``levels/SERIES/K``.
LEVELS = "levels"
#: Attribute of a ``levels/SERIES`` group: the downsampling method its levels were made with.
METHOD_ATTR = "bioingest_pyramid_method"
#: Attribute of a series array: each channel's finite range, ``[low, high]`` or None.
RANGE_ATTR = "bioingest_data_range"


def level_shapes(size_y: int, size_x: int, opts: StoreOptions) -> list[tuple[int, int]]:
    """Plane shapes of every level: halve until the plane fits one chunk or gets too small."""
    shapes = [(size_y, size_x)]
    y, x = size_y, size_x
    while max(y, x) > opts.chunk_size and min(math.ceil(y / 2), math.ceil(x / 2)) >= opts.min_size:
        y, x = math.ceil(y / 2), math.ceil(x / 2)
        shapes.append((y, x))
    return shapes


def levels_of(series: Path) -> Path:
    """Folder of the levels ``convert`` built for the series array at ``series``."""
    return series.parent / LEVELS / series.name


def finite_range(block: np.ndarray) -> tuple[float, float]:
    """Lowest and highest finite value of ``block`` (``inf, -inf`` when it has none)."""
    if not block.size or (block.dtype.kind == "f" and np.all(np.isnan(block))):
        return math.inf, -math.inf
    return float(np.nanmin(block)), float(np.nanmax(block))


class Ranges:
    """Lowest and highest finite value of each channel (its ``omero`` display window).

    ``convert`` measures them and keeps them in the series array's attributes
    (:data:`RANGE_ATTR`); ``pyramid`` reads them there, or measures them itself.
    """

    def __init__(self, channels: int) -> None:
        self.low = np.full(channels, np.inf)
        self.high = np.full(channels, -np.inf)

    def include(self, c: int, low: float, high: float) -> None:
        """Widen channel ``c``'s range to ``[low, high]``."""
        self.low[c] = min(self.low[c], low)
        self.high[c] = max(self.high[c], high)

    def add(self, c: int, block: np.ndarray) -> None:
        """Widen channel ``c``'s range to ``block``'s."""
        self.include(c, *finite_range(block))

    def windows(self) -> list[tuple[float, float]]:
        """Each channel's range; ``(0, 0)`` for a channel with no finite value."""
        return [
            (lo, hi) if lo <= hi else (0.0, 0.0) for lo, hi in zip(self.low, self.high, strict=True)
        ]

    def record(self) -> list[list[float] | None] | None:
        """Return the ranges as :data:`RANGE_ATTR` keeps them; None if one is infinite."""
        pairs = list(zip(self.low.tolist(), self.high.tolist(), strict=True))
        # An infinite value has no JSON: pyramid then measures the ranges itself.
        if not all((math.isfinite(lo) and math.isfinite(hi)) or lo > hi for lo, hi in pairs):
            return None
        return [[lo, hi] if lo <= hi else None for lo, hi in pairs]

    @classmethod
    def recorded(cls, attrs: Any, channels: int) -> Ranges | None:
        """Return the ranges an array's attributes keep (:meth:`record`), if any."""
        record = attrs.get(RANGE_ATTR)
        if not isinstance(record, list):
            return None
        ranges = cls(channels)
        for c, window in enumerate(record):
            if window is not None:
                ranges.include(c, *window)
        return ranges


def downsample(block: np.ndarray, method: Method) -> np.ndarray:
    """Halve a 2-D block in Y and X; odd edges are padded by repetition."""
    h, w = block.shape
    if h % 2 or w % 2:
        block = np.pad(block, ((0, h % 2), (0, w % 2)), mode="edge")
    if method == "nearest":
        nearest: np.ndarray = block[::2, ::2].copy()
        return nearest
    if method == "mean" and np.issubdtype(block.dtype, np.integer) and block.dtype.itemsize <= 4:
        return _integer_mean(block)
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


#: Input rows averaged at once: the temporaries stay in the CPU's cache (twice as fast as
#: a whole block at once, and no fresh memory).
MEAN_ROWS = 256


def _integer_mean(block: np.ndarray) -> np.ndarray:
    """Mean of each 2x2 quad rounded half to even, as ``np.rint``, in integer arithmetic."""
    out = np.empty((block.shape[0] // 2, block.shape[1] // 2), dtype=block.dtype)
    for y in range(0, block.shape[0], MEAN_ROWS):
        out[y // 2 : (y + MEAN_ROWS) // 2] = _quad_means(block[y : y + MEAN_ROWS])
    return out


def _quad_means(block: np.ndarray) -> np.ndarray:
    """:func:`_integer_mean` of a block of few rows."""
    wide: type[np.integer[Any]] = np.int64
    if block.dtype.itemsize < 4:
        wide = np.int32 if block.dtype.kind == "i" else np.uint32
    total: np.ndarray[Any, np.dtype[np.integer[Any]]] = block[0::2, 0::2].astype(wide)
    total += block[0::2, 1::2]
    total += block[1::2, 0::2]
    total += block[1::2, 1::2]
    # total = 4q + r: q + 1 for r = 3, and for r = 2 with q odd; as (total + 1 + q % 2) // 4
    # (shifts floor negative totals too), in place.
    odd = total >> 2
    odd &= 1
    total += odd
    total += 1
    total >>= 2
    result: np.ndarray = total.astype(block.dtype)
    return result


class _PlaneState:
    """What one plane's levels hold between bands."""

    def __init__(self, count: int) -> None:
        #: A row of level k (index k) waiting for the row it is averaged with.
        self.odd: list[np.ndarray | None] = [None] * count
        #: Rows of level k + 1 (index k) waiting for a whole chunk row.
        self.waiting: list[list[np.ndarray]] = [[] for _ in range(count)]
        #: Rows of level k + 1 (index k) written so far.
        self.written = [0] * count


class BandLevels:
    """Levels 1 and up of one series, written from its level-0 rows as they are read.

    Each plane's rows arrive top to bottom, in bands. Each level is the one before halved
    by :func:`downsample` in pairs of rows (an odd row waits for the next band), and is
    written in whole chunk rows, so no chunk is encoded twice. The arrays are those
    ``pyramid`` would create, so their bytes are the ones it would write.

    Parameters
    ----------
    group
        Group to create the arrays ``1``, ``2``, … in.
    shape
        TCZYX shape of level 0.
    dtype
        Pixel type.
    opts
        Store options (chunks, codec, method, smallest level).
    """

    def __init__(
        self, group: zarr.Group, shape: tuple[int, ...], dtype: Any, *, opts: StoreOptions
    ) -> None:
        size_t, size_c, size_z, size_y, size_x = shape
        self._method = opts.method
        self._chunk_rows: list[int] = []
        paths = []
        for k, (ly, lx) in enumerate(level_shapes(size_y, size_x, opts)[1:], start=1):
            array = arrays.create_level(
                group, str(k), (size_t, size_c, size_z, ly, lx), dtype, opts
            )
            self._chunk_rows.append(int(array.chunks[3]))
            paths.append(arrays.array_path(group, str(k)))
        group.attrs[METHOD_ATTR] = opts.method
        # Leaving, every writer is closed even when one fails, as a Writer waits for each of
        # its writes: none may still create files when a failed store's folder is removed.
        self._writers_closed = contextlib.ExitStack()
        self._writers = [
            self._writers_closed.enter_context(arrays.Writer(path, workers=opts.workers))
            for path in paths
        ]
        self._planes: dict[tuple[int, int, int], _PlaneState] = {}

    def add(self, tcz: tuple[int, int, int], rows: np.ndarray, *, last: bool) -> None:
        """Add the next rows of plane ``tcz`` (2-D, full width); ``last``: they end it."""
        if not self._writers:
            return
        state = self._planes.setdefault(tcz, _PlaneState(len(self._writers)))
        self._halve(state, tcz, 0, rows, last)
        if last:
            del self._planes[tcz]

    def _halve(
        self, state: _PlaneState, tcz: tuple[int, int, int], k: int, rows: np.ndarray, last: bool
    ) -> None:
        """Add rows of level ``k`` to level ``k + 1``, and so on down."""
        held = state.odd[k]
        if held is not None:
            rows = np.concatenate([held, rows])
        pairs = rows.shape[0] if last else rows.shape[0] - rows.shape[0] % 2
        # A copy: the caller may reuse the band the row came from.
        state.odd[k] = rows[pairs:].copy() if pairs < rows.shape[0] else None
        if not pairs:
            return
        smaller = downsample(rows[:pairs], self._method)
        waiting = state.waiting[k]
        waiting.append(smaller)
        ready = sum(block.shape[0] for block in waiting)
        chunk = self._chunk_rows[k]
        count = ready if last else ready - ready % chunk
        if count:
            block = waiting[0] if len(waiting) == 1 else np.concatenate(waiting)
            y = state.written[k]
            t, c, z = tcz
            self._writers[k].write((t, c, z, slice(y, y + count)), block[:count])
            state.written[k] = y + count
            waiting[:] = [block[count:]] if count < ready else []
        if k + 1 < len(self._writers):
            self._halve(state, tcz, k + 1, smaller, last)

    def __enter__(self) -> BandLevels:
        """Return the levels."""
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        """Wait for every write; raise the first failure, unless leaving by an error."""
        self._writers_closed.__exit__(kind, exc, trace)
