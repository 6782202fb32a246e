"""Bad inputs fail their own dataset with one clear line; every other dataset completes."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from bioingest.checksum import sha256_file
from bioingest.errors import IngestError
from bioingest.integrity import check_structure
from bioingest.readers import check_readable
from conftest import BIN, REPO, run_workflow

CZI = "czi/CellDivision_T3_Z5_CH2_X240_Y170.czi"
ND2 = "nd2/cluster.nd2"

# name -> expected reason (the text after "<path>: ")
BAD = {
    "empty.czi": "empty file (0 bytes)",
    "truncated.czi": "truncated file (1206848 bytes; its directory refers to byte 2925568)",
    "truncated.nd2": "truncated file (ND2 chunk map missing at the end)",
    "random.nd2": "unsupported or unrecognised file format",
    "text.tif": "corrupt or invalid file (Invalid TIFF file: {path})",
    "damaged.ome.tif": "corrupt or invalid file (cannot decode series 0 plane t=0 c=0 z=1, "
    "rows 0-63, columns 0-63: DeflateError: libdeflate_zlib_decompress returned "
    "LIBDEFLATE_BAD_DATA)",
}
# Java stack lines and Python tracebacks: never on the console.
STACK_MARKERS = ("Traceback", "\tat ", "Exception in thread")


def write_damaged_tiff(path: Path) -> None:
    """Write a tiled, deflate-compressed OME-TIFF (2 x 64 x 64) with one damaged tile.

    The third tile of the second plane has 20 flipped bytes in its compressed stream.
    """
    data = np.random.default_rng(0).integers(0, 4000, (2, 64, 64), dtype=np.uint16)
    tifffile.imwrite(
        path, data, ome=True, tile=(32, 32), compression="zlib", metadata={"axes": "ZYX"}
    )
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[1]
        offset = page.dataoffsets[2]
    raw = bytearray(path.read_bytes())
    for i in range(offset + 10, offset + 30):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def write_bad_tag_tiff(path: Path) -> np.ndarray:
    """Write a readable TIFF with one private tag of an invalid data type; return the pixels.

    tifffile logs an ERROR line for the tag but reads the pixels.
    """
    data = np.arange(48 * 64, dtype=np.uint16).reshape(48, 64)
    tifffile.imwrite(path, data, extratags=[(65000, "s", 0, "hello world", True)])
    raw = bytearray(path.read_bytes())
    ifd = struct.unpack_from("<I", raw, 4)[0]
    for i in range(struct.unpack_from("<H", raw, ifd)[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack_from("<H", raw, entry)[0] == 65000:
            struct.pack_into("<H", raw, entry + 2, 99)
    path.write_bytes(bytes(raw))
    return data


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
    write_damaged_tiff(folder / "damaged.ome.tif")


def make_good(folder: Path) -> dict[str, np.ndarray | None]:
    """Write three good inputs into ``folder``; return their pixels by dataset name.

    The inputs are a tifffile-written OME-TIFF, a Bio-Formats .fake (pixels None) and a
    TIFF with a tag tifffile complains about.
    """
    data = np.arange(2 * 40 * 30, dtype=np.uint16).reshape(2, 40, 30)
    tifffile.imwrite(folder / "good.ome.tif", data, ome=True)
    (folder / "fake&sizeX=64&sizeY=48&sizeZ=2&pixelType=uint8.fake").touch()
    tagged = write_bad_tag_tiff(folder / "badtag.tif")
    return {
        "good": data,
        "fake_sizeX_64_sizeY_48_sizeZ_2_pixelType_uint8": None,
        "badtag": tagged,
    }


def reason(name: str, path: Path) -> str:
    return BAD[name].format(path=path)


def fingerprint(folder: Path) -> dict[str, tuple[str, int]]:
    """SHA-256 and modification time (ns) of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): (sha256_file(p), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory: pytest.TempPathFactory, real_dir: Path) -> tuple[Path, Path, str]:
    base = tmp_path_factory.mktemp("bad")
    inputs = base / "in"
    make_bad(inputs, real_dir)
    make_good(inputs)
    (base / "fingerprint.json").write_text(json.dumps(fingerprint(inputs)))
    out = base / "out"
    # The default profile, as users run it: failed logs are printed on the console.
    profile = ["--workflow-profile", str(REPO / "profiles" / "default")]
    proc = run_workflow(
        base / "work",
        {"input_dir": inputs, "output_dir": out},
        extra=["--keep-going", *profile],
        check=False,
    )
    assert proc.returncode != 0
    return inputs, out, proc.stdout + proc.stderr


@pytest.mark.workflow
@pytest.mark.java
def test_good_datasets_complete(bad_run: tuple[Path, Path, str]) -> None:
    inputs, out, _ = bad_run
    for name in ("good", "fake_sizeX_64_sizeY_48_sizeZ_2_pixelType_uint8", "badtag"):
        assert (out / name / f"{name}.ome.zarr" / "zarr.json").is_file()
        assert (out / name / "metadata.json").is_file()
    import zarr

    level0 = zarr.open_group(out / "good" / "good.ome.zarr", mode="r")["0"][:]
    expected = tifffile.imread(inputs / "good.ome.tif")
    np.testing.assert_array_equal(level0.squeeze(), expected)
    tagged = zarr.open_group(out / "badtag" / "badtag.ome.zarr", mode="r")["0"][:]
    np.testing.assert_array_equal(tagged.squeeze(), tifffile.imread(inputs / "badtag.tif"))


@pytest.mark.workflow
@pytest.mark.java
def test_sources_untouched_by_a_failed_run(bad_run: tuple[Path, Path, str]) -> None:
    """sha256 and mtime of every input, good and bad, are those from before the run."""
    inputs, _, _ = bad_run
    before = json.loads((inputs.parent / "fingerprint.json").read_text())
    assert fingerprint(inputs) == {k: tuple(v) for k, v in before.items()}


@pytest.mark.workflow
@pytest.mark.java
def test_tifffile_complaints_are_warnings_naming_the_file(
    bad_run: tuple[Path, Path, str],
) -> None:
    inputs, out, _ = bad_run
    log = (out / "logs" / "badtag" / "convert.log").read_text(encoding="utf-8")
    complaint = (
        f"WARNING {inputs / 'badtag.tif'}: tifffile: <TiffTag.fromfile> raised "
        "TiffFileError('<tifffile.TiffTag 65000 @178> invalid data type 99')"
    )
    # Once, although the file is opened twice (reader choice, then reading).
    assert [line for line in log.splitlines() if "tifffile: " in line] == [complaint]
    assert not [line for line in log.splitlines() if line.startswith("ERROR")]


@pytest.mark.workflow
@pytest.mark.java
def test_console_has_no_traceback(bad_run: tuple[Path, Path, str]) -> None:
    """Check that the console has one line per bad file and no Python or Java stack trace.

    The run uses the default profile, which shows the logs of failed jobs.
    """
    inputs, _, console = bad_run
    for marker in STACK_MARKERS:
        assert marker not in console, f"{marker!r} on the console"
    # Nor a Python warning (zarr's about Snakemake's marker in folder outputs).
    assert "warnings.warn(" not in console
    for name in BAD:
        # One line per failed dataset at the end of the run, naming the file.
        assert console.count(f"FAILED {inputs / name}: {reason(name, Path(name))}") == 1


@pytest.mark.workflow
@pytest.mark.java
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


@pytest.mark.workflow
@pytest.mark.java
@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_dataset_fails_with_one_line(bad_run: tuple[Path, Path, str], name: str) -> None:
    inputs, out, console = bad_run
    rows = [r.split("\t") for r in (out / "failed.tsv").read_text().splitlines()[1:]]
    dataset, step, _, why = next(r for r in rows if r[2] == name)
    # Headers that read but pixels that do not: found by convert, not by the inventory.
    expected_step = "convert" if name == "damaged.ome.tif" else "inventory"
    assert (step, why) == (expected_step, reason(name, Path(name)))
    assert not (out / dataset / f"{dataset}.ome.zarr" / "zarr.json").exists()
    assert not (out / "intermediate" / f"{dataset}.zarr").exists()
    where = "inventory.log" if step == "inventory" else f"{dataset}/convert.log"
    log = (out / "logs" / where).read_text(encoding="utf-8")
    errors = [line for line in log.splitlines() if line.startswith(f"ERROR {name}:")]
    assert errors == [f"ERROR {name}: {reason(name, Path(name))}"]
    assert "Traceback" not in log
    assert f"FAILED {inputs / name}: {reason(name, Path(name))}" in console


@pytest.mark.java
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
            # As the workflow calls it for a one-file acquisition.
            "--single-file",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"ERROR {path}: {reason(name, path)}"
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o.zarr").exists()
    assert not (tmp_path / "o.xml").exists()


def test_unexpected_failure_traceback_goes_to_its_own_file(tmp_path: Path) -> None:
    """Check that an internal failure prints one line and its traceback goes to its own file.

    The failure here is an intermediate store that bioingest did not write. The traceback
    is in a file next to the log, not in the log or on the console.
    """
    store = tmp_path / "junk.zarr"
    store.mkdir()
    (store / "zarr.json").write_text(
        '{"zarr_format": 3, "node_type": "group", "attributes": {"bioingest": 5}}'
    )
    log = tmp_path / "logs" / "pyramid.log"
    trace = tmp_path / "logs" / "pyramid.trace.log"
    log.parent.mkdir()
    trace.write_text("left by an earlier attempt\n")
    cmd = [str(BIN / "bioingest"), "pyramid", str(store), "--ome-xml", str(tmp_path / "x")]
    cmd += ["--out", str(tmp_path / "o.ome.zarr"), "--log", str(log)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 1
    line = f"ERROR {store}: unexpected AssertionError:  (traceback in pyramid.trace.log)"
    assert proc.stderr.strip().splitlines() == [line]
    assert log.read_text(encoding="utf-8").splitlines() == [line]
    text = trace.read_text(encoding="utf-8")
    assert text.startswith("Traceback (most recent call last):")
    assert text.rstrip().endswith("AssertionError")
    # A successful run removes the trace of an earlier failure.
    tifffile.imwrite(tmp_path / "ok.ome.tif", np.zeros((8, 8), np.uint8), ome=True)
    cmd = [str(BIN / "bioingest"), "metadata", str(tmp_path / "ok.ome.tif"), "--log", str(log)]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert not trace.exists()


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


@pytest.mark.java
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
