"""One setting per target viewer: the store layout each family of tools reads.

A target picks the NGFF version, the chunk and shard edges, the compression level and
whether a pyramidal OME-TIFF is written next to the OME-Zarr. Explicit settings
(``ngff_version``, ``chunk_size``, ``shard_chunks``, ``compression_level``, ``ome_tiff``,
``ome_zarr``) override the target's; ``None`` means "not given", so an explicit choice is
told apart from the target's default. Every target delivers the OME-Zarr; with
``ome_zarr`` false the OME-TIFF is delivered alone (the store is then an intermediate).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

NgffVersion = Literal["0.4", "0.5"]
Target = Literal["archive", "web", "napari", "fiji", "qupath", "omero"]
TARGETS: tuple[Target, ...] = get_args(Target)
#: An archive or a web share wants NGFF 0.5 sharded: few files, and every 0.5 client tested
#: here (napari, vizarr, tensorstore) reads it.
DEFAULT_TARGET: Target = "archive"


@dataclass(frozen=True)
class StoreSettings:
    """Resolved layout of the final outputs.

    Attributes
    ----------
    ngff_version
        ``0.5`` (Zarr v3) or ``0.4`` (Zarr v2).
    chunk_size
        Chunk edge in Y and X.
    shard_chunks
        Chunks per shard edge; 0 for none (always 0 with NGFF 0.4).
    compression_level
        zstd level of the arrays.
    ome_tiff
        Also write a pyramidal OME-TIFF next to the OME-Zarr.
    ome_zarr
        Deliver the OME-Zarr; when false the store is an intermediate and the OME-TIFF
        (then ``ome_tiff`` is true) is the delivered image.
    """

    ngff_version: NgffVersion
    chunk_size: int
    shard_chunks: int
    compression_level: int
    ome_tiff: bool
    ome_zarr: bool = True


_SETTINGS: dict[Target, StoreSettings] = {
    # Few files per store (4x4 chunks per shard) for archives and object storage.
    "archive": StoreSettings("0.5", 1024, 4, 5, ome_tiff=False),
    # Smaller chunks: a browser fetches whole chunks, so the first view comes sooner;
    # 8x8 chunks per shard keep the file count of the archive setting.
    "web": StoreSettings("0.5", 512, 8, 5, ome_tiff=False),
    "napari": StoreSettings("0.5", 1024, 4, 5, ome_tiff=False),
    "fiji": StoreSettings("0.5", 1024, 4, 5, ome_tiff=False),
    # QuPath 0.7 and OMERO read Zarr v2 (NGFF 0.4) only, and OME-TIFF natively.
    "qupath": StoreSettings("0.4", 512, 0, 5, ome_tiff=True),
    "omero": StoreSettings("0.4", 1024, 0, 5, ome_tiff=True),
}


def settings(target: Target) -> StoreSettings:
    """Return the settings a target reads, before any explicit override."""
    return _SETTINGS[target]


def resolve(
    target: Target,
    *,
    ngff_version: NgffVersion | None = None,
    chunk_size: int | None = None,
    shard_chunks: int | None = None,
    compression_level: int | None = None,
    ome_tiff: bool | None = None,
    ome_zarr: bool | None = None,
) -> StoreSettings:
    """Apply explicit overrides to a target's settings.

    Parameters
    ----------
    target
        One of :data:`TARGETS`.
    ngff_version, chunk_size, shard_chunks, compression_level, ome_tiff, ome_zarr
        Explicit choices; ``None`` keeps the target's.

    Returns
    -------
    StoreSettings
        The settings to write with. Choosing NGFF 0.4 drops the target's sharding
        (Zarr v2 has no shards).

    Raises
    ------
    ValueError
        An unknown target, explicit sharding with NGFF 0.4, or neither an OME-Zarr nor
        an OME-TIFF to deliver.
    """
    if target not in _SETTINGS:
        raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    base = _SETTINGS[target]
    version = ngff_version if ngff_version is not None else base.ngff_version
    if version == "0.4" and shard_chunks is not None and shard_chunks > 1:
        raise ValueError(
            f"shard_chunks {shard_chunks} needs ngff_version 0.5 (Zarr v2 has no shards)"
        )
    if shard_chunks is None:
        shard_chunks = base.shard_chunks if version == "0.5" else 0
    tiff = ome_tiff if ome_tiff is not None else base.ome_tiff
    zarr = ome_zarr if ome_zarr is not None else base.ome_zarr
    if not zarr and not tiff:
        raise ValueError(
            "ome_zarr false needs an OME-TIFF (ome_tiff true, or a target that writes one): "
            "nothing would be delivered"
        )
    return dataclasses.replace(
        base,
        ngff_version=version,
        chunk_size=chunk_size if chunk_size is not None else base.chunk_size,
        shard_chunks=shard_chunks,
        compression_level=(
            compression_level if compression_level is not None else base.compression_level
        ),
        ome_tiff=tiff,
        ome_zarr=zarr,
    )


def from_config(config: Mapping[str, Any]) -> StoreSettings:
    """Resolve the workflow configuration's ``target`` and its explicit overrides.

    ``ngff_version`` may come as a number from ``--config`` (``0.4``); it is read as text.
    """
    version = config.get("ngff_version")
    return resolve(
        config.get("target") or DEFAULT_TARGET,
        ngff_version=None if version is None else _version(str(version)),
        chunk_size=config.get("chunk_size"),
        shard_chunks=config.get("shard_chunks"),
        compression_level=config.get("compression_level"),
        ome_tiff=config.get("ome_tiff"),
        ome_zarr=config.get("ome_zarr"),
    )


def _version(text: str) -> NgffVersion:
    if text == "0.4":
        return "0.4"
    if text == "0.5":
        return "0.5"
    raise ValueError(f"unknown ngff_version {text!r}; expected 0.4 or 0.5")


#: Workflow configuration keys the ``pyramid`` verb takes as options.
_OPTION_KEYS = ("ngff_version", "chunk_size", "shard_chunks", "compression_level")


def pyramid_options(config: Mapping[str, Any]) -> list[str]:
    """``--target`` and every explicit store setting of the configuration, as options.

    They are options of the ``convert`` and ``pyramid`` verbs (which resolve them with
    :func:`resolve`).
    """
    options = [f"--target={config.get('target') or DEFAULT_TARGET}"]
    for key in _OPTION_KEYS:
        if config.get(key) is not None:
            options.append(f"--{key.replace('_', '-')}={config[key]}")
    return options
