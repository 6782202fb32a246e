"""Memory and run-time requests of the workflow's jobs (what a cluster scheduler is told).

Memory does not grow with the image: it is set by the Java heap, the tile size and the
shard size (see ``tests/test_memory.py``). Run time does grow with the image, so it is
estimated from the bytes to read: the source files for ``convert`` (known after
inventory), the uncompressed pixels for the later stages (known after ``convert``, from
``{dataset}.source.json``). Every retry of a job doubles its run time.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from bioingest.records import is_failure, read_source

MIB = 1024 * 1024
# Memory a Python process with numpy, zarr and the codecs needs before any pixel.
BASE_MB = 512
# Bytes per sample of the widest pixel type (float64): the estimate holds for any image.
WORST_PIXEL_BYTES = 8
# Slowest read rates seen on the real samples, MiB/s: compressed proprietary sources
# (JPEG whole-slide images through Bio-Formats) and re-encoding zarr pixels.
SOURCE_MIB_PER_S = 5.0
PIXELS_MIB_PER_S = 20.0
# Fixed cost of a job: Python and JVM start, opening the source, scheduler slack.
START_MIN = 10


def _runtime(nbytes: int, rate_mib_s: float, attempt: int) -> int:
    minutes = START_MIN + math.ceil(nbytes / MIB / rate_mib_s / 60)
    return minutes << (max(attempt, 1) - 1)


def convert_mem_mb(*, java_heap_mb: int, tile_size: int) -> int:
    """Memory of a ``convert`` job: the Java heap, Python and a few tiles in flight.

    Parameters
    ----------
    java_heap_mb
        Maximum Java heap of the job (``java_heap_mb`` in the config).
    tile_size
        Edge of the tiles read from the source, pixels.
    """
    return java_heap_mb + BASE_MB + math.ceil(4 * tile_size * tile_size * WORST_PIXEL_BYTES / MIB)


def image_mem_mb(*, chunk_size: int, shard_chunks: int, tile_size: int) -> int:
    """Memory of a job streaming the converted pixels: Python and a few shards (or tiles).

    Parameters
    ----------
    chunk_size, shard_chunks
        Chunk edge and chunks per shard edge of the final store.
    tile_size
        Edge of the tiles the QC reads.
    """
    edge = max(chunk_size * max(shard_chunks, 1), tile_size)
    return BASE_MB + math.ceil(6 * edge * edge * WORST_PIXEL_BYTES / MIB)


def convert_runtime_min(*, source_bytes: int, attempt: int = 1) -> int:
    """Minutes for a ``convert`` job reading ``source_bytes`` of files on disk.

    Each retry (Snakemake's ``attempt``) doubles it.
    """
    return _runtime(source_bytes, SOURCE_MIB_PER_S, attempt)


def image_runtime_min(*, pixel_bytes: int, attempt: int = 1) -> int:
    """Minutes for a job streaming ``pixel_bytes`` of uncompressed pixels.

    Each retry (Snakemake's ``attempt``) doubles it.
    """
    return _runtime(pixel_bytes, PIXELS_MIB_PER_S, attempt)


def series_bytes(source_json: Path) -> list[int]:
    """Uncompressed bytes of each series listed in ``{dataset}.source.json``.

    Raises ``FileNotFoundError`` until ``convert`` wrote the file, which Snakemake takes
    as "not known yet" and asks again when the job is ready to run. A conversion that
    failed on bad input lists no series.
    """
    description = read_source(source_json)
    series = [] if is_failure(description) else description["series"]
    return [math.prod(s["shape"]) * np.dtype(s["dtype"]).itemsize for s in series]


def pixel_bytes(source_json: Path) -> int:
    """Uncompressed bytes of every series listed in ``{dataset}.source.json``."""
    return sum(series_bytes(source_json))
