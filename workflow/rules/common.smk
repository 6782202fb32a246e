# Shared set-up: config and sample validation, the dataset table, output paths.
import json
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from bioingest.convert import split
from bioingest.errors import IngestError
from bioingest.inventory import from_config, input_root
from bioingest.resources import (
    convert_estimate,
    image_estimate,
    pixel_bytes,
    series_bytes,
)
from bioingest.targets import from_config as store_settings

validate(config, schema="../schemas/config.schema.yaml")


# The verbs must come from the same installation that parsed this workflow; PATH is
# declared so that cluster and cloud jobs get it too.
envvars:
    "PATH",


os.environ["PATH"] = (
    f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
)

try:
    DATASETS = {d.name: d for d in from_config(config)}
except IngestError as exc:
    raise WorkflowError(str(exc)) from None

OUT = config["output_dir"].rstrip("/")
INPUT_ROOT = input_root(config)


def _names_pattern(names):
    """A wildcard constraint matching exactly these dataset names."""
    return "|".join(re.escape(name) for name in sorted(names)) or "^$"


def _is_split(d):
    limit = config["split_series_above_mb"]
    return limit is not None and d.nbytes > limit * 1024 * 1024


wildcard_constraints:
    dataset=_names_pattern(DATASETS),


# Datasets converted in one job, and those split across jobs by series (convert.smk).
WHOLE = _names_pattern(n for n, d in DATASETS.items() if not _is_split(d))
SPLIT = _names_pattern(n for n, d in DATASETS.items() if _is_split(d))


def intermediate(path):
    """Intermediate stores are temporary unless keep_intermediate is set."""
    return directory(path) if config["keep_intermediate"] else temp(directory(path))


def _source(d, path):
    """A source file as an input: a local path, or a storage object for a URL."""
    return storage(d.location(path)) if d.scheme else d.location(path)


def dataset_files(wildcards):
    """The main file a reader opens, and its companions (tracked, never passed on)."""
    d = DATASETS[wildcards.dataset]
    return {
        "source": _source(d, d.main),
        "companions": [_source(d, f) for f in d.files[1:]],
    }


def _local_root(d, path, local):
    """The input folder as a job sees it: remote sources are local copies in Snakemake's
    storage folder, at the same path below it as below the bucket."""
    if not d.scheme:
        return str(INPUT_ROOT)
    return str(Path(local).parents[len(path.relative_to(INPUT_ROOT).parts) - 1])


def source_root(wildcards, input):
    """Folder the dataset's source paths are recorded relative to."""
    d = DATASETS[wildcards.dataset]
    return _local_root(d, d.main, input.source)


def sources_root(wildcards, input):
    """Folder every source path is recorded relative to (input.sources follows all_sources)."""
    d = DATASETS[min(DATASETS)]
    return _local_root(d, sorted(d.files)[0], input.sources[0])


def _convert_estimate(wildcards, attempt):
    d = DATASETS[wildcards.dataset]
    return convert_estimate(
        source_bytes=d.nbytes,
        java_heap_mb=config["java_heap_mb"],
        tile_size=config["tile_size"],
        attempt=attempt,
    )


def convert_mem_mb(wildcards, attempt):
    """Memory of a convert job: Java heap, Python and tiles (resources.py)."""
    return _convert_estimate(wildcards, attempt).mem_mb


def convert_runtime(wildcards, attempt):
    """Minutes for a convert job, from the size of the source files."""
    return _convert_estimate(wildcards, attempt).runtime_min


def series_parts(wildcards):
    """Part stores of a split dataset: one per series_per_job series, once the source
    is described (checkpoint describe_source)."""
    described = checkpoints.describe_source.get(dataset=wildcards.dataset)
    parts = _parts(described.output.source_json)
    return [
        f"{OUT}/intermediate/{wildcards.dataset}.parts/{k}.zarr"
        for k in range(len(parts))
    ]


def _parts(source_json):
    return split(len(series_bytes(Path(source_json))), config["series_per_job"])


def _part_range(wildcards, input):
    return _parts(input.source_json)[int(wildcards.part)]


def part_series(wildcards, input):
    """The --series START:STOP of one part."""
    start, stop = _part_range(wildcards, input)
    return f"{start}:{stop}"


def part_runtime(wildcards, input, attempt):
    """Minutes for a part job: its share of the source's bytes, by pixel bytes."""
    start, stop = _part_range(wildcards, input)
    d = DATASETS[wildcards.dataset]
    shares = series_bytes(Path(input.source_json))
    return convert_estimate(
        source_bytes=d.nbytes * sum(shares[start:stop]) // max(sum(shares), 1),
        java_heap_mb=config["java_heap_mb"],
        tile_size=config["tile_size"],
        attempt=attempt,
    ).runtime_min


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
    """--jvm-server when conversions share one Bio-Formats JVM per machine."""
    return "--jvm-server" if config["jvm_server"] else ""


def pyramid_method(wildcards):
    """Sample-sheet override (e.g. nearest for label images), else the config default."""
    return DATASETS[wildcards.dataset].pyramid_method or config["pyramid_method"]


def output_folder(wildcards, output):
    """Folder of the rule's first output (the run's output folder for run-level rules)."""
    return os.path.dirname(output[0])


def study_file(wildcards):
    """The study metadata file, tracked as an input when the user gave one."""
    return [config["study"]] if config["study"] else []


def study_option(wildcards, input):
    """The --study option for the metadata verb, quoted."""
    return f"--study {shlex.quote(input.study[0])}" if input.study else ""


def dataset_records(wildcards):
    """metadata.json of every dataset."""
    return [f"{OUT}/{name}/metadata.json" for name in sorted(DATASETS)]


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


def dataset_names(wildcards):
    """Every dataset name, quoted for the shell."""
    return " ".join(shlex.quote(name) for name in sorted(DATASETS))


def write_partial_report():
    """Report on whatever a failed run produced (called from onerror)."""
    from bioingest.report import write_report

    if Path(OUT).is_dir():
        write_report(Path(OUT), sorted(DATASETS))
        print(f"Report of the partial run: {OUT}/report.html", file=sys.stderr)


def qc_reports(wildcards):
    """qc.json of every dataset."""
    return [f"{OUT}/{name}/qc.json" for name in sorted(DATASETS)]


def all_sources(wildcards):
    """Every source file of every dataset, companions included."""
    return [_source(d, f) for _, d in sorted(DATASETS.items()) for f in sorted(d.files)]


def source_fixities(wildcards):
    """source-sha256.txt of every dataset."""
    return [f"{OUT}/{name}/source-sha256.txt" for name in sorted(DATASETS)]


def deliverables(wildcards=None):
    """Every output the manifest covers."""
    stores = [f"{OUT}/{name}/{name}.ome.zarr" for name in sorted(DATASETS)]
    tables = [
        f"{OUT}/summary/{t}.{ext}"
        for t in ("images", "channels")
        for ext in ("tsv", "parquet")
    ]
    run_files = [
        f"{OUT}/summary/qc.tsv",
        f"{OUT}/report.html",
        f"{OUT}/bia-file-list.tsv",
    ]
    return (
        stores
        + OME_TIFFS
        + dataset_records(wildcards)
        + qc_reports(wildcards)
        + tables
        + run_files
    )


def final_outputs():
    """Everything a complete run produces."""
    return deliverables() + [
        f"{OUT}/manifest-sha256.txt",
        f"{OUT}/ro-crate-metadata.json",
    ]
