"""Bad inputs fail their own dataset with one clear line; every other dataset completes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from bioingest.errors import IngestError
from bioingest.integrity import check_structure
from bioingest.readers import check_readable
from conftest import BIN, run_workflow

CZI = "czi/CellDivision_T3_Z5_CH2_X240_Y170.czi"
ND2 = "nd2/cluster.nd2"

# name -> expected reason (the text after "<path>: ")
BAD = {
    "empty.czi": "empty file (0 bytes)",
    "truncated.czi": "truncated file (1206848 bytes; its directory refers to byte 2925568)",
    "truncated.nd2": "truncated file (ND2 chunk map missing at the end)",
    "random.nd2": "unsupported or unrecognised file format",
    "text.tif": "corrupt or invalid file (Invalid TIFF file: {path})",
}


def make_bad(folder: Path, real: Path) -> None:
    """Write every bad input of ``BAD`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.czi").touch()
    czi = (real / CZI).read_bytes()
    (folder / "truncated.czi").write_bytes(czi[: int(len(czi) * 0.4)])
    nd2 = (real / ND2).read_bytes()
    (folder / "truncated.nd2").write_bytes(nd2[: len(nd2) // 2])
    (folder / "random.nd2").write_bytes(np.random.default_rng(1).bytes(50_000))
    (folder / "text.tif").write_text("this is a text file, not a TIFF\n", encoding="utf-8")


def make_good(folder: Path) -> dict[str, np.ndarray | None]:
    """Two good inputs: a tifffile-written OME-TIFF and a Bio-Formats .fake."""
    data = np.arange(2 * 40 * 30, dtype=np.uint16).reshape(2, 40, 30)
    tifffile.imwrite(folder / "good.ome.tif", data, ome=True)
    (folder / "fake&sizeX=64&sizeY=48&sizeZ=2&pixelType=uint8.fake").touch()
    return {"good": data, "fake_sizeX_64_sizeY_48_sizeZ_2_pixelType_uint8": None}


def reason(name: str, path: Path) -> str:
    return BAD[name].format(path=path)


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory: pytest.TempPathFactory, real_dir: Path) -> tuple[Path, Path, str]:
    base = tmp_path_factory.mktemp("bad")
    inputs = base / "in"
    make_bad(inputs, real_dir)
    make_good(inputs)
    out = base / "out"
    proc = run_workflow(
        base / "work", {"input_dir": inputs, "output_dir": out}, extra=["--keep-going"], check=False
    )
    assert proc.returncode != 0
    return inputs, out, proc.stdout + proc.stderr


def test_good_datasets_complete(bad_run: tuple[Path, Path, str]) -> None:
    inputs, out, _ = bad_run
    for name in ("good", "fake_sizeX_64_sizeY_48_sizeZ_2_pixelType_uint8"):
        assert (out / name / f"{name}.ome.zarr" / "zarr.json").is_file()
        assert (out / name / "metadata.json").is_file()
    import zarr

    level0 = zarr.open_group(out / "good" / "good.ome.zarr", mode="r")["0"][:]
    expected = tifffile.imread(inputs / "good.ome.tif")
    np.testing.assert_array_equal(level0.squeeze(), expected)


def test_run_level_outputs_cover_the_good_datasets(bad_run: tuple[Path, Path, str]) -> None:
    _, out, console = bad_run
    for deliverable in (
        "summary/images.tsv",
        "summary/qc.tsv",
        "manifest-sha256.txt",
        "bia-file-list.tsv",
        "ro-crate-metadata.json",
        "report.html",
    ):
        assert (out / deliverable).is_file(), deliverable
    failed = (out / "failed.tsv").read_text(encoding="utf-8").splitlines()
    assert failed[0] == "dataset\tstep\tfile\treason"
    assert sorted(row.split("\t")[2] for row in failed[1:]) == sorted(BAD)
    assert f"{len(BAD)} dataset(s) failed: see {out}/failed.tsv" in console
    manifest = (out / "manifest-sha256.txt").read_text(encoding="utf-8")
    assert "good/good.ome.zarr/zarr.json" in manifest
    assert "Traceback" not in console


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_dataset_fails_with_one_line(bad_run: tuple[Path, Path, str], name: str) -> None:
    inputs, out, console = bad_run
    rows = [r.split("\t") for r in (out / "failed.tsv").read_text().splitlines()[1:]]
    dataset, step, _, why = next(r for r in rows if r[2] == name)
    assert (step, why) == ("inventory", reason(name, Path(name)))
    assert not (out / dataset / f"{dataset}.ome.zarr").exists()
    assert not (out / "intermediate" / f"{dataset}.zarr").exists()
    log = (out / "logs" / "inventory.log").read_text(encoding="utf-8")
    errors = [line for line in log.splitlines() if line.startswith(f"ERROR {name}:")]
    assert errors == [f"ERROR {name}: {reason(name, Path(name))}"]
    assert "Traceback" not in log
    assert f"FAILED {inputs / name}: {reason(name, Path(name))}" in console


@pytest.mark.parametrize("name", sorted(BAD))
def test_cli_error_is_one_line(tmp_path: Path, real_dir: Path, name: str) -> None:
    make_bad(tmp_path / "in", real_dir)
    path = tmp_path / "in" / name
    proc = subprocess.run(
        [
            str(BIN / "bioingest"),
            "convert",
            str(path),
            "--zarr",
            str(tmp_path / "o.zarr"),
            "--ome-xml",
            str(tmp_path / "o.xml"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"ERROR {path}: {reason(name, path)}"
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o.zarr").exists()
    assert not (tmp_path / "o.xml").exists()


def test_folder_and_missing_file(tmp_path: Path) -> None:
    folder = tmp_path / "looks_like.czi"
    folder.mkdir()
    with pytest.raises(IngestError, match=re.escape(f"{folder}: is a folder, not a file")):
        check_readable(folder)
    with pytest.raises(IngestError, match=re.escape(f"{tmp_path / 'gone.nd2'}: file not found")):
        check_readable(tmp_path / "gone.nd2")


def test_unreadable_file(tmp_path: Path) -> None:
    """Permission denied is reported as such (run as another user when tests run as root)."""
    folder = Path(tempfile.mkdtemp(prefix="bioingest-perm-", dir="/tmp"))
    folder.chmod(0o755)
    path = folder / "locked.tif"
    path.write_bytes(b"II*\x00")
    path.chmod(0)
    if os.geteuid() == 0:
        # root reads anything; check the same path through an unprivileged process.
        proc = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                str(BIN / "python"),
                "-c",
                "import sys; from pathlib import Path; from bioingest.readers import "
                "check_readable; check_readable(Path(sys.argv[1]))",
                str(path),
            ],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 1
        assert f"{path}: permission denied (file is not readable)" in proc.stderr
    else:
        with pytest.raises(IngestError, match="permission denied"):
            check_readable(path)
    shutil.rmtree(folder)


def test_structure_checks_accept_every_real_file(real_dir: Path) -> None:
    for path in sorted(real_dir.rglob("*")):
        if path.suffix.lower() in (".czi", ".nd2"):
            check_structure(path)


def test_out_of_disk_is_one_line(tmp_path: Path) -> None:
    """A full disk names the file being written (a 64 KiB tmpfs stands in for a full disk)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)]).returncode:
        pytest.fail("cannot mount a small tmpfs to simulate a full disk (needs root)")
    try:
        src = tmp_path / "big.tif"
        tifffile.imwrite(
            src, np.random.default_rng(0).integers(0, 60000, (512, 512), dtype=np.uint16)
        )
        proc = subprocess.run(
            [
                str(BIN / "bioingest"),
                "convert",
                str(src),
                "--zarr",
                str(mount / "o.zarr"),
                "--ome-xml",
                str(mount / "o.xml"),
            ],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 1
        last = proc.stderr.strip().splitlines()[-1]
        assert re.fullmatch(rf"ERROR {re.escape(str(mount))}/\S+: out of disk space", last), last
        assert not (mount / "o.zarr").exists()
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    shutil.rmtree(mount)
