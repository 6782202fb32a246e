"""The final arrays: how they are created, written in parallel, and read.

zarr-python creates each array (its ``zarr.json`` or ``.zarray``), so the metadata is the
same whoever writes the chunks; tensorstore then encodes and writes the chunks on a pool of
threads while the caller reads the next block. Chunks are encoded independently and a
shard is assembled in chunk order, so the bytes do not depend on the number of threads.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from bioingest.targets import NgffVersion

if TYPE_CHECKING:
    import tensorstore as ts
    import zarr

AXES = ["t", "c", "z", "y", "x"]
Method = Literal["mean", "nearest", "mode"]
#: Arrays handed to the writer and not yet encoded, at most.
IN_FLIGHT = 2


@dataclass(frozen=True)
class StoreOptions:
    """How the final arrays are laid out and compressed.

    Attributes
    ----------
    version
        NGFF version: ``0.5`` (Zarr v3) or ``0.4`` (Zarr v2).
    chunk_size
        Edge of a chunk in Y and X.
    shard_chunks
        Chunks per shard edge (0.5 only); 0 or 1 disables sharding.
    compression_level
        zstd level of the final arrays.
    method
        Downsampling: ``mean`` for intensities, ``nearest`` or ``mode`` for labels.
    min_size
        Stop adding levels before the smaller plane edge drops below this.
    threads
        Threads that encode and decode chunks; 0 uses every core this process may run on
        (a SLURM job's allocation, for one).
    """

    version: NgffVersion = "0.5"
    chunk_size: int = 1024
    shard_chunks: int = 4
    compression_level: int = 5
    method: Method = "mean"
    min_size: int = 64
    threads: int = 0

    @property
    def block(self) -> int:
        """Edge of the region written at once: one shard, so no shard is rewritten."""
        return self.chunk_size * max(self.shard_chunks, 1)

    @property
    def zarr_format(self) -> Literal[2, 3]:
        """Zarr v3 for NGFF 0.5, v2 for 0.4."""
        return 3 if self.version == "0.5" else 2

    @property
    def workers(self) -> int:
        """Threads that encode and decode chunks: by default the cores this process may use."""
        return self.threads or len(os.sched_getaffinity(0)) or 1


def create_level(
    group: zarr.Group, path: str, shape: tuple[int, ...], dtype: Any, opts: StoreOptions
) -> zarr.Array[Any]:
    """Create one TCZYX array of the final store (chunks of one plane tile, sharded in 0.5)."""
    from numcodecs import Blosc
    from zarr.codecs import BloscCodec

    cy, cx = min(opts.chunk_size, shape[3]), min(opts.chunk_size, shape[4])
    chunks = (1, 1, 1, cy, cx)
    if opts.version == "0.4":
        return group.create_array(
            path,
            shape=shape,
            dtype=dtype,
            chunks=chunks,
            # Blosc, not bare zstd: the Java Zarr v2 readers (Bio-Formats, OMERO, QuPath)
            # decode Blosc and zlib only.
            compressors=Blosc(cname="zstd", clevel=opts.compression_level, shuffle=Blosc.SHUFFLE),
            chunk_key_encoding={"name": "v2", "separator": "/"},
            fill_value=0,
        )
    shards = None
    if opts.shard_chunks > 1:
        ky = min(opts.shard_chunks, math.ceil(shape[3] / cy))
        kx = min(opts.shard_chunks, math.ceil(shape[4] / cx))
        shards = (1, 1, 1, cy * ky, cx * kx)
    return group.create_array(
        path,
        shape=shape,
        dtype=dtype,
        chunks=chunks,
        shards=shards,
        dimension_names=AXES,
        compressors=BloscCodec(cname="zstd", clevel=opts.compression_level, shuffle="shuffle"),
        fill_value=0,
    )


def block_edges(array: zarr.Array[Any]) -> tuple[int, int]:
    """Y and X edge of one shard (one chunk when unsharded): the unit written at once."""
    shards = array.shards or array.chunks
    return int(shards[3]), int(shards[4])


@functools.cache
def _context(workers: int) -> ts.Context:
    """One tensorstore context (thread pools) per process and thread count.

    A context per array would start new threads for every level written, each keeping
    freed memory of its own (glibc's per-thread arenas): peak memory then grew with the
    number of levels.
    """
    import tensorstore as ts

    return ts.Context(
        {
            "data_copy_concurrency": {"limit": workers},
            "file_io_concurrency": {"limit": workers},
        }
    )


def open_array(path: Path, *, workers: int) -> ts.TensorStore:
    """Open an array zarr-python created, for tensorstore to read and write its chunks."""
    import tensorstore as ts

    driver = "zarr3" if (path / "zarr.json").is_file() else "zarr"
    spec = {
        "driver": driver,
        "kvstore": {"driver": "file", "path": str(path)},
        "recheck_cached_data": False,
    }
    opened: ts.TensorStore = result(ts.open(spec, read=True, write=True, context=_context(workers)))
    return opened


_OS_ERROR = re.compile(r"\[os_error_code='(\d+)'\]")


def result(future: Any) -> Any:
    """Wait for a tensorstore future; its file errors become :class:`OSError` with errno.

    tensorstore reports a full disk or a missing file as a ``ValueError`` whose text
    carries the system's error code: the CLI then says "out of disk space" in one line.
    """
    try:
        return future.result()
    except ValueError as exc:
        code = _OS_ERROR.search(str(exc))
        if code is None:
            raise
        number = int(code.group(1))
        # No file name: the CLI then names the store being written, not a chunk inside
        # its hidden partial folder.
        raise OSError(number, os.strerror(number)) from exc


def clipped(index: tuple[Any, ...], shape: tuple[int, ...]) -> tuple[Any, ...]:
    """``index`` with its slices cut to ``shape``, as numpy would (tensorstore raises)."""
    return tuple(
        slice(*item.indices(size)) if isinstance(item, slice) else item
        for item, size in zip(index, shape, strict=False)
    )


class Writer:
    """Write blocks of one array while the caller prepares the next ones.

    At most ``in_flight`` blocks wait to be encoded: memory stays near that many blocks
    whatever the image size. A block may cover part of a shard: tensorstore then rewrites
    the shard with its chunks in chunk order, so the bytes written do not depend on the
    blocks' shapes or on how many are in flight (``tests/test_arrays.py``).

    Parameters
    ----------
    path
        Folder of an array created by :func:`create_level`.
    workers
        Threads that encode chunks.
    in_flight
        Blocks handed over and not yet written, at most.
    """

    def __init__(self, path: Path, *, workers: int, in_flight: int = IN_FLIGHT) -> None:
        self._array = open_array(path, workers=workers)
        self._shape = tuple(int(n) for n in self._array.shape)
        self._pending: deque[Any] = deque()
        self._limit = max(in_flight, 1)

    def write(self, index: tuple[Any, ...], block: np.ndarray) -> None:
        """Hand over ``block`` for ``array[index]``; the caller must not change it after."""
        while len(self._pending) >= self._limit:
            result(self._pending.popleft())
        native = block.dtype.newbyteorder("=")
        target = self._array[clipped(index, self._shape)]
        self._pending.append(target.write(np.asarray(block, dtype=native)))

    def close(self) -> None:
        """Wait until every block is written; then raise the first write's failure, if any.

        Every write ends before this returns or raises: none may still be creating files
        when the caller removes a failed store's folder.
        """
        failure: Exception | None = None
        while self._pending:
            try:
                result(self._pending.popleft())
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def __enter__(self) -> Writer:
        """Return the writer."""
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        """Wait until every block is written; on leaving by an error, that error stands."""
        if kind is None:
            self.close()
            return
        with contextlib.suppress(Exception):
            self.close()


class Reader:
    """Read blocks of one array, decoding each next block while the caller uses this one.

    Parameters
    ----------
    path
        Folder of a Zarr array (v2 or v3).
    workers
        Threads that decode chunks.
    """

    def __init__(self, path: Path, *, workers: int) -> None:
        self._array = open_array(path, workers=workers)
        self.shape: tuple[int, ...] = tuple(int(n) for n in self._array.shape)
        self.dtype = np.dtype(self._array.dtype.numpy_dtype)

    def blocks(self, indexes: list[tuple[Any, ...]], *, held: int | None = None) -> Any:
        """Yield ``(index, block)`` for every index in order, reading one block ahead.

        Parameters
        ----------
        indexes
            Regions to read, in order.
        held
            How many blocks already yielded the caller may still use when it asks for
            the next one. Given, blocks are decoded into ``held + 2`` buffers taken in
            turn: fresh memory for every block costs a page fault per 4 KiB, as much
            time as the decoding. None: every block is a new array.
        """
        import tensorstore as ts

        # Buffers grow to the largest block their turn has held; views are made one at a
        # time, so memory does not grow with the number of blocks.
        ring = [np.empty(0, dtype=self.dtype) for _ in range(held + 2)] if held is not None else []

        def start(k: int) -> tuple[np.ndarray | None, Any]:
            view = self._array[clipped(indexes[k], self.shape)]
            if not ring:
                return None, view.read()
            shape = tuple(int(n) for n in view.shape)
            size, slot = math.prod(shape), k % len(ring)
            if ring[slot].size < size:
                ring[slot] = np.empty(size, dtype=self.dtype)
            target = ring[slot][:size].reshape(shape)
            return target, ts.array(target, copy=False, write=True).write(view)

        def finish(started: tuple[np.ndarray | None, Any]) -> np.ndarray:
            target, future = started
            block: np.ndarray = result(future)
            return block if target is None else target

        ahead: deque[tuple[int, tuple[np.ndarray | None, Any]]] = deque()
        for k in range(len(indexes)):
            ahead.append((k, start(k)))
            if len(ahead) > 1:
                done, started = ahead.popleft()
                yield indexes[done], finish(started)
        while ahead:
            done, started = ahead.popleft()
            yield indexes[done], finish(started)

    def read(self, index: tuple[Any, ...]) -> np.ndarray:
        """Read one region."""
        block: np.ndarray = result(self._array[clipped(index, self.shape)].read())
        return block

    def __getitem__(self, index: tuple[Any, ...]) -> np.ndarray:
        """Read one region, as numpy-style indexing of the array would."""
        return self.read(index)


def array_path(group: zarr.Group, name: str) -> Path:
    """Folder of array ``name`` of a local group."""
    root = group.store.root  # type: ignore[attr-defined]
    return Path(root) / group.path / name if group.path else Path(root) / name
