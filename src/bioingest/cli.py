"""Command-line verbs; the workflow rules call these with quoted paths."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import logging
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bioingest import __version__, layout
from bioingest.errors import IngestError

if TYPE_CHECKING:
    from bioingest.arrays import StoreOptions

log = logging.getLogger("bioingest")
# Before numpy loads: the verbs run their own threads, and OpenBLAS's would spin beside
# them on a few cores (numpy starts one per core; QC used 10 % more CPU with them).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
#: glibc's ``mallopt`` parameter for the number of malloc arenas.
_M_ARENA_MAX = -8


def _limit_malloc_arenas() -> None:
    """Give malloc one arena per usable core, not up to eight, before any thread starts.

    Each arena keeps memory its threads freed, so with one per thread (tensorstore's,
    the downsamplers', the reader's) a process's peak depended on which threads happened
    to free what: ``pyramid``'s varied by a quarter between runs of one image. A user's
    ``MALLOC_ARENA_MAX`` is left as given. Not glibc: nothing to do.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_ARENA_MAX, max(len(os.sched_getaffinity(0)), 1))


_limit_malloc_arenas()


def trace_file(log_file: Path) -> Path:
    """Return where the traceback of an unexpected failure goes: next to the log, never in it.

    That way the log (shown on the console by ``show-failed-logs``) keeps one line.
    """
    return layout.trace_of(log_file)


def _write_trace(log_file: Path | None) -> str:
    """Save the traceback being handled; return how to name its file in a message.

    Next to the log, its name alone (logs must not depend on the output folder), else its
    path.
    """
    import tempfile
    import traceback

    text = traceback.format_exc()
    try:
        if log_file is not None:
            target = trace_file(log_file)
            target.write_text(text, encoding="utf-8")
            return target.name
        with tempfile.NamedTemporaryFile(
            "w", prefix="bioingest-", suffix=".trace.log", delete=False, encoding="utf-8"
        ) as fh:
            fh.write(text)
        return fh.name
    except OSError as exc:
        return f"no file: {exc.strerror or exc}"


def _setup_logging(log_file: Path | None) -> None:
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO)
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        # A trace left by an earlier failed attempt does not belong to this one.
        trace_file(log_file).unlink(missing_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w", encoding="utf-8"))
    logging.basicConfig(
        level=logging.DEBUG, format="%(levelname)s %(message)s", handlers=handlers, force=True
    )
    # A log file on a full disk must not print logging's own traceback on the console.
    logging.raiseExceptions = False
    for noisy in ("asyncio", "numcodecs", "zarr", "fsspec", "scyjava", "cjdk", "jgo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # zarr warns about Snakemake's marker in every folder output it opens as a group.
    warnings.filterwarnings(
        "ignore", re.escape(f"Object at {layout.SNAKEMAKE_MARK} is not"), UserWarning
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _series_range(text: str) -> tuple[int, int]:
    start, sep, stop = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(start), int(stop)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:STOP, got {text!r}") from None


def _cmd_convert(args: argparse.Namespace) -> None:
    from bioingest.convert import convert

    if args.zarr is None and args.ome_xml is None and args.source_json is None:
        raise SystemExit("bioingest convert: give --zarr, --ome-xml or --source-json")
    if args.fixity is not None:
        from bioingest.checksum import write_source_fixity

        known = json.loads(args.sha256)
        write_source_fixity(
            args.files or [args.source], root=args.root, out=args.fixity, known=known
        )
    convert(
        args.source,
        zarr_path=args.zarr,
        ome_xml_path=args.ome_xml,
        source_json_path=args.source_json,
        series=args.series,
        reader=args.reader,
        tile_size=args.tile_size,
        opts=_store_options(args, "convert"),
        jar=args.jar or None,
        maven=args.maven or None,
        heap_mb=args.java_heap_mb,
        jvm_server=args.jvm_server,
        single_file=args.single_file,
        record_failure=args.record_failure,
    )


def _cmd_jvm_server(args: argparse.Namespace) -> None:
    from bioingest.readers.remote import serve

    serve(
        args.socket,
        jar=args.jar or None,
        maven=args.maven or None,
        heap_mb=args.java_heap_mb,
        idle_timeout_s=args.idle_timeout,
    )


def _cmd_warm_server(args: argparse.Namespace) -> None:
    from bioingest.warm import serve

    serve(args.socket, idle_timeout_s=args.idle_timeout)


def _cmd_assemble(args: argparse.Namespace) -> None:
    from bioingest.convert import assemble

    assemble(args.parts, source_json_path=args.source_json, zarr_path=args.zarr)


def _store_options(args: argparse.Namespace, verb: str) -> StoreOptions:
    """Return the final store's settings: the target's, overridden by the options given."""
    from bioingest import targets
    from bioingest.arrays import StoreOptions

    try:
        store = targets.resolve(
            args.target,
            ngff_version=args.ngff_version,
            chunk_size=args.chunk_size,
            shard_chunks=args.shard_chunks,
            compression_level=args.compression_level,
        )
    except ValueError as exc:
        raise SystemExit(f"bioingest {verb}: {exc}") from None
    return StoreOptions(
        version=store.ngff_version,
        chunk_size=store.chunk_size,
        shard_chunks=store.shard_chunks,
        compression_level=store.compression_level,
        method=args.method,
        min_size=args.min_size,
        threads=args.threads,
    )


def _cmd_pyramid(args: argparse.Namespace) -> None:
    from bioingest.pyramid import write_step

    opts = _store_options(args, "pyramid")
    name = args.name or layout.name_of_store(args.out)
    study = _study(args.study)
    written = write_step(
        args.intermediate,
        args.ome_xml,
        args.out,
        source_json=args.source_json,
        opts=opts,
        name=name,
        study=study,
    )
    if not written:
        log.info("pyramid %s: not converted, nothing to write", args.out.name)


def _cmd_ome_tiff(args: argparse.Namespace) -> None:
    from bioingest.ometiff import recorded_hashes, write
    from bioingest.outcomes import recorded_failure, write_failed_file

    if failure := recorded_failure(args.source_json):
        write_failed_file(args.out, failure)
        log.info("ome-tiff %s: not converted, nothing to write", args.out.name)
        return
    hashes = recorded_hashes(args.metadata) if args.metadata is not None else None
    write(args.store, args.ome_xml, args.out, pixel_hashes=hashes)


def _study(path: Path | None) -> dict[str, Any] | None:
    from bioingest.study import load_study

    return load_study(path) if path else None


def _cmd_checksum(args: argparse.Namespace) -> None:
    from bioingest import checksum

    if args.action == "sources":
        checksum.write_source_fixity(args.paths, root=args.root, out=args.out, threads=args.threads)
        return
    (out_dir,) = args.paths
    checksum.write_run_manifest(
        out_dir,
        args.outputs,
        fixity=args.fixity,
        failed=args.failed,
        sources_root=args.sources_root,
        threads=args.threads,
        out=args.out,
    )


def _cmd_verify(args: argparse.Namespace) -> int:
    from bioingest.checksum import verify

    problems = verify(
        args.out_dir,
        against=args.against,
        pixels=args.pixels,
        sources_root=args.sources,
        threads=args.threads,
    )
    for line in problems:
        print(line)
    if problems:
        log.error("%s: %d problem(s) found", args.out_dir, len(problems))
        return 1
    checked = "pixels, files" if args.pixels else "files"
    log.info(
        "%s: verified (%s%s)",
        args.out_dir,
        checked,
        ", sources" if args.sources else "; sources not checked, pass --sources DIR",
    )
    return 0


def _cmd_bag(args: argparse.Namespace) -> None:
    from bioingest.provenance import make_bag

    make_bag(args.out_dir, threads=args.threads)
    log.info("%s: BagIt bag written (payload in data/)", args.out_dir)


def _cmd_provenance(args: argparse.Namespace) -> None:
    from bioingest import provenance

    study = _study(args.study)
    if args.action == "bia-list":
        provenance.write_bia_file_list(
            args.out,
            args.records,
            failed=args.failed,
            study=study,
            ome_zarr=args.ome_zarr,
            ome_tiff=args.ome_tiff,
        )
        return
    if args.workflow_dir is None:
        raise IngestError(args.out_dir, "provenance crate needs --workflow-dir")
    config = json.loads(args.config_json) if args.config_json else {}
    provenance.write_run_crate(
        args.out_dir,
        workflow_dir=args.workflow_dir,
        sources=args.sources,
        fixity=args.fixity,
        config=config,
        study=study,
        started=args.started,
        sources_root=args.sources_root,
    )


def _cmd_metadata(args: argparse.Namespace) -> None:
    from bioingest import metadata
    from bioingest.records import metadata_json

    name = args.dataset or args.source.name.split(".")[0]
    options = {
        "source_json": args.source_json,
        "store": args.store,
        "intermediate": args.intermediate,
        "study": args.study,
    }
    if not args.out:
        sys.stdout.write(metadata_json(metadata.describe(args.source, dataset=name, **options)))
        return
    record = metadata.write_step(args.source, args.out, dataset=name, **options)
    if record is None:
        log.info("metadata %s: not converted, no record", name)
        return
    score = record["completeness"]
    flags = sorted({f for s in record["series"] for f in s["flags"]})
    log.info(
        "metadata %s: %s (tier 1 %.1f%%, tier 2 %.1f%%), flags: %s",
        name,
        score["nbo_tier"],
        score["tier1_pct"],
        score["tier2_pct"],
        ", ".join(flags) or "none",
    )


def _cmd_tables(args: argparse.Namespace) -> None:
    from bioingest.tables import write_tables

    write_tables(args.records, args.out_dir, table=args.table)


def _cmd_qc(args: argparse.Namespace) -> int:
    from bioingest.outcomes import recorded_failure
    from bioingest.qc import Thresholds, run_qc

    if failure := recorded_failure(args.source_json):
        from bioingest.qc_page import write_not_converted

        name = layout.name_of_store(args.store)
        write_not_converted(name, failure, out=args.out, thumbnails=args.thumbnails, page=args.page)
        log.info("qc %s: not converted, nothing to check", name)
        return 0

    thresholds = Thresholds(
        **{k: getattr(args, k) for k in Thresholds.__dataclass_fields__ if hasattr(args, k)}
    )
    qc = run_qc(
        args.intermediate,
        args.metadata,
        args.store,
        out=args.out,
        thumbnails=args.thumbnails,
        thresholds=thresholds,
        page=args.page,
        ome_tiff_only=args.ome_tiff_only,
        threads=args.threads,
    )
    if args.fail_policy == "stop" and qc["status"] == "fail":
        from bioingest.records import failing_checks

        # Recorded in failed.tsv by the outcomes step; the run goes on for the others.
        log.error("%s: QC failed: %s", args.store, ", ".join(failing_checks(qc, "fail")))
    return 0


def _cmd_report(args: argparse.Namespace) -> None:
    from bioingest.report import read_dataset_names, read_failed, write_report

    datasets = list(args.datasets or [])
    if args.datasets_file:
        datasets += read_dataset_names(args.datasets_file)
    if args.datasets is None and args.datasets_file is None:
        raise SystemExit("bioingest report: give --datasets or --datasets-file")
    failed = read_failed(args.failed) if args.failed else None
    # No output path in the log: logs are outputs too and must not differ between folders.
    target = write_report(
        args.out_dir, datasets, out=args.out, failed=failed, inventory=args.inventory
    )
    log.info("report: %s written for %d datasets", target.name, len(datasets))


def _cmd_outcomes(args: argparse.Namespace) -> None:
    from bioingest.outcomes import collect, write_failures

    failures = collect(args.inventory, args.described, qc_reports=args.qc_stop)
    write_failures(args.out, failures)
    for f in failures:
        log.info("%s failed (%s): %s", f.dataset, f.step, f.reason)
    log.info("outcomes: %d dataset(s) failed", len(failures))


def _cmd_inventory(args: argparse.Namespace) -> None:
    # A local source's Bio-Formats server starts first: its JVM starts while this
    # process imports the rest and hashes the files. A folder of OME-TIFFs alone may
    # need no JVM (inventory.ome_tiffs_only): there it starts on the first file opened.
    local = "://" not in str(args.source)
    early = (
        _prober(args)
        if args.jvm_server and local and not _ome_tiff_names_only(Path(args.source))
        else None
    )
    try:
        from bioingest import inventory

        inv = inventory.take(
            str(args.source),
            prober=lambda: early or _prober(args, lazy=True),
            exclude=args.exclude,
            min_age_s=args.min_age_s,
            cache_path=args.cache,
            threads=args.threads,
        )
    finally:
        if early is not None:
            early[1]()
    if args.tsv is None and args.json is None:
        sys.stdout.write(inv.table())
    inventory.write(inv, tsv=args.tsv, json_path=args.json)
    log.info(
        "inventory: %d dataset(s), %d failed, %d file(s) skipped",
        len(inv.ok),
        len(inv.failed),
        len(inv.skipped),
    )


def _jar_identity(jar: Path) -> str:
    return f"{jar.name} {jar.stat().st_size}"


def _ome_tiff_names_only(source: Path) -> bool:
    """Return whether every visible file below the folder ``source`` is named as an OME-TIFF."""
    from bioingest.probe import OME_TIFF_SUFFIXES

    if not source.is_dir():
        return False
    for _, dirs, files in os.walk(source):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if any(not f.lower().endswith(OME_TIFF_SUFFIXES) for f in files if not f.startswith(".")):
            return False
    return True


def _prober(args: argparse.Namespace, *, lazy: bool = False) -> tuple[Any, Any, str]:
    """How the inventory opens files: ``(open, close, cache key of the reader)``.

    ``lazy``: Bio-Formats starts when the first file is opened, not now.
    """
    from bioingest.java import find_jar

    jar, maven = args.jar or None, args.maven or None
    # A cache made with another Bio-Formats build is not reused.
    key = f"{__version__} {maven}" if maven else f"{__version__} {_jar_identity(find_jar(jar))}"
    if lazy:
        started: list[tuple[Any, Any, str]] = []

        def open_file(path: Path) -> Any:
            if not started:
                started.append(_prober(args))
            return started[0][0](path)

        def close() -> None:
            if started:
                started[0][1]()

        return open_file, close, key
    if args.jvm_server:
        from bioingest.readers.remote import RemoteProber

        remote = RemoteProber(jar=jar, maven=maven, heap_mb=args.java_heap_mb)
        return remote, remote.close, key
    from bioingest.java import start_jvm
    from bioingest.probe import probe

    start_jvm(jar=jar, maven=maven, heap_mb=args.java_heap_mb)
    return probe, lambda: None, key


def _shared_options() -> tuple[argparse.ArgumentParser, ...]:
    """Return the options several verbs share, as parent parsers.

    They are ``--log``; the options that choose and size the Bio-Formats JVM; the hashing
    threads of ``checksum`` and ``verify``; the final store's layout, codec, levels and
    coding threads, for ``convert`` (which writes the levels) and ``pyramid``.
    """
    log_option = argparse.ArgumentParser(add_help=False)
    log_option.add_argument("--log", type=Path, help="also write messages to this file")
    log_option.add_argument(
        "--warm",
        action="store_true",
        help="run in this machine's warm Python, started by the first such job (the "
        "verbs after the inventory; saves each job's start-up); the inventory only starts it",
    )
    java_options = argparse.ArgumentParser(add_help=False)
    java = java_options.add_argument_group("Bio-Formats")
    java.add_argument("--jar", default="", help="bioformats_package.jar to use")
    java.add_argument("--maven", default="", help="opt-in Maven coordinate instead of a jar")
    java.add_argument(
        "--java-heap-mb",
        type=_positive,
        default=1024,
        help="maximum Java heap in MiB (default: 1024)",
    )
    threads_option = argparse.ArgumentParser(add_help=False)
    threads_option.add_argument(
        "--threads", type=_positive, default=2, help="hashing threads (default: 2)"
    )
    from bioingest import targets

    # The final store's layout, codec and levels: convert writes them, pyramid links them
    # (or writes them, when convert's were made with other settings).
    store_options = argparse.ArgumentParser(add_help=False)
    store_options.add_argument(
        "--target",
        choices=targets.TARGETS,
        default=targets.DEFAULT_TARGET,
        help="viewer family whose store settings to use; the options below override them "
        f"(default: {targets.DEFAULT_TARGET})",
    )
    store_options.add_argument(
        "--ngff-version",
        choices=["0.5", "0.4"],
        help="0.5 writes Zarr v3, 0.4 writes Zarr v2 (default: the target's)",
    )
    store_options.add_argument(
        "--chunk-size", type=_positive, help="chunk edge in Y and X (default: the target's)"
    )
    store_options.add_argument(
        "--shard-chunks",
        type=int,
        help="chunks per shard edge, 0.5 only; 0 or 1 disables (default: the target's)",
    )
    store_options.add_argument(
        "--compression-level", type=int, help="zstd level (default: the target's)"
    )
    store_options.add_argument(
        "--method",
        choices=["mean", "nearest", "mode"],
        default="mean",
        help="downsampling of the levels; nearest or mode for label images (default: mean)",
    )
    store_options.add_argument(
        "--min-size",
        type=_positive,
        default=64,
        help="smallest plane edge a level may have (default: 64)",
    )
    store_options.add_argument(
        "--threads",
        type=int,
        default=0,
        help="threads that encode and decode chunks (default: 0, every core this process may use)",
    )
    return log_option, java_options, threads_option, store_options


def build_parser() -> argparse.ArgumentParser:
    """Build the ``bioingest`` argument parser with one sub-command per stage."""
    parser = argparse.ArgumentParser(
        prog="bioingest",
        description="Turn microscopy files into OME-Zarr, losslessly. "
        "Each verb is one workflow stage; run 'snakemake' to do them all.",
    )
    parser.add_argument("--version", action="version", version=f"bioingest {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="VERB")
    log_option, java_options, threads_option, store_options = _shared_options()

    p = sub.add_parser(
        "inventory",
        parents=[log_option, java_options],
        help="group the files of a folder into datasets, as Bio-Formats groups them",
        description="Hash every file below SOURCE, then open each file no acquisition has "
        "claimed yet with Bio-Formats: its main file and used files form one dataset. A "
        "folder of nothing but single-file OME-TIFFs is read with tifffile, without a JVM. "
        "Lists every file with its dataset, or why it was skipped or failed (TSV on "
        "standard output unless --tsv or --json is given).",
    )
    p.add_argument("source", help="input folder, tab-separated sample sheet, or s3:// folder")
    p.add_argument("--tsv", type=Path, help="write the per-file table here (inventory.tsv)")
    p.add_argument("--json", type=Path, help="write the datasets as JSON here (inventory.json)")
    p.add_argument("--cache", type=Path, help="cache of hashes, probes and names between runs")
    p.add_argument("--exclude", type=Path, help="folder never taken as input (the output folder)")
    p.add_argument(
        "--min-age-s",
        type=float,
        default=0.0,
        help="skip files modified less than this many seconds ago (default: 0)",
    )
    p.add_argument("--threads", type=_positive, default=2, help="files hashed in parallel")
    p.add_argument(
        "--jvm-server",
        action="store_true",
        help="open files through the machine's Bio-Formats server instead of a JVM in this process",
    )
    p.set_defaults(func=_cmd_inventory)

    p = sub.add_parser(
        "outcomes",
        parents=[log_option],
        help="list the datasets that failed on bad input (failed.tsv)",
        description="Collect the failures the inventory and the conversions recorded into "
        "one table: dataset, step, main file, reason.",
    )
    p.add_argument("inventory", type=Path, help="inventory.json")
    p.add_argument("described", type=Path, nargs="*", help="{dataset}.source.json files")
    p.add_argument(
        "--qc-stop",
        type=Path,
        nargs="*",
        default=[],
        help="qc.json files whose failed checks fail their dataset (qc_fail_policy: stop)",
    )
    p.add_argument("--out", type=Path, required=True, help="failed.tsv to write")
    p.set_defaults(func=_cmd_outcomes)

    p = sub.add_parser(
        "convert",
        parents=[log_option, java_options, store_options],
        help="read a source once into its final levels, losslessly, plus OME-XML",
        description="Stream every series of SOURCE at full resolution, in bands of rows, "
        "into an intermediate store whose arrays are laid out and compressed as the final "
        "store's levels (the store options below), hashing the pixels as they are read; "
        "save the reader's complete OME-XML.",
    )
    p.add_argument("source", type=Path, help="main file of the dataset")
    p.add_argument("--zarr", type=Path, help="intermediate store to write")
    p.add_argument("--ome-xml", type=Path, help="OME-XML file to write")
    p.add_argument(
        "--source-json", type=Path, help="also write the reader, format and files used as JSON"
    )
    p.add_argument(
        "--series",
        type=_series_range,
        metavar="START:STOP",
        help="convert only series START to STOP-1 (one part of a split conversion; "
        "join the parts with 'bioingest assemble')",
    )
    p.add_argument(
        "--reader",
        choices=["auto", "bioformats", "tifffile"],
        default="auto",
        help="auto: tifffile for TIFFs it reads exactly, else Bio-Formats (default: auto)",
    )
    p.add_argument(
        "--tile-size",
        type=_positive,
        default=1024,
        help="tile edge in pixels; bounds memory (default: 1024)",
    )
    p.add_argument(
        "--single-file",
        action="store_true",
        help="the source is an acquisition of one file (as 'bioingest inventory' found): "
        "only then may auto read a TIFF with tifffile",
    )
    p.add_argument(
        "--fixity",
        type=Path,
        help="first write the SHA-256 of --files here (source-sha256.txt), then read",
    )
    p.add_argument("--files", type=Path, nargs="*", default=[], help="the acquisition's files")
    p.add_argument("--root", type=Path, default=Path("."), help="folder --files are relative to")
    p.add_argument(
        "--sha256",
        default="{}",
        help="JSON {relative path: sha256} the inventory recorded; others are hashed now",
    )
    p.add_argument(
        "--record-failure",
        action="store_true",
        help="when the source cannot be read, record why in --source-json and exit 0",
    )
    p.add_argument(
        "--jvm-server",
        action="store_true",
        help="read Bio-Formats files through this machine's Bio-Formats server, started on "
        "first use and stopped when idle: one JVM for many jobs",
    )
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser(
        "jvm-server",
        parents=[java_options],
        help="serve Bio-Formats reads to 'convert --jvm-server' jobs (started by them)",
        description="Start one JVM with Bio-Formats and answer the conversion jobs of this "
        "machine on a Unix socket until no job has connected for --idle-timeout seconds. "
        "'bioingest convert --jvm-server' starts it when needed.",
    )
    p.add_argument("--socket", type=Path, required=True, help="Unix socket to listen on")
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=60.0,
        help="exit after this many seconds without a client (default: 60)",
    )
    p.set_defaults(func=_cmd_jvm_server)

    p = sub.add_parser(
        "warm-server",
        help="run '--warm' jobs in one warm Python (the first such job starts it)",
        description="Import bioingest's modules once, then run each '--warm' job of this "
        "machine (convert, pyramid, metadata, qc, outcomes, tables, report, checksum, "
        "provenance) in a child forked for it, with the job's arguments, folder, umask, "
        "environment and streams, until no job has come for --idle-timeout seconds.",
    )
    p.add_argument("socket", type=Path, help="Unix socket to listen on")
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=60.0,
        help="exit after this many seconds without a job (default: 60)",
    )
    p.set_defaults(func=_cmd_warm_server)

    p = sub.add_parser(
        "assemble",
        parents=[log_option],
        help="join the parts of a conversion split by series into one intermediate store",
        description="Join the series of PART stores (each written by 'bioingest convert "
        "--series') into one intermediate store (hard links or copies; the parts are left "
        "unchanged), checking that every series described in "
        "--source-json is there exactly once.",
    )
    p.add_argument("parts", type=Path, nargs="+", metavar="PART", help="part store")
    p.add_argument("--source-json", type=Path, required=True, help="description written by convert")
    p.add_argument("--zarr", type=Path, required=True, help="intermediate store to write")
    p.set_defaults(func=_cmd_assemble)

    p = sub.add_parser(
        "metadata",
        parents=[log_option],
        help="normalised metadata record, sanity flags and completeness score",
        description="Read OME-XML (a .ome.xml file, an OME-Zarr, or any source file) and "
        "write a normalised record: values in µm, s and nm with their origin "
        "(file/user/inferred/missing), sanity flags and the NBO/REMBI completeness score.",
    )
    p.add_argument("source", type=Path, help="OME-XML file, OME-Zarr folder or image file")
    p.add_argument("--out", type=Path, help="metadata.json to write (default: print)")
    p.add_argument("--dataset", default="", help="dataset name (default: from the file name)")
    p.add_argument("--source-json", type=Path, help="source description written by convert")
    p.add_argument("--study", type=Path, help="study metadata YAML (see config/study.yaml)")
    p.add_argument(
        "--store", type=Path, help="final OME-Zarr: record each image's pixel-content hash"
    )
    p.add_argument(
        "--intermediate",
        type=Path,
        help="convert's store: record the pixel-content hash of each series as read "
        "(instead of decoding --store)",
    )
    p.set_defaults(func=_cmd_metadata)

    p = sub.add_parser(
        "qc",
        parents=[log_option],
        help="quality metrics with pass/warn/fail flags, and thumbnails",
        description="Stream the final level 0 once: intensity statistics, saturation, "
        "bit-depth use, blank planes, focus per plane, illumination uniformity and "
        "conversion fidelity (its hash against the one convert took of the source), each "
        "graded pass/warn/fail (formulas: docs/qc.md).",
    )
    p.add_argument(
        "intermediate", type=Path, help="store written by 'bioingest convert' (its description)"
    )
    p.add_argument("--metadata", type=Path, required=True, help="metadata.json of the dataset")
    p.add_argument(
        "--store", type=Path, required=True, help="OME-Zarr written by 'bioingest pyramid'"
    )
    p.add_argument("--out", type=Path, required=True, help="qc.json to write")
    p.add_argument("--thumbnails", type=Path, required=True, help="folder for PNG thumbnails")
    p.add_argument(
        "--source-json",
        type=Path,
        help="convert's description: a recorded failure writes a failure record instead",
    )
    p.add_argument(
        "--page", type=Path, help="the dataset's QC page to write (qc.html next to qc.json)"
    )
    p.add_argument(
        "--ome-tiff-only",
        action="store_true",
        help="the store is an intermediate: the OME-TIFF is the delivered image (ome_zarr false)",
    )
    p.add_argument(
        "--fail-policy",
        choices=["report", "stop"],
        default="report",
        help="stop: exit 1 when any check fails (default: report)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="threads that decode and measure tiles (default: 0, every core this process may use)",
    )
    from bioingest.qc_checks import Thresholds

    for item in dataclasses.fields(Thresholds):
        key, default = item.name, item.default
        p.add_argument(
            f"--{key.replace('_', '-')}",
            dest=key,
            type=type(default),
            default=default,
            help=f"config qc_{key} (docs/qc.md; default: {default})"
            if key != "tile_size"
            else f"tile edge read at once (default: {default})",
        )
    p.set_defaults(func=_cmd_qc)

    p = sub.add_parser(
        "tables",
        parents=[log_option],
        help="run-wide images/channels tables from metadata records",
        description="Collect metadata.json records into images.tsv and channels.tsv "
        "(one row per series / per channel) plus Parquet copies.",
    )
    p.add_argument("records", type=Path, nargs="*", help="metadata.json or qc.json files")
    p.add_argument(
        "--table",
        choices=["metadata", "qc"],
        help="write this table even from no record (default: what the records are)",
    )
    p.add_argument("--out-dir", type=Path, required=True, help="folder for the tables")
    p.set_defaults(func=_cmd_tables)

    p = sub.add_parser(
        "pyramid",
        parents=[log_option, store_options],
        help="write the final OME-Zarr with multiscale levels",
        description="Build an OME-Zarr (NGFF 0.5 sharded by default, or 0.4) from an "
        "intermediate store: a single image, the bioformats2raw layout for several series, "
        "or a plate.",
    )
    p.add_argument("intermediate", type=Path, help="store written by 'bioingest convert'")
    p.add_argument("--ome-xml", type=Path, required=True, help="OME-XML written by convert")
    p.add_argument("--out", type=Path, required=True, help="final .ome.zarr folder")
    p.add_argument(
        "--source-json",
        type=Path,
        help="convert's description: a recorded failure writes a note instead of a store",
    )
    p.add_argument("--name", default="", help="dataset name (default: from --out)")
    p.add_argument("--study", type=Path, help="study metadata YAML for the store's RO-Crate")
    p.set_defaults(func=_cmd_pyramid)

    p = sub.add_parser(
        "ome-tiff",
        parents=[log_option],
        help="write a pyramidal OME-TIFF from the final OME-Zarr",
        description="Write a tiled OME-TIFF with a SubIFD pyramid, deflate-compressed, "
        "with the reader's complete OME-XML: every series of the store is one image.",
    )
    p.add_argument("store", type=Path, help="final .ome.zarr written by 'bioingest pyramid'")
    p.add_argument("--ome-xml", type=Path, required=True, help="OME-XML written by convert")
    p.add_argument(
        "--metadata",
        type=Path,
        help="metadata.json whose pixel hashes name the file's UUID (default: hash the store)",
    )
    p.add_argument("--out", type=Path, required=True, help="the .ome.tif to write")
    p.add_argument(
        "--source-json",
        type=Path,
        help="convert's description: a recorded failure writes a note in place of the image",
    )
    p.set_defaults(func=_cmd_ome_tiff)

    p = sub.add_parser(
        "report",
        parents=[log_option],
        help="one self-contained HTML report for a run",
        description="Write OUT/report.html: a sortable summary of every dataset (run "
        "status and failure reason, image-quality flags, metadata completeness, sizes, how "
        "to open the store), failures first, linking to each dataset's NAME/qc.html. "
        "Works on partial runs.",
    )
    p.add_argument("out_dir", type=Path, help="output folder of a run")
    p.add_argument(
        "--datasets", nargs="*", help="dataset names to list (none: every file was skipped)"
    )
    p.add_argument(
        "--datasets-file",
        type=Path,
        help="file with one dataset name per line (first tab-separated column)",
    )
    p.add_argument(
        "--failed",
        type=Path,
        help="TSV of failed datasets (columns dataset, step, reason); without it the "
        "first ERROR line of each dataset's logs is its failure reason",
    )
    p.add_argument("--inventory", type=Path, help="inventory.tsv: skipped files counted by reason")
    p.add_argument("--out", type=Path, help="file to write (default: OUT/report.html)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser(
        "checksum",
        parents=[log_option, threads_option],
        help="source fixity and the output manifest (SHA-256, BagIt format)",
        description="'sources FILE... --root DIR --out F' records the SHA-256 of a dataset's "
        "source files; 'manifest OUT --outputs …' re-checks the --fixity files' sources (with "
        "--sources-root) and hashes the run's outputs into OUT/manifest-sha256.txt.",
    )
    p.add_argument("action", choices=["sources", "manifest"])
    p.add_argument("paths", type=Path, nargs="+", help="source files, or the output folder")
    p.add_argument(
        "--root",
        type=Path,
        default=Path("."),
        help="folder source paths are recorded relative to (sources)",
    )
    p.add_argument("--sources-root", type=Path, help="input folder to re-check (manifest)")
    p.add_argument(
        "--outputs",
        type=Path,
        nargs="*",
        default=[],
        help="the run's deliverables (files and folders) the manifest lists, with the logs "
        "of their datasets (manifest)",
    )
    p.add_argument(
        "--fixity",
        type=Path,
        nargs="*",
        default=[],
        help="source-sha256.txt files whose sources are re-checked (manifest)",
    )
    p.add_argument("--failed", type=Path, help="failed.tsv: these datasets are left out (manifest)")
    p.add_argument("--out", type=Path, help="file to write")
    p.set_defaults(func=_cmd_checksum)

    p = sub.add_parser(
        "verify",
        parents=[log_option, threads_option],
        help="re-check an output folder against its manifest",
        description="Re-hash every output file and compare with OUT/manifest-sha256.txt (or "
        "--against another manifest). Prints one line per missing, extra or changed file and "
        "exits 1 if there is any.",
    )
    p.add_argument("out_dir", type=Path, help="output folder of a run")
    p.add_argument("--against", type=Path, help="compare with this manifest instead")
    p.add_argument(
        "--pixels",
        action="store_true",
        help="compare OME-Zarr stores by pixel content, not bytes; an OME-TIFF delivered "
        "alone by its pixel content too",
    )
    p.add_argument("--sources", type=Path, help="input folder: re-check source fixity too")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser(
        "bag",
        parents=[log_option],
        help="turn an output folder into a BagIt bag",
        description="Move the output folder's content into data/ and write the BagIt tag "
        "files (SHA-256), so archives can validate it with any BagIt tool.",
    )
    p.add_argument("out_dir", type=Path, help="output folder of a run")
    p.add_argument("--threads", type=_positive, default=2, help="hashing processes (default: 2)")
    p.set_defaults(func=_cmd_bag)

    p = sub.add_parser(
        "provenance",
        parents=[log_option],
        help="Workflow Run RO-Crate of a run, or the BioImage Archive file list",
        description="'crate OUT' writes OUT/ro-crate-metadata.json (Workflow Run Crate: "
        "workflow, versions, config, every input and output with size and checksum); "
        "'bia-list OUT --records R… --out F' writes the BioImage Archive file list.",
    )
    p.add_argument("action", choices=["crate", "bia-list"])
    p.add_argument("out_dir", type=Path, help="output folder of a run")
    p.add_argument("--sources", type=Path, nargs="*", default=[], help="every input file")
    p.add_argument(
        "--fixity",
        type=Path,
        nargs="*",
        default=[],
        help="source-sha256.txt of the datasets (crate): their sources' checksums are "
        "taken from these, the others are hashed",
    )
    p.add_argument(
        "--records", type=Path, nargs="*", default=[], help="metadata.json of every dataset"
    )
    p.add_argument("--failed", type=Path, help="failed.tsv: these datasets are left out")
    p.add_argument(
        "--sources-root",
        type=Path,
        help="folder sources are named relative to (default: input_dir, or the sample "
        "sheet's folder, from --config-json)",
    )
    p.add_argument("--config-json", default="", help="the workflow configuration as JSON")
    p.add_argument(
        "--workflow-dir",
        type=Path,
        help="folder of the Snakefile that ran, copied into the crate (crate; required)",
    )
    p.add_argument("--study", type=Path, help="study metadata YAML")
    p.add_argument("--started", default="", help="ISO time the run started")
    p.add_argument("--out", type=Path, help="file to write (bia-list)")
    p.add_argument(
        "--ome-zarr",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="list the OME-Zarr stores (bia-list; default: yes; --no-ome-zarr with ome_zarr false)",
    )
    p.add_argument(
        "--ome-tiff", action="store_true", help="list the pyramidal OME-TIFFs (bia-list)"
    )
    p.set_defaults(func=_cmd_provenance)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status.

    A failure prints one line naming the file and the problem; the traceback of an
    unexpected one goes to a file of its own (``NAME.trace.log`` next to ``--log``), never
    to the console or the log.
    """
    given = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--warm"]
    args = build_parser().parse_args(given)
    log_file: Path | None = getattr(args, "log", None)
    _setup_logging(log_file)
    try:
        status = args.func(args)
    except IngestError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        # zarr's writes do not always carry the file name: fall back to the target.
        where = (
            exc.filename or getattr(args, "zarr", None) or getattr(args, "out", None) or "output"
        )
        if exc.errno == errno.ENOSPC:
            log.error("%s: out of disk space", where)
        else:
            trace = _write_trace(log_file)
            log.error("%s: %s (traceback in %s)", where, exc.strerror or exc, trace)
        return 1
    except Exception as exc:
        # Unexpected: one line for the console and the log, the traceback in a file.
        subject = getattr(args, "source", None) or getattr(args, "intermediate", "input")
        trace = _write_trace(log_file)
        message = " ".join(str(exc).split())
        log.error(
            "%s: unexpected %s: %s (traceback in %s)",
            subject,
            type(exc).__name__,
            message,
            trace,
        )
        return 1
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
