"""One JVM for many conversion jobs: a Bio-Formats server per machine, and its client reader.

Starting the JVM costs about 1.4 s per job, more than converting a small file. With
``--jvm-server`` the ``convert`` verb reads through a long-lived server instead: the
first job on a machine starts it, later jobs connect to it, and it exits after
``IDLE_TIMEOUT_S`` seconds without a client. Each job still opens its own source and
writes its own store, so failures, kills and retries stay per dataset. The server only
reads: it sends tiles, and closes a source when its client goes away.

The socket lives in ``$XDG_RUNTIME_DIR/bioingest-UID`` (else in the temporary folder), is
only accessible to its user, and is named after the host, bioingest version, jar and heap,
so jobs with other settings get a server of their own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import socket
import socketserver
import struct
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bioingest import __version__
from bioingest.errors import IngestError, ServiceError
from bioingest.readers.base import SeriesInfo, SourceReader
from bioingest.warm import connect_or_start, private_folder

if TYPE_CHECKING:
    from bioingest.probe import Probe

log = logging.getLogger("bioingest")

#: Seconds the server waits for a new client before it exits.
IDLE_TIMEOUT_S = 60.0
#: Seconds a client waits for a server it started to accept connections.
START_TIMEOUT_S = 180.0
_FRAME = struct.Struct(">II")
# Servers started by this process; kept so that they are not reported as leaked.
_spawned: list[subprocess.Popen[bytes]] = []


def _send(sock: socket.socket, header: dict[str, Any], payload: bytes = b"") -> None:
    data = json.dumps(header).encode()
    sock.sendall(_FRAME.pack(len(data), len(payload)) + data + payload)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(min(size - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return bytes(buf)


def _recv(sock: socket.socket) -> tuple[dict[str, Any], bytes]:
    head, size = _FRAME.unpack(_recv_exact(sock, _FRAME.size))
    header: dict[str, Any] = json.loads(_recv_exact(sock, head))
    return header, _recv_exact(sock, size)


def socket_path(*, jar: str | None, maven: str | None, heap_mb: int) -> Path:
    """Where the server for these settings listens on this machine."""
    folder = private_folder()
    key = json.dumps([socket.gethostname(), __version__, jar, maven, heap_mb])
    return folder / f"jvm-{hashlib.sha256(key.encode()).hexdigest()[:16]}.sock"


class _Handler(socketserver.BaseRequestHandler):
    """One client: opens one source, then answers tile requests until it disconnects."""

    server: _Server
    reader: SourceReader | None = None

    def handle(self) -> None:
        self.server.clients(+1)
        try:
            while True:
                request, _ = _recv(self.request)
                _send(self.request, *self._answer(request))
        except OSError:
            return  # the client went away (finished, failed or killed)
        finally:
            if self.reader is not None:
                self.reader.close()
            self.server.clients(-1)

    def _answer(self, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        from bioingest.readers.bioformats import BioFormatsReader

        try:
            if request["op"] == "probe":
                from bioingest.probe import probe

                return {"ok": True, "probe": probe(Path(request["path"])).to_json()}, b""
            if request["op"] == "open" and self.reader is None:
                self.reader = BioFormatsReader(Path(request["path"]), **self.server.jvm)
                return _describe(self.reader), b""
            if request["op"] in ("read", "samples") and self.reader is not None:
                read = (
                    self.reader.read_tile if request["op"] == "read" else self.reader.read_samples
                )
                tile = read(*request["args"])
                return {"ok": True, "dtype": tile.dtype.str, "shape": tile.shape}, tile.tobytes()
            return {"ok": False, "problem": f"bad request {request['op']!r}"}, b""
        except IngestError as exc:
            return {"ok": False, "problem": exc.problem}, b""
        except Exception as exc:  # a reply, not a dead connection, for any failure
            return {"ok": False, "problem": f"cannot read ({type(exc).__name__}: {exc})"}, b""


def _describe(reader: SourceReader) -> dict[str, Any]:
    return {
        "ok": True,
        "format_name": reader.format_name,
        "series": [dataclasses.asdict(s) for s in reader.series],
        "ome_xml": reader.ome_xml,
        "used_files": [str(p) for p in reader.used_files],
    }


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, jvm: dict[str, Any]) -> None:
        self.jvm = jvm
        self._lock = threading.Lock()
        self._clients = 0
        self._idle_since = time.monotonic()
        super().__init__(str(path), _Handler)

    def clients(self, delta: int) -> None:
        with self._lock:
            self._clients += delta
            self._idle_since = time.monotonic()

    def idle_for(self) -> float:
        with self._lock:
            return 0.0 if self._clients else time.monotonic() - self._idle_since


def serve(
    path: Path,
    *,
    jar: str | None = None,
    maven: str | None = None,
    heap_mb: int = 1024,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
) -> None:
    """Run a Bio-Formats server on the Unix socket ``path`` until it has been idle.

    Parameters
    ----------
    path
        Socket to listen on; it appears only once the JVM is running.
    jar, maven, heap_mb
        Bio-Formats location and Java heap; see :func:`bioingest.java.start_jvm`.
    idle_timeout_s
        Exit after this many seconds without a connected client.
    """
    from bioingest.java import jimport, start_jvm

    start_jvm(jar=jar, maven=maven, heap_mb=heap_mb)
    server = _Server(path, {"jar": jar, "maven": maven, "heap_mb": heap_mb})
    # Load every reader's class before the first request is taken: about 0.25 s of the
    # first file's opening, done while its client (the inventory) still hashes the files.
    jimport("loci.formats.ImageReader")().close()

    def stop_when_idle() -> None:
        while server.idle_for() < idle_timeout_s:
            time.sleep(min(1.0, idle_timeout_s / 4))
        server.shutdown()

    threading.Thread(target=stop_when_idle, daemon=True).start()
    log.info("Bio-Formats server listening on %s (pid %d)", path, os.getpid())
    try:
        server.serve_forever()
    finally:
        server.server_close()
        path.unlink(missing_ok=True)
        log.info("Bio-Formats server stopped after %.0f s idle", idle_timeout_s)


def connect(*, jar: str | None, maven: str | None, heap_mb: int) -> socket.socket:
    """Connect to this machine's server for these settings, starting it if needed."""
    path = socket_path(jar=jar, maven=maven, heap_mb=heap_mb)
    args = [
        "jvm-server",
        "--socket",
        str(path),
        f"--jar={jar or ''}",
        f"--maven={maven or ''}",
        f"--java-heap-mb={heap_mb}",
    ]
    try:
        # Not in the job log: whether this job started the server differs between runs.
        return connect_or_start(path, args, timeout_s=START_TIMEOUT_S, started=_spawned)
    except TimeoutError:
        raise ServiceError(
            path.with_suffix(".log"), "the Bio-Formats server did not start"
        ) from None


class RemoteReader(SourceReader):
    """A source opened by the machine's Bio-Formats server.

    Its answers are the same as :class:`~bioingest.readers.bioformats.BioFormatsReader`'s.
    """

    name = "bioformats"

    def __init__(
        self, path: Path, *, jar: str | None = None, maven: str | None = None, heap_mb: int = 1024
    ) -> None:
        super().__init__(path)
        self._sock = connect(jar=jar, maven=maven, heap_mb=heap_mb)
        try:
            reply, _ = self._call({"op": "open", "path": str(path.resolve())})
        except BaseException:
            self._sock.close()
            raise
        self._format: str = reply["format_name"]
        self._series = [SeriesInfo(**s) for s in reply["series"]]
        self._ome_xml: str = reply["ome_xml"]
        self._used_files = [Path(p) for p in reply["used_files"]]

    def _call(self, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        try:
            _send(self._sock, request)
            reply, payload = _recv(self._sock)
        except OSError as exc:
            raise ServiceError(self.path, f"lost the Bio-Formats server ({exc})") from None
        if not reply["ok"]:
            raise IngestError(self.path, reply["problem"])
        return reply, payload

    @property
    def format_name(self) -> str:
        """The file format, as the server's Bio-Formats names it."""
        return self._format

    @property
    def series(self) -> list[SeriesInfo]:
        """Every series at full resolution, as the server reported them."""
        return self._series

    @property
    def ome_xml(self) -> str:
        """The complete OME-XML of all series, as the server sent it."""
        return self._ome_xml

    @property
    def used_files(self) -> list[Path]:
        """Every file the server's reader needed (main file and companions)."""
        return self._used_files

    def read_tile(
        self, series: int, t: int, c: int, z: int, y: int, x: int, height: int, width: int
    ) -> np.ndarray:
        """Return a ``(height, width)`` tile of one plane, read by the server."""
        reply, payload = self._call({"op": "read", "args": [series, t, c, z, y, x, height, width]})
        return np.frombuffer(payload, dtype=reply["dtype"]).reshape(reply["shape"])

    def read_samples(
        self, series: int, t: int, c: int, z: int, y: int, x: int, height: int, width: int
    ) -> np.ndarray:
        """Return the ``(samples, height, width)`` block of one stored plane, read by the server."""
        # One round trip and one decode on the server for all samples of a colour tile.
        args = [series, t, c, z, y, x, height, width]
        reply, payload = self._call({"op": "samples", "args": args})
        return np.frombuffer(payload, dtype=reply["dtype"]).reshape(reply["shape"])

    def close(self) -> None:
        """Disconnect (the server stays up for other clients)."""
        self._sock.close()


class RemoteProber:
    """Probes files (:func:`bioingest.probe.probe`) through the machine's Bio-Formats server.

    It connects on a thread of its own, starting the server if need be, so that the JVM
    starts while the inventory hashes the files; the first probe waits for it.
    """

    def __init__(self, *, jar: str | None = None, maven: str | None = None, heap_mb: int = 1024):
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._connecting = self._pool.submit(connect, jar=jar, maven=maven, heap_mb=heap_mb)

    def __call__(self, path: Path) -> Probe:
        """Probe ``path`` on the server."""
        from bioingest.probe import Probe

        sock = self._connecting.result()
        try:
            _send(sock, {"op": "probe", "path": str(path)})
            reply, _ = _recv(sock)
        except OSError as exc:
            raise ServiceError(path, f"lost the Bio-Formats server ({exc})") from None
        if not reply["ok"]:
            raise IngestError(path, reply["problem"])
        return Probe.from_json(reply["probe"])

    def close(self) -> None:
        """Disconnect (the server stays up for other clients)."""
        self._pool.shutdown()
        if self._connecting.exception() is None:
            self._connecting.result().close()
