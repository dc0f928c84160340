"""Realism report: how far synthetic cases are from real ones, feature by feature.

Every feature is computed on images normalised as the product normalises them for a model
(:func:`core.preprocess.normalise` with a model card's landmarks: histogram standardisation,
then whitening inside the brain), so intensities are in units of the brain's standard
deviation and comparable between real and synthetic cases.

Features of one case (:func:`compute_case_features`):

* ``intensity.<region>.<sequence>.median`` / ``.iqr``: per region (necrosis, oedema,
  enhancing, normal brain) and per normal-brain tissue class. Real scans have no tissue maps,
  so normal brain is split into three classes by 1-D k-means on normalised T1 (``t1dark`` ~
  CSF, ``t1mid`` ~ grey matter, ``t1bright`` ~ white matter), the same way for both cohorts.
* ``edge.<sequence>``: median of the outer 3 mm shell of the brain minus the brain median
  (real scans have bright or dark rims at the skull-stripping boundary).
* ``shape.*``: ET / TC / WT volumes (mL), connected components (26-connectivity), surface per
  volume (voxel-face area / volume, 1/mm), WT centroid as a fraction of the brain's bounding
  box, depth of the WT centroid below the brain edge (mm), enhancing rim thickness (mean local
  thickness from the distance transform), necrosis fraction of TC, WT / TC.
* ``texture.<region>.<sequence>``: std of the high-pass image (image minus its Gaussian
  smoothing, sigma 1 mm, normalised convolution inside the brain) within the region.

Distances (:func:`compare`): for ``intensity.*.median`` rows, the 1-D Wasserstein distance
between the pooled voxel intensity distributions (each case contributes the same number of
quantiles, so every case weighs the same), divided by the real pooled spread (IQR / 1.349);
for every other row, the Wasserstein distance between the per-case values divided by the
standard deviation of the real per-case values. 0 = indistinguishable; 1 = shifted by about
one real spread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.stats import wasserstein_distance

from core.preprocess import brain_crop, brain_mask, normalise
from core.sequences import ENHANCING, NECROSIS, OEDEMA, SEQUENCES

TUMOUR_REGIONS = {"necrosis": (NECROSIS,), "oedema": (OEDEMA,), "enhancing": (ENHANCING,)}
TISSUES = ("t1dark", "t1mid", "t1bright")  # k-means classes of normal brain on T1: ~CSF, GM, WM
INTENSITY_REGIONS = (*TUMOUR_REGIONS, "normal", *TISSUES)
TEXTURE_REGIONS = (*TUMOUR_REGIONS, "normal")
QUANTILE_LEVELS = np.linspace(0.005, 0.995, 100)  # each case's share of a pooled distribution
SHELL_MM = 3.0
HIGHPASS_SIGMA_MM = 1.0
IQR_TO_STD = 1.349  # IQR of a normal distribution in standard deviations
METHOD_POOLED = "pooled voxels: W1 / real IQR*0.741"
METHOD_PER_CASE = "per case: W1 / real std"
NOTES = (
    "Images normalised with the model card's landmarks (Nyul + whitening in the brain): units are brain std.",
    "Normal brain is split into 3 tissue classes by 1-D k-means on normalised T1 (t1dark ~ CSF, t1mid ~ GM, "
    "t1bright ~ WM) in both cohorts: real scans have no tissue maps. Needs T1; NaN where T1 is missing.",
    f"Brain edge: voxels within {SHELL_MM:g} mm of the outside of the brain mask; value = shell median - brain median.",
    "intensity.*.median rows: Wasserstein distance between pooled voxel intensities (each case contributes "
    f"{len(QUANTILE_LEVELS)} quantiles) / (real pooled IQR / 1.349). All other rows: Wasserstein distance between "
    "per-case values / std of the real per-case values (std of all values if that is 0).",
    f"Texture: std of image minus Gaussian(sigma {HIGHPASS_SIGMA_MM:g} mm, normalised convolution in the brain) "
    "within a region.",
    "Rim thickness: mean over the ridge of the enhancing mask's distance transform of 2 * distance - 1 voxel.",
)


@dataclass
class CaseFeatures:
    """The features of one case, plus what the montage shows of it.

    ``values`` maps feature names to floats (NaN where undefined: no enhancing tumour, a
    missing sequence); ``quantiles`` maps ``intensity.<region>.<sequence>`` to the region's
    voxel quantiles at ``QUANTILE_LEVELS``; ``slice_images`` is (4, H, W) normalised, the axial
    slice with the most whole tumour, cropped to the brain (NaN for missing sequences).
    """

    case_id: str
    values: dict[str, float]
    quantiles: dict[str, np.ndarray] = field(default_factory=dict)
    slice_images: np.ndarray | None = None
    slice_labels: np.ndarray | None = None


@dataclass(frozen=True)
class FeatureRow:
    """One feature compared between the cohorts; ``distance`` is NaN when a side has no values."""

    feature: str
    real_mean: float
    real_median: float
    synthetic_mean: float
    synthetic_median: float
    distance: float
    n_real: int
    n_synthetic: int
    method: str

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- geometry


def _padded_edt(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distance (mm) from each voxel of ``mask`` to the nearest voxel outside it; the grid's
    border counts as outside."""
    padded = np.pad(mask, 1)
    return ndimage.distance_transform_edt(padded, sampling=spacing)[1:-1, 1:-1, 1:-1]


def edge_shell(mask: np.ndarray, spacing: Sequence[float], thickness_mm: float = SHELL_MM) -> np.ndarray:
    """Boolean mask of the voxels of ``mask`` within ``thickness_mm`` of a voxel outside it.

    At 1 mm and 3 mm that is the three outermost voxel layers. Empty mask -> empty shell.
    """
    return mask & (_padded_edt(mask, spacing) <= thickness_mm + 1e-6)


def surface_area_mm2(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Area (mm^2) of the voxel faces between ``mask`` and the outside (the grid border counts)."""
    padded = np.pad(mask, 1).astype(np.int8)
    sx, sy, sz = spacing
    face_area = (sy * sz, sx * sz, sx * sy)
    return float(sum(np.count_nonzero(np.diff(padded, axis=a)) * face_area[a] for a in range(3)))


def count_components(mask: np.ndarray) -> int:
    """Connected components of a boolean mask (26-connectivity)."""
    return int(ndimage.label(mask, structure=np.ones((3, 3, 3), bool))[1])


def rim_thickness_mm(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Mean local thickness (mm) of a shell-like mask from its distance transform.

    The ridge of the distance transform (voxels that are a maximum of their 3x3x3
    neighbourhood) runs along the middle of the shell; a ridge voxel at distance d from the
    outside lies in a wall 2d - 1 voxel thick (a 5-voxel slab: ridge at d = 3 -> 5).
    Anisotropic grids use the smallest voxel size as the voxel. NaN for an empty mask.
    """
    if not mask.any():
        return float("nan")
    distance = _padded_edt(mask, spacing)
    ridge = mask & (distance >= ndimage.maximum_filter(distance, size=3))
    return float(np.mean(2 * distance[ridge] - min(spacing)))


def kmeans_1d(values: np.ndarray, k: int = 3, iterations: int = 100) -> np.ndarray:
    """Sorted cluster centres of 1-D k-means (Lloyd).

    Started evenly over the 1st-99th percentile range (not at quantiles, which would put two
    centres in a majority class and miss a small one such as CSF). Deterministic. Clusters
    that empty keep their centre. Raises ValueError on no values.
    """
    v = np.sort(np.asarray(values, np.float64).ravel())
    if v.size == 0:
        raise ValueError("kmeans_1d: no values")
    low, high = np.quantile(v, [0.01, 0.99])
    centres = low + (high - low) * (2 * np.arange(k) + 1) / (2 * k)
    total = np.concatenate([[0.0], np.cumsum(v)])
    for _ in range(iterations):
        cuts = np.searchsorted(v, (centres[:-1] + centres[1:]) / 2)
        edges = np.concatenate([[0], cuts, [v.size]])
        counts = np.diff(edges)
        sums = total[edges[1:]] - total[edges[:-1]]
        new = np.where(counts > 0, sums / np.maximum(counts, 1), centres)
        if np.allclose(new, centres, rtol=0, atol=1e-9):
            break
        centres = np.sort(new)
    return centres


def tissue_classes(t1: np.ndarray, mask: np.ndarray, k: int = 3) -> np.ndarray:
    """uint8 map: 0 outside ``mask``, 1..k = k-means class of T1 inside (1 darkest). All 0 on an empty mask."""
    out = np.zeros(mask.shape, np.uint8)
    if not mask.any():
        return out
    centres = kmeans_1d(t1[mask], k)
    out[mask] = np.digitize(t1[mask], (centres[:-1] + centres[1:]) / 2) + 1
    return out


def highpass(image: np.ndarray, mask: np.ndarray, spacing: Sequence[float], sigma_mm: float = HIGHPASS_SIGMA_MM):
    """Image minus its Gaussian smoothing, both inside ``mask`` (normalised convolution, so the
    zeros outside do not leak in); 0 outside the mask."""
    sigma = sigma_mm / np.asarray(spacing, float)
    weight = ndimage.gaussian_filter(mask.astype(np.float32), sigma)
    smooth = ndimage.gaussian_filter(np.where(mask, image, 0).astype(np.float32), sigma)
    smooth = np.divide(smooth, weight, out=np.zeros_like(smooth), where=weight > 1e-6)
    return np.where(mask, image - smooth, 0).astype(np.float32)


def _median_iqr(values: np.ndarray) -> tuple[float, float]:
    if values.size == 0:
        return float("nan"), float("nan")
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    return float(q2), float(q3 - q1)


def shape_features(
    labels: np.ndarray, brain: np.ndarray, spacing: Sequence[float], depth: np.ndarray | None = None
) -> dict[str, float]:
    """Tumour shape and location from canonical labels (see the module docstring). NaN where
    the region is empty. ``depth`` may pass the brain's distance map (mm) when already computed."""
    nan = float("nan")
    voxel_ml = float(np.prod(spacing)) / 1000.0
    et, nec = labels == ENHANCING, labels == NECROSIS
    tc = et | nec
    wt = labels > 0
    out: dict[str, float] = {}
    for name, mask in (("et", et), ("tc", tc), ("wt", wt)):
        out[f"shape.{name}_ml"] = float(mask.sum()) * voxel_ml
    for name, mask in (("tc", tc), ("wt", wt)):
        volume_mm3 = float(mask.sum()) * voxel_ml * 1000.0
        out[f"shape.{name}_components"] = float(count_components(mask)) if mask.any() else nan
        area_mm2 = surface_area_mm2(mask, spacing)
        out[f"shape.{name}_surface_per_volume_per_mm"] = area_mm2 / volume_mm3 if volume_mm3 else nan
    if wt.any() and brain.any():
        box = np.argwhere(brain)
        lo, hi = box.min(0), box.max(0)
        centroid = np.argwhere(wt).mean(0)
        for axis, value in zip("xyz", (centroid - lo) / np.maximum(hi - lo, 1)):
            out[f"shape.wt_centroid_{axis}"] = float(value)
        voxel = tuple(np.clip(np.round(centroid).astype(int), 0, np.array(brain.shape) - 1))
        depth = _padded_edt(brain, spacing) if depth is None else depth
        out["shape.wt_depth_mm"] = float(depth[voxel])
    else:
        out |= {f"shape.wt_centroid_{axis}": nan for axis in "xyz"} | {"shape.wt_depth_mm": nan}
    out["shape.et_rim_thickness_mm"] = rim_thickness_mm(et, spacing)
    out["shape.necrosis_fraction_tc"] = float(nec.sum() / tc.sum()) if tc.any() else nan
    out["shape.wt_over_tc"] = float(wt.sum() / tc.sum()) if tc.any() else nan
    return out


# --------------------------------------------------------------------------- one case


def _region_masks(labels: np.ndarray, brain: np.ndarray, t1: np.ndarray | None) -> dict[str, np.ndarray]:
    masks = {name: brain & np.isin(labels, values) for name, values in TUMOUR_REGIONS.items()}
    masks["normal"] = brain & (labels == 0)
    classes = tissue_classes(t1, masks["normal"]) if t1 is not None else None
    for index, name in enumerate(TISSUES, start=1):
        masks[name] = classes == index if classes is not None else np.zeros_like(brain)
    return masks


def _montage_slice(images: np.ndarray, labels: np.ndarray, brain: np.ndarray, available: np.ndarray):
    """The axial slice with the most whole tumour (the middle one without tumour), cropped to
    the brain's in-plane box; missing sequences and voxels outside the brain are NaN."""
    area = (labels > 0).sum(axis=(0, 1))
    z = int(area.argmax()) if area.any() else labels.shape[2] // 2
    plane = brain[:, :, z]
    if plane.any():
        index = np.argwhere(plane)
        (x0, y0), (x1, y1) = index.min(0), index.max(0) + 1
    else:
        (x0, y0), (x1, y1) = (0, 0), plane.shape
    shown = images[:, x0:x1, y0:y1, z].astype(np.float32)
    shown[~np.asarray(available, bool)] = np.nan
    shown[:, ~plane[x0:x1, y0:y1]] = np.nan
    return shown, labels[x0:x1, y0:y1, z].copy()


def compute_case_features(
    images: np.ndarray,
    available: np.ndarray,
    labels: np.ndarray,
    spacing: Sequence[float],
    landmarks: dict[str, list[float]],
    case_id: str = "",
) -> CaseFeatures:
    """All features of one case (see the module docstring).

    Args:
        images: (4, X, Y, Z) float32 raw intensities, channel order SEQUENCES.
        available: (4,) bool; features of a missing sequence are NaN.
        labels: (X, Y, Z) canonical uint8 labels (0 bg, 1 necrosis, 2 oedema, 3 enhancing).
        spacing: voxel size in mm.
        landmarks: ``card["normalisation"]["landmarks"]`` of a model.

    Raises:
        ValueError: the label map's shape differs from the images', or the brain is empty.
    """
    available = np.asarray(available, bool)
    if labels.shape != images.shape[1:]:
        raise ValueError(f"{case_id}: labels have shape {labels.shape} but images have {images.shape[1:]}")
    brain = brain_mask(images, available)
    if not brain.any():
        raise ValueError(f"{case_id}: every available sequence is all zeros")
    crop = brain_crop(brain)  # everything below is inside the brain: skip the empty grid
    brain, labels = crop.apply(brain), crop.apply(labels)
    normal = normalise(crop.apply(images), available, landmarks, brain)
    t1 = normal[SEQUENCES.index("t1")] if available[SEQUENCES.index("t1")] else None
    masks = _region_masks(labels, brain, t1)
    depth = _padded_edt(brain, spacing)
    shell = brain & (depth <= SHELL_MM + 1e-6)  # as edge_shell, reusing the distance map

    values: dict[str, float] = {}
    quantiles: dict[str, np.ndarray] = {}
    nan = float("nan")
    for index, sequence in enumerate(SEQUENCES):
        image = normal[index]
        ok = bool(available[index])
        for region in INTENSITY_REGIONS:
            voxels = image[masks[region]] if ok else np.empty(0, np.float32)
            key = f"intensity.{region}.{sequence}"
            values[f"{key}.median"], values[f"{key}.iqr"] = _median_iqr(voxels)
            if voxels.size:
                quantiles[key] = np.quantile(voxels, QUANTILE_LEVELS)
        values[f"edge.{sequence}"] = float(np.median(image[shell]) - np.median(image[brain])) if ok else nan
        details = highpass(image, brain, spacing) if ok else None
        for region in TEXTURE_REGIONS:
            inside = masks[region]
            values[f"texture.{region}.{sequence}"] = (
                float(details[inside].std()) if details is not None and inside.any() else nan
            )
    values |= shape_features(labels, brain, spacing, depth)
    shown, shown_labels = _montage_slice(normal, labels, brain, available)
    return CaseFeatures(case_id, values, quantiles, shown, shown_labels)


# --------------------------------------------------------------------------- comparison


def _spread(real: np.ndarray, both: np.ndarray) -> float:
    for values in (real, both):
        spread = float(np.std(values)) if values.size else 0.0
        if spread > 0:
            return spread
    return 1.0


def compare(real: Sequence[CaseFeatures], synthetic: Sequence[CaseFeatures]) -> list[FeatureRow]:
    """One row per feature, worst (largest distance) first, rows without a distance last.

    See the module docstring for the two kinds of distance.
    """
    names = list(dict.fromkeys(name for case in (*real, *synthetic) for name in case.values))
    rows = []
    for name in names:
        r = np.array([c.values.get(name, np.nan) for c in real], float)
        s = np.array([c.values.get(name, np.nan) for c in synthetic], float)
        r, s = r[np.isfinite(r)], s[np.isfinite(s)]
        method, distance = METHOD_PER_CASE, float("nan")
        if name.startswith("intensity.") and name.endswith(".median"):
            method = METHOD_POOLED
            key = name.removesuffix(".median")
            pr = [c.quantiles[key] for c in real if key in c.quantiles]
            ps = [c.quantiles[key] for c in synthetic if key in c.quantiles]
            if pr and ps:
                pr, ps = np.concatenate(pr), np.concatenate(ps)
                q1, q3 = np.percentile(pr, [25, 75])
                spread = (q3 - q1) / IQR_TO_STD
                distance = wasserstein_distance(pr, ps) / (spread if spread > 0 else _spread(pr, np.r_[pr, ps]))
        elif r.size and s.size:
            distance = wasserstein_distance(r, s) / _spread(r, np.r_[r, s])

        def stat(f, v):
            return float(f(v)) if v.size else float("nan")

        rows.append(FeatureRow(name, stat(np.mean, r), stat(np.median, r), stat(np.mean, s), stat(np.median, s),
                               float(distance), int(r.size), int(s.size), method))  # fmt: skip
    return sorted(rows, key=lambda row: (not np.isfinite(row.distance), -np.nan_to_num(row.distance)))


def markdown_table(rows: Sequence[FeatureRow], limit: int | None = None) -> str:
    """The rows as a Markdown table (worst first, as given)."""
    columns = ("#", "feature", "real median", "real mean", "synthetic median", "synthetic mean", "distance",
               "n real / syn", "method")  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for rank, row in enumerate(rows[:limit], start=1):
        lines.append(
            f"| {rank} | {row.feature} | {row.real_median:.3g} | {row.real_mean:.3g} | {row.synthetic_median:.3g} "
            f"| {row.synthetic_mean:.3g} | {row.distance:.3g} | {row.n_real} / {row.n_synthetic} | {row.method} |"
        )
    return "\n".join(lines) + "\n"


def match_cases(real: Sequence[CaseFeatures], synthetic: Sequence[CaseFeatures]) -> list[tuple[int, int]]:
    """(real index, synthetic index) pairs for the montage: each real case with the synthetic
    case nearest in log whole-tumour volume and centroid, preferring synthetic cases with every
    sequence, each synthetic case used once while there are enough."""

    def key(case: CaseFeatures) -> np.ndarray:
        v = case.values
        keys = [np.log1p(v.get("shape.wt_ml", 0.0))] + [v.get(f"shape.wt_centroid_{a}", 0.5) for a in "xyz"]
        return np.nan_to_num(np.array(keys, float), nan=0.5)

    pairs, used = [], set()
    for i, case in enumerate(real):
        if not synthetic:
            break
        costs = [np.abs(key(case) - key(s)).sum() + 10.0 * _n_missing(s) + (1e6 if j in used else 0)
                 for j, s in enumerate(synthetic)]  # fmt: skip
        j = int(np.argmin(costs))
        used.add(j)
        if len(used) == len(synthetic):
            used.clear()
        pairs.append((i, j))
    return pairs


def _n_missing(case: CaseFeatures) -> int:
    if case.slice_images is None:
        return len(SEQUENCES)
    return int(np.isnan(case.slice_images).all(axis=(1, 2)).sum())


def montage_figure(real: Sequence[CaseFeatures], synthetic: Sequence[CaseFeatures], window=(-2.5, 3.5)):
    """Matplotlib figure: one row per matched pair, columns real | synthetic for each sequence.

    Both sides use the same fixed window on normalised intensities, so brightness differences
    are real differences; the whole-tumour outline is drawn in yellow.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    from core.figures import take_slice
    from core.sequences import DISPLAY

    pairs = match_cases(real, synthetic)
    gray = colormaps["gray"].with_extremes(bad="black")  # NaN: outside the brain or a missing sequence
    rows = max(len(pairs), 1)
    fig = Figure(figsize=(2.0 * 2 * len(SEQUENCES), 2.2 * rows), facecolor="black")
    axes = fig.subplots(rows, 2 * len(SEQUENCES), squeeze=False)
    for row, (i, j) in enumerate(pairs):
        for side, case in enumerate((real[i], synthetic[j])):
            for index, sequence in enumerate(SEQUENCES):
                ax = axes[row, 2 * index + side]
                image = take_slice(case.slice_images[index][..., None], "axial", 0)
                ax.imshow(image, cmap=gray, vmin=window[0], vmax=window[1])
                outline = take_slice(case.slice_labels[..., None] > 0, "axial", 0).astype(float)
                if np.isnan(case.slice_images[index]).all():
                    ax.text(0.5, 0.5, "missing", color="w", ha="center", va="center", transform=ax.transAxes)
                elif outline.any():
                    ax.contour(outline, levels=[0.5], colors="yellow", linewidths=0.6)
                if row == 0:
                    ax.set_title(f"{DISPLAY[sequence]} {('real', 'synthetic')[side]}", color="w", fontsize=9)
                if index == 0:
                    ax.text(0.02, 0.02, case.case_id, color="w", fontsize=6, transform=ax.transAxes)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.suptitle(f"Matched axial slices through the tumour (window {window[0]:g}..{window[1]:g} brain std; "
                 "yellow: whole tumour)",
                 color="w", fontsize=10)  # fmt: skip
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- cohorts


def cohort_features(
    path: str | Path,
    landmarks: dict[str, list[float]],
    max_cases: int = 0,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> list[CaseFeatures]:
    """Features of the cases at a path (folder of case folders, case folder or manifest), read
    through :mod:`core.io`; ``max_cases`` > 0 keeps that many, evenly spread over the list.

    Raises:
        CaseError: no cases at the path, a case cannot be read, or a case has no labels
            (the message names the folder or manifest row).
    """
    from core.cases import find_cases
    from core.io import CaseError, read_case

    sources = find_cases(path)
    if max_cases and len(sources) > max_cases:
        keep = np.unique(np.round(np.linspace(0, len(sources) - 1, max_cases)).astype(int))
        sources = [sources[k] for k in keep]
    out = []
    for done, source in enumerate(sources, start=1):
        case = read_case(source)
        if case.labels is None:
            where = source.origin or source.case_id
            raise CaseError(f"{where}: no segmentation (seg) file; the realism report needs tumour labels")
        out.append(compute_case_features(case.images, case.available, case.labels, case.spacing, landmarks,
                                         case.case_id))  # fmt: skip
        if on_progress:
            on_progress(done, len(sources), source.case_id)
    return out
