"""Metrics on analytic shapes (hand-derived values), random shapes against MONAI, empty masks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.metrics import (
    BRATS_MAX_HD95_MM,
    UNDEFINED,
    compute_region,
    dice,
    hd95,
    metric_text,
    sensitivity,
    surface,
    volume_ml,
)

ROOT = Path(__file__).resolve().parents[1]


def cube(shape, lo, hi):
    mask = np.zeros(shape, bool)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return mask


def test_two_cubes_shifted_with_anisotropic_spacing():
    # Two 10-voxel cubes, the second shifted by 4 voxels along x; spacing 2 x 1 x 3 mm.
    pred, ref = cube((30, 30, 30), (5, 5, 5), (15, 15, 15)), cube((30, 30, 30), (9, 5, 5), (19, 15, 15))
    spacing = (2.0, 1.0, 3.0)
    # Overlap 6 x 10 x 10 = 600 of 1000 each: Dice 0.6, sensitivity 0.6.
    assert dice(pred, ref) == pytest.approx(0.6) and sensitivity(pred, ref) == pytest.approx(0.6)
    assert volume_ml(pred, spacing) == pytest.approx(1000 * 6 / 1000)
    # Surfaces: 1000 - 8^3 = 488 voxels each. A pred surface voxel at x in 5..8 on the faces
    # y, z != inner is at distance (9 - x) * 2 mm from ref's x = 9 face, or 0 where it lies on
    # ref's surface. The x = 5 face (100 voxels) is 8 mm away, x = 6..8 ring voxels 6, 4, 2 mm.
    # More than 5 % of the 488 pred surface voxels are the x = 5 face (100 > 24.4), so the
    # directed 95th percentile is 8 mm, and by symmetry the other direction too.
    assert surface(pred).sum() == 488
    assert hd95(pred, ref, spacing) == pytest.approx(8.0)
    # Along z (3 mm voxels) the same shift is 12 mm.
    ref_z = cube((30, 30, 30), (5, 5, 9), (15, 15, 19))
    assert hd95(pred, ref_z, spacing) == pytest.approx(12.0)


def test_nested_spheres_hd95_equals_the_radius_gap():
    grid = np.indices((41, 41, 41)) - 20
    r = np.sqrt((grid**2).sum(0))
    inner, outer = r <= 8, r <= 12
    # Every outer surface voxel is about 4 voxels from the inner surface; the directed
    # percentiles are within one voxel of the 4 mm gap.
    assert 3.0 <= hd95(inner, outer) <= 5.0
    assert dice(inner, outer) == pytest.approx(2 * inner.sum() / (inner.sum() + outer.sum()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_shapes_match_monai(seed):
    from monai.metrics import compute_hausdorff_distance
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    shape = (40, 36, 32)
    pred = ndimage.gaussian_filter(rng.random(shape), 2) > 0.5
    ref = ndimage.gaussian_filter(rng.random(shape), 2) > 0.5
    spacing = (1.0, 1.5, 2.5)
    onehot = lambda m: torch.from_numpy(np.stack([~m, m])[None].astype(np.float32))  # noqa: E731
    expected = compute_hausdorff_distance(onehot(pred), onehot(ref), percentile=95, spacing=spacing)
    assert hd95(pred, ref, spacing) == pytest.approx(float(expected[0, 0]), rel=1e-5)


def test_empty_mask_policies():
    empty, blob = np.zeros((10, 10, 10), bool), cube((10, 10, 10), (2, 2, 2), (5, 5, 5))
    assert np.isnan(dice(empty, empty)) and dice(empty, empty, "brats") == 1.0
    assert dice(blob, empty) == 0.0 and dice(blob, empty, "brats") == 0.0
    assert np.isnan(sensitivity(blob, empty)) and sensitivity(blob, empty, "brats") == 0.0
    assert sensitivity(empty, empty, "brats") == 1.0 and sensitivity(empty, blob) == 0.0
    assert np.isnan(hd95(blob, empty)) and hd95(blob, empty, empty="brats") == BRATS_MAX_HD95_MM
    assert hd95(empty, empty, empty="brats") == 0.0
    with pytest.raises(ValueError, match="empty-mask policy"):
        dice(blob, blob, "zero")


def test_regions_from_canonical_labels():
    ref = np.zeros((12, 12, 12), np.uint8)
    ref[2:8, 2:8, 2:8] = 2  # oedema
    ref[3:7, 3:7, 3:7] = 3  # enhancing
    ref[4:6, 4:6, 4:6] = 1  # necrosis
    pred = ref.copy()
    pred[pred == 1] = 3  # necrosis called enhancing: tumour core still perfect
    assert compute_region(pred, ref, "tc").dice == 1.0
    et = compute_region(pred, ref, "et")
    assert et.dice == pytest.approx(2 * 56 / (64 + 56)) and et.volume_ref_ml == pytest.approx(0.056)
    assert compute_region(pred, ref, "wt").volume_diff_ml == 0.0


def test_metrics_cli(tmp_path):
    import nibabel as nib

    ref = np.zeros((20, 20, 20), np.uint8)
    ref[5:15, 5:15, 5:15] = 4
    pred = np.zeros_like(ref)
    pred[9:19, 5:15, 5:15] = 4
    for name, data in (("ref", ref), ("pred", pred)):
        nib.save(nib.Nifti1Image(data, np.diag([2.0, 1.0, 1.0, 1.0])), str(tmp_path / f"{name}.nii.gz"))
    out = subprocess.run([sys.executable, "-m", "core", "metrics", "--pred", str(tmp_path / "pred.nii.gz"),
                          "--ref", str(tmp_path / "ref.nii.gz"), "--region", "et"],
                         cwd=ROOT, capture_output=True, text=True, check=True)  # fmt: skip
    result = json.loads(out.stdout)
    assert result["dice"] == pytest.approx(0.6) and result["hd95"] == pytest.approx(8.0)
    assert result["volume_ref_ml"] == pytest.approx(2.0) and result["volume_diff_ml"] == 0.0


def test_an_undefined_metric_reads_n_a_on_the_pages():
    empty = np.zeros((8, 8, 8), bool)
    blob = empty.copy()
    blob[2:5, 2:5, 2:5] = True
    assert metric_text(hd95(empty, blob), 1) == UNDEFINED == "n/a"  # nothing predicted: no distance
    assert metric_text(None, 1) == UNDEFINED  # a results table's NULL
    assert metric_text(2.345, 1) == "2.3" and metric_text(0.87149, 3) == "0.871"
