"""Acquisitions, not files: the inventory groups files as Bio-Formats does.

The first tests drive the grouping with a scripted prober (no JVM); the rest open real
multi-file sets with the real Bio-Formats, and run the workflow on them.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import tifffile

from bioingest.inventory import (
    FOLDER,
    HIDDEN,
    IN_OUTPUT,
    UNRECOGNISED,
    Cache,
    Entry,
    assign_names,
    build,
    discover,
    group,
    recent,
)
from bioingest.probe import Probe
from conftest import REAL, run_workflow

EXTRA = REAL.parent / "real-extra"


class Scripted:
    """A prober that answers from a table ``file -> (reader, current, used, series)``."""

    def __init__(self, root: Path, table: Mapping[str, tuple[str, str, list[str], int]]):
        self.root = root
        self.table = table
        self.opened: list[str] = []

    def __call__(self, path: Path) -> Probe:
        rel = path.relative_to(self.root).as_posix()
        self.opened.append(rel)
        if rel not in self.table:
            return Probe(path=str(path))
        reader, current, used, series = self.table[rel]
        if series < 0:
            return Probe(path=str(path), reader=reader, error="cannot read (NullPointerException)")
        return Probe(
            path=str(path),
            reader=reader,
            format=reader,
            main=str(self.root / current),
            used=tuple(str(self.root / u) for u in used),
            series_bytes=(1,) * series,
        )


def _entries(names: list[str]) -> list[Entry]:
    return [Entry(n, 1, 1, 0o100644) for n in names]


MM = {
    # Micro-Manager 1.4: every OME-TIFF opens all four; each metadata.txt opens one.
    **{
        f"p{i}.ome.tif": ("OMETiffReader", "p0.ome.tif", [f"p{j}.ome.tif" for j in range(4)], 4)
        for i in range(4)
    },
    **{
        f"p{i}_metadata.txt": (
            "MicromanagerReader",
            f"p{i}_metadata.txt",
            [f"p{i}_metadata.txt", f"p{i}.ome.tif"],
            1,
        )
        for i in range(4)
    },
}
PLATE = {
    # A plate's metadata file and TIFFs in subfolders that the same reader cannot open.
    "plate/p.HTD": ("MetaxpressTiffReader", "", [], -1),
    "plate/t1/p.HTD": ("MetaxpressTiffReader", "", [], -1),
    **{
        f"plate/t1/z{z}/p_B02_w{w}.TIF": ("MetaxpressTiffReader", "", [], -1)
        for z in range(2)
        for w in range(2)
    },
}


@pytest.mark.parametrize("seed", range(5))
def test_grouping_does_not_depend_on_listing_order(tmp_path: Path, seed: int) -> None:
    table = {**MM, **PLATE, "solo.tif": ("TiffDelegateReader", "solo.tif", ["solo.tif"], 1)}
    names = [*table, "notes.txt"]
    random.Random(seed).shuffle(names)
    prober = Scripted(tmp_path, table)
    groups, failed, _, unknown = group(
        _entries(names),
        by_rel={e.rel: e for e in _entries(names)},
        root=tmp_path,
        open_file=prober,
        cache=Cache(None, reader_key=""),
        notes=[],
    )
    got = sorted((g.main, sorted(g.files)) for g in groups)
    assert got == [
        ("p0.ome.tif", sorted(k for k in MM)),
        ("solo.tif", ["solo.tif"]),
    ]
    assert sorted(failed) == sorted(PLATE)
    assert unknown == {"notes.txt"}
    # Claimed files are never opened: the four OME-TIFFs are opened once, by p0.
    assert sorted(prober.opened) == sorted(
        ["notes.txt", "p0.ome.tif", "solo.tif", *[f"p{i}_metadata.txt" for i in range(4)], *PLATE]
    )


def _write(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"data of " + name.encode())


def test_every_file_accounted_for(tmp_path: Path) -> None:
    root = tmp_path / "in"
    table = {**MM, **PLATE}
    _write(
        root,
        *table,
        "notes.txt",
        ".hidden.tif",
        ".cache/x.tif",
        "out/old.ome.tif",
        "comments.txt",
        "young.tif",
    )
    (root / "folder.tif").mkdir()
    old = time.time() - 3600
    for path in root.rglob("*"):
        os.utime(path, (old, old))
    (root / "young.tif").write_bytes(b"still being written")
    inv = build(root, open_file=Scripted(root, table), exclude=root / "out", min_age_s=60)
    by_file = {
        root / f: d.name for d in inv.datasets for f in (p.relative_to(root) for p in d.files)
    }
    assert len(by_file) == len(table)
    assert {d.name: d.failure != "" for d in inv.datasets} == {"p0": False, "plate_p": True}
    plate = next(d for d in inv.datasets if d.name == "plate_p")
    assert plate.main == root / "plate/p.HTD"
    assert plate.failure == (
        "cannot read (NullPointerException) (6 files that MetaxpressTiffReader reads as one set)"
    )
    assert sorted(inv.skipped) == sorted(
        [
            (".cache/", HIDDEN),
            (".hidden.tif", HIDDEN),
            ("comments.txt", UNRECOGNISED),
            ("folder.tif/", FOLDER),
            ("notes.txt", UNRECOGNISED),
            ("out/", IN_OUTPUT),
            ("young.tif", recent(60)),
        ]
    )
    rows = inv.table().splitlines()
    assert rows[0] == "path\tstatus\tdataset\trole\treason\tsize\tsha256"
    assert len(rows) == 1 + len(table) + len(inv.skipped)


def test_cache_reopens_nothing_unchanged(tmp_path: Path) -> None:
    root = tmp_path / "in"
    table = {**MM, "solo.tif": ("TiffDelegateReader", "solo.tif", ["solo.tif"], 1)}
    _write(root, *table)
    cache = tmp_path / "cache.json"
    first = Scripted(root, table)
    inv1 = build(root, open_file=first, cache_path=cache)
    again = Scripted(root, table)
    inv2 = build(root, open_file=again, cache_path=cache)
    assert again.opened == []
    assert inv1.to_json() == inv2.to_json()
    (root / "solo.tif").write_bytes(b"changed")
    third = Scripted(root, table)
    build(root, open_file=third, cache_path=cache)
    assert third.opened == ["solo.tif"]


def _never(path: Path) -> Probe:
    raise AssertionError(f"Bio-Formats asked to open {path}")


def _ome_tiffs(root: Path) -> None:
    """Three single-file OME-TIFFs: one image, two series, and RGB with a sub-resolution."""
    rng = np.random.default_rng(1)
    (root / "run 2").mkdir(parents=True)
    tifffile.imwrite(root / "a.ome.tif", rng.integers(0, 9, (3, 16, 24), np.uint16), ome=True)
    with tifffile.TiffWriter(root / "run 2" / "two.ome.tiff", ome=True) as tif:
        tif.write(rng.integers(0, 9, (8, 8), np.uint8))
        tif.write(rng.random((2, 4, 4), np.float32), photometric="minisblack")
    with tifffile.TiffWriter(root / "rgb.ome.tif", ome=True) as tif:
        rgb = rng.integers(0, 255, (64, 64, 3), np.uint8)
        tif.write(rgb, subifds=1, tile=(16, 16), photometric="rgb")
        tif.write(rgb[::2, ::2], subfiletype=1, tile=(16, 16), photometric="rgb")


def test_folder_of_ome_tiffs_opened_without_bioformats(tmp_path: Path) -> None:
    root = tmp_path / "share" / "in"
    _ome_tiffs(root)
    (root / ".DS_Store").write_bytes(b"")
    inv = build(root, open_file=_never)
    assert [(d.name, d.reader, d.format, d.series_bytes) for d in inv.datasets] == [
        ("a", "OMETiffReader", "OME-TIFF", (3 * 16 * 24 * 2,)),
        ("rgb", "OMETiffReader", "OME-TIFF", (64 * 64 * 3,)),
        ("run_2_two", "OMETiffReader", "OME-TIFF", (64, 2 * 4 * 4 * 4)),
    ]
    assert [[f.relative_to(root).as_posix() for f in d.files] for d in inv.datasets] == [
        ["a.ome.tif"],
        ["rgb.ome.tif"],
        ["run 2/two.ome.tiff"],
    ]
    assert inv.skipped == [(".DS_Store", HIDDEN)]


@pytest.mark.parametrize(
    "extra",
    ["notes.txt", "run 2/plain.tif", "../experiment_descriptor.xml", "../../x.exp"],
)
def test_any_other_file_sends_every_file_to_bioformats(tmp_path: Path, extra: str) -> None:
    # Another file in the tree, or a plate reader's metadata file in the two folders above
    # it, may claim an OME-TIFF: then Bio-Formats opens every file.
    root = tmp_path / "share" / "in"
    _ome_tiffs(root)
    (root / extra).write_bytes(b"x")
    table = {
        name: ("OMETiffReader", name, [name], 1)
        for name in ("a.ome.tif", "rgb.ome.tif", "run 2/two.ome.tiff")
    }
    scripted = Scripted(root, table)
    build(root, open_file=scripted)
    assert set(table) <= set(scripted.opened)


def test_ome_tiff_tifffile_refuses_goes_to_bioformats_alone(tmp_path: Path) -> None:
    root = tmp_path / "share" / "in"
    _ome_tiffs(root)
    # One file of a set whose OME-XML lists the other four (copied without them), and
    # one that tifffile reads otherwise than Bio-Formats (its Z modulo).
    shutil.copy(EXTRA / "ometiff-companion-binaryonly" / "multifile-Z1.ome.tiff", root)
    shutil.copy(REAL / "ome-tiff" / "mini-spim-moduloZ.ome.tiff", root / "run 2")
    refused = ["multifile-Z1.ome.tiff", "run 2/mini-spim-moduloZ.ome.tiff"]
    scripted = Scripted(root, {name: ("OMETiffReader", name, [name], 1) for name in refused})
    inv = build(root, open_file=scripted)
    assert scripted.opened == refused
    assert len(inv.datasets) == 5


#: Real OME-TIFFs the fast path refuses (tifffile's reading differs, or is not proven).
REFUSED = {"largeimg.ome.tiff", "mini-spim-moduloZ.ome.tiff"}


@pytest.mark.java
@pytest.mark.parametrize(
    "name",
    [p.name for p in sorted((REAL / "ome-tiff").glob("*.ome.tif*"))] + ["synthetic"],
)
def test_tifffile_probe_is_bioformats_probe(tmp_path: Path, name: str) -> None:
    from bioingest.java import start_jvm
    from bioingest.probe import probe
    from bioingest.readers.tiff import ome_probe

    start_jvm()
    if name == "synthetic":
        _ome_tiffs(tmp_path)
        paths = sorted(p for p in tmp_path.rglob("*.ome.tif*"))
    else:
        paths = [tmp_path / name]
        shutil.copy(REAL / "ome-tiff" / name, paths[0])
    for path in paths:
        fast = ome_probe(path)
        if name in REFUSED:
            assert fast is None
        else:
            # In a folder of OME-TIFFs only, as the inventory uses it.
            assert fast == probe(path)


def test_names_from_paths_and_stable() -> None:
    mains = ["a.czi", "a.tif", "x/s.lif", "y/s.lif", "q.ome.tif", "q.ome.tiff", "logs.czi"]
    assert assign_names(mains) == {
        "a.czi": "a_czi",
        "a.tif": "a_tif",
        "x/s.lif": "x_s",
        "y/s.lif": "y_s",
        "q.ome.tif": "q_ome_tif",
        "q.ome.tiff": "q_ome_tiff",
        "logs.czi": "logs_czi",
    }
    # Adding a file never renames a dataset that was named before.
    before = assign_names(["cells.czi", "deep/b.nd2"])
    after = assign_names(["cells.czi", "cells.tif", "deep/b.nd2"], kept=before)
    assert after["cells.czi"] == before["cells.czi"] == "cells"
    assert after["cells.tif"] == "cells_tif"
    assert after["deep/b.nd2"] == "deep_b"
    long = "/".join(["a" * 40] * 4) + "/img.czi"
    assert len(assign_names([long])[long]) <= 80


# -- real Bio-Formats ----------------------------------------------------------------

JAR_MAIN = "loci.formats.tools.ImageConverter"


def _bfconvert(*args: str | Path) -> None:
    from bioingest.java import find_jar

    subprocess.run(
        ["java", "-cp", str(find_jar()), JAR_MAIN, "-no-upgrade", *map(str, args)],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def multifile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Make multi-file acquisitions now, in one folder; return the folder.

    A companion OME-TIFF (split by T and C with Bio-Formats' converter, in a folder with a
    space), MetaMorph .nd, ICS/IDS, a DICOM folder, and the Micro-Manager set of
    real-extra unpacked.
    """
    root = tmp_path_factory.mktemp("multifile")
    source = REAL / "ome-tiff" / "18x24y5z5t2c8b-text.ome-v-Match.ome.tiff"
    nested = root / "nested dir" / "acq 1"
    nested.mkdir(parents=True)
    _bfconvert(
        "-option",
        "ometiff.companion",
        nested / "split.companion.ome",
        source,
        nested / "split_T%t_C%c.ome.tif",
    )
    (root / "ics").mkdir()
    _bfconvert(source, root / "ics" / "x.ids")
    nd = root / "nd"
    nd.mkdir()
    rng = np.random.default_rng(0)
    for w, wave in ((1, "DAPI"), (2, "GFP")):
        tifffile.imwrite(nd / f"run_w{w}{wave}.TIF", rng.integers(0, 4000, (32, 48), np.uint16))
    (nd / "run.nd").write_text(
        '"NDInfoFile", Version 1.0\r\n"DoTimelapse", FALSE\r\n"DoStage", FALSE\r\n'
        '"DoWave", TRUE\r\n"NWavelengths", 2\r\n"WaveName1", "DAPI"\r\n"WaveDoZ1", FALSE\r\n'
        '"WaveName2", "GFP"\r\n"WaveDoZ2", FALSE\r\n"DoZSeries", FALSE\r\n"EndFile"\r\n',
        encoding="ascii",
    )
    shutil.copytree(REAL / "dicom-wsi", root / "dicom")
    mm = root / "mm"
    mm.mkdir()
    for packed in sorted((EXTRA / "micromanager14-mmstack-4pos-gz").glob("*.gz")):
        with gzip.open(packed) as src, open(mm / packed.name.removesuffix(".gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    return root


def _used(path: Path) -> set[Path]:
    """Return the files Bio-Formats uses when pointed at ``path`` (the reference grouping)."""
    from bioingest.java import jimport

    reader = jimport("loci.formats.ImageReader")()
    reader.setId(str(path))
    try:
        return {Path(str(f)).resolve() for f in reader.getUsedFiles()}
    finally:
        reader.close()


EXPECTED = {
    "nested_dir_acq_1_split": ("nested dir/acq 1/split.companion.ome", 11, "OMETiffReader"),
    "ics_x": ("ics/x.ics", 2, "ICSReader"),
    "nd_run": ("nd/run.nd", 3, "MetamorphReader"),
    "dicom_boxes_0": ("dicom/boxes_0.dcm", 2, "DicomReader"),
    "mm_1.4compatTest_3_MMStack_1-Pos_000_000": (
        "mm/1.4compatTest_3_MMStack_1-Pos_000_000.ome.tif",
        8,
        "OMETiffReader",
    ),
}


@pytest.mark.java
def test_multifile_sets_grouped_as_bioformats_groups_them(multifile: Path) -> None:
    datasets = discover(multifile)
    got = {
        d.name: (d.main.relative_to(multifile).as_posix(), len(d.files), d.reader) for d in datasets
    }
    assert got == EXPECTED
    seen: set[Path] = set()
    for d in datasets:
        assert not seen & set(d.files), f"{d.name} shares files with another dataset"
        seen |= set(d.files)
        # Every file Bio-Formats uses from the main file is in the dataset.
        assert _used(d.main) <= {f.resolve() for f in d.files}
    # Every file is in a dataset but comments.txt, which no reader takes.
    listed = {p for p in multifile.rglob("*") if p.is_file()}
    assert listed - seen == {multifile / "mm" / "comments.txt"}


REAL_EXTRA = {
    # folder: (datasets, failed, files of the largest dataset)
    "yokogawa-cv8000-plate": (1, 0, 109),
    "ometiff-companion-binaryonly": (1, 0, 6),
    "olympus-vsi-ets": (1, 0, 2),
    "metaxpress-htd-zmix": (1, 1, 41),
    "metaxpress-htd-1site-bffails": (1, 1, 3),
    "cellomics-c01": (1, 0, 1),
    "mrc-emdb-3001": (1, 0, 1),
    "gatan-dm3-stem": (1, 0, 1),
    "mrc-emdb-3197": (1, 0, 1),
    "aperio-svs-cmu1-jpeg": (1, 0, 1),
    "hamamatsu-ndpi": (1, 0, 1),
    "fei-sem-tiff": (1, 0, 1),
    "zeiss-sem-leo-tiff": (1, 0, 1),
    "tiff-float32-dm-stack": (1, 0, 1),
}


def test_every_real_extra_set_is_covered() -> None:
    # The Micro-Manager set is gzipped upstream: the multifile fixture unpacks it.
    folders = {p.name for p in EXTRA.iterdir() if p.is_dir()}
    assert folders == {*REAL_EXTRA, "micromanager14-mmstack-4pos-gz"}


@pytest.mark.java
@pytest.mark.parametrize("folder", sorted(REAL_EXTRA))
def test_real_extra_sets(folder: str) -> None:
    count, failed, largest = REAL_EXTRA[folder]
    datasets = discover(EXTRA / folder)
    assert len(datasets) == count
    assert sum(1 for d in datasets if d.failure) == failed
    assert max(len(d.files) for d in datasets) == largest
    for d in datasets:
        if d.failure:
            # A set that cannot be read fails once, at its metadata file.
            assert d.main.suffix == ".HTD"
            assert d.main.parent.name.startswith("9987_Plate_")
        else:
            assert d.reader and d.series_bytes
    main = {d.main.name for d in datasets}
    if folder == "olympus-vsi-ets":
        assert main == {"vsi-ets-test-jpg2k.vsi"}
    if folder == "yokogawa-cv8000-plate":
        assert {m.rsplit(".", 1)[1] for m in main} == {"wpi"}


@pytest.mark.java
def test_sample_sheet_main_takes_its_used_files(tmp_path: Path) -> None:
    from bioingest.inventory import read_sheet, sheet_root

    companion = EXTRA / "ometiff-companion-binaryonly"
    sheet = tmp_path / "samples.tsv"
    sheet.write_text(f"dataset\tpath\nz3\t{companion / 'multifile-Z3.ome.tiff'}\n")
    rows = read_sheet(sheet)
    from bioingest.java import start_jvm
    from bioingest.probe import probe

    start_jvm()
    inv = build(sheet_root(rows, sheet), open_file=probe, sheet=rows)
    [d] = inv.datasets
    assert d.name == "z3"
    assert d.main == companion / "multifile-Z3.ome.tiff"
    assert sorted(f.name for f in d.files) == sorted(
        p.name for p in companion.iterdir() if p.suffix in (".ome", ".tiff")
    )


# -- the workflow --------------------------------------------------------------------


@pytest.mark.workflow
@pytest.mark.java
def test_workflow_ingests_acquisitions(multifile: Path, tmp_path: Path) -> None:
    """Check the stores, the inventory and the names of a run over multi-file acquisitions.

    One store per acquisition, every file in inventory.tsv, results next to the raw data
    never taken as input, and names that survive added files.
    """
    inputs = tmp_path / "share"
    shutil.copytree(multifile / "mm", inputs / "mm")
    shutil.copytree(multifile / "nested dir", inputs / "nested dir")
    (inputs / "x.tif").mkdir()
    (inputs / "notes.txt").write_text("hello", encoding="utf-8")
    out = inputs / "results"
    config = {"input_dir": inputs, "output_dir": out}
    run_workflow(tmp_path / "w", config)
    inventory = json.loads((out / "inventory.json").read_text(encoding="utf-8"))
    names = sorted(d["name"] for d in inventory["datasets"])
    assert names == ["mm_1.4compatTest_3_MMStack_1-Pos_000_000", "nested_dir_acq_1_split"]
    assert sorted(p.name for p in out.glob("*/*.ome.zarr")) == [f"{n}.ome.zarr" for n in names]
    rows = (out / "inventory.tsv").read_text(encoding="utf-8").splitlines()
    listed = {r.split("\t")[0] for r in rows[1:]}
    assert {"x.tif/", "notes.txt", "mm/comments.txt", "results/"} <= listed
    assert len(listed) == 9 + 11 + 3
    assert f"results/\tskipped\t\t\t{IN_OUTPUT}\t\t" in rows
    # The four Micro-Manager positions are four series of one store, not four stores.
    mm = out / names[0] / f"{names[0]}.ome.zarr"
    assert json.loads((mm / "OME" / "zarr.json").read_text())["attributes"]["ome"]["series"] == [
        "0",
        "1",
        "2",
        "3",
    ]
    # Results inside the input folder: the rerun finds nothing to do.
    again = run_workflow(tmp_path / "w", config)
    assert "Nothing to be done" in again.stdout + again.stderr
    # A new file whose name collides renames no existing dataset.
    shutil.copy(multifile / "ics" / "x.ics", inputs / "mm")
    shutil.copy(multifile / "ics" / "x.ids", inputs / "mm")
    run_workflow(tmp_path / "w", config)
    inventory = json.loads((out / "inventory.json").read_text(encoding="utf-8"))
    assert sorted(d["name"] for d in inventory["datasets"]) == sorted([*names, "mm_x"])
    assert (out / "logs" / "inventory.log").read_text().count("JVM") <= 1
