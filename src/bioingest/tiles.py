"""The tiles a plane is read, measured and written in."""

from __future__ import annotations

from typing import Any


def tiles(
    size_y: int, size_x: int, tile: int, tile_x: int | None = None
) -> list[tuple[int, int, int, int]]:
    """Row-major ``(y, x, height, width)`` tiles covering a plane.

    Tiles are ``tile`` x ``tile``, or ``tile`` x ``tile_x`` when ``tile_x`` is given.
    """
    width = tile_x or tile
    return [
        (y, x, min(tile, size_y - y), min(width, size_x - x))
        for y in range(0, size_y, tile)
        for x in range(0, size_x, width)
    ]


def regions(shape: tuple[int, ...], tile: int, tile_x: int) -> list[tuple[Any, ...]]:
    """Index of every tile of every plane of a TCZYX array, planes in (T, C, Z) order."""
    size_t, size_c, size_z, size_y, size_x = shape
    return [
        (t, c, z, slice(y, y + h), slice(x, x + w))
        for t in range(size_t)
        for c in range(size_c)
        for z in range(size_z)
        for y, x, h, w in tiles(size_y, size_x, tile, tile_x)
    ]
