"""The bench's process monitor names each process after what it runs, and finds the jobs.

Its peak-RSS table must show the Bio-Formats server under its own name: that server is
forked by the inventory, and a poll between the fork and the exec sees the inventory's
command line. Its table of where the time goes counts each job once, wherever it ran.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_peers import Proc, Run, TreeMonitor, label_of


def test_a_process_seen_before_its_exec_is_named_after_what_it_runs() -> None:
    code = "import os, time; time.sleep(0.5); os.execv('/bin/sleep', ['sleep', '0.5'])"
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        monitor = TreeMonitor(proc.pid)
        monitor.sample()
        before = [p.label for p in monitor.procs.values() if p.pid == proc.pid]
        time.sleep(0.8)
        monitor.sample()
        after = [p.label for p in monitor.procs.values() if p.pid == proc.pid]
    finally:
        proc.wait()
    assert before == ["python -c"]
    assert after == ["sleep"]


def test_labels_of_bioingest_processes() -> None:
    venv = "/venv/bin/bioingest"
    assert label_of(["python", venv, "jvm-server", "--socket", "s"], "bioingest") == (
        "bioingest jvm-server"
    )
    assert label_of([venv, "inventory", "in", "--warm"], "bioingest") == (
        "bioingest inventory --warm (client)"
    )
    assert label_of([venv, "warm-server", "s.sock"], "warm qc") == "bioingest qc"
    assert label_of([venv, "warm-server", "s.sock"], "bioingest") == "bioingest warm-server"


def test_steps_of_a_warm_workflow_run() -> None:
    def proc(pid: int, ppid: int, label: str, start: float, end: float, cpu: float) -> Proc:
        return Proc(pid, ppid, start, end, label, cpu=cpu)

    run = Run(
        True,
        10.0,
        procs=[
            proc(1, 0, "snakemake", 0.0, 10.0, 1.5),
            # The inventory runs in its client and starts the servers.
            proc(2, 1, "bioingest inventory --warm (client)", 1.2, 2.0, 0.7),
            proc(3, 2, "bioingest warm-server", 1.3, 10.0, 1.4),
            proc(4, 2, "bioingest jvm-server", 1.3, 10.0, 2.0),
            proc(5, 1, "bioingest convert --warm (client)", 2.1, 6.0, 0.03),
            proc(6, 3, "bioingest convert", 2.15, 5.95, 7.0),
            proc(7, 6, "bioingest jvm-server", 2.2, 5.9, 5.0),
            proc(8, 6, "java loci.formats.tools.ShowInf", 2.2, 2.4, 0.1),
            # A warm child first seen after its exit keeps its kernel name.
            proc(9, 1, "bioingest provenance --warm (client)", 6.1, 6.5, 0.03),
            proc(10, 3, "warm provenance", 6.15, 6.45, 0.2),
            # Seen only as a zombie: its kernel name, marked so.
            proc(11, 1, "bioingest report --warm (client)", 6.5, 6.7, 0.03),
            proc(12, 3, "warm report (seen only after it exited)", 6.6, 6.65, 0.05),
        ],
    )
    steps = run.steps()
    assert [s.verb for s in steps] == ["inventory", "convert", "provenance", "report"]
    assert [(s.start, s.wall, s.cpu) for s in steps] == [
        pytest.approx((1.2, 0.8, 0.7)),
        pytest.approx((2.15, 3.8, 7.1)),
        pytest.approx((6.15, 0.3, 0.2)),
        pytest.approx((6.6, 0.05, 0.05)),
    ]
