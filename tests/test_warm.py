"""'--warm' jobs run in the machine's warm Python: same outputs, same exit, same kill."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import BIN

SLOW = "slow&sizeX=16000&sizeY=16000&pixelType=uint16.fake"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Give the test a private runtime folder: its jobs start a warm server of their own."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    return {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}


def bioingest(
    env: dict[str, str], *args: str | Path, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "bioingest"), *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def server_pid(env: dict[str, str]) -> int:
    """Return the warm server's PID, from the line its log starts with."""
    (log,) = Path(env["XDG_RUNTIME_DIR"]).glob("bioingest-*/py-*.log")
    found = re.search(r"\(pid (\d+)\)", log.read_text(encoding="utf-8"))
    assert found, log.read_text(encoding="utf-8")
    return int(found.group(1))


def children_of(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.append(int(stat.parent.name))
    return kids


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_warm_jobs_write_what_jobs_of_their_own_write(tmp_path: Path, env: dict[str, str]) -> None:
    source = tmp_path / "in dir" / "cells $(x) 'q'.ome.tif"
    source.parent.mkdir()
    pixels = np.random.default_rng(3).integers(0, 4096, (2, 300, 200), dtype=np.uint16)
    tifffile.imwrite(source, pixels, ome=True, metadata={"axes": "CYX"})
    for mode in ("own", "warm"):
        out = tmp_path / mode
        out.mkdir()
        flag = ["--warm"] if mode == "warm" else []
        steps = [
            ["convert", source, "--single-file", "--zarr", "i.zarr", "--ome-xml", "x.xml"],
            ["pyramid", "i.zarr", "--ome-xml", "x.xml", "--out", "o.ome.zarr", "--name", "c"],
            ["metadata", "x.xml", "--dataset", "c", "--intermediate", "i.zarr", "--out", "m"],
        ]
        for step in steps:
            done = bioingest(env, *step, *flag, "--log", f"{step[0]}.log", cwd=out)
            assert done.returncode == 0, done.stderr
            # Messages reach the job's own streams and its log, relative paths its folder.
            assert f"INFO {step[0]}" in done.stderr
            assert (out / f"{step[0]}.log").read_text(encoding="utf-8").startswith("INFO")
    assert files_of(tmp_path / "warm") == files_of(tmp_path / "own")
    assert children_of(server_pid(env)) == []


def test_a_failing_warm_job_gives_its_line_and_status(tmp_path: Path, env: dict[str, str]) -> None:
    empty = tmp_path / "empty.tif"
    empty.touch()
    own = bioingest(env, "convert", empty, "--zarr", tmp_path / "a.zarr")
    warm = bioingest(env, "convert", empty, "--zarr", tmp_path / "b.zarr", "--warm")
    assert (warm.returncode, warm.stderr) == (own.returncode, own.stderr)
    assert own.returncode == 1
    assert own.stderr.startswith(f"ERROR {empty}: "), own.stderr
    # A usage error exits 2 with argparse's message, as it would without --warm.
    own = bioingest(env, "pyramid")
    warm = bioingest(env, "pyramid", "--warm")
    assert (warm.returncode, warm.stderr) == (own.returncode, own.stderr)
    assert own.returncode == 2 and "required" in own.stderr


@pytest.mark.java
def test_killing_a_warm_job_kills_its_work(tmp_path: Path, env: dict[str, str]) -> None:
    fake = tmp_path / SLOW
    fake.touch()
    partial = tmp_path / ".i.zarr.partial"
    client = subprocess.Popen(
        [str(BIN / "bioingest"), "convert", str(fake), "--zarr", "i.zarr", "--warm"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not partial.is_dir():
        assert time.monotonic() < deadline and client.poll() is None
        time.sleep(0.1)
    server = server_pid(env)
    assert len(children_of(server)) == 1
    client.send_signal(signal.SIGKILL)
    client.wait()
    deadline = time.monotonic() + 10
    while children_of(server):
        assert time.monotonic() < deadline, "the job outlived its client"
        time.sleep(0.05)
    assert not (tmp_path / "i.zarr").exists()
    # The server still takes jobs.
    empty = tmp_path / "empty.tif"
    empty.touch()
    assert bioingest(env, "convert", empty, "--zarr", "e.zarr", "--warm", cwd=tmp_path).returncode
