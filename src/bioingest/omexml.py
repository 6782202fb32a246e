"""Read what the pipeline needs from OME-XML, safely (no external entities, no entity bombs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET

from bioingest import layout
from bioingest.errors import IngestError

_LENGTH_TO_UM = {
    "Ym": 1e30,
    "Zm": 1e27,
    "Em": 1e24,
    "Pm": 1e21,
    "Tm": 1e18,
    "Gm": 1e15,
    "Mm": 1e12,
    "km": 1e9,
    "hm": 1e8,
    "dam": 1e7,
    "m": 1e6,
    "dm": 1e5,
    "cm": 1e4,
    "mm": 1e3,
    "µm": 1.0,
    "μm": 1.0,
    "um": 1.0,
    "nm": 1e-3,
    "pm": 1e-6,
    "fm": 1e-9,
    "am": 1e-12,
    "zm": 1e-15,
    "ym": 1e-18,
    "Å": 1e-4,
    "thou": 25.4,
    "li": 2116.67,
    "in": 25400.0,
    "ft": 304800.0,
    "yd": 914400.0,
    "mi": 1.609344e9,
    "ua": 1.495978707e17,
    "ly": 9.4607304725808e21,
    "pc": 3.0856776e22,
    "pt": 352.777778,
}
_TIME_TO_S = {
    "s": 1.0,
    "ms": 1e-3,
    "µs": 1e-6,
    "μs": 1e-6,
    "ns": 1e-9,
    "ps": 1e-12,
    "fs": 1e-15,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "cs": 1e-2,
    "ds": 1e-1,
}


@dataclass(frozen=True)
class Well:
    """One plate well: row/column indices and the series shown as its fields."""

    row: int
    column: int
    series: tuple[int, ...]


@dataclass(frozen=True)
class Plate:
    """A screening plate as OME-XML describes it."""

    name: str
    rows: int
    columns: int
    row_naming: str
    column_naming: str
    wells: tuple[Well, ...] = field(default_factory=tuple)


def local_name(tag: str) -> str:
    """Element tag without its namespace."""
    return tag.rsplit("}", 1)[-1]


def children(elem: Element | None, name: str) -> list[Element]:
    """Direct children called ``name`` (any namespace); none for a missing element."""
    return [] if elem is None else [c for c in elem if local_name(c.tag) == name]


def parse(xml: str) -> Element:
    """Parse OME-XML text with external entities and DTDs forbidden."""
    root: Element = SafeET.fromstring(xml.encode("utf-8"), forbid_dtd=True)
    return root


def _quantity(value: str | None, unit: str, table: dict[str, float]) -> float | None:
    """``value`` in ``unit`` times its factor; ``None`` when absent, not positive or unknown."""
    if value is None:
        return None
    factor = table.get(unit)
    number = float(value)
    if factor is None or not number > 0:
        return None
    return number * factor


def length_um(value: str | None, unit: str | None) -> float | None:
    """Convert an OME length to micrometres; ``None`` when absent, not positive or not physical."""
    return _quantity(value, unit or "µm", _LENGTH_TO_UM)


def time_s(value: str | None, unit: str | None) -> float | None:
    """Convert an OME time to seconds; ``None`` when absent or not positive."""
    return _quantity(value, unit or "s", _TIME_TO_S)


def plates(xml: str) -> list[Plate]:
    """Return the plates with their wells mapped to series indices."""
    root = parse(xml)
    series_of = {img.attrib.get("ID"): i for i, img in enumerate(children(root, "Image"))}
    out = []
    for plate in children(root, "Plate"):
        wells = []
        max_row = max_col = -1
        for well in children(plate, "Well"):
            row = int(well.attrib.get("Row", "0"))
            col = int(well.attrib.get("Column", "0"))
            fields = []
            samples = sorted(
                children(well, "WellSample"), key=lambda s: int(s.attrib.get("Index", "0"))
            )
            for sample in samples:
                for ref in children(sample, "ImageRef"):
                    if ref.attrib.get("ID") in series_of:
                        fields.append(series_of[ref.attrib["ID"]])
            max_row, max_col = max(max_row, row), max(max_col, col)
            if fields:
                wells.append(Well(row=row, column=col, series=tuple(fields)))
        a = plate.attrib
        out.append(
            Plate(
                name=a.get("Name", a.get("ID", "plate")),
                rows=max(int(a.get("Rows", "0")), max_row + 1),
                columns=max(int(a.get("Columns", "0")), max_col + 1),
                row_naming=a.get("RowNamingConvention", "letter"),
                column_naming=a.get("ColumnNamingConvention", "number"),
                wells=tuple(sorted(wells, key=lambda w: (w.row, w.column))),
            )
        )
    return out


def ome_xml_of(path: Path) -> tuple[str, dict[str, object]]:
    """OME-XML and source description for an OME-XML file, an OME-Zarr or a source file.

    Parameters
    ----------
    path
        A ``.ome.xml`` (or ``.xml``) file, whose ``NAME.source.json`` beside it is read
        when there is one; an OME-Zarr folder (``OME/METADATA.ome.xml`` in it, else the
        dataset's ``NAME.ome.xml`` beside it); or any image file, opened with a reader.

    Returns
    -------
    tuple
        The OME-XML text, and what is known of the source (``source``, ``format``).
    """
    import json

    if path.is_dir():
        for candidate in (
            path / "OME" / "METADATA.ome.xml",
            path.with_name(layout.name_of_store(path) + layout.OME_XML_SUFFIX),
        ):
            if candidate.is_file():
                return candidate.read_text(encoding="utf-8"), {"source": path.name}
        raise IngestError(path, "no OME-XML found (neither OME/METADATA.ome.xml nor a sibling)")
    if path.name.lower().endswith((layout.OME_XML_SUFFIX, ".xml")):
        stem = path.name.removesuffix(layout.OME_XML_SUFFIX)
        sidecar = path.with_name(stem + layout.SOURCE_JSON_SUFFIX)
        info = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}
        return path.read_text(encoding="utf-8"), info
    from bioingest.readers import open_source

    with open_source(path) as src:
        return src.ome_xml, {"source": path.name, "format": src.format_name}
