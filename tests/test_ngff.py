"""NGFF metadata: bioingest writes, key for key and in order, what ome-zarr-py's writers write.

bioingest writes the keys itself (importing ome-zarr-py costs every run 0.4 s); these
tests run ome-zarr-py's writers on twin groups and compare the attributes as JSON text.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np
import pytest
import zarr
from ome_zarr.format import FormatV04, FormatV05
from ome_zarr.writer import write_multiscales_metadata, write_plate_metadata, write_well_metadata

from bioingest import ngff

VERSIONS: list[tuple[ngff.NgffVersion, Literal[2, 3]]] = [("0.4", 2), ("0.5", 3)]


def _group(zarr_format: Literal[2, 3]) -> zarr.Group:
    return zarr.open_group(zarr.storage.MemoryStore(), mode="w", zarr_format=zarr_format)


def _levels(group: zarr.Group, sizes: list[int], zarr_format: Literal[2, 3]) -> None:
    names = {"dimension_names": ("t", "c", "z", "y", "x")} if zarr_format == 3 else {}
    for i, size in enumerate(sizes):
        group.create_array(
            str(i), shape=(2, 2, 3, size, size), dtype="uint16", chunks=(1, 1, 1, 16, 16), **names
        )


def _text(group: zarr.Group) -> str:
    return json.dumps(dict(group.attrs))


def _format(version: ngff.NgffVersion) -> FormatV04 | FormatV05:
    return FormatV04() if version == "0.4" else FormatV05()


@pytest.mark.parametrize(("version", "zarr_format"), VERSIONS)
@pytest.mark.parametrize("known", [True, False], ids=["units", "no-units"])
def test_image_metadata_equals_ome_zarr_py(
    version: ngff.NgffVersion, zarr_format: Literal[2, 3], known: bool
) -> None:
    omero = ngff.omero(
        channels=[("DAPI", "0000FF"), ("GFP", "00FF00")],
        ranges=[(1.0, 200.0), (0.0, 9.0)],
        dtype=np.dtype("uint16"),
        default_z=1,
    )
    ours, theirs = _group(zarr_format), _group(zarr_format)
    for group in (ours, theirs):
        _levels(group, [64, 32], zarr_format)
    size = (0.5, 0.5, 2.0) if known else (None, None, None)
    step = 3.0 if known else None
    ngff.write_multiscale(
        ours,
        name="my image",
        level_paths=["0", "1"],
        level_factors=[(1, 1), (2, 2)],
        physical_size_um=size,
        time_increment_s=step,
        method="mean",
        omero=omero,
        version=version,
    )
    factor = [1.0, 1.0, 2.0, 0.5, 0.5] if known else [1.0] * 5
    write_multiscales_metadata(
        theirs,
        [
            {
                "path": str(level),
                "coordinateTransformations": [
                    {
                        "type": "scale",
                        "scale": [3.0 if known else 1.0]
                        + factor[1:3]
                        + [f * 2**level for f in factor[3:]],
                    }
                ],
            }
            for level in (0, 1)
        ],
        fmt=_format(version),
        axes=ngff.axes(space_unit=known, time_unit=known),
        name="my image",
        metadata={"method": "bioingest.pyramid.mean", "downscale": 2, "omero": omero},
    )
    # ome-zarr-py has no argument for the multiscale's downsampling ``type``.
    attrs: dict[str, Any] = dict(theirs.attrs)
    ome = attrs["ome"] if version == "0.5" else attrs
    ome["multiscales"][0]["type"] = "mean"
    theirs.attrs.update(attrs)
    assert _text(ours) == _text(theirs)
    assert '"type": "mean"' in _text(ours)


@pytest.mark.parametrize(("version", "zarr_format"), VERSIONS)
def test_plate_and_well_metadata_equal_ome_zarr_py(
    version: ngff.NgffVersion, zarr_format: Literal[2, 3]
) -> None:
    rows, columns, wells = ["A", "B"], ["1", "2", "3"], [(0, 0), (1, 2)]
    ours, theirs = _group(zarr_format), _group(zarr_format)
    for r, c in wells:
        path = f"{rows[r]}/{columns[c]}"
        for group in (ours, theirs):
            # Each field a valid image: ome-zarr-models validates the plate down to them.
            for field in ("0", "1"):
                image = group.create_group(f"{path}/{field}")
                _levels(image, [16], zarr_format)
                ngff.write_multiscale(
                    image,
                    name=f"field {field}",
                    level_paths=["0"],
                    level_factors=[(1, 1)],
                    physical_size_um=(None, None, None),
                    time_increment_s=None,
                    method="nearest",
                    omero=ngff.omero(
                        channels=[("a", "FFFFFF"), ("b", "FF0000")],
                        ranges=[(0.0, 1.0), (0.0, 2.0)],
                        dtype=np.dtype("uint16"),
                        default_z=0,
                    ),
                    version=version,
                )
        ngff.write_well(zarr.open_group(ours.store, path=path), fields=["0", "1"], version=version)
        write_well_metadata(
            zarr.open_group(theirs.store, path=path),
            [{"path": "0"}, {"path": "1"}],
            fmt=_format(version),
        )
        assert _text(zarr.open_group(ours.store, path=path)) == _text(
            zarr.open_group(theirs.store, path=path)
        )
    ngff.write_plate(
        ours,
        name="plate x",
        rows=rows,
        columns=columns,
        wells=wells,
        field_count=2,
        version=version,
    )
    write_plate_metadata(
        theirs,
        rows,
        columns,
        [{"path": f"{rows[r]}/{columns[c]}", "rowIndex": r, "columnIndex": c} for r, c in wells],
        fmt=_format(version),
        field_count=2,
        name="plate x",
    )
    assert _text(ours) == _text(theirs)
    assert '"field_count": 2' in _text(ours)
