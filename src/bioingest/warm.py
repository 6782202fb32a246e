"""One warm Python for many short jobs: a fork server per machine, and its client.

A job of a small dataset spends most of its time starting Python and importing numpy,
zarr, tensorstore and ome-zarr (about 0.4 to 1 s per job, four jobs per dataset). With
``--warm`` a verb is run by this machine's warm server instead: the first job starts it
(``bioingest warm-server``), it imports those modules once, and for every job it forks a
child that runs the verb with the job's arguments, working folder, umask, environment
and standard streams (passed over the socket), and reports its exit status. The job's
own process is only this client, which waits for that status. The run-level steps
(tables, report, manifest, crate) run warm too.

Each job still runs in a process of its own, so failures stay per job. The child is
killed when its client goes away (the job killed, or cancelled), like a process the job
ran itself. The server exits after ``IDLE_TIMEOUT_S`` seconds without a job. It never
starts a Python thread, a JVM or an event loop before forking: those do not survive a
fork. (numpy's and scipy's OpenBLAS start idle worker threads when imported; OpenBLAS
stops them before a fork and starts them again when next used.)

The socket sits next to the Bio-Formats server's (:mod:`bioingest.readers.remote`), named
after the host, the Python executable and bioingest's code.
"""

from __future__ import annotations

# Only what a job's client needs is imported here: it runs for every job.
import hashlib
import json
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

#: Seconds the server waits for a new job before it exits.
IDLE_TIMEOUT_S = 60.0
#: Seconds a client waits for a server it started to accept jobs.
START_TIMEOUT_S = 60.0
#: Verbs run warm: the per-dataset steps, and the run-level steps after them.
VERBS = frozenset(
    {
        "convert",
        "pyramid",
        "metadata",
        "qc",
        "outcomes",
        "tables",
        "report",
        "checksum",
        "provenance",
    }
)
_SIZE = struct.Struct(">I")
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
_STATUS = struct.Struct(">i")
#: Modules a child would otherwise import itself (imported by the server before forking).
_PRELOAD = (
    "bioingest.cli",
    "bioingest.convert",
    "bioingest.pyramid",
    "bioingest.metadata",
    "bioingest.qc",
    "bioingest.qc_page",
    "bioingest.readers.tiff",
    "bioingest.readers.remote",
    "tensorstore",
    "PIL.Image",
    # The run-level steps' own modules (a few milliseconds: their heavy imports are lazy).
    "bioingest.outcomes",
    "bioingest.checksum",
    "bioingest.provenance",
    "bioingest.report",
    "bioingest.tables",
    # The crate's heavy import (0.12 s, at the end of every run). Not pandas: its pyarrow
    # starts a jemalloc thread at import.
    "rocrate.rocrate",
)


def private_folder() -> Path:
    """Return the folder of this user's server sockets and logs on this machine (mode 700)."""
    import tempfile

    from bioingest.errors import ServiceError

    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    folder = Path(base) / f"bioingest-{os.getuid()}"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.stat().st_uid != os.getuid() or folder.stat().st_mode & 0o077:
        raise ServiceError(folder, "must belong to this user and be private (chmod 700)")
    return folder


def socket_path() -> Path:
    """Where this machine's warm server for this bioingest code and Python listens.

    The name changes with any change to bioingest's modules (their modification times),
    so a job never runs in a server holding older code.
    """
    package = Path(__file__).parent
    stamps = sorted((p.name, p.stat().st_mtime_ns) for p in package.rglob("*.py"))
    key = json.dumps([socket.gethostname(), sys.executable, str(package), stamps])
    return private_folder() / f"py-{hashlib.sha256(key.encode()).hexdigest()[:16]}.sock"


def connect(path: Path) -> socket.socket | None:
    """Connect to the server listening on ``path``; None when none does."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    return sock


def connect_or_start(
    path: Path, args: list[str], *, timeout_s: float, started: list[Any] | None = None
) -> socket.socket:
    """Connect to this machine's server on ``path``, starting ``bioingest ARGS`` if needed.

    One client starts the server (under a lock next to the socket); the others wait for
    the lock, then connect. The server's output goes to the log next to the socket.

    Parameters
    ----------
    path
        The server's socket.
    args
        The ``bioingest`` verb and options that start the server on ``path``.
    timeout_s
        Seconds to wait for a started server to listen.
    started
        Where to keep the started process, if given.

    Raises
    ------
    TimeoutError
        The server did not listen in time, or exited; the message names its log.
    """
    sock = connect(path)
    if sock is not None:
        return sock
    import fcntl
    import subprocess

    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sock = connect(path)
        if sock is not None:
            return sock
        path.unlink(missing_ok=True)
        server_log = path.with_suffix(".log")
        cmd = [str(Path(sys.executable).with_name("bioingest")), *args]
        with open(server_log, "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if started is not None:
            started.append(proc)
        deadline = time.monotonic() + timeout_s
        while (sock := connect(path)) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise TimeoutError(f"{server_log}: the server did not start")
            time.sleep(0.02)
        return sock


def _connect_or_start() -> socket.socket:
    path = socket_path()
    return connect_or_start(path, ["warm-server", str(path)], timeout_s=START_TIMEOUT_S)


def prestart() -> None:
    """Start this machine's warm server if it is not running, without waiting for it.

    The workflow's first job (the inventory) calls this, so that the server has loaded
    its modules by the time the first warm job comes.
    """
    _connect_or_start().close()


def run(argv: list[str]) -> int:
    """Run ``bioingest ARGV`` in this machine's warm server; return its exit status.

    Parameters
    ----------
    argv
        The verb and its arguments, as given on the command line (without ``--warm``).
    """
    sock = _connect_or_start()
    with sock:
        umask = os.umask(0o022)
        os.umask(umask)
        job = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask}
        request = json.dumps(job).encode()
        socket.send_fds(sock, [_SIZE.pack(len(request)) + request], [0, 1, 2])
        data = b""
        while len(data) < _STATUS.size:
            chunk = sock.recv(_STATUS.size - len(data))
            if not chunk:
                sys.stderr.write("bioingest: the warm server stopped during the job\n")
                return 1
            data += chunk
    status: int = _STATUS.unpack(data)[0]
    return status


def _receive(conn: socket.socket) -> tuple[dict[str, object], list[int]]:
    """One job: its request and the three standard streams passed with it."""
    data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    size = _SIZE.unpack(data[: _SIZE.size])[0]
    body = data[_SIZE.size :]
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ConnectionError("the client went away")
        body += chunk
    request: dict[str, object] = json.loads(body)
    return request, list(fds)


def _child(request: dict[str, object], fds: list[int], sockets: list[socket.socket]) -> None:
    """Become the job: its streams, folder and environment; run the verb; exit.

    Never returns: whatever happens, the child ends here, so nothing of the server's
    loop (its clean-up of the socket, for one) runs in it.
    """
    status = 1
    try:
        status = _run_job(request, fds, sockets)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


def _run_job(request: dict[str, object], fds: list[int], sockets: list[socket.socket]) -> int:
    """Set the job's process up as its own command would have been; run its verb."""
    import ctypes
    import signal
    import tempfile

    argv = request["argv"]
    assert isinstance(argv, list)
    libc = ctypes.CDLL(None, use_errno=True)
    # Die with the server: a job must not outlive the process that reports its status.
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    # Named after its verb in ps and top ("warm convert"), not after the server.
    libc.prctl(_PR_SET_NAME, f"warm {argv[0]}".encode()[:15])
    for sock in sockets:
        sock.close()
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(str(request["cwd"]))
    umask = request["umask"]
    assert isinstance(umask, int)
    os.umask(umask)
    env = request["env"]
    assert isinstance(env, dict)
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in env.items()})
    tempfile.tempdir = None  # found again from the job's environment
    from bioingest.cli import main

    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:  # argparse: a usage error (2) or --help (0)
        return exc.code if isinstance(exc.code, int) else 1


def serve(path: Path, *, idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
    """Run the warm server on the Unix socket ``path`` until it has been idle.

    One thread: it accepts jobs, forks a child for each, reports each child's exit
    status to its client, and kills a child whose client has gone away.
    """
    import contextlib
    import importlib
    import logging
    import selectors
    import signal

    log = logging.getLogger("bioingest")
    # A terminated server removes its socket (the finally below) before it exits.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Listen first: a job that connects while the modules load waits in the backlog
    # instead of starting a server of its own.
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(64)
    for name in _PRELOAD:
        importlib.import_module(name)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    # A child's exit wakes the loop at once (its status is awaited by a job).
    wake, woken = os.pipe()
    os.set_blocking(wake, False)
    os.set_blocking(woken, False)
    signal.set_wakeup_fd(woken)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector.register(wake, selectors.EVENT_READ)
    jobs: dict[int, socket.socket] = {}
    pids: dict[socket.socket, int] = {}
    idle_since = time.monotonic()
    log.info("warm server listening on %s (pid %d)", path, os.getpid())
    try:
        while jobs or time.monotonic() - idle_since < idle_timeout_s:
            for key, _ in selector.select(timeout=1.0):
                if key.fileobj == wake:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake, 4096)
                    continue
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is listener:
                    conn, _ = listener.accept()
                    try:
                        request, fds = _receive(conn)
                    except (OSError, ValueError, struct.error):
                        conn.close()  # a client that went away before its request
                        continue
                    pid = os.fork()
                    if pid == 0:
                        _child(request, fds, [listener, conn, *pids])
                    for fd in fds:
                        os.close(fd)
                    jobs[pid], pids[conn] = conn, pid
                    selector.register(conn, selectors.EVENT_READ)
                elif not sock.recv(1):
                    # The client went away before its job ended: end the job as well.
                    os.kill(pids[sock], signal.SIGKILL)
            while jobs:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                conn = jobs.pop(pid)
                del pids[conn]
                selector.unregister(conn)
                code = os.waitstatus_to_exitcode(status)
                with contextlib.suppress(OSError):  # the client may be gone
                    conn.sendall(_STATUS.pack(code if code >= 0 else 128 - code))
                conn.close()
                idle_since = time.monotonic()
    finally:
        listener.close()
        path.unlink(missing_ok=True)
        log.info("warm server stopped after %.0f s idle", idle_timeout_s)
