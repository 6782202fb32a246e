"""Stage 5: source fixity, the output manifest (BagIt format) and ``verify``.

A manifest line is ``<sha256>  <path>``: the path relative to the output folder with
``/`` separators, percent-encoding ``%``, CR and LF as BagIt requires; lines are sorted
by path, so two runs that wrote the same bytes write the same manifest.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bioingest import atomic, layout
from bioingest.records import is_failure, read_metadata, recorded_pixel_hash

log = logging.getLogger("bioingest")

_READ = 4 * 1024 * 1024


def sha256_file(path: Path) -> str:
    """SHA-256 hex digest of a file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_READ):
            digest.update(block)
    return digest.hexdigest()


def hash_files(paths: Iterable[Path], *, threads: int = 2) -> list[str]:
    """Digests of ``paths`` in order, hashed in parallel (hashlib releases the GIL)."""
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(sha256_file, paths))


def _encode(rel: str) -> str:
    return rel.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _decode(rel: str) -> str:
    return rel.replace("%0A", "\n").replace("%0D", "\r").replace("%25", "%")


def format_manifest(entries: dict[str, str]) -> str:
    """BagIt manifest text for ``{relative path: sha256}``, sorted by path."""
    return "".join(f"{entries[rel]}  {_encode(rel)}\n" for rel in sorted(entries))


def read_manifest(path: Path) -> dict[str, str]:
    """``{relative path: sha256}`` from a BagIt-format manifest."""
    entries = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ValueError(f"{path}: line {number} is not '<sha256>  <path>'")
        entries[_decode(rel)] = digest
    return entries


def write_source_fixity(
    files: list[Path],
    *,
    root: Path,
    out: Path,
    known: dict[str, str] | None = None,
    threads: int = 2,
) -> None:
    """Record the SHA-256 of a dataset's source files, paths relative to the input root.

    Parameters
    ----------
    files
        Main file and the files it uses.
    root
        Input folder (or the sample sheet's folder) the paths are made relative to.
    out
        ``source-sha256.txt`` to write.
    known
        Digests the inventory recorded before any reader opened the files (by relative
        path); files without one are hashed now.
    """
    rels = [
        Path(os.path.relpath(os.path.abspath(f), os.path.abspath(root))).as_posix() for f in files
    ]
    known = {rel: digest for rel, digest in (known or {}).items() if digest}
    todo = [(rel, f) for rel, f in zip(rels, files, strict=True) if rel not in known]
    digests = dict(known)
    digests.update(
        zip([r for r, _ in todo], hash_files([f for _, f in todo], threads=threads), strict=True)
    )
    atomic.write_text(out, format_manifest({rel: digests[rel] for rel in rels}))


def check_sources(fixity: Path, *, root: Path, threads: int = 2) -> list[str]:
    """One line per source file that is missing or changed since ``fixity`` was written."""
    expected = read_manifest(fixity)
    problems = []
    present = [rel for rel in sorted(expected) if (root / rel).is_file()]
    problems += [f"source missing: {root / rel}" for rel in sorted(expected) if rel not in present]
    digests = hash_files([root / rel for rel in present], threads=threads)
    for rel, digest in zip(present, digests, strict=True):
        if digest != expected[rel]:
            problems.append(f"source changed: {root / rel}")
    return problems


def _files_below(path: Path, out_dir: Path) -> list[str]:
    """Files at or below ``path`` (relative to ``out_dir``), partial writes left out."""
    if path.is_file():
        found = [path]
    else:
        found = []
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if not d.endswith(".partial"))
            found += [Path(dirpath) / n for n in filenames]
    rels = [Path(os.path.relpath(f, out_dir)).as_posix() for f in found]
    return [
        r
        for r in rels
        if r not in layout.NOT_LISTED
        and not r.endswith(".partial")
        and r.rsplit("/", 1)[-1] != layout.SNAKEMAKE_MARK
    ]


def run_files(out_dir: Path, outputs: list[Path]) -> list[str]:
    """Return this run's files: ``outputs`` (files and folders) and the logs of their steps.

    A dataset is a first-level folder of ``out_dir`` that holds one of ``outputs``: every
    file its steps write is listed (:func:`bioingest.layout.dataset_files`), and the logs
    of its steps (:func:`bioingest.layout.step_logs`).
    The log of the step that wrote each run-level output is listed too. No folder of
    ``out_dir`` is searched for other files: folders left by earlier runs whose inputs
    are gone are not this run's, and are never listed.
    """
    rels: set[str] = set()
    datasets: set[str] = set()
    logs: list[Path] = []
    for path in outputs:
        rel = Path(os.path.relpath(path, out_dir)).as_posix()
        top = rel.split("/", 1)[0]
        if "/" in rel and top not in layout.RUN_FOLDERS:
            datasets.add(top)
        rels.update(_files_below(path, out_dir))
        step_log = layout.run_level_log(out_dir, rel)
        if step_log is not None:
            logs.append(step_log)
    for name in sorted(datasets):
        # Every file its steps write is that dataset's (OME-XML, fixity, thumbnails).
        for path in layout.dataset_files(out_dir, name):
            if path.exists():
                rels.update(_files_below(path, out_dir))
        logs += layout.step_logs(out_dir, name)
    for log_file in logs:
        for found in (log_file, layout.trace_of(log_file)):
            if found.is_file():
                rels.update(_files_below(found, out_dir))
    return sorted(rels)


def output_files(out_dir: Path) -> list[str]:
    """Every file under ``out_dir`` that a manifest could list (relative, sorted)."""
    rels = []
    for dirpath, dirnames, filenames in os.walk(out_dir):
        dirnames[:] = sorted(
            d for d in dirnames if not d.endswith(".partial") and not d.startswith(".")
        )
        if Path(dirpath) == out_dir:
            work = (layout.INTERMEDIATE, layout.WORKFLOW_COPY)
            dirnames[:] = [d for d in dirnames if d not in work]
        for name in filenames:
            rel = Path(os.path.relpath(Path(dirpath) / name, out_dir)).as_posix()
            listed = rel not in layout.NOT_LISTED and name != layout.SNAKEMAKE_MARK
            if listed and not name.endswith(".partial"):
                rels.append(rel)
    return sorted(rels)


def write_run_manifest(
    out_dir: Path,
    outputs: list[Path],
    *,
    fixity: list[Path],
    failed: Path | None = None,
    sources_root: Path | None = None,
    threads: int = 2,
    out: Path | None = None,
) -> Path:
    """Run the manifest step: re-check the sources while the run's files are hashed.

    The manifest is written only once every source is found unchanged.

    Parameters
    ----------
    out_dir
        The run's output folder.
    outputs
        The deliverables the rule declares (files and folders); see :func:`run_files`.
    fixity
        ``source-sha256.txt`` of every dataset: their sources are re-checked first.
    failed
        ``failed.tsv``: the files of the datasets it lists are left out.
    sources_root
        Input folder the sources are re-checked in; None checks none.
    threads
        Parallel hashing threads.
    out
        Manifest to write (default: ``OUT/manifest-sha256.txt``).

    Raises
    ------
    IngestError
        When a source is missing or changed since the run recorded it.
    """
    from bioingest.errors import IngestError
    from bioingest.outcomes import read_failures

    left_out = {f.dataset for f in read_failures(failed)} if failed is not None else set()
    kept = [p for p in outputs if _dataset_of(p, out_dir) not in left_out]
    records = [f for f in fixity if _dataset_of(f, out_dir) not in left_out]

    def recheck() -> list[str]:
        if sources_root is None:
            return []
        return [p for f in records for p in check_sources(f, root=sources_root, threads=threads)]

    # The sources (often the largest files) are re-read on a thread of their own while
    # the run's files are hashed: both cores stay busy.
    with ThreadPoolExecutor(max_workers=1) as side:
        checked = side.submit(recheck)
        rels = run_files(out_dir, kept)
        log.info("manifest: hashing %d files with %d threads", len(rels), threads)
        digests = hash_files([out_dir / r for r in rels], threads=threads)
        problems = checked.result()
    if problems:
        raise IngestError(out_dir, "sources changed during the run: " + "; ".join(problems))
    target = out or layout.manifest(out_dir)
    atomic.write_text(target, format_manifest(dict(zip(rels, digests, strict=True))))
    return target


def _dataset_of(path: Path, out_dir: Path) -> str:
    """Return the first folder of ``path`` below ``out_dir`` (a dataset's name, or '')."""
    parts = path.relative_to(out_dir).parts
    return parts[0] if len(parts) > 1 else ""


def store_pixel_hashes(store: Path) -> list[str]:
    """Pixel-content hash of level 0 of every image in an OME-Zarr, in series order."""
    # Here: the inventory hashes files with this module, and needs no Zarr.
    import zarr

    from bioingest.pixelhash import pixel_hash
    from bioingest.store import image_paths

    root = zarr.open_group(store, mode="r")
    hashes = []
    for path in image_paths(root):
        group = root[path] if path else root
        assert isinstance(group, zarr.Group)
        hashes.append(pixel_hash(group["0"]))
    return hashes


def _pixel_problems(out_dir: Path, records: list[str]) -> list[str]:
    problems = []
    for record_path in (out_dir / rel for rel in records):
        record = read_metadata(record_path)
        if is_failure(record):
            continue  # a dataset that was not converted has no pixels
        name = record["dataset"]
        store = layout.store(record_path.parent.parent, name)
        tiff = layout.ome_tiff(record_path.parent.parent, name)
        if store.is_dir():
            actual = store_pixel_hashes(store)
        elif tiff.is_file():
            # The OME-TIFF delivered alone (ome_zarr: false): its level 0 is checked.
            from bioingest.ometiff import tiff_pixel_hashes

            actual = tiff_pixel_hashes(tiff)
        else:
            problems.append(f"missing: {layout.store('', name)}")
            continue
        expected = [recorded_pixel_hash(s) for s in record["series"]]
        if len(actual) != len(expected):
            problems.append(f"pixels changed: {name} has {len(actual)} images, not {len(expected)}")
            continue
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            if a != e:
                problems.append(f"pixels changed: {name} series {i}")
    return problems


def verify(
    out_dir: Path,
    *,
    against: Path | None = None,
    pixels: bool = False,
    sources_root: Path | None = None,
    threads: int = 2,
) -> list[str]:
    """Compare an output folder with its manifest; return one line per problem.

    Parameters
    ----------
    out_dir
        Output folder of a run.
    against
        Another manifest to compare with (e.g. a published one); default: the folder's own.
    pixels
        Compare OME-Zarr stores by pixel content (hashes in ``metadata.json``) instead of
        bytes, so re-chunked or re-compressed stores still verify. Where only the
        OME-TIFF was delivered (``ome_zarr: false``) its level-0 pixels are compared with
        those hashes, and its bytes with the manifest as every other file's.
    sources_root
        Input folder: when given, sources are re-checked against ``source-sha256.txt``.
    threads
        Parallel hashing threads.
    """
    manifest = against or layout.manifest(out_dir)
    if not manifest.is_file():
        return [f"missing: {manifest}"]
    expected = read_manifest(manifest)
    # Only the run's own areas: folders of datasets the manifest does not know (left by
    # an earlier run whose inputs are gone) are not this run's.
    tops = {rel.split("/", 1)[0] for rel in expected}
    log_dirs = {"/".join(rel.split("/")[:2]) for rel in expected if rel.count("/") >= 2}
    actual = {
        rel
        for rel in output_files(out_dir)
        if rel.split("/", 1)[0] in tops
        and (
            not rel.startswith(f"{layout.LOGS}/")
            or rel.count("/") == 1
            or "/".join(rel.split("/")[:2]) in log_dirs
        )
    }

    def in_store(rel: str) -> bool:
        return pixels and f"{layout.STORE_SUFFIX}/" in rel

    problems = [
        f"missing: {rel}" for rel in sorted(expected) if rel not in actual and not in_store(rel)
    ]
    problems += [f"extra: {rel}" for rel in sorted(actual - set(expected)) if not in_store(rel)]
    common = [rel for rel in sorted(expected) if rel in actual and not in_store(rel)]
    for rel, digest in zip(
        common, hash_files([out_dir / r for r in common], threads=threads), strict=True
    ):
        if digest != expected[rel]:
            problems.append(f"changed: {rel}")
    if pixels:
        records = sorted(
            r for r in expected if r.count("/") == 1 and r.endswith(f"/{layout.METADATA}")
        )
        problems += _pixel_problems(out_dir, records)
    if sources_root is not None:
        for rel in sorted(r for r in expected if r.endswith(f"/{layout.SOURCE_FIXITY}")):
            problems += check_sources(out_dir / rel, root=sources_root, threads=threads)
    return problems
