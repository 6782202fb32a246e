"""The stores open in the viewers people use: napari and vizarr.

napari runs with napari-ome-zarr (headless under Xvfb), vizarr in headless Chromium, served
from a loopback HTTP server.

Screenshots are kept in ``test-artifacts/napari/`` and ``test-artifacts/vizarr/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from viewers.serve import serve

pytestmark = [pytest.mark.workflow, pytest.mark.java]

ARTIFACTS = REPO / "test-artifacts"
VIEWERS = REPO / ".cache" / "viewers"
HERE = Path(__file__).resolve().parent / "viewers"
#: Image paths opened in each store: every series of the multi-series file, one plate field.
IMAGES = {
    "toxo": [("", 0)],
    "scenes": [("0", 0), ("1", 1), ("2", 2)],
    "plate": [("D/6/0", 0), ("D/7/0", 1)],
}


def _record(out: Path, name: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((out / name / "metadata.json").read_text("utf-8"))
    return record


def _qc(out: Path, name: str) -> dict[str, Any]:
    qc: dict[str, Any] = json.loads((out / name / "qc.json").read_text("utf-8"))
    return qc


@pytest.fixture(scope="module")
def napari_views(target_runs: dict[str, Path]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Return what napari shows for every image and plate root of both runs.

    All of them are opened in one napari session under Xvfb.
    """
    xvfb = shutil.which("xvfb-run")
    assert xvfb, "xvfb-run is not installed (make test installs Debian's xvfb)"
    shots = ARTIFACTS / "napari"
    shots.mkdir(parents=True, exist_ok=True)
    jobs = {}
    for version, out in target_runs.items():
        for name, images in IMAGES.items():
            for path, _ in [*images, ("", -1)] if name == "plate" else images:
                store = out / name / f"{name}.ome.zarr" / path
                label = f"{version}-{name}-{path.replace('/', '') or 'root'}"
                jobs[(version, name, path)] = f"{store}={shots / label}.png"
    report = shots / "views.json"
    proc = subprocess.run(
        [
            xvfb,
            "-a",
            "-s",
            "-screen 0 1280x1024x24",
            sys.executable,
            str(HERE / "napari_shot.py"),
            str(report),
            *jobs.values(),
        ],
        env={**os.environ, "QT_QPA_PLATFORM": "xcb"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    views = json.loads(report.read_text(encoding="utf-8"))
    return dict(zip(jobs, views, strict=True))


@pytest.mark.gui
@pytest.mark.parametrize("version", ["0.4", "0.5"])
@pytest.mark.parametrize("name", list(IMAGES))
def test_napari_shows_each_image_as_its_metadata_says(
    target_runs: dict[str, Path],
    napari_views: dict[tuple[str, str, str], dict[str, Any]],
    version: str,
    name: str,
) -> None:
    record = _record(target_runs[version], name)
    qc = _qc(target_runs[version], name)
    for path, series in IMAGES[name]:
        view = napari_views[(version, name, path)]
        meta = record["series"][series]
        size_t, size_c, size_z, size_y, size_x = (meta[f"size_{k}"]["value"] for k in "tczyx")
        # One layer per channel, named "<image>: <channel>" from the metadata record.
        names = [
            f"{meta['name']['value']}: {ch['name']['value'] or f'Channel {k}'}"
            for k, ch in enumerate(meta["channels"])
        ]
        assert [layer["name"] for layer in view["layers"]] == names
        scale = [
            meta["time_increment_s"]["value"] or 1.0,
            meta["physical_size_z_um"]["value"] or 1.0,
            meta["physical_size_y_um"]["value"],
            meta["physical_size_x_um"]["value"],
        ]
        channels = qc["series"][series]["channels"]
        assert len(channels) == size_c
        for layer, channel in zip(view["layers"], channels, strict=True):
            assert layer["shape"] == [size_t, size_z, size_y, size_x]
            assert layer["scale"] == pytest.approx(scale, rel=1e-6)
            # Contrast limits are the measured data range of the channel.
            assert layer["contrast_limits"] == [channel["min"], channel["max"]]
            assert layer["visible"]
        # Not blank: the canvas shows structure, not one flat colour.
        assert view["screenshot_distinct"] > 20, view
        assert view["screenshot_std"] > 2.0, view


@pytest.mark.gui
@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_napari_shows_the_whole_plate(
    napari_views: dict[tuple[str, str, str], dict[str, Any]], version: str
) -> None:
    view = napari_views[(version, "plate", "")]
    # napari-ome-zarr names the plate layer after its first field.
    assert [layer["name"] for layer in view["layers"]] == ["D6: AF488"]
    # The plate root is the two fields side by side, tiled on the 8 x 12 plate grid.
    assert view["layers"][0]["shape"][-2:] == [8 * 440, 12 * 544]
    assert view["screenshot_distinct"] > 5, view


def _non_blank(shot: Path) -> tuple[float, int]:
    """Return the share of non-white pixels right of vizarr's control panel.

    Also return the number of their distinct grey values.
    """
    grey = np.asarray(Image.open(shot).convert("L"))[:, 240:]
    content = grey[grey < 250]
    return content.size / grey.size, len(np.unique(content))


@pytest.mark.browser
def test_vizarr_renders_every_store_without_errors(target_runs: dict[str, Path]) -> None:
    app = VIEWERS / "vizarr" / "static"
    modules = VIEWERS / "node_modules"
    assert (app / "index.js").is_file(), f"vizarr missing in {app} (make test installs it)"
    assert (modules / "puppeteer-core").is_dir(), "puppeteer-core missing (make test installs it)"
    shots = ARTIFACTS / "vizarr"
    shots.mkdir(parents=True, exist_ok=True)
    data = target_runs["0.4"].parent
    pages = {}
    for version, out in target_runs.items():
        # At a bioformats2raw root vizarr finds no multiscales: open each series.
        for store in ("toxo", "scenes/2", "plate"):
            name, _, series = store.partition("/")
            rel = (out / name / f"{name}.ome.zarr" / series).relative_to(data)
            pages[f"{version}-{store.replace('/', '')}"] = rel.as_posix()
    # A bioformats2raw root, to show that an error page is told from a rendered image.
    root = target_runs["0.5"] / "scenes" / "scenes.ome.zarr"
    pages["0.5-scenes-root"] = root.relative_to(data).as_posix()
    with serve(app, data) as base:
        proc = subprocess.run(
            ["node", str(HERE / "vizarr_shot.mjs"), str(modules)]
            + [f"{base}/view/{rel}={shots / label}.png" for label, rel in pages.items()],
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    assert len(results) == len(pages)
    by_label = dict(zip(pages, results, strict=True))
    error_page = by_label.pop("0.5-scenes-root")
    assert not error_page["canvas"]
    assert error_page["text"] == (
        'Error: server replied with "Group is missing multiscales specification." '
        "when loading the resource"
    )
    for label, result in by_label.items():
        assert result["canvas"], label
        assert result["blocked"] == [], label
        assert result["page_errors"] == [], label
        # zarrita probes for Zarr v2 and v3 metadata; the missing keys answer 404, which
        # Chromium logs. Any other console error fails.
        others = [
            e
            for e in result["console_errors"]
            if not (
                "status of 404" in e["text"]
                and e["url"].rsplit("/", 1)[-1] in {".zattrs", ".zarray", ".zgroup", "zarr.json"}
            )
        ]
        assert others == [], label
        text = result["text"]
        assert "rror" not in text and "missing" not in text, (label, text)
        share, distinct = _non_blank(Path(result["shot"]))
        assert share > 0.01 and distinct > 20, (label, share, distinct)
    # The channel names of the omero block are in vizarr's layer controls.
    assert "Channel 0\nChannel 1" in by_label["0.5-toxo"]["text"]
    assert "DAPI\nEGFP" in by_label["0.4-scenes2"]["text"]
    assert by_label["0.5-plate"]["text"].startswith("Plate:0")
