"""How the channels of a series are shown: a label and a colour for each.

The final store's ``omero`` block (:mod:`bioingest.pyramid`) and the QC thumbnails and
page (:mod:`bioingest.qc`) use the same labels and colours.
"""

from __future__ import annotations

from bioingest.records import SeriesRecord

PALETTE = ["00FF00", "FF00FF", "00FFFF", "FF0000", "0000FF", "FFFF00"]
RGB = [("R", "FF0000"), ("G", "00FF00"), ("B", "0000FF")]


def display_channels(
    series: SeriesRecord | None, size_c: int, *, rgb: bool = False
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
