"""Metadata completeness: a structural gate, then the share of applicable fields present.

The score follows the tiered NBO/QUAREP-LiMi Microscopy Metadata Specifications
(Hammer et al. 2021, Nat Methods 18:1427; Rigano et al. 2021, v02-01) and REMBI
(Sarkans et al. 2021, Nat Methods 18:1418): a structural gate, then the share of
*applicable* tier-1 and tier-2 fields that are present. docs/metadata.md lists them.
"""

from __future__ import annotations

from bioingest.records import (
    ChannelRecord,
    Completeness,
    NboTier,
    SeriesRecord,
    StudyFields,
    value_of,
)

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


def _applies(name: str, series: SeriesRecord, channel: ChannelRecord | None) -> bool:
    """Whether a field is expected for this series/channel (the NBO applicability rules)."""
    if name == "physical_size_z_um":
        return (series["size_z"]["value"] or 1) > 1
    if name == "time_increment_s":
        return (series["size_t"]["value"] or 1) > 1
    if channel is None:
        return True
    ch = {key: value_of(channel, key) for key in channel}
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
    series: list[SeriesRecord],
    study_names: list[str],
    study: StudyFields,
) -> tuple[int, int, list[str]]:
    """Count applicable fields present; list the absent ones."""
    present = applicable = 0
    absent: list[str] = []
    for s in series:
        where = f"series {s['series']['value']}"
        checks: list[tuple[SeriesRecord | ChannelRecord, str, ChannelRecord | None, str]]
        checks = [(s, name, None, where) for name in image_names]
        for ch in s["channels"]:
            checks += [
                (ch, name, ch, f"{where} channel {ch['channel']['value']}")
                for name in channel_names
            ]
        for holder, name, channel, label in checks:
            if _applies(name, s, channel):
                applicable += 1
                if value_of(holder, name) is not None:
                    present += 1
                else:
                    absent.append(f"{label}: {name}")
    for name in study_names:
        applicable += 1
        if value_of(study, name) is not None:
            present += 1
        else:
            absent.append(f"study: {name}")
    return present, applicable, absent


def completeness(series: list[SeriesRecord], study: StudyFields) -> Completeness:
    """Structural gate, then tier-1 and tier-2 coverage of applicable fields (percent)."""
    gate_errors = []
    for s in series:
        for key in ("size_x", "size_y", "size_z", "size_c", "size_t"):
            size = value_of(s, key)
            if not size or size < 1:
                gate_errors.append(f"series {s['series']['value']}: {key} invalid")
        if s["pixel_type"]["value"] is None:
            gate_errors.append(f"series {s['series']['value']}: pixel_type missing")
    if not series:
        gate_errors.append("no images")
    p1, a1, missing1 = _tally(TIER1_IMAGE, TIER1_CHANNEL, series, TIER1_STUDY, study)
    p2, a2, missing2 = _tally(TIER2_IMAGE, TIER2_CHANNEL, series, TIER2_STUDY, study)
    tier1 = round(100.0 * p1 / a1, 1) if a1 else 100.0
    tier2 = round(100.0 * p2 / a2, 1) if a2 else 100.0
    label: NboTier
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
