"""Normalisation that keeps missing sequences at zero, and cropping to the brain.

Per available sequence: Nyul histogram standardisation (landmarks at the 1, 10, 20, ..., 90,
99th percentiles inside the brain mask, fitted on a training set; TorchIO's implementation),
then whitening with the mean and std inside the mask. Voxels outside the mask are 0, and a
missing (all-zero) channel is never touched, so it stays exactly 0, which after whitening
reads as "mean intensity", as in the paper.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torchio.transforms.preprocessing.intensity.histogram_standardization import (
    DEFAULT_CUTOFF,
    _get_average_mapping,
    _get_percentiles,
    _normalize,
)

from core.sequences import SEQUENCES

PERCENTILES = _get_percentiles(tuple(100 * np.asarray(DEFAULT_CUTOFF)))  # 1, 10, 20, 25, ..., 75, ..., 99


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
    return {s: [float(v) for v in _get_average_mapping(np.stack(rows))] for s, rows in database.items()}


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
        inside = torch.from_numpy(np.ascontiguousarray(images[index][mask], np.float32))
        values = _normalize(inside, np.asarray(landmarks[sequence]), None).numpy()
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
