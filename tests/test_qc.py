"""QC metrics on synthetic images with known answers, flags, policy, and all real samples."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tifffile

from bioingest.qc import Thresholds, power_log_log_slope, run_qc
from conftest import real_datasets, run_workflow

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


def test_saturation(synthetic: tuple[Path, dict[str, np.ndarray]]) -> None:
    ch = _channel(synthetic[0], "saturated")
    assert ch["saturation_value"] == 65535
    assert ch["saturated_fraction"] == pytest.approx(0.02, abs=1e-12)
    assert ch["checks"]["saturation"] == "fail"
    assert _channel(synthetic[0], "uniform")["checks"]["saturation"] == "pass"


def test_blank_plane(synthetic: tuple[Path, dict[str, np.ndarray]]) -> None:
    ch = _channel(synthetic[0], "blank")
    assert ch["blank_planes"] == [[0, 1]]
    assert ch["checks"]["blank_planes"] == "warn"
    planes = _qc(synthetic[0], "blank")["series"][0]["planes"]
    assert [p["blank"] for p in planes] == [False, True, False]


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


def test_uniformity(synthetic: tuple[Path, dict[str, np.ndarray]]) -> None:
    out, data = synthetic
    vignetted, uniform = _channel(out, "vignetted"), _channel(out, "uniform")
    assert vignetted["uniformity_pct"] == pytest.approx(_uniformity(data["vignetted"][0]), abs=1e-3)
    assert vignetted["uniformity_pct"] < 20
    assert vignetted["checks"]["uniformity"] == "warn"
    assert uniform["uniformity_pct"] > 99
    assert uniform["checks"]["uniformity"] == "pass"


def test_bit_depth(synthetic: tuple[Path, dict[str, np.ndarray]]) -> None:
    narrow = _channel(synthetic[0], "narrow")
    assert (narrow["bits_used"], narrow["bits_available"]) == (7, 16)  # ceil(log2(101))
    assert narrow["checks"]["bit_depth"] == "warn"
    assert _channel(synthetic[0], "saturated")["checks"]["bit_depth"] == "pass"


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


def test_qc_table(synthetic: tuple[Path, dict[str, np.ndarray]]) -> None:
    table = pd.read_csv(synthetic[0] / "summary" / "qc.tsv", sep="\t")
    assert len(table) == len(images())
    row = table[table.dataset == "saturated"].iloc[0]
    assert row.status == "fail"
    assert "saturation:fail" in row.problems
    assert row.saturated_fraction == pytest.approx(0.02)


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
