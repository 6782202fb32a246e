"""The records the stages pass on, typed, and the one place they are read and written.

Three records travel between the stages as JSON:

``{dataset}.source.json``  the source description ``convert`` writes (also the ``bioingest``
                           attribute of the intermediate store): :class:`SourceDescription`;
``metadata.json``          the normalised metadata record: :class:`MetadataRecord`;
``qc.json``                the quality report: :class:`QCReport`.

A dataset whose conversion failed on bad input gets a :class:`SourceFailure` instead of
its description and a :class:`FailureRecord` instead of the other two. The writers here
fix the JSON formatting of each record, so a rerun writes the same bytes. The published
JSON Schemas of ``metadata.json`` and ``qc.json`` are in ``bioingest/schemas/``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, NotRequired, TypedDict, TypeVar, cast

if TYPE_CHECKING:
    import zarr
    from typing_extensions import TypeIs

#: Group attribute key under which the intermediate store describes itself.
ATTR = "bioingest"
#: Attribute of each intermediate array: the pixel-content hash of the pixels as read.
PIXEL_HASH = "bioingest_source_pixel_sha256"

T = TypeVar("T")

# --- failures -----------------------------------------------------------------------


class FailureReason(TypedDict):
    """Why a dataset was not converted: the step and a one-line reason."""

    step: str
    reason: str


class FailureRecord(TypedDict):
    """``metadata.json`` and ``qc.json`` of a dataset that was not converted."""

    dataset: str
    failure: FailureReason


# --- source description (convert) ----------------------------------------------------


class SeriesDescription(TypedDict):
    """One series of the source as read: TCZYX shape, numpy dtype, colour samples."""

    index: int
    shape: list[int]
    dtype: str
    rgb: bool


class SourceDescription(TypedDict):
    """``{dataset}.source.json`` of a converted source."""

    source: str
    reader: str
    format: str
    bioingest_version: str
    used_files: list[str]
    series: list[SeriesDescription]


class SourceFailure(TypedDict):
    """``{dataset}.source.json`` of a source that could not be read."""

    source: str
    bioingest_version: str
    failure: FailureReason


SourceRecord = SourceDescription | SourceFailure

# --- metadata record (metadata) -------------------------------------------------------

Origin = Literal["file", "user", "inferred", "missing"]


class Field(TypedDict, Generic[T]):
    """A value with where it came from; ``None`` with origin ``missing`` when not known."""

    value: T | None
    origin: Origin


def field(value: T | None, origin: Origin = "file") -> Field[T]:
    """Return a value with its origin; ``None`` and empty strings become ``missing``."""
    if value is None or value == "":
        return {"value": None, "origin": "missing"}
    return {"value": value, "origin": origin}


class Term(TypedDict):
    """An ontology term of the study metadata (NCBITaxon, FBbi)."""

    name: str
    id: str


class ChannelRecord(TypedDict):
    """One channel of a series of ``metadata.json``."""

    channel: Field[int]
    name: Field[str]
    samples_per_pixel: Field[int]
    excitation_nm: Field[float]
    emission_nm: Field[float]
    fluor: Field[str]
    color: Field[str]
    illumination_type: Field[str]
    contrast_method: Field[str]
    acquisition_mode: Field[str]
    exposure_s: Field[float]
    detector: Field[str]
    detector_type: Field[str]
    light_source: Field[str]


class SeriesRecord(TypedDict):
    """One series of ``metadata.json``: its image, acquisition and channel metadata."""

    series: Field[int]
    name: Field[str]
    size_x: Field[int]
    size_y: Field[int]
    size_z: Field[int]
    size_c: Field[int]
    size_t: Field[int]
    pixel_type: Field[str]
    physical_size_x_um: Field[float]
    physical_size_y_um: Field[float]
    physical_size_z_um: Field[float]
    time_increment_s: Field[float]
    acquisition_date: Field[str]
    instrument: Field[str]
    microscope_type: Field[str]
    objective_model: Field[str]
    objective_magnification: Field[float]
    objective_na: Field[float]
    immersion: Field[str]
    objective_correction: Field[str]
    objective_working_distance_um: Field[float]
    refractive_index: Field[float]
    significant_bits: Field[int]
    channels: list[ChannelRecord]
    #: Metadata problems (:func:`bioingest.metadata.sanity_flags`).
    flags: list[str]
    #: Pixel-content hash of the final level 0, when the store was given.
    pixel_sha256: NotRequired[Field[str]]


class StudyFields(TypedDict):
    """User study metadata (origin ``user``)."""

    licence: Field[str]
    description: Field[str]
    sample_preparation: Field[str]
    organism: Field[Term]
    imaging_method: Field[Term]
    authors: Field[list[dict[str, str]]]


NboTier = Literal["invalid", "below tier 1", "tier 1", "tier 2"]


class Completeness(TypedDict):
    """How complete the metadata of ``metadata.json`` is: structural validity and NBO tier."""

    structurally_valid: bool
    gate_errors: list[str]
    nbo_tier: NboTier
    tier1_pct: float
    tier2_pct: float
    tier1_missing: list[str]
    tier2_missing: list[str]


class MetadataRecord(TypedDict):
    """``metadata.json`` of a converted dataset."""

    dataset: str
    source_file: str
    reader_format: str
    study: StudyFields
    series: list[SeriesRecord]
    completeness: Completeness


# --- QC report (qc) --------------------------------------------------------------------

Flag = Literal["n/a", "pass", "warn", "fail"]


class PlaneQC(TypedDict):
    """One plane of a series of ``qc.json``: its range, blankness and focus measures."""

    t: int
    c: int
    z: int
    min: float | None
    max: float | None
    blank: bool
    normalized_variance: float | None
    power_log_log_slope: float | None


class HistogramPlot(TypedDict):
    """A channel's histogram to plot in ``qc.json``: counts in equal bins from min to max."""

    min: float | None
    max: float | None
    counts: list[int]


class CheckResults(TypedDict):
    """Check name → flag, and a reason for every flag other than ``pass``."""

    checks: dict[str, Flag]
    reasons: dict[str, str]


class ChannelQC(TypedDict):
    """One channel of a series of ``qc.json``: its statistics, histogram and checks."""

    channel: int
    label: str
    color: str
    min: float | None
    max: float | None
    mean: float | None
    std: float | None
    median: float | None
    p0_1: float | None
    p99_9: float | None
    histogram_exact: bool
    saturation_value: float | None
    saturated_fraction: float | None
    zero_fraction: float
    foreground_coverage: float
    empty_fraction: float
    foreground_zero_fraction: float | None
    bits_used: int | None
    bits_available: int
    blank_planes: list[list[int]]
    best_focus_z: int | None
    uniformity_pct: float | None
    histogram: HistogramPlot
    checks: dict[str, Flag]
    reasons: dict[str, str]
    status: Flag


class SeriesMetadataQC(TypedDict):
    """Metadata status of a series of ``qc.json``, with its metadata flags."""

    status: Flag
    flags: list[str]


class SeriesQC(TypedDict):
    """One series of ``qc.json``: pixel hashes, checks, metadata status, channels, planes."""

    series: int
    path: str
    shape: list[int]
    dtype: str
    source_pixel_sha256: str | None
    output_pixel_sha256: str
    checks: dict[str, Flag]
    reasons: dict[str, str]
    status: Flag
    metadata: SeriesMetadataQC
    thumbnail: str
    channels: list[ChannelQC]
    planes: list[PlaneQC]


class SeriesMeasures(TypedDict):
    """What :func:`bioingest.qc.run_qc` measures of a series' pixels."""

    channels: list[ChannelQC]
    planes: list[PlaneQC]


class StoreInfo(TypedDict):
    """The store of ``qc.json``: its path and Zarr format.

    ``delivered`` is false when the store was an intermediate and the OME-TIFF is the
    delivered image (``ome_zarr: false``); absent, the store is delivered.
    """

    path: str
    zarr_format: int
    delivered: NotRequired[bool]


class QCReport(TypedDict):
    """``qc.json`` of a converted dataset."""

    dataset: str
    status: Flag
    metadata_status: Flag
    store: StoreInfo
    thresholds: dict[str, float | int]
    series: list[SeriesQC]


# --- telling records apart -------------------------------------------------------------


def is_failure(
    record: SourceRecord | MetadataRecord | FailureRecord | QCReport,
) -> TypeIs[SourceFailure | FailureRecord]:
    """Whether a record says the dataset was not converted."""
    return "failure" in record


# --- reading and writing ----------------------------------------------------------------


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def source_json(description: SourceRecord) -> str:
    """Text of ``{dataset}.source.json``."""
    return json.dumps(description, indent=2) + "\n"


def read_source(path: Path) -> SourceRecord:
    """``{dataset}.source.json``."""
    return cast(SourceRecord, _load(path))


def read_intermediate(group: zarr.Group) -> SourceRecord:
    """Read the description an intermediate store keeps in its attributes."""
    description = group.attrs[ATTR]
    assert isinstance(description, dict)
    return cast(SourceRecord, description)


def read_source_hashes(group: zarr.Group) -> list[str]:
    """Pixel-content hash of each series as ``convert`` read it, in series order."""
    hashes = []
    for name in sorted(group.array_keys(), key=int):
        digest = group[name].attrs[PIXEL_HASH]
        assert isinstance(digest, str)
        hashes.append(digest)
    return hashes


def write_intermediate(group: zarr.Group, description: SourceRecord) -> None:
    """Keep the description in an intermediate store's attributes."""
    group.attrs[ATTR] = cast(dict[str, Any], description)


def metadata_json(record: MetadataRecord) -> str:
    """Text of ``metadata.json``."""
    return json.dumps(record, indent=2, ensure_ascii=False) + "\n"


def read_metadata(path: Path) -> MetadataRecord | FailureRecord:
    """``metadata.json``: the record, or the failure record of a dataset not converted."""
    return cast(MetadataRecord | FailureRecord, _load(path))


def qc_json(report: QCReport) -> str:
    """Text of ``qc.json``."""
    return json.dumps(report, indent=1, ensure_ascii=False) + "\n"


def read_qc(path: Path) -> QCReport | FailureRecord:
    """``qc.json``: the report, or the failure record of a dataset not converted."""
    return cast(QCReport | FailureRecord, _load(path))


def failure_json(dataset: str, failure: FailureReason) -> str:
    """Text of ``metadata.json`` and ``qc.json`` of a dataset that was not converted."""
    record: FailureRecord = {"dataset": dataset, "failure": failure}
    return json.dumps(record, indent=2) + "\n"


# --- queries ----------------------------------------------------------------------------


def value_of(holder: SeriesRecord | ChannelRecord | StudyFields, key: str) -> Any:
    """Return the value of the field named ``key`` (a name not known until run time)."""
    fields = cast(Mapping[str, Field[Any]], holder)
    return fields[key]["value"]


def flagged_checks(qc: QCReport, flag: str) -> Iterator[tuple[SeriesQC, ChannelQC | None, str]]:
    """``(series, channel, check)`` of every image check with ``flag``.

    Series checks come first, then each channel's, in report order (channel None for a
    series check).
    """
    for s in qc["series"]:
        for name, value in s["checks"].items():
            if value == flag:
                yield s, None, name
        for ch in s["channels"]:
            for name, value in ch["checks"].items():
                if value == flag:
                    yield s, ch, name


def recorded_pixel_hash(series: SeriesRecord) -> str | None:
    """Return the level-0 pixel-content hash ``metadata.json`` recorded for a series, if any."""
    return series["pixel_sha256"]["value"] if "pixel_sha256" in series else None


def failing_checks(qc: QCReport, flag: str) -> list[str]:
    """Names of the image checks with ``flag`` anywhere in a dataset, sorted."""
    return sorted({name for _, _, name in flagged_checks(qc, flag)})
