"""Cheap structural checks that catch truncated files some readers would read silently.

Bio-Formats reads a truncated Zeiss CZI without complaint (the missing sub-blocks come
back as zeros), so the segments the file's own directory points at are checked to lie
inside the file. ND2 files end with a chunk-map signature that a truncated copy lacks.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

from bioingest.errors import IngestError

_CZI_MAGIC = b"ZISRAWFILE"
_CZI_DIRECTORY = b"ZISRAWDIRECTORY"
_SEGMENT_HEADER = 32
_ND2_MAGIC = b"\xda\xce\xbe\x0a"
_ND2_SIGNATURE = b"ND2 CHUNK MAP SIGNATURE 0000001!"


def _segment_end(fh: BinaryIO, position: int) -> int:
    """End offset of the CZI segment starting at ``position`` (header + used size)."""
    fh.seek(position)
    header = fh.read(_SEGMENT_HEADER)
    if len(header) < _SEGMENT_HEADER:
        return position + _SEGMENT_HEADER
    used = int(struct.unpack_from("<q", header, 24)[0])
    return position + _SEGMENT_HEADER + max(used, 0)


def check_czi(path: Path) -> None:
    """Raise when a CZI's directory or any sub-block lies beyond the end of the file."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        header = fh.read(112)
        if len(header) < 112 or not header.startswith(_CZI_MAGIC):
            raise IngestError(path, "corrupt CZI (no ZISRAWFILE header)")
        (directory,) = struct.unpack_from("<q", header, 84)
        (metadata,) = struct.unpack_from("<q", header, 92)
        (attachments,) = struct.unpack_from("<q", header, 104)
        ends = [_segment_end(fh, p) for p in (directory, metadata, attachments) if p > 0]
        if directory > 0 and directory + _SEGMENT_HEADER <= size:
            fh.seek(directory)
            segment = fh.read(_SEGMENT_HEADER + 128)
            if segment.startswith(_CZI_DIRECTORY):
                (count,) = struct.unpack_from("<i", segment, _SEGMENT_HEADER)
                last = 0
                for _ in range(max(count, 0)):
                    entry = fh.read(32)
                    if len(entry) < 32:
                        raise IngestError(path, "truncated file (CZI sub-block directory cut)")
                    (position,) = struct.unpack_from("<q", entry, 6)
                    (dims,) = struct.unpack_from("<i", entry, 28)
                    fh.seek(dims * 20, 1)
                    last = max(last, position)
                if last:
                    ends.append(_segment_end(fh, last))
    if ends and max(ends) > size:
        raise IngestError(
            path, f"truncated file ({size} bytes; its directory refers to byte {max(ends)})"
        )


def check_nd2(path: Path) -> None:
    """Raise when a (v3) ND2 file lacks the chunk map that ends every complete file."""
    with open(path, "rb") as fh:
        if fh.read(4) != _ND2_MAGIC:
            return  # not an ND2 v3 file: let the reader judge it
        fh.seek(-40, 2)
        if fh.read(32) != _ND2_SIGNATURE:
            raise IngestError(path, "truncated file (ND2 chunk map missing at the end)")


def check_structure(path: Path) -> None:
    """Run the structural check that applies to ``path``'s format, if any."""
    name = path.name.lower()
    if name.endswith(".czi"):
        check_czi(path)
    elif name.endswith(".nd2"):
        check_nd2(path)
