"""Inventory and job-graph cost for a share of many small files.

Makes ``--files`` tiny TIFFs (in folders of 500, as an instrument writes them), then
measures: the inventory job cold (every file hashed and opened once through the machine's
Bio-Formats JVM) and warm (nothing changed: the cache answers, no file is opened), and a
``snakemake --dry-run`` once the inventory exists: the time before the first conversion
job could start. The baseline is a stat walk of the same folder (``os.walk`` + ``stat``),
the least any tool must spend to list the files.

Usage: ``python benchmarks/bench_inventory.py [--files 10000]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

BIN = Path(sys.executable).parent
SNAKEFILE = Path(__file__).resolve().parents[1] / "Snakefile"


def make_inputs(folder: Path, count: int) -> None:
    """``count`` 16x16 uint8 TIFFs, 500 per folder."""
    data = np.zeros((16, 16), np.uint8)
    for i in range(count):
        sub = folder / f"plate{i // 500:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        data[0, 0] = i % 256
        tifffile.imwrite(sub / f"img{i:05d}.tif", data)


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Run ``cmd`` in ``cwd`` with ``env`` (output discarded); return its wall-clock seconds."""
    start = time.perf_counter()
    subprocess.run(
        cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - start


def main() -> None:
    """Make the inputs, time the stat walk and the three Snakemake steps; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10000, help="files (default 10000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        inputs, out = work / "in", work / "out"
        make_inputs(inputs, args.files)
        runtime = work / "run"
        runtime.mkdir(mode=0o700)
        env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
        start = time.perf_counter()
        walked = sum(len(files) for _, _, files in os.walk(inputs))
        for folder, _, files in os.walk(inputs):
            for f in files:
                os.stat(os.path.join(folder, f))
        walk_s = time.perf_counter() - start
        assert walked == args.files
        snakemake = [
            str(BIN / "snakemake"),
            "--snakefile",
            str(SNAKEFILE),
            "--cores",
            "2",
            "--config",
            f"input_dir={inputs}",
            f"output_dir={out}",
            "min_file_age_s=0",
        ]
        cold = timed([*snakemake, "--until", "inventory"], work, env)
        (out / "inventory.json").unlink()
        warm = timed([*snakemake, "--until", "inventory"], work, env)
        # The median of three: runs on this kind of virtual machine vary by about 5 %.
        dry = statistics.median(timed([*snakemake, "--dry-run"], work, env) for _ in range(3))
        print(f"{args.files} tiny TIFFs in folders of 500; baseline: stat walk {walk_s:.2f} s\n")
        print("| step | seconds | per file (ms) | ratio to stat walk |")
        print("|---|---|---|---|")
        for label, seconds in (
            ("inventory job, cold (hash + open every file)", cold),
            ("inventory job, warm (cache, nothing opened)", warm),
            ("snakemake --dry-run with the inventory done (median of 3)", dry),
        ):
            print(
                f"| {label} | {seconds:.1f} | {1000 * seconds / args.files:.2f} | "
                f"{seconds / walk_s:.0f} |"
            )


if __name__ == "__main__":
    main()
