"""Post-processing of a predicted label map: keep the main lesions, drop distant specks and rims.

On real scans the models add false positives where our synthetic brains never show anything:
bright rims at the skull-stripping boundary (dura, vessels, residue), the tentorium and the
posterior fossa. They form their own connected components, mostly within a few millimetres of
the brain's outer edge, beside the main lesion. :func:`keep_main_lesions` ranks the tumour's
26-connected components by their volume deeper than ``rim_mm`` inside the brain and keeps those
with at least ``share`` of the largest such volume: a second lesion of comparable size stays
(multifocal glioblastoma), a speck or a rim along the edge goes. nnU-Net decides on the same kind
of step (keep the largest foreground component) from validation data; the paper (section 4) says
distant false positives could be improved by post-processing.

It is an option, off by default (the demo results are of raw predictions): the explorer's
"Clean up" switch, ``python -m core predict --clean``, ``evaluate --clean`` and the Your data
page's "Clean up too" (both store the cleaned results as a model of their own, :func:`cleaned_model`,
beside the raw ones), and ``bench/real.py``'s cleaned columns. scipy is imported when a label map
is cleaned, not with this module, which the store and the cards import for its names.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

RIM_MM = 6.0  # the band along the brain's edge where real-scan false positives gather
SHARE = 0.3  # a component is kept with at least this share of the main lesion's deep volume
MIN_DEEP_ML = 0.1  # less deep volume counts as none: a deep speck cannot outrank a lesion at the edge
RULE = (
    f"keep the main lesions: drop tumour components with under {SHARE * 100:g} % of the largest one's volume "
    f"deeper than {RIM_MM:g} mm inside the brain"
)  # what Clean up does, in the app's words
CLEANED = "+clean"  # ends the name and the weights digest of a model's cleaned results in a results store


@dataclass(frozen=True)
class Cleanup:
    """What :func:`keep_main_lesions` did."""

    labels: np.ndarray  # (X, Y, Z) uint8, the label map with the dropped components set to 0
    kept: int  # tumour components kept
    dropped: int  # tumour components dropped
    dropped_ml: float  # their volume

    def to_dict(self) -> dict:
        return {"kept": self.kept, "dropped": self.dropped, "dropped_ml": round(self.dropped_ml, 2)}

    @property
    def words(self) -> str:
        if not self.dropped:
            return "nothing to drop: every tumour component is a main lesion"
        parts = "component" if self.dropped == 1 else "components"
        return f"{self.dropped} {parts} ({self.dropped_ml:.1f} mL) dropped, {self.kept} kept"


def deep_voxels(brain: np.ndarray, spacing_mm=(1.0, 1.0, 1.0), rim_mm: float = RIM_MM,
                within: tuple[slice, ...] | None = None) -> np.ndarray:  # fmt: skip
    """Brain voxels at least ``rim_mm`` from the nearest voxel outside the brain (the volume's
    border counts as outside), in mm with anisotropic spacing; only inside the box ``within``
    when given (exact there: the box is widened by ``rim_mm`` to look for outside voxels).

    The same as ``distance_transform_edt(np.pad(brain, 1), sampling=spacing_mm) >= rim_mm`` (cropped
    back), computed as "no outside voxel within the open ball of radius ``rim_mm``": one FFT
    convolution, 3-4x faster here."""
    from scipy import signal

    spacing = np.asarray(spacing_mm, float)
    if within is None:
        within = tuple(slice(0, n) for n in brain.shape)
    radius = np.floor(rim_mm / spacing).astype(int)
    offsets = np.indices(2 * radius + 1) - radius[:, None, None, None]
    ball = np.sqrt(((offsets * spacing[:, None, None, None]) ** 2).sum(0)) < rim_mm
    wide = tuple(slice(max(s.start - r, 0), min(s.stop + r, n)) for s, r, n in zip(within, radius, brain.shape))
    outside = np.pad(~brain[wide], [(r, r) for r in radius], constant_values=True).astype(np.float32)
    near = signal.fftconvolve(outside, ball.astype(np.float32), mode="same") > 0.5  # counts outside voxels
    box = tuple(slice(s.start - w.start + r, s.stop - w.start + r) for s, w, r in zip(within, wide, radius))
    return ~near[box]


def keep_main_lesions(labels: np.ndarray, brain: np.ndarray, spacing_mm=(1.0, 1.0, 1.0),
                      share: float = SHARE, rim_mm: float = RIM_MM) -> Cleanup:  # fmt: skip
    """Drop tumour components that are small beside the main lesion or lie along the brain's edge.

    Args:
        labels: (X, Y, Z) canonical label map (0 background).
        brain: (X, Y, Z) boolean brain mask of the same case (:func:`core.preprocess.brain_mask`).
        spacing_mm: voxel size, for the rim's width in mm.
        share: keep a component whose volume deeper than ``rim_mm`` inside the brain is at least
            this share of the largest such volume (1: the main lesion alone; 0 still drops the
            components without deep volume while another has some).
        rim_mm: width of the band along the brain's edge that does not count.

    Returns:
        A :class:`Cleanup`. Without tumour the labels come back unchanged. Deep volume under
        ``MIN_DEEP_ML`` counts as none; when no component has any, the components are ranked by
        their whole volume instead.

    Raises:
        ValueError: the shapes differ or ``share`` is outside [0, 1].
    """
    from scipy import ndimage

    if labels.shape != brain.shape:
        raise ValueError(f"labels have shape {labels.shape} but the brain mask has {brain.shape}")
    if not 0 <= share <= 1:
        raise ValueError(f"share must be in [0, 1], got {share}")
    tumour = labels > 0
    box = ndimage.find_objects(tumour.astype(np.uint8))
    if not box:
        return Cleanup(labels.copy(), 0, 0, 0.0)
    box = box[0]
    components, n = ndimage.label(tumour[box], structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
    deep = np.bincount(components.ravel(), weights=deep_voxels(brain, spacing_mm, rim_mm, box).ravel(),
                       minlength=n + 1)[1:]  # fmt: skip
    voxel_ml = float(np.prod(spacing_mm)) / 1000
    deep[deep * voxel_ml < MIN_DEEP_ML] = 0
    rank = deep if deep.max() > 0 else sizes.astype(float)
    keep = (rank >= share * rank.max()) & (rank > 0)
    out = labels.copy()
    out[box][~np.concatenate([[True], keep])[components]] = 0  # out[box] is a view
    return Cleanup(out, int(keep.sum()), int(n - keep.sum()), float(sizes[~keep].sum() * voxel_ml))


def clean_labels(labels: np.ndarray, case, brain: np.ndarray | None = None) -> Cleanup:
    """:func:`keep_main_lesions` of a label map predicted for ``case``, on the grid the case was read
    from (as predictions come back and are stored).

    The brain mask (``brain``, else :func:`core.preprocess.brain_mask` of the case's available
    sequences, on the grid the case is held on) is mapped, like the prediction, onto that grid (a
    case resampled to 1 mm on reading), and the rim is measured with that grid's spacing."""
    from core.io import resample_to_original, scoring_reference
    from core.preprocess import brain_mask

    if brain is None:
        brain = brain_mask(case.images, case.available)
    brain = resample_to_original(brain.astype(np.uint8), case, order=0) > 0
    return keep_main_lesions(labels, brain, scoring_reference(case)[1])


def clean_prediction(prediction, case, brain: np.ndarray | None = None):
    """:func:`clean_labels` of a :class:`core.infer.Prediction`: the cleaned prediction (labels only;
    the probabilities stay the network's) and the :class:`Cleanup`."""
    cleanup = clean_labels(prediction.labels, case, brain)
    return replace(prediction, labels=cleanup.labels), cleanup


def cleaned_model(sha256: str, name: str, card: dict) -> tuple[str, str, dict]:
    """The results-store identity (digest, name, card) of a model's predictions after Clean up:
    a model of their own, so that every cohort page shows them beside the raw ones and the
    Statistics page compares the two case by case."""
    postprocess = {"method": "keep_main_lesions", "share": SHARE, "rim_mm": RIM_MM, "min_deep_ml": MIN_DEEP_ML}
    return sha256 + CLEANED, name + CLEANED, card | {"name": name + CLEANED, "postprocess": postprocess}
