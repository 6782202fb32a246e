"""Packaging: package data, version, lock file, project files, and a non-editable install.

The schemas are package data, there is one version, and the non-editable install runs the
workflow.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import numpy as np
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import bioingest
from bioingest.schemas import load_schema, schema_path
from conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
SCHEMAS = ("config.schema.yaml", "samples.schema.yaml", "study.schema.yaml")


def test_schemas_are_package_data() -> None:
    for name in SCHEMAS:
        path = schema_path(name)
        assert path.parent == Path(bioingest.__file__).parent / "schemas"
        assert load_schema(name)["$schema"].startswith("https://json-schema.org/")
    globs = PYPROJECT["tool"]["setuptools"]["package-data"]["bioingest.schemas"]
    assert "*.schema.yaml" in globs
    assert not (REPO / "workflow" / "schemas").exists()
    with pytest.raises(FileNotFoundError):
        schema_path("nonexistent.schema.yaml")


def test_version_written_once() -> None:
    version = PYPROJECT["project"]["version"]
    assert bioingest.__version__ == importlib.metadata.version("bioingest") == version
    # Nowhere else in the project's own files (the changelog's headings aside).
    tracked = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    pattern = re.compile(rf"(?<![\d.]){re.escape(version)}(?![\d.])")
    holders = []
    for rel in tracked:
        path = REPO / rel
        if rel in ("pyproject.toml", "CHANGELOG.md", "requirements.lock") or not path.is_file():
            continue
        if path.suffix not in {".py", ".smk", ".md", ".cff", ".yaml", ".toml", ".cfg", ""}:
            continue
        if pattern.search(path.read_text(encoding="utf-8", errors="replace")):
            holders.append(rel)
    assert holders == []


def _locked() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version, f"not pinned: {line}"
        pins[canonicalize_name(name)] = version
    return pins


def test_lock_pins_every_requirement() -> None:
    """Check that every requirement of pyproject (extras included) is pinned, inside its range.

    Neither bioingest nor the --no-deps python-bioformats is pinned.
    """
    pins = _locked()
    assert "bioingest" not in pins and "python-bioformats" not in pins
    project = PYPROJECT["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += extra
    for line in lines:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} missing from requirements.lock: make lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{req.name}=={pins[name]} outside {req.specifier}"
        )
    header = (REPO / "requirements.lock").read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("# ")


def test_citation_file() -> None:
    """CITATION.cff: the keys CFF 1.2.0 requires, the licence of pyproject, no version of its own.

    ``cffconvert --validate`` passes too; it is not a test dependency, its jsonschema pin
    conflicts with ours.
    """
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0"
    assert {"cff-version", "message", "title", "authors"} <= set(cff)
    assert cff["authors"] and all("name" in a or "family-names" in a for a in cff["authors"])
    assert cff["license"] == PYPROJECT["project"]["license"]
    assert "version" not in cff
    licence = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert licence.startswith("BSD 3-Clause License")
    assert "the bioingest authors" in licence
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in changelog


def _clean_env(venv: Path, xdg: Path) -> dict[str, str]:
    """Return this process's environment with the fresh venv first on PATH.

    Nothing that would bring the checkout's package in is kept (PYTHONPATH, the main venv's
    bin).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    main_bin = str(Path(sys.executable).parent)
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != main_bin]
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *path])
    env["VIRTUAL_ENV"] = str(venv)
    # A JVM server of its own: the checkout's package may run one with the same key.
    env["XDG_RUNTIME_DIR"] = str(xdg)
    return env


@pytest.mark.slow
@pytest.mark.workflow
@pytest.mark.java
def test_non_editable_install_runs_the_workflow(tmp_path: Path) -> None:
    """Run ``pip install .`` into a fresh venv outside the checkout, then the workflow.

    The schemas come from the installed package, and the workflow of the checkout runs with
    it.
    """
    import tifffile
    import zarr

    assert not tmp_path.resolve().is_relative_to(REPO.resolve())
    # A copy of the project's files, so that the build leaves nothing in the checkout.
    source = tmp_path / "source"
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for rel in filter(None, (r.decode() for r in listed)):
        if (REPO / rel).is_file():
            (source / rel).parent.mkdir(parents=True, exist_ok=True)
            (source / rel).write_bytes((REPO / rel).read_bytes())

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The dependencies (and pip) from this environment's site-packages, after the venv's
    # own: a path line in a .pth file is only appended to sys.path, the .pth files in that
    # folder (the editable install's among them) are not read.
    here = sysconfig.get_paths()["purelib"]
    (Path(purelib) / "bioingest-test-deps.pth").write_text(here + "\n", encoding="utf-8")
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    env = _clean_env(venv, xdg)
    # A non-editable install, without dependencies (they are on the .pth path).
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--quiet", str(source)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import json, bioingest; from bioingest.schemas import schema_path;"
            "print(json.dumps([bioingest.__file__, bioingest.__version__,"
            " str(schema_path('config.schema.yaml'))]))",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    package, version, schema = json.loads(probe.stdout)
    assert Path(package).is_relative_to(venv), package
    assert Path(schema).is_relative_to(venv) and Path(schema).is_file()
    assert version == PYPROJECT["project"]["version"]
    url = json.loads(
        next(Path(purelib).glob("bioingest-*.dist-info/direct_url.json")).read_text("utf-8")
    )
    assert not url.get("dir_info", {}).get("editable", False)
    assert (venv / "bin" / "bioingest").is_file()

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    data = np.arange(2 * 48 * 64, dtype=np.uint16).reshape(2, 48, 64)
    tifffile.imwrite(inputs / "tiff.ome.tif", data, ome=True)
    (inputs / "fake&sizeX=64&sizeY=64.fake").touch()
    out = tmp_path / "out"

    def snakemake(*config: str) -> subprocess.CompletedProcess[str]:
        command = [str(python), "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
        command += ["--directory", str(tmp_path / "work"), "--cores", "2"]
        command += ["--config", "min_file_age_s=0", f"input_dir={inputs}", f"output_dir={out}"]
        return subprocess.run(
            [*command, *config], cwd=tmp_path, env=env, capture_output=True, text=True
        )

    # The config is checked against the installed package's schema before any job runs.
    bad = snakemake("no_such_key=1")
    assert bad.returncode != 0
    assert "no_such_key" in bad.stdout + bad.stderr
    assert not out.exists()

    run = snakemake()
    assert run.returncode == 0, f"{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    manifest = (out / "manifest-sha256.txt").read_text(encoding="utf-8")
    assert "tiff/tiff.ome.zarr/zarr.json" in manifest
    level0 = zarr.open_group(out / "tiff" / "tiff.ome.zarr", mode="r")["0"][:]
    assert np.array_equal(level0.squeeze(), data)
    fake = "fake_sizeX_64_sizeY_64"
    assert f"{fake}/{fake}.ome.zarr/zarr.json" in manifest
    assert zarr.open_group(out / fake / f"{fake}.ome.zarr", mode="r")["0"].shape[-2:] == (64, 64)
    # The run's crate names the installed package and the checkout's workflow.
    crate = json.loads((out / "ro-crate-metadata.json").read_text(encoding="utf-8"))
    graph = {e["@id"]: e for e in crate["@graph"]}
    assert graph["#software-bioingest"]["softwareVersion"] == version
    assert (out / "_workflow" / "Snakefile").read_bytes() == (REPO / "Snakefile").read_bytes()
