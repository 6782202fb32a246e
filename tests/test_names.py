"""Names and paths are never trusted: safe dataset names, companions, sheets, hostile paths."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from bioingest.errors import IngestError
from bioingest.inventory import discover, read_sheet, safe_name
from bioingest.omexml import parse
from conftest import REPO, run_workflow


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cells", "cells"),
        ("Zellkern ü µm", "Zellkern_u_m"),
        ("$(touch PWNED)", "touch_PWNED"),
        ("a'b\"c`d", "a_b_c_d"),
        (";rm -rf x;", "rm_-rf_x"),
        ("../../etc/passwd", "etc_passwd"),
        ("...", "dataset"),
        ("日本語", "dataset"),
        ("CH=1_16bit", "CH_1_16bit"),
    ],
)
def test_safe_name(text: str, expected: str) -> None:
    assert safe_name(text) == expected


def _touch(folder: Path, *names: str) -> None:
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def _sheet(folder: Path, rows: list[str]) -> Path:
    sheet = folder / "samples.tsv"
    sheet.write_text("dataset\tpath\n" + "".join(r + "\n" for r in rows), encoding="utf-8")
    return sheet


def test_sheet_ok(tmp_path: Path) -> None:
    _touch(tmp_path, "img/a.ics", "img/a.ids", "b.czi")
    sheet = _sheet(tmp_path, ["first\timg/a.ics", f"second\t{tmp_path / 'b.czi'}"])
    rows = read_sheet(sheet)
    assert [(name, main.relative_to(tmp_path).as_posix()) for name, main, _ in rows] == [
        ("first", "img/a.ics"),
        ("second", "b.czi"),
    ]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["x\ta.czi", "x\ta.czi"], "duplicate dataset name 'x' (lines 2 and 3)"),
        (["X\ta.czi", "x\ta.czi"], "duplicate dataset name 'x' (lines 2 and 3)"),
        (["../escape\ta.czi"], "line 2: '../escape' does not match"),
        (["a/b\ta.czi"], "line 2: 'a/b' does not match"),
        ([".hidden\ta.czi"], "line 2: '.hidden' does not match"),
        (["\ta.czi"], "line 2: 'dataset' is a required property"),
        (["ok\tmissing.czi"], "line 2: file not found: "),
    ],
)
def test_sheet_errors(tmp_path: Path, rows: list[str], message: str) -> None:
    _touch(tmp_path, "a.czi")
    sheet = _sheet(tmp_path, rows)
    with pytest.raises(IngestError) as info:
        read_sheet(sheet)
    text = str(info.value)
    assert text.startswith(f"{sheet}: ")
    assert message in text
    assert "\n" not in text


@pytest.mark.workflow
def test_duplicate_in_sheet_stops_before_any_job(tmp_path: Path) -> None:
    _touch(tmp_path, "a.czi")
    sheet = _sheet(tmp_path, ["x\ta.czi", "x\ta.czi"])
    out = tmp_path / "out"
    proc = run_workflow(tmp_path / "w", {"samples": sheet, "output_dir": out}, check=False)
    assert proc.returncode != 0
    assert f"{sheet}: duplicate dataset name 'x' (lines 2 and 3)" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("ngff_versoin=0.5", "Additional properties are not allowed ('ngff_versoin'"),
        ("ngff_version=0.3", "ngff_version"),
        ("tile_size=0", "tile_size"),
        ("reader=magic", "reader"),
    ],
)
@pytest.mark.workflow
def test_config_validated_before_any_job(tmp_path: Path, setting: str, message: str) -> None:
    _touch(tmp_path / "in", "a.czi")
    out = tmp_path / "out"
    key, value = setting.split("=")
    proc = run_workflow(
        tmp_path / "w", {"input_dir": tmp_path / "in", "output_dir": out, key: value}, check=False
    )
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not out.exists()


HOSTILE = [
    "with space.tif",
    "Zellkern ü µm.tif",
    "quote's.tif",
    'double"quote.tif',
    "$(touch PWNED).tif",
    "`touch PWNED2`.tif",
    ";touch PWNED3;.tif",
]


@pytest.mark.workflow
@pytest.mark.java
def test_hostile_paths_end_to_end(tmp_path: Path) -> None:
    inputs = tmp_path / "in $(touch PWNED4) dir"
    inputs.mkdir()
    rng = np.random.default_rng(3)
    data = {}
    for i, name in enumerate(HOSTILE):
        data[name] = rng.integers(0, 255, (20 + i, 30), dtype=np.uint8)
        tifffile.imwrite(inputs / name, data[name])
    out = tmp_path / "out dir ' x"
    run_workflow(tmp_path / "work dir", {"input_dir": inputs, "output_dir": out})
    names = {d.main.name: d.name for d in discover(inputs)}
    assert sorted(names.values()) == sorted(
        [
            "with_space",
            "Zellkern_u_m",
            "quote_s",
            "double_quote",
            "touch_PWNED",
            "touch_PWNED2",
            "touch_PWNED3",
        ]
    )
    for source, name in names.items():
        level0 = zarr.open_group(out / name / f"{name}.ome.zarr", mode="r")["0"][:]
        np.testing.assert_array_equal(level0.squeeze(), data[source])
    for folder in (tmp_path, Path.cwd(), REPO, tmp_path / "work dir", out):
        assert not list(folder.glob("PWNED*")), folder
    shutil.rmtree(out)


def test_xml_external_entities_refused(tmp_path: Path) -> None:
    import defusedxml

    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET", encoding="utf-8")
    xml = (
        f'<!DOCTYPE OME [<!ENTITY e SYSTEM "{secret.as_uri()}">]>'
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
        '<Image ID="Image:0" Name="&e;"><Pixels SizeX="1" SizeY="1" SizeZ="1" SizeC="1" '
        'SizeT="1" Type="uint8" DimensionOrder="XYZCT" ID="Pixels:0"/></Image></OME>'
    )
    with pytest.raises(defusedxml.DefusedXmlException):
        parse(xml)
    bomb = '<!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><OME>&b;</OME>'
    with pytest.raises(defusedxml.DefusedXmlException):
        parse(bomb)
