"""Normalisation keeps missing channels at zero; Nyul + whitening; crop and undo."""

import numpy as np
import pytest

from core.preprocess import PERCENTILES, brain_crop, brain_mask, fit_landmarks, normalise
from tests.conftest import phantom


def case_pair():
    images, _ = phantom((30, 30, 30), (15, 15, 15))
    edge = np.indices(images.shape[1:])
    brain = np.sqrt(sum((g - 14.5) ** 2 for g in edge)) < 13
    images = (images * brain).astype(np.float32)
    return images, brain


def test_landmarks_are_the_paper_percentiles():
    # TorchIO adds the quartiles; the mapping itself uses 1, 10, 20, ..., 90, 99.
    assert PERCENTILES.tolist() == [1, 10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 99]


def test_missing_channel_and_background_stay_exactly_zero():
    images, brain = case_pair()
    complete = np.ones(4, bool)
    landmarks = fit_landmarks([(images, complete), (images * 1.3 + brain * 10, complete)])
    available = np.array([True, True, False, True])
    images[2] = 0
    out = normalise(images, available, landmarks)
    assert np.all(out[2] == 0)  # missing: exactly zero, not merely small
    assert np.all(out[:, ~brain] == 0)
    for channel in (0, 1, 3):
        values = out[channel][brain]
        assert values.mean() == pytest.approx(0, abs=1e-5) and values.std() == pytest.approx(1, abs=1e-4)


def test_linear_intensity_changes_normalise_to_the_same_image():
    # Nyul maps landmarks piecewise linearly and whitening removes scale: a*x + b inside the
    # brain gives the same output.
    images, brain = case_pair()
    available = np.ones(4, bool)
    landmarks = fit_landmarks([(images, available)])
    scaled = np.where(brain, images * 2.5 + 40, 0).astype(np.float32)
    np.testing.assert_allclose(normalise(images, available, landmarks), normalise(scaled, available, landmarks),
                               atol=1e-4)  # fmt: skip


def test_fit_landmarks_needs_every_sequence_somewhere():
    images, _ = case_pair()
    with pytest.raises(ValueError, match=r"\['flair'\] missing from every training case"):
        fit_landmarks([(images, np.array([True, True, True, False]))])


def test_crop_and_undo_round_trip():
    mask = np.zeros((20, 22, 24), bool)
    mask[5:9, 6:15, 3:4] = True
    crop = brain_crop(mask, margin=2)
    assert crop.box == ((3, 11), (4, 17), (1, 6))
    volume = np.random.default_rng(0).random((2, 20, 22, 24)).astype(np.float32) * mask
    np.testing.assert_array_equal(crop.undo(crop.apply(volume)), volume)
    assert brain_mask(volume).sum() == mask.sum()


def test_nyul_maths_equal_torchio():
    # Our port of histogram standardisation against TorchIO's own functions.
    from torchio.transforms.preprocessing.intensity import histogram_standardization as tio

    from core.preprocess import average_mapping, standardise

    rng = np.random.default_rng(3)
    database = np.sort(rng.gamma(2.0, 50.0, (7, len(PERCENTILES))), axis=1)
    np.testing.assert_array_equal(average_mapping(database), tio._get_average_mapping(database))
    values = np.concatenate([rng.gamma(3.0, 40.0, 5000), np.full(300, 12.0)]).astype(np.float32)
    landmarks = average_mapping(database)
    import torch

    expected = tio._normalize(torch.from_numpy(values), landmarks, None).numpy()
    np.testing.assert_array_equal(standardise(values, landmarks), expected)
    assert tio._get_percentiles((1, 99)).tolist() == PERCENTILES.tolist()
