"""The published JSON Schemas of ``metadata.json`` and ``qc.json`` hold for real outputs."""

from __future__ import annotations

import copy
import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bioingest.checksum import store_pixel_hashes
from bioingest.convert import convert
from bioingest.metadata import build_record
from bioingest.outcomes import failure_record, recorded_failure
from bioingest.pyramid import StoreOptions, build
from bioingest.qc import Thresholds, run_qc
from bioingest.records import (
    is_failure,
    metadata_json,
    qc_json,
    read_metadata,
    read_qc,
    read_source,
)
from bioingest.study import load_study
from conftest import REAL, REPO

# Builds records from real files, the CZI through Bio-Formats.
pytestmark = pytest.mark.java

#: Real files of different kinds: a Z/T stack (tifffile), RGB, five channels, and a
#: Z/C/T CZI with instrument metadata (Bio-Formats).
SAMPLES = {
    "stack": ("ome-tiff/18x24y5z5t2c8b-text.ome-v-Match.ome.tiff", "tifffile"),
    "rgb": ("tiff/Fluorescence_RGB.tif", "tifffile"),
    "five": ("tiff/5channel.tif", "tifffile"),
    "czi": ("czi/CellDivision_T3_Z5_CH2_X240_Y170.czi", "auto"),
}


def schema(name: str) -> Any:
    text = (files("bioingest") / "schemas" / f"{name}.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema(name))


def _outputs(source: Path, reader: str, folder: Path, *, study: bool) -> tuple[Path, Path]:
    name = folder.name
    inter, xml = folder / "inter.zarr", folder / f"{name}.ome.xml"
    store, source_json = folder / f"{name}.ome.zarr", folder / f"{name}.source.json"
    description = convert(
        source,
        zarr_path=inter,
        ome_xml_path=xml,
        source_json_path=source_json,
        reader=reader,  # type: ignore[arg-type]
        single_file=True,
    )
    assert not is_failure(description)
    build(inter, xml, store, name=name, opts=StoreOptions(chunk_size=64))
    record = build_record(
        xml.read_text(encoding="utf-8"),
        dataset=name,
        source_file=source.name,
        reader_format=description["format"],
        study=load_study(REPO / "config" / "study.yaml") if study else None,
        pixel_hashes=store_pixel_hashes(store),
    )
    record_path = folder / "metadata.json"
    record_path.write_text(metadata_json(record), encoding="utf-8")
    qc_path = folder / "qc.json"
    run_qc(
        inter,
        record_path,
        store,
        out=qc_path,
        thumbnails=folder / "thumbnails",
        thresholds=Thresholds(),
    )
    return record_path, qc_path


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    base = tmp_path_factory.mktemp("schemas")
    return {
        name: _outputs(REAL / rel, reader, base / name, study=name == "czi")
        for name, (rel, reader) in SAMPLES.items()
    }


@pytest.fixture(scope="module")
def failed(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """``metadata.json`` and ``qc.json`` text of a file that could not be read."""
    base = tmp_path_factory.mktemp("failed")
    source = base / "text.tif"
    source.write_text("not an image\n", encoding="utf-8")
    source_json = base / "text.source.json"
    convert(source, source_json_path=source_json, reader="tifffile", record_failure=True)
    failure = recorded_failure(source_json)
    assert failure is not None
    assert is_failure(read_source(source_json))
    text = failure_record("text", failure)
    return text, text


@pytest.mark.parametrize("name", list(SAMPLES))
def test_metadata_json_matches_schema(outputs: dict[str, tuple[Path, Path]], name: str) -> None:
    record_path, _ = outputs[name]
    record = read_metadata(record_path)
    assert not is_failure(record)
    validator("metadata").validate(record)
    # Reading and writing back gives the same bytes.
    assert metadata_json(record) == record_path.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", list(SAMPLES))
def test_qc_json_matches_schema(outputs: dict[str, tuple[Path, Path]], name: str) -> None:
    _, qc_path = outputs[name]
    report = read_qc(qc_path)
    assert not is_failure(report)
    validator("qc").validate(report)
    assert qc_json(report) == qc_path.read_text(encoding="utf-8")


def test_study_and_instrument_fields_match_schema(outputs: dict[str, tuple[Path, Path]]) -> None:
    """The CZI record carries user study fields and file instrument fields."""
    record = json.loads(outputs["czi"][0].read_text(encoding="utf-8"))
    assert record["study"]["licence"]["origin"] == "user"
    series = record["series"][0]
    assert series["physical_size_z_um"] == {"value": 0.32, "origin": "file"}
    assert series["objective_na"] == {"value": 1.2, "origin": "file"}


def test_failure_records_match_schemas(failed: tuple[str, str]) -> None:
    metadata_text, qc_text = failed
    validator("metadata").validate(json.loads(metadata_text))
    validator("qc").validate(json.loads(qc_text))


def _broken_metadata(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Return copies of ``record``, each broken in one way the schema must catch."""
    out = []
    for change in (
        lambda r: r.pop("completeness"),
        lambda r: r["series"][0].pop("flags"),
        lambda r: r["series"][0]["size_x"].update(value="512"),
        lambda r: r["series"][0]["size_x"].update(origin="guessed"),
        lambda r: r["series"][0]["name"].update(value=None, origin="file"),
        lambda r: r["series"][0]["flags"].append("looks_odd"),
        lambda r: r["completeness"].update(nbo_tier="tier 3"),
        lambda r: r.update(extra=1),
    ):
        broken = copy.deepcopy(record)
        change(broken)
        out.append(broken)
    return out


def _broken_qc(report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for change in (
        lambda r: r.update(status="ok"),
        lambda r: r["series"][0]["checks"].update(fidelity="n/a"),
        lambda r: r["series"][0]["channels"][0]["checks"].update(saturation="maybe"),
        lambda r: r["series"][0]["channels"][0]["checks"].pop("focus"),
        lambda r: r["series"][0]["channels"][0].update(zero_fraction=1.5),
        lambda r: r["series"][0].pop("planes"),
        lambda r: r["thresholds"].pop("zero_warn"),
        lambda r: r.update(failure={"step": "convert", "reason": "x"}),
    ):
        broken = copy.deepcopy(report)
        change(broken)
        out.append(broken)
    return out


def test_broken_records_fail_validation(
    outputs: dict[str, tuple[Path, Path]], failed: tuple[str, str]
) -> None:
    record_path, qc_path = outputs["stack"]
    record = json.loads(record_path.read_text(encoding="utf-8"))
    report = json.loads(qc_path.read_text(encoding="utf-8"))
    meta_v, qc_v = validator("metadata"), validator("qc")
    for broken in _broken_metadata(record):
        assert not meta_v.is_valid(broken), broken
    for broken in _broken_qc(report):
        assert not qc_v.is_valid(broken)
    bad_failure = json.loads(failed[0])
    bad_failure["failure"].pop("reason")
    assert not meta_v.is_valid(bad_failure)
    assert not qc_v.is_valid(bad_failure)
    # Neither schema accepts the other's record.
    assert not meta_v.is_valid(report)
    assert not qc_v.is_valid(record)
