"""What the workflow does with each dataset of the inventory, and what a run delivers.

The Snakemake rules (``workflow/rules/*.smk``) call these functions from thin input
functions: which sources are split into parts, what each job asks the scheduler for, the
options passed to the verbs, and the lists of files a run delivers. Nothing here needs
Snakemake or a JVM; ``config`` is the workflow's validated configuration.

Every dataset the inventory could open goes through every stage. One whose pixels could
not be read (bad input) is recorded by convert; its later stages write failure records
only, and the run-level verbs leave it out (``failed.tsv`` lists it).
"""

from __future__ import annotations

import glob
import json
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bioingest import layout, resources
from bioingest.inventory import Dataset, Inventory
from bioingest.resources import pixel_bytes
from bioingest.targets import from_config as store_settings

Config = Mapping[str, Any]

#: What every whole store holds at its root: Zarr v3 or v2 metadata, or a failed
#: dataset's note.
_STORE_ROOTS = ("zarr.json", ".zgroup", layout.NOT_CONVERTED)


def _quoted(options: Sequence[str]) -> str:
    return " ".join(shlex.quote(o) for o in options)


# -- splitting a conversion into parts ------------------------------------------------


def is_split(d: Dataset, config: Config) -> bool:
    """Whether a dataset is converted in parts.

    It is when above ``split_series_above_mb``, with more than one series.
    """
    limit = config["split_series_above_mb"]
    return limit is not None and d.nbytes > limit * 1024 * 1024 and len(d.series_bytes) > 1


def split(series_count: int, per_part: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each part when ``per_part`` series are converted per job."""
    return [
        (start, min(start + per_part, series_count)) for start in range(0, series_count, per_part)
    ]


def parts_of(d: Dataset, config: Config) -> list[tuple[int, int]]:
    """``(start, stop)`` series of each conversion job of a dataset.

    ``series_per_job`` series each when split, else one job for all.
    """
    if not is_split(d, config):
        return [(0, len(d.series_bytes))]
    return split(len(d.series_bytes), config["series_per_job"])


def part_series(d: Dataset, config: Config, k: int) -> str:
    """``START:STOP`` series of part ``k`` of a split conversion."""
    start, stop = parts_of(d, config)[k]
    return f"{start}:{stop}"


def share(d: Dataset, config: Config, k: int) -> float:
    """Fraction of the dataset's series bytes that part ``k`` converts."""
    start, stop = parts_of(d, config)[k]
    return sum(d.series_bytes[start:stop]) / max(sum(d.series_bytes), 1)


def later_parts(out: str, d: Dataset, config: Config) -> list[str]:
    """Part stores of a split dataset after the first (written by ``convert_part``)."""
    return [layout.part(out, d.name, k) for k in range(1, len(parts_of(d, config)))]


def intermediate_store(out: str, d: Dataset, config: Config) -> str:
    """Return the converted pixels: convert's store, or the parts of a split source joined."""
    if is_split(d, config):
        return layout.assembled(out, d.name)
    return layout.intermediate(out, d.name)


# -- what each job asks the scheduler for -----------------------------------------------


def convert_mem_mb(config: Config) -> int:
    """Memory of a convert job: Java heap, Python and tiles, whatever the image."""
    return resources.convert_mem_mb(
        java_heap_mb=config["java_heap_mb"], tile_size=config["tile_size"]
    )


def convert_runtime(d: Dataset, config: Config, attempt: int) -> int:
    """Minutes for a convert job: its share (the first part's) of the source's bytes."""
    return part_runtime(d, config, 0, attempt)


def part_runtime(d: Dataset, config: Config, k: int, attempt: int) -> int:
    """Minutes for part ``k`` of a split conversion."""
    return resources.convert_runtime_min(
        source_bytes=int(d.nbytes * share(d, config, k)), attempt=attempt
    )


#: Datasets of at least this many bytes get ``threads`` threads per job; smaller ones one.
PARALLEL_BYTES = 64 * 1024 * 1024


def image_threads(d: Dataset, config: Config) -> int:
    """Threads of a convert, pyramid or qc job of ``d``.

    A small dataset gains little from a second thread, and one thread per job lets
    Snakemake run several of them at once.
    """
    return int(config["threads"]) if d.nbytes >= PARALLEL_BYTES else 1


def image_mem_mb(config: Config) -> int:
    """Memory of a job streaming the converted pixels (pyramid, metadata, qc, OME-TIFF).

    It is set by the store's shard size and the tile size, whatever the image.
    """
    store = store_settings(config)
    return resources.image_mem_mb(
        chunk_size=store.chunk_size, shard_chunks=store.shard_chunks, tile_size=config["tile_size"]
    )


def image_runtime(source_json: Path, attempt: int) -> int:
    """Minutes for such a job, from the pixel bytes convert reported in ``source_json``."""
    return resources.image_runtime_min(pixel_bytes=pixel_bytes(source_json), attempt=attempt)


# -- verb options -----------------------------------------------------------------------


def convert_options(d: Dataset, config: Config, *, input_root: Path, source: str) -> str:
    """Return what convert needs to know of the dataset, as quoted options.

    The folder the file paths are recorded relative to (a remote source is a local copy
    in Snakemake's storage folder, at the same path below it as below the bucket), the
    SHA-256 the inventory took, ``--single-file`` (only then may tifffile read it) and
    the first part's series of a split source.

    Parameters
    ----------
    d
        The dataset.
    config
        The workflow configuration.
    input_root
        The input folder (or the sample sheet's folder).
    source
        The main file as the job sees it: its path, or its local copy for a URL.
    """
    root = input_root
    if d.scheme:
        root = Path(source).parents[len(d.main.relative_to(input_root).parts) - 1]
    rels = [f.relative_to(input_root).as_posix() for f in d.files]
    options = [
        f"--root={root}",
        f"--sha256={json.dumps(dict(zip(rels, d.sha256, strict=False)), sort_keys=True)}",
    ]
    if d.single_file:
        options.append("--single-file")
    if is_split(d, config):
        start, stop = parts_of(d, config)[0]
        options.append(f"--series={start}:{stop}")
    return _quoted(options)


def single_file_option(d: Dataset) -> str:
    """``--single-file`` where the acquisition is one file: only then may tifffile read it."""
    return "--single-file" if d.single_file else ""


def warm_option(config: Config) -> str:
    """``--warm`` when jobs fork from one warm Python per machine (all but the inventory)."""
    return "--warm" if config["warm_python"] else ""


def jvm_server_option(config: Config) -> str:
    """``--jvm-server`` when Bio-Formats files are read through one JVM per machine."""
    return "--jvm-server" if config["jvm_server"] else ""


def pyramid_method(d: Dataset, config: Config) -> str:
    """Return the sample sheet's method (e.g. nearest for label images), else the config's."""
    return d.pyramid_method or str(config["pyramid_method"])


def qc_options(config: Config) -> str:
    """QC thresholds and policy from the configuration, as quoted verb options."""
    keys = [k for k in config if k.startswith("qc_") and k != "qc_fail_policy"]
    options = [f"--{k[3:].replace('_', '-')}={config[k]}" for k in sorted(keys)]
    options += [
        f"--fail-policy={config['qc_fail_policy']}",
        f"--tile-size={config['tile_size']}",
    ]
    if not delivers_zarr(config):
        # The pages then show how to open the OME-TIFF, not the (intermediate) store.
        options.append("--ome-tiff-only")
    return _quoted(options)


def bia_options(config: Config) -> str:
    """Which images the BioImage Archive file list names: the delivered ones, as options."""
    settings = store_settings(config)
    options = [] if settings.ome_zarr else ["--no-ome-zarr"]
    if settings.ome_tiff:
        options.append("--ome-tiff")
    return _quoted(options)


def study_option(study: Sequence[str]) -> str:
    """Return the ``--study`` option of a verb, quoted, when the study file is an input."""
    return f"--study {shlex.quote(study[0])}" if study else ""


def config_json(config: Config) -> str:
    """Return the validated configuration as JSON, for the run's provenance."""
    return json.dumps(dict(config), sort_keys=True, default=str)


def sources_root(inv: Inventory, input_root: Path, sources: Sequence[str]) -> str:
    """Folder the sources are named relative to: for remote sources, their local copies' folder.

    ``sources`` are the sources in :func:`source_files` order, as the job sees them.
    """
    if not inv.scheme or not sources:
        return str(input_root)
    first = sorted(inv.ok[0].files)[0]
    return str(Path(sources[0]).parents[len(first.relative_to(input_root).parts) - 1])


# -- what a run delivers ----------------------------------------------------------------


def ok_names(inv: Inventory) -> list[str]:
    """Names of every dataset the inventory could open, sorted."""
    return sorted(d.name for d in inv.ok)


def dataset_names(inv: Inventory) -> str:
    """Every dataset's name, quoted for the shell."""
    return _quoted(ok_names(inv))


def source_files(inv: Inventory) -> list[tuple[Dataset, Path]]:
    """Every source file of every dataset the inventory could open, with its dataset."""
    return [(d, f) for d in inv.ok for f in sorted(d.files)]


def described(out: str, inv: Inventory) -> list[str]:
    """``NAME.source.json`` of every dataset."""
    return [layout.source_json(out, n) for n in ok_names(inv)]


def dataset_records(out: str, inv: Inventory) -> list[str]:
    """``metadata.json`` of every dataset."""
    return [layout.metadata(out, n) for n in ok_names(inv)]


def qc_reports(out: str, inv: Inventory) -> list[str]:
    """``qc.json`` of every dataset."""
    return [layout.qc(out, n) for n in ok_names(inv)]


def qc_views(out: str, inv: Inventory) -> list[str]:
    """``qc.html`` and the ``thumbnails`` folder of every dataset."""
    return [f(out, n) for n in ok_names(inv) for f in (layout.qc_page, layout.thumbnails)]


def qc_stop_reports(out: str, inv: Inventory, config: Config) -> list[str]:
    """``qc.json`` of every dataset when a QC failure fails its dataset (qc_fail_policy)."""
    return qc_reports(out, inv) if config["qc_fail_policy"] == "stop" else []


def delivers_zarr(config: Config) -> bool:
    """Whether the run delivers the OME-Zarr (``ome_zarr``; else the OME-TIFF alone)."""
    return store_settings(config).ome_zarr


def store_path(out: str, name: str, config: Config) -> str:
    """Return the store the pyramid step writes and the metadata, QC and OME-TIFF steps read.

    It is the final ``NAME/NAME.ome.zarr``, or ``intermediate/stores/NAME.ome.zarr`` when
    only the OME-TIFF is delivered (``ome_zarr: false``).
    """
    return layout.store(out, name) if delivers_zarr(config) else layout.work_store(out, name)


def stores(out: str, inv: Inventory, config: Config) -> list[str]:
    """Return the final store of every dataset; none when the OME-TIFF is delivered alone."""
    if not delivers_zarr(config):
        return []
    return [layout.store(out, n) for n in ok_names(inv)]


def source_fixities(out: str, inv: Inventory) -> list[str]:
    """``source-sha256.txt`` of every dataset."""
    return [layout.source_fixity(out, n) for n in ok_names(inv)]


def ome_tiffs(out: str, inv: Inventory, config: Config) -> list[str]:
    """Return the pyramidal OME-TIFF of every dataset, when the target or ``ome_tiff`` asks."""
    if not store_settings(config).ome_tiff:
        return []
    return [layout.ome_tiff(out, n) for n in ok_names(inv)]


def run_tables(out: str) -> list[str]:
    """Return the run's summary tables."""
    return [*layout.metadata_tables(out), layout.qc_table(out)]


def deliverables(out: str, inv: Inventory, config: Config) -> list[str]:
    """Every output the manifest covers (it leaves out the datasets failed.tsv lists).

    Every output of a step is one, or an input of a step that is: Snakemake remakes a
    missing output only when a step asks for it, and it does not check the steps after
    the inventory checkpoint for half-done outputs. A step killed between two of its
    outputs is redone because the one it did not write is missing.
    """
    return [
        *stores(out, inv, config),
        *ome_tiffs(out, inv, config),
        *dataset_records(out, inv),
        *qc_reports(out, inv),
        *qc_views(out, inv),
        *run_tables(out),
        layout.inventory_tsv(out),
        layout.inventory_json(out),
        layout.failed(out),
        layout.report(out),
        layout.bia_file_list(out),
    ]


def half_removed_stores(out: str) -> list[Path]:
    """Return the stores a stopped run left half-deleted.

    Snakemake deletes a store file by file: a temporary one once its last reader is
    done, any other before its step runs again. A kill can stop it half-way. What is left
    has lost its root metadata (every store is renamed into place whole, and a failed
    dataset's holds its note), yet it still looks like the step's output, and a newer one
    than what read it: its readers would run again on it and fail.
    """
    base = glob.escape(out)
    patterns = (
        layout.store(base, "*"),
        layout.intermediate(base, "*"),
        layout.assembled(base, "*"),
        layout.part(base, "*", "*"),
        layout.work_store(base, "*"),
    )
    found = []
    for pattern in patterns:
        for name in sorted(glob.glob(pattern)):  # hidden scratch folders do not match
            path = Path(name)
            if path.is_dir() and not any((path / m).exists() for m in _STORE_ROOTS):
                found.append(path)
    return found


def failure_messages(out: str, input_root: Path) -> list[str]:
    """After a run: one line per dataset ``failed.tsv`` lists, then a closing line.

    The closing line names the files to read. There are no lines when no dataset failed
    (or no list was written).
    """
    from bioingest.outcomes import read_failures

    failed = Path(layout.failed(out))
    failures = read_failures(failed) if failed.is_file() else []
    lines = [f"FAILED {input_root / f.file}: {f.reason}" for f in failures]
    if failures:
        lines.append(
            f"{len(failures)} dataset(s) failed: see {layout.failed(out)} and {layout.report(out)}"
        )
    return lines
