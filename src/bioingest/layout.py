"""Every path under a run's output folder (``OUT``), in one place.

The workflow rules, the verbs and the package modules name the files of a run through
these functions, never by spelling them. Each function takes the output folder first:

* a :class:`str` gives a string joined with ``/`` (what the Snakemake rules need: the
  folder may be a URL, and a wildcard such as ``"{dataset}"`` may stand for a name);
* an empty string gives the path relative to the output folder (``"NAME/qc.json"``),
  as the manifest, the BioImage Archive list and the HTML links write it;
* a :class:`~pathlib.Path` gives a path of the same type.

The layout of a run::

    OUT/
      NAME/                                  one folder per dataset
        NAME.ome.zarr/                       the final store (NOT-CONVERTED.txt only, if failed)
        NAME.ome.xml  NAME.source.json  source-sha256.txt
        metadata.json  qc.json  qc.html  thumbnails/  NAME.ome.tif (a note, if failed)
      intermediate/NAME.zarr                 convert's store (temporary)
      intermediate/parts/NAME/K.zarr         later parts of a split conversion
      intermediate/assembled/NAME.zarr       the parts joined
      intermediate/stores/NAME.ome.zarr      the store when only the OME-TIFF is delivered
      logs/NAME/STEP.log  logs/STEP.log      per-dataset and run-level logs
      inventory.tsv  inventory.json  failed.tsv  report.html  bia-file-list.tsv
      summary/images.tsv|parquet  summary/channels.tsv|parquet  summary/qc.tsv
      manifest-sha256.txt  ro-crate-metadata.json  _workflow/
      .cache/inventory.json
"""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import TypeVar, cast

#: An output folder: a string (joined with ``/``; empty for relative paths) or a path.
P = TypeVar("P", bound="str | PurePath")

# -- names inside a dataset's folder --------------------------------------------------
STORE_SUFFIX = ".ome.zarr"
OME_XML_SUFFIX = ".ome.xml"
SOURCE_JSON_SUFFIX = ".source.json"
OME_TIFF_SUFFIX = ".ome.tif"
SOURCE_FIXITY = "source-sha256.txt"
METADATA = "metadata.json"
QC = "qc.json"
QC_PAGE = "qc.html"
THUMBNAILS = "thumbnails"
#: The only file in the store folder of a dataset that could not be converted.
NOT_CONVERTED = "NOT-CONVERTED.txt"
#: Snakemake's empty time-stamp marker in folder outputs: not part of the data.
SNAKEMAKE_MARK = ".snakemake_timestamp"

# -- first-level folders of the run ---------------------------------------------------
LOGS = "logs"
SUMMARY = "summary"
#: Work folder of convert (temporary unless keep_intermediate): not a deliverable.
INTERMEDIATE = "intermediate"
#: The workflow's copy written with the RO-Crate, after the manifest (the crate lists it).
WORKFLOW_COPY = "_workflow"
CACHE = ".cache"
#: First-level folders of the run itself; no dataset may take these names.
RUN_FOLDERS = frozenset({LOGS, SUMMARY, INTERMEDIATE, WORKFLOW_COPY})

# -- run-level files ------------------------------------------------------------------
INVENTORY_TSV = "inventory.tsv"
INVENTORY_JSON = "inventory.json"
FAILED = "failed.tsv"
REPORT = "report.html"
BIA_FILE_LIST = "bia-file-list.tsv"
MANIFEST = "manifest-sha256.txt"
RUN_CRATE = "ro-crate-metadata.json"
#: The metadata tables (``summary/T.EXT``) and the QC table.
METADATA_TABLES = ("images", "channels")
TABLE_FORMATS = ("tsv", "parquet")
QC_TABLE = "qc"

#: The step (and so the log, ``logs/STEP.log``) that writes each run-level file.
RUN_LEVEL_STEP = {
    INVENTORY_TSV: "inventory",
    INVENTORY_JSON: "inventory",
    FAILED: "outcomes",
    REPORT: "report",
    BIA_FILE_LIST: "bia_file_list",
    MANIFEST: "manifest",
    RUN_CRATE: "provenance",
    WORKFLOW_COPY: "provenance",
    **{f"{SUMMARY}/{t}.{ext}": "metadata_tables" for t in METADATA_TABLES for ext in TABLE_FORMATS},
    f"{SUMMARY}/{QC_TABLE}.tsv": "qc_table",
}
#: The steps of one dataset, in the order of their log files' names (as listed).
DATASET_STEPS = ("assemble", "convert", "metadata", "ome_tiff", "pyramid", "qc")
#: Log of the later part K of a split conversion: ``convert_partK``.
PART_STEP = "convert_part"


def join(out: P, *parts: str) -> P:
    """Return ``out`` followed by ``parts``.

    ``/``-joined for a string (no leading ``/`` when ``out`` is empty),
    :meth:`~pathlib.PurePath.joinpath` for a path.
    """
    if isinstance(out, PurePath):
        return cast(P, out.joinpath(*parts))
    return cast(P, "/".join([out, *parts] if out else parts))


# -- a dataset's files ------------------------------------------------------------------


def dataset_dir(out: P, name: str) -> P:
    """``OUT/NAME``: the dataset's folder."""
    return join(out, name)


def store(out: P, name: str) -> P:
    """``OUT/NAME/NAME.ome.zarr``: the final OME-Zarr."""
    return join(out, name, name + STORE_SUFFIX)


def ome_xml(out: P, name: str) -> P:
    """``OUT/NAME/NAME.ome.xml``: the reader's complete OME-XML."""
    return join(out, name, name + OME_XML_SUFFIX)


def source_json(out: P, name: str) -> P:
    """``OUT/NAME/NAME.source.json``: convert's description of the source."""
    return join(out, name, name + SOURCE_JSON_SUFFIX)


def source_fixity(out: P, name: str) -> P:
    """``OUT/NAME/source-sha256.txt``: the SHA-256 of the dataset's source files."""
    return join(out, name, SOURCE_FIXITY)


def metadata(out: P, name: str) -> P:
    """``OUT/NAME/metadata.json``: the normalised metadata record."""
    return join(out, name, METADATA)


def qc(out: P, name: str) -> P:
    """``OUT/NAME/qc.json``: the QC report."""
    return join(out, name, QC)


def qc_page(out: P, name: str) -> P:
    """``OUT/NAME/qc.html``: the dataset's QC page."""
    return join(out, name, QC_PAGE)


def thumbnails(out: P, name: str) -> P:
    """``OUT/NAME/thumbnails``: folder of the QC thumbnails."""
    return join(out, name, THUMBNAILS)


def thumbnail(series: int) -> str:
    """Return ``series-N.png``: a series' thumbnail in its dataset's thumbnails folder."""
    return f"series-{series}.png"


def ome_tiff(out: P, name: str) -> P:
    """``OUT/NAME/NAME.ome.tif``: the pyramidal OME-TIFF."""
    return join(out, name, name + OME_TIFF_SUFFIX)


def dataset_files(out: P, name: str) -> list[P]:
    """Return every file and folder a dataset's steps write into its folder (``OUT/NAME``).

    Each is listed whether or not this run's configuration writes it (``NAME.ome.tif``).
    """
    return [
        fn(out, name)
        for fn in (
            store,
            ome_xml,
            source_json,
            source_fixity,
            metadata,
            qc,
            qc_page,
            thumbnails,
            ome_tiff,
        )
    ]


def not_converted(store_dir: P) -> P:
    """``NAME.ome.zarr/NOT-CONVERTED.txt``: the note in a failed dataset's store."""
    return join(store_dir, NOT_CONVERTED)


# -- intermediate stores ----------------------------------------------------------------


def intermediate(out: P, name: str) -> P:
    """``OUT/intermediate/NAME.zarr``: convert's store (the first part of a split one)."""
    return join(out, INTERMEDIATE, f"{name}.zarr")


def part(out: P, name: str, k: int | str) -> P:
    """``OUT/intermediate/parts/NAME/K.zarr``: later part ``k`` of a split conversion."""
    return join(out, INTERMEDIATE, "parts", name, f"{k}.zarr")


def assembled(out: P, name: str) -> P:
    """``OUT/intermediate/assembled/NAME.zarr``: the parts of a split conversion joined."""
    return join(out, INTERMEDIATE, "assembled", f"{name}.zarr")


def work_store(out: P, name: str) -> P:
    """``OUT/intermediate/stores/NAME.ome.zarr``: the store when it is not delivered.

    With ``ome_zarr: false`` the pyramid step writes the store here (the metadata, QC and
    OME-TIFF steps read it); the OME-TIFF is the delivered image.
    """
    return join(out, INTERMEDIATE, "stores", name + STORE_SUFFIX)


# -- logs -------------------------------------------------------------------------------


def dataset_log(out: P, name: str, step: str) -> P:
    """``OUT/logs/NAME/STEP.log``: log of one step of a dataset."""
    return join(out, LOGS, name, f"{step}.log")


def part_log(out: P, name: str, k: int | str) -> P:
    """``OUT/logs/NAME/convert_partK.log``: log of later part ``k`` of a conversion."""
    return dataset_log(out, name, f"{PART_STEP}{k}")


def trace_of(log_file: P) -> P:
    """``STEP.trace.log`` next to ``STEP.log``: the traceback of an unexpected failure."""
    if isinstance(log_file, PurePath):
        return cast(P, log_file.with_name(_trace_name(log_file.name)))
    folder, sep, name = log_file.rpartition("/")
    return cast(P, folder + sep + _trace_name(name))


def _trace_name(log_name: str) -> str:
    return log_name.removesuffix(".log") + ".trace.log"


def step_logs(out: Path, name: str) -> list[Path]:
    """Return the logs of a dataset's steps that exist (with the traceback files next to them).

    They are sorted by file name: every step of :data:`DATASET_STEPS`, and the parts of a
    split conversion from 1 up to the first one missing. Derived from the layout; the
    dataset's log folder is not listed.
    """
    logs = [dataset_log(out, name, step) for step in DATASET_STEPS]
    k = 1
    while part_log(out, name, k).is_file():
        logs.append(part_log(out, name, k))
        k += 1
    found = [f for log_file in logs for f in (log_file, trace_of(log_file)) if f.is_file()]
    return sorted(found, key=lambda f: f.name)


def run_log(out: P, step: str) -> P:
    """``OUT/logs/STEP.log``: log of a run-level step."""
    return join(out, LOGS, f"{step}.log")


# -- run-level files --------------------------------------------------------------------


def inventory_tsv(out: P) -> P:
    """``OUT/inventory.tsv``: every input file with its dataset, or why it was skipped."""
    return join(out, INVENTORY_TSV)


def inventory_json(out: P) -> P:
    """``OUT/inventory.json``: the datasets, as the workflow reads them."""
    return join(out, INVENTORY_JSON)


def inventory_cache(out: P) -> P:
    """``OUT/.cache/inventory.json``: hashes, probes and names kept between runs."""
    return join(out, CACHE, INVENTORY_JSON)


def failed(out: P) -> P:
    """``OUT/failed.tsv``: the datasets that failed, with step and reason."""
    return join(out, FAILED)


def report(out: P) -> P:
    """``OUT/report.html``: the run's summary page."""
    return join(out, REPORT)


def summary_table(out: P, table: str, ext: str = "tsv") -> P:
    """``OUT/summary/TABLE.EXT``: one of the run's tables."""
    return join(out, SUMMARY, f"{table}.{ext}")


def metadata_tables(out: P) -> list[P]:
    """Return the metadata tables: ``images`` and ``channels``, each as TSV and Parquet."""
    return [summary_table(out, t, ext) for t in METADATA_TABLES for ext in TABLE_FORMATS]


def qc_table(out: P) -> P:
    """``OUT/summary/qc.tsv``: QC per series and channel."""
    return summary_table(out, QC_TABLE)


def bia_file_list(out: P) -> P:
    """``OUT/bia-file-list.tsv``: the BioImage Archive file list."""
    return join(out, BIA_FILE_LIST)


def manifest(out: P) -> P:
    """``OUT/manifest-sha256.txt``: SHA-256 of every output file (BagIt format)."""
    return join(out, MANIFEST)


def run_crate(out: P) -> P:
    """``OUT/ro-crate-metadata.json``: the Workflow Run RO-Crate."""
    return join(out, RUN_CRATE)


def workflow_copy(out: P) -> P:
    """``OUT/_workflow``: the copy of the workflow that ran, written with the crate."""
    return join(out, WORKFLOW_COPY)


#: Written after (or while) the manifest is made: the provenance with run times and the
#: logs of those two steps. Everything else under the output folder is listed.
NOT_LISTED = frozenset(
    {MANIFEST, RUN_CRATE, run_log("", RUN_LEVEL_STEP[MANIFEST]), run_log("", "provenance")}
)


# -- reading paths back -----------------------------------------------------------------


def name_of_store(store_dir: PurePath) -> str:
    """Return the dataset's name from its store's path (``NAME.ome.zarr``)."""
    return store_dir.name.removesuffix(STORE_SUFFIX)


def name_of_source_json(path: PurePath) -> str:
    """Return the dataset's name from its ``NAME.source.json``."""
    return path.name.removesuffix(SOURCE_JSON_SUFFIX)


def name_of_record(path: PurePath) -> str:
    """Return the dataset's name from a file directly in its folder (``NAME/metadata.json``)."""
    return path.parent.name


def run_level_log(out: P, rel: str) -> P | None:
    """Return the log of the step that writes the run-level file ``rel``.

    ``rel`` is relative to the output folder. None for a dataset's file.
    """
    step = RUN_LEVEL_STEP.get(rel)
    return run_log(out, step) if step else None
