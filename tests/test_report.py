"""The HTML report renders in real headless Chromium and shows every dataset.

It reports the failures of a partial run; the outputs also feed `snakemake --report`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from bioingest.report import FailedDataset, build_report, read_failed, write_report
from conftest import REAL, REPO, real_datasets, run_workflow

ARTIFACTS = REPO / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


def chromium(page: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Load ``page`` in headless Chromium with a fresh profile; fail if it is missing."""
    exe = shutil.which("chromium")
    assert exe, "chromium is not installed (make test installs Debian's chromium)"
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run(
        [exe, *FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.browser
def test_console_detection_works(tmp_path: Path) -> None:
    page = tmp_path / "bad.html"
    page.write_text("<script>console.error('boom'); missing();</script>", encoding="utf-8")
    messages = console_messages(chromium(page, tmp_path, "--dump-dom").stderr)
    assert any("boom" in m for m in messages)
    assert any("missing is not defined" in m for m in messages)


@pytest.mark.workflow
@pytest.mark.java
@pytest.mark.slow
@pytest.mark.browser
def test_report_renders_every_dataset(real_run: Path, tmp_path: Path) -> None:
    report = real_run / "report.html"
    html = report.read_text(encoding="utf-8")
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html and "<script src" not in html
    dom = chromium(report, tmp_path, "--dump-dom")
    assert dom.returncode == 0
    assert console_messages(dom.stderr) == []
    names = sorted(d.name for d in real_datasets())
    rows = re.findall(r'<tr><td><a href="([^"]+)/qc.html">', dom.stdout)
    assert sorted(rows) == names
    for name in names:
        page = real_run / name / "qc.html"
        text = page.read_text(encoding="utf-8")
        assert text.count('class="thumb"') == len(
            list((real_run / name / "thumbnails").glob("*.png"))
        )
        assert "<script" not in text and "https://" not in text
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    proc = chromium(report, tmp_path, f"--screenshot={shot}", "--window-size=1280,2400")
    assert proc.returncode == 0
    assert console_messages(proc.stderr) == []
    assert shot.stat().st_size > 10_000


@pytest.mark.workflow
@pytest.mark.java
def test_partial_run_report(tmp_path: Path, real_dir: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(real_dir / "dv" / "toxo.dv", inputs)
    (inputs / "broken.nd2").write_bytes(b"\x00" * 4096)
    out = tmp_path / "out"
    proc = run_workflow(
        tmp_path / "w",
        {"input_dir": inputs, "output_dir": out},
        extra=["--keep-going"],
        check=False,
    )
    assert proc.returncode != 0
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "2 datasets, 1 converted, 1 failed." in html
    assert "inventory: broken.nd2: unsupported or unrecognised file format" in html
    assert '<a href="toxo/qc.html">toxo</a>' in html
    page = (out / "toxo" / "qc.html").read_text(encoding="utf-8")
    assert 'src="thumbnails/series-0.png"' in page
    assert "napari --plugin napari-ome-zarr toxo/toxo.ome.zarr" in page


@pytest.mark.workflow
@pytest.mark.java
def test_snakemake_report(tmp_path: Path) -> None:
    """The run's outputs marked with report() go into Snakemake's own report."""
    work = tmp_path / "w"
    archive = tmp_path / "snakemake-report.zip"
    (tmp_path / "in").mkdir()
    shutil.copy(REAL / "dv" / "toxo.dv", tmp_path / "in")
    run_workflow(work, {"input_dir": tmp_path / "in", "output_dir": tmp_path / "o"})
    run_workflow(
        work,
        {"input_dir": tmp_path / "in", "output_dir": tmp_path / "o"},
        extra=["--report", str(archive)],
    )
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
    assert any(n.endswith("series-0.png") for n in names), names
    assert any(n.endswith("report.html") for n in names)
    assert any(n.endswith("qc.tsv") for n in names)


def _fake_dataset(out: Path, i: int) -> str:
    """Write a dataset folder with a qc.json and metadata.json of the shapes the stages write."""
    name = f"ds{i:05d}"
    status = ("pass", "warn", "fail")[i % 3] if i % 7 else "pass"
    checks = {"saturation": status, "zero_clipping": "n/a", "uniformity": "pass"}
    reasons = {"zero_clipping": "RGB colour image: 0 and the maximum are the ends"}
    if status != "pass":
        reasons["saturation"] = f"{i % 50} % of pixels at the maximum 65535"
    qc: dict[str, Any] = {
        "dataset": name,
        "status": status,
        "metadata_status": "warn" if i % 2 else "pass",
        "store": {"path": f"{name}.ome.zarr", "zarr_format": 3},
        "series": [
            {
                "series": 0,
                "checks": {"fidelity": "pass"},
                "reasons": {},
                "channels": [{"label": "DAPI", "checks": checks, "reasons": reasons}],
            }
        ],
    }
    size = {"value": 512}
    record = {
        "completeness": {"nbo_tier": "tier 1", "tier1_pct": 80.0, "tier2_pct": 40.0},
        "series": [
            {
                "size_x": size,
                "size_y": size,
                "size_z": {"value": 1},
                "size_c": {"value": 1},
                "size_t": {"value": 1},
                "pixel_type": {"value": "uint16"},
            }
        ],
    }
    (out / name).mkdir()
    (out / name / "qc.json").write_text(json.dumps(qc), encoding="utf-8")
    (out / name / "metadata.json").write_text(json.dumps(record), encoding="utf-8")
    return name


@pytest.mark.browser
def test_summary_scales_to_10000_datasets(tmp_path: Path) -> None:
    """Check that the summary scales to 10,000 rows: a few MB, failures and fails first.

    It loads without console errors, and a click on a column header sorts the rows.
    """
    out = tmp_path / "out"
    out.mkdir()
    names = [_fake_dataset(out, i) for i in range(10_000)]
    failed_tsv = out / "failed.tsv"
    failed_tsv.write_text(
        "dataset\tstep\treason\nds09999\tconvert\t/in/x.czi: truncated file\n"
        "gone\tfixity\t/in/gone.tif: cannot read\n",
        encoding="utf-8",
    )
    failed = read_failed(failed_tsv)
    assert failed[0] == FailedDataset("ds09999", "convert", "/in/x.czi: truncated file")
    report = write_report(out, names, failed=failed)
    size = report.stat().st_size
    assert size < 5_000_000, size
    text = report.read_text(encoding="utf-8")
    assert "10001 datasets, 9999 converted, 2 failed." in text
    rows = re.findall(r"<tr><td>(?:<a href=\"[^\"]+\">)?([^<]+)", text)
    assert len(rows) == 10_001
    # Failed first (by name), then QC fail, warn, pass.
    assert rows[:2] == ["ds09999", "gone"]
    fails = [n for n in names if int(n[2:]) % 7 and int(n[2:]) % 3 == 2 and n != "ds09999"]
    assert rows[2 : 2 + len(fails)] == fails
    assert "napari --plugin napari-ome-zarr ds00000/ds00000.ome.zarr" in text
    dom = chromium(report, tmp_path, "--dump-dom")
    assert dom.returncode == 0
    assert console_messages(dom.stderr) == []
    assert dom.stdout.count("<tr><td>") == 10_001
    # Sort by dataset name with a real click in the page.
    clicked = out / "clicked.html"
    clicked.write_text(
        text.replace(
            "</body>",
            "<script>document.querySelector('th[data-c=\"0\"]').click();</script></body>",
        ),
        encoding="utf-8",
    )
    dom = chromium(clicked, tmp_path, "--dump-dom")
    assert console_messages(dom.stderr) == []
    order = re.findall(r"<tr><td>(?:<a href=\"[^\"]+\">)?([^<]+)", dom.stdout)
    assert order == sorted(order) and len(order) == 10_001


def test_failure_reason_from_logs_without_failed_list(tmp_path: Path) -> None:
    (tmp_path / "logs" / "bad").mkdir(parents=True)
    (tmp_path / "logs" / "bad" / "convert.log").write_text(
        "INFO convert bad.czi\nERROR /in/bad.czi: truncated file\n", encoding="utf-8"
    )
    html = build_report(tmp_path, ["bad"])
    assert '<td class="reason">convert: /in/bad.czi: truncated file</td>' in html
    # An explicit list replaces the logs.
    html = build_report(tmp_path, ["bad"], failed=[])
    assert "1 datasets, 1 converted, 0 failed." in html
