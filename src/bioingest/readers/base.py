"""What every reader offers: series shapes, the OME-XML and tile access in TCZYX."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np


@dataclass(frozen=True)
class SeriesInfo:
    """Full-resolution shape and pixel type of one series."""

    index: int
    size_t: int
    size_c: int
    size_z: int
    size_y: int
    size_x: int
    dtype: str
    #: Channels are the red, green and blue samples of colour pixels.
    rgb: bool = False
    #: Channels stored together in one plane (the samples of colour pixels), read at once.
    samples: int = 1

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """Shape in TCZYX order."""
        return (self.size_t, self.size_c, self.size_z, self.size_y, self.size_x)


class SourceReader(ABC):
    """An opened source: opened once, then read tile by tile."""

    #: Reader name recorded in provenance (``bioformats`` or ``tifffile``).
    name: str = ""
    #: Whether a band of whole rows is read as cheaply as its tiles, and at any width.
    reads_whole_rows: bool = False

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    @abstractmethod
    def format_name(self) -> str:
        """Human-readable file format, as the underlying library names it."""

    @property
    @abstractmethod
    def series(self) -> list[SeriesInfo]:
        """Every series at full resolution (sub-resolutions are not series)."""

    @property
    @abstractmethod
    def ome_xml(self) -> str:
        """The complete OME-XML describing all series."""

    @property
    @abstractmethod
    def used_files(self) -> list[Path]:
        """Every file the reader needed (main file and companions)."""

    @abstractmethod
    def read_tile(
        self, series: int, t: int, c: int, z: int, y: int, x: int, height: int, width: int
    ) -> np.ndarray:
        """Return a ``(height, width)`` tile of one plane in native byte order."""

    def read_samples(
        self, series: int, t: int, c: int, z: int, y: int, x: int, height: int, width: int
    ) -> np.ndarray:
        """Return the ``(samples, height, width)`` block of the channels stored in one plane.

        The channels are ``c`` to ``c + samples - 1``, stored together in one plane (``c``
        is a multiple of :attr:`SeriesInfo.samples`). Readers that store colour samples
        together decode the tile once for all of them.
        """
        samples = self.series[series].samples
        return np.stack(
            [self.read_tile(series, t, c + i, z, y, x, height, width) for i in range(samples)]
        )

    @abstractmethod
    def close(self) -> None:
        """Release the file handles."""

    def __enter__(self) -> SourceReader:
        """Return the reader itself, for a ``with`` block."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the reader on leaving the ``with`` block."""
        self.close()
