"""Shared fixtures: real sample data, real workflow runs, a Bio-Formats reference reader."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from bioingest.inventory import Dataset, discover

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"
BIN = Path(sys.executable).parent

# -- test tiers ------------------------------------------------------------------------
# `make test-fast` runs the tests without any of these markers (pyproject.toml). A test
# without `java` cannot start a JVM: every JVM (in this process through JPype, in a
# `bioingest` or `java` subprocess, the Bio-Formats server) reads JAVA_TOOL_OPTIONS and
# refuses the option below, naming it. A test without `workflow` cannot run Snakemake
# through :func:`workflow_command`.
NO_JAVA = "-XX:+TestWithoutJavaMarkerStartedAJVM"
_running: list[pytest.Item] = []
_saved_tool_options = pytest.StashKey[str | None]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    _running[:] = [item]
    if item.get_closest_marker("java") is None:
        item.stash[_saved_tool_options] = os.environ.get("JAVA_TOOL_OPTIONS")
        os.environ["JAVA_TOOL_OPTIONS"] = NO_JAVA
    return (yield)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    try:
        return (yield)
    finally:
        if _saved_tool_options in item.stash:
            saved = item.stash[_saved_tool_options]
            if saved is None:
                os.environ.pop("JAVA_TOOL_OPTIONS", None)
            else:
                os.environ["JAVA_TOOL_OPTIONS"] = saved
        _running.clear()


def manifest_rows() -> list[dict[str, str]]:
    """Return the rows of ``../shared/data/real/MANIFEST.tsv``.

    The list is empty when the folder is missing; the ``real_dir`` fixture then fails every
    test that needs it.
    """
    path = REAL / "MANIFEST.tsv"
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@cache
def real_datasets() -> tuple[Dataset, ...]:
    """Group the real samples into datasets with Bio-Formats (in this process, once)."""
    return tuple(discover(REAL))


@pytest.fixture(scope="session")
def real_dir() -> Path:
    """Return the shared folder of real instrument files; missing data fails, not skips."""
    assert (REAL / "MANIFEST.tsv").is_file(), f"real sample data missing at {REAL}"
    return REAL


def workflow_command(
    workdir: Path, config: Mapping[str, Any], *, extra: Sequence[str] = ()
) -> tuple[list[str], dict[str, str]]:
    """Return the ``snakemake`` command line and environment :func:`run_workflow` uses."""
    if _running and _running[0].get_closest_marker("workflow") is None:
        raise AssertionError(f"{_running[0].nodeid} runs Snakemake: mark it @pytest.mark.workflow")
    cmd = [
        str(BIN / "snakemake"),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        "--config",
        # Test inputs are written just before the run: take them all.
        *[f"{k}={v}" for k, v in {"min_file_age_s": 0, **config}.items()],
        *extra,
    ]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return cmd, env


def run_workflow(
    workdir: Path,
    config: Mapping[str, Any],
    *,
    extra: Sequence[str] = (),
    check: bool = True,
    timeout: float = 1800,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real workflow with ``snakemake`` in ``workdir``; return the finished process.

    ``env`` is added to this process's environment.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cmd, base_env = workflow_command(workdir, config, extra=extra)
    full_env = {**base_env, **(env or {}), "PATH": base_env["PATH"]}
    proc = subprocess.run(
        cmd, cwd=workdir, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({proc.returncode}):\n{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


@pytest.fixture(scope="session")
def real_run(real_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Output folder of one real workflow run over every real sample (NGFF 0.5 defaults)."""
    base = tmp_path_factory.mktemp("real-run")
    out = base / "out"
    run_workflow(base / "work", {"input_dir": real_dir, "output_dir": out})
    return out


class ChannelSeparatorReference:
    """Bio-Formats' own per-channel answer (``ChannelSeparator``): the pixel reference.

    The readers are compared with it; metadata and series come from
    :class:`BioFormatsReader`.
    """

    def __init__(self, path: Path) -> None:
        from bioingest.java import jimport
        from bioingest.readers.bioformats import BioFormatsReader

        self.reader = BioFormatsReader(path)
        self.series = self.reader.series
        self.metadata = self.reader.metadata
        separator = jimport("loci.formats.ChannelSeparator")
        self._sep: Any = separator(jimport("loci.formats.ImageReader")())
        self._sep.setFlattenedResolutions(False)
        self._sep.setId(str(path))

    def __getattr__(self, name: str) -> Any:
        # format_name, ome_xml, used_files… as the project's reader reports them.
        return getattr(self.reader, name)

    def read_tile(
        self, series: int, t: int, c: int, z: int, y: int, x: int, height: int, width: int
    ) -> Any:
        import numpy as np

        sep = self._sep
        sep.setSeries(series)
        raw = sep.openBytes(sep.getIndex(z, c, t), x, y, width, height)
        dtype = np.dtype(self.series[series].dtype)
        order = "<" if sep.isLittleEndian() else ">"
        tile = np.frombuffer(memoryview(raw), dtype=dtype.newbyteorder(order))
        return tile.reshape(height, width).astype(dtype)

    def close(self) -> None:
        self.reader.close()
        self._sep.close()


@pytest.fixture(scope="session")
def bioformats() -> Iterator[Any]:
    """Yield a factory opening a file with Bio-Formats in this process.

    It is the reference reader: tiles as Bio-Formats' ChannelSeparator returns them, one
    channel at a time. Every reader it opened is closed at the end of the session.
    """
    opened: list[ChannelSeparatorReference] = []

    def open_reader(path: Path) -> ChannelSeparatorReference:
        reader = ChannelSeparatorReference(path)
        opened.append(reader)
        return reader

    yield open_reader
    for r in opened:
        r.close()


#: The samples every store layout and viewer is tested on: a multi-channel Z-stack, a
#: multi-series file (bioformats2raw layout), a plate and a label image.
LAYOUT_SAMPLES = {
    "toxo": ("dv/toxo.dv", ""),
    "scenes": ("czi/S3_1Pos_2Mosaic_T2Z3_CH2_sm.czi", ""),
    "plate": ("czi/WellD6-7_S2.czi", ""),
    "labels": ("tiff/3d_monolayer_xy1_ch2_labels.tiff", "nearest"),
}


@pytest.fixture(scope="session")
def target_runs(tmp_path_factory: pytest.TempPathFactory, real_dir: Path) -> dict[str, Path]:
    """Return the output folders of two real runs over :data:`LAYOUT_SAMPLES`.

    ``"0.4"`` is the run with ``target=qupath`` (NGFF 0.4 and an OME-TIFF), ``"0.5"`` the
    run with the default target. Small chunks (128) make the images multiscale.
    """
    base = tmp_path_factory.mktemp("targets")
    sheet = base / "samples.tsv"
    lines = ["dataset\tpath\tpyramid_method"]
    lines += [f"{n}\t{real_dir / p}\t{m}" for n, (p, m) in LAYOUT_SAMPLES.items()]
    sheet.write_text("\n".join(lines) + "\n", encoding="utf-8")
    outs = {}
    for version, target in (("0.4", "qupath"), ("0.5", "archive")):
        out = base / f"out{version}"
        run_workflow(
            base / f"w{version}",
            {"samples": sheet, "output_dir": out, "target": target, "chunk_size": 128},
        )
        outs[version] = out
    return outs
