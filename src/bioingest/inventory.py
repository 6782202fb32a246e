"""Find the datasets to ingest: one per acquisition, grouped as Bio-Formats groups it.

A dataset is what one Bio-Formats ``setId`` opens: its main file plus ``getUsedFiles()``.
The inventory builds them the way OMERO's importer builds its import candidates:

1. List every file below ``input_dir``. Hidden files, folders, files inside the output
   folder and files modified in the last ``min_age_s`` seconds are skipped, each with
   its reason. Every other file is hashed (SHA-256) before anything opens it.
2. In path order (shallow files first), open each file that no acquisition has claimed
   yet; it claims the files it uses. Two openings that share a file are one acquisition:
   the one with more series (then more files, then the smaller main path) leads, and the
   other's files join it.
3. A file no reader recognises is skipped, unless an acquisition claims it. A file that
   a reader recognises but cannot open fails; failed files that the same reader picked
   are attributed to the topmost metadata file of that reader (a plate's ``.HTD``
   rather than each of its TIFFs), so an unreadable set fails as one dataset.

Naming rules (documented in the README): a dataset is named after its main file's path
relative to the input root, folders joined by ``_``, image extension dropped
(``2024/cells.ome.tiff`` -> ``2024_cells``), made safe (accents dropped, anything
outside ``A-Z a-z 0-9 . _ -`` becomes ``_``). Only paths that differ in their
extension or in characters that are not kept can meet; such names get the extension,
then a short hash of the relative path. A name once given to a main file is kept while
that file is unchanged, so adding files never renames an existing dataset.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import stat
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema

from bioingest import atomic, layout
from bioingest.errors import IngestError
from bioingest.probe import OME_TIFF_SUFFIXES, Probe
from bioingest.schemas import load_schema

log = logging.getLogger("bioingest")

#: File endings of image formats (lower case): used to drop the extension from names,
#: and to fail, rather than skip, an image file that no reader can open.
SUFFIXES = (
    ".ome.tiff",
    ".ome.tif",
    ".ome.btf",
    ".ome.tf2",
    ".ome.tf8",
    ".ome.xml",
    ".companion.ome",
    ".ome",
    ".tif",
    ".tiff",
    ".btf",
    ".tf2",
    ".tf8",
    ".czi",
    ".nd2",
    ".lif",
    ".lof",
    ".lsm",
    ".dv",
    ".r3d",
    ".ics",
    ".ids",
    ".svs",
    ".scn",
    ".ndpi",
    ".vsi",
    ".ets",
    ".dcm",
    ".dicom",
    ".spe",
    ".ims",
    ".oib",
    ".oif",
    ".lei",
    ".zvi",
    ".stk",
    ".nd",
    ".htd",
    ".wpi",
    ".mrc",
    ".map",
    ".st",
    ".sld",
    ".lms",
    ".mvd2",
    ".ipl",
    ".ipw",
    ".fli",
    ".pic",
    ".obf",
    ".msr",
    ".sdt",
    ".dm3",
    ".dm4",
    ".c01",
    ".jp2",
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".fake",
    ".img",
    ".hdr",
    ".nii",
    ".fits",
    ".xdce",
    ".mnc",
    ".afi",
    ".qptiff",
    ".bif",
    ".mrxs",
    ".fdf",
    ".ch5",
    ".pnl",
    ".im3",
    ".vws",
)
#: TIFF-family endings: pixel files that a metadata file beside them may take over.
_PIXEL_SUFFIXES = (".tif", ".tiff", ".btf", ".tf2", ".tf8")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: Names of the output folder's own first-level folders.
RESERVED = frozenset({layout.LOGS, layout.SUMMARY, layout.INTERMEDIATE})
#: Longest dataset name made from a path (a folder name, and part of file names).
MAX_NAME = 80
#: Version of the cache layout; a cache of another version is ignored.
CACHE_VERSION = 1

# Skip reasons, as written to inventory.tsv.
HIDDEN = "hidden"
FOLDER = "a folder, not a file"
UNRECOGNISED = "no reader recognises it"
IN_OUTPUT = "inside the output folder"


def recent(seconds: float) -> str:
    """Return the skip reason of a file modified less than ``seconds`` ago."""
    return f"modified in the last {seconds:g} s (may still be written)"


@dataclass(frozen=True)
class Dataset:
    """One acquisition: the file a reader opens, plus every file that belongs to it."""

    name: str
    main: Path
    files: tuple[Path, ...]
    pyramid_method: str = ""
    #: Size of all files on disk (what the cluster requests of ``convert`` scale with).
    nbytes: int = 0
    #: URL scheme of remote files (``s3``); their paths are then ``bucket/key``.
    scheme: str = ""
    #: SHA-256 of each of ``files`` (same order), recorded before any reader opened them.
    sha256: tuple[str, ...] = ()
    #: Bio-Formats' format name and reader class for the main file.
    format: str = ""
    reader: str = ""
    #: Pixel bytes of each series (from the headers).
    series_bytes: tuple[int, ...] = ()
    #: Why the acquisition cannot be read (empty when it can).
    failure: str = ""

    def location(self, path: Path) -> str:
        """Return a local path as text, or the URL of a remote file."""
        return f"{self.scheme}://{path.as_posix()}" if self.scheme else str(path)

    @property
    def single_file(self) -> bool:
        """True when the acquisition is its main file alone."""
        return len(self.files) == 1


@dataclass
class Inventory:
    """Every file below the input root: the datasets, and the files skipped and why."""

    root: Path
    datasets: list[Dataset] = field(default_factory=list)
    #: ``(relative path, reason)`` of every file that belongs to no dataset.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: ``relative path -> (size, sha256)`` of every hashed file.
    files: dict[str, tuple[int, str]] = field(default_factory=dict)
    scheme: str = ""
    _by_name: dict[str, Dataset] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> list[Dataset]:
        """Datasets that can be read."""
        return [d for d in self.datasets if not d.failure]

    @property
    def failed(self) -> list[Dataset]:
        """Datasets that cannot be read."""
        return [d for d in self.datasets if d.failure]

    @property
    def by_name(self) -> dict[str, Dataset]:
        """Datasets by name."""
        if len(self._by_name) != len(self.datasets):
            self._by_name = {d.name: d for d in self.datasets}
        return self._by_name

    def rel(self, path: Path) -> str:
        """``path`` relative to the root, with ``/`` separators."""
        return path.relative_to(self.root).as_posix()

    def to_json(self) -> dict[str, Any]:
        """Return the machine-readable inventory (``OUT/inventory.json``): relative paths only."""
        return {
            "scheme": self.scheme,
            "datasets": [
                {
                    "name": d.name,
                    "main": self.rel(d.main),
                    "files": [
                        {
                            "path": self.rel(f),
                            "size": self.files.get(self.rel(f), (0, ""))[0],
                            "sha256": h,
                        }
                        for f, h in zip(d.files, d.sha256 or ("",) * len(d.files), strict=True)
                    ],
                    "format": d.format,
                    "reader": d.reader,
                    "series_bytes": list(d.series_bytes),
                    "pyramid_method": d.pyramid_method,
                    "failure": d.failure,
                }
                for d in sorted(self.datasets, key=lambda d: d.name)
            ],
            "skipped": [{"path": p, "reason": r} for p, r in sorted(self.skipped)],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, root: Path) -> Inventory:
        """Inverse of :meth:`to_json`, with paths made absolute below ``root``."""
        inv = cls(root=root, scheme=str(data.get("scheme", "")))
        for d in data["datasets"]:
            files = tuple(root / f["path"] for f in d["files"])
            for f in d["files"]:
                inv.files[f["path"]] = (int(f["size"]), str(f["sha256"]))
            inv.datasets.append(
                Dataset(
                    name=d["name"],
                    main=root / d["main"],
                    files=files,
                    pyramid_method=d.get("pyramid_method", ""),
                    nbytes=sum(int(f["size"]) for f in d["files"]),
                    scheme=inv.scheme,
                    sha256=tuple(str(f["sha256"]) for f in d["files"]),
                    format=d["format"],
                    reader=d["reader"],
                    series_bytes=tuple(int(b) for b in d["series_bytes"]),
                    failure=d["failure"],
                )
            )
        inv.skipped = [(s["path"], s["reason"]) for s in data["skipped"]]
        return inv

    def table(self) -> str:
        """``inventory.tsv``: one row per file, with its dataset or why it was skipped."""
        rows: list[tuple[str, str, str, str, str]] = []
        for d in self.datasets:
            for f in d.files:
                rel = self.rel(f)
                role = "main" if f == d.main else "member"
                status = "failed" if d.failure else "dataset"
                rows.append((rel, status, d.name, role, d.failure))
        rows += [(p, "skipped", "", "", reason) for p, reason in self.skipped]
        out = io.StringIO()
        writer = csv.writer(out, delimiter="\t", lineterminator="\n")
        writer.writerow(["path", "status", "dataset", "role", "reason", "size", "sha256"])
        for rel, status, name, role, reason in sorted(rows):
            size, digest = self.files.get(rel, (0, ""))
            writer.writerow([rel, status, name, role, reason, size if digest else "", digest])
        return out.getvalue()


def suffix(path: Path | PurePosixPath | str) -> str:
    """Return the image extension of ``path`` in lower case, compound ones included."""
    lower = str(path).rsplit("/", 1)[-1].lower()
    for s in SUFFIXES:
        if lower.endswith(s) and len(lower) > len(s):
            return s
    return ""


def safe_name(text: str) -> str:
    """Make ``text`` a safe dataset name (see module docstring)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_text)
    cleaned = re.sub(r"_+", "_", cleaned).lstrip("._-").rstrip("._")
    return cleaned or "dataset"


def base_name(rel: str) -> str:
    """Return the name a main file at ``rel`` (relative, ``/`` separated) gets when unique."""
    *folders, file_name = rel.split("/")
    ext = suffix(file_name)
    stem = file_name[: -len(ext)] if ext else file_name
    name = safe_name("_".join([*folders, stem]))
    if len(name) > MAX_NAME:
        # Deep folders: keep the file's end of the path, and a hash of all of it.
        digest = hashlib.sha256(rel.encode()).hexdigest()[:8]
        tail = name[-(MAX_NAME - 9) :]
        # Start at a word: after the first "_" of the kept end, when there is one.
        tail = tail.split("_", 1)[1] if "_" in tail[:-1] else tail
        name = safe_name(tail + "_" + digest)
    return name


def assign_names(mains: Iterable[str], *, kept: Mapping[str, str] | None = None) -> dict[str, str]:
    """Names for main files (relative paths): path-derived, unique, stable.

    Parameters
    ----------
    mains
        Relative paths of the acquisitions' main files.
    kept
        Names given before (``main -> name``, from the cache); each stays with its main
        file while no other main file holds it.
    """
    mains = sorted(set(mains))
    names: dict[str, str] = {}
    # The run's own folders are never dataset names.
    taken: set[str] = set(RESERVED)
    for rel in mains:
        previous = (kept or {}).get(rel)
        if previous and _NAME_RE.match(previous) and previous.lower() not in taken:
            names[rel] = previous
            taken.add(previous.lower())
    todo = [rel for rel in mains if rel not in names]
    wanted = {rel: base_name(rel) for rel in todo}
    counts: dict[str, int] = {}
    for n in [*wanted.values(), *(names[r] for r in names)]:
        counts[n.lower()] = counts.get(n.lower(), 0) + 1
    clashing = [rel for rel in todo if counts[wanted[rel].lower()] > 1]
    with_ext: dict[str, int] = {}
    for rel in clashing:
        with_ext[_ext_name(rel).lower()] = with_ext.get(_ext_name(rel).lower(), 0) + 1
    for rel in todo:
        name = wanted[rel]
        if counts[name.lower()] > 1 or name.lower() in taken:
            name = _ext_name(rel)
            if name.lower() in taken or with_ext.get(name.lower(), 0) > 1:
                name = safe_name(f"{name}_{hashlib.sha256(rel.encode()).hexdigest()[:8]}")
        names[rel] = name
        taken.add(name.lower())
    return names


def _ext_name(rel: str) -> str:
    ext = suffix(rel).lstrip(".").replace(".", "_")
    base = base_name(rel)
    return safe_name(f"{base}_{ext}") if ext else base


# -- listing -------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """A listed file: its path relative to the root and what ``stat`` says."""

    rel: str
    size: int
    mtime_ns: int
    mode: int

    def key(self) -> list[int]:
        """Return what the cache is keyed on besides the path."""
        return [self.size, self.mtime_ns, stat.S_IMODE(self.mode)]


def _inside(path: Path, folder: Path | None) -> bool:
    return folder is not None and (path == folder or folder in path.parents)


def walk(root: Path, *, exclude: Path | None = None) -> tuple[list[Entry], list[tuple[str, str]]]:
    """Every file below ``root``, and the folders and hidden or excluded paths skipped.

    Hidden paths (a part starting with ``.``) are skipped with their first hidden
    folder; folders are listed only when their name looks like a file (``x.tif/``).
    """
    entries: list[Entry] = []
    skipped: list[tuple[str, str]] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        keep = []
        for d in sorted(dirs):
            path = here / d
            rel = path.relative_to(root).as_posix()
            if _inside(path, exclude):
                skipped.append((rel + "/", IN_OUTPUT))
            elif d.startswith("."):
                skipped.append((rel + "/", HIDDEN))
            else:
                if "." in d.strip("."):
                    skipped.append((rel + "/", FOLDER))
                keep.append(d)
        dirs[:] = keep
        for f in sorted(files):
            path = here / f
            rel = path.relative_to(root).as_posix()
            if f.startswith("."):
                skipped.append((rel, HIDDEN))
                continue
            try:
                info = path.stat()
            except OSError:
                skipped.append((rel, "cannot be listed (broken link or no permission)"))
                continue
            if stat.S_ISDIR(info.st_mode):
                skipped.append((rel + "/", FOLDER))
            elif stat.S_ISREG(info.st_mode):
                entries.append(Entry(rel, info.st_size, info.st_mtime_ns, info.st_mode))
            else:
                skipped.append((rel, "not a regular file"))
    return sorted(entries, key=lambda e: e.rel), skipped


def fingerprint(entries: Iterable[Entry], *, extra: str = "") -> str:
    """Return a digest of a listing that changes when any file appears, goes, or changes."""
    digest = hashlib.sha256(extra.encode())
    for e in entries:
        digest.update(json.dumps([e.rel, *e.key()]).encode())
    return digest.hexdigest()[:16]


# -- the cache -----------------------------------------------------------------------


class Cache:
    """Hashes, probes and names of earlier inventories, keyed by path, size and mtime.

    It lives outside every deliverable (the manifest never lists it); losing it costs
    time, never correctness, except that names given before are forgotten.
    """

    def __init__(self, path: Path | None, *, reader_key: str) -> None:
        self.path = path
        self.reader_key = reader_key
        self.files: dict[str, dict[str, Any]] = {}
        self.names: dict[str, str] = {}
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {}
            if data.get("version") == CACHE_VERSION and data.get("reader") == reader_key:
                self.files = dict(data.get("files", {}))
                self.names = dict(data.get("names", {}))

    def sha256(self, entry: Entry) -> str | None:
        """Return the cached digest of an unchanged file."""
        hit = self.files.get(entry.rel)
        return str(hit["sha256"]) if hit and hit.get("key") == entry.key() else None

    def probe(self, entry: Entry, current: Mapping[str, Entry]) -> Probe | None:
        """Return the cached probe of ``entry``, if it and every file it used are unchanged."""
        hit = self.files.get(entry.rel)
        if not hit or hit.get("key") != entry.key() or "probe" not in hit:
            return None
        for rel, key in hit.get("used_keys", {}).items():
            now = current.get(rel)
            if now is None or now.key() != key:
                return None
        return Probe.from_json(hit["probe"])

    def save(
        self,
        entries: Mapping[str, Entry],
        digests: Mapping[str, str],
        probes: Mapping[str, tuple[Probe, dict[str, list[int]]]],
        names: Mapping[str, str],
    ) -> None:
        """Write the cache for this listing (atomically)."""
        if self.path is None:
            return
        files: dict[str, dict[str, Any]] = {}
        for rel, e in entries.items():
            item: dict[str, Any] = {"key": e.key()}
            if rel in digests:
                item["sha256"] = digests[rel]
            if rel in probes:
                p, used_keys = probes[rel]
                item["probe"] = p.to_json()
                item["used_keys"] = used_keys
            files[rel] = item
        data = {
            "version": CACHE_VERSION,
            "reader": self.reader_key,
            "files": files,
            "names": dict(names),
        }
        atomic.write_text(self.path, json.dumps(data, sort_keys=True) + "\n")


# -- grouping ------------------------------------------------------------------------


@dataclass
class _Group:
    main: str
    files: set[str]
    probe: Probe

    def rank(self) -> tuple[int, int, str]:
        # More series, then more files, then the smaller main path leads.
        return (-len(self.probe.series_bytes), -len(self.files), self.main)


def _attribution(failed: dict[str, Probe]) -> dict[str, str]:
    """Failed file -> the failed file whose dataset it joins (see module docstring)."""
    owners: dict[str, str] = {}
    heads = sorted(
        (rel for rel, p in failed.items() if not rel.lower().endswith(_PIXEL_SUFFIXES)),
        key=lambda r: (r.count("/"), r),
    )
    for rel, p in failed.items():
        folder = rel.rsplit("/", 1)[0] + "/" if "/" in rel else ""
        owner = rel
        for head in heads:
            head_folder = head.rsplit("/", 1)[0] + "/" if "/" in head else ""
            same = failed[head].reader == p.reader and p.reader not in ("", "?")
            if same and folder.startswith(head_folder):
                owner = head
                break
        owners[rel] = owner
    return owners


def group(
    entries: list[Entry],
    *,
    by_rel: Mapping[str, Entry],
    root: Path,
    open_file: Callable[[Path], Probe],
    cache: Cache,
    notes: list[str],
) -> tuple[list[_Group], dict[str, Probe], dict[str, tuple[Probe, dict[str, list[int]]]], set[str]]:
    """Group files into acquisitions by opening them (see module docstring).

    Returns the groups, the failed files' probes, every probe made or reused (for the
    cache) and the files no reader recognised.
    """
    owner: dict[str, _Group] = {}
    groups: list[_Group] = []
    failed: dict[str, Probe] = {}
    unknown: set[str] = set()
    probes: dict[str, tuple[Probe, dict[str, list[int]]]] = {}
    # Shallow files first: the file a person points the reader at (a .vsi beside its
    # folder of .ets files, a plate's top .HTD) is opened before its members.
    for e in sorted(entries, key=lambda e: (e.rel.count("/"), e.rel)):
        if e.rel in owner:
            continue
        p = cache.probe(e, by_rel)
        if p is None:
            p = open_file(root / e.rel)
            p = Probe(
                path=e.rel,
                reader=p.reader,
                format=p.format,
                main=_relative(p.main, root),
                used=tuple(sorted({_relative(u, root) for u in p.used})),
                series_bytes=p.series_bytes,
                # Messages name files relative to the root: no machine path in any output.
                error=p.error.replace(f"{root}{os.sep}", ""),
            )
        outside = [u for u in p.used if u.startswith("../") or u.startswith("/")]
        if outside and not p.error:
            p = Probe(
                path=e.rel,
                reader=p.reader,
                format=p.format,
                error=f"uses files outside the input folder: {', '.join(outside[:3])}",
            )
        used_keys = {u: by_rel[u].key() for u in p.used if u in by_rel}
        probes[e.rel] = (p, used_keys)
        if not p.reader:
            unknown.add(e.rel)
            continue
        if p.error:
            failed[e.rel] = p
            continue
        new = _Group(
            main=_main(p, e.rel, by_rel),
            files={*p.used, e.rel} & by_rel.keys(),
            probe=p,
        )
        overlapping = {id(owner[f]): owner[f] for f in new.files if f in owner}
        if overlapping:
            members = sorted([new, *overlapping.values()], key=_Group.rank)
            lead = members[0]
            for other in members[1:]:
                notes.append(
                    f"{other.main}: Bio-Formats also opens it ({other.probe.reader}) with files "
                    f"of {lead.main}; its files join {lead.main}"
                )
                lead.files |= other.files
                if other in groups:
                    groups.remove(other)
            if lead not in groups:
                groups.append(lead)
        else:
            lead = new
            groups.append(new)
        for f in lead.files:
            owner[f] = lead
    return groups, failed, probes, unknown


def _main(p: Probe, opened: str, listed: Mapping[str, Entry]) -> str:
    """Return the acquisition's main file: the one Bio-Formats reports as current.

    The exception: a metadata file the reader was pointed at (``.nd``) wins over a TIFF it
    reports.
    """
    current = p.main if p.main in listed else opened
    pixel = current.lower().endswith(_PIXEL_SUFFIXES)
    if current != opened and pixel and not opened.lower().endswith(_PIXEL_SUFFIXES):
        return opened
    return current


def _relative(path: str, root: Path) -> str:
    if not path:
        return ""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        rel = os.path.relpath(path, root)
        return rel if rel.startswith("..") else "/" + rel


# -- the inventory -------------------------------------------------------------------


def _hash(path: Path) -> str:
    from bioingest.checksum import sha256_file

    return sha256_file(path)


def _pre_check(path: Path) -> str:
    """Why an image file cannot be read before any reader opens it ('' if none)."""
    from bioingest.integrity import check_structure
    from bioingest.readers import check_readable

    try:
        check_readable(path)
        check_structure(path)
    except IngestError as exc:
        return exc.problem
    return ""


def _walk_sheet(root: Path, mains: list[Path]) -> list[Entry]:
    """Files of the folders holding a sample sheet's main files (recursively)."""
    folders = sorted({m.parent for m in mains})
    tops = [f for f in folders if not any(g in f.parents for g in folders)]
    entries: dict[str, Entry] = {}
    for top in tops:
        for e in walk(top)[0]:
            rel = (top / e.rel).relative_to(root).as_posix()
            entries[rel] = Entry(rel, e.size, e.mtime_ns, e.mode)
    return sorted(entries.values(), key=lambda e: e.rel)


def build(
    root: Path,
    *,
    open_file: Callable[[Path], Probe],
    exclude: Path | None = None,
    min_age_s: float = 0.0,
    cache_path: Path | None = None,
    reader_key: str = "",
    threads: int = 2,
    sheet: list[tuple[str, Path, str]] | None = None,
    now: float | None = None,
    tifffile_probes: bool = True,
) -> Inventory:
    """Inventory ``root``: hash every file, then group them into acquisitions.

    Parameters
    ----------
    root
        The input folder (absolute); for a sample sheet, the folder paths are recorded
        relative to (:func:`sheet_root`).
    open_file
        Opens one file with Bio-Formats (:func:`bioingest.probe.probe`, in this process
        or through the machine's JVM server).
    exclude
        The output folder, when it lies inside ``root``.
    min_age_s
        Files modified less than this many seconds ago are skipped.
    cache_path
        Where hashes, probes and names are cached between runs.
    reader_key
        Identifies the Bio-Formats build; a cache made with another is ignored.
    threads
        Files hashed in parallel.
    sheet
        ``(name, main file, pyramid_method)`` rows of a sample sheet: only these main
        files are opened, and their used files join them, under these names.
    now
        The current time (for tests); defaults to :func:`time.time`.
    tifffile_probes
        In a tree of nothing but OME-TIFFs (:func:`ome_tiffs_only`), open those that
        tifffile reads exactly with tifffile, not ``open_file``.
    """
    inv = Inventory(root=root)
    cache = Cache(cache_path, reader_key=reader_key)
    if sheet is None:
        listed, inv.skipped = walk(root, exclude=exclude)
    else:
        listed = _walk_sheet(root, [main for _, main, _ in sheet])
    limit = (now if now is not None else time.time()) - min_age_s
    entries = []
    for e in listed:
        if min_age_s > 0 and e.mtime_ns / 1e9 > limit:
            inv.skipped.append((e.rel, recent(min_age_s)))
        else:
            entries.append(e)
    by_rel = {e.rel: e for e in entries}
    if sheet is None:
        candidates = entries
    else:
        mains = [main.relative_to(root).as_posix() for _, main, _ in sheet]
        missing = [m for m in mains if m not in by_rel]
        if missing:
            raise IngestError(
                root / missing[0],
                "listed in the sample sheet; "
                + (recent(min_age_s) if (root / missing[0]).is_file() else "not found"),
            )
        candidates = [by_rel[m] for m in sorted(mains)]
    # Hash, then open: fixity is recorded before any reader touches a file.
    digests = _hash_all(root, candidates, cache, threads)
    unreadable = {e.rel for e in candidates if e.rel not in digests}
    fast = tifffile_probes and sheet is None and ome_tiffs_only(root, listed, inv)

    def open_checked(path: Path) -> Probe:
        rel = path.relative_to(root).as_posix()
        if rel in unreadable:
            return Probe(
                path=str(path), reader="?", error="permission denied (file is not readable)"
            )
        problem = _pre_check(path) if suffix(rel) else ""
        if problem:
            return Probe(path=str(path), reader="?", error=problem)
        if fast:
            from bioingest.readers.tiff import ome_probe

            if (p := ome_probe(path)) is not None:
                return p
        return open_file(path)

    notes: list[str] = []
    groups, failed, probes, unknown = group(
        candidates, by_rel=by_rel, root=root, open_file=open_checked, cache=cache, notes=notes
    )
    claimed = {f for g in groups for f in g.files}
    if sheet is not None:
        # Members were opened by their main file's reader; hash them now.
        digests.update(_hash_all(root, [by_rel[f] for f in sorted(claimed)], cache, threads))
    failed = {rel: p for rel, p in failed.items() if rel not in claimed}
    owners = _attribution(failed)
    failed_sets: dict[str, list[str]] = {}
    for rel, head in owners.items():
        failed_sets.setdefault(head, []).append(rel)
    strangers = sorted(unknown - claimed)
    bad = [rel for rel in strangers if suffix(rel)]
    if sheet is not None:
        bad = strangers
    given: dict[str, tuple[str, str]] = {}
    if sheet is None:
        names = assign_names([g.main for g in groups] + list(failed_sets) + bad, kept=cache.names)
    else:
        given = {main.relative_to(root).as_posix(): (name, method) for name, main, method in sheet}
        for g in groups:
            listed_main = sorted(set(given) & g.files)
            if listed_main and g.main not in given:
                # A sheet names the file to open: that file is the main file.
                g.main = listed_main[0]
        names = {main: name for main, (name, _) in given.items()}

    def dataset(main: str, files: list[str], **kw: Any) -> Dataset:
        return Dataset(
            name=names[main],
            main=root / main,
            files=tuple(root / f for f in files),
            nbytes=sum(by_rel[f].size for f in files),
            sha256=tuple(digests.get(f, "") for f in files),
            pyramid_method=given.get(main, ("", ""))[1],
            **kw,
        )

    for g in groups:
        files = [g.main, *sorted(g.files - {g.main})]
        inv.datasets.append(
            dataset(
                g.main,
                files,
                format=g.probe.format,
                reader=g.probe.reader,
                series_bytes=g.probe.series_bytes,
            )
        )
        for f in files[1:]:
            log.info("%s: a file of %s", f, g.main)
        log.info(
            "%s: %s (%s), %d series, %d file(s): dataset %s",
            g.main,
            g.probe.format,
            g.probe.reader,
            len(g.probe.series_bytes),
            len(files),
            names[g.main],
        )
    for head, members in sorted(failed_sets.items()):
        files = [head, *sorted(set(members) - {head})]
        reason = failed[head].error
        if len(files) > 1:
            reason = f"{reason} ({len(files)} files that {failed[head].reader} reads as one set)"
        inv.datasets.append(dataset(head, files, reader=failed[head].reader, failure=reason))
        log.error("%s: %s", head, reason)
    for rel in bad:
        inv.datasets.append(dataset(rel, [rel], failure="unsupported or unrecognised file format"))
        log.error("%s: unsupported or unrecognised file format", rel)
    inv.skipped += [(rel, UNRECOGNISED) for rel in strangers if rel not in bad]
    if sheet is None:
        seen = claimed | set(owners) | set(strangers)
        inv.skipped += [(e.rel, UNRECOGNISED) for e in entries if e.rel not in seen]
    inv.datasets.sort(key=lambda d: d.name)
    inv.files = {rel: (by_rel[rel].size, digests[rel]) for rel in digests}
    for note in notes:
        log.info("%s", note)
    for rel, reason in sorted(inv.skipped):
        log.info("%s: skipped, %s", rel, reason)
    cache.save(by_rel, digests, probes, {**cache.names, **names} if sheet is None else cache.names)
    return inv


#: Files that Bio-Formats readers listed before its OME-TIFF reader look for in the
#: folders above a TIFF (ScanR, BD Pathway, Columbus, CellVoyager).
_PARENT_MARKERS = (".xml", ".exp", ".dat")


def ome_tiffs_only(root: Path, listed: list[Entry], inv: Inventory) -> bool:
    """Return whether no file of this tree can make Bio-Formats open an OME-TIFF differently.

    Bio-Formats opens a single-file OME-TIFF with its OME-TIFF reader, as an acquisition of
    that one file, unless another file claims it: the readers tried before that one take
    a TIFF only with metadata files of their own beside it or in the two folders above
    it. So in a tree of nothing but files named as OME-TIFFs, where nothing was skipped
    but hidden files and the output folder and no such file lies in the two folders above
    ``root``, a file that :func:`bioingest.readers.tiff.ome_probe` describes needs no JVM.
    """
    if any(reason not in (HIDDEN, IN_OUTPUT) for _, reason in inv.skipped):
        return False
    if any(not e.rel.lower().endswith(OME_TIFF_SUFFIXES) for e in listed):
        return False
    for above in (root.parent, root.parent.parent):
        try:
            names = os.listdir(above)
        except OSError:
            return False
        if any(n.lower().endswith(_PARENT_MARKERS) for n in names):
            return False
    log.info("only OME-TIFFs below the input folder: tifffile reads the headers it reads exactly")
    return True


def _hash_all(root: Path, entries: list[Entry], cache: Cache, threads: int) -> dict[str, str]:
    """SHA-256 of ``entries`` (cached ones reused); unreadable files are left out."""
    digests = {e.rel: d for e in entries if (d := cache.sha256(e)) is not None}
    todo = [e for e in entries if e.rel not in digests]
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for e, digest in zip(todo, pool.map(lambda e: _try_hash(root / e.rel), todo), strict=True):
            if digest:
                digests[e.rel] = digest
    return digests


def _try_hash(path: Path) -> str:
    try:
        return _hash(path)
    except OSError:
        return ""


# -- sample sheets -------------------------------------------------------------------


def read_sheet(sheet: Path) -> list[tuple[str, Path, str]]:
    """Read a tab-separated sample sheet: ``(name, main file, pyramid_method)`` per row.

    The columns are ``dataset``, ``path`` and the optional ``pyramid_method``. Relative
    paths are relative to the sheet's folder.
    """
    if not sheet.is_file():
        raise IngestError(sheet, "sample sheet not found")
    schema = load_schema("samples.schema.yaml")
    with open(sheet, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows:
        raise IngestError(sheet, "sample sheet has no rows")
    seen: dict[str, int] = {}
    out = []
    for line, row in enumerate(rows, start=2):
        clean = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
        try:
            jsonschema.validate(clean, schema)
        except jsonschema.ValidationError as exc:
            raise IngestError(sheet, f"line {line}: {exc.message}") from None
        name = clean["dataset"]
        if not _NAME_RE.match(name) or name in (".", ".."):
            raise IngestError(sheet, f"line {line}: unsafe dataset name {json.dumps(name)}")
        if name.lower() in seen:
            raise IngestError(
                sheet, f"duplicate dataset name '{name}' (lines {seen[name.lower()]} and {line})"
            )
        seen[name.lower()] = line
        path = Path(clean["path"])
        # Absolute but not resolved: a symlink stays where the user put it.
        main = Path(
            os.path.normpath((path if path.is_absolute() else sheet.parent / path).absolute())
        )
        if not main.is_file():
            raise IngestError(sheet, f"line {line}: file not found: {main}")
        out.append((name, main, clean.get("pyramid_method", "")))
    return out


def sheet_root(rows: list[tuple[str, Path, str]], sheet: Path) -> Path:
    """Return the folder a sheet's files are recorded relative to.

    It is the deepest common folder of the sheet and its files.
    """
    return Path(os.path.commonpath([sheet.parent, *(main.parent for _, main, _ in rows)]))


# -- remote folders ------------------------------------------------------------------


def storage_options(url: str) -> dict[str, Any]:
    """Return the fsspec options for ``url``.

    For S3, the endpoint and keys the Snakemake S3 storage plugin reads
    (``SNAKEMAKE_STORAGE_S3_*``), else the standard AWS configuration.
    """
    if not url.startswith("s3://"):
        return {}
    env = {
        "endpoint_url": "SNAKEMAKE_STORAGE_S3_ENDPOINT_URL",
        "key": "SNAKEMAKE_STORAGE_S3_ACCESS_KEY",
        "secret": "SNAKEMAKE_STORAGE_S3_SECRET_KEY",
        "token": "SNAKEMAKE_STORAGE_S3_TOKEN",
    }
    options: dict[str, Any] = {k: os.environ[v] for k, v in env.items() if os.environ.get(v)}
    if "endpoint_url" in options:
        options = {"client_kwargs": {"endpoint_url": options.pop("endpoint_url")}, **options}
    return options


def list_remote(url: str) -> tuple[Path, list[Entry]]:
    """Return the bucket path and the files below a remote folder such as ``s3://bucket/raw``."""
    try:
        import fsspec
    except ImportError:
        raise IngestError(url, "remote inputs need bioingest[cloud] (fsspec, s3fs)") from None
    try:
        fs, key = fsspec.core.url_to_fs(url, **storage_options(url))
        listing = fs.find(key, detail=True)
    except (OSError, ValueError) as exc:
        raise IngestError(url, f"cannot list input_dir: {exc}") from None
    root = Path(key.rstrip("/"))
    entries = []
    for k, v in sorted(listing.items()):
        if v.get("type") != "file":
            continue
        rel = Path(k).relative_to(root).as_posix()
        etag = str(v.get("ETag", v.get("etag", ""))).strip('"')
        mtime = int(hashlib.sha256(etag.encode()).hexdigest()[:12], 16)
        entries.append(Entry(rel, int(v["size"]), mtime, 0o644))
    return root, entries


def build_remote(url: str) -> Inventory:
    """Inventory a remote folder without opening its files.

    Bio-Formats reads local files only, so remote files are grouped by name: an ``.ids``
    joins the ``.ics`` of the same name, and the DICOM files of one folder form one
    acquisition; every other file with an image extension is a dataset of its own.
    Hashes are taken by the conversion job from its local copies.
    """
    root, entries = list_remote(url)
    inv = Inventory(root=root, scheme=url.split("://", 1)[0])
    image = [
        e for e in entries if suffix(e.rel) and not any(p.startswith(".") for p in e.rel.split("/"))
    ]
    inv.skipped = [
        (e.rel, UNRECOGNISED if not suffix(e.rel) else HIDDEN) for e in entries if e not in image
    ]
    if not image:
        raise IngestError(url, "input_dir has no files with an image extension")
    by_folder: dict[str, list[Entry]] = {}
    for e in image:
        by_folder.setdefault(e.rel.rsplit("/", 1)[0] if "/" in e.rel else "", []).append(e)
    groups: list[list[Entry]] = []
    for _folder, members in sorted(by_folder.items()):
        dicoms = [e for e in members if suffix(e.rel) in (".dcm", ".dicom")]
        if dicoms:
            groups.append(dicoms)
        stems = {e.rel[: -len(suffix(e.rel))]: e for e in members if suffix(e.rel) == ".ics"}
        for e in members:
            if e in dicoms:
                continue
            if suffix(e.rel) == ".ids" and e.rel[:-4] in stems:
                continue
            companions = (
                [g for g in members if suffix(g.rel) == ".ids" and g.rel[:-4] == e.rel[:-4]]
                if suffix(e.rel) == ".ics"
                else []
            )
            groups.append([e, *companions])
    names = assign_names([g[0].rel for g in groups])
    for g in groups:
        inv.datasets.append(
            Dataset(
                name=names[g[0].rel],
                main=root / g[0].rel,
                files=tuple(root / e.rel for e in g),
                nbytes=sum(e.size for e in g),
                scheme=inv.scheme,
                sha256=("",) * len(g),
            )
        )
    inv.files = {e.rel: (e.size, "") for e in image}
    inv.datasets.sort(key=lambda d: d.name)
    return inv


# -- workflow helpers ----------------------------------------------------------------


def write(inv: Inventory, *, tsv: Path | None, json_path: Path | None) -> None:
    """Write ``inventory.tsv`` and ``inventory.json`` (atomically)."""
    if tsv is not None:
        atomic.write_text(tsv, inv.table())
    if json_path is not None:
        atomic.write_text(json_path, json.dumps(inv.to_json(), indent=1, ensure_ascii=False) + "\n")


_LOADED: dict[str, tuple[int, Inventory]] = {}


def load(json_path: Path, *, root: Path) -> Inventory:
    """Read ``inventory.json``; cached by modification time (the workflow asks often)."""
    key = str(json_path)
    mtime = json_path.stat().st_mtime_ns
    hit = _LOADED.get(key)
    if hit is None or hit[0] != mtime:
        data = json.loads(json_path.read_text(encoding="utf-8"))
        hit = (mtime, Inventory.from_json(data, root=root))
        _LOADED[key] = hit
    return hit[1]


def input_root(config: Mapping[str, Any], *, base: Path | None = None) -> Path:
    """Return the folder source paths are recorded relative to.

    That is input_dir, or for a sample sheet the deepest folder holding the sheet and its
    files. For a remote input_dir, its ``bucket/key`` path.
    """
    here = base or Path.cwd()
    if config.get("samples"):
        sheet = Path(os.path.normpath((here / config["samples"]).absolute()))
        return sheet_root(read_sheet(sheet), sheet)
    if "://" in config["input_dir"]:
        return Path(config["input_dir"].split("://", 1)[1].rstrip("/"))
    return Path(os.path.normpath((here / config["input_dir"]).absolute()))


def output_inside(
    config: Mapping[str, Any], root: Path, *, base: Path | None = None
) -> Path | None:
    """Return the output folder when it lies inside the input root (it is then never an input)."""
    if config.get("input_dir", "").count("://"):
        return None
    out = Path(os.path.normpath(((base or Path.cwd()) / config["output_dir"]).absolute()))
    return out if root in out.parents or out == root else None


def listing_fingerprint(config: Mapping[str, Any], *, base: Path | None = None) -> str:
    """Fingerprint what the inventory depends on, cheaply: a stat walk (no file is opened).

    The workflow passes it to the inventory job as a parameter, so the job reruns
    exactly when a file appears, goes or changes, or ages past ``min_file_age_s``.
    """
    root = input_root(config, base=base)
    if config.get("samples"):
        sheet = Path(os.path.normpath(((base or Path.cwd()) / config["samples"]).absolute()))
        entries = _walk_sheet(root, [main for _, main, _ in read_sheet(sheet)])
        skipped: list[tuple[str, str]] = []
        extra = hashlib.sha256(sheet.read_bytes()).hexdigest()
    elif "://" in config["input_dir"]:
        _, entries = list_remote(config["input_dir"])
        return fingerprint(entries)
    else:
        entries, skipped = walk(root, exclude=output_inside(config, root, base=base))
        extra = ""
    limit = time.time() - float(config.get("min_file_age_s", 0))
    young = [e.rel for e in entries if e.mtime_ns / 1e9 > limit]
    # The output folder appears once the run starts: not a change of the inputs.
    extra += json.dumps([young, sorted(s for s in skipped if s[1] != IN_OUTPUT)])
    return fingerprint(entries, extra=extra)


def discover(
    root: Path, *, exclude: Path | None = None, min_age_s: float = 0.0, heap_mb: int = 1024
) -> list[Dataset]:
    """Every dataset below ``root``, opening files with Bio-Formats in this process.

    The workflow runs :func:`build` as a job of its own (``bioingest inventory``); this
    is the same grouping for scripts and notebooks.
    """
    from bioingest.java import start_jvm
    from bioingest.probe import probe

    start_jvm(heap_mb=heap_mb)
    root = Path(os.path.normpath(root.absolute()))
    if not root.is_dir():
        raise IngestError(root, "input_dir is not a folder")
    return build(root, open_file=probe, exclude=exclude, min_age_s=min_age_s).datasets


def take(
    source: str,
    *,
    prober: Callable[[], tuple[Callable[[Path], Probe], Callable[[], None], str]],
    exclude: Path | None = None,
    min_age_s: float = 0.0,
    cache_path: Path | None = None,
    threads: int = 2,
) -> Inventory:
    """Inventory what the user named: a folder, a sample sheet or an ``s3://`` URL.

    Parameters
    ----------
    source
        The folder, sample sheet or URL (``input_dir`` or ``samples``).
    prober
        Called once, for local sources only: returns how files are opened, how that is
        closed, and the reader's cache key (see :func:`build`).
    exclude, min_age_s, cache_path, threads
        As for :func:`build`.

    Raises
    ------
    IngestError
        When a local ``source`` is neither a folder nor a sample sheet.
    """
    if "://" in source:
        return build_remote(source)
    path = Path(os.path.normpath(Path(source).absolute()))
    sheet = read_sheet(path) if path.is_file() else None
    if sheet is None and not path.is_dir():
        raise IngestError(path, "not a folder or a sample sheet")
    root = sheet_root(sheet, path) if sheet is not None else path
    if exclude is not None:
        exclude = Path(os.path.normpath(exclude.absolute()))
    open_file, close, key = prober()
    try:
        return build(
            root,
            open_file=open_file,
            exclude=exclude,
            min_age_s=min_age_s,
            cache_path=cache_path,
            reader_key=key,
            threads=threads,
            sheet=sheet,
        )
    finally:
        close()
