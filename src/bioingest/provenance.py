"""Provenance: RO-Crates, the BioImage Archive file list and the BagIt hand-off.

The crates are the run's Workflow Run RO-Crate and a crate per OME-Zarr.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bioingest import __version__, atomic, layout
from bioingest.checksum import read_manifest
from bioingest.layout import WORKFLOW_COPY
from bioingest.records import is_failure, read_metadata

PROFILES = [
    "https://w3id.org/ro/wfrun/process/0.5",
    "https://w3id.org/ro/wfrun/workflow/0.5",
    "https://w3id.org/workflowhub/workflow-ro-crate/1.0",
]
#: Optional dependencies (pyproject extras) whose versions the run crate records when they
#: are installed: the cluster executor and the cloud storage the run may have used.
EXTRAS = ("cluster", "cloud")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def dependencies() -> list[str]:
    """Return bioingest's installed direct dependencies (the extras in :data:`EXTRAS` included).

    They are named by their distributions' own names, sorted case-insensitively.
    """
    from packaging.requirements import Requirement

    try:
        requires = importlib.metadata.requires("bioingest") or []
    except importlib.metadata.PackageNotFoundError:
        return []
    names: set[str] = set()
    for line in requires:
        req = Requirement(line)
        if req.marker is not None and not any(
            req.marker.evaluate({"extra": extra}) for extra in EXTRAS
        ):
            continue
        try:
            names.add(importlib.metadata.distribution(req.name).metadata["Name"])
        except importlib.metadata.PackageNotFoundError:
            continue  # an extra that is not installed
    return sorted(names, key=str.lower)


def git_commit(workflow_dir: Path) -> str:
    """Return the git commit of the checkout holding the workflow, or empty when not in one."""
    try:
        out = subprocess.run(
            ["git", "-C", str(workflow_dir), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def java_version() -> str:
    """``java -version`` first line, or empty."""
    java = shutil.which("java")
    if java is None:
        return ""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    lines = (out.stderr or out.stdout).splitlines()
    return lines[0].strip() if lines else ""


def bioformats_version() -> str:
    """Bio-Formats version of the resolved jar (from its manifest, without a JVM)."""
    import zipfile

    from bioingest.java import find_jar

    try:
        with zipfile.ZipFile(find_jar()) as jar:
            text = jar.read("META-INF/MANIFEST.MF").decode("utf-8", "replace")
    except Exception:
        return ""
    for line in text.splitlines():
        if line.startswith(("Implementation-Version:", "Bundle-Version:")):
            return line.split(":", 1)[1].strip()
    return ""


def store_crate(*, name: str, study: dict[str, Any] | None) -> dict[str, Any]:
    """Return a minimal RO-Crate for one OME-Zarr: name, licence, organism and modality."""
    study = study or {}
    root: dict[str, Any] = {
        "@id": "./",
        "@type": "Dataset",
        "name": name,
        "conformsTo": {"@id": "https://w3id.org/ro/crate/1.1"},
    }
    graph: list[dict[str, Any]] = [
        {
            "@id": "ro-crate-metadata.json",
            "@type": "CreativeWork",
            "conformsTo": {"@id": "https://w3id.org/ro/crate/1.1"},
            "about": {"@id": "./"},
        },
        root,
    ]
    if study.get("licence"):
        root["license"] = study["licence"]
    organism = study.get("organism")
    if organism:
        taxon = "http://purl.obolibrary.org/obo/NCBITaxon_" + organism["id"].split(":", 1)[1]
        root["organism_classification"] = {"@id": taxon}
        graph.append({"@id": taxon, "@type": "Taxon", "name": organism["name"]})
    method = study.get("imaging_method")
    if method:
        term = "http://purl.obolibrary.org/obo/FBbi_" + method["id"].split(":", 1)[1]
        root["measurementMethod"] = {"@id": term}
        graph.append({"@id": term, "@type": "DefinedTerm", "name": method["name"]})
    return {"@context": "https://w3id.org/ro/crate/1.1/context", "@graph": graph}


def write_store_crate(store: Path, *, name: str, study: dict[str, Any] | None) -> None:
    """Write ``ro-crate-metadata.json`` inside an OME-Zarr folder."""
    text = json.dumps(store_crate(name=name, study=study), indent=2, ensure_ascii=False)
    atomic.write_text(store / "ro-crate-metadata.json", text + "\n")


def bia_file_list(
    records: list[Path],
    *,
    study: dict[str, Any] | None,
    ome_zarr: bool = True,
    ome_tiff: bool = False,
) -> str:
    """BioImage Archive file list (TSV): first column ``Files``, one deliverable per row.

    Parameters
    ----------
    records
        ``metadata.json`` of every dataset of the run.
    study
        Study metadata (organism, imaging method), if any.
    ome_zarr
        The OME-Zarr stores are delivered (``NAME/NAME.ome.zarr`` rows).
    ome_tiff
        The pyramidal OME-TIFFs are delivered (``NAME/NAME.ome.tif`` rows).
    """
    images = [(layout.store, "OME-Zarr")] if ome_zarr else []
    images += [(layout.ome_tiff, "OME-TIFF")] if ome_tiff else []
    study = study or {}
    organism = (study.get("organism") or {}).get("name", "")
    method = (study.get("imaging_method") or {}).get("name", "")
    rows = ["Files\tDataset\tType\tFormat\tOrganism\tImaging method"]
    for record_path in sorted(records):
        record = read_metadata(record_path)
        if is_failure(record):  # not converted: nothing to deposit
            continue
        name = record["dataset"]
        for path, kind, file_format in (
            *((image("", name), "image", image_format) for image, image_format in images),
            (layout.ome_xml("", name), "metadata", "OME-XML"),
            (layout.metadata("", name), "metadata", "JSON"),
        ):
            rows.append(f"{path}\t{name}\t{kind}\t{file_format}\t{organism}\t{method}")
    return "\n".join(rows) + "\n"


def write_bia_file_list(
    out: Path,
    records: list[Path],
    *,
    failed: Path | None = None,
    study: dict[str, Any] | None = None,
    ome_zarr: bool = True,
    ome_tiff: bool = False,
) -> None:
    """Write the BioImage Archive file list (:func:`bia_file_list`) to ``out``.

    It leaves out the datasets ``failed`` (``failed.tsv``) lists.
    """
    if failed is not None:
        from bioingest.outcomes import read_failures

        left_out = {f.dataset for f in read_failures(failed)}
        records = [r for r in records if layout.name_of_record(r) not in left_out]
    atomic.write_text(
        out, bia_file_list(records, study=study, ome_zarr=ome_zarr, ome_tiff=ome_tiff)
    )


#: The workflow's own files, copied into the run's crate so that it names exactly what ran.
WORKFLOW_FILES = ("Snakefile", "workflow", "config/config.yaml")
#: Configuration keys holding paths of this machine: the crate keeps their last part only.
PATH_KEYS = ("input_dir", "samples", "output_dir", "study", "bioformats_jar")


def _workflow_files(workflow_dir: Path) -> list[Path]:
    """Every file of the workflow definition, relative to ``workflow_dir``, sorted."""
    files: list[Path] = []
    for name in WORKFLOW_FILES:
        path = workflow_dir / name
        found = sorted(path.rglob("*")) if path.is_dir() else [path]
        files += [f.relative_to(workflow_dir) for f in found if f.is_file()]
    return [f for f in files if "__pycache__" not in f.parts]


def copy_workflow(out_dir: Path, workflow_dir: Path) -> list[Path]:
    """Copy the workflow definition into ``OUT/_workflow``; return the copied files.

    The copied files returned are relative to ``out_dir``.

    ``workflow_dir`` is the folder of the Snakefile that ran (the rule passes Snakemake's
    ``workflow.basedir``): the package may be installed anywhere, apart from it.
    """
    if not (workflow_dir / "Snakefile").is_file():
        raise FileNotFoundError(workflow_dir / "Snakefile")
    files = _workflow_files(workflow_dir)
    with atomic.atomic_dir(layout.workflow_copy(out_dir)) as tmp:
        for rel in files:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(workflow_dir / rel, tmp / rel)
    return [Path(WORKFLOW_COPY) / rel for rel in files]


def _portable_config(config: dict[str, Any]) -> dict[str, Any]:
    """Return the configuration without this machine's folders (their last part is kept)."""
    return {
        key: Path(str(value)).name if key in PATH_KEYS and value else value
        for key, value in config.items()
    }


def _sources_root(sources: list[Path], config: dict[str, Any]) -> Path:
    """Return the folder sources are named relative to.

    That is the input folder (or the sample sheet's folder) when every source lies in it,
    else the sources' common folder.
    """
    resolved = [Path(os.path.abspath(s)) for s in sources]
    for key, pick in (("input_dir", Path), ("samples", lambda p: Path(p).parent)):
        value = str(config.get(key) or "")
        if value and "://" not in value:
            root = Path(os.path.abspath(pick(value)))
            if all(s.is_relative_to(root) for s in resolved):
                return root
    if not resolved:
        return Path(".")
    return Path(os.path.commonpath([s.parent for s in resolved]))


def delivered_images(config: dict[str, Any]) -> str:
    """Name the images a run with ``config`` delivers: OME-Zarr, OME-TIFF, or both."""
    from bioingest.targets import from_config

    settings = from_config(config)
    kinds = ["OME-Zarr"] if settings.ome_zarr else []
    kinds += ["pyramidal OME-TIFF"] if settings.ome_tiff else []
    return " and ".join(kinds)


def run_crate(
    out_dir: Path,
    *,
    sources: list[Path],
    config: dict[str, Any],
    study: dict[str, Any] | None,
    fixity: Sequence[Path] = (),
    started: str = "",
    sources_root: Path | None = None,
    workflow_dir: Path | None = None,
) -> dict[str, Any]:
    """Return the Workflow Run Crate (RO-Crate 1.1, as JSON-LD) describing one run.

    Everything is named without this machine's paths: outputs relative to ``out_dir``,
    sources relative to the input folder (``#source/REL`` with size and SHA-256), the
    workflow by its copy in ``_workflow/`` (see :func:`copy_workflow`), its version and git
    commit, and the versions of the libraries that did the work.

    Parameters
    ----------
    out_dir
        The run's output folder, holding ``manifest-sha256.txt`` and ``_workflow/``.
    sources
        Every input file (main files and companions).
    config
        The workflow configuration used.
    study
        Validated study metadata, or ``None``.
    fixity
        ``source-sha256.txt`` files (paths relative to ``sources_root``): a source they
        list takes its checksum from them (the manifest step has just re-checked it);
        the others are hashed.
    started
        ISO time the run started, if known.
    sources_root
        Folder sources are named relative to; default: the input folder in ``config``.
    workflow_dir
        Folder of the Snakefile that ran, for its git commit (none recorded without it).
    """
    from rocrate.model.contextentity import ContextEntity
    from rocrate.rocrate import ROCrate

    from bioingest.checksum import sha256_file

    # RO-Crate 1.1: the version the Workflow Run Crate 0.5 profile builds on.
    crate = ROCrate(version="1.1")
    # The 1.1 context has no checksum term; this is the one later RO-Crate contexts use.
    crate.metadata.extra_terms["sha256"] = "http://schema.org/sha256"
    crate.name = f"bioingest run: {out_dir.name}"
    images = delivered_images(config)
    crate.description = f"Microscopy files converted to {images} by the bioingest workflow."
    crate.root_dataset["conformsTo"] = [{"@id": p} for p in PROFILES]
    for profile in PROFILES:
        name, version = profile.rstrip("/").rsplit("/", 2)[-2:]
        crate.add(
            ContextEntity(
                crate,
                profile,
                properties={"@type": "CreativeWork", "name": name, "version": version},
            )
        )
    crate.license = (study or {}).get("licence") or (
        "not stated: set 'licence' in the study metadata (config key 'study')"
    )
    commit = git_commit(workflow_dir) if workflow_dir is not None else ""
    language = crate.add(
        ContextEntity(
            crate,
            "https://w3id.org/workflowhub/workflow-ro-crate#snakemake",
            properties={
                "@type": "ComputerLanguage",
                "name": "Snakemake",
                "identifier": {"@id": "https://snakemake.readthedocs.io"},
                "url": {"@id": "https://snakemake.github.io"},
                "version": _version("snakemake"),
            },
        )
    )
    main = layout.join(layout.workflow_copy(""), "Snakefile")
    if not (out_dir / main).is_file():
        raise FileNotFoundError(out_dir / main)
    workflow: Any = None
    for path in sorted(layout.workflow_copy(out_dir).rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(out_dir).as_posix()
        properties: dict[str, Any] = {
            "contentSize": path.stat().st_size,
            "sha256": sha256_file(path),
        }
        if rel == main:
            properties |= {
                "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow"],
                "name": "bioingest",
                "version": __version__,
                "programmingLanguage": {"@id": language.id},
            }
            if commit:
                # The commit names the workflow and the package that ran; the copy is
                # its definition as run.
                properties["identifier"] = f"git commit {commit}"
        entity = crate.add_file(dest_path=rel, properties=properties)
        if rel == main:
            workflow = entity
    crate.root_dataset["mainEntity"] = workflow
    software = [
        ("bioingest", __version__),
        ("Bio-Formats", bioformats_version()),
        ("Java", java_version()),
        ("Python", platform.python_version()),
    ]
    # Every direct dependency as installed (pyproject gives ranges; this is what ran).
    software += [(d, _version(d)) for d in dependencies()]
    tools = []
    for name, version in software:
        tools.append(
            crate.add(
                ContextEntity(
                    crate,
                    f"#software-{name}",
                    properties={
                        "@type": "SoftwareApplication",
                        "name": name,
                        "softwareVersion": version,
                    },
                )
            )
        )
    workflow["softwareRequirements"] = tools
    config_entity = crate.add(
        ContextEntity(
            crate,
            "#config",
            properties={
                "@type": "PropertyValue",
                "name": "workflow configuration",
                "value": json.dumps(_portable_config(config), sort_keys=True, default=str),
            },
        )
    )
    root = sources_root or _sources_root(sources, config)
    recorded = {rel: digest for path in fixity for rel, digest in read_manifest(path).items()}
    inputs = []
    for src in sources:
        rel = Path(os.path.relpath(os.path.abspath(src), root)).as_posix()
        # Not in the crate's folder: described, not contained (a contextual entity).
        entity = ContextEntity(
            crate,
            f"#source/{rel}",
            properties={
                "@type": "File",
                "name": rel,
                "description": "source file, named relative to the input folder",
                "contentSize": src.stat().st_size,
                "sha256": recorded.get(rel) or sha256_file(src),
            },
        )
        inputs.append(crate.add(entity))
    manifest = read_manifest(layout.manifest(out_dir))
    outputs = []
    for rel, digest in sorted(manifest.items()):
        outputs.append(
            crate.add_file(
                dest_path=rel,
                properties={
                    "contentSize": (out_dir / rel).stat().st_size,
                    "sha256": digest,
                },
            )
        )
    if study:
        crate.root_dataset["about"] = [
            crate.add(
                ContextEntity(
                    crate,
                    f"#study-{key}",
                    properties={
                        "@type": "PropertyValue",
                        "name": key,
                        "value": json.dumps(study[key]),
                    },
                )
            )
            for key in sorted(study)
        ]
    action = crate.add_action(
        workflow,
        identifier="#run",
        object=inputs,
        result=outputs,
        properties={"name": "bioingest run", "endTime": datetime.now(UTC).isoformat()},
    )
    if started:
        action["startTime"] = started
    action["instrument"] = workflow
    action["actionStatus"] = {"@id": "http://schema.org/CompletedActionStatus"}
    action["object"] = [*inputs, config_entity]
    action["description"] = (
        f"Conversion of the sources to {images} with metadata, QC and checksums."
    )
    crate.root_dataset["mentions"] = action
    crate.metadata["conformsTo"] = [
        {"@id": "https://w3id.org/ro/crate/1.1"},
        {"@id": "https://w3id.org/workflowhub/workflow-ro-crate/1.0"},
    ]
    metadata: dict[str, Any] = crate.metadata.generate()
    return metadata


def write_run_crate(out_dir: Path, *, workflow_dir: Path, **kwargs: Any) -> Path:
    """Copy the workflow in ``workflow_dir`` into the output folder, then write the run crate.

    The run crate is ``ro-crate-metadata.json`` at the output folder's top.
    """
    copy_workflow(out_dir, workflow_dir)
    target = layout.run_crate(out_dir)
    crate = run_crate(out_dir, workflow_dir=workflow_dir, **kwargs)
    text = json.dumps(crate, indent=2, ensure_ascii=False)
    atomic.write_text(target, text + "\n")
    return target


def make_bag(out_dir: Path, *, threads: int = 2) -> None:
    """Turn the output folder into a BagIt bag in place (payload moves into ``data/``)."""
    import bagit

    bagit.make_bag(
        str(out_dir),
        {"Source-Organization": "bioingest"},
        processes=max(1, threads),
        checksums=["sha256"],
    )
    os.sync()
