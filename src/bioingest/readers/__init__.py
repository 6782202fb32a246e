"""Open a source with the right reader: tifffile where it is exact, Bio-Formats otherwise."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from bioingest.errors import IngestError
from bioingest.readers.base import SeriesInfo, SourceReader

ReaderChoice = Literal["auto", "bioformats", "tifffile"]

__all__ = ["ReaderChoice", "SeriesInfo", "SourceReader", "check_readable", "open_source"]


def check_readable(path: Path) -> None:
    """Fail early, with a one-line reason, for missing, empty or unreadable files."""
    denied = IngestError(path, "permission denied (file is not readable)")
    try:
        info = path.stat()
    except FileNotFoundError:
        raise IngestError(path, "file not found") from None
    except PermissionError:
        raise denied from None
    if path.is_dir():
        raise IngestError(path, "is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise denied
    # Bio-Formats .fake files are empty by design: the name describes the image.
    if info.st_size == 0 and not path.name.lower().endswith(".fake"):
        raise IngestError(path, "empty file (0 bytes)")


def open_source(
    path: Path,
    *,
    reader: ReaderChoice = "auto",
    jar: str | None = None,
    maven: str | None = None,
    heap_mb: int = 1024,
    jvm_server: bool = False,
    single_file: bool = True,
    threads: int = 1,
) -> SourceReader:
    """Open ``path`` once with the chosen reader.

    Parameters
    ----------
    path
        The dataset's main file.
    reader
        ``auto`` uses tifffile for TIFF files it reads exactly (and that form an
        acquisition of their own, ``single_file``), Bio-Formats otherwise.
    jar, maven, heap_mb
        Bio-Formats location and Java heap; see :func:`bioingest.java.start_jvm`.
    jvm_server
        Read Bio-Formats files through this machine's Bio-Formats server (one JVM for
        many jobs, :mod:`bioingest.readers.remote`) instead of a JVM in this process.
    single_file
        The inventory found ``path`` to be an acquisition of one file. Bio-Formats picks
        a TIFF's reader from its neighbours (a plate's ``.HTD`` takes it over), so the
        tifffile fast path reads only such files.
    threads
        Threads that decode a tifffile read (Bio-Formats reads on one thread).
    """
    from bioingest.integrity import check_structure
    from bioingest.readers import tiff

    check_readable(path)
    check_structure(path)
    if reader == "tifffile" or (reader == "auto" and single_file and tiff.accepts(path)):
        return tiff.TiffReader(path, threads=threads)
    if jvm_server:
        from bioingest.readers.remote import RemoteReader

        return RemoteReader(path, jar=jar, maven=maven, heap_mb=heap_mb)
    from bioingest.readers.bioformats import BioFormatsReader

    return BioFormatsReader(path, jar=jar, maven=maven, heap_mb=heap_mb)
