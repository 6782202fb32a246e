"""Provenance: the run's Workflow Run RO-Crate, a crate per OME-Zarr, the BioImage Archive
file list and the BagIt hand-off."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bioingest import __version__, atomic
from bioingest.checksum import MANIFEST, read_manifest

WORKFLOW_DIR = Path(__file__).resolve().parents[2]
PROFILES = [
    "https://w3id.org/ro/wfrun/process/0.5",
    "https://w3id.org/ro/wfrun/workflow/0.5",
    "https://w3id.org/workflowhub/workflow-ro-crate/1.0",
]
#: Python distributions whose versions the run crate records.
SOFTWARE = ("zarr", "tifffile", "numpy", "snakemake", "scyjava", "JPype1", "ome-zarr-models")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def git_commit() -> str:
    """The workflow's git commit, or empty when not in a checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(WORKFLOW_DIR), "rev-parse", "HEAD"],
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
    """A minimal RO-Crate for one OME-Zarr: name, licence, organism and modality."""
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


def bia_file_list(records: list[Path], *, study: dict[str, Any] | None) -> str:
    """BioImage Archive file list (TSV): first column ``Files``, one deliverable per row.

    Parameters
    ----------
    records
        ``metadata.json`` of every dataset of the run.
    study
        Study metadata (organism, imaging method), if any.
    """
    study = study or {}
    organism = (study.get("organism") or {}).get("name", "")
    method = (study.get("imaging_method") or {}).get("name", "")
    rows = ["Files\tDataset\tType\tFormat\tOrganism\tImaging method"]
    for record_path in sorted(records):
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if "failure" in record:  # not converted: nothing to deposit
            continue
        name = record["dataset"]
        rows.append(f"{name}/{name}.ome.zarr\t{name}\timage\tOME-Zarr\t{organism}\t{method}")
        rows.append(f"{name}/{name}.ome.xml\t{name}\tmetadata\tOME-XML\t{organism}\t{method}")
        rows.append(f"{name}/metadata.json\t{name}\tmetadata\tJSON\t{organism}\t{method}")
    return "\n".join(rows) + "\n"


def run_crate(
    out_dir: Path,
    *,
    sources: list[Path],
    config: dict[str, Any],
    study: dict[str, Any] | None,
    started: str = "",
) -> dict[str, Any]:
    """The Workflow Run Crate (as JSON-LD) describing one run of the workflow.

    Parameters
    ----------
    out_dir
        The run's output folder, holding ``manifest-sha256.txt``.
    sources
        Every input file (main files and companions).
    config
        The workflow configuration used.
    study
        Validated study metadata, or ``None``.
    started
        ISO time the run started, if known.
    """
    from rocrate.model.contextentity import ContextEntity
    from rocrate.rocrate import ROCrate

    from bioingest.checksum import sha256_file

    crate = ROCrate()
    crate.name = f"bioingest run: {out_dir.name}"
    crate.description = "Microscopy files converted to OME-Zarr by the bioingest workflow."
    crate.root_dataset["conformsTo"] = [{"@id": p} for p in PROFILES]
    if study and study.get("licence"):
        crate.license = study["licence"]
    commit = git_commit()
    language = crate.add(
        ContextEntity(
            crate,
            "#snakemake",
            properties={
                "@type": "ComputerLanguage",
                "name": "Snakemake",
                "url": "https://snakemake.github.io",
                "version": _version("snakemake"),
            },
        )
    )
    workflow = crate.add(
        ContextEntity(
            crate,
            (WORKFLOW_DIR / "Snakefile").as_uri(),
            properties={
                "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow"],
                "name": "bioingest",
                "version": commit or __version__,
                "programmingLanguage": language,
            },
        )
    )
    crate.root_dataset["mainEntity"] = workflow
    software = [
        ("bioingest", __version__),
        ("Bio-Formats", bioformats_version()),
        ("Java", java_version()),
        ("Python", platform.python_version()),
    ]
    software += [(d, _version(d)) for d in SOFTWARE]
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
                "value": json.dumps(config, sort_keys=True, default=str),
            },
        )
    )
    inputs = [
        crate.add(
            ContextEntity(
                crate,
                src.resolve().as_uri(),
                properties={
                    "@type": "File",
                    "name": src.name,
                    "contentSize": src.stat().st_size,
                    "sha256": sha256_file(src),
                },
            )
        )
        for src in sources
    ]
    manifest = read_manifest(out_dir / MANIFEST)
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
    metadata: dict[str, Any] = crate.metadata.generate()
    return metadata


def write_run_crate(out_dir: Path, **kwargs: Any) -> Path:
    """Write ``ro-crate-metadata.json`` at the top of the output folder."""
    target = out_dir / "ro-crate-metadata.json"
    text = json.dumps(run_crate(out_dir, **kwargs), indent=2, ensure_ascii=False)
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
