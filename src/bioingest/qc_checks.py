"""The QC checks: where each applies, and how it is graded ``pass``/``warn``/``fail``.

Each check returns a :class:`Check`: its flag, the value it graded and a one-line reason
(empty for ``pass``). A check that does not apply to an image says ``n/a`` and why, so a
``fail`` always means a person should look. docs/qc.md defines each rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bioingest.records import CheckResults, Flag

FLAGS: tuple[Flag, ...] = ("n/a", "pass", "warn", "fail")
#: Severity for sorting: ``n/a`` is below ``pass`` (nothing to act on).
SEVERITY = {flag: i for i, flag in enumerate(FLAGS)}


@dataclass(frozen=True)
class Thresholds:
    """Where each check applies and where it turns to ``warn`` or ``fail``.

    These are the config keys ``qc_*`` (docs/qc.md).
    """

    saturation_warn: float = 0.001
    saturation_fail: float = 0.01
    zero_warn: float = 0.01
    zero_fail: float = 0.5
    bit_depth_warn: float = 0.5
    blank_planes_warn: int = 1
    uniformity_warn: float = 20.0
    uniformity_fail: float = 5.0
    uniformity_min_coverage: float = 0.5
    uniformity_max_empty: float = 0.01
    foreground_level: float = 0.1
    cell_size: int = 8
    padding_gap: float = 0.25
    focus_slope_warn: float = -3.5
    focus_min_size: int = 32
    focus_crop: int = 1024
    tile_size: int = 1024


@dataclass(frozen=True)
class Check:
    """One check's outcome."""

    flag: Flag
    value: float | None = None
    reason: str = ""


def worst(flags: list[Flag]) -> Flag:
    """Return the most severe flag; ``pass`` when there is none or all are ``n/a``."""
    return FLAGS[max((SEVERITY[f] for f in flags), default=1)] if flags else "pass"


def overall(flags: list[Flag]) -> Flag:
    """Status of a group of checks: the worst, where ``n/a`` counts as ``pass``."""
    return worst([f for f in flags if f != "n/a"])


def grade(value: float, warn: float, fail: float | None = None, *, low: bool) -> Flag:
    """Grade a value: with ``low`` small values are bad, otherwise large values are."""

    def beyond(limit: float) -> bool:
        return value < limit if low else value > limit

    if fail is not None and beyond(fail):
        return "fail"
    return "warn" if beyond(warn) else "pass"


RGB_REASON = "RGB colour image: 0 and the maximum are the ends of a display range"


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.3g} %"


@dataclass(frozen=True)
class ChannelFacts:
    """What the checks of one channel need, measured in one pass."""

    kind: str  # numpy dtype kind: u, i, f, b
    bits: int  # bits of the pixel type
    significant_bits: int | None  # from the metadata, None when unknown
    count: int
    low: float
    high: float
    saturation_value: float | None
    saturated: int
    zeros: int
    padding_gap_pixels: int  # non-zero pixels below padding_gap x their median
    nonzero_median: float
    coverage: float  # share of pixels in foreground cells
    empty: float  # share of pixels in cells that are entirely zero
    foreground_zeros: int
    foreground_pixels: int
    uniformity_pct: float | None
    planes: int
    blank_planes: int
    best_slope: float | None
    focus_edge: int  # edge of the square the focus slope is measured on
    rgb: bool = False  # colour (RGB) samples, e.g. brightfield or a rendered image


def saturation(f: ChannelFacts, th: Thresholds) -> Check:
    """Share of pixels at the detector maximum; integer data only."""
    if f.kind == "f":
        return Check("n/a", None, "floating-point data have no detector maximum")
    if f.rgb:
        return Check("n/a", None, RGB_REASON)
    if f.saturation_value is None:
        return Check("n/a", None, "no detector maximum known")
    fraction = f.saturated / f.count
    flag = grade(fraction, th.saturation_warn, th.saturation_fail, low=False)
    reason = (
        f"{_pct(fraction)} of pixels at the maximum {f.saturation_value:g}"
        if flag != "pass"
        else ""
    )
    return Check(flag, fraction, reason)


def is_padding(f: ChannelFacts, th: Thresholds) -> bool:
    """Zeros are a fill value (mosaic or tile padding): the data never come near zero."""
    nonzero = f.count - f.zeros
    return (
        f.zeros > 0
        and nonzero > 0
        and f.nonzero_median > 0
        and f.padding_gap_pixels <= 0.001 * nonzero
    )


def zero_clipping(f: ChannelFacts, th: Thresholds) -> Check:
    """Zeros inside the foreground: signal cut at the bottom of the range."""
    if f.rgb:
        return Check("n/a", None, RGB_REASON)
    if f.low < 0:
        return Check("n/a", None, f"values below zero (min {f.low:g}): zero is not the floor")
    if f.zeros == 0:
        return Check("pass", 0.0)
    if is_padding(f, th):
        return Check(
            "n/a",
            None,
            f"zeros are padding: {_pct(f.zeros / f.count)} of pixels at 0 with no data "
            f"below {th.padding_gap:g} × the median {f.nonzero_median:g}",
        )
    if f.foreground_pixels == 0:
        return Check("n/a", None, "no foreground: every cell is background")
    fraction = f.foreground_zeros / f.foreground_pixels
    flag = grade(fraction, th.zero_warn, th.zero_fail, low=False)
    floor = f.zeros - f.foreground_zeros
    if flag == "pass":
        reason = (
            f"background-subtracted floor: {_pct(floor / f.count)} of pixels at 0, "
            f"all but {_pct(fraction)} of the foreground above it"
            if floor > 0
            else ""
        )
        return Check("pass", fraction, reason)
    return Check(flag, fraction, f"{_pct(fraction)} of foreground pixels clipped at 0")


def bit_depth(f: ChannelFacts, th: Thresholds) -> Check:
    """Share of the detector's bits the data span."""
    if f.kind == "f":
        return Check("n/a", None, "floating-point data have no bit depth")
    if f.bits > 16 and (f.significant_bits or f.bits) >= f.bits:
        # No camera fills 32 bits: the container says nothing about the detector.
        known = f.significant_bits or "unknown"
        return Check(
            "n/a", None, f"{f.bits}-bit integers, no detector bit depth (SignificantBits {known})"
        )
    available = f.significant_bits or f.bits
    used = math.ceil(math.log2(f.high - f.low + 1))
    ratio = used / available
    flag = grade(ratio, th.bit_depth_warn, low=True)
    reason = f"data span {used} of {available} bits" if flag != "pass" else ""
    return Check(flag, ratio, reason)


def blank_planes(f: ChannelFacts, th: Thresholds) -> Check:
    """Planes with a single value."""
    if f.blank_planes == f.planes:
        return Check("fail", f.blank_planes, f"every plane is blank (all {f.low:g})")
    if f.blank_planes >= th.blank_planes_warn:
        return Check("warn", f.blank_planes, f"{f.blank_planes} of {f.planes} planes blank")
    return Check("pass", f.blank_planes)


def uniformity(f: ChannelFacts, th: Thresholds, *, padding: bool) -> Check:
    """Illumination uniformity, where the foreground fills the field."""
    if f.uniformity_pct is None:
        return Check("n/a", None, "no signal")
    if f.low < 0:
        return Check("n/a", None, "values below zero: region means are not intensities")
    if padding:
        return Check("n/a", None, "padding in the field: regions are not comparable")
    if f.coverage < th.uniformity_min_coverage:
        return Check(
            "n/a",
            None,
            f"foreground covers {_pct(f.coverage)} of the field "
            f"(needs {_pct(th.uniformity_min_coverage)})",
        )
    if f.empty > th.uniformity_max_empty:
        return Check(
            "n/a",
            None,
            f"{_pct(f.empty)} of the field is empty (cells all 0): regions are not comparable",
        )
    flag = grade(f.uniformity_pct, th.uniformity_warn, th.uniformity_fail, low=True)
    reason = (
        f"darkest region at {f.uniformity_pct:.3g} % of the brightest" if flag != "pass" else ""
    )
    return Check(flag, f.uniformity_pct, reason)


def focus(f: ChannelFacts, th: Thresholds) -> Check:
    """Power-spectrum slope of the best-focus plane."""
    if f.focus_edge < th.focus_min_size:
        return Check("n/a", None, f"plane smaller than {th.focus_min_size} pixels")
    if f.best_slope is None:
        return Check("n/a", None, "no plane with signal")
    flag = grade(f.best_slope, th.focus_slope_warn, low=True)
    reason = f"best plane's spectrum slope {f.best_slope:.3g} (blurred)" if flag != "pass" else ""
    return Check(flag, f.best_slope, reason)


def channel_checks(f: ChannelFacts, th: Thresholds) -> dict[str, Check]:
    """Every image-quality check of one channel, in report order."""
    padding = is_padding(f, th) and f.zeros / f.count > th.zero_warn
    return {
        "saturation": saturation(f, th),
        "zero_clipping": zero_clipping(f, th),
        "bit_depth": bit_depth(f, th),
        "blank_planes": blank_planes(f, th),
        "uniformity": uniformity(f, th, padding=padding),
        "focus": focus(f, th),
    }


def as_json(checks: dict[str, Check]) -> CheckResults:
    """Return ``checks`` (name → flag) and ``reasons`` (name → line, for every non-pass flag)."""
    return {
        "checks": {k: c.flag for k, c in checks.items()},
        "reasons": {k: c.reason for k, c in checks.items() if c.reason},
    }
