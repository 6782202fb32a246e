"""The metadata stage: exact values, units, origins, sanity flags, completeness, omero block."""

from __future__ import annotations

import json
import math
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import zarr

from bioingest.errors import IngestError
from bioingest.java import jimport
from bioingest.metadata import build_record
from bioingest.study import load_study
from bioingest.tables import CHANNEL_COLUMNS, IMAGE_COLUMNS
from conftest import BIN, REAL, REPO, manifest_rows, real_datasets, run_workflow

MAIN_ROWS = [r for r in manifest_rows() if not r["bioformats_format"].startswith("(companion")]


@cache
def mains() -> dict[Path, str]:
    """Map the main file of every real dataset to the dataset's name."""
    return {d.main: d.name for d in real_datasets()}


def _um(length: Any) -> float | None:
    if length is None:
        return None
    value = length.value(jimport("ome.units.UNITS").MICROMETER)
    return None if value is None else float(value.doubleValue())


def _samples(meta: Any, series: int, channel: int) -> int:
    samples = meta.getChannelSamplesPerPixel(series, channel)
    return 1 if samples is None else int(samples.getValue())


def _norm(value: Any) -> float | str:
    """Numbers compare as numbers (a TSV column with gaps reads back as float)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _record(out: Path, name: str) -> dict[str, Any]:
    return json.loads((out / name / "metadata.json").read_text(encoding="utf-8"))


@pytest.mark.workflow
@pytest.mark.java
@pytest.mark.slow
@pytest.mark.parametrize("row", MAIN_ROWS, ids=[r["file"] for r in MAIN_ROWS])
def test_values_equal_bioformats(row: dict[str, str], real_run: Path, bioformats: Any) -> None:
    """Sizes, pixel type, physical sizes and channel names equal Bio-Formats' own getters."""
    path = REAL / row["file"]
    if path not in mains():
        # Merged into another dataset (DICOM folder); test_real_samples checks ownership.
        assert any(path in d.files for d in real_datasets())
        return
    record = _record(real_run, mains()[path])
    meta = bioformats(path).metadata
    assert len(record["series"]) == int(meta.getImageCount())
    for s, series in enumerate(record["series"]):
        v = {k: series[k]["value"] for k in series if isinstance(series[k], dict)}
        assert v["size_x"] == int(meta.getPixelsSizeX(s).getValue())
        assert v["size_y"] == int(meta.getPixelsSizeY(s).getValue())
        assert v["size_z"] == int(meta.getPixelsSizeZ(s).getValue())
        assert v["size_c"] == int(meta.getPixelsSizeC(s).getValue())
        assert v["size_t"] == int(meta.getPixelsSizeT(s).getValue())
        assert v["pixel_type"] == str(meta.getPixelsType(s).getValue())
        for axis in "XYZ":
            expected = _um(getattr(meta, f"getPixelsPhysicalSize{axis}")(s))
            got = v[f"physical_size_{axis.lower()}_um"]
            if expected is None:
                assert got is None, f"series {s} {axis}: Bio-Formats has none, we have {got}"
            else:
                assert got == pytest.approx(expected, rel=1e-9)

        # An empty name is normalised to unknown, like every other empty value.
        def norm(names: list[Any]) -> list[str | None]:
            return [str(n) if n is not None and str(n) else None for n in names]

        per_channel = [meta.getChannelName(s, c) for c in range(meta.getChannelCount(s))]
        # Or one channel per sample: an RGB channel (SamplesPerPixel 3) as three channels,
        # as the tifffile reader describes colour TIFFs.
        per_sample = [
            meta.getChannelName(s, c)
            for c in range(meta.getChannelCount(s))
            for _ in range(_samples(meta, s, c))
        ]
        got = [c["name"]["value"] for c in series["channels"]]
        assert got in (norm(per_channel), norm(per_sample))
        for field in series.values():
            if isinstance(field, dict):
                assert field["origin"] in ("file", "inferred", "missing")
                assert (field["value"] is None) == (field["origin"] == "missing")


@pytest.mark.workflow
@pytest.mark.java
@pytest.mark.slow
def test_tables(real_run: Path) -> None:
    images = pd.read_csv(real_run / "summary" / "images.tsv", sep="\t")
    channels = pd.read_csv(real_run / "summary" / "channels.tsv", sep="\t")
    assert list(images.columns) == IMAGE_COLUMNS
    assert list(channels.columns) == CHANNEL_COLUMNS
    records = {d.name: _record(real_run, d.name) for d in real_datasets()}
    assert len(images) == sum(len(r["series"]) for r in records.values())
    assert len(channels) == sum(len(s["channels"]) for r in records.values() for s in r["series"])
    for stem, tsv in (("images", images), ("channels", channels)):
        parquet = pd.read_parquet(real_run / "summary" / f"{stem}.parquet")
        assert list(parquet.columns) == list(tsv.columns)
        for col in tsv.columns:
            assert tsv[col].isna().tolist() == parquet[col].isna().tolist(), col
            known = tsv[col].notna()
            assert [_norm(v) for v in tsv[col][known]] == [_norm(v) for v in parquet[col][known]]
    toxo = images[images.dataset == "dv_toxo"].iloc[0]
    assert (toxo.size_x, toxo.size_z, toxo.size_c, toxo.pixel_type) == (128, 17, 2, "uint16")
    assert toxo.physical_size_x_um == pytest.approx(0.13262, rel=1e-4)
    assert toxo.objective_magnification == 100.0
    assert toxo.objective_na == 1.35
    assert toxo.immersion == "Oil"
    # Unknown stays empty, never a made-up value.
    assert math.isnan(toxo.time_increment_s)
    lsm = images[images.dataset == "lsm_test"].iloc[0]
    assert lsm.physical_size_z_um == pytest.approx(1e-13)
    cell = channels[channels.dataset == "czi_CellDivision_T3_Z5_CH2_X240_Y170"]
    assert cell.name.tolist() == ["LED555", "LED470"]
    assert cell.excitation_nm.tolist() == [553.0, 493.0]
    assert cell.emission_nm.tolist() == [568.0, 517.0]
    assert cell.fluor.tolist() == ["Alexa Fluor 555", "Alexa Fluor 488"]
    assert cell.color.tolist() == ["FF7E00", "00FF33"]


@pytest.mark.parametrize(
    ("dataset", "flag"),
    [
        (
            "hcs-tiff_AS_09125_050116030001_D03f00d0",
            "physical_size_implausible",
        ),  # 72 dpi: 352.8 µm
        ("tiff_1-162hrh2ax2", "physical_size_implausible"),  # 1e6 µm
        ("lsm_test", "physical_size_implausible"),  # LSM with a 1e-13 µm Z step
        ("dv_toxo", "exposure_implausible"),  # 1.2e-38 s
        ("czi_newCZI_compressed", "physical_size_missing"),
        ("tiff_5channel", "channel_names_missing"),
        ("ics_cermet", "acquisition_date_missing"),
    ],
)
@pytest.mark.workflow
@pytest.mark.java
@pytest.mark.slow
def test_sanity_flags(real_run: Path, dataset: str, flag: str) -> None:
    assert flag in _record(real_run, dataset)["series"][0]["flags"]


@pytest.mark.workflow
@pytest.mark.java
@pytest.mark.slow
def test_clean_series_has_no_size_flags(real_run: Path) -> None:
    flags = _record(real_run, "czi_CellDivision_T3_Z5_CH2_X240_Y170")["series"][0]["flags"]
    assert flags == []


@pytest.mark.workflow
@pytest.mark.java
@pytest.mark.slow
def test_inferred_time_increment(real_run: Path) -> None:
    """No TimeIncrement in the CZI: the step is inferred from plane DeltaT stamps."""
    series = _record(real_run, "czi_CellDivision_T3_Z5_CH2_X240_Y170")["series"][0]
    assert series["time_increment_s"]["origin"] == "inferred"
    assert series["time_increment_s"]["value"] == pytest.approx(60.0455, rel=1e-5)


@pytest.mark.workflow
@pytest.mark.java
@pytest.mark.slow
def test_omero_matches_record(real_run: Path) -> None:
    name = "czi_CellDivision_T3_Z5_CH2_X240_Y170"
    record = _record(real_run, name)
    root = zarr.open_group(real_run / name / f"{name}.ome.zarr", mode="r")
    series = dict(root["OME"].attrs)["ome"]["series"]
    image = root[series[0]]
    omero = dict(image.attrs)["ome"]["omero"]
    channels = record["series"][0]["channels"]
    assert [c["label"] for c in omero["channels"]] == [c["name"]["value"] for c in channels]
    assert [c["color"] for c in omero["channels"]] == [c["color"]["value"] for c in channels]
    level0 = image["0"][:]
    for c, ch in enumerate(omero["channels"]):
        assert ch["window"]["start"] == float(level0[:, c].min())
        assert ch["window"]["end"] == float(level0[:, c].max())
        assert (ch["window"]["min"], ch["window"]["max"]) == (0.0, 65535.0)
    # Colour pixels (RGB) display as red, green and blue, whichever reader read them.
    for name in ("tiff_Fluorescence_RGB", "svs_small", "nikon-tiff_NikonTIF"):
        rgb = zarr.open_group(real_run / name / f"{name}.ome.zarr", mode="r")
        assert [c["color"] for c in dict(rgb.attrs)["ome"]["omero"]["channels"]] == [
            "FF0000",
            "00FF00",
            "0000FF",
        ]


STUDY = REPO / "config" / "study.yaml"


@pytest.mark.workflow
@pytest.mark.java
@pytest.mark.slow
def test_completeness_and_study(real_run: Path) -> None:
    xml = (
        real_run
        / "czi_CellDivision_T3_Z5_CH2_X240_Y170"
        / "czi_CellDivision_T3_Z5_CH2_X240_Y170.ome.xml"
    ).read_text(encoding="utf-8")
    bare = build_record(xml, dataset="x")["completeness"]
    assert bare["structurally_valid"] is True
    # Tier 1 applicable: 9 image fields (Z and T apply) + 2 channels x 4 + 3 study = 20;
    # missing: instrument and the 3 study fields -> 16/20.
    assert (bare["nbo_tier"], bare["tier1_pct"]) == ("below tier 1", 80.0)
    assert sorted(bare["tier1_missing"]) == [
        "series 0: instrument",
        "study: imaging_method",
        "study: licence",
        "study: organism",
    ]
    with_study = build_record(xml, dataset="x", study=load_study(STUDY))
    score = with_study["completeness"]
    assert score["tier1_pct"] == 95.0
    assert score["tier2_pct"] > bare["tier2_pct"]
    assert with_study["study"]["organism"] == {
        "value": {"name": "Homo sapiens", "id": "NCBITaxon:9606"},
        "origin": "user",
    }
    assert with_study["study"]["licence"] == {"value": "CC-BY-4.0", "origin": "user"}


@pytest.mark.workflow
@pytest.mark.java
def test_study_in_workflow(tmp_path: Path, real_dir: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "toxo.dv").symlink_to(real_dir / "dv" / "toxo.dv")
    out = tmp_path / "out"
    run_workflow(tmp_path / "w", {"input_dir": tmp_path / "in", "output_dir": out, "study": STUDY})
    record = _record(out, "toxo")
    assert record["study"]["imaging_method"]["value"]["id"] == "FBbi:00000251"
    assert record["study"]["authors"]["origin"] == "user"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("organism: {name: mouse, id: '10090'}\n", "organism/id: '10090' does not match"),
        ("licence: ''\n", "licence: '' should be non-empty"),
        ("colour: blue\n", "Additional properties are not allowed ('colour'"),
        ("imaging_method: {name: x, id: FBbi:123}\n", "imaging_method/id"),
    ],
)
def test_study_validation(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(IngestError) as info:
        load_study(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.workflow
@pytest.mark.java
@pytest.mark.slow
def test_verb_accepts_xml_zarr_and_source(real_run: Path, real_dir: Path) -> None:
    """`bioingest metadata` gives the same series from OME-XML, OME-Zarr and the source."""
    name = "czi_S3_1Pos_2Mosaic_T2Z3_CH2_sm"
    inputs = [
        real_run / name / f"{name}.ome.xml",
        real_run / name / f"{name}.ome.zarr",
        real_dir / "czi" / "S3_1Pos_2Mosaic_T2Z3_CH2_sm.czi",
    ]
    results = []
    for source in inputs:
        proc = subprocess.run(
            [str(BIN / "bioingest"), "metadata", str(source), "--dataset", name],
            capture_output=True,
            text=True,
            check=True,
        )
        record = json.loads(proc.stdout)
        assert record["dataset"] == name
        results.append(record["series"])
    assert len(results[0]) == 3
    assert results[0] == results[1] == results[2]
