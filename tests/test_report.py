"""The HTML report renders in real headless Chromium, shows every dataset, and reports
failures of a partial run; outputs also feed `snakemake --report`."""

from __future__ import annotations

import re
import shutil
import subprocess
import zipfile
from pathlib import Path

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


def test_console_detection_works(tmp_path: Path) -> None:
    page = tmp_path / "bad.html"
    page.write_text("<script>console.error('boom'); missing();</script>", encoding="utf-8")
    messages = console_messages(chromium(page, tmp_path, "--dump-dom").stderr)
    assert any("boom" in m for m in messages)
    assert any("missing is not defined" in m for m in messages)


def test_report_renders_every_dataset(real_run: Path, tmp_path: Path) -> None:
    report = real_run / "report.html"
    html = report.read_text(encoding="utf-8")
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html and "<script" not in html
    dom = chromium(report, tmp_path, "--dump-dom")
    assert dom.returncode == 0
    assert console_messages(dom.stderr) == []
    names = sorted(d.name for d in real_datasets())
    rows = re.findall(r'<tr><td><a href="#ds-([^"]+)">', dom.stdout)
    assert rows == names
    for name in names:
        assert f'id="ds-{name}"' in dom.stdout
    assert dom.stdout.count('class="thumb"') == sum(
        len(list((real_run / n / "thumbnails").glob("*.png"))) for n in names
    )
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    proc = chromium(report, tmp_path, f"--screenshot={shot}", "--window-size=1280,2400")
    assert proc.returncode == 0
    assert console_messages(proc.stderr) == []
    assert shot.stat().st_size > 10_000


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
    assert f"{inputs / 'broken.nd2'}: unsupported or unrecognised file format" in html
    assert 'id="ds-toxo"' in html and "data:image/png;base64," in html


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
