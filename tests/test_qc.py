"""QC metrics on synthetic images with known answers, flags, policy, and all real samples."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
import zarr

from bioingest.arrays import Reader
from bioingest.pixelhash import pixel_hash
from bioingest.progress import Progress
from bioingest.qc import (
    Thresholds,
    _series_qc,
    power_log_log_slope,
    run_qc,
    thresholds_from_config,
)
from bioingest.qc_histogram import MAX_BINS, Histogram
from conftest import REPO, real_datasets, run_workflow

SIZE = 240
RNG = np.random.default_rng(42)


def box_blur(img: np.ndarray, k: int) -> np.ndarray:
    """Mean filter of width ``k`` (edges repeated), in float64."""
    padded = np.pad(img.astype(np.float64), k // 2, mode="edge")
    c = padded.cumsum(0).cumsum(1)
    c = np.pad(c, ((1, 0), (1, 0)))
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k])[: img.shape[0], : img.shape[1]] / (
        k * k
    )


def images() -> dict[str, np.ndarray]:
    """Synthetic ZYX uint16 stacks with known properties."""
    texture = RNG.integers(1000, 3000, (SIZE, SIZE)).astype(np.float64)
    saturated = RNG.integers(1000, 2000, (1, SIZE, SIZE), dtype=np.uint16)
    saturated.flat[RNG.choice(saturated.size, int(0.02 * saturated.size), replace=False)] = 65535
    blank = RNG.integers(500, 600, (3, SIZE, SIZE), dtype=np.uint16)
    blank[1] = 777
    focus = np.stack([texture, box_blur(texture, 9)]).round().astype(np.uint16)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    r2 = ((yy - SIZE / 2) ** 2 + (xx - SIZE / 2) ** 2) / (SIZE / 2) ** 2
    vignetted = (20000 * np.exp(-3 * r2))[None].round().astype(np.uint16) + 100
    uniform = np.full((1, SIZE, SIZE), 20000, dtype=np.uint16) + RNG.integers(
        0, 50, (1, SIZE, SIZE), dtype=np.uint16
    )
    narrow = RNG.integers(100, 201, (1, SIZE, SIZE), dtype=np.uint16)
    return {
        "saturated": saturated,
        "blank": blank,
        "focus": focus,
        "vignetted": vignetted,
        "uniform": uniform,
        "narrow": narrow,
    }


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    base = tmp_path_factory.mktemp("qc")
    data = images()
    inputs = _mkdir(base / "in")
    for name, stack in data.items():
        tifffile.imwrite(inputs / f"{name}.ome.tif", stack, ome=True, metadata={"axes": "ZYX"})
    out = base / "out"
    run_workflow(
        base / "w", {"input_dir": base / "in", "output_dir": out, "keep_intermediate": True}
    )
    return out, data


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _qc(out: Path, name: str) -> dict[str, Any]:
    return json.loads((out / name / "qc.json").read_text(encoding="utf-8"))


def _channel(out: Path, name: str) -> dict[str, Any]:
    channel: dict[str, Any] = _qc(out, name)["series"][0]["channels"][0]
    return channel


@pytest.mark.workflow
@pytest.mark.java
@pytest.mark.parametrize("name", list(images()))
def test_statistics_exact(synthetic: tuple[Path, dict[str, np.ndarray]], name: str) -> None:
    out, data = synthetic
    ch = _channel(out, name)
    values = data[name]
    assert ch["min"] == values.min() and ch["max"] == values.max()
    assert ch["mean"] == pytest.approx(values.mean(), abs=1e-6)
    assert ch["std"] == pytest.approx(values.std(), rel=1e-9)
    for key, q in (("median", 50), ("p0_1", 0.1), ("p99_9", 99.9)):
        assert ch[key] == np.percentile(values, q, method="inverted_cdf"), key
    assert ch["zero_fraction"] == 0.0
    assert _qc(out, name)["series"][0]["checks"]["fidelity"] == "pass"


@pytest.mark.workflow
@pytest.mark.java
def test_saturation(synthetic: tuple[Path, dict[str, np.ndarray]]) -> None:
    ch = _channel(synthetic[0], "saturated")
    assert ch["saturation_value"] == 65535
    assert ch["saturated_fraction"] == pytest.approx(0.02, abs=1e-12)
    assert ch["checks"]["saturation"] == "fail"
    assert _channel(synthetic[0], "uniform")["checks"]["saturation"] == "pass"


@pytest.mark.workflow
@pytest.mark.java
def test_blank_plane(synthetic: tuple[Path, dict[str, np.ndarray]]) -> None:
    ch = _channel(synthetic[0], "blank")
    assert ch["blank_planes"] == [[0, 1]]
    assert ch["checks"]["blank_planes"] == "warn"
    planes = _qc(synthetic[0], "blank")["series"][0]["planes"]
    assert [p["blank"] for p in planes] == [False, True, False]


@pytest.mark.workflow
@pytest.mark.java
def test_focus_sharp_vs_blurred(synthetic: tuple[Path, dict[str, np.ndarray]]) -> None:
    out, data = synthetic
    planes = _qc(out, "focus")["series"][0]["planes"]
    sharp, blurred = planes
    assert sharp["normalized_variance"] > 10 * blurred["normalized_variance"]
    assert sharp["power_log_log_slope"] > blurred["power_log_log_slope"]
    plane = data["focus"][0].astype(np.float64)
    expected = ((plane - plane.mean()) ** 2).sum() / (plane.size * plane.mean())
    assert sharp["normalized_variance"] == pytest.approx(expected, rel=1e-9)
    assert _channel(out, "focus")["best_focus_z"] == 0


def test_power_spectrum_slope_of_known_signal() -> None:
    """White noise has a flat spectrum (slope ~0); smoothing makes it steeply negative."""
    noise = RNG.normal(0, 1, (256, 256))
    assert power_log_log_slope(noise) == pytest.approx(0.0, abs=0.15)
    assert power_log_log_slope(box_blur(noise, 7)) < -1.5
    assert power_log_log_slope(np.ones((64, 64))) is None


def _uniformity(plane: np.ndarray) -> float:
    h, w = plane.shape
    ys, xs = [0, h // 3, 2 * h // 3, h], [0, w // 3, 2 * w // 3, w]
    means = [plane[ys[i] : ys[i + 1], xs[j] : xs[j + 1]].mean() for i in range(3) for j in range(3)]
    return 100 * min(means) / max(means)


@pytest.mark.workflow
@pytest.mark.java
def test_uniformity(synthetic: tuple[Path, dict[str, np.ndarray]]) -> None:
    out, data = synthetic
    vignetted, uniform = _channel(out, "vignetted"), _channel(out, "uniform")
    assert vignetted["uniformity_pct"] == pytest.approx(_uniformity(data["vignetted"][0]), abs=1e-3)
    assert vignetted["uniformity_pct"] < 20
    assert vignetted["checks"]["uniformity"] == "warn"
    assert uniform["uniformity_pct"] > 99
    assert uniform["checks"]["uniformity"] == "pass"


@pytest.mark.workflow
@pytest.mark.java
def test_bit_depth(synthetic: tuple[Path, dict[str, np.ndarray]]) -> None:
    narrow = _channel(synthetic[0], "narrow")
    assert (narrow["bits_used"], narrow["bits_available"]) == (7, 16)  # ceil(log2(101))
    assert narrow["checks"]["bit_depth"] == "warn"
    assert _channel(synthetic[0], "saturated")["checks"]["bit_depth"] == "pass"


@pytest.mark.workflow
@pytest.mark.java
def test_fidelity_catches_a_different_hash(
    synthetic: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    out, _ = synthetic
    record = json.loads((out / "uniform" / "metadata.json").read_text(encoding="utf-8"))
    record["series"][0]["pixel_sha256"]["value"] = "0" * 64
    changed = tmp_path / "metadata.json"
    changed.write_text(json.dumps(record), encoding="utf-8")
    qc = run_qc(
        out / "intermediate" / "uniform.zarr",
        changed,
        out / "uniform" / "uniform.ome.zarr",
        out=tmp_path / "qc.json",
        thumbnails=tmp_path / "thumbs",
        thresholds=Thresholds(),
    )
    assert qc["series"][0]["checks"]["fidelity"] == "fail"
    assert qc["status"] == "fail"


@pytest.mark.workflow
@pytest.mark.java
def test_thumbnails(synthetic: tuple[Path, dict[str, np.ndarray]]) -> None:
    from PIL import Image

    for name in images():
        png = synthetic[0] / name / "thumbnails" / "series-0.png"
        with Image.open(png) as img:
            assert img.mode == "RGB"
            assert img.size == (SIZE, SIZE)
            pixels = np.asarray(img)
    # Single channel: white (equal R, G, B) with percentile contrast reaching full scale.
    assert (pixels[..., 0] == pixels[..., 1]).all() and pixels.max() == 255


@pytest.mark.workflow
@pytest.mark.java
def test_qc_table(synthetic: tuple[Path, dict[str, np.ndarray]]) -> None:
    table = pd.read_csv(synthetic[0] / "summary" / "qc.tsv", sep="\t")
    assert len(table) == len(images())
    row = table[table.dataset == "saturated"].iloc[0]
    assert row.status == "fail"
    assert "saturation:fail" in row.problems
    assert row.saturated_fraction == pytest.approx(0.02)


@pytest.mark.workflow
@pytest.mark.java
def test_fail_policy_stop(tmp_path: Path) -> None:
    _mkdir(tmp_path / "in")
    tifffile.imwrite(tmp_path / "in" / "saturated.ome.tif", images()["saturated"], ome=True)
    tifffile.imwrite(tmp_path / "in" / "fine.ome.tif", images()["uniform"], ome=True)
    out = tmp_path / "out"
    proc = run_workflow(
        tmp_path / "w",
        {"input_dir": tmp_path / "in", "output_dir": out, "qc_fail_policy": "stop"},
        extra=["--keep-going"],
        check=False,
    )
    assert proc.returncode != 0
    log = (out / "logs" / "saturated" / "qc.log").read_text(encoding="utf-8")
    assert f"ERROR {out / 'saturated' / 'saturated.ome.zarr'}: QC failed: saturation" in log
    assert (out / "fine" / "qc.json").is_file()
    # The partial run still gets a report naming the failure.
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "QC failed: saturation" in report


@pytest.mark.workflow
@pytest.mark.java
@pytest.mark.slow
def test_real_samples_sane(real_run: Path) -> None:
    names = [d.name for d in real_datasets()]
    for name in names:
        qc = _qc(real_run, name)
        assert qc["status"] in ("pass", "warn", "fail")
        for s in qc["series"]:
            assert s["checks"]["fidelity"] == "pass", name
            assert (real_run / name / s["thumbnail"]).is_file()
            for ch in s["channels"]:
                assert ch["min"] <= ch["p0_1"] <= ch["median"] <= ch["p99_9"] <= ch["max"]
                assert ch["min"] <= ch["mean"] <= ch["max"]
                assert 0 <= ch["zero_fraction"] <= 1
                if ch["saturated_fraction"] is not None:
                    assert 0 <= ch["saturated_fraction"] <= 1
                if ch["uniformity_pct"] is not None:
                    assert 0 <= ch["uniformity_pct"] <= 100
                if ch["bits_used"] is not None:
                    assert 0 <= ch["bits_used"] <= ch["bits_available"] or ch[
                        "bits_available"
                    ] < math.log2(ch["max"] - ch["min"] + 1)
    table = pd.read_csv(real_run / "summary" / "qc.tsv", sep="\t")
    assert set(table.dataset) == set(names)
    shutil.rmtree(real_run / "intermediate", ignore_errors=True)


# Known answers of each applicability rule, on the QC functions directly (no workflow).


def measure(stack: np.ndarray, *, rgb: bool = False, **limits: Any) -> dict[str, Any]:
    """QC of one channel: a ZYX stack written to a Zarr array as (1,1,Z,Y,X)."""
    with tempfile.TemporaryDirectory() as tmp:
        array = zarr.create_array(tmp, shape=(1, 1, *stack.shape), dtype=stack.dtype)
        array[:] = stack[None, None]
        result, digest = _series_qc(
            Reader(Path(tmp), workers=1),
            None,
            [("c", "FFFFFF")],
            Thresholds(**limits),
            Progress("t", 1),
            rgb=rgb,
        )
    assert digest == pixel_hash(stack[None, None])
    channel: dict[str, Any] = result["channels"][0]
    return channel


def blobs(size: int, centres: list[tuple[int, int]], radius: float) -> np.ndarray:
    """Sum of Gaussian spots of peak 1."""
    yy, xx = np.mgrid[0:size, 0:size]
    out = np.zeros((size, size))
    for cy, cx in centres:
        out += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
    return out


def test_sparse_image_has_no_uniformity() -> None:
    """One cell on a dark field: too little foreground to judge the illumination."""
    stack = (100 + 3000 * blobs(SIZE, [(60, 80)], 12))[None].round().astype(np.uint16)
    ch = measure(stack)
    assert ch["checks"]["uniformity"] == "n/a"
    assert ch["reasons"]["uniformity"].startswith("foreground covers ")
    assert ch["foreground_coverage"] < 0.1
    # The same spot on a bright, evenly lit field is judged (and passes).
    field = (20000 + 3000 * blobs(SIZE, [(60, 80)], 12))[None].round().astype(np.uint16)
    assert measure(field)["checks"]["uniformity"] == "pass"


def mosaic() -> np.ndarray:
    """Two tiles of textured data (400..1400) stitched with zero padding at the corners."""
    data = RNG.integers(400, 1400, (1, SIZE, SIZE), dtype=np.uint16)
    data[:, :80, 160:] = 0
    data[:, 160:, :96] = 0
    return data


def test_mosaic_padding_is_not_clipping() -> None:
    data = mosaic()
    ch = measure(data)
    zero_fraction = (80 * 80 + 80 * 96) / SIZE**2
    assert ch["zero_fraction"] == pytest.approx(zero_fraction, abs=1e-12)
    assert ch["checks"]["zero_clipping"] == "n/a"
    assert ch["reasons"]["zero_clipping"] == (
        f"zeros are padding: {100 * zero_fraction:.3g} % of pixels at 0 with no data below "
        f"0.25 × the median {np.median(data[data > 0]):g}"
    )
    assert ch["checks"]["uniformity"] == "n/a"
    assert ch["reasons"]["uniformity"] == "padding in the field: regions are not comparable"


def test_empty_corner_has_no_uniformity() -> None:
    """A deskewed light-sheet volume: a triangle of zeros leaves part of the field empty.

    The edge of the triangle meets dim data (no gap above zero, so not padding).
    """
    rng = np.random.default_rng(3)
    data = rng.integers(1, 2000, (1, SIZE, SIZE)).astype(np.uint16)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    data[0][yy + xx < SIZE // 2] = 0
    ch = measure(data)
    empty = ch["empty_fraction"]
    assert 0.1 < empty < float((data == 0).mean())
    assert ch["checks"]["uniformity"] == "n/a"
    assert ch["reasons"]["uniformity"] == (
        f"{100 * empty:.3g} % of the field is empty (cells all 0): regions are not comparable"
    )
    assert ch["checks"]["zero_clipping"] == "pass"


def test_background_subtracted_floor_is_not_clipping() -> None:
    """Bright cells on a background whose noise was subtracted to a floor of zeros."""
    background = RNG.normal(100, 20, (SIZE, SIZE))
    cells = 3000 * blobs(SIZE, [(50, 50), (120, 170), (190, 60)], 9)
    stack = np.clip(background + cells - 130, 0, None)[None].round().astype(np.uint16)
    ch = measure(stack)
    assert ch["zero_fraction"] > 0.5
    assert ch["checks"]["zero_clipping"] == "pass"
    assert ch["reasons"]["zero_clipping"].startswith("background-subtracted floor: ")


def test_clipped_image_still_fails() -> None:
    """A field full of signal whose offset was set too low: zeros inside the foreground."""
    rng = np.random.default_rng(7)
    texture = box_blur(rng.integers(0, 2000, (SIZE, SIZE)).astype(np.float64), 3)
    stack = np.clip(texture - 1100, 0, None)[None].round().astype(np.uint16)
    ch = measure(stack)
    clipped = float((stack == 0).mean())
    assert clipped > 0.6
    assert ch["checks"]["zero_clipping"] == "fail"
    assert 0.5 < ch["foreground_zero_fraction"] <= clipped
    assert ch["reasons"]["zero_clipping"].endswith("of foreground pixels clipped at 0")


def test_rgb_has_no_saturation_or_clipping() -> None:
    stack = np.full((1, 64, 64), 255, dtype=np.uint8)
    stack[:, :10] = 0
    ch = measure(stack, rgb=True)
    assert ch["checks"]["saturation"] == ch["checks"]["zero_clipping"] == "n/a"
    assert measure(stack)["checks"]["saturation"] == "fail"


@pytest.mark.parametrize("dtype", ["uint32", "int32", "float32", "float64"])
def test_wide_pixel_types(dtype: str) -> None:
    """Check 32-bit integers and floats: every check graded or n/a, exact statistics.

    No histogram has one bin per possible value (uint32 once needed 32 GiB).
    """
    values = RNG.integers(0, 3_000_000_000, (2, 96, 96)).astype(np.float64)
    if dtype == "int32":
        values -= 1_500_000_000
    if dtype.startswith("float"):
        values = values / 1e6 - 100.0
    stack = values.astype(dtype)
    ch = measure(stack)
    assert ch["min"] == stack.min() and ch["max"] == stack.max()
    assert ch["mean"] == pytest.approx(stack.astype(np.float64).mean(), rel=1e-9)
    width = (float(stack.max()) - float(stack.min())) / 65536
    for key, q in (("median", 50), ("p0_1", 0.1), ("p99_9", 99.9)):
        assert abs(ch[key] - np.percentile(stack, q, method="inverted_cdf")) <= width, key
    assert set(ch["checks"]) == {
        "saturation",
        "zero_clipping",
        "bit_depth",
        "blank_planes",
        "uniformity",
        "focus",
    }
    for name, flag in ch["checks"].items():
        assert flag in ("pass", "warn", "fail", "n/a")
        assert (flag == "pass") or ch["reasons"][name], name
    if dtype.startswith("float"):
        assert ch["reasons"]["saturation"] == "floating-point data have no detector maximum"
        assert ch["reasons"]["zero_clipping"].startswith("values below zero")
    else:
        assert ch["reasons"]["bit_depth"] == (
            "32-bit integers, no detector bit depth (SignificantBits unknown)"
        )


@pytest.mark.parametrize("tile", [16, 24, 1024])
def test_region_sums_of_counted_tiles_equal_the_general_path(tile: int) -> None:
    """uint16 tiles take their region sum from their counts when inside one ninth.

    Tiles of 16 lie inside the ninths of a 240-pixel plane, tiles of 24 partly across
    them, a tile of 1024 covers all nine. int32 data take the general (float) path.
    """
    rng = np.random.default_rng(11)
    stack = (20000 + 3000 * blobs(SIZE, [(60, 170), (200, 40)], 30))[None].round()
    stack = stack + rng.integers(0, 500, stack.shape)
    counted = measure(stack.astype(np.uint16), tile_size=tile)
    general = measure(stack.astype(np.int32), tile_size=tile)
    assert counted["uniformity_pct"] is not None
    assert counted["uniformity_pct"] == general["uniformity_pct"]
    assert counted["mean"] == general["mean"]


def test_small_integer_range_keeps_exact_quantiles() -> None:
    """uint32 labels 0..300 get one bin per value: exact median and percentiles."""
    stack = RNG.integers(0, 301, (1, 64, 64)).astype(np.uint32)
    ch = measure(stack)
    assert ch["histogram_exact"] is True
    for key, q in (("median", 50), ("p0_1", 0.1), ("p99_9", 99.9)):
        assert ch[key] == np.percentile(stack, q, method="inverted_cdf"), key


def test_config_defaults_are_the_thresholds() -> None:
    """config/config.yaml and the verb's defaults say the same, key by key."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    assert thresholds_from_config(config) == Thresholds()
    keys = {k[3:] for k in config if k.startswith("qc_") and k != "qc_fail_policy"}
    assert keys == {f.name for f in dataclasses.fields(Thresholds)} - {"tile_size"}


def test_histogram_bins_are_bounded() -> None:
    hist = Histogram.for_range(0.0, 4.0e9, integer=True)
    assert hist.counts.size == MAX_BINS
    hist.add(np.array([0, 4_000_000_000, 2_000_000_000], dtype=np.uint32))
    assert hist.counts.sum() == 3 and hist.counts[0] == 1 and hist.counts[-1] == 1
    assert Histogram.for_range(-5.0, 5.0, integer=True).counts.size == 11


@pytest.mark.workflow
@pytest.mark.java
@pytest.mark.slow
def test_real_examples_of_the_issue(real_run: Path) -> None:
    """Check the two examples QC used to flag wrongly.

    They are a single cell on a zero background, and the zero padding of a stitched mosaic
    (its third series).
    """
    cell = _channel(real_run, "czi_CellDivision_T3_Z6_CH1_X300_Y200_DCV_ZSTD")
    assert cell["zero_fraction"] > 0.5
    assert cell["checks"]["zero_clipping"] == "pass"
    assert cell["reasons"]["zero_clipping"].startswith("background-subtracted floor: ")
    assert cell["checks"]["uniformity"] == "n/a"
    assert cell["reasons"]["uniformity"].startswith("foreground covers ")
    mosaic = _qc(real_run, "czi_S3_1Pos_2Mosaic_T2Z3_CH2_sm")["series"][2]
    for ch in mosaic["channels"]:
        assert ch["checks"]["zero_clipping"] == "n/a"
        assert ch["reasons"]["zero_clipping"].startswith("zeros are padding: ")
        assert ch["checks"]["uniformity"] == "n/a"
    page = (real_run / "czi_S3_1Pos_2Mosaic_T2Z3_CH2_sm" / "qc.html").read_text(encoding="utf-8")
    store = "czi_S3_1Pos_2Mosaic_T2Z3_CH2_sm/czi_S3_1Pos_2Mosaic_T2Z3_CH2_sm.ome.zarr"
    for i in range(3):
        assert f"napari --plugin napari-ome-zarr {store}/{i}</code>" in page
        assert f'<a href="czi_S3_1Pos_2Mosaic_T2Z3_CH2_sm.ome.zarr/{i}/">' in page


@pytest.mark.java
@pytest.mark.slow
def test_calibration_table_is_current() -> None:
    """Check that docs/qc.md's calibration table is what qc_calibration.py generates now.

    benchmarks/qc_calibration.py runs every real file through convert, pyramid, metadata
    and run_qc, which takes about a minute.
    """
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "qc_calibration.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == "docs/qc.md up to date\n"
