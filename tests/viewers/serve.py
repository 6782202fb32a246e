"""A loopback HTTP server for vizarr: the app, its dataset API and the stores, on one port.

vizarr (``@galaxyproject/vizarr``) reads the store URL from a dataset record that its page
fetches from ``api/datasets/ID``; its one import from a CDN is pointed at a local stub by
an import map. Its ``index.js`` inlines its codecs yet still imports their (empty) chunk
files, which the npm package does not ship: they are answered with empty modules. Sharded
Zarr v3 needs ``Range`` requests (and ``HEAD`` for suffix ranges), which ``http.server``
ignores, so this handler answers them. Serving app and data from one origin avoids CORS.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

#: The module vizarr imports from a CDN (a JPEG 2000 decoder it never needs for Zarr).
CDN_IMPORT = "https://cdn.jsdelivr.net/gh/mozilla/pdf.js@30bd5f0/src/core/jpx.js"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
_CHUNK = re.compile(r"/[\w.-]+-[\w-]{8}\.js")


def _page(dataset_id: str) -> bytes:
    incoming = json.dumps({"root": "/", "visualization_config": {"dataset_id": dataset_id}})
    imports = json.dumps({"imports": {CDN_IMPORT: "/jpx-stub.js"}})
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<script type='importmap'>{imports}</script>"
        "<script type='module' src='/index.js'></script></head>"
        "<body style='margin:0'>"
        f"<div id='app' style='width:800px;height:600px' data-incoming='{incoming}'></div>"
        "</body></html>"
    ).encode()


class _Handler(BaseHTTPRequestHandler):
    app: Path
    data: Path

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reports what matters."""

    def do_HEAD(self) -> None:
        self._head_only = True
        self.do_GET()

    def do_GET(self) -> None:
        path = unquote(urlsplit(self.path).path)
        if path.startswith("/view/"):
            self._send(_page(path.removeprefix("/view/")), "text/html")
        elif path == "/index.js":
            self._send((self.app / "index.js").read_bytes(), "text/javascript")
        elif path == "/jpx-stub.js":
            self._send(b"export class JpxImage {}\n", "text/javascript")
        elif _CHUNK.fullmatch(path):
            self._send(b"export {};\n", "text/javascript")
        elif path == "/favicon.ico":
            self._send(b"", "image/x-icon")
        elif path.startswith("/api/datasets/"):
            store = path.removeprefix("/api/datasets/")
            host, port = self.server.server_address[:2]
            record = {
                "id": store,
                "name": store,
                "state": "deferred",
                "sources": [{"source_uri": f"http://{host}:{port}/data/{store}"}],
            }
            self._send(json.dumps(record).encode(), "application/json")
        elif path.startswith("/data/"):
            self._file(path.removeprefix("/data/"))
        else:
            self.send_error(HTTPStatus.NOT_FOUND)

    def _file(self, rel: str) -> None:
        target = (self.data / rel).resolve()
        if not target.is_relative_to(self.data) or not target.is_file():
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        body = target.read_bytes()
        match = _RANGE.match(self.headers.get("Range", ""))
        if match is None:
            self._send(body, "application/octet-stream")
            return
        first, last = match.groups()
        if first:
            start, stop = int(first), min(int(last) + 1 if last else len(body), len(body))
        else:  # a suffix range: the last N bytes
            start, stop = max(len(body) - int(last), 0), len(body)
        if start >= stop:
            self.send_error(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            return
        self._send(
            body[start:stop],
            "application/octet-stream",
            status=HTTPStatus.PARTIAL_CONTENT,
            extra={"Content-Range": f"bytes {start}-{stop - 1}/{len(body)}"},
        )

    def _send(
        self,
        body: bytes,
        content_type: str,
        *,
        status: HTTPStatus = HTTPStatus.OK,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not getattr(self, "_head_only", False):
            self.wfile.write(body)


@contextmanager
def serve(app: Path, data: Path) -> Iterator[str]:
    """Serve vizarr's ``static`` folder and the stores under ``data`` on 127.0.0.1.

    Yield the base URL. ``/view/STORE`` opens ``data/STORE`` in vizarr.
    """
    handler = type("Handler", (_Handler,), {"app": app, "data": data.resolve()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host!s}:{port}"
    finally:
        server.shutdown()
        server.server_close()
