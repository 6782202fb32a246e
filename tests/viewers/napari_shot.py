"""Open OME-Zarr stores in napari with napari-ome-zarr and describe what it shows.

Run under a virtual display: ``xvfb-run -a python napari_shot.py OUT.json STORE=PNG ...``.
For each store it writes a canvas screenshot and records every layer's name, scale,
contrast limits, shape and the screenshot's pixel spread, as JSON in ``OUT.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import napari
import numpy as np
from PIL import Image


def describe(viewer: napari.Viewer, store: str, shot: Path) -> dict[str, object]:
    viewer.layers.clear()
    layers = viewer.open(store, plugin="napari-ome-zarr")
    viewer.reset_view()
    pixels = viewer.screenshot(str(shot), canvas_only=True, flash=False)
    grey = np.asarray(Image.fromarray(pixels).convert("L"), dtype=np.float64)
    return {
        "store": store,
        "layers": [
            {
                "name": layer.name,
                "scale": [float(s) for s in layer.scale],
                "contrast_limits": [float(v) for v in layer.contrast_limits],
                "shape": [int(n) for n in layer.data[0].shape]
                if layer.multiscale
                else [int(n) for n in layer.data.shape],
                "levels": len(layer.data) if layer.multiscale else 1,
                "visible": bool(layer.visible),
            }
            for layer in layers
        ],
        "screenshot": str(shot),
        "screenshot_std": float(grey.std()),
        "screenshot_distinct": len(np.unique(grey)),
    }


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    viewer = napari.Viewer(show=True)
    viewer.window.resize(800, 600)
    results = []
    for pair in argv[1:]:
        store, _, shot = pair.partition("=")
        results.append(describe(viewer, store, Path(shot)))
    viewer.close()
    out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
