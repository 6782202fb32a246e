"""Many small files: time per file and JVM starts of the whole workflow, against a baseline.

The baseline converts the same files in one Python process with one JVM (``convert`` called
in a loop): the least any tool must spend per file. The workflow runs every file through
its own jobs (convert, pyramid, metadata, qc), after one inventory job that groups them;
Bio-Formats files are read through one JVM per machine (``jvm_server: true``, the default)
or one JVM per job (``jvm_server=False``). JVM starts are counted from the logs: the
``JVM started`` lines of jobs with their own JVM, and the start lines in the log of the
machine's server (next to its socket).

Usage: ``python benchmarks/bench_many_files.py [--files 100] [--cores 2]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from bioingest.convert import convert

BIN = Path(sys.executable).parent
SNAKEFILE = Path(__file__).resolve().parents[1] / "Snakefile"


def make_inputs(folder: Path, count: int, kind: str) -> list[Path]:
    """``count`` small 2-channel 256x256 uint16 images: Bio-Formats ``.fake`` or OME-TIFF."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        if kind == "fake":
            path = folder / f"f{i:04d}&sizeX=256&sizeY=256&sizeC=2&pixelType=uint16.fake"
            path.touch()
        else:
            path = folder / f"t{i:04d}.ome.tif"
            data = rng.integers(0, 4096, (2, 256, 256), dtype=np.uint16)
            tifffile.imwrite(path, data, ome=True, metadata={"axes": "CYX"})
        paths.append(path)
    return paths


def baseline(paths: list[Path], work: Path) -> float:
    """Seconds to convert every file in this process (one JVM, no workflow)."""
    start = time.perf_counter()
    for i, path in enumerate(paths):
        convert(
            path,
            zarr_path=work / f"{i}.zarr",
            ome_xml_path=work / f"{i}.ome.xml",
            single_file=True,
        )
    return time.perf_counter() - start


def workflow(inputs: Path, out: Path, cores: int, jvm_server: bool) -> tuple[float, int]:
    """Seconds for the whole workflow, and the JVMs its jobs started."""
    # A folder of its own for the server socket: no server of an earlier run is reused.
    runtime = out.parent / f"run-{jvm_server}"
    runtime.mkdir(mode=0o700)
    start = time.perf_counter()
    subprocess.run(
        [
            str(BIN / "snakemake"),
            "--snakefile",
            str(SNAKEFILE),
            "--cores",
            str(cores),
            "--config",
            f"input_dir={inputs}",
            f"output_dir={out}",
            f"jvm_server={jvm_server}",
            "min_file_age_s=0",
        ],
        cwd=out.parent,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - start
    logs = [log.read_text(encoding="utf-8") for log in out.glob("logs/**/*.log")]
    servers = [log.read_text(encoding="utf-8") for log in runtime.glob("*/jvm-*.log")]
    jvms = sum(t.count("JVM started") for t in logs) + sum(
        t.count("server listening on") for t in servers
    )
    return seconds, jvms


def main() -> None:
    """Time the baseline and the workflow for each kind of input; print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100, help="files per kind (default 100)")
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores (default 2)")
    args = parser.parse_args()
    print(
        f"{args.files} files of 2x256x256 uint16 per kind, --cores {args.cores}; "
        "ratio = workflow / baseline (one process, one JVM, convert only)\n"
    )
    print(
        "| input | jvm_server | baseline s/file | workflow s/file | ratio "
        "| JVM starts (workflow) | JVM starts (baseline) |"
    )
    print("|---|---|---|---|---|---|---|")
    runs = (
        ("fake", "Bio-Formats .fake", (False, True)),
        ("tiff", "OME-TIFF (tifffile)", (True,)),
    )
    for kind, label, settings in runs:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            paths = make_inputs(work / "in", args.files, kind)
            # One baseline per kind, measured first so that it pays its own JVM start.
            (work / "base").mkdir()
            base = baseline(paths, work / "base") / args.files
            for jvm_server in settings:
                out = work / f"out-{jvm_server}"
                seconds, jvms = workflow(work / "in", out, args.cores, jvm_server)
                per_file = seconds / args.files
                print(
                    f"| {label} | {jvm_server} | {base:.3f} | {per_file:.3f} | "
                    f"{per_file / base:.1f} | {jvms} | {1 if kind == 'fake' else 0} |"
                )


if __name__ == "__main__":
    main()
