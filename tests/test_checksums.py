"""Fixity, manifest, verify, byte-identical reruns, provenance and archive hand-off."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import random
import shutil
import subprocess
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import zarr

from bioingest.checksum import check_sources, read_manifest, sha256_file
from bioingest.store import image_paths
from conftest import BIN, REPO, manifest_rows, run_workflow

FILES = [
    "czi/CellDivision_T3_Z5_CH2_X240_Y170.czi",  # plate layout
    "czi/S3_1Pos_2Mosaic_T1_Z1_CH1.czi",  # bioformats2raw layout
    "dv/toxo.dv",
    "tiff/Fluorescence_RGB.tif",  # tifffile fast path
    "ics/chromo3d.ics",
    "ics/chromo3d.ids",  # companion
]
STUDY = REPO / "config" / "study.yaml"


def verify(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "bioingest"), "verify", *map(str, args)], capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, real_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    for rel in FILES:
        shutil.copy(real_dir / rel, folder / Path(rel).name)
    return folder


@pytest.fixture(scope="module")
def runs(inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Run the same inputs and config twice, into two folders with 2 and 1 cores."""
    base = tmp_path_factory.mktemp("runs")
    outs = []
    for name, cores in (("a", "2"), ("b", "1")):
        out = base / name / "results"
        run_workflow(
            base / name / "work",
            {"input_dir": inputs, "output_dir": out, "study": STUDY},
            extra=["--cores", cores],
        )
        outs.append(out)
    return outs[0], outs[1]


@pytest.mark.workflow
@pytest.mark.java
def test_source_fixity_matches_published_checksums(runs: tuple[Path, Path]) -> None:
    published = {Path(r["file"]).name: r["sha256"] for r in manifest_rows()}
    fixity = read_manifest(runs[0] / "chromo3d" / "source-sha256.txt")
    assert fixity == {n: published[n] for n in ("chromo3d.ics", "chromo3d.ids")}
    assert read_manifest(runs[0] / "toxo" / "source-sha256.txt") == {
        "toxo.dv": published["toxo.dv"]
    }


@pytest.mark.workflow
@pytest.mark.java
def test_reruns_are_byte_identical(runs: tuple[Path, Path]) -> None:
    a, b = runs
    manifest_a = (a / "manifest-sha256.txt").read_bytes()
    assert manifest_a == (b / "manifest-sha256.txt").read_bytes()
    entries = read_manifest(a / "manifest-sha256.txt")
    # Every chunk of every store, the records, tables and logs are covered.
    assert any(".ome.zarr/" in rel and "/c/" in rel for rel in entries)
    for rel in (
        "summary/images.tsv",
        "summary/images.parquet",
        "bia-file-list.tsv",
        "toxo/metadata.json",
        "toxo/source-sha256.txt",
        "toxo/toxo.ome.xml",
        "toxo/toxo.ome.zarr/ro-crate-metadata.json",
        "logs/toxo/convert.log",
    ):
        assert rel in entries
    assert "ro-crate-metadata.json" not in entries
    assert all(".snakemake" not in rel for rel in entries)
    for result in runs:
        proc = verify(result)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout == ""
    # A reviewer compares a rerun with the published manifest.
    assert verify(b, "--against", a / "manifest-sha256.txt").returncode == 0


@pytest.mark.workflow
@pytest.mark.java
def test_no_machine_details_in_listed_files(runs: tuple[Path, Path], inputs: Path) -> None:
    """No PID, host, time or absolute path in any file the manifest lists."""
    import re
    import socket

    stamp = re.compile(rb"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}|\bpid\b")
    for out in runs:
        entries = read_manifest(out / "manifest-sha256.txt")
        assert "inventory.tsv" in entries and "logs/inventory.log" in entries
        for rel in entries:
            if rel.endswith((".png", ".parquet")) or (
                ".ome.zarr/" in rel and not rel.endswith((".json", ".xml"))
            ):
                continue  # binary: chunks, thumbnails, Parquet
            data = (out / rel).read_bytes()
            for needle in (str(out), str(inputs), str(out.parent)):
                assert needle.encode() not in data, (rel, needle)
            host = re.compile(rb"\b" + re.escape(socket.gethostname().encode()) + rb"\b")
            assert not host.search(data), rel
            if rel.startswith("logs/") or rel.startswith(("inventory.", "failed.")):
                # Files of the run itself (acquisition dates in the metadata are data).
                assert not stamp.search(data), rel


@pytest.mark.workflow
@pytest.mark.java
def test_stale_dataset_folder_is_not_listed(runs: tuple[Path, Path], tmp_path: Path) -> None:
    """A folder an earlier run left in a reused OUT is in no run-level output."""
    a, _ = runs
    reused = tmp_path / "reused"
    shutil.copytree(a, reused, symlinks=True)
    stale = reused / "gone"
    shutil.copytree(reused / "toxo", stale)
    (stale / "metadata.json").write_text(
        (stale / "metadata.json").read_text().replace('"toxo"', '"gone"'), encoding="utf-8"
    )
    records = sorted(p for p in reused.glob("*/metadata.json") if p.parent.name != "gone")
    proc = subprocess.run(
        [
            str(BIN / "bioingest"),
            "provenance",
            "bia-list",
            str(reused),
            "--records",
            *map(str, records),
            "--out",
            str(tmp_path / "bia.tsv"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "gone" not in (tmp_path / "bia.tsv").read_text(), proc.stderr
    outputs = [p.parent / f"{p.parent.name}.ome.zarr" for p in records]
    subprocess.run(
        [
            str(BIN / "bioingest"),
            "checksum",
            "manifest",
            str(reused),
            "--outputs",
            *map(str, [*outputs, *records]),
            "--out",
            str(tmp_path / "manifest.txt"),
        ],
        check=True,
        capture_output=True,
    )
    listed = read_manifest(tmp_path / "manifest.txt")
    assert "toxo/toxo.ome.zarr/zarr.json" in listed
    assert not [rel for rel in listed if rel.startswith(("gone/", "logs/gone/"))]
    # verify looks at this run's datasets only.
    assert verify(reused).stdout == ""


@pytest.mark.workflow
@pytest.mark.java
def test_pixel_hash_recorded(runs: tuple[Path, Path]) -> None:
    record = json.loads((runs[0] / "toxo" / "metadata.json").read_text(encoding="utf-8"))
    level0 = zarr.open_group(runs[0] / "toxo" / "toxo.ome.zarr", mode="r")["0"][:]
    import hashlib

    expected = hashlib.sha256(level0.astype("<u2").tobytes()).hexdigest()
    assert record["series"][0]["pixel_sha256"] == {"value": expected, "origin": "inferred"}


@pytest.fixture
def copy(runs: tuple[Path, Path], tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(runs[0], target)
    return target


@pytest.mark.workflow
@pytest.mark.java
def test_tampering_is_caught(copy: Path) -> None:
    entries = sorted(read_manifest(copy / "manifest-sha256.txt"))
    rng = random.Random(20261124)
    victims = sorted(rng.sample([e for e in entries if (copy / e).stat().st_size], 25))
    for rel in victims:
        path = copy / rel
        data = bytearray(path.read_bytes())
        data[rng.randrange(len(data))] ^= 0x01
        path.write_bytes(bytes(data))
    (copy / "toxo" / "stray.txt").write_text("x", encoding="utf-8")
    (copy / "summary" / "channels.tsv").unlink()
    proc = verify(copy)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    expected = [f"changed: {rel}" for rel in victims if rel != "summary/channels.tsv"]
    assert sorted(lines) == sorted(
        [*expected, "extra: toxo/stray.txt", "missing: summary/channels.tsv"]
    )
    assert "problem(s) found" in proc.stderr


@pytest.mark.workflow
@pytest.mark.java
def test_every_single_byte_flip_is_named(copy: Path) -> None:
    entries = [
        e for e in sorted(read_manifest(copy / "manifest-sha256.txt")) if (copy / e).stat().st_size
    ]
    rng = random.Random(7)
    for rel in rng.sample(entries, 8):
        path = copy / rel
        original = path.read_bytes()
        data = bytearray(original)
        data[rng.randrange(len(data))] ^= 0x80
        path.write_bytes(bytes(data))
        proc = verify(copy)
        assert (proc.returncode, proc.stdout) == (1, f"changed: {rel}\n")
        path.write_bytes(original)
    assert verify(copy).returncode == 0


def _rewrite_store(store: Path) -> None:
    """Re-encode every level-0 array with other chunks and codec, same pixels."""
    root = zarr.open_group(store, mode="r+")
    for path in image_paths(root):
        group = root[path] if path else root
        data = group["0"][:]
        attrs = dict(group["0"].attrs)
        del group["0"]
        arr = group.create_array(
            "0",
            shape=data.shape,
            dtype=data.dtype,
            chunks=(1, 1, 1, 32, 32),
            dimension_names=list("tczyx"),
            compressors=zarr.codecs.GzipCodec(level=1),
        )
        arr[:] = data
        arr.attrs.update(attrs)


@pytest.mark.workflow
@pytest.mark.java
def test_pixels_verify_reencoded_store(copy: Path) -> None:
    _rewrite_store(copy / "S3_1Pos_2Mosaic_T1_Z1_CH1" / "S3_1Pos_2Mosaic_T1_Z1_CH1.ome.zarr")
    plain = verify(copy)
    assert plain.returncode == 1
    assert all(".ome.zarr/" in line for line in plain.stdout.splitlines())
    by_content = verify(copy, "--pixels")
    assert by_content.returncode == 0, by_content.stdout
    store = copy / "toxo" / "toxo.ome.zarr"
    level0 = zarr.open_group(store, mode="r+")["0"]
    level0[0, 0, 0, 0, 0] = int(level0[0, 0, 0, 0, 0]) ^ 1
    changed = verify(copy, "--pixels")
    assert (changed.returncode, changed.stdout) == (1, "pixels changed: toxo series 0\n")


@pytest.mark.workflow
@pytest.mark.java
def test_sources_rechecked(copy: Path, inputs: Path, tmp_path: Path) -> None:
    sources = tmp_path / "sources"
    shutil.copytree(inputs, sources)
    assert verify(copy, "--sources", sources).returncode == 0
    with open(sources / "toxo.dv", "r+b") as fh:
        fh.seek(5000)
        byte = fh.read(1)
        fh.seek(5000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    (sources / "chromo3d.ids").unlink()
    proc = verify(copy, "--sources", sources)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        f"source missing: {sources / 'chromo3d.ids'}",
        f"source changed: {sources / 'toxo.dv'}",
    ]
    assert check_sources(copy / "toxo" / "source-sha256.txt", root=sources) == [
        f"source changed: {sources / 'toxo.dv'}"
    ]
    manifest = subprocess.run(
        [
            str(BIN / "bioingest"),
            "checksum",
            "manifest",
            str(copy),
            "--sources-root",
            str(sources),
            "--fixity",
            *map(str, sorted(copy.glob("*/source-sha256.txt"))),
        ],
        capture_output=True,
        text=True,
    )
    assert manifest.returncode == 1
    assert (
        manifest.stderr.strip()
        .splitlines()[-1]
        .startswith(f"ERROR {copy}: sources changed during the run: source missing: ")
    )


@pytest.mark.workflow
@pytest.mark.java
def test_bag_validates(copy: Path) -> None:
    import bagit

    proc = subprocess.run(
        [str(BIN / "bioingest"), "bag", str(copy)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    bag = bagit.Bag(str(copy))
    bag.validate()
    assert (copy / "data" / "manifest-sha256.txt").is_file()
    assert "sha256" in bag.algorithms


@pytest.mark.workflow
@pytest.mark.java
def test_run_crate(runs: tuple[Path, Path], inputs: Path) -> None:
    out = runs[0]
    crate = json.loads((out / "ro-crate-metadata.json").read_text(encoding="utf-8"))
    graph = {e["@id"]: e for e in crate["@graph"]}
    root = graph["./"]
    assert {"@id": "https://w3id.org/ro/wfrun/workflow/0.5"} in root["conformsTo"]
    assert root["license"] == "CC-BY-4.0"
    actions = [e for e in graph.values() if e["@type"] == "CreateAction"]
    assert len(actions) == 1
    action = actions[0]
    assert action["instrument"] == root["mainEntity"]
    manifest = read_manifest(out / "manifest-sha256.txt")
    results = {r["@id"] for r in action["result"]}
    assert results == set(manifest)
    for rel, digest in manifest.items():
        assert graph[rel]["sha256"] == digest
        assert graph[rel]["contentSize"] == (out / rel).stat().st_size
    objects = {
        graph[o["@id"]]["name"]
        for o in action["object"]
        if o["@id"] in graph and graph[o["@id"]]["@type"] == "File"
    }
    assert objects == {Path(f).name for f in FILES}
    for f in FILES:
        assert graph[f"#source/{Path(f).name}"]["sha256"] == sha256_file(inputs / Path(f).name)
    versions = {
        e["name"]: e["softwareVersion"]
        for e in graph.values()
        if e["@type"] == "SoftwareApplication"
    }
    assert versions["Bio-Formats"] == "7.3.1"
    assert versions["zarr"] == zarr.__version__
    assert versions["Java"].startswith("openjdk version")
    assert {"bioingest", "snakemake", "tifffile", "Python"} <= set(versions)
    config = json.loads(graph["#config"]["value"])
    assert (config["target"], config["ngff_version"]) == ("archive", None)
    assert json.loads(graph["#study-organism"]["value"])["id"] == "NCBITaxon:9606"
    store_crate = json.loads(
        (out / "toxo" / "toxo.ome.zarr" / "ro-crate-metadata.json").read_text(encoding="utf-8")
    )
    store_root = {e["@id"]: e for e in store_crate["@graph"]}["./"]
    assert store_root["name"] == "toxo"
    assert store_root["license"] == "CC-BY-4.0"
    assert store_root["organism_classification"]["@id"].endswith("NCBITaxon_9606")
    assert store_root["measurementMethod"]["@id"].endswith("FBbi_00000251")


@pytest.mark.workflow
@pytest.mark.java
def test_bia_file_list(runs: tuple[Path, Path]) -> None:
    out = runs[0]
    lines = (out / "bia-file-list.tsv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    assert header[0] == "Files"
    rows = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]
    assert len(rows) == 3 * 5
    for row in rows:
        assert (out / row["Files"]).exists()
        assert "\\" not in row["Files"] and not row["Files"].startswith("/")
    assert {r["Organism"] for r in rows} == {"Homo sapiens"}


def test_pixel_hash_definition() -> None:
    """Check that neither chunking, memory budget nor a different dtype order changes the hash.

    The dtype order does not matter because the hash is of canonical little-endian bytes.
    """
    import hashlib

    from bioingest.pixelhash import pixel_hash

    data = np.random.default_rng(0).integers(0, 60000, (2, 3, 4, 37, 53), dtype=np.uint16)
    expected = hashlib.sha256(data.astype("<u2").tobytes()).hexdigest()
    assert pixel_hash(data) == expected
    assert pixel_hash(data, budget_bytes=1) == expected
    assert pixel_hash(data.astype(">u2")) == expected
    store = zarr.create_array(
        zarr.storage.MemoryStore(), shape=data.shape, dtype=data.dtype, chunks=(1, 1, 1, 8, 8)
    )
    store[:] = data
    assert pixel_hash(store, budget_bytes=500) == expected
    assert pixel_hash(data[:, :, :, :, ::-1]) != expected


def test_run_crate_takes_source_checksums_from_the_fixity_records(tmp_path: Path) -> None:
    from bioingest.provenance import run_crate

    sources = tmp_path / "in"
    sources.mkdir()
    for name in ("a.tif", "b.tif"):
        (sources / name).write_bytes(name.encode())
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest-sha256.txt").write_text("", encoding="utf-8")
    (out / "_workflow").mkdir()
    (out / "_workflow" / "Snakefile").write_text("", encoding="utf-8")
    # The recorded checksum is used as given: a.tif is not read again.
    recorded = "0" * 64
    fixity = out / "source-sha256.txt"
    fixity.write_text(f"{recorded}  a.tif\n", encoding="utf-8")
    crate = run_crate(
        out,
        sources=[sources / "a.tif", sources / "b.tif"],
        fixity=[fixity],
        config={"input_dir": str(sources), "target": "archive"},
        study=None,
    )
    graph = {e["@id"]: e for e in crate["@graph"]}
    assert graph["#source/a.tif"]["sha256"] == recorded
    assert graph["#source/b.tif"]["sha256"] == sha256_file(sources / "b.tif")


def test_missing_manifest(tmp_path: Path) -> None:
    proc = verify(tmp_path)
    assert proc.returncode == 1
    assert proc.stdout == f"missing: {tmp_path / 'manifest-sha256.txt'}\n"


def test_bad_manifest_line(tmp_path: Path) -> None:
    (tmp_path / "manifest-sha256.txt").write_text("abc  x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 1 is not"):
        read_manifest(tmp_path / "manifest-sha256.txt")


# The RO-Crate 1.1 JSON-LD context, extracted by `make test` from the ro-crate-py 0.13.0
# wheel (rocrate/data/): the validator resolves the crate's context and the tests run
# offline.
CONTEXT_1_1 = REPO / ".cache" / "ro-crate-1.1-context.jsonld"


def validate_offline(crate_dir: Path) -> list[str]:
    """Run roc-validator's REQUIRED checks of the Workflow Run Crate profile, offline.

    The one remote document it needs (the context) is served from CONTEXT_1_1; any other
    fetch fails.
    """
    from rocrate_validator import models, services
    from rocrate_validator.utils import http

    assert CONTEXT_1_1.is_file(), f"{CONTEXT_1_1} missing: make test extracts it"
    context = json.loads(CONTEXT_1_1.read_text(encoding="utf-8"))

    class Response:
        status_code = 200
        from_cache = True
        headers: ClassVar[dict[str, str]] = {"Content-Type": "application/ld+json"}
        text = json.dumps(context)
        content = text.encode()

        def json(self) -> object:
            return context

        def raise_for_status(self) -> None:
            return None

    def get(self: object, url: str, *args: object, **kwargs: object) -> Response:
        if url.rstrip("/") == "https://w3id.org/ro/crate/1.1/context":
            return Response()
        raise ConnectionError(f"the tests run offline: {url}")

    patch = pytest.MonkeyPatch()
    # HttpRequester serves get/head through __getattr__: set them on the class.
    patch.setattr(http.HttpRequester, "get", get, raising=False)
    patch.setattr(http.HttpRequester, "head", get, raising=False)
    try:
        settings = services.ValidationSettings(
            rocrate_uri=str(crate_dir),
            profile_identifier="workflow-run-crate",
            requirement_severity=models.Severity.REQUIRED,
            abort_on_first=False,
        )
        result = services.validate(settings)
    finally:
        patch.undo()
    return [f"{i.check.identifier}: {i.message}" for i in result.get_issues()]


@pytest.mark.workflow
@pytest.mark.java
def test_run_crate_loads_validates_and_is_portable(runs: tuple[Path, Path], inputs: Path) -> None:
    from rocrate.rocrate import ROCrate

    out = runs[0]
    text = (out / "ro-crate-metadata.json").read_text(encoding="utf-8")
    for machine_path in (str(out), str(inputs), str(REPO), "file://", "/tmp/"):
        assert machine_path not in text
    crate = ROCrate(out)
    workflow = crate.mainEntity
    assert workflow.id == "_workflow/Snakefile"
    assert workflow.type == ["File", "SoftwareSourceCode", "ComputationalWorkflow"]
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert workflow["identifier"] == f"git commit {commit}"
    assert workflow["version"] == importlib.metadata.version("bioingest")
    # The workflow as run is in the crate, byte for byte.
    assert (out / "_workflow" / "Snakefile").read_bytes() == (REPO / "Snakefile").read_bytes()
    rules = sorted(p.name for p in (out / "_workflow" / "workflow" / "rules").iterdir())
    assert rules == sorted(p.name for p in (REPO / "workflow" / "rules").iterdir())
    assert validate_offline(out) == []
    # Sources: named relative to the input folder, with size and checksum.
    graph = {e["@id"]: e for e in json.loads(text)["@graph"]}
    for rel in FILES:
        name = Path(rel).name
        entity = graph[f"#source/{name}"]
        assert entity["name"] == name
        assert entity["sha256"] == sha256_file(inputs / name)
        assert entity["contentSize"] == (inputs / name).stat().st_size
    versions = {
        e["name"]: e["softwareVersion"]
        for e in graph.values()
        if e["@type"] == "SoftwareApplication"
    }
    for dist in ("snakemake", "zarr", "numcodecs", "tifffile", "imagecodecs"):
        assert versions[dist] == importlib.metadata.version(dist)
    assert versions["bioingest"] == importlib.metadata.version("bioingest")
    assert versions["Bio-Formats"] == "7.3.1"
    assert versions["Python"] == platform.python_version()
    # Every installed direct dependency of bioingest, at the version that ran.
    from bioingest.provenance import dependencies

    assert {"numpy", "pyarrow", "ome-zarr-models", "jsonschema", "PyYAML"} <= set(dependencies())
    for dist in dependencies():
        assert versions[dist] == importlib.metadata.version(dist), dist
    config = json.loads(graph["#config"]["value"])
    assert config["input_dir"] == inputs.name
    assert config["output_dir"] == out.name
    # The copy of the workflow is not an output: verify still passes.
    assert verify(out).returncode == 0
