"""The tiles a plane is read, measured and written in."""

from __future__ import annotations


def tiles(size_y: int, size_x: int, tile: int) -> list[tuple[int, int, int, int]]:
    """Row-major ``(y, x, height, width)`` tiles covering a plane."""
    return [
        (y, x, min(tile, size_y - y), min(tile, size_x - x))
        for y in range(0, size_y, tile)
        for x in range(0, size_x, tile)
    ]
