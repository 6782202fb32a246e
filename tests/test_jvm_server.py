"""One Bio-Formats JVM per machine: the server answers exactly as an in-process reader."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bioingest.errors import IngestError
from bioingest.readers import open_source, remote
from bioingest.readers.remote import RemoteReader
from bioingest.tiles import tiles
from conftest import BIN


@pytest.fixture
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Yield a private socket folder, so each test starts its own server; stop it afterwards."""
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(folder))
    started = len(remote._spawned)
    yield folder / f"bioingest-{os.getuid()}"
    for proc in remote._spawned[started:]:
        proc.terminate()
        proc.wait(timeout=30)


def started_servers(folder: Path) -> int:
    return sum(log.read_text().count("JVM started") for log in folder.glob("*.log"))


@pytest.mark.parametrize(
    "sample",
    ["czi/WellD6-7_S2.czi", "dv/toxo.dv", "ics/testim.ics", "lif/LeicaLASX_xz-plane_example.lif"],
)
@pytest.mark.java
def test_remote_reader_matches_bioformats(
    runtime_dir: Path, real_dir: Path, bioformats: Any, sample: str
) -> None:
    path = real_dir / sample
    direct = bioformats(path)
    with open_source(path, reader="bioformats", jvm_server=True) as served:
        assert isinstance(served, RemoteReader)
        assert served.format_name == direct.format_name
        assert served.series == direct.series
        assert served.ome_xml == direct.ome_xml
        assert served.used_files == direct.used_files
        for info in served.series:
            for t, c, z in np.ndindex(info.size_t, info.size_c, info.size_z):
                for y, x, h, w in tiles(info.size_y, info.size_x, 256):
                    got = served.read_tile(info.index, t, c, z, y, x, h, w)
                    want = direct.read_tile(info.index, t, c, z, y, x, h, w)
                    assert got.dtype == want.dtype
                    np.testing.assert_array_equal(got, want)
    assert started_servers(runtime_dir) == 1


@pytest.mark.java
def test_one_server_for_concurrent_clients(runtime_dir: Path, real_dir: Path) -> None:
    paths = [real_dir / "czi/WellD6-7_S2.czi", real_dir / "dv/toxo.dv"] * 3
    formats: list[str] = []

    def read(path: Path) -> None:
        with RemoteReader(path) as reader:
            reader.read_tile(0, 0, 0, 0, 0, 0, 16, 16)
            formats.append(reader.format_name)

    threads = [threading.Thread(target=read, args=(p,)) for p in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(formats) == sorted(["Zeiss CZI", "Deltavision"] * 3)
    assert started_servers(runtime_dir) == 1
    assert len(list(runtime_dir.glob("*.sock"))) == 1


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("random.nd2", np.random.default_rng(1).bytes(50_000)),
        ("text.lif", b"not a Leica file\n" * 100),
    ],
)
@pytest.mark.java
def test_remote_errors_match_in_process_errors(
    runtime_dir: Path, tmp_path: Path, name: str, content: bytes
) -> None:
    from bioingest.readers.bioformats import BioFormatsReader

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(IngestError) as in_process:
        BioFormatsReader(path)
    with pytest.raises(IngestError) as served:
        RemoteReader(path)
    assert str(served.value) == str(in_process.value)
    assert str(served.value).startswith(f"{path}: ")
    # The server survives a bad file and serves the next client.
    with pytest.raises(IngestError):
        RemoteReader(path)
    assert started_servers(runtime_dir) == 1


@pytest.mark.java
def test_server_stops_when_idle(tmp_path: Path) -> None:
    sock_path = tmp_path / "s.sock"
    proc = subprocess.Popen(
        [str(BIN / "bioingest"), "jvm-server", "--socket", str(sock_path), "--idle-timeout", "2"],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not sock_path.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    client = socket.socket(socket.AF_UNIX)
    client.connect(str(sock_path))
    time.sleep(3)  # longer than the idle timeout, but a client is connected
    assert proc.poll() is None
    client.close()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert not sock_path.exists()
    assert "Bio-Formats server stopped after 2 s idle" in err


def test_socket_folder_must_be_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / f"bioingest-{os.getuid()}"
    shared.mkdir()
    shared.chmod(0o755)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with pytest.raises(IngestError, match="must belong to this user and be private"):
        remote.socket_path(jar=None, maven=None, heap_mb=1024)
