"""Cluster requests: memory fixed by the configuration, run time from the image size."""

from __future__ import annotations

import json
from pathlib import Path

from bioingest.resources import (
    convert_mem_mb,
    convert_runtime_min,
    image_mem_mb,
    image_runtime_min,
    pixel_bytes,
)


def test_convert_memory_is_set_by_config_not_by_image() -> None:
    assert convert_mem_mb(java_heap_mb=1024, tile_size=1024) == 1024 + 512 + 32
    assert convert_mem_mb(java_heap_mb=2048, tile_size=1024) == 2048 + 512 + 32
    assert convert_runtime_min(source_bytes=10_000) == 11
    # 50 GiB at 5 MiB/s is 171 minutes, plus the fixed 10.
    assert convert_runtime_min(source_bytes=50 * 2**30) == 181


def test_retries_double_the_runtime() -> None:
    first, third = (image_runtime_min(pixel_bytes=2**30, attempt=a) for a in (1, 3))
    assert third == 4 * first == 4 * (10 + 1)
    assert convert_runtime_min(source_bytes=0, attempt=2) == 2 * 10


def test_image_memory_is_a_few_shards() -> None:
    # Six shards of 4096^2 float64 in flight.
    assert image_mem_mb(chunk_size=1024, shard_chunks=4, tile_size=1024) == 512 + 768
    # Unsharded: six tiles, the larger of chunk and tile edge.
    assert image_mem_mb(chunk_size=256, shard_chunks=0, tile_size=1024) == 512 + 48


def test_pixel_bytes_of_every_series(tmp_path: Path) -> None:
    path = tmp_path / "d.source.json"
    series = [
        {"index": 0, "shape": [3, 2, 10, 31, 38], "dtype": "uint16"},
        {"index": 1, "shape": [1, 1, 1, 512, 512, 3], "dtype": "uint8"},
    ]
    path.write_text(json.dumps({"series": series}), encoding="utf-8")
    assert pixel_bytes(path) == 3 * 2 * 10 * 31 * 38 * 2 + 512 * 512 * 3
