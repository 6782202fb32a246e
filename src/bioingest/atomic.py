"""Write outputs so that a killed job never leaves something that looks complete."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a scratch folder that replaces ``path`` only when the block succeeds.

    The scratch folder is a hidden sibling, so the rename stays on one file system;
    leftovers of an earlier killed attempt are removed first.
    """
    tmp = _partial(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def remove_dir(path: Path) -> None:
    """Remove a folder so that a kill never leaves part of it under its own name.

    It is renamed to its hidden scratch name first, which :func:`atomic_dir` clears.
    """
    tmp = _partial(path)
    shutil.rmtree(tmp, ignore_errors=True)
    os.replace(path, tmp)
    shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically (temporary sibling, fsync, rename)."""
    tmp = _partial(path)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def link_or_copy(src: str, dst: str) -> None:
    """Hard-link ``src`` to ``dst``, or copy it across file systems.

    Only for files nothing writes to again: a link shares the bytes without touching them.
    """
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
