"""The final arrays' bytes depend on the pixels and the store settings only."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import zarr

from bioingest import arrays
from bioingest.arrays import StoreOptions
from bioingest.levels import BandLevels

RNG = np.random.default_rng(7)
PIXELS = (RNG.integers(0, 4096, (1, 2, 1, 300, 260), dtype=np.uint16) // 7).astype(np.uint16)


def write(folder: Path, opts: StoreOptions, *, rows: int, in_flight: int, workers: int) -> str:
    """Write PIXELS in bands of ``rows`` rows; return a digest of every file of the array."""
    root = zarr.open_group(folder, mode="w", zarr_format=opts.zarr_format)
    arrays.create_level(root, "0", PIXELS.shape, PIXELS.dtype, opts)
    path = arrays.array_path(root, "0")
    with arrays.Writer(path, workers=workers, in_flight=in_flight) as writer:
        for c in range(PIXELS.shape[1]):
            for y in range(0, PIXELS.shape[3], rows):
                writer.write((0, c, 0, slice(y, y + rows)), PIXELS[0, c, 0, y : y + rows])
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode())
        digest.update(file.read_bytes())
    np.testing.assert_array_equal(zarr.open_array(path, mode="r")[...], PIXELS)
    return digest.hexdigest()


@pytest.mark.parametrize(
    "opts",
    [
        StoreOptions(chunk_size=32, shard_chunks=4),
        StoreOptions(chunk_size=32, shard_chunks=1),
        StoreOptions(version="0.4", chunk_size=32),
    ],
    ids=["0.5-sharded", "0.5-unsharded", "0.4"],
)
def test_bytes_do_not_depend_on_blocks_threads_or_writes_in_flight(
    tmp_path: Path, opts: StoreOptions
) -> None:
    # Whole shard rows, one at a time on one thread: the reference.
    reference = write(tmp_path / "a", opts, rows=128, in_flight=1, workers=1)
    # Chunk rows (each shard rewritten as its rows arrive), several in flight, two threads.
    assert write(tmp_path / "b", opts, rows=32, in_flight=3, workers=2) == reference
    # Rows that split chunks.
    assert write(tmp_path / "c", opts, rows=20, in_flight=3, workers=2) == reference


def test_reader_clips_blocks_to_the_array_as_numpy_does(tmp_path: Path) -> None:
    root = zarr.open_group(tmp_path, mode="w", zarr_format=3)
    arrays.create_level(root, "0", PIXELS.shape, PIXELS.dtype, StoreOptions(chunk_size=64))
    zarr.open_array(tmp_path / "0", mode="r+")[...] = PIXELS
    reader = arrays.Reader(tmp_path / "0", workers=2)
    index = (0, 1, 0, slice(256, 512), slice(200, 400))
    np.testing.assert_array_equal(reader[index], PIXELS[index])
    got = [block for _, block in reader.blocks([index, (0, 0, 0, slice(0, 10), slice(0, 10))])]
    np.testing.assert_array_equal(got[1], PIXELS[0, 0, 0, :10, :10])


@pytest.mark.parametrize("held", [0, 1, 2])
def test_reader_reuses_buffers_only_once_the_caller_lets_go(tmp_path: Path, held: int) -> None:
    root = zarr.open_group(tmp_path, mode="w", zarr_format=3)
    arrays.create_level(root, "0", PIXELS.shape, PIXELS.dtype, StoreOptions(chunk_size=64))
    zarr.open_array(tmp_path / "0", mode="r+")[...] = PIXELS
    reader = arrays.Reader(tmp_path / "0", workers=2)
    # Bands of 64 rows (the last one shorter), both channels.
    indexes = [(0, c, 0, slice(y, y + 64)) for c in range(2) for y in range(0, 300, 64)]
    kept: list[np.ndarray] = []
    for n, (index, block) in enumerate(reader.blocks(indexes, held=held)):
        np.testing.assert_array_equal(block, PIXELS[index])
        assert block.flags.c_contiguous
        # The blocks the caller still holds are unchanged by the reads ahead.
        for back, old in enumerate(reversed(kept[-held:] if held else [])):
            np.testing.assert_array_equal(old, PIXELS[indexes[n - 1 - back]])
        if n >= held + 2:
            # Decoded into the buffer of the block held + 2 before: no new memory.
            assert np.shares_memory(block, kept[n - held - 2])
        kept.append(block)


class _Write:
    """A finished or failed tensorstore write, as :class:`arrays.Writer` waits for it."""

    def __init__(self, log: list[int], n: int, *, fails: bool = False) -> None:
        self.log, self.n, self.fails = log, n, fails

    def result(self) -> None:
        self.log.append(self.n)
        if self.fails:
            raise OSError(28, "No space left on device")


@pytest.mark.parametrize("leaving_by_error", [False, True])
def test_writer_waits_for_every_write_before_a_failure_leaves(
    tmp_path: Path, leaving_by_error: bool
) -> None:
    # A write still running after the error could create files in a folder the caller
    # has already removed (atomic.atomic_dir).
    root = zarr.open_group(tmp_path / "s.zarr", mode="w", zarr_format=3)
    arrays.create_level(root, "0", (1, 1, 1, 8, 8), np.uint8, StoreOptions())
    writer = arrays.Writer(arrays.array_path(root, "0"), workers=1)
    waited: list[int] = []
    writer._pending.extend(_Write(waited, n, fails=n == 1) for n in range(4))
    with pytest.raises(OSError, match="No space left") as caught:
        if leaving_by_error:
            with writer:
                raise OSError(28, "No space left on device")
        else:
            writer.close()
    assert waited == [0, 1, 2, 3]
    assert caught.value.errno == 28


@pytest.mark.parametrize("failing", [0, 1])
def test_band_levels_wait_for_every_level_when_one_fails(tmp_path: Path, failing: int) -> None:
    root = zarr.open_group(tmp_path / "s.zarr", mode="w", zarr_format=3)
    opts = StoreOptions(chunk_size=16, min_size=4)
    levels = BandLevels(root, (1, 1, 1, 64, 64), np.uint8, opts=opts)
    waited: list[int] = []
    for k, writer in enumerate(levels._writers):
        writer._pending.extend(
            _Write(waited, 10 * k + n, fails=(k, n) == (failing, 1)) for n in range(2)
        )
    assert len(levels._writers) == 2
    with pytest.raises(OSError, match="No space left"), levels:
        pass
    assert sorted(waited) == [0, 1, 10, 11]
