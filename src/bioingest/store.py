"""Where the images of a final OME-Zarr store are: one image, a collection or a plate."""

from __future__ import annotations

from typing import Any

import zarr


def image_paths(root: zarr.Group) -> list[str]:
    """Group path of every multiscale image of an OME-Zarr, in series order."""
    attrs: dict[str, Any] = dict(root.attrs)
    ome: dict[str, Any] = attrs.get("ome", attrs)
    if "multiscales" in ome:
        return [""]
    series_attrs: dict[str, Any] = dict(root["OME"].attrs)
    return [str(s) for s in series_attrs.get("ome", series_attrs)["series"]]
