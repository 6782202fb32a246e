"""Find the datasets to ingest: one per acquisition, companions grouped, names made safe.

Naming rules (documented in the README):

1. A dataset is named after its main file without the image extensions
   (``cells.ome.tiff`` -> ``cells``); DICOM folders after their folder.
2. The name is made safe: accents dropped, anything outside ``A-Z a-z 0-9 . _ -``
   becomes ``_``, and it starts with a letter or digit.
3. When names collide (``a.czi`` and ``a.tif``), every colliding dataset gets its
   extension appended (``a_czi``, ``a_tif``); if that still collides, its parent
   folders are prepended one by one; last, a short hash of its relative path.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from bioingest.errors import IngestError

#: File endings Bio-Formats reads that the inventory picks up (lower case).
SUFFIXES = (
    ".ome.tiff",
    ".ome.tif",
    ".ome.btf",
    ".ome.tf2",
    ".ome.tf8",
    ".ome.xml",
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
    ".mrc",
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
_DICOM = (".dcm", ".dicom")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SCHEMA_DIR = Path(__file__).resolve().parents[2] / "workflow" / "schemas"


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

    def location(self, path: Path) -> str:
        """A local path as text, or the URL of a remote file."""
        return f"{self.scheme}://{path.as_posix()}" if self.scheme else str(path)

    def as_row(self) -> dict[str, str]:
        """Tab-separated-friendly form."""
        return {
            "dataset": self.name,
            "path": str(self.main),
            "files": ";".join(str(f) for f in self.files),
            "pyramid_method": self.pyramid_method,
        }


def suffix(path: Path) -> str:
    """The image extension of ``path`` in lower case, compound ones included."""
    lower = path.name.lower()
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


def _group(files: list[Path]) -> list[tuple[Path, tuple[Path, ...], str]]:
    """Group companion files: ``(main, files, base name)`` per dataset."""
    by_dir: dict[Path, list[Path]] = defaultdict(list)
    for f in files:
        by_dir[f.parent].append(f)
    groups: list[tuple[Path, tuple[Path, ...], str]] = []
    for folder in sorted(by_dir):
        members = sorted(by_dir[folder])
        taken: set[Path] = set()
        dicoms = [f for f in members if suffix(f) in _DICOM]
        if dicoms:
            # Bio-Formats merges the DICOM files of one folder into one dataset.
            groups.append((dicoms[0], tuple(dicoms), folder.name))
            taken.update(dicoms)
        for f in members:
            if f in taken:
                continue
            s = suffix(f)
            stem = f.name[: -len(s)]
            companions: list[Path] = []
            if s == ".ics":
                companions = [g for g in members if suffix(g) == ".ids" and g.name[:-4] == stem]
            elif s == ".nd":
                companions = [
                    g
                    for g in members
                    if g != f and suffix(g) in (".stk", ".tif", ".tiff") and g.name.startswith(stem)
                ]
            elif s == ".ids" and any(suffix(g) == ".ics" and g.name[:-4] == stem for g in members):
                continue
            if s in (".stk", ".tif", ".tiff") and any(
                suffix(g) == ".nd" and f.name.startswith(g.name[:-3]) for g in members
            ):
                continue
            taken.update(companions)
            groups.append((f, (f, *companions), stem))
    return groups


def _unique_names(items: list[tuple[str, Path, Path]]) -> list[str]:
    """Resolve collisions deterministically; ``items`` are ``(base, main, relative path)``."""
    names = [safe_name(base) for base, _, _ in items]
    for level in range(2 + max((len(r.parts) for _, _, r in items), default=0)):
        counts: dict[str, int] = defaultdict(int)
        for n in names:
            counts[n.lower()] += 1
        clashing = [i for i, n in enumerate(names) if counts[n.lower()] > 1]
        if not clashing:
            return names
        for i in clashing:
            base, main, rel = items[i]
            if level == 0:
                names[i] = safe_name(f"{base}_{suffix(main).lstrip('.')}")
            elif level < len(rel.parts):
                names[i] = safe_name("_".join(rel.parts[-level - 1 : -1]) + f"_{names[i]}")
            else:
                digest = hashlib.sha256(str(rel).encode()).hexdigest()[:8]
                names[i] = safe_name(f"{names[i]}_{digest}")
    return names


def _datasets(
    files: list[Path], root: Path, sizes: dict[Path, int], *, scheme: str = ""
) -> list[Dataset]:
    groups = _group(files)
    names = _unique_names([(base, main, main.relative_to(root)) for main, _, base in groups])
    datasets = [
        Dataset(
            name=n,
            main=main,
            files=members,
            nbytes=sum(sizes[f] for f in members),
            scheme=scheme,
        )
        for n, (main, members, _) in zip(names, groups, strict=True)
    ]
    return sorted(datasets, key=lambda d: d.name)


def _visible(path: Path, root: Path) -> bool:
    return bool(suffix(path)) and not any(
        part.startswith(".") for part in path.relative_to(root).parts
    )


def discover(input_dir: Path) -> list[Dataset]:
    """Every dataset below ``input_dir`` (recursive; hidden files and folders skipped)."""
    root = Path(os.path.normpath(input_dir.absolute()))
    if not root.is_dir():
        raise IngestError(input_dir, "input_dir is not a folder")
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and _visible(p, root)]
    return _datasets(files, root, {f: f.stat().st_size for f in files})


def storage_options(url: str) -> dict[str, Any]:
    """fsspec options for ``url``: for S3, the endpoint and keys the Snakemake S3 storage
    plugin reads (``SNAKEMAKE_STORAGE_S3_*``), else the standard AWS configuration."""
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


def discover_remote(url: str) -> list[Dataset]:
    """Every dataset below a remote folder such as ``s3://bucket/raw`` (listed with fsspec)."""
    try:
        import fsspec
    except ImportError:
        raise IngestError(url, "remote inputs need bioingest[cloud] (fsspec, s3fs)") from None

    scheme = url.split("://", 1)[0]
    try:
        fs, key = fsspec.core.url_to_fs(url, **storage_options(url))
        listing = fs.find(key, detail=True)
    except (OSError, ValueError) as exc:
        raise IngestError(url, f"cannot list input_dir: {exc}") from None
    root = Path(key.rstrip("/"))
    sizes = {Path(k): int(v["size"]) for k, v in listing.items() if v.get("type") == "file"}
    files = [p for p in sorted(sizes) if _visible(p, root)]
    if not files:
        raise IngestError(url, "input_dir has no files with an image extension")
    return _datasets(files, root, sizes, scheme=scheme)


def _schema(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((SCHEMA_DIR / name).read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def read_sheet(sheet: Path) -> list[Dataset]:
    """Datasets from a tab-separated sample sheet (columns ``dataset``, ``path``; optional
    ``pyramid_method``). Relative paths are relative to the sheet's folder."""
    if not sheet.is_file():
        raise IngestError(sheet, "sample sheet not found")
    schema = _schema("samples.schema.yaml")
    with open(sheet, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows:
        raise IngestError(sheet, "sample sheet has no rows")
    seen: dict[str, int] = {}
    datasets = []
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
        siblings = [p for p in main.parent.iterdir() if p.is_file() and suffix(p)]
        files = next((g[1] for g in _group(siblings) if main in g[1]), (main,))
        files = (main, *[f for f in files if f != main])
        datasets.append(
            Dataset(
                name=name,
                main=main,
                files=files,
                pyramid_method=clean.get("pyramid_method", ""),
                nbytes=sum(f.stat().st_size for f in files),
            )
        )
    return datasets


def input_root(config: dict[str, Any], *, base: Path | None = None) -> Path:
    """The folder source paths are recorded relative to: input_dir, or the sheet's folder.
    For a remote input_dir, its ``bucket/key`` path."""
    here = base or Path.cwd()
    if config.get("samples"):
        return Path(os.path.normpath((here / config["samples"]).absolute())).parent
    if "://" in config["input_dir"]:
        return Path(config["input_dir"].split("://", 1)[1].rstrip("/"))
    return Path(os.path.normpath((here / config["input_dir"]).absolute()))


def from_config(config: dict[str, Any], *, base: Path | None = None) -> list[Dataset]:
    """Datasets named by a validated workflow config (``samples`` wins over ``input_dir``)."""
    here = base or Path.cwd()
    if config.get("samples"):
        return read_sheet(here / config["samples"])
    if "://" in config.get("input_dir", ""):
        return discover_remote(config["input_dir"])
    if config.get("input_dir"):
        return discover(here / config["input_dir"])
    raise IngestError("config", "set either 'input_dir' or 'samples'")
