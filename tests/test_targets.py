"""Targets: one setting per viewer family, explicit overrides, config and verb options."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from bioingest import targets
from bioingest.targets import StoreSettings, from_config, pyramid_options, resolve
from conftest import BIN, REPO, run_workflow


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("archive", StoreSettings("0.5", 1024, 4, 5, ome_tiff=False)),
        ("web", StoreSettings("0.5", 512, 8, 5, ome_tiff=False)),
        ("napari", StoreSettings("0.5", 1024, 4, 5, ome_tiff=False)),
        ("fiji", StoreSettings("0.5", 1024, 4, 5, ome_tiff=False)),
        ("qupath", StoreSettings("0.4", 512, 0, 5, ome_tiff=True)),
        ("omero", StoreSettings("0.4", 1024, 0, 5, ome_tiff=True)),
    ],
)
def test_each_target_resolves_to_its_settings(target: targets.Target, expected: object) -> None:
    assert resolve(target) == expected


def test_every_target_has_settings_and_the_default_is_archive() -> None:
    assert set(targets.TARGETS) == {"archive", "web", "napari", "fiji", "qupath", "omero"}
    assert targets.DEFAULT_TARGET == "archive"
    assert resolve(targets.DEFAULT_TARGET).ngff_version == "0.5"


def test_explicit_settings_override_the_target() -> None:
    got = resolve("archive", chunk_size=256, shard_chunks=2, compression_level=9, ome_tiff=True)
    assert got == StoreSettings("0.5", 256, 2, 5 + 4, ome_tiff=True)


def test_choosing_04_drops_the_targets_shards() -> None:
    assert resolve("archive", ngff_version="0.4") == StoreSettings(
        "0.4", 1024, 0, 5, ome_tiff=False
    )
    # A 0.4 target asked for 0.5 gets no shards: the target chose none.
    assert resolve("qupath", ngff_version="0.5").shard_chunks == 0


def test_explicit_shards_with_04_are_refused() -> None:
    with pytest.raises(ValueError, match=r"^shard_chunks 4 needs ngff_version 0\.5 \(Zarr v2"):
        resolve("omero", shard_chunks=4)
    # 0 or 1 means no sharding, which 0.4 allows.
    assert resolve("omero", shard_chunks=1).shard_chunks == 1


def test_unknown_target_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match=r"^unknown target 'viewer'; expected one of archive, "):
        resolve("viewer")  # type: ignore[arg-type]


def test_shipped_config_leaves_every_store_key_to_the_target() -> None:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    assert config["target"] == "archive"
    keys = ("ngff_version", "chunk_size", "shard_chunks", "compression_level", "ome_tiff")
    for key in (*keys, "ome_zarr"):
        assert config[key] is None, key
    assert from_config(config) == resolve("archive")
    assert pyramid_options(config) == ["--target=archive"]


def test_config_numbers_and_overrides_become_verb_options() -> None:
    # --config ngff_version=0.4 arrives as a float.
    config = {"target": "web", "ngff_version": 0.4, "chunk_size": 256, "shard_chunks": None}
    assert from_config(config) == StoreSettings("0.4", 256, 0, 5, ome_tiff=False)
    assert pyramid_options(config) == ["--target=web", "--ngff-version=0.4", "--chunk-size=256"]
    with pytest.raises(ValueError, match=r"^unknown ngff_version '0\.3'"):
        from_config({"ngff_version": "0.3"})


def test_ome_zarr_false_delivers_the_ome_tiff_alone() -> None:
    assert all(targets.settings(t).ome_zarr for t in targets.TARGETS)
    assert resolve("archive", ome_tiff=True, ome_zarr=False) == StoreSettings(
        "0.5", 1024, 4, 5, ome_tiff=True, ome_zarr=False
    )
    # qupath writes an OME-TIFF: ome_zarr false alone is enough.
    assert from_config({"target": "qupath", "ome_zarr": False}).ome_zarr is False
    assert from_config({"target": "qupath", "ome_zarr": None}).ome_zarr is True
    for config in ({"ome_zarr": False}, {"target": "omero", "ome_zarr": False, "ome_tiff": False}):
        with pytest.raises(ValueError, match=r"^ome_zarr false needs an OME-TIFF \(ome_tiff tr"):
            from_config(config)


@pytest.mark.workflow
def test_a_contradiction_stops_the_workflow_with_one_line(tmp_path: Path, real_dir: Path) -> None:
    proc = run_workflow(
        tmp_path / "work",
        {
            "input_dir": real_dir / "dv",
            "output_dir": tmp_path / "out",
            "target": "omero",
            "shard_chunks": 4,
        },
        check=False,
    )
    assert proc.returncode == 1
    assert not (tmp_path / "out").exists()
    assert "config: shard_chunks 4 needs ngff_version 0.5 (Zarr v2 has no shards)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_verb_refuses_a_contradiction_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            str(BIN / "bioingest"),
            "pyramid",
            str(tmp_path / "in.zarr"),
            "--ome-xml",
            str(tmp_path / "x.ome.xml"),
            "--out",
            str(tmp_path / "o.ome.zarr"),
            "--ngff-version",
            "0.4",
            "--shard-chunks",
            "2",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr == (
        "bioingest pyramid: shard_chunks 2 needs ngff_version 0.5 (Zarr v2 has no shards)\n"
    )
