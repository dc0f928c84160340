"""Normalisation that keeps missing sequences at zero, and cropping to the brain.

Per available sequence: Nyul histogram standardisation (landmarks at the 1, 10, 20, ..., 90,
99th percentiles inside the brain mask, fitted on a training set; the same maths as TorchIO's
``HistogramStandardization``, checked against it in the tests),
then whitening with the mean and std inside the mask. Voxels outside the mask are 0, and a
missing (all-zero) channel is never touched, so it stays exactly 0, which after whitening
reads as "mean intensity", as in the paper.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from core.sequences import SEQUENCES

# Landmarks: the 1st and 99th percentiles (cut-offs), deciles and quartiles.
PERCENTILES = np.array([1, 10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 99], dtype=float)
# Landmarks the piecewise-linear map goes through: all but the 25th and 75th percentiles.
MAPPED = [0, 1, 2, 4, 5, 6, 7, 8, 10, 11, 12]
STANDARD_RANGE = (0.0, 100.0)


def brain_mask(images: np.ndarray, available: np.ndarray | None = None) -> np.ndarray:
    """Boolean (X, Y, Z) mask of voxels non-zero in any available sequence."""
    channels = images if available is None else images[np.asarray(available, bool)]
    return np.any(channels != 0, axis=0)


def image_percentiles(volume: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The landmark percentiles of one volume inside the mask."""
    return np.percentile(volume[mask], PERCENTILES)


def fit_landmarks(
    cases: Iterable[tuple[np.ndarray, np.ndarray]],
    on_progress: Callable[[int, int, str], None] | None = None,
    total: int = 0,
) -> dict[str, list[float]]:
    """Fit Nyul standard landmarks per sequence on training cases.

    Args:
        cases: (images (4, X, Y, Z), available (4,)) pairs; missing channels are skipped.

    Returns:
        {sequence: landmarks}, each a list of ``len(PERCENTILES)`` floats on the 0-100 scale.

    Raises:
        ValueError: a sequence is missing from every case.
    """
    database: dict[str, list[np.ndarray]] = {s: [] for s in SEQUENCES}
    for done, (images, available) in enumerate(cases, start=1):
        mask = brain_mask(images, available)
        for index, sequence in enumerate(SEQUENCES):
            if available[index]:
                database[sequence].append(image_percentiles(images[index], mask))
        if on_progress:
            on_progress(done, total or done, "landmarks")
    empty = [s for s, rows in database.items() if not rows]
    if empty:
        raise ValueError(f"cannot fit landmarks: sequence(s) {empty} missing from every training case")
    return {s: [float(v) for v in average_mapping(np.stack(rows))] for s, rows in database.items()}


def average_mapping(percentiles: np.ndarray) -> np.ndarray:
    """Standard landmarks: each image's percentiles mapped linearly so that its 1st..99th
    percentile span the standard range, then averaged (Nyul et al., 2000).

    Args:
        percentiles: (n_images, len(PERCENTILES)).
    """
    low, high = percentiles[:, 0], percentiles[:, -1]
    s1, s2 = STANDARD_RANGE
    slopes = np.nan_to_num((s2 - s1) / (high - low))
    intercepts = np.mean(s1 - slopes * low)
    return slopes.dot(percentiles) / len(percentiles) + intercepts


def standardise(values: np.ndarray, landmarks: np.ndarray, epsilon: float = 1e-5) -> np.ndarray:
    """Map intensities piecewise linearly so that their landmark percentiles land on ``landmarks``.

    Segments whose two percentiles coincide (flat histograms) get slope 0, as in TorchIO.
    """
    data = np.asarray(values, np.float32).reshape(-1)
    mapping = np.asarray(landmarks, float)[MAPPED]
    observed = np.percentile(data, PERCENTILES)[MAPPED]
    steps = np.diff(observed)
    steps[steps < epsilon] = np.inf
    slopes = np.diff(mapping) / steps
    intercepts = mapping[:-1] - slopes * observed[:-1]
    segment = np.digitize(data, observed[1:-1], right=False)
    return (slopes[segment] * data + intercepts[segment]).astype(np.float32).reshape(np.shape(values))


def normalise(
    images: np.ndarray, available: np.ndarray, landmarks: dict[str, list[float]], mask: np.ndarray | None = None
) -> np.ndarray:
    """Histogram-standardise and whiten each available channel inside the brain mask.

    Args:
        images: (4, X, Y, Z) float32 in channel order SEQUENCES.
        available: (4,) bool; unavailable channels are returned as exact zeros.
        landmarks: from :func:`fit_landmarks` (stored in the model card).

    Returns:
        (4, X, Y, Z) float32; 0 outside the mask and in missing channels.
    """
    available = np.asarray(available, bool)
    mask = brain_mask(images, available) if mask is None else mask
    out = np.zeros(images.shape, dtype=np.float32)
    if not mask.any():
        return out
    for index, sequence in enumerate(SEQUENCES):
        if not available[index]:
            continue
        # Only brain voxels matter, so map those alone (4-5x fewer than the grid).
        values = standardise(images[index][mask], np.asarray(landmarks[sequence]))
        std = float(values.std())
        out[index][mask] = (values - values.mean()) / (std if std > 0 else 1.0)
    return out


@dataclass(frozen=True)
class Crop:
    """A bounding box inside a grid of ``shape``; ``undo`` pads a cropped array back."""

    box: tuple[tuple[int, int], ...]
    shape: tuple[int, ...]

    @property
    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in self.box)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Crop the last three axes."""
        return array[(..., *self.slices)]

    def undo(self, array: np.ndarray, fill=0) -> np.ndarray:
        """Place a cropped array (leading axes allowed) back on the full grid."""
        out = np.full((*array.shape[:-3], *self.shape), fill, dtype=array.dtype)
        out[(..., *self.slices)] = array
        return out


def brain_crop(mask: np.ndarray, margin: int = 4) -> Crop:
    """Bounding box of the mask plus ``margin`` voxels, clipped to the grid."""
    if not mask.any():
        return Crop(tuple((0, n) for n in mask.shape), tuple(mask.shape))
    index = np.argwhere(mask)
    lo = np.maximum(index.min(0) - margin, 0)
    hi = np.minimum(index.max(0) + 1 + margin, mask.shape)
    return Crop(tuple((int(a), int(b)) for a, b in zip(lo, hi)), tuple(mask.shape))
