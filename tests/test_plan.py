"""What the workflow plans (plan.py) and where the files go (layout.py): no Snakemake, no JVM.

The plans are per dataset and per run.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from bioingest import layout, plan
from bioingest.inventory import Dataset, Inventory
from bioingest.resources import (
    convert_mem_mb,
    convert_runtime_min,
    image_mem_mb,
    image_runtime_min,
)
from conftest import REPO

ROOT = Path("/data/in")
OUT = "/data/out"
MB = 1024 * 1024


@pytest.fixture
def config() -> dict[str, Any]:
    """Return the workflow's default configuration."""
    data: dict[str, Any] = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    return data


def dataset(
    name: str = "cells",
    *,
    series: tuple[int, ...] = (MB,),
    files: tuple[str, ...] = ("cells.czi",),
    **kwargs: Any,
) -> Dataset:
    paths = tuple(ROOT / f for f in files)
    return Dataset(
        name=name,
        main=paths[0],
        files=paths,
        nbytes=sum(series),
        sha256=tuple(f"{i:064x}" for i in range(len(paths))),
        series_bytes=series,
        **kwargs,
    )


def inventory(*datasets: Dataset, scheme: str = "") -> Inventory:
    return Inventory(root=ROOT, datasets=list(datasets), scheme=scheme)


# -- layout -----------------------------------------------------------------------------


def test_layout_keeps_wildcards_for_the_rules() -> None:
    assert layout.store(OUT, "{dataset}") == "/data/out/{dataset}/{dataset}.ome.zarr"
    assert (
        layout.part(OUT, "{dataset}", "{part}")
        == "/data/out/intermediate/parts/{dataset}/{part}.zarr"
    )
    assert (
        layout.part_log(OUT, "{dataset}", "{part}")
        == "/data/out/logs/{dataset}/convert_part{part}.log"
    )
    assert layout.run_log(OUT, "report") == "/data/out/logs/report.log"


def test_layout_relative_and_path_forms() -> None:
    assert layout.store("", "a") == "a/a.ome.zarr"
    assert layout.qc_page("", "a") == "a/qc.html"
    assert layout.metadata(Path("/o"), "a") == Path("/o/a/metadata.json")
    assert isinstance(layout.metadata(Path("/o"), "a"), Path)
    assert layout.ome_xml(PurePosixPath("o"), "a") == PurePosixPath("o/a/a.ome.xml")
    assert layout.not_converted(Path("/o/a/a.ome.zarr")) == Path(
        "/o/a/a.ome.zarr/NOT-CONVERTED.txt"
    )


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda o: layout.dataset_dir(o, "n"), "n"),
        (lambda o: layout.ome_tiff(o, "n"), "n/n.ome.tif"),
        (lambda o: layout.source_json(o, "n"), "n/n.source.json"),
        (lambda o: layout.source_fixity(o, "n"), "n/source-sha256.txt"),
        (lambda o: layout.qc(o, "n"), "n/qc.json"),
        (lambda o: layout.thumbnails(o, "n"), "n/thumbnails"),
        (lambda o: layout.intermediate(o, "n"), "intermediate/n.zarr"),
        (lambda o: layout.assembled(o, "n"), "intermediate/assembled/n.zarr"),
        (lambda o: layout.dataset_log(o, "n", "qc"), "logs/n/qc.log"),
        (layout.inventory_tsv, "inventory.tsv"),
        (layout.inventory_json, "inventory.json"),
        (layout.inventory_cache, ".cache/inventory.json"),
        (layout.failed, "failed.tsv"),
        (layout.report, "report.html"),
        (layout.bia_file_list, "bia-file-list.tsv"),
        (layout.manifest, "manifest-sha256.txt"),
        (layout.run_crate, "ro-crate-metadata.json"),
        (layout.workflow_copy, "_workflow"),
        (layout.qc_table, "summary/qc.tsv"),
    ],
)
def test_every_path_below_the_output_folder(call: Any, expected: str) -> None:
    assert call(OUT) == f"{OUT}/{expected}"
    assert call(Path(OUT)) == Path(OUT) / expected


def test_layout_names_back_and_logs() -> None:
    assert layout.name_of_store(Path("o/a.b/a.b.ome.zarr")) == "a.b"
    assert layout.name_of_source_json(Path("o/a/a.source.json")) == "a"
    assert layout.name_of_record(Path("o/a/qc.json")) == "a"
    assert layout.trace_of("o/logs/a/convert.log") == "o/logs/a/convert.trace.log"
    assert layout.trace_of(Path("convert.log")) == Path("convert.trace.log")
    assert layout.metadata_tables("") == [
        "summary/images.tsv",
        "summary/images.parquet",
        "summary/channels.tsv",
        "summary/channels.parquet",
    ]
    assert layout.dataset_files("", "a") == [
        "a/a.ome.zarr",
        "a/a.ome.xml",
        "a/a.source.json",
        "a/source-sha256.txt",
        "a/metadata.json",
        "a/qc.json",
        "a/qc.html",
        "a/thumbnails",
        "a/a.ome.tif",
    ]
    assert layout.run_level_log("", "summary/images.parquet") == "logs/metadata_tables.log"
    assert layout.run_level_log("", "failed.tsv") == "logs/outcomes.log"
    assert layout.run_level_log("", "a/qc.json") is None
    assert {
        "manifest-sha256.txt",
        "ro-crate-metadata.json",
        "logs/manifest.log",
        "logs/provenance.log",
    } == layout.NOT_LISTED


def test_step_logs_are_derived_not_listed(tmp_path: Path) -> None:
    logs = tmp_path / "logs" / "a"
    logs.mkdir(parents=True)
    for name in ("qc.log", "convert.log", "convert.trace.log", "convert_part1.log"):
        (logs / name).write_text("", encoding="utf-8")
    (logs / "convert_part3.log").write_text("", encoding="utf-8")  # after a gap: not a part
    (logs / "notes.log").write_text("", encoding="utf-8")  # no step of the workflow
    assert [p.name for p in layout.step_logs(tmp_path, "a")] == [
        "convert.log",
        "convert.trace.log",
        "convert_part1.log",
        "qc.log",
    ]
    assert layout.step_logs(tmp_path, "missing") == []


# -- splitting --------------------------------------------------------------------------


def test_split_only_above_the_limit_and_with_several_series(config: dict[str, Any]) -> None:
    big = dataset(series=(3 * MB, MB, 2 * MB))
    assert not plan.is_split(big, config)  # split_series_above_mb: null
    config["split_series_above_mb"] = 1
    assert plan.is_split(big, config)
    assert not plan.is_split(dataset(series=(6 * MB,)), config)
    config["split_series_above_mb"] = 6
    assert not plan.is_split(big, config)  # not above


def test_threads_only_for_datasets_worth_them(config: dict[str, Any]) -> None:
    assert config["threads"] == 2
    assert plan.image_threads(dataset(series=(64 * MB,)), config) == 2
    # Small datasets: one thread per job, so that Snakemake runs several at once.
    assert plan.image_threads(dataset(series=(64 * MB - 1,)), config) == 1
    config["threads"] = 8
    assert plan.image_threads(dataset(series=(100 * MB,)), config) == 8


def test_warm_python_gives_the_warm_option(config: dict[str, Any]) -> None:
    assert plan.warm_option(config) == "--warm"
    config["warm_python"] = False
    assert plan.warm_option(config) == ""


def test_parts_of_a_split_dataset(config: dict[str, Any]) -> None:
    d = dataset(series=(3 * MB, MB, 2 * MB, 2 * MB))
    assert plan.parts_of(d, config) == [(0, 4)]
    assert plan.intermediate_store(OUT, d, config) == f"{OUT}/intermediate/cells.zarr"
    assert plan.later_parts(OUT, d, config) == []
    config.update(split_series_above_mb=0, series_per_job=2)
    assert plan.parts_of(d, config) == [(0, 2), (2, 4)]
    assert plan.part_series(d, config, 1) == "2:4"
    assert plan.share(d, config, 0) == pytest.approx(0.5)
    assert plan.later_parts(OUT, d, config) == [f"{OUT}/intermediate/parts/cells/1.zarr"]
    assert plan.intermediate_store(OUT, d, config) == f"{OUT}/intermediate/assembled/cells.zarr"


def test_requests_scale_with_the_share_of_a_part(config: dict[str, Any]) -> None:
    d = dataset(series=(300 * MB, 100 * MB, 600 * MB))
    config.update(split_series_above_mb=0, series_per_job=1)

    def minutes(share: float, attempt: int) -> int:
        return convert_runtime_min(source_bytes=int(d.nbytes * share), attempt=attempt)

    assert plan.convert_mem_mb(config) == convert_mem_mb(
        java_heap_mb=config["java_heap_mb"], tile_size=config["tile_size"]
    )
    assert plan.convert_runtime(d, config, 2) == minutes(0.3, 2)
    assert plan.part_runtime(d, config, 2, 1) == minutes(0.6, 1)


def test_image_requests_from_the_store_and_the_pixel_bytes_convert_reported(
    config: dict[str, Any], tmp_path: Path
) -> None:
    described = tmp_path / "a.source.json"
    described.write_text(
        json.dumps({"series": [{"shape": [1, 2, 1, 512, 512], "dtype": "uint16"}]}),
        encoding="utf-8",
    )
    assert plan.image_runtime(described, 1) == image_runtime_min(pixel_bytes=2 * 512 * 512 * 2)
    assert plan.image_mem_mb(config) == image_mem_mb(
        chunk_size=1024, shard_chunks=4, tile_size=1024
    )
    config["ngff_version"] = "0.4"  # no shards: less memory
    assert plan.image_mem_mb(config) < image_mem_mb(chunk_size=1024, shard_chunks=4, tile_size=1024)


# -- options ----------------------------------------------------------------------------


def test_convert_options(config: dict[str, Any]) -> None:
    one = dataset(series=(MB, MB))
    options = shlex.split(plan.convert_options(one, config, input_root=ROOT, source="x"))
    sha = json.dumps({"cells.czi": "0" * 64})
    assert options == ["--root=/data/in", f"--sha256={sha}", "--single-file"]
    two = dataset(files=("b/cells.ics", "b/cells.ids"), series=(MB, MB))
    config.update(split_series_above_mb=0, series_per_job=1)
    options = shlex.split(plan.convert_options(two, config, input_root=ROOT, source="x"))
    assert options[1] == "--sha256=" + json.dumps(
        {"b/cells.ics": "0" * 64, "b/cells.ids": f"{1:064x}"}, sort_keys=True
    )
    assert options[2:] == ["--series=0:1"]


def test_convert_options_of_a_remote_source(config: dict[str, Any]) -> None:
    d = dataset(files=("b/c/cells.czi",), scheme="s3")
    local = "/cache/bucket/in/b/c/cells.czi"
    options = plan.convert_options(d, config, input_root=ROOT, source=local)
    assert options.startswith("--root=/cache/bucket/in ")


def test_small_options(config: dict[str, Any]) -> None:
    assert plan.single_file_option(dataset()) == "--single-file"
    assert plan.single_file_option(dataset(files=("a.ics", "a.ids"))) == ""
    assert plan.jvm_server_option(config) == "--jvm-server"
    assert plan.jvm_server_option({**config, "jvm_server": False}) == ""
    assert plan.pyramid_method(dataset(), config) == "mean"
    assert plan.pyramid_method(dataset(pyramid_method="nearest"), config) == "nearest"
    assert plan.study_option([]) == ""
    assert plan.study_option(["my study.yaml"]) == "--study 'my study.yaml'"
    assert json.loads(plan.config_json(config)) == config


def test_qc_options_name_every_threshold(config: dict[str, Any]) -> None:
    options = shlex.split(plan.qc_options(config))
    assert "--saturation-warn=0.001" in options
    assert "--focus-min-size=32" in options
    assert options[-2:] == ["--fail-policy=report", "--tile-size=1024"]
    assert len(options) == len([k for k in config if k.startswith("qc_")]) + 1
    assert options[:-2] == sorted(options[:-2])


# -- what a run delivers ----------------------------------------------------------------


def test_deliverables(config: dict[str, Any]) -> None:
    inv = inventory(dataset("b"), dataset("a"), dataset("bad", failure="corrupt"))
    assert plan.ok_names(inv) == ["a", "b"]
    assert plan.dataset_names(inv) == "a b"
    assert plan.described(OUT, inv) == [f"{OUT}/a/a.source.json", f"{OUT}/b/b.source.json"]
    assert plan.qc_stop_reports(OUT, inv, config) == []
    config["qc_fail_policy"] = "stop"
    assert plan.qc_stop_reports(OUT, inv, config) == plan.qc_reports(OUT, inv)
    rel = [p.removeprefix(f"{OUT}/") for p in plan.deliverables(OUT, inv, config)]
    assert rel == [
        "a/a.ome.zarr",
        "b/b.ome.zarr",
        "a/metadata.json",
        "b/metadata.json",
        "a/qc.json",
        "b/qc.json",
        "a/qc.html",
        "a/thumbnails",
        "b/qc.html",
        "b/thumbnails",
        "summary/images.tsv",
        "summary/images.parquet",
        "summary/channels.tsv",
        "summary/channels.parquet",
        "summary/qc.tsv",
        "inventory.tsv",
        "inventory.json",
        "failed.tsv",
        "report.html",
        "bia-file-list.tsv",
    ]
    config["ome_tiff"] = True
    with_tiffs = plan.deliverables(OUT, inv, config)
    assert with_tiffs[2:4] == [f"{OUT}/a/a.ome.tif", f"{OUT}/b/b.ome.tif"]


def test_the_ome_tiff_alone_is_delivered_and_the_store_is_intermediate(
    config: dict[str, Any],
) -> None:
    inv = inventory(dataset("b"), dataset("a"))
    assert plan.store_path(OUT, "a", config) == f"{OUT}/a/a.ome.zarr"
    assert plan.bia_options(config) == ""
    assert "--ome-tiff-only" not in shlex.split(plan.qc_options(config))
    config |= {"ome_zarr": False, "ome_tiff": True}
    assert not plan.delivers_zarr(config)
    assert plan.store_path(OUT, "a", config) == f"{OUT}/intermediate/stores/a.ome.zarr"
    rel = [p.removeprefix(f"{OUT}/") for p in plan.deliverables(OUT, inv, config)]
    assert rel[:4] == ["a/a.ome.tif", "b/b.ome.tif", "a/metadata.json", "b/metadata.json"]
    assert not [r for r in rel if ".ome.zarr" in r]
    assert shlex.split(plan.qc_options(config))[-1] == "--ome-tiff-only"
    assert plan.bia_options(config) == "--no-ome-zarr --ome-tiff"


def test_sources_in_order_and_their_root() -> None:
    d = dataset("a", files=("x/a.ics", "x/a.ids"))
    inv = inventory(d)
    assert plan.source_files(inv) == [(d, ROOT / "x/a.ics"), (d, ROOT / "x/a.ids")]
    assert plan.sources_root(inv, ROOT, ["/data/in/x/a.ics"]) == "/data/in"
    remote = inventory(dataset("a", files=("x/a.ics",), scheme="s3"), scheme="s3")
    assert plan.sources_root(remote, ROOT, ["/cache/b/in/x/a.ics"]) == "/cache/b/in"
    assert plan.sources_root(remote, ROOT, []) == "/data/in"


def test_failure_messages(tmp_path: Path) -> None:
    out = str(tmp_path)
    assert plan.failure_messages(out, ROOT) == []
    (tmp_path / "failed.tsv").write_text(
        "dataset\tstep\tfile\treason\nbad\tinventory\tx/bad.czi\tcorrupt\n", encoding="utf-8"
    )
    assert plan.failure_messages(out, ROOT) == [
        "FAILED /data/in/x/bad.czi: corrupt",
        f"1 dataset(s) failed: see {out}/failed.tsv and {out}/report.html",
    ]


def test_the_rules_log_where_layout_looks() -> None:
    """The manifest and the report find logs by step name: the rules must use the same."""
    import re

    text = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    run_steps = set(re.findall(r'layout\.run_log\(OUT, "(\w+)"\)', text))
    dataset_steps = set(re.findall(r'layout\.dataset_log\(OUT, "\{dataset\}", "(\w+)"\)', text))
    assert run_steps == set(layout.RUN_LEVEL_STEP.values())
    assert dataset_steps == set(layout.DATASET_STEPS)
    assert 'layout.part_log(OUT, "{dataset}", "{part}")' in text


def test_half_removed_stores_are_those_without_root_metadata(tmp_path: Path) -> None:
    # Glob characters in the output folder are taken literally.
    out = tmp_path / "out [1]"
    whole_v3 = Path(layout.intermediate(str(out), "a"))
    whole_v2 = Path(layout.assembled(str(out), "b"))
    failed = Path(layout.store(str(out), "g"))
    half = [
        Path(layout.store(str(out), "h")),
        Path(layout.intermediate(str(out), "c")),
        Path(layout.assembled(str(out), "d")),
        Path(layout.part(str(out), "e", 2)),
        Path(layout.work_store(str(out), "f")),
    ]
    for store in (whole_v3, whole_v2, failed, *half):
        (store / "0").mkdir(parents=True)
    (whole_v3 / "zarr.json").write_text("{}")
    (whole_v2 / ".zgroup").write_text("{}")
    Path(layout.not_converted(str(failed))).write_text("Not converted")
    # A scratch folder being written is not a store yet.
    (whole_v3.parent / ".g.zarr.partial" / "0").mkdir(parents=True)
    assert plan.half_removed_stores(str(out)) == half
    assert plan.half_removed_stores(str(tmp_path / "none")) == []
