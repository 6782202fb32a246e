"""bioingest against peer converters: whole-workflow speed, memory and CPU use, in one run.

Every number of the report is measured in the same run, on inputs generated at run time:

* **Peers**, per input size (``--sizes``, MiB of pixels; tiled 512 x 512 uint16 single-plane
  OME-TIFF, smooth structure plus noise, zlib): bioingest's whole Snakemake workflow
  (inventory, convert, pyramid, metadata, QC, report, checksums, RO-Crate) against
  ome-zarr-py (``write_image`` of a lazy dask array, one Python process), ngff-zarr (its
  CLI), EuBI-Bridge-lite (``eubi to_zarr``) and bfconvert (Bio-Formats' ImageConverter,
  pyramidal OME-TIFF). The Zarr peers are asked for what bioingest's default (``target:
  archive``) writes wherever their interface allows it: NGFF 0.5 (Zarr v3), 1024 x 1024
  chunks in 4096 x 4096 shards, Blosc zstd level 5 with byte shuffle. The codec, chunk and
  shard each tool actually wrote are read back from its output and shown in the table.
* **Floor**: read every tile with tifffile and compress every pyramid level's bytes with
  Blosc zstd 5 + shuffle in 1024 x 1024 chunks on ``--cores`` threads (no Zarr, no files
  written): ``convert`` + ``pyramid`` seconds are reported as a multiple of it.
* **CPU/wall** of the ``bioingest convert`` and ``bioingest pyramid`` processes, and the
  **peak RSS** of every process of every run (the kernel's VmHWM), from polling ``/proc``
  over the whole process tree every 50 ms. The bench makes itself a child subreaper, so
  daemons started by a job (bioingest's Bio-Formats JVM server) stay in the tree; they are
  stopped when the run ends.
* **Where the time goes**: each job of the bioingest run (its start, wall and CPU
  seconds), Snakemake's start, the time between jobs and the idle core-seconds.
* **Growth** (``--growth``): bioingest alone at several sizes, in seconds per GiB.
* **Small files** (``--small-files``): that many 2 x 256 x 256 uint16 OME-TIFFs through the
  whole workflow, against one ome-zarr-py process that loops ``write_image`` over them.

Peer settings (what bioingest's default writes, where the peer lets one ask for it):

* ome-zarr-py 0.18.0 (the newest for Python 3.11; 0.19 and later need 3.12):
  ``write_image(fmt=FormatV05(), storage_options={chunks: 1024, shards: 4096,
  compressors: [BloscCodec(zstd, 5, shuffle)]})`` into a Zarr v3 group, its default pyramid
  (scale factors 2 to 16, ``resize``); if that version rejected the codec it would write its
  default and say so.
* ngff-zarr 0.50.0: ``--ome-zarr-version 0.5 -c 1024 --chunks-per-shard 4 --codec
  blosc:zstd --compression-level 5 -m itkwasm_bin_shrink`` (numcodecs' Blosc shuffles bytes
  by default; bin shrink is a 2 x 2 mean, as bioingest's ``pyramid_method: mean``).
* EuBI-Bridge-lite 0.3.2: ``--zarr_format=3 --ome_zarr_version=0.5 --compressor=blosc
  --compressor_params="{'cname': 'zstd', 'clevel': 5, 'shuffle': 'shuffle'}"
  --auto_chunk=False --y_chunk=1024 --x_chunk=1024 --y_shard_coef=4 --x_shard_coef=4
  --downscale_method=mean``, with a fresh ``EUBI_CONFIG_DIR`` per run (its default chunks
  are about 1 MB, its shards 3 x 3 chunks and its pyramid a stride slice).
* bfconvert (Bio-Formats 7.3.1, bioingest's jar): ``-pyramid-resolutions N -pyramid-scale 2
  -tilex 1024 -tiley 1024 -compression zlib -bigtiff``, N the level count bioingest
  writes, ``-Xmx1024m`` (bioingest's ``java_heap_mb``). OME-TIFF has no Blosc: zlib is its
  lossless codec.

The peers run from venvs that the bench builds itself (``--venvs``, default
``results/bench/venvs/<peer>``, reused while their pinned requirement list in
``benchmarks/peers/`` is unchanged). A peer that cannot be built or fails is reported as a
row saying why; the other results are still reported.

Usage::

    .venv/bin/python benchmarks/bench_peers.py                 # make bench: 512 and 2048 MiB
    .venv/bin/python benchmarks/bench_peers.py --sizes 16 --growth 8,16 --small-files 5
    .venv/bin/python benchmarks/bench_peers.py --only bioingest,floor,eubi --skip-small
    .venv/bin/python benchmarks/bench_peers.py --repeat 3 --out results/bench/peers.md

``--only`` takes any of ``bioingest, floor, ome-zarr, ngff-zarr, eubi, bfconvert``; the
growth series needs ``bioingest``, the small-file comparison ``bioingest`` and
``ome-zarr``. The report is printed as Markdown and written to ``--out`` (plus the raw
numbers next to it as JSON), rewritten after every measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import datetime
import functools
import hashlib
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import tifffile
from numcodecs import Blosc, blosc

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PEERS_DIR = Path(__file__).resolve().parent / "peers"
#: Source tile edge of the generated OME-TIFFs, pixels.
TILE = 512
#: Chunk edge of bioingest's default target (archive) and of the peers, pixels.
CHUNK = 1024
#: Chunks per shard edge of the default target.
SHARD_CHUNKS = 4
#: No pyramid level gets an edge below this (bioingest's pyramid_min_size default).
MIN_LEVEL_EDGE = 64
#: Seconds between two polls of the process tree.
POLL_S = 0.05
MIB = 2**20
GIB = 2**30
#: The issue's targets.
TARGET_VS_EUBI = 1.0
TARGET_VS_OME_ZARR = 0.5
TARGET_FLOOR = 2.0
TARGET_CPU_WALL = 1.7
TARGET_SMALL = 3.0
TARGET_RSS_MIB = 1024.0
ALL_TOOLS = ("bioingest", "floor", "ome-zarr", "ngff-zarr", "eubi", "bfconvert")

# The ome-zarr-py peer: one Python process writes every OME-TIFF of a folder.
OME_ZARR_SCRIPT = '''\
"""ome-zarr-py peer of bench_peers.py: write_image of every IN_DIR/*.ome.tif into OUT_DIR."""
import json
import sys
from importlib.metadata import version
from pathlib import Path

import dask.array as da
import tifffile
import zarr
from ome_zarr.format import FormatV05
from ome_zarr.writer import write_image


def codec_options():
    """Blosc zstd 5 + shuffle, as bioingest writes, if this zarr has the codec."""
    try:
        from zarr.codecs import BloscCodec
    except ImportError as error:
        return None, f"default codec (no zarr.codecs.BloscCodec: {error})"
    codec = BloscCodec(cname="zstd", clevel=5, shuffle="shuffle", typesize=2)
    return [codec], "blosc zstd 5 shuffle"


def main():
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    chunk, shard = int(sys.argv[3]), int(sys.argv[4])
    codecs, codec_note = codec_options()
    count = 0
    for path in sorted(src.glob("*.ome.tif")):
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            image = da.from_zarr(zarr.open_array(series.aszarr(), mode="r"))
            lead = (1,) * (image.ndim - 2)
            options = {"chunks": lead + (chunk, chunk), "shards": lead + (shard, shard)}
            if codecs is not None:
                options["compressors"] = codecs
            out = dst / (path.name[: -len(".ome.tif")] + ".ome.zarr")
            group = zarr.open_group(str(out), mode="w", zarr_format=3)
            try:
                write_image(
                    image, group, fmt=FormatV05(), axes=series.axes.lower(),
                    storage_options=options,
                )
            except (TypeError, ValueError) as error:
                if codecs is None:
                    raise
                # This ome-zarr-py does not take the codec: write with its default.
                codecs, codec_note = None, f"default codec (Blosc rejected: {error})"
                options.pop("compressors")
                group = zarr.open_group(str(out), mode="w", zarr_format=3)
                write_image(
                    image, group, fmt=FormatV05(), axes=series.axes.lower(),
                    storage_options=options,
                )
        count += 1
    print(json.dumps({"ome-zarr": version("ome-zarr"), "files": count, "codec": codec_note}))


main()
'''


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------


def plane_shape(mib: float) -> tuple[int, int]:
    """Plane (height, width) of about ``mib`` MiB of uint16 pixels, edges multiples of TILE.

    Powers of two give the exact size: 64 MiB is 4096 x 8192, 512 MiB 16384 x 16384.

    Parameters
    ----------
    mib
        Wanted size of the pixels, MiB.

    Returns
    -------
    tuple of int
        Height and width in pixels.
    """
    pixels = max(1, int(mib * MIB) // 2)
    width = max(TILE, 2 ** math.ceil(math.log2(math.sqrt(pixels))))
    height = max(TILE, round(pixels / width / TILE) * TILE)
    return height, width


def write_input(path: Path, height: int, width: int, seed: int = 0) -> None:
    """Write a tiled uint16 single-plane OME-TIFF tile by tile (bounded memory).

    Parameters
    ----------
    path
        The ``.ome.tif`` to write.
    height, width
        Plane shape, multiples of :data:`TILE`.
    seed
        Seed of the noise.
    """
    rng = np.random.default_rng(seed)

    def tiles() -> Iterator[np.ndarray]:
        for y in range(0, height, TILE):
            rows = np.sin(np.arange(y, y + TILE, dtype=np.float64) / 300.0)[:, None]
            for x in range(0, width, TILE):
                cols = np.cos(np.arange(x, x + TILE, dtype=np.float64) / 500.0)[None, :]
                tile = ((rows + cols + 2.0) * 8000.0).astype(np.uint16)
                tile += rng.integers(0, 64, tile.shape, dtype=np.uint16)
                yield tile

    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(
        path,
        tiles(),
        shape=(height, width),
        dtype=np.uint16,
        tile=(TILE, TILE),
        compression="zlib",
        maxworkers=2,
        bigtiff=height * width * 2 > 3.5 * GIB,
        ome=True,
        metadata={"axes": "YX"},
    )


def write_small_inputs(folder: Path, count: int) -> None:
    """``count`` 2-channel 256 x 256 uint16 OME-TIFFs, as ``bench_many_files.py`` makes them.

    Parameters
    ----------
    folder
        Where to write ``t0000.ome.tif``, ``t0001.ome.tif``, ….
    count
        Number of files.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        data = rng.integers(0, 4096, (2, 256, 256), dtype=np.uint16)
        tifffile.imwrite(folder / f"t{i:04d}.ome.tif", data, ome=True, metadata={"axes": "CYX"})


def level_shapes(height: int, width: int) -> list[tuple[int, int]]:
    """Plane shapes of bioingest's default pyramid (halve until one chunk or too small).

    Parameters
    ----------
    height, width
        Level 0 shape.

    Returns
    -------
    list of tuple of int
        One (height, width) per level, level 0 first.
    """
    shapes = [(height, width)]
    y, x = height, width
    while max(y, x) > CHUNK and min(math.ceil(y / 2), math.ceil(x / 2)) >= MIN_LEVEL_EDGE:
        y, x = math.ceil(y / 2), math.ceil(x / 2)
        shapes.append((y, x))
    return shapes


# --------------------------------------------------------------------------------------
# The floor: read every tile, compress every level, nothing else
# --------------------------------------------------------------------------------------


def floor_seconds(path: Path, threads: int) -> float:
    """Seconds to read every tile of ``path`` and compress every pyramid level.

    Level 0 is read with tifffile (raw tile bytes by ``os.pread``, decoded by the page's
    own decoder) and compressed in 1024 x 1024 chunks with Blosc zstd 5 + shuffle; level
    k + 1 is a 2 x 2 stride slice of level k's chunks, compressed the same way, down to
    the level count bioingest writes. ``threads`` workers do the reading and compressing
    (Blosc itself single-threaded, it releases the GIL); the main thread only assembles
    the halved chunks into the rows of the next level.

    Parameters
    ----------
    path
        A tiled single-plane TIFF.
    threads
        Worker threads.

    Returns
    -------
    float
        Wall seconds, opening the file included.
    """
    blosc.set_nthreads(1)
    blosc.use_threads = False
    codec = Blosc(cname="zstd", clevel=5, shuffle=Blosc.SHUFFLE)
    start = time.perf_counter()
    with tifffile.TiffFile(path) as tif, ThreadPoolExecutor(threads) as pool:
        page = tif.pages.first
        height, width = int(page.shape[0]), int(page.shape[1])
        th, tw = int(page.tilelength), int(page.tilewidth)
        tiles_across = math.ceil(width / tw)
        shapes = level_shapes(height, width)
        fd = os.open(path, os.O_RDONLY)

        def read_chunk(y: int, x: int) -> np.ndarray:
            out = np.empty((min(CHUNK, height - y), min(CHUNK, width - x)), np.uint16)
            for ty in range(y // th, math.ceil((y + out.shape[0]) / th)):
                for tx in range(x // tw, math.ceil((x + out.shape[1]) / tw)):
                    i = ty * tiles_across + tx
                    raw = os.pread(fd, int(page.databytecounts[i]), int(page.dataoffsets[i]))
                    decoded = page.decode(raw, i)[0]
                    assert decoded is not None, f"tile {i} is empty"
                    segment = decoded[0, :, :, 0]
                    y0, x0 = max(y, ty * th), max(x, tx * tw)
                    y1 = min(y + out.shape[0], ty * th + segment.shape[0])
                    x1 = min(x + out.shape[1], tx * tw + segment.shape[1])
                    out[y0 - y : y1 - y, x0 - x : x1 - x] = segment[
                        y0 - ty * th : y1 - ty * th, x0 - tx * tw : x1 - tx * tw
                    ]
            return out

        def squeeze(block: np.ndarray, last: bool) -> np.ndarray | None:
            codec.encode(np.ascontiguousarray(block))
            return None if last else np.ascontiguousarray(block[::2, ::2])

        # Rows of each level > 0 being assembled: level -> band index -> (array, filled).
        bands: dict[int, dict[int, list[Any]]] = {k: {} for k in range(1, len(shapes))}
        pending: deque[tuple[int, int, int, Future[np.ndarray | None]]] = deque()

        def submit_band(level: int, y: int, band: np.ndarray) -> None:
            last = level == len(shapes) - 1
            for x in range(0, band.shape[1], CHUNK):
                block = band[:, x : x + CHUNK]
                pending.append((level, y, x, pool.submit(squeeze, block, last)))

        def deliver(level: int, y: int, x: int, half: np.ndarray) -> None:
            nxt = level + 1
            ny, nx = y // 2, x // 2
            index, row = divmod(ny, CHUNK)
            if index not in bands[nxt]:
                rows = min(CHUNK, shapes[nxt][0] - index * CHUNK)
                bands[nxt][index] = [np.empty((rows, shapes[nxt][1]), np.uint16), 0]
            entry = bands[nxt][index]
            entry[0][row : row + half.shape[0], nx : nx + half.shape[1]] = half
            entry[1] += half.size
            if entry[1] == entry[0].size:
                del bands[nxt][index]
                submit_band(nxt, index * CHUNK, entry[0])

        def collect(keep: int) -> None:
            while len(pending) > keep:
                level, y, x, future = pending.popleft()
                half = future.result()
                if half is not None:
                    deliver(level, y, x, half)

        last0 = len(shapes) == 1
        try:
            for y in range(0, height, CHUNK):
                for x in range(0, width, CHUNK):
                    task = pool.submit(lambda y, x: squeeze(read_chunk(y, x), last0), y, x)
                    pending.append((0, y, x, task))
                    collect(4 * threads)
            collect(0)
        finally:
            os.close(fd)
    return time.perf_counter() - start


# --------------------------------------------------------------------------------------
# Running a command while polling its process tree
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Proc:
    """One process seen in a run's tree.

    Attributes
    ----------
    pid, ppid
        Process and parent ids when first seen (before any reparenting).
    start
        Start time (epoch seconds, from the kernel's clock ticks since boot).
    end
        Estimated exit time (epoch seconds): half-way between the last poll that saw it
        running and the first that saw it gone or a zombie.
    label
        Short name: ``bioingest convert``, ``java loci.formats.tools.ImageConverter``, …,
        from its command line when last seen alive.
    cpu
        User + system seconds of the process itself (its threads), as last polled.
    hwm_kib
        Peak resident set size (VmHWM), KiB.
    """

    pid: int
    ppid: int
    start: float
    end: float
    label: str
    cpu: float = 0.0
    hwm_kib: int = 0
    last_alive: float = 0.0
    gone: bool = False


#: Appended to the name of a process first seen as a zombie (its command line is gone).
EXITED = " (seen only after it exited)"
#: Appended to a warm job's client: the process Snakemake runs, waiting on the server.
CLIENT = " --warm (client)"


def label_of(cmdline: Sequence[str], name: str) -> str:
    """Name a process shortly and stably, from its command line.

    Parameters
    ----------
    cmdline
        The process's arguments.
    name
        Its kernel name, used when the command line is gone (zombie), and to tell a job
        forked by bioingest's warm server (named ``warm VERB``) from the server.

    Returns
    -------
    str
        For example ``bioingest pyramid``, ``snakemake``, ``java ...ImageConverter``.
    """
    if not cmdline:
        return name
    for i, arg in enumerate(cmdline[:3]):
        if Path(arg).name == "bioingest" and i + 1 < len(cmdline):
            if cmdline[i + 1] == "warm-server" and name.startswith("warm "):
                # A job forked by the warm server (it names itself after its verb).
                return f"bioingest {name.removeprefix('warm ')}"
            if "--warm" in cmdline:
                return f"bioingest {cmdline[i + 1]}{CLIENT}"
            return f"bioingest {cmdline[i + 1]}"
    exe = Path(cmdline[0]).name
    if exe == "java":
        rest = iter(cmdline[1:])
        for arg in rest:
            if arg in ("-cp", "-classpath", "--class-path", "-jar"):
                next(rest, None)
            elif not arg.startswith("-"):
                return f"java {arg}"
        return " ".join(["java", *cmdline[1:2]])
    if exe.startswith("python"):
        args = [a for a in cmdline[1:] if a in ("-c", "-m") or not a.startswith("-")]
        if args[:1] == ["-m"] and len(args) > 1:
            return f"python -m {args[1]}"
        if args[:1] == ["-c"]:
            code = args[1] if len(args) > 1 else ""
            if "multiprocessing" in code:
                kind = "resource tracker" if "resource_tracker" in code else "worker"
                return f"python multiprocessing {kind}"
            return "python -c"
        return Path(args[0]).name if args else "python"
    if exe in ("sh", "bash") and len(cmdline) > 2 and cmdline[1] == "-c":
        return f"{exe} -c {' '.join(cmdline[2].split()[:2])}"
    return exe


def _read_hwm_kib(pid: int) -> int:
    """VmHWM of ``pid`` in KiB, or 0 (gone, or a zombie without memory)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _start_epoch(pid: int, boot_epoch: float) -> float | None:
    """Start time of ``pid`` in epoch seconds, to a clock tick.

    psutil's ``create_time`` adds the boot time in whole seconds, which shifts every
    lifetime by up to a second; this uses ``CLOCK_BOOTTIME`` instead.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return boot_epoch + int(fields[19]) / _CLOCK_TICKS


def become_subreaper() -> bool:
    """Make this process adopt orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``).

    Returns
    -------
    bool
        Whether it worked; without it a daemon started by a job leaves the tree.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(36, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


class TreeMonitor:
    """Polls every descendant of this process: CPU seconds, peak RSS, lifetime.

    Parameters
    ----------
    root_pid
        The command being measured; the only child this monitor never reaps.
    """

    def __init__(self, root_pid: int) -> None:
        self.root_pid = root_pid
        self.procs: dict[tuple[int, float], Proc] = {}
        self.tree_peak_kib = 0
        self._me = psutil.Process()
        self._boot_epoch = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)

    def sample(self) -> None:
        """Poll the tree once; reap adopted zombies (other than the root) once read."""
        now = time.time()
        try:
            descendants = self._me.children(recursive=True)
        except psutil.Error:
            return
        rss_sum = 0
        for proc in descendants:
            try:
                with proc.oneshot():
                    key = (proc.pid, proc.create_time())
                    times = proc.cpu_times()
                    status = proc.status()
                    seen = self.procs.get(key)
                    if seen is None:
                        try:
                            cmdline = proc.cmdline()
                        except psutil.Error:
                            cmdline = []
                        name = proc.name()
                        if status == psutil.STATUS_ZOMBIE:
                            name += EXITED
                        start = _start_epoch(proc.pid, self._boot_epoch)
                        seen = Proc(
                            pid=proc.pid,
                            ppid=proc.ppid(),
                            start=key[1] if start is None else start,
                            end=now,
                            label=label_of(cmdline, name),
                        )
                        self.procs[key] = seen
                    elif status != psutil.STATUS_ZOMBIE:
                        # Named again while alive: a process first seen between its fork and
                        # its exec (or a warm job before it names itself) bore its parent's
                        # command line.
                        seen.label = label_of(proc.cmdline(), proc.name())
                    seen.cpu = max(seen.cpu, times.user + times.system)
                    if status != psutil.STATUS_ZOMBIE:
                        seen.last_alive = now
                        rss_sum += proc.memory_info().rss // 1024
                        seen.hwm_kib = max(seen.hwm_kib, _read_hwm_kib(proc.pid))
            except psutil.Error:
                continue
            if status == psutil.STATUS_ZOMBIE and proc.pid != self.root_pid:
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(proc.pid, os.WNOHANG)
        self.tree_peak_kib = max(self.tree_peak_kib, rss_sum)
        for seen in self.procs.values():
            if seen.gone:
                continue
            if seen.last_alive == now:
                seen.end = now
            else:  # exited (or a zombie) since the last poll
                seen.end = (max(seen.last_alive, seen.start) + now) / 2
                seen.gone = True


#: Processes that serve many jobs: not jobs themselves.
_SERVERS = ("bioingest warm-server", "bioingest jvm-server")


@dataclasses.dataclass
class Step:
    """One job of a workflow run: its verb, start (epoch s), wall and CPU seconds."""

    verb: str
    start: float
    wall: float
    cpu: float


@dataclasses.dataclass
class Run:
    """The outcome of one measured command.

    Attributes
    ----------
    ok
        Whether it succeeded and wrote its output.
    seconds
        Wall seconds of the command.
    note
        Why it failed, or a remark.
    procs
        Every process seen in its tree.
    tree_peak_mib
        Largest sum of the tree's RSS seen in one poll, MiB.
    output
        What the output holds, read back from it (format, levels, chunk, shard, codec).
    command
        The command that ran.
    """

    ok: bool
    seconds: float
    note: str = ""
    procs: list[Proc] = dataclasses.field(default_factory=list)
    tree_peak_mib: float = 0.0
    output: str = ""
    command: str = ""

    def peak(self, prefix: str = "") -> tuple[float, str]:
        """Return the largest peak RSS (MiB) of one process labelled ``prefix``…, and its label."""
        best = max(
            (p for p in self.procs if p.label.startswith(prefix)),
            key=lambda p: p.hwm_kib,
            default=None,
        )
        return (0.0, "–") if best is None else (best.hwm_kib / 1024, best.label)

    def peaks_by_label(self) -> dict[str, float]:
        """Largest peak RSS (MiB) per process label."""
        out: dict[str, float] = {}
        for p in self.procs:
            out[p.label] = max(out.get(p.label, 0.0), p.hwm_kib / 1024)
        return out

    def cpu_seconds(self) -> float:
        """CPU seconds of every process of the tree."""
        return sum(p.cpu for p in self.procs)

    def verb(self, name: str) -> tuple[float, float]:
        """Wall and CPU seconds of every ``bioingest NAME`` process.

        CPU counts each process with its descendants (other than a server it may have
        started, Bio-Formats' or the warm Python, which serves other jobs too); wall is each
        process's lifetime.

        Parameters
        ----------
        name
            The verb, e.g. ``convert``.

        Returns
        -------
        tuple of float
            Summed wall seconds and summed CPU seconds.
        """
        cpu_of = self._cpu_with_children()
        wall = cpu = 0.0
        for p in self.procs:
            if p.label == f"bioingest {name}":
                wall += max(0.0, p.end - p.start)
                cpu += cpu_of(p)
        return wall, cpu

    def _cpu_with_children(self) -> Callable[[Proc], float]:
        """CPU seconds of a process and its descendants, servers left out."""
        children: dict[int, list[Proc]] = {}
        for p in self.procs:
            children.setdefault(p.ppid, []).append(p)

        def cpu_of(p: Proc) -> float:
            kids = children.get(p.pid, [])
            return p.cpu + sum(cpu_of(k) for k in kids if k.label not in _SERVERS)

        return cpu_of

    def steps(self) -> list[Step]:
        """Each job of a bioingest workflow run, in the order it started.

        A job is a ``bioingest VERB`` process: the child the warm server forked for it,
        or the process itself when it ran without the warm Python (the inventory always
        does: it starts the server). A warm client is left out when the server ran its
        job. CPU counts each job with its descendants, as :meth:`verb` does.
        """
        cpu_of = self._cpu_with_children()

        def verb(p: Proc) -> str | None:
            label = p.label.removesuffix(CLIENT).removesuffix(EXITED)
            if label.startswith("warm "):
                # A warm child first seen after its exit keeps only its kernel name.
                label = "bioingest " + label.removeprefix("warm ")
            if not label.startswith("bioingest ") or label in _SERVERS:
                return None
            return label.removeprefix("bioingest ")

        named = [(name, p) for p in self.procs if (name := verb(p)) is not None]
        served = [(name, p) for name, p in named if not p.label.endswith(CLIENT)]
        jobs = []
        for name, p in named:
            if p.label.endswith(CLIENT) and any(
                v == name and p.start <= q.start <= p.end for v, q in served
            ):
                continue
            jobs.append(Step(name, p.start, max(0.0, p.end - p.start), cpu_of(p)))
        return sorted(jobs, key=lambda j: j.start)

    def to_json(self) -> dict[str, Any]:
        """Return the run as plain data (for the JSON next to the report)."""
        data = dataclasses.asdict(self)
        data["procs"] = [dataclasses.asdict(p) for p in self.procs]
        return data


def _stop(pid: int) -> None:
    """Terminate one process we started (by its id), then kill it after 10 s."""
    try:
        proc = psutil.Process(pid)
        proc.terminate()
        proc.wait(10)
    except psutil.TimeoutExpired:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()
    except psutil.Error:
        pass


def run_monitored(
    cmd: Sequence[str], *, cwd: Path, env: dict[str, str], log: Path, timeout: float
) -> Run:
    """Run ``cmd``, polling its process tree every :data:`POLL_S` seconds.

    Descendants still alive when the command exits (a Bio-Formats server waiting for
    more jobs) are stopped, by their ids, and are part of the run's processes.

    Parameters
    ----------
    cmd
        The command.
    cwd
        Its working directory.
    env
        Its environment.
    log
        File that receives its stdout and stderr.
    timeout
        Seconds after which its process group is terminated.

    Returns
    -------
    Run
        ``ok`` is the exit status only; callers check the output.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        ended: list[float] = []

        def wait() -> None:
            proc.wait()
            ended.append(time.perf_counter())

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        monitor = TreeMonitor(proc.pid)
        timed_out = False
        while waiter.is_alive():
            monitor.sample()
            if not timed_out and time.perf_counter() - start > timeout:
                timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            waiter.join(POLL_S)
        seconds = (ended[0] if ended else time.perf_counter()) - start
        monitor.sample()
        # Daemons a job left behind (the JVM server stops itself only after 60 s idle).
        for child in psutil.Process().children(recursive=True):
            monitor.sample()
            _stop(child.pid)
        monitor.sample()
    procs = sorted(monitor.procs.values(), key=lambda p: p.start)
    peak = monitor.tree_peak_kib / 1024
    if timed_out:
        note = f"timed out after {timeout:.0f} s"
        return Run(False, seconds, note, procs, peak, command=shlex.join(cmd))
    note = "" if proc.returncode == 0 else f"exit {proc.returncode}: {_tail(log)}"
    return Run(proc.returncode == 0, seconds, note, procs, peak, command=shlex.join(cmd))


def _tail(log: Path) -> str:
    """Return the line of ``log`` that says best why a command failed.

    That is the last ``SomeError: message`` line, else the last line naming an error or
    exception (not a stack frame), else the last non-empty line.
    """
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    frames = ("at ", "...", "File ", "^", "~", "raise ", "The above", "During handling")
    kept = [line for line in kept if not line.startswith(frames)] or kept
    raised = [line for line in kept if re.match(r"[\w.]*(Error|Exception)\w*: ", line)]
    named = [line for line in kept if re.search("error|exception", line, re.IGNORECASE)]
    best = (raised or named or kept or ["(empty log)"])[-1]
    return best[:300].replace("|", "/")


# --------------------------------------------------------------------------------------
# Reading outputs back
# --------------------------------------------------------------------------------------


def describe_store(root: Path) -> str:
    """Tell the NGFF version, levels, chunk, shard and codec of a store's first image.

    Parameters
    ----------
    root
        An OME-Zarr store (or a folder holding one).

    Returns
    -------
    str
        For example ``NGFF 0.5, 5 levels, chunk 1024×1024, shard 4096×4096, blosc zstd 5 shuffle``.

    Raises
    ------
    FileNotFoundError
        When no multiscale image is found.
    """
    for meta in sorted(root.rglob("zarr.json"), key=lambda p: len(p.parts)):
        attrs = json.loads(meta.read_text(encoding="utf-8")).get("attributes", {})
        ome = attrs.get("ome", attrs)
        if "multiscales" not in ome:
            continue
        datasets = ome["multiscales"][0]["datasets"]
        array = json.loads((meta.parent / datasets[0]["path"] / "zarr.json").read_text())
        chunk = "×".join(map(str, array["chunk_grid"]["configuration"]["chunk_shape"][-2:]))
        shard = "none"
        codecs = array.get("codecs", [])
        for codec in codecs:
            if codec["name"] == "sharding_indexed":
                shard = chunk
                chunk = "×".join(map(str, codec["configuration"]["chunk_shape"][-2:]))
                codecs = codec["configuration"]["codecs"]
        names = []
        for codec in codecs:
            conf = codec.get("configuration", {})
            if codec["name"] == "blosc":
                names.append(
                    f"blosc {conf.get('cname')} {conf.get('clevel')} {conf.get('shuffle')}"
                )
            elif codec["name"] not in ("bytes", "transpose"):
                names.append(" ".join([codec["name"], *map(str, conf.values())]))
        version = ome.get("version", ome["multiscales"][0].get("version", "?"))
        return (
            f"NGFF {version}, {len(datasets)} levels, chunk {chunk}, shard {shard}, "
            f"{' + '.join(names) or 'uncompressed'}"
        )
    raise FileNotFoundError(f"no multiscale image under {root}")


def describe_tiff(path: Path) -> str:
    """Describe the levels, tile and compression of a pyramidal TIFF.

    Parameters
    ----------
    path
        The TIFF.

    Returns
    -------
    str
        For example ``OME-TIFF, 5 levels, tile 1024, ADOBE_DEFLATE``.
    """
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        page = tif.pages.first
        kind = "OME-TIFF" if tif.is_ome else "TIFF"
        big = " (BigTIFF)" if tif.is_bigtiff else ""
        return (
            f"{kind}{big}, {len(series.levels)} levels, tile {page.tilewidth}, "
            f"{tifffile.COMPRESSION(page.compression).name}"
        )


def _check_store(run: Run, folder: Path) -> Run:
    """Mark ``run`` failed unless ``folder`` holds a store; record what the store holds."""
    if run.ok:
        try:
            run.output = describe_store(folder)
        except (OSError, ValueError, KeyError, IndexError) as error:
            run.ok, run.note = False, f"no readable store: {error}"
    return run


# --------------------------------------------------------------------------------------
# The tools
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Peer:
    """A converter compared with bioingest.

    Attributes
    ----------
    key
        Name for ``--only``.
    name
        Display name.
    package
        Its PyPI distribution, pinned in ``benchmarks/peers/<requirements>``.
    requirements
        File name under ``benchmarks/peers/``; ``None`` needs no venv.
    target
        The issue's target for bioingest / peer, or ``None``.
    """

    key: str
    name: str
    package: str | None
    requirements: str | None
    target: float | None


PEERS = (
    Peer("eubi", "EuBI-Bridge-lite", "eubi-bridge-lite", "eubi.txt", TARGET_VS_EUBI),
    Peer("ome-zarr", "ome-zarr-py", "ome-zarr", "ome-zarr.txt", TARGET_VS_OME_ZARR),
    Peer("ngff-zarr", "ngff-zarr", "ngff-zarr", "ngff-zarr.txt", None),
    Peer("bfconvert", "bfconvert", None, None, None),
)


def pinned_version(peer: Peer) -> str:
    """Return the version of ``peer.package`` pinned in its requirement list ('' if none)."""
    if peer.requirements is None or peer.package is None:
        return ""
    for line in (PEERS_DIR / peer.requirements).read_text(encoding="utf-8").splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == peer.package:
            return version.strip()
    return "?"


class SetupError(RuntimeError):
    """A peer could not be set up (venv, jar, Java)."""


def ensure_venv(peer: Peer, venvs: Path) -> Path:
    """Build ``venvs/<peer>`` from its pinned requirement list, or reuse it if up to date.

    Parameters
    ----------
    peer
        The peer; its requirement list is ``benchmarks/peers/<requirements>``.
    venvs
        Cache folder of the venvs.

    Returns
    -------
    Path
        The venv.

    Raises
    ------
    SetupError
        When the venv cannot be built.
    """
    assert peer.requirements is not None
    requirements = PEERS_DIR / peer.requirements
    text = requirements.read_text(encoding="utf-8")
    key = hashlib.sha256(f"{sys.version}\n{text}".encode()).hexdigest()
    venv = venvs / peer.key
    stamp = venv / ".bench-peers-stamp"
    if stamp.is_file() and stamp.read_text(encoding="utf-8") == key:
        return venv
    if venv.exists():
        shutil.rmtree(venv)
    print(f"building {venv} from {requirements.name} ...", file=sys.stderr, flush=True)
    steps = (
        [sys.executable, "-m", "venv", str(venv)],
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(requirements),
        ],
    )
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            lines = [x for x in (done.stderr + done.stdout).splitlines() if x.strip()]
            raise SetupError(f"venv build failed: {(lines or ['?'])[-1][:300]}")
    stamp.write_text(key, encoding="utf-8")
    return venv


def bioformats_jar() -> str:
    """Find the Bio-Formats jar bioingest uses (``bioingest.java.find_jar`` in its venv).

    Raises
    ------
    SetupError
        When it cannot be found.
    """
    done = subprocess.run(
        [sys.executable, "-c", "from bioingest.java import find_jar; print(find_jar())"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise SetupError(f"no Bio-Formats jar: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return done.stdout.strip().splitlines()[-1]


def bioformats_version(jar: str) -> str:
    """Return the Bio-Formats version of ``jar`` ('?' if it cannot be told)."""
    done = subprocess.run(
        ["java", "-cp", jar, "loci.formats.tools.ImageConverter", "-version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    for line in done.stdout.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return "?"


def _env(path_first: Path | None = None, **extra: str) -> dict[str, str]:
    """Return our environment without the bench's venv, ``path_first`` first on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    if path_first is not None:
        env["PATH"] = f"{path_first}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


@dataclasses.dataclass
class Context:
    """Everything the runs share."""

    work: Path
    venvs: Path
    cores: int
    timeout: float
    repeat: int
    jar: str | None = None
    setup_errors: dict[str, str] = dataclasses.field(default_factory=dict)
    venv_paths: dict[str, Path] = dataclasses.field(default_factory=dict)
    counter: int = 0

    def fresh(self, name: str) -> Path:
        """Make a new empty folder under the work folder."""
        self.counter += 1
        folder = self.work / f"{self.counter:03d}-{name}"
        folder.mkdir(parents=True)
        return folder


def run_bioingest(ctx: Context, input_dir: Path) -> Run:
    """Run the whole workflow on ``input_dir`` with the default config (NGFF 0.5, sharded).

    Each run gets a private ``XDG_RUNTIME_DIR``: it starts its own Bio-Formats server
    instead of reusing one that another run (or user) left on this machine.

    Parameters
    ----------
    ctx
        Shared settings.
    input_dir
        Folder with the inputs.

    Returns
    -------
    Run
        Failed unless every dataset was delivered.
    """
    folder = ctx.fresh("bioingest")
    runtime = folder / "runtime"
    runtime.mkdir(mode=0o700)
    out = folder / "out"
    cmd = [
        str(BIN / "snakemake"),
        "-s",
        str(ROOT / "Snakefile"),
        "--cores",
        str(ctx.cores),
        "--directory",
        str(folder),
        "--config",
        f"input_dir={input_dir}",
        f"output_dir={out}",
        "min_file_age_s=0",
    ]
    run = run_monitored(
        cmd,
        cwd=folder,
        env=_env(BIN, XDG_RUNTIME_DIR=str(runtime)),
        log=folder / "snakemake.log",
        timeout=ctx.timeout,
    )
    if run.ok:
        failed = out / "failed.tsv"
        rows = failed.read_text(encoding="utf-8").splitlines()[1:] if failed.exists() else []
        stores = sorted(out.glob("*/*.ome.zarr"))
        expected = len(list(input_dir.glob("*.ome.tif")))
        if rows:
            run.ok, run.note = False, f"{len(rows)} failed: {rows[0][:200]}"
        elif len(stores) != expected:
            run.ok, run.note = False, f"{len(stores)} stores for {expected} inputs"
        else:
            run.output = describe_store(stores[0])
    shutil.rmtree(out, ignore_errors=True)
    return run


def run_peer(ctx: Context, peer: Peer, input_dir: Path, levels: int) -> Run:
    """One peer converting the single OME-TIFF of ``input_dir``.

    Parameters
    ----------
    ctx
        Shared settings.
    peer
        Which peer.
    input_dir
        Folder holding one ``.ome.tif``.
    levels
        Pyramid levels bioingest writes for it (bfconvert is asked for as many).

    Returns
    -------
    Run
        Failed (with the reason) when the peer cannot be set up, fails, or writes nothing.
    """
    if peer.key in ctx.setup_errors:
        return Run(False, 0.0, ctx.setup_errors[peer.key])
    source = next(input_dir.glob("*.ome.tif"))
    folder = ctx.fresh(peer.key)
    out = folder / "out"
    out.mkdir()
    shard = str(SHARD_CHUNKS * CHUNK)
    env: dict[str, str]
    if peer.key == "bfconvert":
        assert ctx.jar is not None
        target = out / "image.ome.tif"
        cmd = [
            "java",
            "-Xmx1024m",
            "-cp",
            ctx.jar,
            "loci.formats.tools.ImageConverter",
            "-no-upgrade",
            "-overwrite",
            "-bigtiff",
            "-pyramid-resolutions",
            str(levels),
            "-pyramid-scale",
            "2",
            "-tilex",
            str(CHUNK),
            "-tiley",
            str(CHUNK),
            "-compression",
            "zlib",
            str(source),
            str(target),
        ]
        env = _env()
    else:
        venv = ctx.venv_paths[peer.key]
        env = _env(venv / "bin")
        if peer.key == "ome-zarr":
            script = ctx.work / "ome_zarr_peer.py"
            script.write_text(OME_ZARR_SCRIPT, encoding="utf-8")
            cmd = [str(venv / "bin" / "python"), str(script), str(input_dir), str(out)]
            cmd += [str(CHUNK), shard]
        elif peer.key == "ngff-zarr":
            cmd = [
                str(venv / "bin" / "ngff-zarr"),
                "-i",
                str(source),
                "-o",
                str(out / "image.ome.zarr"),
                "--ome-zarr-version",
                "0.5",
                "-c",
                str(CHUNK),
                "--chunks-per-shard",
                str(SHARD_CHUNKS),
                "--codec",
                "blosc:zstd",
                "--compression-level",
                "5",
                "-m",
                "itkwasm_bin_shrink",
                "-q",
            ]
        else:  # eubi
            config = folder / "eubi-config"
            config.mkdir()
            env["EUBI_CONFIG_DIR"] = str(config)
            cmd = [
                str(venv / "bin" / "eubi"),
                "to_zarr",
                str(input_dir),
                str(out),
                "--zarr_format=3",
                "--ome_zarr_version=0.5",
                "--compressor=blosc",
                "--compressor_params={'cname': 'zstd', 'clevel': 5, 'shuffle': 'shuffle'}",
                "--auto_chunk=False",
                f"--y_chunk={CHUNK}",
                f"--x_chunk={CHUNK}",
                f"--y_shard_coef={SHARD_CHUNKS}",
                f"--x_shard_coef={SHARD_CHUNKS}",
                "--downscale_method=mean",
            ]
    run = run_monitored(cmd, cwd=folder, env=env, log=folder / "peer.log", timeout=ctx.timeout)
    if peer.key == "bfconvert":
        if run.ok:
            try:
                run.output = describe_tiff(target)
            except (OSError, ValueError, IndexError) as error:
                run.ok, run.note = False, f"no readable OME-TIFF: {error}"
    else:
        _check_store(run, out)
    shutil.rmtree(out, ignore_errors=True)
    return run


def repeated(ctx: Context, measure: Callable[[], Run]) -> Run:
    """Run ``measure`` ``ctx.repeat`` times and keep the median run.

    Parameters
    ----------
    ctx
        Shared settings (``repeat``).
    measure
        One measurement.

    Returns
    -------
    Run
        The first failure if any repeat failed; else the run of median seconds (the lower
        of the two middle runs for an even count), with the median of the seconds.
    """
    runs: list[Run] = []
    for _ in range(ctx.repeat):
        try:
            run = measure()
        except Exception as error:  # a tool's failure is a row, never a traceback
            run = Run(False, 0.0, f"{type(error).__name__}: {error}"[:300])
        if not run.ok:
            return run
        runs.append(run)
    runs.sort(key=lambda r: r.seconds)
    median = runs[(len(runs) - 1) // 2]
    median.seconds = statistics.median(r.seconds for r in runs)
    return median


# --------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _times(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.2f}×"


def _met(value: float | None, target: float | None, at_most: bool = True) -> str:
    if value is None or target is None or not math.isfinite(value):
        return "–"
    ok = value <= target if at_most else value >= target
    return "yes" if ok else "**no**"


@dataclasses.dataclass
class SizeResult:
    """Everything measured on one input size."""

    mib: float
    shape: tuple[int, int]
    levels: int
    runs: dict[str, Run] = dataclasses.field(default_factory=dict)
    floor: float | None = None
    floor_note: str = ""


@dataclasses.dataclass
class Report:
    """The results so far, and how to print them."""

    args: argparse.Namespace
    header: list[str]
    names: dict[str, str]
    sizes: list[SizeResult] = dataclasses.field(default_factory=list)
    growth: list[SizeResult] = dataclasses.field(default_factory=list)
    small: dict[str, Run] = dataclasses.field(default_factory=dict)
    small_count: int = 0

    def markdown(self) -> str:
        """Render the whole report as Markdown."""
        out = ["# bioingest against peer converters", "", *self.header, ""]
        rss_checks: list[tuple[str, float, str]] = []
        out += self._peer_tables(rss_checks)
        out += self._floor_table()
        out += self._steps_table()
        out += self._rss_table()
        out += self._growth_table(rss_checks)
        out += self._small_table(rss_checks)
        out += self._targets(rss_checks)
        return "\n".join(out) + "\n"

    def _peer_tables(self, rss: list[tuple[str, float, str]]) -> list[str]:
        out = [
            "## Whole conversion, per input size",
            "",
            "bioingest is the whole workflow (`snakemake --cores "
            f"{self.args.cores}`, default config); each peer one command. Ratio = bioingest "
            "seconds / peer seconds (below 1: bioingest is faster). Peak RSS: the largest "
            "process of the run's tree (VmHWM); tree: the largest sum over the tree in one "
            "poll. CPU s: all processes of the tree.",
            "",
            "| input | tool | seconds | CPU s | peak RSS MiB (process) | tree RSS MiB "
            "| bioingest / peer | target | met | output (read back) | note |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for size in self.sizes:
            bio = size.runs.get("bioingest")
            base = bio.seconds if bio is not None and bio.ok else None
            first = True
            for key in ("bioingest", *(p.key for p in PEERS)):
                run = size.runs.get(key)
                if run is None:
                    continue
                label = (
                    f"{size.mib:.0f} MiB ({size.shape[0]}×{size.shape[1]}, {size.levels} levels)"
                    if first
                    else ""
                )
                first = False
                peer = next((p for p in PEERS if p.key == key), None)
                target = peer.target if peer is not None else None
                if not run.ok:
                    out.append(
                        f"| {label} | {self.names[key]} | failed | – | – | – | – | "
                        f"{_target_text(target)} | – | – | {run.note} |"
                    )
                    continue
                peak, who = run.peak()
                if key == "bioingest":
                    rss.append((f"{size.mib:.0f} MiB workflow", peak, who))
                ratio = None if base is None or key == "bioingest" else base / run.seconds
                out.append(
                    f"| {label} | {self.names[key]} | {run.seconds:.1f} | "
                    f"{run.cpu_seconds():.1f} | {peak:.0f} ({who}) | {run.tree_peak_mib:.0f} | "
                    f"{_fmt(ratio)} | {_target_text(target)} | {_met(ratio, target)} | "
                    f"{run.output} | {run.note} |"
                )
        return [*out, ""]

    def _floor_table(self) -> list[str]:
        out = [
            "## bioingest conversion against the floor, and its CPU use",
            "",
            "Floor: read every tile with tifffile and compress every level (level 0 plus the "
            "halved levels, 2 × 2 stride) with Blosc zstd 5 + shuffle in 1024 × 1024 chunks "
            f"on {self.args.cores} threads. convert and pyramid: lifetimes of the "
            "`bioingest convert` and `bioingest pyramid` processes in the workflow run above. "
            "CPU/wall: user + system seconds of those processes and their children over "
            "their wall time.",
            "",
            "| input | floor s | convert s | pyramid s | (convert + pyramid) / floor | "
            f"target ≤ {TARGET_FLOOR:g} | met | CPU/wall convert | CPU/wall pyramid | "
            f"CPU/wall both | target ≥ {TARGET_CPU_WALL:g} | met |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for size in self.sizes:
            bio = size.runs.get("bioingest")
            if size.floor is None and (bio is None or not bio.ok):
                continue
            conv = pyr = None
            ratio = cw_c = cw_p = cw = None
            if bio is not None and bio.ok:
                (cw_s, cc), (pw_s, pc) = bio.verb("convert"), bio.verb("pyramid")
                conv, pyr = cw_s, pw_s
                cw_c = cc / cw_s if cw_s else None
                cw_p = pc / pw_s if pw_s else None
                cw = (cc + pc) / (cw_s + pw_s) if cw_s + pw_s else None
                if size.floor:
                    ratio = (cw_s + pw_s) / size.floor
            floor = _fmt(size.floor) if size.floor is not None else f"– {size.floor_note}"
            out.append(
                f"| {size.mib:.0f} MiB | {floor} | {_fmt(conv)} | {_fmt(pyr)} | {_fmt(ratio)} | "
                f"≤ {TARGET_FLOOR:g} | {_met(ratio, TARGET_FLOOR)} | {_fmt(cw_c)} | "
                f"{_fmt(cw_p)} | {_fmt(cw)} | ≥ {TARGET_CPU_WALL:g} | "
                f"{_met(cw, TARGET_CPU_WALL, at_most=False)} |"
            )
        return [*out, ""]

    def _steps_table(self) -> list[str]:
        out = [
            "## Where bioingest's time goes, per input size",
            "",
            "The jobs of the workflow run above, in the order they started: start (seconds "
            "after Snakemake started), wall and CPU seconds (with their children). Snakemake "
            "start: before the first job. Between jobs: wall time after the first job that no "
            "job covers (Snakemake scheduling, starting and checking jobs). Idle: core-seconds "
            f"no process used ({self.args.cores} cores × wall − CPU of the whole tree).",
            "",
            "| input | step | starts at s | wall s | CPU s | CPU/wall |",
            "|---|---|---|---|---|---|",
        ]
        header = len(out)
        for size in self.sizes:
            bio = size.runs.get("bioingest")
            if bio is None or not bio.ok:
                continue
            steps = bio.steps()
            begin = min((p.start for p in bio.procs if p.label == "snakemake"), default=None)
            if not steps or begin is None:
                continue
            label = f"{size.mib:.0f} MiB"
            first = steps[0].start - begin
            out.append(f"| {label} | Snakemake start | 0.0 | {first:.2f} | – | – |")
            for step in steps:
                ratio = step.cpu / step.wall if step.wall > 0 else None
                out.append(
                    f"| | {step.verb} | {step.start - begin:.1f} | {step.wall:.2f} | "
                    f"{step.cpu:.2f} | {_fmt(ratio)} |"
                )
            covered, reach = 0.0, steps[0].start
            for step in steps:
                end = step.start + step.wall
                covered += max(0.0, end - max(reach, step.start))
                reach = max(reach, end)
            between = max(0.0, bio.seconds - first - covered)
            idle = self.args.cores * bio.seconds - bio.cpu_seconds()
            out.append(f"| | between jobs | – | {between:.2f} | – | – |")
            out.append(
                f"| | whole run | – | {bio.seconds:.2f} | {bio.cpu_seconds():.2f} | "
                f"{_fmt(bio.cpu_seconds() / bio.seconds if bio.seconds else None)} |"
            )
            out.append(f"| | idle | – | – | {idle:.2f} core-s | – |")
        return [*out, ""] if len(out) > header else []

    def _rss_table(self) -> list[str]:
        out = [
            "## Peak RSS of every bioingest process, per input size",
            "",
            f"| input | process | runs | peak RSS MiB | target ≤ {TARGET_RSS_MIB:.0f} | met |",
            "|---|---|---|---|---|---|",
        ]
        for size in self.sizes:
            bio = size.runs.get("bioingest")
            if bio is None or not bio.ok:
                continue
            counts: dict[str, int] = {}
            for p in bio.procs:
                counts[p.label] = counts.get(p.label, 0) + 1
            for label, peak in sorted(bio.peaks_by_label().items(), key=lambda kv: -kv[1]):
                out.append(
                    f"| {size.mib:.0f} MiB | {label} | {counts[label]} | {peak:.0f} | "
                    f"≤ {TARGET_RSS_MIB:.0f} | {_met(peak, TARGET_RSS_MIB)} |"
                )
        return [*out, ""] if len(out) > 4 else []

    def _growth_table(self, rss: list[tuple[str, float, str]]) -> list[str]:
        if not self.growth:
            return []
        out = [
            "## Growth: bioingest alone, seconds per GiB",
            "",
            "Linear scaling keeps s/GiB flat; the last column is s/GiB over the smallest size's.",
            "",
            "| input | workflow s | workflow s/GiB | convert + pyramid s | "
            "convert + pyramid s/GiB | CPU/wall conversion | peak RSS MiB (process) | "
            "s/GiB vs smallest | note |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        first: float | None = None
        for size in sorted(self.growth, key=lambda s: s.mib):
            run = size.runs.get("bioingest")
            gib = size.shape[0] * size.shape[1] * 2 / GIB
            label = f"{size.mib:.0f} MiB ({size.shape[0]}×{size.shape[1]})"
            if run is None or not run.ok:
                note = run.note if run is not None else "not run"
                out.append(f"| {label} | failed | – | – | – | – | – | – | {note} |")
                continue
            (cw_s, cc), (pw_s, pc) = run.verb("convert"), run.verb("pyramid")
            per_gib = run.seconds / gib
            first = per_gib if first is None else first
            peak, who = run.peak()
            rss.append((f"growth {size.mib:.0f} MiB", peak, who))
            both = cw_s + pw_s
            out.append(
                f"| {label} | {run.seconds:.1f} | {per_gib:.1f} | {both:.1f} | "
                f"{both / gib:.1f} | {_fmt((cc + pc) / both if both else None)} | "
                f"{peak:.0f} ({who}) | {per_gib / first:.2f} | {run.note} |"
            )
        return [*out, ""]

    def _small_table(self, rss: list[tuple[str, float, str]]) -> list[str]:
        if not self.small:
            return []
        n = self.small_count
        out = [
            f"## Small files: {n} × 2 × 256 × 256 uint16 OME-TIFFs",
            "",
            "bioingest: the whole workflow over the folder. ome-zarr-py: one Python process "
            "looping `write_image` over the same files (same options as above). "
            "Ratio = bioingest seconds / ome-zarr-py seconds.",
            "",
            f"| tool | seconds | s/file | peak RSS MiB (process) | ratio | "
            f"target ≤ {TARGET_SMALL:g} | met | note |",
            "|---|---|---|---|---|---|---|---|",
        ]
        bio, oz = self.small.get("bioingest"), self.small.get("ome-zarr")
        ratio = bio.seconds / oz.seconds if bio and oz and bio.ok and oz.ok else None
        for key, run in self.small.items():
            if not run.ok:
                out.append(f"| {self.names[key]} | failed | – | – | – | – | – | {run.note} |")
                continue
            peak, who = run.peak()
            if key == "bioingest":
                rss.append(("small files", peak, who))
            shown = _fmt(ratio) if key == "bioingest" else ""
            met = _met(ratio, TARGET_SMALL) if key == "bioingest" else ""
            target = f"≤ {TARGET_SMALL:g}" if key == "bioingest" else ""
            out.append(
                f"| {self.names[key]} | {run.seconds:.1f} | {run.seconds / n:.3f} | "
                f"{peak:.0f} ({who}) | {shown} | {target} | {met} | {run.note} |"
            )
        return [*out, ""]

    def _targets(self, rss: list[tuple[str, float, str]]) -> list[str]:
        out = [
            "## The issue's targets",
            "",
            "| target | measured | met |",
            "|---|---|---|",
        ]
        for size in self.sizes:
            bio = size.runs.get("bioingest")
            for peer in PEERS:
                run = size.runs.get(peer.key)
                if peer.target is None or run is None:
                    continue
                ratio = (
                    bio.seconds / run.seconds
                    if bio is not None and bio.ok and run.ok and run.seconds
                    else None
                )
                out.append(
                    f"| {size.mib:.0f} MiB: whole workflow ≤ {peer.target:g}× "
                    f"{self.names[peer.key]} | {_times(ratio)} | {_met(ratio, peer.target)} |"
                )
            if bio is not None and bio.ok:
                (cw_s, cc), (pw_s, pc) = bio.verb("convert"), bio.verb("pyramid")
                both = cw_s + pw_s
                if size.floor:
                    r = both / size.floor
                    out.append(
                        f"| {size.mib:.0f} MiB: convert + pyramid ≤ {TARGET_FLOOR:g}× floor | "
                        f"{r:.2f}× | {_met(r, TARGET_FLOOR)} |"
                    )
                cw = (cc + pc) / both if both else None
                out.append(
                    f"| {size.mib:.0f} MiB: CPU/wall during conversion ≥ {TARGET_CPU_WALL:g} | "
                    f"{_fmt(cw)} | {_met(cw, TARGET_CPU_WALL, at_most=False)} |"
                )
        bio, oz = self.small.get("bioingest"), self.small.get("ome-zarr")
        if bio and oz:
            ratio = bio.seconds / oz.seconds if bio.ok and oz.ok else None
            out.append(
                f"| small files ≤ {TARGET_SMALL:g}× the ome-zarr-py loop | {_times(ratio)} | "
                f"{_met(ratio, TARGET_SMALL)} |"
            )
        if rss:
            where, peak, who = max(rss, key=lambda r: r[1])
            out.append(
                f"| peak RSS ≤ {TARGET_RSS_MIB / 1024:g} GiB, every bioingest process | "
                f"{peak:.0f} MiB ({who}, {where}) | {_met(peak, TARGET_RSS_MIB)} |"
            )
        return [*out, ""]

    def to_json(self) -> dict[str, Any]:
        """Return the raw numbers."""

        def size_json(s: SizeResult) -> dict[str, Any]:
            return {
                "mib": s.mib,
                "shape": s.shape,
                "levels": s.levels,
                "floor_s": s.floor,
                "runs": {k: r.to_json() for k, r in s.runs.items()},
            }

        return {
            "header": self.header,
            "sizes": [size_json(s) for s in self.sizes],
            "growth": [size_json(s) for s in self.growth],
            "small_files": self.small_count,
            "small": {k: r.to_json() for k, r in self.small.items()},
        }

    def save(self, path: Path) -> None:
        """Write the Markdown to ``path`` and the raw numbers next to it (``.json``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.markdown(), encoding="utf-8")
        path.with_suffix(".json").write_text(
            json.dumps(self.to_json(), indent=1, default=str), encoding="utf-8"
        )


def _target_text(target: float | None) -> str:
    return "–" if target is None else f"≤ {target:g}"


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def _numbers(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--sizes", default="512,2048", help="input sizes, MiB of pixels")
    parser.add_argument(
        "--growth", default="64,128,256,512", help="bioingest-only sizes, MiB ('' = none)"
    )
    parser.add_argument("--small-files", type=int, default=1000, help="small OME-TIFFs")
    parser.add_argument("--skip-small", action="store_true", help="no small-file comparison")
    parser.add_argument(
        "--only", default=",".join(ALL_TOOLS), help=f"comma-separated subset of {ALL_TOOLS}"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement (median)")
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores, floor threads")
    parser.add_argument("--timeout", type=float, default=7200.0, help="seconds per run")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "results/bench/peers.md", help="Markdown report"
    )
    parser.add_argument(
        "--venvs", type=Path, default=ROOT / "results/bench/venvs", help="peer venv cache"
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="keep inputs and logs here (default: temp)"
    )
    args = parser.parse_args(argv)
    args.only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = sorted(set(args.only) - set(ALL_TOOLS))
    if unknown:
        parser.error(f"--only: unknown {unknown}; choose from {ALL_TOOLS}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def _header(args: argparse.Namespace, names: dict[str, str], subreaper: bool) -> list[str]:
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
        java_line = (java.stderr.splitlines() or ["java ?"])[0]
    except OSError:
        java_line = "no java"
    lines = [
        f"{datetime.datetime.now().isoformat(timespec='seconds')}; {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / GIB:.1f} GiB RAM; Python {platform.python_version()}; "
        f"{java_line}; bioingest {commit or '?'}; --repeat {args.repeat} (the run of median "
        "seconds is shown).",
        "",
        "Tools: " + "; ".join(names[k] for k in ("bioingest", *(p.key for p in PEERS))) + ".",
        "",
        "Inputs: tiled 512 × 512 uint16 single-plane OME-TIFF (zlib), smooth structure + "
        "noise, generated per size. Zarr peers asked for NGFF 0.5, chunk 1024, shard 4096 "
        "(4 × 4 chunks), Blosc zstd 5 + shuffle, as bioingest's default target writes; "
        "ome-zarr-py keeps its default pyramid (scale factors 2-16, `resize`); ngff-zarr "
        "downsamples with `itkwasm_bin_shrink` and EuBI-Bridge-lite with `mean` (bioingest: "
        "mean); bfconvert writes a pyramidal OME-TIFF (zlib, 1024 tiles, as many levels as "
        "bioingest).",
    ]
    if not subreaper:
        lines += ["", "Warning: no child subreaper: daemons that leave the tree are not measured."]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run every selected measurement; print and write the Markdown report.

    Parameters
    ----------
    argv
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0; failures are rows of the report.
    """
    args = parse_args(argv)
    only = set(args.only)
    subreaper = become_subreaper()
    venvs: Path = args.venvs.resolve()
    work_parent = args.work.resolve() if args.work else None
    if work_parent is not None:
        work_parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="bench-peers-", dir=work_parent)
    ctx = Context(
        work=Path(tmp), venvs=venvs, cores=args.cores, timeout=args.timeout, repeat=args.repeat
    )
    names = {"bioingest": "bioingest (whole workflow)"}
    for peer in PEERS:
        if peer.key not in only:
            names[peer.key] = peer.name
            continue
        try:
            if peer.requirements is not None:
                ctx.venv_paths[peer.key] = ensure_venv(peer, venvs)
                names[peer.key] = f"{peer.name} {pinned_version(peer)}"
            else:
                ctx.jar = bioformats_jar()
                names[peer.key] = f"{peer.name} (Bio-Formats {bioformats_version(ctx.jar)})"
        except (SetupError, OSError, subprocess.SubprocessError) as error:
            ctx.setup_errors[peer.key] = str(error)
            names[peer.key] = peer.name
    report = Report(args, _header(args, names, subreaper), names)

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)
        report.save(args.out)

    measured: dict[float, SizeResult] = {}
    try:
        for mib in _numbers(args.sizes):
            height, width = plane_shape(mib)
            size = SizeResult(mib, (height, width), len(level_shapes(height, width)))
            report.sizes.append(size)
            input_dir = ctx.work / f"input-{mib:g}"
            write_input(input_dir / "image.ome.tif", height, width)
            if "floor" in only:
                try:
                    size.floor = statistics.median(
                        floor_seconds(input_dir / "image.ome.tif", args.cores)
                        for _ in range(args.repeat)
                    )
                except Exception as error:  # reported, never hides the other results
                    size.floor_note = f"{type(error).__name__}: {error}"[:200]
                progress(f"{mib:g} MiB floor: {size.floor}")
            if "bioingest" in only:
                size.runs["bioingest"] = repeated(
                    ctx, functools.partial(run_bioingest, ctx, input_dir)
                )
                measured[mib] = size
                progress(f"{mib:g} MiB bioingest: {size.runs['bioingest'].seconds:.1f} s")
            for peer in PEERS:
                if peer.key in only:
                    size.runs[peer.key] = repeated(
                        ctx,
                        functools.partial(run_peer, ctx, peer, input_dir, size.levels),
                    )
                    run = size.runs[peer.key]
                    progress(f"{mib:g} MiB {peer.key}: {run.seconds:.1f} s {run.note}")
            shutil.rmtree(input_dir, ignore_errors=True)
        if "bioingest" in only:
            for mib in _numbers(args.growth):
                if mib in measured:
                    report.growth.append(measured[mib])
                    continue
                height, width = plane_shape(mib)
                size = SizeResult(mib, (height, width), len(level_shapes(height, width)))
                input_dir = ctx.work / f"growth-{mib:g}"
                write_input(input_dir / "image.ome.tif", height, width)
                size.runs["bioingest"] = repeated(
                    ctx, functools.partial(run_bioingest, ctx, input_dir)
                )
                report.growth.append(size)
                progress(f"growth {mib:g} MiB: {size.runs['bioingest'].seconds:.1f} s")
                shutil.rmtree(input_dir, ignore_errors=True)
        if not args.skip_small and args.small_files > 0 and {"bioingest", "ome-zarr"} <= only:
            report.small_count = args.small_files
            small_dir = ctx.work / "small"
            write_small_inputs(small_dir, args.small_files)
            report.small["bioingest"] = repeated(ctx, lambda: run_bioingest(ctx, small_dir))
            progress(f"small files bioingest: {report.small['bioingest'].seconds:.1f} s")
            report.small["ome-zarr"] = repeated(ctx, lambda: _small_ome_zarr(ctx, small_dir))
            progress(f"small files ome-zarr: {report.small['ome-zarr'].seconds:.1f} s")
    finally:
        report.save(args.out)
        if args.work is None:
            shutil.rmtree(ctx.work, ignore_errors=True)
    print(report.markdown())
    print(f"(written to {args.out})", file=sys.stderr)
    return 0


def _small_ome_zarr(ctx: Context, folder: Path) -> Run:
    """Run the ome-zarr-py loop over the small files: one process, every file."""
    if "ome-zarr" in ctx.setup_errors:
        return Run(False, 0.0, ctx.setup_errors["ome-zarr"])
    venv = ctx.venv_paths["ome-zarr"]
    out = ctx.fresh("ome-zarr-small")
    script = ctx.work / "ome_zarr_peer.py"
    script.write_text(OME_ZARR_SCRIPT, encoding="utf-8")
    cmd = [str(venv / "bin" / "python"), str(script), str(folder), str(out / "out")]
    cmd += [str(CHUNK), str(SHARD_CHUNKS * CHUNK)]
    run = run_monitored(
        cmd, cwd=out, env=_env(venv / "bin"), log=out / "peer.log", timeout=ctx.timeout
    )
    stores = sorted((out / "out").glob("*.ome.zarr")) if run.ok else []
    expected = len(list(folder.glob("*.ome.tif")))
    if run.ok and len(stores) != expected:
        run.ok, run.note = False, f"{len(stores)} stores for {expected} inputs"
    elif run.ok:
        run.output = describe_store(stores[0])
    shutil.rmtree(out / "out", ignore_errors=True)
    return run


if __name__ == "__main__":
    sys.exit(main())
