"""A real single-node SLURM cluster on this machine, for the profile tests.

Debian's slurm-wlm and munge (installed by ``make test-deps``) run with a generated
``/etc/slurm/slurm.conf``: the executor plugin's job step drops ``SLURM_CONF``, so only
the default path works. Accounting is off, so jobs are followed with ``squeue`` and
``MinJobAge`` keeps finished jobs visible to it. Every daemon started here is stopped
by its PID, and the config is removed again: with a config but no controller, every
``snakemake`` call would wait 10 s for ``scontrol``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

CONF = Path("/etc/slurm/slurm.conf")
MUNGE_SOCKET_DIR = Path("/run/munge")


def _mem_mb() -> int:
    with open("/proc/meminfo", encoding="ascii") as fh:
        total_kb = int(next(line for line in fh if line.startswith("MemTotal")).split()[1])
    return total_kb // 1024 - 1024


def slurm_conf(state: Path) -> str:
    """Return a single-node configuration keeping every file of the cluster under ``state``."""
    host = socket.gethostname().split(".")[0]
    return "\n".join(
        [
            "ClusterName=bioingest-test",
            f"SlurmctldHost={host}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "MinJobAge=600",
            "ReturnToService=2",
            "SchedulerType=sched/backfill",
            f"StateSaveLocation={state}/ctld",
            f"SlurmdSpoolDir={state}/spool",
            f"SlurmctldPidFile={state}/slurmctld.pid",
            f"SlurmdPidFile={state}/slurmd.pid",
            f"SlurmctldLogFile={state}/slurmctld.log",
            f"SlurmdLogFile={state}/slurmd.log",
            f"NodeName={host} CPUs={os.cpu_count()} RealMemory={_mem_mb()} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def _wait(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"SLURM test cluster: {what} did not happen within {timeout:.0f} s")


def _node_idle() -> bool:
    proc = subprocess.run(
        ["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True, check=False
    )
    return proc.returncode == 0 and proc.stdout.strip() == "idle"


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _started(pid_file: Path, what: str) -> int:
    """Wait for a daemon's PID file; return the PID."""
    _wait(lambda: _pid(pid_file) is not None, f"{what} start")
    pid = _pid(pid_file)
    assert pid is not None and pid > 0
    return pid


@contextmanager
def slurm_cluster(state: Path) -> Iterator[Path]:
    """Start munged, slurmctld and slurmd; yield the state folder; stop all three.

    Fails (never skips) when the Debian packages are missing or the config path is
    taken by a configuration this module did not write.
    """
    for tool in ("munged", "slurmctld", "slurmd", "sbatch", "squeue"):
        assert shutil.which(tool), f"{tool} missing: run `make test-deps` (slurm-wlm, munge)"
    assert not CONF.exists(), f"{CONF} exists already: refusing to replace a real cluster"
    state.mkdir(parents=True, exist_ok=True)
    for sub in ("ctld", "spool"):
        (state / sub).mkdir(exist_ok=True)
    pids: list[int] = []
    CONF.parent.mkdir(parents=True, exist_ok=True)
    CONF.write_text(slurm_conf(state), encoding="utf-8")
    try:
        MUNGE_SOCKET_DIR.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_SOCKET_DIR, "munge", "munge")
        MUNGE_SOCKET_DIR.chmod(0o755)  # munged refuses any other mode
        munge_pid = MUNGE_SOCKET_DIR / "bioingest-test-munged.pid"
        subprocess.run(
            ["runuser", "-u", "munge", "--", "munged", "--pid-file", str(munge_pid)],
            check=True,
        )
        pids.append(_started(munge_pid, "munged"))
        subprocess.run(["slurmctld", "-i"], check=True)
        pids.append(_started(state / "slurmctld.pid", "slurmctld"))
        subprocess.run(["slurmd"], check=True)
        pids.append(_started(state / "slurmd.pid", "slurmd"))
        _wait(_node_idle, "node idle")
        yield state
    finally:
        for pid in reversed(pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
        CONF.unlink(missing_ok=True)
        (MUNGE_SOCKET_DIR / "bioingest-test-munged.pid").unlink(missing_ok=True)
