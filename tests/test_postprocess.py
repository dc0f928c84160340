"""keep_main_lesions on hand-built label maps: boxes at known depths inside a box-shaped brain."""

from __future__ import annotations

import numpy as np
import pytest

from core.postprocess import clean_prediction, deep_voxels, keep_main_lesions

SHAPE = (60, 60, 40)


def brain_box(margin=5):
    """A brain that is a box: a voxel lies min(x - 4, 55 - x, ...) voxels from the nearest one outside."""
    brain = np.zeros(SHAPE, bool)
    brain[margin:-margin, margin:-margin, margin:-margin] = True
    return brain


def scene():
    """Main lesion 10^3 deep inside; a second lesion 8^3 (51 % of it, kept); a deep speck 5^3
    (12.5 %: dropped for its share); a rim slab of 1,500 voxels along the brain's edge (no voxel
    6 mm deep)."""
    labels = np.zeros(SHAPE, np.uint8)
    labels[15:25, 15:25, 15:25] = 2
    labels[18:22, 18:22, 18:22] = 3  # the core inside the main lesion: one component with it
    labels[35:43, 35:43, 15:23] = 2
    labels[28:33, 14:19, 16:21] = 1  # 10+ voxels from every edge
    labels[5:8, 5:55, 10:20] = 2  # voxels 1-3 mm inside the brain's edge
    return labels


def test_drops_speck_and_rim_keeps_both_lesions():
    labels = scene()
    expected = labels.copy()
    expected[28:33, 14:19, 16:21] = 0
    expected[5:8, 5:55, 10:20] = 0
    result = keep_main_lesions(labels, brain_box())
    np.testing.assert_array_equal(result.labels, expected)
    assert (result.kept, result.dropped) == (2, 2)
    assert result.dropped_ml == pytest.approx((125 + 3 * 50 * 10) / 1000)
    assert labels[30, 15, 18] == 1  # the input is left as it was
    assert keep_main_lesions(labels, brain_box(), share=0.1).dropped == 1  # the speck stays at 10 %


def test_share_one_keeps_the_main_lesion_alone():
    labels = scene()
    result = keep_main_lesions(labels, brain_box(), share=1.0)
    main = np.zeros(SHAPE, bool)
    main[15:25, 15:25, 15:25] = True
    np.testing.assert_array_equal(result.labels > 0, main)
    assert result.dropped == 3


def test_rim_counts_in_mm_with_anisotropic_spacing():
    """A lesion whose deepest voxels are 5 voxels from the edge along z: 5 mm at 1 mm (all in the
    rim, so ranked by whole volume and beaten by a larger rim lesion), 10 mm at 2 mm slices."""
    brain = brain_box()
    labels = np.zeros(SHAPE, np.uint8)
    labels[25:35, 25:35, 5:10] = 2  # z 5..9: 1..5 voxels inside the brain along z
    labels[6:9, 6:54, 6:30] = 2  # larger, 2-4 voxels inside along x
    at_1mm = keep_main_lesions(labels, brain, (1, 1, 1))
    assert at_1mm.labels[30, 30, 7] == 0 and at_1mm.labels[7, 30, 10] == 2  # no deep voxel: by volume
    at_2mm = keep_main_lesions(labels, brain, (1, 1, 2))
    assert at_2mm.labels[30, 30, 7] == 2 and at_2mm.labels[7, 30, 10] == 0
    assert at_2mm.dropped_ml == pytest.approx(3 * 48 * 24 * 2 / 1000)


def test_a_deep_speck_does_not_outrank_a_lesion_at_the_edge():
    """Under 0.1 mL of deep volume counts as none: a 4.5 mL lesion 1-3 mm inside the edge stays
    (ranked by whole volume), a 1-voxel speck deep inside goes."""
    labels = np.zeros(SHAPE, np.uint8)
    labels[5:8, 5:55, 5:35] = 2
    labels[30, 30, 20] = 1
    result = keep_main_lesions(labels, brain_box())
    assert result.labels[6, 30, 20] == 2 and result.labels[30, 30, 20] == 0
    assert (result.kept, result.dropped, result.dropped_ml) == (1, 1, pytest.approx(0.001))


def test_deep_voxels_in_a_box_match_the_whole_volume():
    brain = brain_box()
    brain[15:35, 15:35, 0:40] = True  # a column reaching the volume's border: that border is outside
    whole = deep_voxels(brain, (1, 1, 1), 6.0)
    box = (slice(18, 40), slice(3, 31), slice(0, 12))
    np.testing.assert_array_equal(deep_voxels(brain, (1, 1, 1), 6.0, box), whole[box])
    assert whole[25, 25, 5] and not whole[25, 25, 4]  # 6 and 5 voxels from the border (index -1)
    assert whole[10, 30, 20] and not whole[9, 30, 20]  # 6 and 5 voxels from row 4, outside the brain


def test_empty_and_bad_input():
    empty = np.zeros(SHAPE, np.uint8)
    result = keep_main_lesions(empty, brain_box())
    assert (result.kept, result.dropped, result.labels.sum()) == (0, 0, 0)
    with pytest.raises(ValueError, match=r"labels have shape \(60, 60, 40\) but the brain mask has \(60, 60, 39\)"):
        keep_main_lesions(empty, brain_box()[..., :-1])
    with pytest.raises(ValueError, match="share must be in"):
        keep_main_lesions(empty, brain_box(), share=1.5)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.9, 1.2, 3.0)])
def test_deep_voxels_match_the_euclidean_distance_transform(spacing):
    from scipy import ndimage

    rng = np.random.default_rng(3)
    brain = ndimage.gaussian_filter(rng.normal(size=SHAPE), 4) > -0.02  # an irregular blob
    brain[:, :, :2] = brain[:, :2] = False
    expected = ndimage.distance_transform_edt(np.pad(brain, 1), sampling=spacing)[1:-1, 1:-1, 1:-1] >= 6.0
    np.testing.assert_array_equal(deep_voxels(brain, spacing, 6.0), expected)


def test_clean_prediction_on_a_case_read_from_3_mm_slices(tmp_path):
    """A case resampled to 1 mm on reading: the prediction is on the 3 mm grid it was read from, and
    so are the brain mask and the rim (a 2 x 2 x 1 speck in the brain's corner: 12 mm3)."""
    from core.infer import Prediction
    from core.io import read_case
    from tests.conftest import save

    images = np.zeros((4, 24, 24, 10), np.float32)
    images[:, 2:22, 2:22, 1:9] = np.random.default_rng(0).uniform(50, 100, (4, 20, 20, 8))
    for suffix, volume in zip(("t1", "t1ce", "t2", "flair"), images):
        save(volume, tmp_path / f"c_{suffix}.nii.gz", np.diag([1.0, 1.0, 3.0, 1.0]))
    case = read_case(tmp_path)
    assert case.original_grid is not None and case.shape != (24, 24, 10)
    labels = np.zeros((24, 24, 10), np.uint8)
    labels[8:16, 8:16, 3:7] = 2
    labels[2:4, 2:4, 4] = 2
    expected = labels.copy()
    expected[2:4, 2:4, 4] = 0
    cleaned, cleanup = clean_prediction(Prediction(labels, None, frozenset(), 1.0, "test", (0, 0, 0)), case)
    np.testing.assert_array_equal(cleaned.labels, expected)
    assert (cleanup.kept, cleanup.dropped, cleanup.dropped_ml) == (1, 1, pytest.approx(0.012))
