"""OME-NGFF metadata (0.4 and 0.5) for images, bioformats2raw collections and plates.

Every group is validated with ome-zarr-models, the spec's models, as it is written. The
keys are written here, as ome-zarr-py's writers write them (``tests/test_ngff.py``
compares both): importing ome-zarr-py imports dask and scikit-image, 0.4 s of every
run's start.
"""

from __future__ import annotations

import string
import warnings
from typing import Any

import numpy as np
import pydantic
import zarr
from ome_zarr_models import v04, v05

from bioingest.errors import IngestError
from bioingest.targets import NgffVersion

__all__ = ["NgffVersion"]


def axes(*, space_unit: bool, time_unit: bool) -> list[dict[str, str]]:
    """Return the five TCZYX axes, with units only where the physical size is known."""
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


def _add(group: zarr.Group, version: NgffVersion, keys: dict[str, Any]) -> None:
    """Add NGFF keys, in order, to a group's attributes (0.5: under ``ome``)."""
    if version == "0.5":
        ome = group.attrs.get("ome", {})
        assert isinstance(ome, dict)
        group.attrs["ome"] = {**ome, **keys}
    else:
        group.attrs.update(keys)


def _top_version(version: NgffVersion) -> dict[str, str]:
    """Return the ``ome`` object's ``version`` key (0.5); 0.4 puts one in each object."""
    return {"version": version} if version == "0.5" else {}


def write_multiscale(
    group: zarr.Group,
    *,
    name: str,
    level_paths: list[str],
    level_factors: list[tuple[int, int]],
    physical_size_um: tuple[float | None, float | None, float | None],
    time_increment_s: float | None,
    method: str,
    omero: dict[str, Any],
    version: NgffVersion,
) -> None:
    """Write an image's ``multiscales`` and ``omero`` metadata, then validate the image.

    Parameters
    ----------
    group
        The image group; its level arrays must already exist.
    name
        Image name.
    level_paths, level_factors
        Array path of each level and its downsampling factor in Y and X.
    physical_size_um
        Pixel size in X, Y and Z (µm); unknown sizes get scale 1 and no unit.
    time_increment_s
        Time step (s), or ``None`` for scale 1 and no unit.
    method
        Downsampling method, recorded as the multiscale ``type``.
    omero
        The ``omero`` rendering block (see :func:`omero`).
    version
        NGFF version to write.

    Raises
    ------
    IngestError
        The written metadata does not validate.
    """
    px, py, pz = physical_size_um
    known = px is not None and py is not None
    datasets: list[dict[str, Any]] = []
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
    multiscale: dict[str, Any] = {
        "datasets": datasets,
        "name": name,
        "metadata": {"method": f"bioingest.pyramid.{method}", "downscale": 2},
        "axes": axes(space_unit=known, time_unit=time_increment_s is not None),
    }
    if version == "0.4":
        multiscale["version"] = version
    multiscale["type"] = method
    _add(group, version, {"omero": omero, **_top_version(version), "multiscales": [multiscale]})
    _validated(group, version, "image")


def write_well(group: zarr.Group, *, fields: list[str], version: NgffVersion) -> None:
    """Write a well's metadata: its field paths (validated with the plate)."""
    well: dict[str, Any] = {"images": [{"path": f} for f in fields]}
    if version == "0.4":
        well["version"] = version
    _add(group, version, {**_top_version(version), "well": well})


def write_plate(
    group: zarr.Group,
    *,
    name: str,
    rows: list[str],
    columns: list[str],
    wells: list[tuple[int, int]],
    field_count: int,
    version: NgffVersion,
) -> None:
    """Write a plate's metadata, then validate the whole plate (wells and fields included).

    ``wells`` holds the (row index, column index) of every well, in writing order.
    """
    plate: dict[str, Any] = {
        "columns": [{"name": c} for c in columns],
        "rows": [{"name": r} for r in rows],
        "wells": [
            {"path": f"{rows[r]}/{columns[c]}", "rowIndex": r, "columnIndex": c} for r, c in wells
        ],
        "name": name,
        "field_count": field_count,
        # Also in 0.5, where ome-zarr-models still asks for it.
        "version": version,
    }
    _add(group, version, {**_top_version(version), "plate": plate})
    _validated(group, version, "plate")


def write_collection(
    root: zarr.Group, ome: zarr.Group, *, series: list[str], version: NgffVersion
) -> None:
    """Mark ``root`` as a bioformats2raw collection and list its series, then validate it.

    The collection is marked by ``bioformats2raw.layout`` 3; the series are listed in the
    ``OME`` group.
    """
    _add(root, version, {**_top_version(version), "bioformats2raw.layout": 3})
    describe_series(ome, series=series, version=version)
    _validated(root, version, "bioformats2raw")


def describe_series(ome: zarr.Group, *, series: list[str], version: NgffVersion) -> None:
    """List the image paths of every series in the ``OME`` group."""
    _add(ome, version, {**_top_version(version), "series": series})


def _validated(group: zarr.Group, version: NgffVersion, kind: str) -> None:
    """Check a group with the ome-zarr-models model of its kind; raise on any violation."""
    models = v04 if version == "0.4" else v05
    model = {
        "image": models.Image,
        "plate": models.HCS,
        "bioformats2raw": models.BioFormats2Raw,
    }[kind]
    with warnings.catch_warnings():
        # ome-zarr-models asks 0.5 plates for a version it also reads from the "ome" key.
        warnings.filterwarnings("ignore", "'version' field not specified", UserWarning)
        try:
            model.from_zarr(group)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            more = exc.error_count() - 1
            root = getattr(group.store, "root", group.store)
            raise IngestError(
                f"{root}/{group.path}".rstrip("/"),
                f"NGFF {version} {kind} metadata does not validate: "
                + (f"{where}: " if where else "")
                + first["msg"]
                + (f" (and {more} more problems)" if more else ""),
            ) from None


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
    """Build the ``omero`` rendering block: labels, colours and windows from the data range."""
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
