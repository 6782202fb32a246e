"""A killed job leaves nothing that looks complete; a rerun finishes the work."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from bioingest import atomic
from bioingest.checksum import verify
from bioingest.store import image_paths
from conftest import BIN, REPO, run_workflow

SLOW = "slow&sizeX=16000&sizeY=16000&pixelType=uint16.fake"


def wait_for(condition: Callable[[], bool], *, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.2)


def bioingest(*args: str | Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "bioingest"), *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def chunk_count(folder: Path) -> int:
    """Files written so far under a (partial) store."""
    return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


@pytest.mark.java
@pytest.mark.slow
def test_killed_convert_and_pyramid(tmp_path: Path) -> None:
    fake = tmp_path / SLOW
    fake.touch()
    inter, xml, out = tmp_path / "i.zarr", tmp_path / "x.ome.xml", tmp_path / "o.ome.zarr"
    partial = tmp_path / ".i.zarr.partial"
    proc = bioingest("convert", fake, "--zarr", inter, "--ome-xml", xml)
    # Level 0 is written shard by shard (16 shards of 4096 x 4096): kill after the first.
    wait_for(lambda: chunk_count(partial) > 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not inter.exists() and not xml.exists()
    assert bioingest("convert", fake, "--zarr", inter, "--ome-xml", xml).wait() == 0
    assert not partial.exists()
    assert zarr.open_group(inter, mode="r")["0"].shape == (1, 1, 1, 16000, 16000)

    # Another method than convert's: pyramid builds the levels instead of linking them
    # (which takes a moment), so it can be killed half-way.
    other = ("--method", "nearest")
    proc = bioingest("pyramid", inter, "--ome-xml", xml, "--out", out, *other)
    wait_for(lambda: chunk_count(tmp_path / ".o.ome.zarr.partial") > 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    assert bioingest("pyramid", inter, "--ome-xml", xml, "--out", out, *other).wait() == 0
    np.testing.assert_array_equal(
        zarr.open_group(out, mode="r")["0"][0, 0, 0, -300:, -300:],
        zarr.open_group(inter, mode="r")["0"][0, 0, 0, -300:, -300:],
    )


def complete(store: Path) -> None:
    """Check that a store that exists is whole: metadata and every level readable."""
    from ome_zarr_models.v05 import Image

    root = zarr.open_group(store, mode="r")
    for path in image_paths(root):
        group = root[path] if path else root
        Image.from_zarr(group)
        for dataset in dict(group.attrs)["ome"]["multiscales"][0]["datasets"]:
            group[dataset["path"]][:]


def job_pids(session: int, verb: str, needle: str) -> list[int]:
    """PIDs of ``bioingest VERB`` processes of a session whose command line has ``needle``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            sid = os.getsid(int(proc.name))
        except (OSError, ProcessLookupError):
            continue
        text = [part.decode(errors="replace") for part in cmdline]
        if sid == session and verb in text and any(needle in part for part in text):
            pids.append(int(proc.name))
    return pids


@pytest.mark.java
@pytest.mark.slow
@pytest.mark.workflow
@pytest.mark.parametrize("kill", ["workflow-SIGKILL", "workflow-SIGINT", "job-SIGKILL"])
def test_killed_workflow_resumes(tmp_path: Path, kill: str) -> None:
    """Kill Snakemake itself (hard or Ctrl-C), or kill -9 one running job, then rerun.

    The rerun finishes every dataset, and nothing half-written is left or published.
    """
    inputs, out, work = tmp_path / "in", tmp_path / "out", tmp_path / "work"
    inputs.mkdir()
    work.mkdir()
    for i in range(2):
        tifffile.imwrite(inputs / f"small{i}.tif", np.full((64, 64), i, dtype=np.uint8))
    (inputs / SLOW).touch()
    slow = "slow_sizeX_16000_sizeY_16000_pixelType_uint16"
    cmd = [
        str(BIN / "snakemake"),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--cores",
        "2",
        "--config",
        f"input_dir={inputs}",
        f"output_dir={out}",
        "min_file_age_s=0",
    ]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(
        cmd,
        cwd=work,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: chunk_count(out / "intermediate" / f".{slow}.zarr.partial") > 2)
    if kill == "job-SIGKILL":
        (pid,) = job_pids(proc.pid, "convert", "slow")
        os.kill(pid, signal.SIGKILL)
        # Snakemake reports the job as failed and finishes the other datasets.
        assert proc.wait(timeout=300) != 0
        assert (out / "small0" / "small0.ome.zarr").is_dir()
    else:
        os.killpg(proc.pid, signal.SIGKILL if kill == "workflow-SIGKILL" else signal.SIGINT)
        proc.wait(timeout=120)
        # Snakemake's graceful stop ends its jobs; make sure nothing is left running.
        time.sleep(1)
    for store in out.glob("*/*.ome.zarr"):
        complete(store)
    assert not (out / slow / f"{slow}.ome.zarr").exists()
    assert not (out / "intermediate" / f"{slow}.zarr").exists()
    assert not (out / "manifest-sha256.txt").exists()
    # A killed Snakemake leaves its lock; --unlock is the documented first step.
    run_workflow(work, {"input_dir": inputs, "output_dir": out}, extra=["--unlock"])
    run_workflow(work, {"input_dir": inputs, "output_dir": out}, extra=["--rerun-incomplete"])
    for name in ("small0", "small1", slow):
        complete(out / name / f"{name}.ome.zarr")
    assert verify(out) == []
    assert not list(out.rglob("*.partial"))


@pytest.mark.parametrize("leftover", [False, True])
def test_remove_dir_leaves_nothing_under_the_name(tmp_path: Path, leftover: bool) -> None:
    store = tmp_path / "a.zarr"
    (store / "0" / "c").mkdir(parents=True)
    (store / "0" / "c" / "0").write_bytes(b"x")
    scratch = tmp_path / ".a.zarr.partial"
    if leftover:  # an earlier removal was stopped
        (scratch / "1").mkdir(parents=True)
    atomic.remove_dir(store)
    assert sorted(tmp_path.iterdir()) == []
