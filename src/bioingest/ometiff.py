"""Pyramidal OME-TIFF from a final OME-Zarr: tiled, SubIFD pyramid, the complete OME-XML.

QuPath and OMERO read this natively. Every series of the store becomes one OME image: its
level-0 planes are the main IFDs (Z fastest, then C, then T: ``XYZCT``) and each further
level is one SubIFD per plane. Tiles are deflate-compressed (lossless, read by every TIFF
reader). The OME-XML is the reader's own, with the pixel layout rewritten to match, and
its UUID derived from the content so reruns give the same bytes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET
from xml.etree.ElementTree import Element

import numpy as np
import tifffile
import zarr

from bioingest import omexml
from bioingest.checksum import store_pixel_hashes
from bioingest.errors import IngestError
from bioingest.records import is_failure, read_metadata, recorded_pixel_hash
from bioingest.store import image_paths

log = logging.getLogger("bioingest")

#: Tile edge in Y and X (a multiple of 16, as TIFF requires).
TILE = 512
_XSI = "http://www.w3.org/2001/XMLSchema-instance"


def _ns(root: Element) -> str:
    """Return the OME namespace of a document, ``{uri}`` (OME-XML schemas differ by year)."""
    return root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""


def layout_xml(xml: str, *, planes: list[int], content_hash: str) -> str:
    """Return the OME-XML rewritten for this file's pixel layout.

    Parameters
    ----------
    xml
        The reader's complete OME-XML.
    planes
        Number of planes (IFDs) of each image, in series order.
    content_hash
        Hex digest of the content; the document's ``UUID`` is derived from it.

    Returns
    -------
    str
        The OME-XML with ``DimensionOrder`` ``XYZCT``, one ``TiffData`` per image
        pointing at its first IFD, and colour channels split into one sample each.
    """
    root = omexml.parse(xml)
    ns = _ns(root)
    images = omexml.children(root, "Image")
    if len(images) != len(planes):
        raise ValueError(f"OME-XML has {len(images)} images, the store {len(planes)} series")
    ET.register_namespace("", ns.strip("{}"))
    ET.register_namespace("xsi", _XSI)
    first_ifd = 0
    for i, (image, count) in enumerate(zip(images, planes, strict=True)):
        pixels = omexml.children(image, "Pixels")[0]
        pixels.set("DimensionOrder", "XYZCT")
        pixels.set("BigEndian", "false")
        pixels.set("Interleaved", "false")
        for child in list(pixels):
            if omexml.local_name(child.tag) in ("BinData", "TiffData", "MetadataOnly"):
                pixels.remove(child)
        _split_samples(pixels, i)
        channels = omexml.children(pixels, "Channel")
        tiff_data = Element(
            f"{ns}TiffData",
            {"IFD": str(first_ifd), "PlaneCount": str(count)},
        )
        at = list(pixels).index(channels[-1]) + 1 if channels else 0
        pixels.insert(at, tiff_data)
        first_ifd += count
    # Name-based (version 5): the same content always gets the same UUID.
    root.set("UUID", f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'bioingest:' + content_hash)}")
    for key in [k for k in root.attrib if k.endswith("schemaLocation")]:
        del root.attrib[key]
    text: str = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + text


def _split_samples(pixels: Element, image: int) -> None:
    """Turn a colour channel (SamplesPerPixel 3) into one channel per sample, as written."""
    channels = omexml.children(pixels, "Channel")
    if all(int(c.get("SamplesPerPixel", "1")) == 1 for c in channels):
        return
    at = list(pixels).index(channels[0])
    for c in channels:
        pixels.remove(c)
    split = []
    for c in channels:
        for _ in range(int(c.get("SamplesPerPixel", "1"))):
            one = copy.deepcopy(c)
            one.set("SamplesPerPixel", "1")
            split.append(one)
    for k, c in enumerate(split):
        c.set("ID", f"Channel:{image}:{k}")
        pixels.insert(at + k, c)


def _tiles(level: zarr.Array[Any], tile: tuple[int, int]) -> Iterator[np.ndarray]:
    """Every tile of every plane, plane by plane (T, then C, then Z), padded at the edges."""
    size_t, size_c, size_z, size_y, size_x = level.shape
    ty, tx = tile
    for t in range(size_t):
        for c in range(size_c):
            for z in range(size_z):
                for y in range(0, size_y, ty):
                    for x in range(0, size_x, tx):
                        block = np.asarray(level[t, c, z, y : y + ty, x : x + tx])
                        if block.shape != tile:
                            padded = np.zeros(tile, dtype=block.dtype)
                            padded[: block.shape[0], : block.shape[1]] = block
                            block = padded
                        yield block


def _tile_shape(size_y: int, size_x: int) -> tuple[int, int]:
    return (min(TILE, 16 * math.ceil(size_y / 16)), min(TILE, 16 * math.ceil(size_x / 16)))


def _levels(group: zarr.Group) -> list[zarr.Array[Any]]:
    attrs: dict[str, Any] = dict(group.attrs)
    multiscale = attrs.get("ome", attrs)["multiscales"][0]
    levels = []
    for dataset in multiscale["datasets"]:
        array = group[dataset["path"]]
        assert isinstance(array, zarr.Array)
        levels.append(array)
    return levels


def recorded_hashes(metadata_json: Path) -> list[str] | None:
    """Level-0 pixel hash of every series as ``metadata.json`` recorded them.

    ``None`` when a series has none recorded: the hashes are then taken from the store.
    """
    record = read_metadata(metadata_json)
    if is_failure(record):
        raise IngestError(metadata_json, "the dataset was not converted")
    hashes = [recorded_pixel_hash(s) for s in record["series"]]
    known = [h for h in hashes if h is not None]
    return known if len(known) == len(hashes) else None


def write(
    store: Path,
    ome_xml_path: Path,
    out: Path,
    *,
    pixel_hashes: list[str] | None = None,
) -> None:
    """Write the pyramidal OME-TIFF of a final OME-Zarr.

    Parameters
    ----------
    store
        The OME-Zarr written by :func:`bioingest.pyramid.build`.
    ome_xml_path
        The reader's OME-XML of the same dataset.
    out
        The ``.ome.tif`` to write (atomically).
    pixel_hashes
        Level-0 pixel hashes of every series (from ``metadata.json``); computed from the
        store when not given.
    """
    root = zarr.open_group(store, mode="r")
    groups = []
    for path in image_paths(root):
        group = root[path] if path else root
        assert isinstance(group, zarr.Group)
        groups.append(group)
    pyramids = [_levels(g) for g in groups]
    hashes = pixel_hashes if pixel_hashes is not None else store_pixel_hashes(store)
    xml_in = ome_xml_path.read_text(encoding="utf-8")
    content = hashlib.sha256(json.dumps([xml_in, hashes]).encode()).hexdigest()
    planes = [math.prod(levels[0].shape[:3]) for levels in pyramids]
    try:
        description = layout_xml(xml_in, planes=planes, content_hash=content)
    except ValueError as exc:
        raise IngestError(ome_xml_path, str(exc)) from None
    log.info("ome-tiff %s: %d series, %d planes", out.name, len(pyramids), sum(planes))
    tmp = out.with_name(f".{out.name}.partial")
    with tifffile.TiffWriter(tmp, bigtiff=True, ome=False) as tif:
        for i, levels in enumerate(pyramids):
            for k, level in enumerate(levels):
                tile = _tile_shape(*level.shape[3:])
                tif.write(
                    _tiles(level, tile),
                    shape=level.shape,
                    dtype=level.dtype,
                    tile=tile,
                    photometric="minisblack",
                    compression="zlib",
                    metadata=None,
                    # UTF-8 as Bio-Formats and tifffile write it (units such as "µm");
                    # Bio-Formats does not resolve character references there.
                    description=description.encode() if i == 0 and k == 0 else None,
                    subifds=len(levels) - 1 if k == 0 else None,
                    subfiletype=1 if k > 0 else 0,
                )
    os.replace(tmp, out)


class _Level0:
    """Level 0 of one image of an OME-TIFF as a (T, C, Z, Y, X) array, read tile by tile.

    Plane ``(t, c, z)`` is main IFD ``first + (t * C + c) * Z + z``: the order
    :func:`write` gives them (``XYZCT``). Only what :func:`~bioingest.pixelhash.pixel_hash`
    needs: ``shape``, ``dtype`` and ``[t, c, z, rows, columns]``.
    """

    def __init__(self, tif: tifffile.TiffFile, first: int, shape: tuple[int, ...]) -> None:
        self._tif = tif
        self._first = first
        self.shape = shape
        page = tif.pages[first]
        assert isinstance(page, tifffile.TiffPage)
        self.dtype = page.dtype
        self._plane: tuple[int, zarr.Array[Any]] | None = None

    def __getitem__(self, key: tuple[int, int, int, slice, slice]) -> np.ndarray:
        t, c, z, rows, columns = key
        _, size_c, size_z = self.shape[:3]
        index = self._first + (t * size_c + c) * size_z + z
        if self._plane is None or self._plane[0] != index:
            page = self._tif.pages[index]
            assert isinstance(page, tifffile.TiffPage)
            if page.shape != tuple(self.shape[3:]):
                raise ValueError(f"IFD {index} is {page.shape}, not {self.shape[3:]}")
            self._plane = (index, zarr.open_array(page.aszarr(), mode="r"))
        return np.asarray(self._plane[1][rows, columns])


def tiff_pixel_hashes(path: Path) -> list[str]:
    """Level-0 pixel hash of every image of an OME-TIFF :func:`write` wrote, in series order.

    Each image is read as (T, C, Z, Y, X) from the planes its ``TiffData`` names, so the
    hash is :func:`~bioingest.pixelhash.pixel_hash` of the same pixels as the store's
    level 0 (:func:`~bioingest.checksum.store_pixel_hashes`) and ``metadata.json``.

    Raises
    ------
    IngestError
        The file has no OME-XML, or its planes do not match it.
    """
    from bioingest.pixelhash import pixel_hash

    with tifffile.TiffFile(path) as tif:
        description = tif.pages.first.description
        if not description.lstrip().startswith("<"):
            raise IngestError(path, "no OME-XML in the first IFD")
        hashes = []
        for image in omexml.children(omexml.parse(description), "Image"):
            pixels = omexml.children(image, "Pixels")[0]
            shape = tuple(int(pixels.get(f"Size{a}", "1")) for a in "TCZYX")
            tiff_data = omexml.children(pixels, "TiffData")
            if len(tiff_data) != 1 or tiff_data[0].get("IFD") is None:
                raise IngestError(path, f"{image.get('ID')}: not one TiffData with an IFD")
            first = int(tiff_data[0].get("IFD", "0"))
            if first + math.prod(shape[:3]) > len(tif.pages):
                raise IngestError(path, f"{image.get('ID')}: planes beyond the last IFD")
            try:
                hashes.append(pixel_hash(_Level0(tif, first, shape)))
            except ValueError as exc:
                raise IngestError(path, str(exc)) from None
    return hashes
