"""Domain randomisation of training windows (core/augment.py)."""

from __future__ import annotations

import numpy as np

from core.augment import Randomisation, randomise_window

ONLY_LABEL_SHIFTS = Randomisation(tissue_shift=0, curve=0, scale=0, bias=0, noise=0, slice_mm=1, shift_voxels=0)


def window(seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.normal(0, 1, (4, 21, 21, 21)).astype(np.float32)
    images[:, :3] = 0  # outside the brain
    images[2] = 0  # a missing sequence
    labels = np.zeros((21, 21, 21), np.uint8)
    labels[8:14, 8:14, 8:14] = 2
    labels[10:12, 10:12, 10:12] = 3
    return images, labels


def test_missing_channels_and_background_stay_exactly_zero():
    images, labels = window()
    before = images.copy()
    randomise_window(images, labels, [0, 1, 3], np.random.default_rng(1))
    assert not images[2].any()
    assert not images[:, :3].any()
    assert not np.array_equal(images[[0, 1, 3]], before[[0, 1, 3]])


def test_strength_zero_changes_nothing_and_draws_are_reproducible():
    images, labels = window()
    before = images.copy()
    assert randomise_window(images, labels, [0, 1, 3], np.random.default_rng(1), Randomisation(strength=0)) == {}
    np.testing.assert_array_equal(images, before)
    a, b = window()[0], window()[0]
    randomise_window(a, labels, [0, 1, 3], np.random.default_rng(5))
    randomise_window(b, labels, [0, 1, 3], np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)


def test_label_offsets_move_each_label_by_its_own_draw():
    images, labels = window()
    before = images.copy()
    drawn = randomise_window(images, labels, [0], np.random.default_rng(3), ONLY_LABEL_SHIFTS)
    # The first draws of the stream are the four label offsets (background fixed at 0).
    expected = np.random.default_rng(3).normal(0, ONLY_LABEL_SHIFTS.label_shift, 4).astype(np.float32)
    for label in (2, 3):
        np.testing.assert_allclose(images[0][labels == label] - before[0][labels == label], expected[label], atol=1e-6)
    brain = before[0] != 0
    np.testing.assert_allclose(images[0][brain & (labels == 0)], before[0][brain & (labels == 0)])
    assert drawn[0]["offsets"][2] == round(float(expected[2]), 3)


def test_reference_sequence_is_never_shifted():
    images, labels = window()
    config = Randomisation(label_shift=0, tissue_shift=0, curve=0, scale=0, bias=0, noise=0, slice_mm=1, shift_voxels=2)
    drawn = randomise_window(images, labels, [0, 1], np.random.default_rng(0), config)
    assert drawn[1]["shift"] == (0, 0, 0)
    np.testing.assert_array_equal(images[1], window()[0][1])


def test_input_labels_line_up_with_the_window_the_network_sees():
    from core.model import CONTEXT
    from core.sampling import TrainingVolume, extract_window, input_labels

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (40, 44, 30)).astype(np.uint8)
    images = np.repeat(labels[None].astype(np.float16), 4, axis=0)  # images carry the labels' values
    volume = TrainingVolume("x", images, labels, np.ones(4, bool), np.argwhere(labels > 0).astype(np.int32))
    for centre in (np.array([20, 22, 15]), np.array([2, 40, 1])):  # inside, and sticking out of the volume
        window, out = extract_window(volume, centre, 9)
        full = input_labels(volume, centre, 9)
        np.testing.assert_array_equal(full, window[0].astype(np.uint8))
        half = CONTEXT // 2
        np.testing.assert_array_equal(full[half:-half, half:-half, half:-half], out)
