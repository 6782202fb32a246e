"""Write a small instrument-like folder for the demo, in a few seconds, from nothing.

    python demo/make_demo_data.py results/demo-input

What it holds (one dataset each, as Bio-Formats groups the files):

- ``plate&...&fields=1....fake``: a 2 x 2 screening plate (Bio-Formats' fake format:
  the file name describes the image, the file is empty);
- ``scenes&series=3&....fake``: a file of three series;
- ``companion/embryo.companion.ome`` and ``embryo_Z0.ome.tif``.. (a multi-file companion
  OME-TIFF set) and ``ics/chromosomes.ics`` + ``.ids`` (an ICS pair), both written by
  Bio-Formats' own converter (``bfconvert``'s class, run from the Bio-Formats jar);
- ``imagej/zstack.tif``: a two-channel Z-stack written by tifffile as an ImageJ hyperstack.

Files are dated an hour back, so a run with the default ``min_file_age_s`` takes them
all. The folder appears complete or not at all (written beside it, then renamed); an
existing folder is left as it is.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

PLATE = "plate&plates=1&plateRows=2&plateCols=2&fields=1&sizeX=64&sizeY=64.fake"
SERIES = "scenes&series=3&sizeC=2&sizeX=96&sizeY=64.fake"
# Sources of the two sets Bio-Formats writes (a fake image is drawn from its name).
EMBRYO = "embryo&sizeZ=3&sizeC=2&sizeX=128&sizeY=96&pixelType=uint16.fake"
CHROMOSOMES = "chromosomes&sizeZ=5&sizeX=96&sizeY=96&pixelType=uint8.fake"


def bfconvert(jar: Path, *args: str | Path) -> None:
    """Run Bio-Formats' converter (``loci.formats.tools.ImageConverter``, i.e. bfconvert)."""
    cmd = ["java", "-cp", str(jar), "loci.formats.tools.ImageConverter", "-no-upgrade"]
    proc = subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"bfconvert failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def zstack() -> np.ndarray:
    """Return a ZCYX uint16 stack: two channels of blobs in focus at the middle plane."""
    z, size = 7, 128
    yy, xx = np.mgrid[0:size, 0:size]
    rng = np.random.default_rng(14)
    stack = np.empty((z, 2, size, size), dtype=np.uint16)
    centres = rng.uniform(16, size - 16, (12, 2))
    for k in range(z):
        sigma = 2.0 + abs(k - z // 2) * 1.5
        for c in range(2):
            signal = sum(
                np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
                for cy, cx in centres[c::2]
            )
            noise = rng.poisson(100, (size, size))
            stack[k, c] = np.clip(3000 * signal / sigma * 2 + noise, 0, 65535)
    return stack


def write(folder: Path, jar: Path) -> None:
    """Write the demo files into ``folder`` (which exists and is empty)."""
    (folder / PLATE).touch()
    (folder / SERIES).touch()
    with tempfile.TemporaryDirectory() as scratch:
        embryo, chromosomes = Path(scratch) / EMBRYO, Path(scratch) / CHROMOSOMES
        embryo.touch()
        chromosomes.touch()
        companion = folder / "companion"
        companion.mkdir()
        # One OME-TIFF per Z plane, described by one companion OME-XML file.
        bfconvert(
            jar,
            "-option",
            "ometiff.companion",
            companion / "embryo.companion.ome",
            embryo,
            companion / "embryo_Z%z.ome.tif",
        )
        (folder / "ics").mkdir()
        # Writing .ids makes the ICS 2 pair: .ics (header) and .ids (pixels).
        bfconvert(jar, chromosomes, folder / "ics" / "chromosomes.ids")
    (folder / "imagej").mkdir()
    tifffile.imwrite(
        folder / "imagej" / "zstack.tif",
        zstack(),
        imagej=True,
        resolution=(1 / 0.2, 1 / 0.2),
        metadata={"axes": "ZCYX", "spacing": 0.5, "unit": "um", "Labels": ["DAPI", "GFP"]},
    )
    old = time.time() - 3600
    for path in folder.rglob("*"):
        os.utime(path, (old, old))


def main(argv: list[str] | None = None) -> int:
    """Write the demo folder named on the command line, unless it exists; return 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="folder to create")
    parser.add_argument(
        "--jar", type=Path, help="Bio-Formats jar (default: the one bioingest finds)"
    )
    args = parser.parse_args(argv)
    folder: Path = args.folder
    if folder.is_dir():
        print(f"{folder}: already there")
        return 0
    jar = args.jar
    if jar is None:
        from bioingest.java import find_jar

        jar = find_jar()
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    write(partial, jar)
    partial.rename(folder)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        print(path.relative_to(folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
