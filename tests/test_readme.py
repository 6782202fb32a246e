"""The README's Quick start works as written, and ``make demo`` runs the same commands.

Its first block, run verbatim in a fresh folder holding the workflow, makes the demo
folder and ingests it, one dataset per acquisition.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import zarr

from conftest import BIN, REPO

pytestmark = [pytest.mark.workflow, pytest.mark.java, pytest.mark.slow]

sys.path.insert(0, str(REPO / "demo"))
import make_demo_data  # noqa: E402  (demo/ is not a package)

#: What the workflow needs from a checkout; the rest of a clone is documentation and tests.
CHECKOUT = ["Snakefile", "workflow", "config", "profiles", "demo"]


def quick_start_blocks() -> list[str]:
    """Return the ```bash blocks of the README's "Quick start" section, in order."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```bash\n(.*?)^```", section, flags=re.S | re.M)


def demo_commands() -> list[str]:
    """Return the first block's commands, except ``make setup``.

    The session running the tests is that setup (its ``.venv`` is linked into the folder).
    """
    lines = [line for line in quick_start_blocks()[0].splitlines() if line.strip()]
    assert lines[0].startswith("make setup"), lines
    return lines[1:]


@pytest.fixture(scope="module")
def quick_start(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the Quick start commands in a folder with the workflow and a ``.venv``; return it."""
    work = tmp_path_factory.mktemp("checkout")
    for name in CHECKOUT:
        (work / name).symlink_to(REPO / name)
    (work / ".venv").symlink_to(BIN.parent)
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join(demo_commands())],
        cwd=work,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return work


def test_make_demo_runs_the_quick_start_commands() -> None:
    dry = subprocess.run(
        ["make", "-n", "demo", "DEMO_IN=results/demo-input", "DEMO_OUT=results/demo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for command in demo_commands()[1:]:
        words = command.split("#")[0].split()
        assert any(line.split()[1:] == words[1:] and words[0] in line for line in dry), (
            command,
            dry,
        )


def test_quick_start_ingests_every_demo_acquisition(quick_start: Path) -> None:
    inputs, out = quick_start / "results" / "demo-input", quick_start / "results" / "demo"
    assert (out / "report.html").is_file()
    manifest = (out / "manifest-sha256.txt").read_text(encoding="utf-8")
    inventory = json.loads((out / "inventory.json").read_text(encoding="utf-8"))
    by_main = {d["main"]: d for d in inventory["datasets"]}
    companion = sorted(p.name for p in (inputs / "companion").iterdir())
    # One dataset per acquisition: the companion set and the ICS pair are one each.
    assert {
        main: sorted(Path(f["path"]).name for f in d["files"]) for main, d in by_main.items()
    } == {
        make_demo_data.PLATE: [make_demo_data.PLATE],
        make_demo_data.SERIES: [make_demo_data.SERIES],
        "companion/embryo.companion.ome": companion,
        "ics/chromosomes.ics": ["chromosomes.ics", "chromosomes.ids"],
        "imagej/zstack.tif": ["zstack.tif"],
    }
    assert len(companion) == 4
    assert (out / "failed.tsv").read_text(encoding="utf-8").splitlines()[1:] == []
    rows = (out / "inventory.tsv").read_text(encoding="utf-8").splitlines()[1:]
    assert len(rows) == sum(1 for p in inputs.rglob("*") if p.is_file()) == 9

    stores = {}
    for main, d in by_main.items():
        name = d["name"]
        store = out / name / f"{name}.ome.zarr"
        assert f"  {name}/{name}.ome.zarr/zarr.json" in manifest, main
        assert (out / name / "qc.json").is_file() and (out / name / "metadata.json").is_file()
        stores[main] = zarr.open_group(store, mode="r")
    plate = dict(stores[make_demo_data.PLATE].attrs)["ome"]["plate"]
    assert [w["path"] for w in plate["wells"]] == ["A/1", "A/2", "B/1", "B/2"]
    assert dict(stores[make_demo_data.SERIES]["OME"].attrs)["ome"]["series"] == ["0", "1", "2"]
    assert stores["companion/embryo.companion.ome"]["0"].shape == (1, 2, 3, 96, 128)
    assert stores["ics/chromosomes.ics"]["0"].shape == (1, 1, 5, 96, 96)
    assert stores["imagej/zstack.tif"]["0"].shape == (1, 2, 7, 128, 128)
