"""convert, pyramid, metadata and QC on in-memory arrays, without a file, a JVM or Snakemake.

The whole chain of stages runs in a few seconds (``make test-fast``).

The source is :class:`array_reader.ArrayReader`, given to ``convert`` as its reader.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import zarr

from array_reader import ArrayReader, Image, Plate
from bioingest import pyramid
from bioingest.arrays import Method
from bioingest.checksum import store_pixel_hashes
from bioingest.convert import convert
from bioingest.levels import RANGE_ATTR, downsample, level_shapes
from bioingest.metadata import build_record
from bioingest.pixelhash import pixel_hash
from bioingest.pyramid import StoreOptions
from bioingest.qc import Thresholds, run_qc
from bioingest.records import ATTR
from bioingest.schemas import load_schema
from bioingest.tables import CHANNEL_COLUMNS, QC_COLUMNS, qc_rows, write_tables
from bioingest.targets import NgffVersion

RNG = np.random.default_rng(14)
#: Small chunks, so images of a few hundred pixels get several pyramid levels.
OPTS = StoreOptions(chunk_size=64, shard_chunks=2, min_size=16)


@dataclass
class Ingested:
    """What the stages wrote for one in-memory dataset."""

    reader: ArrayReader
    description: dict[str, Any]
    intermediate: Path
    store: Path
    layout: str
    record: dict[str, Any]
    qc: dict[str, Any]

    def level(self, path: str, k: int) -> np.ndarray:
        root = zarr.open_group(self.store, mode="r")
        return np.asarray(root[f"{path}/{k}" if path else str(k)][...])


def ingest(
    folder: Path,
    name: str,
    images: list[Image],
    *,
    plate: Plate | None = None,
    opts: StoreOptions = OPTS,
    tile: int = 48,
) -> Ingested:
    """Run convert, pyramid, metadata and QC as the workflow's jobs do, on arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    reader = ArrayReader(folder / f"{name}.mem", images, plate)
    intermediate, xml = folder / f"{name}.zarr", folder / f"{name}.ome.xml"
    description = convert(
        reader.path,
        zarr_path=intermediate,
        ome_xml_path=xml,
        source_json_path=folder / f"{name}.source.json",
        reader=reader,
        tile_size=tile,
        opts=opts,
    )
    store = folder / f"{name}.ome.zarr"
    layout = pyramid.build(intermediate, xml, store, name=name, opts=opts)
    record = build_record(
        xml.read_text(encoding="utf-8"),
        dataset=name,
        source_file=reader.path.name,
        reader_format=reader.format_name,
        pixel_hashes=store_pixel_hashes(store),
    )
    record_path = folder / "metadata.json"
    record_path.write_text(json.dumps(record), encoding="utf-8")
    qc = run_qc(
        intermediate,
        record_path,
        store,
        out=folder / "qc.json",
        thumbnails=folder / "thumbnails",
        thresholds=Thresholds(),
        page=folder / "qc.html",
    )
    # Both records are deliverables: they must match their published schemas.
    jsonschema.validate(record, load_schema("metadata.schema.json"))
    jsonschema.validate(json.loads((folder / "qc.json").read_text()), load_schema("qc.schema.json"))
    return Ingested(reader, description, intermediate, store, layout, record, qc)


def halve(plane: np.ndarray) -> np.ndarray:
    """Halve ``plane`` as the ``mean`` pyramid step does, written out.

    Pad odd edges by repetition, average each 2x2 block in float64, and round to nearest
    (ties to even) for integers.
    """
    h, w = plane.shape
    padded = np.pad(plane, ((0, h % 2), (0, w % 2)), mode="edge").astype(np.float64)
    mean = padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2).mean(axis=(1, 3))
    return (np.rint(mean) if plane.dtype.kind in "iu" else mean).astype(plane.dtype)


def multiscales(group: zarr.Group) -> dict[str, Any]:
    attrs = dict(group.attrs)
    found: dict[str, Any] = attrs.get("ome", attrs)["multiscales"][0]
    return found


@pytest.mark.parametrize(("version", "zarr_format"), [("0.5", 3), ("0.4", 2)])
def test_pixels_levels_and_scales_of_a_5d_image(
    tmp_path: Path, version: pyramid.NgffVersion, zarr_format: int
) -> None:
    pixels = RNG.integers(0, 4096, (2, 3, 4, 150, 200), dtype=np.uint16)
    image = Image(pixels, name="cells", channels=["DAPI", "GFP", "RFP"], size_um=(0.5, 0.5, 2.0))
    opts = StoreOptions(version=version, chunk_size=64, shard_chunks=2, min_size=16)
    got = ingest(tmp_path, "cells", [image], opts=opts)

    # convert read each plane once and closed the reader: in bands of one chunk row (64,
    # 64 and 22 rows), each read as tiles of 48 columns (3 x 5 per plane).
    assert got.reader.closed
    assert got.reader.tiles_read == 2 * 3 * 4 * 3 * 5
    inter = zarr.open_group(got.intermediate, mode="r")
    np.testing.assert_array_equal(inter["0"][...], pixels)
    assert got.description == inter.attrs[ATTR]
    assert got.description["reader"] == "memory"
    assert got.description["used_files"] == ["cells.mem"]
    assert got.description["series"] == [
        {"index": 0, "shape": [2, 3, 4, 150, 200], "dtype": "uint16", "rgb": False}
    ]

    # The final store: one image at the root, level 0 exactly the arrays.
    assert got.layout == "image"
    root = zarr.open_group(got.store, mode="r")
    assert root.metadata.zarr_format == zarr_format
    levels = [got.level("", k) for k in range(3)]
    np.testing.assert_array_equal(levels[0], pixels)
    assert [lv.shape[3:] for lv in levels] == [(150, 200), (75, 100), (38, 50)]
    assert level_shapes(150, 200, opts) == [(150, 200), (75, 100), (38, 50)]
    assert "3" not in root
    # Each level is the previous one halved (the odd 75 rows padded by repetition).
    for k in (1, 2):
        for t, c, z in np.ndindex(2, 3, 4):
            np.testing.assert_array_equal(levels[k][t, c, z], halve(levels[k - 1][t, c, z]))

    ms = multiscales(root)
    assert [d["path"] for d in ms["datasets"]] == ["0", "1", "2"]
    scales = [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]]
    assert scales == [[1.0, 1.0, 2.0, 0.5 * 2**k, 0.5 * 2**k] for k in range(3)]
    attrs = dict(root.attrs)
    omero = attrs.get("ome", attrs)["omero"]
    assert [ch["label"] for ch in omero["channels"]] == ["DAPI", "GFP", "RFP"]

    # The record's pixel hash is the arrays' own; QC finds the store faithful.
    assert got.record["series"][0]["pixel_sha256"]["value"] == pixel_hash(pixels)
    assert got.qc["series"][0]["checks"]["fidelity"] == "pass"
    assert got.qc["series"][0]["source_pixel_sha256"] == pixel_hash(pixels)


def test_several_series_get_the_bioformats2raw_layout(tmp_path: Path) -> None:
    images = [
        Image(RNG.integers(0, 256, (1, 2, 1, 40, 50), dtype=np.uint8), name="first"),
        Image(RNG.normal(0, 1, (3, 1, 2, 33, 17)).astype(np.float32), name="second"),
        Image(RNG.integers(0, 256, (1, 3, 1, 130, 70), dtype=np.uint8), name="colour", rgb=True),
    ]
    got = ingest(tmp_path, "multi", images)
    assert got.layout == "bioformats2raw"
    root = zarr.open_group(got.store, mode="r")
    assert sorted(root.group_keys()) == ["0", "1", "2", "OME"]
    xml = (tmp_path / "multi.ome.xml").read_text(encoding="utf-8")
    assert (got.store / "OME" / "METADATA.ome.xml").read_text(encoding="utf-8") == xml
    for i, image in enumerate(images):
        np.testing.assert_array_equal(got.level(str(i), 0), image.pixels)
        group = root[str(i)]
        assert isinstance(group, zarr.Group)
        assert multiscales(group)["name"] == image.name
    # Only the 130 x 70 colour image is large enough for a second level.
    assert "1" not in root["0"] and "1" not in root["1"]
    np.testing.assert_array_equal(got.level("2", 1)[0, 2, 0], halve(images[2].pixels[0, 2, 0]))
    assert got.description["series"][2]["rgb"] is True
    assert [s["checks"]["fidelity"] for s in got.qc["series"]] == ["pass"] * 3
    # Colour samples are not judged for saturation or clipping.
    colour = got.qc["series"][2]["channels"]
    assert {ch["checks"]["saturation"] for ch in colour} == {"n/a"}


def test_a_plate_gets_the_ngff_plate_layout(tmp_path: Path) -> None:
    wells = [(0, 0), (0, 1), (1, 0), (1, 1)]
    images = [
        Image(RNG.integers(100 * i, 100 * i + 50, (1, 1, 1, 32, 32), dtype=np.uint16))
        for i in range(len(wells))
    ]
    got = ingest(tmp_path, "plate", images, plate=Plate(2, 2, wells, name="screen"))
    assert got.layout == "plate"
    root = zarr.open_group(got.store, mode="r")
    attrs = dict(root.attrs)
    plate = attrs.get("ome", attrs)["plate"]
    assert [r["name"] for r in plate["rows"]] == ["A", "B"]
    assert [c["name"] for c in plate["columns"]] == ["1", "2"]
    assert [w["path"] for w in plate["wells"]] == ["A/1", "A/2", "B/1", "B/2"]
    for image, path in zip(images, ["A/1/0", "A/2/0", "B/1/0", "B/2/0"], strict=True):
        np.testing.assert_array_equal(got.level(path, 0), image.pixels)
    assert [s["path"] for s in got.qc["series"]] == ["A/1/0", "A/2/0", "B/1/0", "B/2/0"]


def qc_image() -> np.ndarray:
    """Return four channels of a 3-plane 64 x 64 uint16 stack with known faults.

    In channel order: 2 % saturated pixels; one blank plane; every plane blank; and a clean
    channel.
    """
    pixels = RNG.integers(1000, 3000, (1, 4, 3, 64, 64), dtype=np.uint16)
    saturated = pixels[0, 0]
    saturated.flat[RNG.choice(saturated.size, int(0.02 * saturated.size), replace=False)] = 65535
    pixels[0, 1, 1] = 777
    pixels[0, 2] = 5
    return pixels


def test_qc_flags_known_faults(tmp_path: Path) -> None:
    pixels = qc_image()
    labels = ["saturated", "one blank", "all blank", "clean"]
    got = ingest(tmp_path, "faults", [Image(pixels, channels=labels)])
    series = got.qc["series"][0]
    saturated, one_blank, all_blank, clean = series["channels"]
    assert [ch["label"] for ch in series["channels"]] == labels

    assert saturated["saturation_value"] == 65535
    assert saturated["saturated_fraction"] == np.mean(pixels[0, 0] == 65535) == 245 / 12288
    assert saturated["checks"]["saturation"] == "fail"
    assert saturated["max"] == 65535

    assert one_blank["blank_planes"] == [[0, 1]]
    assert one_blank["checks"]["blank_planes"] == "warn"
    assert [p["blank"] for p in series["planes"] if p["c"] == 1] == [False, True, False]

    assert all_blank["checks"]["blank_planes"] == "fail"
    assert all_blank["min"] == all_blank["max"] == 5

    assert clean["checks"]["saturation"] == "pass"
    assert clean["checks"]["blank_planes"] == "pass"
    values = pixels[0, 3]
    assert clean["min"] == values.min() and clean["max"] == values.max()
    assert clean["mean"] == pytest.approx(values.mean(), abs=1e-6)
    assert clean["median"] == np.percentile(values, 50, method="inverted_cdf")

    assert series["checks"]["fidelity"] == "pass"
    assert series["status"] == got.qc["status"] == "fail"
    problems = {row["label"]: row["problems"] for row in qc_rows(got.qc)}
    assert "saturation:fail" in problems["saturated"]
    assert "blank_planes:warn" in problems["one blank"]
    assert "saturation" not in problems["clean"] and "blank" not in problems["clean"]
    assert (tmp_path / "thumbnails" / "series-0.png").is_file()
    assert "faults" in (tmp_path / "qc.html").read_text(encoding="utf-8")


def test_qc_fidelity_fails_when_the_store_differs_from_the_source(tmp_path: Path) -> None:
    pixels = RNG.integers(0, 255, (1, 1, 1, 40, 40), dtype=np.uint8)
    got = ingest(tmp_path, "ok", [Image(pixels)])
    assert got.qc["series"][0]["checks"]["fidelity"] == "pass"
    # One pixel of the final level 0 changed after the source's hash was recorded.
    level0 = zarr.open_array(got.store / "0", mode="r+")
    level0[0, 0, 0, 3, 3] = int(pixels[0, 0, 0, 3, 3]) ^ 1
    qc = run_qc(
        got.intermediate,
        tmp_path / "metadata.json",
        got.store,
        out=tmp_path / "qc2.json",
        thumbnails=tmp_path / "thumbs2",
        thresholds=Thresholds(),
    )
    assert qc["series"][0]["checks"]["fidelity"] == "fail"
    assert (
        qc["series"][0]["reasons"]["fidelity"] == "the final level 0 differs from the pixels read"
    )
    assert qc["status"] == "fail"


def test_convert_reads_only_the_series_asked_for(tmp_path: Path) -> None:
    images = [Image(np.full((1, 1, 1, 8, 8), i, dtype=np.uint8)) for i in range(3)]
    reader = ArrayReader(tmp_path / "three.mem", images)
    description = convert(
        reader.path, zarr_path=tmp_path / "part.zarr", series=(1, 3), reader=reader
    )
    part = zarr.open_group(tmp_path / "part.zarr", mode="r")
    assert sorted(part.array_keys()) == ["1", "2"]
    np.testing.assert_array_equal(part["2"][...], images[2].pixels)
    assert len(description["series"]) == 3
    assert reader.tiles_read == 2


def test_metadata_verb_writes_the_record_the_workflow_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The metadata verb, to a file and to stdout, names the dataset it is given."""
    from bioingest.cli import main

    got = ingest(tmp_path, "multi", [Image(RNG.integers(0, 256, (1, 2, 1, 40, 50), np.uint8))])
    xml, source_json = tmp_path / "multi.ome.xml", tmp_path / "multi.source.json"
    common = [str(xml), "--dataset", "renamed", "--source-json", str(source_json)]
    common += ["--store", str(got.store)]
    assert main(["metadata", *common, "--out", str(tmp_path / "record.json")]) == 0
    written = json.loads((tmp_path / "record.json").read_text(encoding="utf-8"))
    assert main(["metadata", *common]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert written == printed
    assert printed["dataset"] == "renamed"
    assert printed["series"] == got.record["series"]


def test_tables_keep_each_columns_declared_type(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    pixels = RNG.integers(0, 4096, size=(1, 2, 1, 40, 50), dtype=np.uint16)
    got = ingest(tmp_path / "d", "digits", [Image(pixels, channels=["488", 'a\t"b'])])
    out = tmp_path / "summary"
    write_tables([tmp_path / "d" / "metadata.json", tmp_path / "d" / "qc.json"], out)

    channels = (out / "channels.tsv").read_text(encoding="utf-8").splitlines()
    assert channels[0].split("\t") == CHANNEL_COLUMNS
    # Digits stay text; a tab or a quote in a value is quoted, as csv does.
    assert channels[1].split("\t")[:4] == ["digits", "0", "0", "488"]
    assert channels[2].startswith('digits\t0\t1\t"a\t""b"\t')
    schema = pq.read_schema(out / "channels.parquet")
    assert [str(schema.field(c).type) for c in ("series", "name", "excitation_nm")] == [
        "int64",
        "string",
        "double",
    ]
    # A column with no value in this run is still typed.
    assert pq.read_table(out / "channels.parquet").column("excitation_nm").null_count == 2
    images = pq.read_table(out / "images.parquet")
    assert str(images.schema.field("physical_size_x_um").type) == "double"
    assert images.column("size_x").to_pylist() == [50]

    qc = (out / "qc.tsv").read_text(encoding="utf-8").splitlines()
    row = dict(zip(QC_COLUMNS, qc[1].split("\t"), strict=True))
    first = got.qc["series"][0]["channels"][0]
    assert (row["label"], row["min"], row["mean"]) == (
        "488",
        f"{first['min']:.1f}",
        repr(first["mean"]),
    )


def _files(store: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize(
    ("shape", "dtype", "method", "version", "band_rows", "rgb"),
    [
        ((1, 2, 2, 301, 263), np.uint16, "mean", "0.5", None, False),
        ((2, 1, 1, 257, 300), np.int16, "mean", "0.4", 37, False),
        ((1, 1, 3, 200, 199), np.float32, "mean", "0.5", 51, False),
        ((1, 2, 1, 190, 260), np.uint8, "mode", "0.5", 45, False),
        ((1, 1, 1, 260, 190), np.uint32, "nearest", "0.4", None, False),
        ((1, 3, 1, 171, 250), np.uint8, "mean", "0.5", 33, True),
    ],
)
def test_levels_convert_builds_are_the_ones_pyramid_builds(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    shape: tuple[int, ...],
    dtype: Any,
    method: Method,
    version: NgffVersion,
    band_rows: int | None,
    rgb: bool,
) -> None:
    from bioingest import convert as convert_module

    if band_rows is not None:
        # Bands of an odd number of rows: a row waits for its pair in the next band.
        row_bytes = shape[4] * np.dtype(dtype).itemsize * (3 if rgb else 1)
        monkeypatch.setattr(convert_module, "BAND_BYTES", band_rows * row_bytes)
    if np.dtype(dtype).kind == "f":
        pixels = RNG.normal(100, 30, size=shape).astype(dtype)
    else:
        pixels = RNG.integers(0, 200, size=shape).astype(dtype)
    opts = dataclasses.replace(OPTS, method=method, version=version)
    got = ingest(tmp_path / "a", "lv", [Image(pixels, rgb=rgb)], opts=opts)
    shapes = level_shapes(shape[3], shape[4], opts)
    assert len(shapes) >= 3
    for k in range(1, len(shapes)):
        built = got.intermediate / "levels" / "0" / str(k)
        linked = sorted(
            p
            for p in (got.store / str(k)).rglob("*")
            if p.is_file() and p.name not in {"zarr.json", ".zarray", ".zattrs"}
        )
        assert linked, k
        for chunk in linked:
            source = built / chunk.relative_to(got.store / str(k))
            assert chunk.stat().st_ino == source.stat().st_ino, chunk
    # The same store with the levels built and the data ranges measured by pyramid, from
    # level 0: the same bytes.
    shutil.rmtree(got.intermediate / "levels")
    del zarr.open_array(got.intermediate / "0", mode="r+").attrs[RANGE_ATTR]
    again = tmp_path / "again" / "lv.ome.zarr"
    pyramid.build(got.intermediate, tmp_path / "a" / "lv.ome.xml", again, name="lv", opts=opts)
    assert _files(again) == _files(got.store)
    # Asked for another method, pyramid builds the levels itself.
    other: Method = "nearest" if method != "nearest" else "mean"
    rebuilt = tmp_path / "other" / "lv.ome.zarr"
    fresh = ingest(tmp_path / "b", "lv", [Image(pixels, rgb=rgb)], opts=opts)
    pyramid.build(
        fresh.intermediate,
        tmp_path / "b" / "lv.ome.xml",
        rebuilt,
        name="lv",
        opts=dataclasses.replace(opts, method=other),
    )
    plane = pixels[0, 0, 0]
    level1 = zarr.open_group(rebuilt, mode="r")["1"][0, 0, 0]
    np.testing.assert_array_equal(level1, downsample(plane, other))
