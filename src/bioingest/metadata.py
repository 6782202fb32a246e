"""Stage 2: OME-XML -> a normalised record with origins, sanity flags and a completeness score.

Units are normalised to µm, s and nm. A value that the file does not give is empty
(``None``) with origin ``missing``, never a made-up number. Origins:

``file``      read from the OME-XML the reader produced;
``user``      from the study metadata the user supplied (``config/study.yaml``);
``inferred``  derived from other file values (e.g. the time step from plane time stamps);
``missing``   not known.

The completeness score follows the tiered NBO/QUAREP-LiMi Microscopy Metadata
Specifications (Hammer et al. 2021, Nat Methods 18:1427; Rigano et al. 2021, v02-01)
and REMBI (Sarkans et al. 2021, Nat Methods 18:1418): a structural gate, then the share
of *applicable* tier-1 and tier-2 fields that are present. docs/metadata.md lists them.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

from bioingest import omexml

Origin = str  # "file" | "user" | "inferred" | "missing"

IMAGE_COLUMNS = [
    "dataset",
    "source_file",
    "series",
    "name",
    "reader_format",
    "size_x",
    "size_y",
    "size_z",
    "size_c",
    "size_t",
    "pixel_type",
    "physical_size_x_um",
    "physical_size_y_um",
    "physical_size_z_um",
    "time_increment_s",
    "acquisition_date",
    "instrument",
    "objective_model",
    "objective_magnification",
    "objective_na",
    "immersion",
    "significant_bits",
]
CHANNEL_COLUMNS = [
    "dataset",
    "series",
    "channel",
    "name",
    "excitation_nm",
    "emission_nm",
    "fluor",
    "color",
    "illumination_type",
    "contrast_method",
    "exposure_s",
    "detector",
]
#: Plausible pixel sizes, µm: outside this range a size is flagged (a 72-dpi TIFF
#: reads as 352.8 µm, a broken LSM Z step as 1e-13 µm).
PLAUSIBLE_UM = (0.001, 1000.0)
#: Desktop resolutions (dots per inch) whose 25400/dpi µm "pixel size" is a TIFF default,
#: not a calibration (72 dpi reads as 352.8 µm).
DESKTOP_DPI = (72, 96, 100, 150, 200, 300, 600, 1200)
#: Plausible exposure times, s.
PLAUSIBLE_EXPOSURE_S = (1e-7, 3600.0)
CAMERA_DETECTORS = {"CCD", "IntensifiedCCD", "AnalogVideo", "EMCCD", "CMOS", "SpectroscopyCCD"}
CAMERA_MODES = {
    "WideField",
    "TIRF",
    "SpinningDiskConfocal",
    "SlitScanConfocal",
    "LightSheet",
    "SPIM",
    "SlitScan",
    "BrightField",
}
TRANSMITTED = {"Transmitted", "Oblique"}
NON_FLUORESCENT = {
    "Brightfield",
    "Phase",
    "DIC",
    "HoffmanModulation",
    "ObliqueIllumination",
    "PolarizedLight",
    "Darkfield",
}

#: Tier-1 (minimal) and tier-2 fields checked per series and per channel, with the
#: condition under which each applies. Study fields come from the user (REMBI).
TIER1_IMAGE = [
    "physical_size_x_um",
    "physical_size_y_um",
    "physical_size_z_um",
    "time_increment_s",
    "acquisition_date",
    "instrument",
    "objective_model",
    "objective_magnification",
    "objective_na",
]
TIER1_CHANNEL = ["name", "excitation_nm", "emission_nm", "exposure_s"]
TIER1_STUDY = ["licence", "organism", "imaging_method"]
TIER2_IMAGE = [
    "immersion",
    "significant_bits",
    "microscope_type",
    "objective_correction",
    "objective_working_distance_um",
    "refractive_index",
]
TIER2_CHANNEL = [
    "fluor",
    "illumination_type",
    "contrast_method",
    "acquisition_mode",
    "detector",
    "detector_type",
    "light_source",
]
TIER2_STUDY = ["authors", "description", "sample_preparation"]


def field(value: Any, origin: Origin = "file") -> dict[str, Any]:
    """A value with its origin; ``None`` and empty strings become ``missing``."""
    if value is None or value == "":
        return {"value": None, "origin": "missing"}
    return {"value": value, "origin": origin}


def _first(elem: Element | None, name: str) -> Element | None:
    kids = omexml.children(elem, name)
    return kids[0] if kids else None


def _float(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def _int(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def color_hex(value: str | None) -> str | None:
    """OME ``Color`` (signed 32-bit RGBA) as a 6-digit hex RGB string."""
    number = _int(value)
    if number is None:
        return None
    number &= 0xFFFFFFFF
    return f"{(number >> 24) & 255:02X}{(number >> 16) & 255:02X}{(number >> 8) & 255:02X}"


def _nm(value: str | None, unit: str | None) -> float | None:
    um = omexml.length_um(value, unit or "nm")
    return None if um is None else round(um * 1000.0, 9)


@dataclass(frozen=True)
class _Index:
    """ID lookups across the document."""

    instruments: dict[str, Element]
    objectives: dict[str, Element]
    detectors: dict[str, Element]
    light_sources: dict[str, Element]


def _index(root: Element) -> _Index:
    instruments = {i.attrib.get("ID", ""): i for i in omexml.children(root, "Instrument")}
    objectives, detectors, sources = {}, {}, {}
    for inst in instruments.values():
        for o in omexml.children(inst, "Objective"):
            objectives[o.attrib.get("ID", "")] = o
        for d in omexml.children(inst, "Detector"):
            detectors[d.attrib.get("ID", "")] = d
        for child in inst:
            if omexml.local_name(child.tag) in (
                "Laser",
                "Arc",
                "Filament",
                "LightEmittingDiode",
                "GenericExcitationSource",
            ):
                sources[child.attrib.get("ID", "")] = child
    return _Index(instruments, objectives, detectors, sources)


def _time_increment(pixels: Element, size_t: int) -> dict[str, Any]:
    a = pixels.attrib
    given = omexml.time_s(a.get("TimeIncrement"), a.get("TimeIncrementUnit"))
    if given is not None:
        return field(given)
    if size_t < 2:
        return field(None)
    stamps: dict[int, float] = {}
    for plane in omexml.children(pixels, "Plane"):
        p = plane.attrib
        if p.get("TheC", "0") == "0" and p.get("TheZ", "0") == "0":
            dt = omexml.time_s(p.get("DeltaT"), p.get("DeltaTUnit"))
            t = _int(p.get("TheT"))
            if dt is not None and t is not None:
                stamps[t] = dt
    steps = [stamps[t + 1] - stamps[t] for t in sorted(stamps) if t + 1 in stamps]
    if steps and all(s > 0 for s in steps):
        return field(round(statistics.fmean(steps), 9), "inferred")
    return field(None)


def _series_record(image: Element, index: int, idx: _Index) -> dict[str, Any]:
    pixels = _first(image, "Pixels")
    assert pixels is not None
    a = pixels.attrib
    sizes = {d: _int(a.get(f"Size{d.upper()}")) for d in "xyzct"}
    phys = [
        omexml.length_um(a.get(f"PhysicalSize{d}"), a.get(f"PhysicalSize{d}Unit")) for d in "XYZ"
    ]
    inst_ref = _first(image, "InstrumentRef")
    instrument = (
        idx.instruments.get(inst_ref.attrib.get("ID", "")) if inst_ref is not None else None
    )
    scope = _first(instrument, "Microscope")
    scope_name = None
    if scope is not None:
        parts = [scope.attrib.get("Manufacturer"), scope.attrib.get("Model")]
        scope_name = " ".join(p for p in parts if p) or None
    obj_settings = _first(image, "ObjectiveSettings")
    objective = (
        idx.objectives.get(obj_settings.attrib.get("ID", "")) if obj_settings is not None else None
    )
    o = objective.attrib if objective is not None else {}
    date = _first(image, "AcquisitionDate")
    record: dict[str, Any] = {
        "series": field(index),
        "name": field(image.attrib.get("Name")),
        "size_x": field(sizes["x"]),
        "size_y": field(sizes["y"]),
        "size_z": field(sizes["z"]),
        "size_c": field(sizes["c"]),
        "size_t": field(sizes["t"]),
        "pixel_type": field(a.get("Type")),
        "physical_size_x_um": field(phys[0]),
        "physical_size_y_um": field(phys[1]),
        "physical_size_z_um": field(phys[2]),
        "time_increment_s": _time_increment(pixels, sizes["t"] or 1),
        "acquisition_date": field(date.text if date is not None else None),
        "instrument": field(scope_name),
        "microscope_type": field(scope.attrib.get("Type") if scope is not None else None),
        "objective_model": field(o.get("Model")),
        "objective_magnification": field(_float(o.get("NominalMagnification"))),
        "objective_na": field(_float(o.get("LensNA"))),
        "immersion": field(o.get("Immersion")),
        "objective_correction": field(o.get("Correction")),
        "objective_working_distance_um": field(
            omexml.length_um(o.get("WorkingDistance"), o.get("WorkingDistanceUnit"))
        ),
        "refractive_index": field(
            _float(obj_settings.attrib.get("RefractiveIndex")) if obj_settings is not None else None
        ),
        "significant_bits": field(_int(a.get("SignificantBits"))),
    }
    record["channels"] = [
        _channel_record(ch, c, pixels, idx)
        for c, ch in enumerate(omexml.children(pixels, "Channel"))
    ]
    return record


def _channel_record(ch: Element, c: int, pixels: Element, idx: _Index) -> dict[str, Any]:
    a = ch.attrib
    exposure = None
    for plane in omexml.children(pixels, "Plane"):
        if plane.attrib.get("TheC") == str(c) and "ExposureTime" in plane.attrib:
            exposure = omexml.time_s(
                plane.attrib["ExposureTime"], plane.attrib.get("ExposureTimeUnit")
            )
            break
    settings = _first(ch, "DetectorSettings")
    detector = idx.detectors.get(settings.attrib.get("ID", "")) if settings is not None else None
    d = detector.attrib if detector is not None else {}
    detector_name = " ".join(x for x in (d.get("Manufacturer"), d.get("Model")) if x) or None
    source_settings = _first(ch, "LightSourceSettings")
    source = (
        idx.light_sources.get(source_settings.attrib.get("ID", ""))
        if source_settings is not None
        else None
    )
    source_name = None
    if source is not None:
        s = source.attrib
        source_name = " ".join(x for x in (omexml.local_name(source.tag), s.get("Model")) if x)
    return {
        "channel": field(c),
        "name": field(a.get("Name")),
        "samples_per_pixel": field(_int(a.get("SamplesPerPixel"))),
        "excitation_nm": field(
            _nm(a.get("ExcitationWavelength"), a.get("ExcitationWavelengthUnit"))
        ),
        "emission_nm": field(_nm(a.get("EmissionWavelength"), a.get("EmissionWavelengthUnit"))),
        "fluor": field(a.get("Fluor")),
        "color": field(color_hex(a.get("Color"))),
        "illumination_type": field(a.get("IlluminationType")),
        "contrast_method": field(a.get("ContrastMethod")),
        "acquisition_mode": field(a.get("AcquisitionMode")),
        "exposure_s": field(exposure),
        "detector": field(
            detector_name or (settings.attrib.get("ID") if settings is not None else None)
        ),
        "detector_type": field(d.get("Type")),
        "light_source": field(source_name),
    }


def sanity_flags(series: dict[str, Any]) -> list[str]:
    """Names of the metadata problems a series has (empty when none)."""
    flags = []
    sizes = [series[f"physical_size_{d}_um"]["value"] for d in "xyz"]
    if sizes[0] is None or sizes[1] is None:
        flags.append("physical_size_missing")
    low, high = PLAUSIBLE_UM
    dpi_sizes = [25400.0 / dpi for dpi in DESKTOP_DPI]
    if any(
        s is not None and (not low <= s <= high or any(abs(s - d) <= 1e-3 * d for d in dpi_sizes))
        for s in sizes
    ):
        flags.append("physical_size_implausible")
    channels = series["channels"]
    if not channels or any(c["name"]["value"] is None for c in channels):
        flags.append("channel_names_missing")
    shortest, longest = PLAUSIBLE_EXPOSURE_S
    if any(
        c["exposure_s"]["value"] is not None and not shortest <= c["exposure_s"]["value"] <= longest
        for c in channels
    ):
        flags.append("exposure_implausible")
    if series["acquisition_date"]["value"] is None:
        flags.append("acquisition_date_missing")
    return flags


def _applies(name: str, series: dict[str, Any], channel: dict[str, Any] | None) -> bool:
    """Whether a field is expected for this series/channel (the NBO applicability rules)."""
    if name == "physical_size_z_um":
        return (series["size_z"]["value"] or 1) > 1
    if name == "time_increment_s":
        return (series["size_t"]["value"] or 1) > 1
    if channel is None:
        return True
    ch = {key: value["value"] for key, value in channel.items()}
    rgb = (ch["samples_per_pixel"] or 1) > 1
    fluorescent = (
        not rgb
        and ch["illumination_type"] not in TRANSMITTED
        and ch["contrast_method"] not in NON_FLUORESCENT
    )
    if name in ("excitation_nm", "emission_nm", "fluor"):
        return fluorescent
    if name == "exposure_s":
        return ch["detector_type"] in CAMERA_DETECTORS or ch["acquisition_mode"] in CAMERA_MODES
    return True


def _tally(
    image_names: list[str],
    channel_names: list[str],
    series: list[dict[str, Any]],
    study_names: list[str],
    study: dict[str, Any],
) -> tuple[int, int, list[str]]:
    """Count applicable fields present; list the absent ones."""
    present = applicable = 0
    absent: list[str] = []
    for s in series:
        where = f"series {s['series']['value']}"
        checks = [(s, name, None, where) for name in image_names]
        for ch in s["channels"]:
            checks += [
                (ch, name, ch, f"{where} channel {ch['channel']['value']}")
                for name in channel_names
            ]
        for holder, name, channel, label in checks:
            if _applies(name, s, channel):
                applicable += 1
                if holder[name]["value"] is not None:
                    present += 1
                else:
                    absent.append(f"{label}: {name}")
    for name in study_names:
        applicable += 1
        if study.get(name, field(None))["value"] is not None:
            present += 1
        else:
            absent.append(f"study: {name}")
    return present, applicable, absent


def completeness(series: list[dict[str, Any]], study: dict[str, Any]) -> dict[str, Any]:
    """Structural gate, then tier-1 and tier-2 coverage of applicable fields (percent)."""
    gate_errors = []
    for s in series:
        for key in ("size_x", "size_y", "size_z", "size_c", "size_t"):
            if not s[key]["value"] or s[key]["value"] < 1:
                gate_errors.append(f"series {s['series']['value']}: {key} invalid")
        if s["pixel_type"]["value"] is None:
            gate_errors.append(f"series {s['series']['value']}: pixel_type missing")
    if not series:
        gate_errors.append("no images")
    p1, a1, missing1 = _tally(TIER1_IMAGE, TIER1_CHANNEL, series, TIER1_STUDY, study)
    p2, a2, missing2 = _tally(TIER2_IMAGE, TIER2_CHANNEL, series, TIER2_STUDY, study)
    tier1 = round(100.0 * p1 / a1, 1) if a1 else 100.0
    tier2 = round(100.0 * p2 / a2, 1) if a2 else 100.0
    if gate_errors:
        label = "invalid"
    elif tier1 < 100.0:
        label = "below tier 1"
    elif tier2 < 100.0:
        label = "tier 1"
    else:
        label = "tier 2"
    return {
        "structurally_valid": not gate_errors,
        "gate_errors": gate_errors,
        "nbo_tier": label,
        "tier1_pct": tier1,
        "tier2_pct": tier2,
        "tier1_missing": missing1,
        "tier2_missing": missing2,
    }


def study_record(study: dict[str, Any] | None) -> dict[str, Any]:
    """User study metadata as fields with origin ``user`` (organism and method keep their ids)."""
    study = study or {}
    out: dict[str, Any] = {}
    for key in ("licence", "description", "sample_preparation"):
        out[key] = field(study.get(key), "user")
    for key in ("organism", "imaging_method"):
        item = study.get(key) or {}
        out[key] = field(item if item.get("name") and item.get("id") else None, "user")
    authors = study.get("authors") or []
    out["authors"] = field(authors or None, "user")
    return out


def build_record(
    xml: str,
    *,
    dataset: str,
    source_file: str = "",
    reader_format: str = "",
    study: dict[str, Any] | None = None,
    pixel_hashes: list[str] | None = None,
) -> dict[str, Any]:
    """The normalised metadata record for one dataset.

    Parameters
    ----------
    xml
        Complete OME-XML, as saved by ``convert``.
    dataset
        Dataset name.
    source_file, reader_format
        Where the data came from, for the tables.
    study
        Validated user study metadata (``config/study.yaml``), or ``None``.
    pixel_hashes
        Pixel-content hash of each series' level 0 (see :mod:`bioingest.pixelhash`).
    """
    root = omexml.parse(xml)
    idx = _index(root)
    series = [_series_record(img, i, idx) for i, img in enumerate(omexml.children(root, "Image"))]
    for i, s in enumerate(series):
        s["flags"] = sanity_flags(s)
        if pixel_hashes is not None and i < len(pixel_hashes):
            s["pixel_sha256"] = field(pixel_hashes[i], "inferred")
    study_fields = study_record(study)
    return {
        "dataset": dataset,
        "source_file": source_file,
        "reader_format": reader_format,
        "study": study_fields,
        "series": series,
        "completeness": completeness(series, study_fields),
    }


def image_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One tidy row per series (``IMAGE_COLUMNS``)."""
    rows = []
    for s in record["series"]:
        row = {k: record[k] for k in ("dataset", "source_file", "reader_format")}
        row.update({k: s[k]["value"] for k in IMAGE_COLUMNS if k in s})
        rows.append({k: row.get(k) for k in IMAGE_COLUMNS})
    return rows


def channel_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One tidy row per channel (``CHANNEL_COLUMNS``)."""
    rows = []
    for s in record["series"]:
        for ch in s["channels"]:
            row = {"dataset": record["dataset"], "series": s["series"]["value"]}
            row.update({k: ch[k]["value"] for k in CHANNEL_COLUMNS if k in ch})
            rows.append({k: row.get(k) for k in CHANNEL_COLUMNS})
    return rows


def load_study(path: Path) -> dict[str, Any]:
    """Read and validate a study YAML file against the package's ``study.schema.yaml``."""
    import jsonschema
    import yaml

    from bioingest.errors import IngestError
    from bioingest.schemas import load_schema

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise IngestError(path, f"cannot read study metadata ({exc})") from None
    schema = load_schema("study.schema.yaml")
    try:
        jsonschema.validate(data, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "top level"
        raise IngestError(path, f"{where}: {exc.message}") from None
    assert isinstance(data, dict)
    return data


PALETTE = ["00FF00", "FF00FF", "00FFFF", "FF0000", "0000FF", "FFFF00"]
RGB = [("R", "FF0000"), ("G", "00FF00"), ("B", "0000FF")]


def display_channels(
    series: dict[str, Any] | None, size_c: int, *, rgb: bool = False
) -> list[tuple[str, str]]:
    """``(label, colour)`` for each of ``size_c`` array channels of a series record.

    Colours come from the file when it has them; otherwise red/green/blue for the samples
    of colour (RGB) pixels, white for a single channel and a fixed palette for several.
    """
    channels = series["channels"] if series else []
    if rgb and size_c == 3 and not any(ch["color"]["value"] for ch in channels):
        names = [ch["name"]["value"] for ch in channels] if len(channels) == 3 else [None] * 3
        return [(str(n or label), colour) for n, (label, colour) in zip(names, RGB, strict=True)]
    if len(channels) == size_c:
        out = []
        for c, ch in enumerate(channels):
            label = ch["name"]["value"] or f"Channel {c}"
            default = "FFFFFF" if size_c == 1 else PALETTE[c % len(PALETTE)]
            out.append((str(label), ch["color"]["value"] or default))
        return out
    if len(channels) == 1 and size_c == 3:
        base = channels[0]["name"]["value"]
        return [(f"{base} {n}" if base else n, colour) for n, colour in RGB]
    if size_c == 1:
        return [("Channel 0", "FFFFFF")]
    return [(f"Channel {c}", PALETTE[c % len(PALETTE)]) for c in range(size_c)]
