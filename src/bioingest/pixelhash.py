"""Pixel-content hash: independent of chunking, sharding and compression.

Definition (recomputable with a few lines of numpy): SHA-256 over the level-0 pixels of
one image in canonical C order over (T, C, Z, Y, X), each pixel as the little-endian bytes
of its dtype. Example for an in-memory array ``a``::

    hashlib.sha256(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes())

It is streamed in strips of whole rows, so memory stays within ``budget_bytes``
whatever the image size.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

#: Default memory budget for one strip, bytes.
BUDGET = 64 * 1024 * 1024


def pixel_hash(array: Any, *, budget_bytes: int = BUDGET) -> str:
    """SHA-256 hex digest of a TCZYX array's pixels in canonical C order.

    Parameters
    ----------
    array
        Any array with ``shape`` (T, C, Z, Y, X), ``dtype`` and numpy-style slicing
        (a zarr array, a numpy array).
    budget_bytes
        Largest strip read at once; at least one row is always read.
    """
    size_t, size_c, size_z, size_y, size_x = array.shape
    dtype = np.dtype(array.dtype)
    little = dtype.newbyteorder("<")
    rows = max(1, budget_bytes // max(1, size_x * dtype.itemsize))
    digest = hashlib.sha256()
    for t in range(size_t):
        for c in range(size_c):
            for z in range(size_z):
                for y in range(0, size_y, rows):
                    strip = np.asarray(array[t, c, z, y : y + rows, :])
                    digest.update(np.ascontiguousarray(strip, dtype=little).tobytes())
    return digest.hexdigest()
