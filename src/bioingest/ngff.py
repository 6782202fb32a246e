"""OME-NGFF metadata (0.4 and 0.5) for images, bioformats2raw collections and plates."""

from __future__ import annotations

import string
from typing import Any, Literal

import numpy as np

NgffVersion = Literal["0.4", "0.5"]


def axes(*, space_unit: bool, time_unit: bool) -> list[dict[str, str]]:
    """The five TCZYX axes, with units only where the physical size is known."""
    t: dict[str, str] = {"name": "t", "type": "time"}
    if time_unit:
        t["unit"] = "second"
    out = [t, {"name": "c", "type": "channel"}]
    for name in "zyx":
        a = {"name": name, "type": "space"}
        if space_unit:
            a["unit"] = "micrometer"
        out.append(a)
    return out


def multiscale(
    *,
    name: str,
    level_paths: list[str],
    level_factors: list[tuple[int, int]],
    physical_size_um: tuple[float | None, float | None, float | None],
    time_increment_s: float | None,
    method: str,
    version: NgffVersion,
) -> dict[str, Any]:
    """One ``multiscales`` entry; unknown physical sizes get scale 1 and no unit."""
    px, py, pz = physical_size_um
    known = px is not None and py is not None
    datasets = []
    for path, (fy, fx) in zip(level_paths, level_factors, strict=True):
        scale = [
            time_increment_s or 1.0,
            1.0,
            (pz if known and pz is not None else 1.0),
            (py if known and py is not None else 1.0) * fy,
            (px if known and px is not None else 1.0) * fx,
        ]
        datasets.append(
            {"path": path, "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    entry: dict[str, Any] = {
        "name": name,
        "axes": axes(space_unit=known, time_unit=time_increment_s is not None),
        "datasets": datasets,
        "type": method,
        "metadata": {"method": f"bioingest.pyramid.{method}", "downscale": 2},
    }
    if version == "0.4":
        entry = {"version": "0.4", **entry}
    return entry


def wrap(version: NgffVersion, attrs: dict[str, Any]) -> dict[str, Any]:
    """Place NGFF keys where each version expects them (0.5: under ``ome``)."""
    if version == "0.5":
        return {"ome": {"version": "0.5", **attrs}}
    return attrs


def row_name(index: int, convention: str) -> str:
    """Plate row label: letters (A..Z, AA..) by default, or 1-based numbers."""
    if convention == "number":
        return str(index + 1)
    letters = string.ascii_uppercase
    name = ""
    n = index + 1
    while n:
        n, rem = divmod(n - 1, 26)
        name = letters[rem] + name
    return name


def column_name(index: int, convention: str) -> str:
    """Plate column label: 1-based numbers by default, or letters."""
    if convention == "letter":
        return row_name(index, "letter")
    return str(index + 1)


def omero(
    *,
    channels: list[tuple[str, str]],
    ranges: list[tuple[float, float]],
    dtype: np.dtype[Any],
    default_z: int,
) -> dict[str, Any]:
    """The ``omero`` rendering block: labels, colours and windows from the data range."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        full = (float(info.min), float(info.max))
    else:
        full = None
    out = []
    for (label, colour), (start, end) in zip(channels, ranges, strict=True):
        lo, hi = full if full is not None else (start, end)
        out.append(
            {
                "label": label,
                "color": colour,
                "active": True,
                "coefficient": 1.0,
                "family": "linear",
                "inverted": False,
                "window": {"min": lo, "max": hi, "start": start, "end": end},
            }
        )
    return {
        "channels": out,
        "rdefs": {"defaultT": 0, "defaultZ": default_z, "model": "color"},
    }
