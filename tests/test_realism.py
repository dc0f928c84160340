"""Realism report: features of small synthetic arrays against values worked out by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from core.__main__ import main
from core.realism import (
    QUANTILE_LEVELS,
    CaseFeatures,
    compare,
    compute_case_features,
    count_components,
    edge_shell,
    highpass,
    kmeans_1d,
    rim_thickness_mm,
    shape_features,
    surface_area_mm2,
    tissue_classes,
)
from tests.conftest import save, write_phantom_cohort

MODEL = Path(__file__).resolve().parents[1] / "models" / "BraTS"
LINEAR_LANDMARKS = {s: list(np.linspace(0, 100, 13)) for s in ("t1", "t1c", "t2", "flair")}


def test_cube_volume_and_surface_with_anisotropic_voxels():
    labels = np.zeros((14, 14, 14), np.uint8)
    labels[2:12, 2:12, 2:12] = 3  # a 10-voxel enhancing cube
    spacing = (1.0, 2.0, 3.0)
    # Faces: 2 * (20 * 30) across x + 2 * (10 * 30) across y + 2 * (10 * 20) across z = 2200 mm^2.
    assert surface_area_mm2(labels > 0, spacing) == pytest.approx(2200.0)
    out = shape_features(labels, np.ones_like(labels, bool), spacing)
    assert out["shape.et_ml"] == out["shape.tc_ml"] == out["shape.wt_ml"] == pytest.approx(6.0)  # 1000 * 6 mm^3
    assert out["shape.wt_surface_per_volume_per_mm"] == pytest.approx(2200 / 6000)
    assert out["shape.wt_components"] == 1 and out["shape.necrosis_fraction_tc"] == 0 and out["shape.wt_over_tc"] == 1


def test_components_use_26_connectivity():
    mask = np.zeros((10, 10, 10), bool)
    mask[1:3, 1:3, 1:3] = True
    mask[6:8, 6:8, 6:8] = True
    assert count_components(mask) == 2
    mask[3, 3, 3] = True  # touches the first cube at a corner only
    mask[4, 4, 4] = True
    mask[5, 5, 5] = True  # ... and the second
    assert count_components(mask) == 1


def test_location_necrosis_fraction_and_oedema_extent():
    labels = np.zeros((41, 41, 41), np.uint8)
    brain = np.zeros_like(labels, bool)
    brain[0:41, 0:41, 0:41] = True
    labels[7:14, 17:24, 27:34] = 2  # 7^3 oedema cube centred at (10, 20, 30)
    labels[9:12, 19:22, 29:32] = 3  # 3^3 enhancing
    labels[10, 20, 30] = 1  # one voxel of necrosis in the middle
    out = shape_features(labels, brain, (1.0, 1.0, 1.0))
    assert [out[f"shape.wt_centroid_{a}"] for a in "xyz"] == pytest.approx([10 / 40, 20 / 40, 30 / 40])
    assert out["shape.wt_depth_mm"] == pytest.approx(11.0)  # (10, 20, 30) is 11 voxels from x = -1
    assert out["shape.necrosis_fraction_tc"] == pytest.approx(1 / 27)
    assert out["shape.wt_over_tc"] == pytest.approx(343 / 27)
    assert out["shape.tc_ml"] == pytest.approx(0.027) and out["shape.wt_ml"] == pytest.approx(0.343)


def test_empty_tumour_gives_nan_not_errors():
    out = shape_features(np.zeros((8, 8, 8), np.uint8), np.ones((8, 8, 8), bool), (1.0, 1.0, 1.0))
    assert out["shape.wt_ml"] == 0
    assert all(math.isnan(out[k]) for k in ("shape.wt_components", "shape.et_rim_thickness_mm", "shape.wt_over_tc"))


@pytest.mark.parametrize("spacing, layers", [(1.0, 3), (1.5, 2)])
def test_edge_shell_is_the_outer_3_mm(spacing, layers):
    mask = np.zeros((30, 30, 30), bool)
    mask[5:25, 5:25, 5:25] = True
    shell = edge_shell(mask, (spacing,) * 3)
    inner = 20 - 2 * layers
    assert shell.sum() == 20**3 - inner**3
    assert not shell[5 + layers : 25 - layers, 5 + layers : 25 - layers, 5 + layers : 25 - layers].any()


@pytest.mark.parametrize("spacing", [1.0, 2.0])
def test_rim_thickness_of_a_five_voxel_slab(spacing):
    mask = np.zeros((30, 30, 15), bool)
    mask[:, :, 5:10] = True  # 5 voxels thick, touching the grid's x/y borders (counted as outside)
    assert rim_thickness_mm(mask, (spacing,) * 3) == pytest.approx(5 * spacing)


def test_kmeans_splits_three_tissues():
    rng = np.random.default_rng(0)
    values = np.concatenate([10 + rng.uniform(-1, 1, 100), 20 + rng.uniform(-1, 1, 200), 40 + rng.uniform(-1, 1, 300)])
    centres = kmeans_1d(values)
    assert centres == pytest.approx([values[:100].mean(), values[100:300].mean(), values[300:].mean()])
    image = values.reshape(6, 10, 10)
    classes = tissue_classes(image, np.ones(image.shape, bool))
    assert np.array_equal(classes.ravel(), np.repeat([1, 2, 3], [100, 200, 300]))


def test_highpass_std_of_a_checkerboard():
    grid = np.indices((24, 24, 24)).sum(0)
    image = (10 + 2 * (-1.0) ** grid).astype(np.float32)
    # scipy's Gaussian (sigma 1, truncate 4): 9 taps exp(-k^2/2), normalised; a +-1 alternation along
    # one axis is multiplied by sum_k w_k (-1)^k, so the 3-D checkerboard by that cubed.
    k = np.arange(-4, 5)
    w = np.exp(-0.5 * k**2) / np.exp(-0.5 * k**2).sum()
    f = float((w * (-1.0) ** k).sum())
    details = highpass(image, np.ones(image.shape, bool), (1.0, 1.0, 1.0), sigma_mm=1.0)
    inner = details[6:18, 6:18, 6:18]  # 12^3: as many +1 as -1, away from the reflected border
    assert float(inner.std()) == pytest.approx(2 * (1 - f**3), rel=1e-5)


def test_bright_rim_reads_in_brain_std_and_missing_sequences_give_nan():
    brain = np.zeros((36, 36, 36), bool)
    brain[3:33, 3:33, 3:33] = True
    shell = edge_shell(brain, (1.0, 1.0, 1.0))
    images = np.stack([np.where(shell, 500.0, 100.0) * brain] * 4).astype(np.float32)
    images[2] = 0  # T2 missing
    features = compute_case_features(images, [True, True, False, True], np.zeros(brain.shape, np.uint8),
                                     (1.0, 1.0, 1.0), LINEAR_LANDMARKS)  # fmt: skip
    # Two levels, a fraction p of voxels in the shell; whitening makes their gap 1 / sqrt(p (1 - p)).
    p = (30**3 - 24**3) / 30**3
    assert p < 0.5  # so the brain median is the inner level
    for sequence in ("t1", "t1c", "flair"):
        assert features.values[f"edge.{sequence}"] == pytest.approx(1 / math.sqrt(p * (1 - p)), rel=1e-4)
        assert features.values[f"intensity.normal.{sequence}.iqr"] == pytest.approx(1 / math.sqrt(p * (1 - p)))
    assert math.isnan(features.values["edge.t2"]) and math.isnan(features.values["intensity.normal.t2.median"])
    assert features.values["shape.wt_ml"] == 0


def test_distances_per_case_and_pooled():
    def case(value, shift=0.0):
        return CaseFeatures("c", {"shape.wt_ml": value, "intensity.normal.t1.median": 0.0},
                            {"intensity.normal.t1": np.linspace(0, 1, len(QUANTILE_LEVELS)) + shift})  # fmt: skip

    rows = {r.feature: r for r in compare([case(v) for v in (0, 1, 2, 3)], [case(v, 0.5) for v in (1, 2, 3, 4)])}
    # W1 between {0,1,2,3} and {1,2,3,4} is 1; the real std is sqrt(1.25).
    wt = rows["shape.wt_ml"]
    assert wt.distance == pytest.approx(1 / math.sqrt(1.25))
    assert (wt.real_mean, wt.real_median, wt.synthetic_mean, wt.n_real) == (1.5, 1.5, 2.5, 4)
    # Pooled quantiles shifted by 0.5; the real pooled IQR of linspace(0, 1) is 0.5 -> 0.5 / (0.5 / 1.349).
    assert rows["intensity.normal.t1.median"].distance == pytest.approx(1.349)
    assert list(rows)[0] == "intensity.normal.t1.median"  # worst first


def test_cli_cohort_against_itself_is_at_distance_zero(tmp_path, capsys):
    cohort = write_phantom_cohort(tmp_path / "cohort", n=2, size=32).parent
    out = tmp_path / "report"
    assert main(["realism", "--real", str(cohort), "--synthetic", str(cohort), "--model", str(MODEL),
                 "--out", str(out)]) == 0  # fmt: skip
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert "realism" in captured.err  # the progress bar
    assert report["real_cases"] == ["P0", "P1"] and report == json.loads((out / "realism.json").read_text())
    distances = [row["distance"] for row in report["features"] if math.isfinite(row["distance"])]
    assert len(distances) > 50 and max(distances) == pytest.approx(0, abs=1e-9)
    assert (out / "montage.png").stat().st_size > 1000 and (out / "realism.csv").is_file()
    assert "| 1 |" in (out / "realism.md").read_text()


def test_cli_bad_input_is_a_one_line_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["realism", "--real", str(empty), "--synthetic", str(empty), "--model", str(MODEL)]) == 2
    err = capsys.readouterr().err
    assert str(empty) in err and "Traceback" not in err

    folder = tmp_path / "nolabels" / "case1"
    folder.mkdir(parents=True)
    volume = np.zeros((8, 8, 8), np.int16)
    volume[2:6, 2:6, 2:6] = 100
    for suffix in ("t1", "t1ce", "t2", "flair"):
        save(volume, folder / f"case1_{suffix}.nii.gz")
    assert main(["realism", "--real", str(folder.parent), "--synthetic", str(empty), "--model", str(MODEL)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and str(folder) in lines[0] and "no segmentation" in lines[0]
