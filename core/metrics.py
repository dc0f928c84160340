"""Segmentation metrics: Dice, sensitivity, HD95 and volumes, per tumour region.

Surface distances are computed once per pair on the bounding box of the union (so 1 mm brains
stay fast) and HD95 derives from them as NiftyNet and MONAI compute it: the surface is the
mask minus its erosion with 6-connectivity; HD95 is the larger of the two directed 95th
percentiles (linear interpolation) of surface-to-surface distances in mm.

Empty masks (``empty=``):

* ``"nan"`` (default): a metric with no defined value is NaN. Dice is NaN when both masks are
  empty (0 when only one is); sensitivity is NaN when the reference is empty; HD95 is NaN
  when either is empty. Cohort summaries then skip those cases rather than inventing values.
* ``"brats"`` (the BraTS challenge convention): Dice 1 when both are empty, else 0 for a
  one-sided empty pair; sensitivity 1 when both are empty, 0 when only the reference is;
  HD95 0 when both are empty and 373.13 mm when one is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from core.sequences import REGIONS

EMPTY_POLICIES = ("nan", "brats")
BRATS_MAX_HD95_MM = 373.13


def _check(pred: np.ndarray, ref: np.ndarray, empty: str) -> tuple[np.ndarray, np.ndarray]:
    if pred.shape != ref.shape:
        raise ValueError(f"pred has shape {pred.shape} but ref has {ref.shape}")
    if empty not in EMPTY_POLICIES:
        raise ValueError(f"empty-mask policy must be one of {EMPTY_POLICIES}, got {empty!r}")
    return np.asarray(pred, bool), np.asarray(ref, bool)


def dice(pred: np.ndarray, ref: np.ndarray, empty: str = "nan") -> float:
    """2 TP / (2 TP + FP + FN) of two boolean masks."""
    pred, ref = _check(pred, ref, empty)
    tp = np.count_nonzero(pred & ref)
    total = np.count_nonzero(pred) + np.count_nonzero(ref)
    if total == 0:
        return 1.0 if empty == "brats" else float("nan")
    return 2 * tp / total


def sensitivity(pred: np.ndarray, ref: np.ndarray, empty: str = "nan") -> float:
    """TP / (TP + FN): the fraction of the reference that was found."""
    pred, ref = _check(pred, ref, empty)
    positives = np.count_nonzero(ref)
    if positives == 0:
        if empty == "brats":
            return 0.0 if pred.any() else 1.0
        return float("nan")
    return np.count_nonzero(pred & ref) / positives


def surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of the mask that have a 6-neighbour outside it (mask minus its erosion)."""
    structure = ndimage.generate_binary_structure(3, 1)
    return mask & ~ndimage.binary_erosion(mask, structure, border_value=0)


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing_mm) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each pred surface voxel to the nearest ref surface voxel, and back.

    Both masks must be non-empty. Surfaces are found on the union's bounding box; distances
    between surface voxel centres come from a k-d tree, which gives exactly what a Euclidean
    distance transform of the other surface gives at these voxels, on far fewer points.
    """
    box = ndimage.find_objects((pred | ref).astype(np.uint8))[0]
    pred_points = np.argwhere(surface(pred[box])) * np.asarray(spacing_mm, float)
    ref_points = np.argwhere(surface(ref[box])) * np.asarray(spacing_mm, float)
    to_ref, _ = cKDTree(ref_points).query(pred_points)
    to_pred, _ = cKDTree(pred_points).query(ref_points)
    return to_ref, to_pred


def hd95(pred: np.ndarray, ref: np.ndarray, spacing_mm=(1.0, 1.0, 1.0), empty: str = "nan") -> float:
    """95th-percentile Hausdorff distance in mm (max of the two directed 95th percentiles)."""
    pred, ref = _check(pred, ref, empty)
    if not pred.any() or not ref.any():
        if empty == "brats":
            return 0.0 if not pred.any() and not ref.any() else BRATS_MAX_HD95_MM
        return float("nan")
    forward, backward = surface_distances(pred, ref, spacing_mm)
    return float(max(np.percentile(forward, 95), np.percentile(backward, 95)))


UNDEFINED = "n/a"  # how pages show a metric that does not exist (HD95 of a region empty on one side)
UNDEFINED_HELP = (
    f"{UNDEFINED} where a metric is undefined: Dice where the region is empty in both the prediction and the "
    "reference, sensitivity where it is empty in the reference, HD95 where it is empty in either"
)
HD95_HELP = (
    "95th percentile of the distances between the predicted and the reference outline, in mm; "
    f"{UNDEFINED} where the region is empty in the prediction or the reference, so no distance exists"
)


def metric_text(value: float | None, digits: int) -> str:
    """A metric for display: ``digits`` decimals, or :data:`UNDEFINED` where it is NaN or missing
    (a results table stores an undefined HD95 as NULL)."""
    return f"{value:.{digits}f}" if value is not None and np.isfinite(value) else UNDEFINED


def volume_ml(mask: np.ndarray, spacing_mm=(1.0, 1.0, 1.0)) -> float:
    """Volume of a boolean mask in mL."""
    return float(np.count_nonzero(mask) * np.prod(spacing_mm) / 1000.0)


def region_mask(labels: np.ndarray, region: str) -> np.ndarray:
    """Boolean mask of a region (tc, wt, et) of a canonical label map."""
    if region not in REGIONS:
        raise ValueError(f"region must be one of {sorted(REGIONS)}, got {region!r}")
    return np.isin(labels, list(REGIONS[region]))


@dataclass(frozen=True)
class RegionMetrics:
    """Metrics of one region of one prediction."""

    region: str
    dice: float
    sensitivity: float
    hd95: float
    volume_pred_ml: float
    volume_ref_ml: float

    @property
    def volume_diff_ml(self) -> float:
        return self.volume_pred_ml - self.volume_ref_ml

    def to_dict(self) -> dict:
        return asdict(self) | {"volume_diff_ml": self.volume_diff_ml}


def compute_region(pred_labels, ref_labels, region: str, spacing_mm=(1.0, 1.0, 1.0), empty: str = "nan"):
    """:class:`RegionMetrics` of one region from two canonical label maps."""
    pred, ref = region_mask(pred_labels, region), region_mask(ref_labels, region)
    return RegionMetrics(
        region=region,
        dice=dice(pred, ref, empty),
        sensitivity=sensitivity(pred, ref, empty),
        hd95=hd95(pred, ref, spacing_mm, empty),
        volume_pred_ml=volume_ml(pred, spacing_mm),
        volume_ref_ml=volume_ml(ref, spacing_mm),
    )


def evaluate(pred_labels, ref_labels, spacing_mm=(1.0, 1.0, 1.0), regions=("tc", "wt", "et"), empty: str = "nan"):
    """{region: RegionMetrics} for canonical label maps (tumour core first)."""
    return {region: compute_region(pred_labels, ref_labels, region, spacing_mm, empty) for region in regions}
