"""The SLURM profile on a real single-node SLURM cluster started by the test."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import BIN, REPO, run_workflow
from slurm_cluster import slurm_cluster

pytestmark = [pytest.mark.cluster, pytest.mark.workflow, pytest.mark.java]

# Several readers and layouts: Bio-Formats (CZI with '=' in its name), a two-file ICS,
# a multi-series OME-TIFF and an ImageJ TIFF on the tifffile path.
SAMPLES = {
    "czi": "czi/CH=1_16bit.czi",
    "ics": "ics/testim.ics",
    "ome_tiff": "ome-tiff/6x4y1z1t1c8b-swatch-2s2p4w2ws.ome-v-Match.ome.tiff",
    "tiff": "tiff/5channel.tif",
}
PROFILE = ["--profile", str(REPO / "profiles" / "slurm")]


def write_sheet(path: Path, rows: dict[str, Path]) -> Path:
    lines = ["dataset\tpath", *(f"{name}\t{file}" for name, file in rows.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def slurm_job_ids(text: str) -> list[int]:
    return [int(i) for i in re.findall(r"SLURM jobid (\d+)", text)]


def job_state(job_id: int) -> str:
    out = subprocess.run(
        ["scontrol", "show", "job", str(job_id)], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"JobState=(\S+)", out)
    assert match, out
    return match.group(1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as state:
        yield state


def test_slurm_profile_matches_local_run(cluster: Path, real_dir: Path, tmp_path: Path) -> None:
    sheet = write_sheet(tmp_path / "samples.tsv", {k: real_dir / v for k, v in SAMPLES.items()})
    local = tmp_path / "local"
    run_workflow(tmp_path / "work-local", {"samples": sheet, "output_dir": local})

    out = tmp_path / "slurm"
    proc = run_workflow(
        tmp_path / "work-slurm", {"samples": sheet, "output_dir": out}, extra=PROFILE
    )
    ids = slurm_job_ids(proc.stdout + proc.stderr)
    # The inventory; per dataset its conversion, then one group job of pyramid, metadata
    # and qc (after the outcomes checkpoint); report and manifest. The other run-level
    # rules are local rules.
    assert len(ids) == 1 + 2 * len(SAMPLES) + 2, proc.stderr[-3000:]
    assert all(job_state(i) == "COMPLETED" for i in ids)
    assert (out / "manifest-sha256.txt").read_bytes() == (
        local / "manifest-sha256.txt"
    ).read_bytes()
    assert subprocess.run([str(BIN / "bioingest"), "verify", str(out)], check=False).returncode == 0


def test_slurm_profile_reports_a_failed_job(cluster: Path, real_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "in" / "broken.czi"
    broken.parent.mkdir()
    broken.write_bytes(b"ZISRAWFILE" + bytes(200))
    sheet = write_sheet(
        tmp_path / "samples.tsv", {"broken": broken, "tiff": real_dir / SAMPLES["tiff"]}
    )
    out = tmp_path / "out"
    proc = run_workflow(
        tmp_path / "work", {"samples": sheet, "output_dir": out}, extra=PROFILE, check=False
    )
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert slurm_job_ids(text)
    # The inventory finds it: one line naming the file, and the run exits non-zero.
    assert f"FAILED {broken}: " in text
    assert not (out / "broken" / "broken.ome.zarr").exists()
    # keep-going: the good dataset is finished all the same.
    assert (out / "tiff" / "qc.json").is_file()


def test_slurm_splits_a_multi_series_file(cluster: Path, real_dir: Path, tmp_path: Path) -> None:
    mosaic = real_dir / "czi" / "S3_1Pos_2Mosaic_T2Z3_CH2_sm.czi"  # 3 series
    sheet = write_sheet(tmp_path / "samples.tsv", {"mosaic": mosaic})
    local = tmp_path / "local"
    run_workflow(tmp_path / "work-local", {"samples": sheet, "output_dir": local})

    out = tmp_path / "slurm"
    config = {"samples": sheet, "output_dir": out, "split_series_above_mb": 0}
    proc = run_workflow(tmp_path / "work-slurm", config, extra=PROFILE)
    text = proc.stdout + proc.stderr
    ids = slurm_job_ids(text)
    assert all(job_state(i) == "COMPLETED" for i in ids)
    # Each series is converted by a SLURM job of its own: convert the first, convert_part
    # the others.
    part_logs = (tmp_path / "work-slurm" / ".snakemake" / "slurm_logs").glob(
        "rule_convert_part/*/*.log"
    )
    assert sorted(log.parent.name for log in part_logs) == ["mosaic_1", "mosaic_2"]
    assert len(ids) == 1 + 1 + 2 + 1 + 1 + 2, text[-3000:]
    lines = [(folder / "manifest-sha256.txt").read_text().splitlines() for folder in (local, out)]
    assert [x for x in lines[1] if "  logs/" not in x] == [
        x for x in lines[0] if "  logs/" not in x
    ]
