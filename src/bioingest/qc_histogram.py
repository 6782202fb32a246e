"""Histograms with a bounded number of bins, for any pixel type.

8- and 16-bit integers get one bin per possible value (at most 65536 bins, exact). Wider
integers and floating-point data get at most ``MAX_BINS`` bins over the data range, found
in a first pass: one bin per value while the range allows it (exact), equal-width bins
otherwise. Memory never depends on the pixel type's range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Largest number of bins of any histogram (512 KiB of int64 counts).
MAX_BINS = 65536


def exact_dtype(dtype: np.dtype[np.generic]) -> bool:
    """Whether one bin per possible value fits: booleans and 8/16-bit integers."""
    return dtype.kind == "b" or (dtype.kind in "ui" and dtype.itemsize <= 2)


@dataclass
class Histogram:
    """Counts of values in ``bins`` bins of ``width`` starting at ``low``.

    Bin ``i`` holds values in ``[low + i * width, low + (i + 1) * width)``; values of the
    last bin's upper edge go into the last bin.
    """

    low: float
    width: float
    counts: np.ndarray

    @classmethod
    def for_dtype(cls, dtype: np.dtype[np.generic]) -> Histogram:
        """Exact histogram over the whole range of an 8/16-bit integer or boolean type."""
        if dtype.kind == "b":
            return cls(0.0, 1.0, np.zeros(2, dtype=np.int64))
        info = np.iinfo(dtype)  # type: ignore[type-var]
        return cls(float(info.min), 1.0, np.zeros(int(info.max) - int(info.min) + 1, np.int64))

    @classmethod
    def for_range(cls, low: float, high: float, *, integer: bool) -> Histogram:
        """At most ``MAX_BINS`` bins covering ``[low, high]``.

        Width 1 for integer data whose range fits, so their quantiles stay exact.
        """
        if not (math.isfinite(low) and math.isfinite(high)) or high < low:
            return cls(0.0, 1.0, np.zeros(1, dtype=np.int64))
        span = high - low
        if integer and span + 1 <= MAX_BINS:
            return cls(low, 1.0, np.zeros(int(span) + 1, dtype=np.int64))
        width = span / MAX_BINS if span > 0 else 1.0
        return cls(low, width, np.zeros(MAX_BINS, dtype=np.int64))

    @property
    def exact(self) -> bool:
        """One bin per integer value."""
        return self.width == 1.0 and float(self.low).is_integer()

    def add(self, values: np.ndarray) -> None:
        """Count finite ``values`` (any shape); values outside the range go to the ends."""
        if values.dtype.kind == "f":
            values = values[np.isfinite(values)]
        if self.exact and values.dtype.kind in "uib" and values.dtype.itemsize <= 4:
            idx = values.astype(np.int64).ravel() - int(self.low)
        else:
            idx = np.floor((values.astype(np.float64).ravel() - self.low) / self.width)
            idx = idx.astype(np.int64)
        np.clip(idx, 0, self.counts.size - 1, out=idx)
        self.counts += np.bincount(idx, minlength=self.counts.size)

    def value(self, index: int) -> float:
        """Lower edge of bin ``index`` (the value itself for exact bins)."""
        return float(self.low + index * self.width)

    def quantile(self, q: float) -> float:
        """Smallest value whose cumulative count reaches ``q`` percent (``inverted_cdf``).

        It is within one bin width for equal-width bins.
        """
        cumulative = np.cumsum(self.counts)
        if cumulative[-1] == 0:
            return math.nan
        target = q / 100.0 * cumulative[-1]
        index = int(np.searchsorted(cumulative, target, side="left"))
        return self.value(min(index, self.counts.size - 1))

    def count_at_least(self, threshold: float) -> int:
        """Pixels with a value of at least ``threshold`` (by bin lower edge)."""
        first = math.ceil((threshold - self.low) / self.width)
        return int(self.counts[max(first, 0) :].sum())

    def count_between(self, low: float, high: float) -> int:
        """Pixels with ``low <= value < high`` (by bin lower edge)."""
        first = max(math.ceil((low - self.low) / self.width), 0)
        stop = max(math.ceil((high - self.low) / self.width), 0)
        return int(self.counts[first:stop].sum())

    def plot(self, low: float, high: float, bins: int) -> list[int]:
        """Return the counts re-binned into ``bins`` equal bins between ``low`` and ``high``."""
        edges = np.linspace(low, high if high > low else low + 1, bins + 1)
        centres = self.low + (np.arange(self.counts.size) + 0.5) * self.width
        if self.exact:
            centres = self.low + np.arange(self.counts.size, dtype=np.float64)
        counts, _ = np.histogram(centres, bins=edges, weights=self.counts)
        return [int(v) for v in counts]
