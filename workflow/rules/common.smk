# Shared set-up: config validation, the inventory's datasets, and the input functions
# the rules call. Paths under the output folder come from bioingest.layout, what is done
# with each dataset from bioingest.plan: this file only connects them to Snakemake.
# The datasets come from the inventory checkpoint (inventory.smk), never from parsing:
# on a cluster, opening a whole share belongs in a job, not on the login node.
import atexit
import gc
import inspect
import os
import shlex
import sys
import threading
from pathlib import Path

from snakemake.common import overwrite_function_params
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from bioingest import atomic, layout, plan, targets
from bioingest.errors import IngestError
from bioingest.inventory import input_root, listing_fingerprint, load, output_inside
from bioingest.schemas import schema_path

validate(config, schema=str(schema_path("config.schema.yaml")))
# The target's store settings with the explicit overrides; a contradiction (shards with
# NGFF 0.4, ome_zarr false without an OME-TIFF) stops the run here, before any job.
try:
    targets.from_config(config)
except ValueError as exc:
    raise WorkflowError(f"config: {exc}") from None
# --target and the explicit store settings, for convert (which writes the levels) and
# pyramid (which links them); the verbs resolve them.
STORE_OPTIONS = " ".join(shlex.quote(o) for o in targets.pyramid_options(config))
# --warm: jobs fork from the machine's warm Python (bioingest.warm), all but the inventory.
WARM = plan.warm_option(config)

# Snakemake keeps every job's objects alive until it exits, and CPython's cyclic
# collector rescans them as the job graph grows (14 s of a dry run over 10,000 datasets,
# benchmarks/bench_inventory.py) and once more at exit (10 s). Collect less often while
# the graph grows, and leave the exit scan out: the process is ending.
gc.set_threshold(100_000, 50, 100)
atexit.register(gc.freeze)


# The verbs must come from the same installation that parsed this workflow; PATH is
# declared so that cluster and cloud jobs get it too.
envvars:
    "PATH",


os.environ["PATH"] = (
    f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
)

OUT = config["output_dir"].rstrip("/")
INVENTORY = layout.inventory_json(OUT)
FAILED = layout.failed(OUT)
try:
    INPUT_ROOT = input_root(config)
    # A stat walk, no file opened: the inventory job reruns when this changes.
    LISTING = listing_fingerprint(config)
except IngestError as exc:
    raise WorkflowError(str(exc)) from None

# Before the job graph is built (not in cluster jobs, which parse this file again): a
# store a stopped run left half-deleted would look newer than what read it.
if workflow.is_main_process:
    for _store in plan.half_removed_stores(OUT):
        atomic.remove_dir(_store)
        print(f"removed {_store}: a stopped run left it half-deleted", file=sys.stderr)


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


def intermediate(path):
    """Intermediate stores are temporary unless keep_intermediate is set."""
    return directory(path) if config["keep_intermediate"] else temp(directory(path))


# -- per-dataset input functions: bioingest.plan ---------------------------------------


def convert_options(wildcards, input):
    """What convert needs to know of the dataset, as options (plan.convert_options)."""
    d = dataset(wildcards.dataset)
    return plan.convert_options(d, config, input_root=INPUT_ROOT, source=input.source)


def single_file_option(wildcards):
    """--single-file where the acquisition is one file."""
    return plan.single_file_option(dataset(wildcards.dataset))


def part_series(wildcards):
    """START:STOP series of a later part of a split conversion."""
    return plan.part_series(dataset(wildcards.dataset), config, int(wildcards.part))


def later_parts(wildcards):
    """Part stores of a split dataset after the first (written by convert_part)."""
    return plan.later_parts(OUT, dataset(wildcards.dataset), config)


def intermediate_store(wildcards):
    """The converted pixels: one store, or the parts of a split source joined."""
    return plan.intermediate_store(OUT, dataset(wildcards.dataset), config)


# The store pyramid writes: final, or intermediate when the OME-TIFF is delivered alone.
DATASET_STORE = plan.store_path(OUT, "{dataset}", config)


def store_output():
    """Output of pyramid: the final store, or an intermediate one (plan.store_path)."""
    path = plan.store_path(OUT, "{dataset}", config)
    return directory(path) if plan.delivers_zarr(config) else intermediate(path)


# Memory does not grow with the image (bioingest.resources): one value per kind of job.
CONVERT_MEM_MB = plan.convert_mem_mb(config)
IMAGE_MEM_MB = plan.image_mem_mb(config)


def convert_runtime(wildcards, attempt):
    """Minutes for a convert job: its share of the source's bytes."""
    return plan.convert_runtime(dataset(wildcards.dataset), config, attempt)


def part_runtime(wildcards, attempt):
    """Minutes for a later part of a split conversion."""
    d = dataset(wildcards.dataset)
    return plan.part_runtime(d, config, int(wildcards.part), attempt)


def image_runtime(wildcards, input, attempt):
    """Minutes for a job streaming the converted pixels, from the bytes convert reported."""
    return plan.image_runtime(Path(input.source_json), attempt)


def image_threads(wildcards):
    """Threads of a convert, pyramid or qc job (plan.image_threads)."""
    return plan.image_threads(dataset(wildcards.dataset), config)


def jvm_server_option():
    """--jvm-server when Bio-Formats files are read through one JVM per machine."""
    return plan.jvm_server_option(config)


def pyramid_method(wildcards):
    """Sample-sheet override (e.g. nearest for label images), else the config default."""
    return plan.pyramid_method(dataset(wildcards.dataset), config)


def output_folder(wildcards, output):
    """Folder of the rule's first output (the run's output folder for run-level rules)."""
    return os.path.dirname(output[0])


def bia_options(wildcards):
    """The delivered images the BioImage Archive file list names (plan.bia_options)."""
    return plan.bia_options(config)


# The study metadata file, tracked as an input when the user gave one.
STUDY_FILE = [config["study"]] if config["study"] else []


def study_option(wildcards, input):
    """The --study option for the metadata verb, quoted."""
    return plan.study_option(input.study)


def config_json(wildcards):
    """The validated configuration, for the run's provenance."""
    return plan.config_json(config)


# QC thresholds and policy from the config, as verb options.
QC_OPTIONS = plan.qc_options(config)


# -- what this run delivers: bioingest.plan --------------------------------------------


def described(wildcards):
    """source.json of every dataset the inventory could open."""
    return plan.described(OUT, inventory())


def dataset_records(wildcards):
    """metadata.json of every dataset."""
    return plan.dataset_records(OUT, inventory())


def qc_reports(wildcards):
    """qc.json of every dataset."""
    return plan.qc_reports(OUT, inventory())


def qc_stop_reports(wildcards):
    """qc.json of every dataset when a QC failure fails its dataset (qc_fail_policy)."""
    return plan.qc_stop_reports(OUT, inventory(), config)


def source_fixities(wildcards):
    """source-sha256.txt of every dataset."""
    return plan.source_fixities(OUT, inventory())


def all_sources(wildcards):
    """Every source file of every dataset."""
    return [_source(d, f) for d, f in plan.source_files(inventory())]


def sources_root(wildcards, input):
    """Folder the sources (input.sources, in all_sources order) are named relative to."""
    return plan.sources_root(inventory(), INPUT_ROOT, input.sources)


def dataset_names(wildcards):
    """Every dataset's name, quoted for the shell."""
    return plan.dataset_names(inventory())


def deliverables(wildcards):
    """Every output the manifest covers (it leaves out the datasets failed.tsv lists)."""
    return plan.deliverables(OUT, inventory(), config)


def end_of_run():
    """Cancel the scheduler's pending wake-up timers: the run is over.

    Snakemake arms a one-second timer at every scheduling round (its job rate limit),
    and Python waits for the last one before it exits: up to a second added to every run.
    """
    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            thread.cancel()


def report_failures():
    """After a run: one line per failed dataset, and a non-zero exit when there are any."""
    end_of_run()
    lines = plan.failure_messages(OUT, INPUT_ROOT)
    for line in lines:
        print(line, file=sys.stderr)
    if lines:
        sys.exit(1)


# Snakemake inspects an input function's signature at each call (700,000 calls for
# 10,000 datasets); give it the parameters of each function above once, as its own
# helpers in snakemake.ioutils do.
for _function in list(globals().values()):
    if inspect.isfunction(_function) and _function.__module__ == __name__:
        overwrite_function_params(_function, inspect.signature(_function).parameters)
