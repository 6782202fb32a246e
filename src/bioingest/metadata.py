"""Stage 3: OME-XML -> a normalised record with origins, sanity flags and a completeness score.

Units are normalised to µm, s and nm. A value that the file does not give is empty
(``None``) with origin ``missing``, never a made-up number. Origins:

``file``      read from the OME-XML the reader produced;
``user``      from the study metadata the user supplied (``config/study.yaml``);
``inferred``  derived from other file values (e.g. the time step from plane time stamps);
``missing``   not known.

The completeness score is computed by :mod:`bioingest.completeness`; the user's study
metadata is read by :mod:`bioingest.study`; the record's type is
:class:`bioingest.records.MetadataRecord`.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from xml.etree.ElementTree import Element

from bioingest import omexml
from bioingest.completeness import completeness
from bioingest.records import (
    ChannelRecord,
    Field,
    MetadataRecord,
    SeriesRecord,
    field,
    metadata_json,
)
from bioingest.study import Study, study_record

#: Plausible pixel sizes, µm: outside this range a size is flagged (a 72-dpi TIFF
#: reads as 352.8 µm, a broken LSM Z step as 1e-13 µm).
PLAUSIBLE_UM = (0.001, 1000.0)
#: Desktop resolutions (dots per inch) whose 25400/dpi µm "pixel size" is a TIFF default,
#: not a calibration (72 dpi reads as 352.8 µm).
DESKTOP_DPI = (72, 96, 100, 150, 200, 300, 600, 1200)
#: Plausible exposure times, s.
PLAUSIBLE_EXPOSURE_S = (1e-7, 3600.0)


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


def _time_increment(pixels: Element, size_t: int) -> Field[float]:
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


def _series_record(image: Element, index: int, idx: _Index) -> SeriesRecord:
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
    return {
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
        "channels": [
            _channel_record(ch, c, pixels, idx)
            for c, ch in enumerate(omexml.children(pixels, "Channel"))
        ],
        "flags": [],  # filled in by build_record (sanity_flags reads the record)
    }


def _channel_record(ch: Element, c: int, pixels: Element, idx: _Index) -> ChannelRecord:
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


def sanity_flags(series: SeriesRecord) -> list[str]:
    """Names of the metadata problems a series has (empty when none)."""
    flags = []
    sizes = [
        series["physical_size_x_um"]["value"],
        series["physical_size_y_um"]["value"],
        series["physical_size_z_um"]["value"],
    ]
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
    exposures = [c["exposure_s"]["value"] for c in channels]
    if any(e is not None and not shortest <= e <= longest for e in exposures):
        flags.append("exposure_implausible")
    if series["acquisition_date"]["value"] is None:
        flags.append("acquisition_date_missing")
    return flags


def build_record(
    xml: str,
    *,
    dataset: str,
    source_file: str = "",
    reader_format: str = "",
    study: Study | None = None,
    pixel_hashes: list[str] | None = None,
) -> MetadataRecord:
    """Build the normalised metadata record for one dataset.

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


def describe(
    source: Path,
    *,
    dataset: str | None = None,
    source_json: Path | None = None,
    store: Path | None = None,
    intermediate: Path | None = None,
    study: Path | None = None,
) -> MetadataRecord:
    """Build the metadata record of ``source``: an OME-XML file, an OME-Zarr or a source file.

    Parameters
    ----------
    source
        Where the OME-XML is read from (see :func:`bioingest.omexml.ome_xml_of`).
    dataset
        Dataset name; by default the source's name up to its first dot.
    source_json
        ``{dataset}.source.json`` written by ``convert``: the source file and reader format.
    store
        Final OME-Zarr whose level-0 pixel hashes the record carries (decoded and hashed).
    intermediate
        Store written by ``convert``: the record carries the pixel hash of each series as
        it was read from the source (QC then checks the final store against it).
    study
        Study metadata YAML file (validated).
    """
    import json

    from bioingest.study import load_study

    xml, info = omexml.ome_xml_of(source)
    if source_json is not None:
        info = json.loads(source_json.read_text(encoding="utf-8"))
    hashes = None
    if intermediate is not None:
        import zarr

        from bioingest.records import read_source_hashes

        hashes = read_source_hashes(zarr.open_group(intermediate, mode="r"))
    elif store is not None:
        from bioingest.checksum import store_pixel_hashes

        hashes = store_pixel_hashes(store)
    return build_record(
        xml,
        dataset=dataset or source.name.split(".")[0],
        source_file=str(info.get("source", "")),
        reader_format=str(info.get("format", "")),
        study=load_study(study) if study else None,
        pixel_hashes=hashes,
    )


def write_step(
    source: Path,
    out: Path,
    *,
    dataset: str,
    source_json: Path | None,
    store: Path | None = None,
    intermediate: Path | None = None,
    study: Path | None = None,
) -> MetadataRecord | None:
    """Run the metadata step of one dataset: write ``metadata.json`` atomically.

    A dataset whose conversion failed (recorded in ``source_json``) gets a failure record;
    None is returned then, else the record written. Other parameters as :func:`describe`.
    """
    from bioingest import atomic
    from bioingest.outcomes import failure_record, recorded_failure

    if failure := recorded_failure(source_json):
        atomic.write_text(out, failure_record(dataset, failure))
        return None
    record = describe(
        source,
        dataset=dataset,
        source_json=source_json,
        store=store,
        intermediate=intermediate,
        study=study,
    )
    atomic.write_text(out, metadata_json(record))
    return record
