"""Faults: kill -9 at random points of a multi-dataset run, a full disk, untouched sources.

No run, failed or killed, ever changes a source.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from bioingest.checksum import read_manifest
from conftest import BIN, run_workflow, workflow_command

pytestmark = [pytest.mark.workflow, pytest.mark.java]

TRIALS = 10


def make_inputs(folder: Path) -> dict[str, np.ndarray]:
    """Write three small datasets read by tifffile (no JVM, so a trial takes seconds).

    Return their pixels by name, in TCZYX order with the size-1 axes left out.
    """
    rng = np.random.default_rng(7)
    data = {
        "stack": rng.integers(0, 4000, (2, 3, 96, 80), dtype=np.uint16),
        "plane": rng.integers(0, 255, (120, 100), dtype=np.uint8),
        "timelapse": rng.integers(0, 60000, (4, 64, 300), dtype=np.uint16),
    }
    folder.mkdir(parents=True)
    tifffile.imwrite(folder / "stack.ome.tif", data["stack"], ome=True, metadata={"axes": "CZYX"})
    tifffile.imwrite(folder / "plane.tif", data["plane"])
    tifffile.imwrite(
        folder / "timelapse.ome.tif", data["timelapse"], ome=True, metadata={"axes": "TYX"}
    )
    return data


def fingerprint(folder: Path) -> dict[str, tuple[str, int]]:
    """SHA-256 and modification time (ns) of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def level0(store: Path) -> np.ndarray:
    return np.asarray(zarr.open_group(store, mode="r")["0"][...])


def assert_complete_stores(out: Path, data: dict[str, np.ndarray]) -> int:
    """Check the stores that look complete or may still be read; return how many are final.

    Every store that looks complete (final name) and may still be read holds exactly its
    source's pixels, at every level.
    """
    count = 0
    for name, pixels in data.items():
        stores = [out / name / f"{name}.ome.zarr"]
        # The intermediate store is temporary: once its last reader (qc) is done, Snakemake
        # removes it, and a kill may stop that removal half-way. Before, it must be whole.
        if not (out / name / "qc.json").exists():
            stores.append(out / "intermediate" / f"{name}.zarr")
        for store in stores:
            if not store.exists():
                continue
            count += store.name.endswith(".ome.zarr")
            root = zarr.open_group(store, mode="r")
            got = np.asarray(root["0"][...])
            np.testing.assert_array_equal(got.squeeze(), pixels, err_msg=str(store))
            if store.name.endswith(".ome.zarr"):
                for level in dict(root.attrs)["ome"]["multiscales"][0]["datasets"]:
                    assert np.asarray(root[level["path"]][...]).size > 0
        for record in ("metadata.json", "qc.json"):
            if (out / name / record).exists():
                json.loads((out / name / record).read_text(encoding="utf-8"))
    return count


def descendants(pid: int) -> list[int]:
    """Every living descendant of ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def job_processes(pid: int) -> list[int]:
    """Descendants of snakemake that run a bioingest verb (the jobs)."""
    jobs = []
    for child in descendants(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(part.endswith(b"/bioingest") for part in cmdline[:2]):
            jobs.append(child)
    return jobs


def kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # it finished meanwhile
            os.kill(pid, signal.SIGKILL)


def wait_for_progress(console: Path, fraction: float, proc: subprocess.Popen[bytes]) -> None:
    """Return once Snakemake reports ``fraction`` of the run's steps done, two still to do.

    The counts are Snakemake's ``N of M steps (P%) done`` lines in ``console``; the run's
    total ``M`` is known once the inventory checkpoint has run and the total has changed.
    """
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        steps = re.findall(r"^(\d+) of (\d+) steps", console.read_text(), flags=re.MULTILINE)
        if len({total for _, total in steps}) > 1:
            done, total = int(steps[-1][0]), int(steps[-1][1])
            if done >= min(math.ceil(fraction * total), total - 2):
                return
        time.sleep(0.02)


@pytest.fixture
def inputs(tmp_path: Path) -> Iterator[tuple[Path, dict[str, np.ndarray]]]:
    folder = tmp_path / "in"
    data = make_inputs(folder)
    before = fingerprint(folder)
    yield folder, data
    # Sources untouched: no run of the test, killed or failed, changed a byte or a time.
    assert fingerprint(folder) == before


@pytest.mark.slow
def test_kill9_trials_recover(tmp_path: Path, inputs: tuple[Path, dict[str, np.ndarray]]) -> None:
    """10 seeded trials: kill -9 at a random moment, then the README's recovery.

    Each trial kills the running jobs (or Snakemake and everything under it). Each run
    completes, verifies, and equals an uninterrupted run; no store that looks complete is
    ever partial.
    """
    folder, data = inputs
    reference = tmp_path / "reference"
    started = time.monotonic()
    run_workflow(tmp_path / "w-ref", {"input_dir": folder, "output_dir": reference})
    duration = time.monotonic() - started
    expected = {
        rel: digest
        for rel, digest in read_manifest(reference / "manifest-sha256.txt").items()
        if not rel.startswith("logs/")
    }
    hits = {"jobs": 0, "snakemake": 0}
    trials = []
    for trial in range(TRIALS):
        rng = np.random.default_rng(trial)
        out, work = tmp_path / f"out{trial}", tmp_path / f"w{trial}"
        work.mkdir()
        config = {"input_dir": folder, "output_dir": out}
        cmd, env = workflow_command(work, config)
        kill_snakemake = trial % 3 == 2
        with open(work / "console.txt", "w") as console:
            proc = subprocess.Popen(
                cmd,
                cwd=work,
                env=env,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        fraction = float(rng.uniform(0.15, 0.85))
        if kill_snakemake:
            # At a point of the run's progress, not of time: on a loaded machine the run
            # could otherwise finish before the kill.
            wait_for_progress(work / "console.txt", fraction, proc)
        else:
            time.sleep(fraction * duration)
        # Wait (briefly) for a job to be running, so that the kill hits one.
        deadline = time.monotonic() + 5
        while not job_processes(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        jobs = job_processes(proc.pid)
        running = proc.poll() is None
        if kill_snakemake:
            # A crash of the machine or of Snakemake: everything under it dies at once.
            kill([proc.pid, *descendants(proc.pid)])
            hits["snakemake"] += running
        else:
            kill(jobs)
            hits["jobs"] += bool(jobs)
        status = proc.wait(timeout=300)
        trials.append(f"trial {trial}: at {fraction:.2f}, running {running}, jobs {jobs}, {status}")
        if kill_snakemake and running:
            assert status == -signal.SIGKILL
        assert_complete_stores(out, data)
        # The README's recovery: --unlock after a kill of Snakemake, then the same command.
        if kill_snakemake:
            run_workflow(work, {**config}, extra=["--unlock"])
        run_workflow(work, config)
        assert assert_complete_stores(out, data) == len(data)
        verify = subprocess.run(
            [str(BIN / "bioingest"), "verify", str(out)], capture_output=True, text=True
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
        got = {
            rel: digest
            for rel, digest in read_manifest(out / "manifest-sha256.txt").items()
            if not rel.startswith("logs/")
        }
        assert got == expected, f"trial {trial}"
        shutil.rmtree(out)
    # The kills landed: on running jobs in most trials, on Snakemake in every third.
    assert hits["snakemake"] == 3, trials
    assert hits["jobs"] >= 5, trials


def summary(work: Path, config: dict[str, object]) -> list[list[str]]:
    """Rows of ``snakemake --summary``: output file, date, rule, logs, status, plan."""
    cmd, env = workflow_command(work, config, extra=["--summary"])
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, check=True)
    lines = proc.stdout.splitlines()
    start = lines.index("output_file\tdate\trule\tlog-file(s)\tstatus\tplan") + 1
    return [line.split("\t") for line in lines[start:]]


def test_a_step_killed_between_its_outputs_is_redone(
    tmp_path: Path, inputs: tuple[Path, dict[str, np.ndarray]]
) -> None:
    """Check that any one missing output of a step makes the next run redo that step.

    Snakemake does not check the steps after the inventory checkpoint for half-done
    outputs, and remakes only the outputs a step asks for. So each output of every step
    with several must be asked for. Each case is the state a kill leaves: one output of
    the step missing, and nothing written after the step.
    """
    folder, _ = inputs
    out, work = tmp_path / "out", tmp_path / "w"
    # The intermediate stores stay, as they are while a run goes on.
    config: dict[str, object] = {"input_dir": folder, "output_dir": out, "keep_intermediate": True}
    run_workflow(work, config)
    written = {(work / row[0]).resolve(): row[2] for row in summary(work, config)}
    steps: dict[tuple[str, str], list[Path]] = {}
    for path, rule in written.items():
        rel = path.relative_to(out)
        if len(rel.parts) == 1 or rel.parts[0] == "summary":
            steps.setdefault((rule, ""), []).append(path)
        elif path.name.startswith("stack") or rel.parts[0] == "stack":
            steps.setdefault((rule, "stack"), []).append(path)
    several = {step: paths for step, paths in steps.items() if len(paths) > 1}
    # The steps with several outputs, for one dataset and for the run.
    assert sorted(several) == [
        ("convert", "stack"),
        ("inventory", ""),
        ("metadata_tables", ""),
        ("provenance", ""),
        ("qc", "stack"),
    ]
    for step, paths in sorted(several.items()):
        done = max(p.stat().st_mtime_ns for p in paths)
        later = [p for p in written if p.stat().st_mtime_ns > done]
        for path in paths:
            aside = [path, *later]
            for moved in aside:
                moved.rename(moved.with_name(moved.name + ".aside"))
            plans = {(work / row[0]).resolve(): row[5] for row in summary(work, config)}
            for moved in aside:
                moved.with_name(moved.name + ".aside").rename(moved)
            assert plans[path] == "update pending", (step, path)


def test_a_store_left_half_deleted_is_cleared_and_the_run_resumes(
    tmp_path: Path, inputs: tuple[Path, dict[str, np.ndarray]]
) -> None:
    """Check that a temporary store a kill left half-deleted does not stop the next run.

    Snakemake deletes ``intermediate/NAME.zarr`` file by file once ``qc`` is done; a kill
    can leave a folder without its root metadata, newer than what read it. The next run
    removes it, runs nothing of its dataset again, and ends as an uninterrupted run does.
    """
    folder, _ = inputs
    out, work = tmp_path / "out", tmp_path / "w"
    config: dict[str, object] = {"input_dir": folder, "output_dir": out}
    run_workflow(work, config)
    expected = read_manifest(out / "manifest-sha256.txt")
    # What the kill left: level 0 of the store, without its zarr.json, and no manifest.
    half = out / "intermediate" / "stack.zarr"
    shutil.copytree(out / "stack" / "stack.ome.zarr" / "0", half / "0")
    (out / "manifest-sha256.txt").unlink()
    (out / "ro-crate-metadata.json").unlink()
    proc = run_workflow(work, config)
    assert f"removed {half}: a stopped run left it half-deleted" in proc.stderr
    assert not half.exists()
    assert not (out / "intermediate" / ".stack.zarr.partial").exists()
    # Only the run-level steps ran again.
    assert re.findall(r"^Job \d+: (\w+)", proc.stderr, flags=re.MULTILINE) == [
        "manifest",
        "provenance",
    ]
    got = read_manifest(out / "manifest-sha256.txt")
    assert {k: v for k, v in got.items() if not k.startswith("logs/")} == {
        k: v for k, v in expected.items() if not k.startswith("logs/")
    }


def test_out_of_disk_fails_the_dataset_cleanly(tmp_path: Path) -> None:
    """Check that a full disk during a write fails the dataset that filled it, cleanly.

    The output folder is on a 3 MiB tmpfs. The dataset fails with one line and leaves no
    final output of it behind.
    """
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(3)
    # Random pixels do not compress: 8 MiB cannot fit in 3 MiB.
    tifffile.imwrite(folder / "big.tif", rng.integers(0, 65535, (2048, 2048), dtype=np.uint16))
    small = np.arange(32 * 24, dtype=np.uint8).reshape(32, 24)
    tifffile.imwrite(folder / "small.tif", small)
    before = fingerprint(folder)
    out = tmp_path / "out"
    out.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(out)])
    if mounted.returncode:
        pytest.fail("cannot mount a small tmpfs to simulate a full disk (needs root)")
    try:
        proc = run_workflow(
            tmp_path / "work",
            {"input_dir": folder, "output_dir": out},
            extra=["--cores", "1"],
            check=False,
        )
        console = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert f"ERROR {out / 'intermediate' / 'big.zarr'}: out of disk space" in console
        assert "Traceback" not in console
        # Nothing of big looks complete, and its scratch folders are gone.
        assert not (out / "intermediate" / "big.zarr").exists()
        assert not (out / "intermediate" / ".big.zarr.partial").exists()
        assert not (out / "big" / "big.ome.zarr").exists()
        assert not (out / "big" / "big.ome.xml").exists()
        # The small dataset either completed, with its exact pixels, or left nothing final.
        store = out / "small" / "small.ome.zarr"
        if store.exists():
            np.testing.assert_array_equal(level0(store).squeeze(), small)
    finally:
        subprocess.run(["umount", str(out)], check=True)
    assert fingerprint(folder) == before
