"""What a model trains on: which cases, and which windows of them.

Cases are chosen by one rule (:func:`eligible`) whether they are rendered already
(:func:`select_cases`) or only planned (:func:`planned_cases`); training volumes are normalised
cases cropped to the brain; each batch holds windows of ``output + 48`` voxels, half centred in
tumour, with sequences dropped by the sparsifier and, optionally, domain randomisation.
``config`` below is a :class:`core.train.TrainConfig`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch

from core.augment import Randomisation, randomise_window
from core.cases import find_cases
from core.io import Case, read_case
from core.model import CONTEXT
from core.preprocess import brain_crop, brain_mask, normalise
from core.sequences import REGIONS, SEQUENCES, Sparsifier


@dataclass
class TrainingVolume:
    """A normalised case cropped to the brain, in float16, with its tumour voxels indexed."""

    case_id: str
    images: np.ndarray  # (4, X, Y, Z) float16
    labels: np.ndarray  # (X, Y, Z) uint8
    available: np.ndarray
    tumour: np.ndarray  # (N, 3) int32 voxel indices with label > 0


def crop_case(case: Case) -> Case:
    """The case cropped to its brain (plus 2 voxels), which holds every voxel normalisation uses."""
    crop = brain_crop(brain_mask(case.images, case.available), margin=2)
    labels = crop.apply(case.labels) if case.labels is not None else None
    return replace(case, images=np.ascontiguousarray(crop.apply(case.images)), labels=labels)


def prepare_volume(case: Case, landmarks: dict, num_classes: int = 4) -> TrainingVolume:
    """Normalise, crop to the brain, store in float16; 2 classes = background / tumour core."""
    case = crop_case(case)
    images = normalise(case.images, case.available, landmarks).astype(np.float16)
    labels = case.labels if case.labels is not None else np.zeros(images.shape[1:], np.uint8)
    if num_classes == 2:
        labels = np.isin(labels, list(REGIONS["tc"])).astype(np.uint8)
    return TrainingVolume(case.case_id, images, np.ascontiguousarray(labels), case.available.copy(),
                          np.argwhere(labels > 0).astype(np.int32))  # fmt: skip


def _overlap(start, size: int, shape) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Source slices in a volume of ``shape`` and destination slices in a size^3 window that
    starts at ``start`` (it may stick out of the volume: that part stays zero)."""
    src = tuple(slice(max(s, 0), min(s + size, n)) for s, n in zip(start, shape))
    dst = tuple(slice(a.start - s, a.stop - s) for a, s in zip(src, start))
    return src, dst


def extract_window(volume: TrainingVolume, centre: np.ndarray, output: int,
                   images: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Input (4, O+48, ...) and label (O, O, O) windows around ``centre``, zero-padded.

    The input goes into ``images`` when given (a zeroed array, e.g. a slot of a batch),
    else into a new float32 array.
    """
    size = output + CONTEXT
    start = centre - output // 2 - CONTEXT // 2
    images = np.zeros((4, size, size, size), np.float32) if images is None else images
    src, dst = _overlap(start, size, volume.labels.shape)
    images[(slice(None), *dst)] = volume.images[(slice(None), *src)]
    labels = np.zeros((output,) * 3, np.uint8)
    src, dst = _overlap(start + CONTEXT // 2, output, volume.labels.shape)
    labels[dst] = volume.labels[src]
    return images, labels


def input_labels(volume: TrainingVolume, centre: np.ndarray, output: int) -> np.ndarray:
    """Labels of the whole input window (O+48)^3 around ``centre``, zero-padded like its images."""
    size = output + CONTEXT
    labels = np.zeros((size,) * 3, np.uint8)
    src, dst = _overlap(centre - output // 2 - CONTEXT // 2, size, volume.labels.shape)
    labels[dst] = volume.labels[src]
    return labels


def sample_centre(volume: TrainingVolume, rng: np.random.Generator, in_tumour: bool) -> np.ndarray:
    """A voxel in the tumour, or anywhere in the brain (rejection sampling in the crop)."""
    if in_tumour and len(volume.tumour):
        return volume.tumour[rng.integers(len(volume.tumour))].astype(np.int64)
    shape = np.asarray(volume.labels.shape)
    for _ in range(100):
        centre = rng.integers(0, shape)
        if volume.images[(slice(None), *centre)].any() or volume.labels[tuple(centre)]:
            return centre
    return shape // 2


def sample_batch(volumes, rng, config, sparsifier: Sparsifier):
    """A batch of windows; half centred in tumour. Returns (x, y, dropped sets).

    ``x`` is float16, as the volumes are stored (exact; half the bytes to copy and to send to
    a GPU): convert it on the device.
    """
    size = config.output_size + CONTEXT
    x = np.zeros((config.batch_size, 4, size, size, size), np.float16)
    y = np.empty((config.batch_size, *(config.output_size,) * 3), np.uint8)
    dropped = []
    for i in range(config.batch_size):
        volume = volumes[rng.integers(len(volumes))]
        centre = sample_centre(volume, rng, in_tumour=i < (config.batch_size + 1) // 2)
        _, y[i] = extract_window(volume, centre, config.output_size, images=x[i])
        drop = sparsifier.draw(rng, volume.available)
        for sequence in drop:
            x[i, SEQUENCES.index(sequence)] = 0
        dropped.append(drop)
        if config.randomise > 0:
            present = [c for c, s in enumerate(SEQUENCES) if volume.available[c] and s not in drop]
            randomise_window(x[i], input_labels(volume, centre, config.output_size), present, rng,
                             Randomisation(strength=config.randomise))  # fmt: skip
    return torch.from_numpy(x), torch.from_numpy(y), dropped


def spread(items: list, limit: int) -> list:
    """At most ``limit`` items evenly spread over the list (all of them when ``limit`` is 0).

    Manifests list hospitals one after the other, so a spread keeps each hospital's share.
    """
    if not limit or len(items) <= limit:
        return list(items)
    return [items[i] for i in np.unique(np.linspace(0, len(items) - 1, limit).round().astype(int))]


def eligible(config, hospital: str, split: str, complete: bool, wanted: str) -> bool:
    """Whether a case of ``hospital`` in ``split`` (with all four sequences when ``complete``)
    belongs to the ``wanted`` split of a model trained on ``config.hospitals`` (complete cases
    only with ``config.complete_only``): the one rule for rendered cases and planned ones."""
    return hospital in config.hospitals and split == wanted and (complete or not config.complete_only)


def select_cases(config, split: str):
    """Case sources of the cohort manifest for the config's hospitals and a split (only
    ``patients`` when given; capped by ``max_cases`` / ``max_val_cases``)."""
    sources = find_cases(config.cohort)
    chosen, patients = [], set(config.patients)
    for source in sources:
        complete = all(source.paths.get(s) is not None for s in SEQUENCES)
        hospital, case_split = str(source.meta.get("hospital", "public")), source.meta.get("split", "train")
        if eligible(config, hospital, case_split, complete, split) and (not patients or source.case_id in patients):
            chosen.append(source)
    return spread(chosen, config.max_cases if split == "train" else config.max_val_cases)


def _threads() -> int:
    return min(8, os.cpu_count() or 1)


def read_cropped(sources) -> list[Case]:
    """Read cases and crop each to its brain, several at a time (decompression releases the GIL)."""
    with ThreadPoolExecutor(_threads()) as pool:
        return list(pool.map(lambda source: crop_case(read_case(source)), sources))


def prepare_volumes(cases, landmarks, num_classes=4) -> list[TrainingVolume]:
    """:func:`prepare_volume` of each case, several at a time (numpy's percentiles release the GIL)."""
    with ThreadPoolExecutor(_threads()) as pool:
        return list(pool.map(lambda case: prepare_volume(case, landmarks, num_classes), cases))


def load_volumes(sources, landmarks, num_classes=4) -> list[TrainingVolume]:
    return prepare_volumes(read_cropped(sources), landmarks, num_classes)


def validation_windows(volumes, config):
    """Fixed validation windows (27^3 outputs), drawn once from the seed: half in tumour."""
    rng = np.random.default_rng([config.seed, 999_983])
    windows = []
    for volume in volumes:
        for k in range(config.val_windows):
            centre = sample_centre(volume, rng, in_tumour=k % 2 == 0)
            windows.append(extract_window(volume, centre, 27))
    return windows


def planned_cases(plans, config) -> list:
    """The cohort plan's training and validation cases for a model, capped as training caps them."""
    chosen = []
    for split, limit in (("train", config.max_cases), ("val", config.max_val_cases)):
        chosen += spread([p for p in plans if eligible(config, p.hospital, p.split, not p.missing, split)], limit)
    return chosen
