"""The bench's process monitor names each process after what it runs.

Its peak-RSS table must show the Bio-Formats server under its own name: that server is
forked by the inventory, and a poll between the fork and the exec sees the inventory's
command line.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_peers import TreeMonitor, label_of


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
