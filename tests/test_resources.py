"""Cluster requests: memory fixed by the configuration, run time from the image size."""

from __future__ import annotations

import json
from pathlib import Path

from bioingest.resources import convert_estimate, image_estimate, pixel_bytes


def test_convert_memory_is_set_by_config_not_by_image() -> None:
    small = convert_estimate(source_bytes=10_000, java_heap_mb=1024, tile_size=1024)
    huge = convert_estimate(source_bytes=50 * 2**30, java_heap_mb=1024, tile_size=1024)
    assert small.mem_mb == huge.mem_mb == 1024 + 512 + 32
    assert small.runtime_min == 11
    # 50 GiB at 5 MiB/s is 171 minutes, plus the fixed 10.
    assert huge.runtime_min == 181
    assert convert_estimate(source_bytes=50 * 2**30, java_heap_mb=2048, tile_size=1024).mem_mb == (
        2048 + 512 + 32
    )


def test_retries_double_the_runtime() -> None:
    first, third = (
        image_estimate(
            pixel_bytes=2**30, chunk_size=1024, shard_chunks=4, tile_size=1024, attempt=a
        )
        for a in (1, 3)
    )
    assert third.runtime_min == 4 * first.runtime_min == 4 * (10 + 1)
    # Six shards of 4096^2 float64 in flight.
    assert first.mem_mb == third.mem_mb == 512 + 768


def test_pixel_bytes_of_every_series(tmp_path: Path) -> None:
    path = tmp_path / "d.source.json"
    series = [
        {"index": 0, "shape": [3, 2, 10, 31, 38], "dtype": "uint16"},
        {"index": 1, "shape": [1, 1, 1, 512, 512, 3], "dtype": "uint8"},
    ]
    path.write_text(json.dumps({"series": series}), encoding="utf-8")
    assert pixel_bytes(path) == 3 * 2 * 10 * 31 * 38 * 2 + 512 * 512 * 3
