"""The cloud profile against a real S3-compatible server (moto) on the loopback address."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from conftest import BIN, REPO, run_workflow

pytestmark = [pytest.mark.cloud, pytest.mark.workflow, pytest.mark.java]

# A Bio-Formats CZI, a two-file ICS in a subfolder and a TIFF on the tifffile path.
FILES = ["czi/CH=1_16bit.czi", "ics/testim.ics", "ics/testim.ids", "tiff/5channel.tif"]
NAMES = ["czi_CH_1_16bit", "ics_testim", "tiff_5channel"]
# Remote files are grouped by name, without opening them; the inventory files say so.
BY_DESIGN = ("inventory.json", "inventory.tsv", "logs/inventory.log")


def without_inventory(manifest: Path) -> list[str]:
    return [line for line in manifest.read_text().splitlines() if not line.endswith(BY_DESIGN)]


KEYS = {"key": "testing", "secret": "testing"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Yield the URL of a moto S3 server on 127.0.0.1, stopped after the module."""
    server = shutil.which("moto_server", path=str(BIN))
    assert server, "moto_server missing: install the test extras (make setup)"
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=fh, stderr=fh)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def s3fs_of(endpoint: str) -> Any:
    """Return an s3fs file system on the test server."""
    import s3fs

    return s3fs.S3FileSystem(**KEYS, client_kwargs={"endpoint_url": endpoint})


def test_cloud_profile_reads_and_writes_s3(
    s3_endpoint: str, real_dir: Path, tmp_path: Path
) -> None:
    fs = s3fs_of(s3_endpoint)
    fs.mkdir("lab")
    local_in = tmp_path / "raw"
    for rel in FILES:
        fs.put_file(str(real_dir / rel), f"lab/raw/{rel}")
        (local_in / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(real_dir / rel, local_in / rel)

    env = {
        "SNAKEMAKE_STORAGE_S3_ENDPOINT_URL": s3_endpoint,
        "SNAKEMAKE_STORAGE_S3_ACCESS_KEY": KEYS["key"],
        "SNAKEMAKE_STORAGE_S3_SECRET_KEY": KEYS["secret"],
    }
    run_workflow(
        tmp_path / "work-cloud",
        {"input_dir": "s3://lab/raw", "output_dir": "results"},
        extra=[
            "--profile",
            str(REPO / "profiles" / "cloud"),
            "--default-storage-prefix",
            "s3://lab/run",
        ],
        env=env,
    )

    names = sorted(p.rsplit("/", 1)[1] for p in fs.ls("lab/run/results") if fs.isdir(p))
    assert [n for n in names if n not in ("logs", "summary", "_workflow")] == NAMES
    remote = json.loads(fs.cat("lab/run/results/inventory.json"))
    assert [len(d["files"]) for d in remote["datasets"]] == [1, 2, 1]
    # Nothing stays behind in the bucket from the temporary intermediate stores.
    assert not fs.exists("lab/run/results/intermediate")

    # The same files ingested locally give the same manifest, byte for byte ...
    local_out = tmp_path / "local"
    run_workflow(tmp_path / "work-local", {"input_dir": local_in, "output_dir": local_out})
    downloaded = tmp_path / "downloaded"
    fs.get("lab/run/results", str(downloaded), recursive=True)
    assert without_inventory(downloaded / "manifest-sha256.txt") == without_inventory(
        local_out / "manifest-sha256.txt"
    )
    # ... and the published bucket verifies against it.
    verify = subprocess.run(
        [str(BIN / "bioingest"), "verify", str(downloaded), "--pixels"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # The OME-Zarr opens straight from S3 with zarr-python's fsspec store.
    remote = zarr.open_group(
        "s3://lab/run/results/ics_testim/ics_testim.ome.zarr",
        mode="r",
        storage_options={**KEYS, "client_kwargs": {"endpoint_url": s3_endpoint}},
    )
    assert remote.attrs["ome"]["version"] == "0.5"
    here = zarr.open_group(local_out / "ics_testim" / "ics_testim.ome.zarr", mode="r")
    np.testing.assert_array_equal(remote["0"][:], here["0"][:])
