# Shared set-up: config validation, the inventory's datasets, output paths.
# The datasets come from the inventory checkpoint (inventory.smk), never from parsing:
# on a cluster, opening a whole share belongs in a job, not on the login node.
import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from bioingest.convert import split
from bioingest.errors import IngestError
from bioingest.inventory import input_root, listing_fingerprint, load, output_inside
from bioingest.resources import (
    convert_estimate,
    image_estimate,
    pixel_bytes,
)
from bioingest.schemas import schema_path
from bioingest.targets import from_config as store_settings

validate(config, schema=str(schema_path("config.schema.yaml")))


# The verbs must come from the same installation that parsed this workflow; PATH is
# declared so that cluster and cloud jobs get it too.
envvars:
    "PATH",


os.environ["PATH"] = (
    f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
)

OUT = config["output_dir"].rstrip("/")
INVENTORY = f"{OUT}/inventory.json"
FAILED = f"{OUT}/failed.tsv"
try:
    INPUT_ROOT = input_root(config)
    # A stat walk, no file opened: the inventory job reruns when this changes.
    LISTING = listing_fingerprint(config)
except IngestError as exc:
    raise WorkflowError(str(exc)) from None


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    part=r"[1-9][0-9]*",


_INVENTORY = []


def inventory():
    """The inventory, once its job has run (checkpoint)."""
    if not _INVENTORY:
        # Asked once it is done: input functions call this for every job, and the
        # checkpoint does not run twice in one invocation.
        done = checkpoints.inventory.get()
        # The checkpoint's own path: a local copy when outputs live in remote storage.
        _INVENTORY.append(load(Path(str(done.output.json)), root=INPUT_ROOT))
    return _INVENTORY[0]


def dataset(name):
    """A dataset of the inventory by name."""
    return inventory().by_name[name]


def inventory_source(wildcards):
    """What the inventory lists: input_dir (a folder or s3:// URL) or the sample sheet."""
    return config["samples"] or config["input_dir"]


def sample_sheet(wildcards):
    """The sample sheet, tracked as an input when the user gave one."""
    return [config["samples"]] if config["samples"] else []


def excluded_output(wildcards):
    """--exclude OUT when the output folder lies inside the input folder."""
    inside = output_inside(config, INPUT_ROOT)
    return f"--exclude {shlex.quote(str(inside))}" if inside else ""


def is_split(d):
    """Large sources are converted in parts (split_series_above_mb)."""
    limit = config["split_series_above_mb"]
    return (
        limit is not None and d.nbytes > limit * 1024 * 1024 and len(d.series_bytes) > 1
    )


def parts_of(d):
    """(start, stop) series of each conversion job of a dataset."""
    if not is_split(d):
        return [(0, len(d.series_bytes))]
    return split(len(d.series_bytes), config["series_per_job"])


def _source(d, path):
    """A source file as an input: a local path, or a storage object for a URL."""
    return storage(d.location(path)) if d.scheme else d.location(path)


def dataset_files(wildcards):
    """The main file a reader opens, and the files it uses (tracked, never passed on)."""
    d = dataset(wildcards.dataset)
    return {
        "source": _source(d, d.main),
        "companions": [_source(d, f) for f in d.files[1:]],
    }


def convert_options(wildcards, input):
    """What convert needs to know of the dataset, as options (one function: it is called
    for every job): the folder paths are recorded relative to (remote sources are local
    copies in Snakemake's storage folder, at the same path below it as below the
    bucket), the SHA-256 the inventory took, --single-file (only then may tifffile read
    it) and the first part's series of a split source."""
    d = dataset(wildcards.dataset)
    root = INPUT_ROOT
    if d.scheme:
        root = Path(input.source).parents[len(d.main.relative_to(INPUT_ROOT).parts) - 1]
    rels = [f.relative_to(INPUT_ROOT).as_posix() for f in d.files]
    options = [
        f"--root={root}",
        f"--sha256={json.dumps(dict(zip(rels, d.sha256)), sort_keys=True)}",
    ]
    if d.single_file:
        options.append("--single-file")
    if is_split(d):
        start, stop = parts_of(d)[0]
        options.append(f"--series={start}:{stop}")
    return " ".join(shlex.quote(o) for o in options)


def single_file_option(wildcards):
    """--single-file where the acquisition is one file: only then may tifffile read it."""
    return "--single-file" if dataset(wildcards.dataset).single_file else ""


def part_series(wildcards):
    """START:STOP series of a later part of a split conversion."""
    start, stop = parts_of(dataset(wildcards.dataset))[int(wildcards.part)]
    return f"{start}:{stop}"


def later_parts(wildcards):
    """Part stores of a split dataset after the first (written by convert_part)."""
    d = dataset(wildcards.dataset)
    return [
        f"{OUT}/intermediate/parts/{wildcards.dataset}/{k}.zarr"
        for k in range(1, len(parts_of(d)))
    ]


def intermediate_store(wildcards):
    """The converted pixels: one store, or the parts of a split source joined."""
    if is_split(dataset(wildcards.dataset)):
        return f"{OUT}/intermediate/assembled/{wildcards.dataset}.zarr"
    return f"{OUT}/intermediate/{wildcards.dataset}.zarr"


def intermediate(path):
    """Intermediate stores are temporary unless keep_intermediate is set."""
    return directory(path) if config["keep_intermediate"] else temp(directory(path))


def _convert_estimate(wildcards, attempt, share=1.0):
    d = dataset(wildcards.dataset)
    return convert_estimate(
        source_bytes=int(d.nbytes * share),
        java_heap_mb=config["java_heap_mb"],
        tile_size=config["tile_size"],
        attempt=attempt,
    )


def _share(wildcards, k):
    d = dataset(wildcards.dataset)
    start, stop = parts_of(d)[k]
    return sum(d.series_bytes[start:stop]) / max(sum(d.series_bytes), 1)


def convert_mem_mb(wildcards, attempt):
    """Memory of a convert job: Java heap, Python and tiles (resources.py)."""
    return _convert_estimate(wildcards, attempt).mem_mb


def convert_runtime(wildcards, attempt):
    """Minutes for a convert job: its share of the source's bytes."""
    return _convert_estimate(wildcards, attempt, _share(wildcards, 0)).runtime_min


def part_runtime(wildcards, attempt):
    """Minutes for a later part of a split conversion."""
    share = _share(wildcards, int(wildcards.part))
    return _convert_estimate(wildcards, attempt, share).runtime_min


def _image_estimate(input, attempt):
    store = store_settings(config)
    return image_estimate(
        pixel_bytes=pixel_bytes(Path(input.source_json)),
        chunk_size=store.chunk_size,
        shard_chunks=store.shard_chunks,
        tile_size=config["tile_size"],
        attempt=attempt,
    )


def image_mem_mb(wildcards, input, attempt):
    """Memory of a job streaming the converted pixels (pyramid, metadata, qc)."""
    return _image_estimate(input, attempt).mem_mb


def image_runtime(wildcards, input, attempt):
    """Minutes for such a job, from the pixel bytes convert reported."""
    return _image_estimate(input, attempt).runtime_min


def jvm_server_option():
    """--jvm-server when Bio-Formats files are read through one JVM per machine."""
    return "--jvm-server" if config["jvm_server"] else ""


def pyramid_method(wildcards):
    """Sample-sheet override (e.g. nearest for label images), else the config default."""
    return dataset(wildcards.dataset).pyramid_method or config["pyramid_method"]


def output_folder(wildcards, output):
    """Folder of the rule's first output (the run's output folder for run-level rules)."""
    return os.path.dirname(output[0])


def study_file(wildcards):
    """The study metadata file, tracked as an input when the user gave one."""
    return [config["study"]] if config["study"] else []


def study_option(wildcards, input):
    """The --study option for the metadata verb, quoted."""
    return f"--study {shlex.quote(input.study[0])}" if input.study else ""


def config_json(wildcards):
    """The validated configuration, for the run's provenance."""
    return json.dumps(config, sort_keys=True, default=str)


def qc_options(wildcards):
    """QC thresholds and policy from the config, as verb options."""
    keys = [k for k in config if k.startswith("qc_") and k != "qc_fail_policy"]
    options = [f"--{k[3:].replace('_', '-')}={config[k]}" for k in sorted(keys)]
    options += [
        f"--fail-policy={config['qc_fail_policy']}",
        f"--tile-size={config['tile_size']}",
    ]
    return " ".join(shlex.quote(o) for o in options)


# -- what this run delivers -----------------------------------------------------------
# Every dataset the inventory could open goes through every stage. One whose pixels could
# not be read (bad input) is recorded by convert; its later stages write failure records
# only, and the run-level verbs leave it out (failed.tsv lists it).


def _ok_names():
    return sorted(d.name for d in inventory().ok)


def described(wildcards):
    """source.json of every dataset the inventory could open."""
    return [f"{OUT}/{name}/{name}.source.json" for name in _ok_names()]


def dataset_records(wildcards):
    """metadata.json of every dataset."""
    return [f"{OUT}/{name}/metadata.json" for name in _ok_names()]


def qc_reports(wildcards):
    """qc.json of every dataset."""
    return [f"{OUT}/{name}/qc.json" for name in _ok_names()]


def qc_stop_reports(wildcards):
    """qc.json of every dataset when a QC failure fails its dataset (qc_fail_policy)."""
    return qc_reports(wildcards) if config["qc_fail_policy"] == "stop" else []


def stores(wildcards):
    """The final store of every dataset."""
    return [f"{OUT}/{name}/{name}.ome.zarr" for name in _ok_names()]


def source_fixities(wildcards):
    """source-sha256.txt of every dataset."""
    return [f"{OUT}/{name}/source-sha256.txt" for name in _ok_names()]


def all_sources(wildcards):
    """Every source file of every dataset."""
    return [_source(d, f) for d in inventory().ok for f in sorted(d.files)]


def sources_root(wildcards, input):
    """Folder the sources (input.sources, in all_sources order) are named relative to:
    for remote sources, the folder of their local copies in Snakemake's storage."""
    inv = inventory()
    if not inv.scheme or not input.sources:
        return str(INPUT_ROOT)
    first = sorted(inv.ok[0].files)[0]
    return str(
        Path(input.sources[0]).parents[len(first.relative_to(INPUT_ROOT).parts) - 1]
    )


def dataset_names(wildcards):
    """Every dataset's name, quoted for the shell."""
    return " ".join(shlex.quote(name) for name in _ok_names())


def ome_tiffs(wildcards):
    """The pyramidal OME-TIFF of every dataset, when the target or ome_tiff asks for it."""
    if not STORE.ome_tiff:
        return []
    return [f"{OUT}/{name}/{name}.ome.tif" for name in _ok_names()]


def run_tables(wildcards):
    """The run's summary tables."""
    return [
        f"{OUT}/summary/{t}.{ext}"
        for t in ("images", "channels")
        for ext in ("tsv", "parquet")
    ] + [f"{OUT}/summary/qc.tsv"]


def deliverables(wildcards):
    """Every output the manifest covers (it leaves out the datasets failed.tsv lists)."""
    return (
        stores(wildcards)
        + ome_tiffs(wildcards)
        + dataset_records(wildcards)
        + qc_reports(wildcards)
        + run_tables(wildcards)
        + [
            f"{OUT}/inventory.tsv",
            INVENTORY,
            FAILED,
            f"{OUT}/report.html",
            f"{OUT}/bia-file-list.tsv",
        ]
    )


def final_outputs(wildcards):
    """Everything a complete run produces."""
    return deliverables(wildcards) + [
        f"{OUT}/manifest-sha256.txt",
        f"{OUT}/ro-crate-metadata.json",
    ]


def report_failures():
    """After a run: one line per failed dataset, and a non-zero exit when there are any."""
    from bioingest.outcomes import read_failures

    failures = read_failures(Path(FAILED)) if Path(FAILED).is_file() else []
    for f in failures:
        print(f"FAILED {INPUT_ROOT / f.file}: {f.reason}", file=sys.stderr)
    if failures:
        print(
            f"{len(failures)} dataset(s) failed: see {FAILED} and {OUT}/report.html",
            file=sys.stderr,
        )
        sys.exit(1)
