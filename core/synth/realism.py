"""What real scans show and clean synthetic brains lack: look-alikes, residue, misregistration.

Models trained on clean synthetic brains take every bright structure they never saw for tumour:
on real BraTS scans most of their false positives lie within a few mm of the brain's outer
edge (dura, vessels and scalp left by skull stripping), at the choroid plexus and the dural
sinuses on T1c, and at the periventricular caps and poorly suppressed CSF on FLAIR. Each factor
here is named, has a strength (0 turns it off) and is drawn from the case's own random stream,
so a case stays reproducible from (preset, scale, seed, index).

Structures are added to the noise-free images before acquisition, only where there is no
tumour, so the labels stay true: the network must learn that they are not tumour.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from core.sequences import ENHANCING, NECROSIS, OEDEMA, SEQUENCES
from core.synth.anatomy import CSF, MASK
from core.synth.fields import smooth_field, warp
from core.synth.mri import TISSUES, WHITE_MATTER_LEVEL

# Relative intensities (white matter on T1 = 1) of each look-alike per sequence (t1, t1c, t2,
# flair), as (low, high) ranges drawn per case. Rough values from BraTS scans: the dura and
# cortical veins enhance (T1c above white matter), sinuses and choroid plexus enhance strongly,
# periventricular caps are as bright as oedema on FLAIR.
LEVELS = {
    "edge_rim": ((0.55, 0.95), (1.05, 1.7), (0.7, 1.2), (0.6, 1.05)),
    "vessels": ((0.5, 0.8), (1.2, 1.9), (0.25, 0.5), (0.35, 0.7)),
    "choroid_plexus": ((0.6, 0.8), (1.2, 1.6), (0.6, 0.9), (0.6, 0.95)),
    "periventricular_caps": ((0.7, 0.85), (0.7, 0.85), (0.8, 0.95), (0.95, 1.15)),
    "csf_flair": ((0.3, 0.3), (0.3, 0.3), (1.0, 1.0), (0.3, 0.6)),
    "residue": ((0.7, 1.3), (0.8, 1.4), (0.5, 1.1), (0.5, 1.0)),
    # Non-enhancing tumour (BraTS counts it in label 1 with necrosis): T1 hypointense, no
    # enhancement, bright on T2 and FLAIR.
    "non_enhancing": ((0.55, 0.7), (0.58, 0.75), (0.8, 0.95), (0.95, 1.15)),
}

# Tumour contrasts measured on real BraTS scans: each label's median / white matter's median in
# the same sequence (white matter: the brightest k-means class of normal brain on T1), over the
# reference cases. Real oedema: T1 0.71-0.96, T2 1.21-2.10, FLAIR 1.18-2.05 (medians 0.88, 1.28,
# 1.44); the first generator's came out at about 0.78, 1.69 and 1.91 in every case. Real
# non-enhancing tumour, against its own oedema: T1 x0.78-1.0, T1c x0.80-0.96, T2 x1.02-1.71,
# FLAIR x1.05-1.18; the first generator's was darker than oedema on FLAIR (x0.9), so models took
# real non-enhancing tumour for oedema. Necrosis (fluid) stays at or below oedema on FLAIR.
# Ranges are drawn per case, so a model must read the order of the labels, not their level.
# (sequence, tissue) -> (low, high) relative intensity, as in core.synth.mri.CONTRAST; rendered
# images come out at about 0.87x these ratios to white matter on T2 and FLAIR (partial volume,
# texture, blur), so oedema spans about 1.2-1.9x white matter there. The non-enhancing ratios
# sit a little inside the measured ones, FLAIR from 1.0 (at least as bright as oedema).
CALIBRATED_CONTRAST = {("t1", "oedema"): (0.72, 0.88), ("t2", "oedema"): (0.60, 0.95),
                       ("flair", "oedema"): (0.72, 1.10)}  # fmt: skip
NECROSIS_FLAIR_TO_OEDEMA = (0.8, 1.0)
NON_ENHANCING_TO_OEDEMA = ((0.78, 1.0), (0.8, 1.0), (1.05, 1.45), (1.0, 1.2))  # per sequence


@dataclass(frozen=True)
class Realism:
    """Strength of each real-scan factor (0 = off, 1 = as calibrated).

    edge_rim: bright patchy shell 1-3 mm at the skull-stripping boundary (dura, veins).
    vessels: thin enhancing tubes along the cortex and sinuses.
    choroid_plexus: enhancing blobs inside the ventricles.
    periventricular_caps: FLAIR / T2 hyperintense bands around the ventricles.
    csf_flair: patches of poorly suppressed CSF on FLAIR (flow, inflow artefacts).
    residue: scalp and marrow left outside the brain by skull stripping.
    heterogeneity: intensity sub-clusters within each tissue (fraction of intensity).
    misregistration_mm / misregistration_deg: largest rigid shift / rotation of each secondary
        sequence against T1c, as real co-registration leaves.
    non_enhancing: tumour core that does not enhance (labelled 1, like BraTS): with probability
        0.25 x strength the whole rim, otherwise up to half of it x strength.
    tumour_contrast: how far tumour contrasts move from the first generator's (0) to draws from
        the ranges measured on real scans (1, :data:`CALIBRATED_CONTRAST`): oedema on T2 and FLAIR
        anywhere from dim to bright (dimmer than before on average), non-enhancing tumour at least
        as bright as its oedema there. Any strength above 0 also makes a tumour that does not
        enhance at all solid, without a fluid centre (on or off, not graded).
    texture: scale of the tissue texture (1 = the first generator's).
    noise: scale of each hospital's noise (real BraTS images are resampled and smoother).
    smoothing_mm: largest Gaussian sigma of the resampling every BraTS image went through.
    """

    edge_rim: float = 0.0
    vessels: float = 0.0
    choroid_plexus: float = 0.0
    periventricular_caps: float = 0.0
    csf_flair: float = 0.0
    residue: float = 0.0
    heterogeneity: float = 0.0
    misregistration_mm: float = 0.0
    misregistration_deg: float = 0.0
    non_enhancing: float = 0.0
    tumour_contrast: float = 0.0
    texture: float = 1.0
    noise: float = 1.0
    smoothing_mm: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def any(self) -> bool:
        return self != Realism()


REAL_SCANS = Realism(edge_rim=1.0, vessels=1.0, choroid_plexus=1.0, periventricular_caps=1.0, csf_flair=1.0,
                     residue=1.0, heterogeneity=0.08, misregistration_mm=1.5, misregistration_deg=1.5,
                     non_enhancing=1.0, texture=0.5, noise=0.5, smoothing_mm=0.6)  # fmt: skip


def structure_levels(name: str, rng: np.random.Generator) -> np.ndarray:
    """A structure's intensity per sequence, drawn from its :data:`LEVELS` ranges."""
    return np.array([rng.uniform(*r) for r in LEVELS[name]], dtype=np.float32) * WHITE_MATTER_LEVEL


def tumour_contrast(contrast: np.ndarray, strength: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A case's tumour contrasts, moved by ``strength`` from the first generator's towards a draw
    from the ranges measured on real scans (:data:`CALIBRATED_CONTRAST`).

    Args:
        contrast: (sequences, tissues) relative intensities of core.synth.mri.CONTRAST.
        strength: 0 (unchanged) to 1 (the draw); linear in between.
        rng: the case's realism stream (8 draws when strength > 0, so the look-alikes drawn after
            it differ from the same case's at strength 0).

    Returns:
        (the case's contrast matrix, non-enhancing tumour's intensity per sequence relative to
        oedema's). At strength 0: a copy of ``contrast`` and ones (unused then), without drawing
        from ``rng``.
    """
    out = np.array(contrast, dtype=np.float32, copy=True)
    if not strength:
        return out, np.ones(len(SEQUENCES), np.float32)
    oedema, necrosis, flair = TISSUES.index("oedema"), TISSUES.index("necrosis"), SEQUENCES.index("flair")
    target = out.copy()
    for (sequence, tissue), (low, high) in CALIBRATED_CONTRAST.items():
        target[SEQUENCES.index(sequence), TISSUES.index(tissue)] = rng.uniform(low, high)
    drawn = target[flair, oedema] * np.float32(rng.uniform(*NECROSIS_FLAIR_TO_OEDEMA))
    target[flair, necrosis] = min(drawn, out[flair, necrosis])
    ratios = np.array([rng.uniform(*r) for r in NON_ENHANCING_TO_OEDEMA], np.float32)
    return out + np.float32(strength) * (target - out), ratios


def _patches(rng: np.random.Generator, shape, correlation_mm: float, cover: float) -> np.ndarray:
    """A smooth 0-1 mask covering about ``cover`` of the volume in blobs of ``correlation_mm``."""
    field = smooth_field(rng, shape, correlation_mm)
    cut = np.quantile(field[::4, ::4, ::4], 1 - cover)
    return np.clip((field - cut) * 2.0, 0, 1).astype(np.float32)


def non_enhancing(labels: np.ndarray, strength: float, rng: np.random.Generator, solid: bool = False):
    """Turn part (or all) of the enhancing rim into non-enhancing tumour core (label 1).

    Args:
        solid: when the whole rim turns, the necrosis it enclosed is non-enhancing tumour too
            (a tumour without enhancement has no fluid centre). Its true label (1) stays; raters
            of the ``enhancing`` protocol then draw the whole core as oedema (nothing enhances,
            so nothing is enclosed).

    Returns (new labels, boolean map of the voxels to render as non-enhancing tumour): render
    those with :data:`LEVELS` ``non_enhancing`` so they do not enhance.
    """
    rim = labels == ENHANCING
    changed = np.zeros(labels.shape, bool)
    if strength <= 0 or not rim.any():
        return labels, changed
    if rng.random() < 0.25 * strength:
        changed = rim | (labels == NECROSIS) if solid else rim
    else:
        box = ndimage.find_objects(rim.astype(np.uint8))[0]
        field = smooth_field(rng, tuple(s.stop - s.start for s in box), 10.0)
        values = field[rim[box]]
        share = rng.uniform(0, 0.5 * strength)
        cut = np.quantile(values, share) if share > 0 else -np.inf
        changed[box] = rim[box] & (field < cut)
    out = labels.copy()
    out[changed] = NECROSIS
    return out, changed


def _depth(mask: np.ndarray) -> np.ndarray:
    """Approximate distance in mm (1 mm voxels) from each voxel of ``mask`` to its outside, 0 outside.

    Computed on a grid of half the resolution (8x fewer voxels) and brought back by repetition:
    the factors here need distances to about +-1 mm, not exactly.
    """
    half = mask[::2, ::2, ::2]
    depth = ndimage.distance_transform_edt(half).astype(np.float32) * 2
    full = depth.repeat(2, 0).repeat(2, 1).repeat(2, 2)[: mask.shape[0], : mask.shape[1], : mask.shape[2]]
    return np.where(mask, np.maximum(full, 1), 0).astype(np.float32)


def _layers(mask: np.ndarray, n: int, outward: bool = False) -> np.ndarray:
    """Exact 1 mm layers: voxel value k (1..n) in the k-th shell inside (or outside) ``mask``'s edge,
    as k erosions (dilations) with the 6-neighbour cross would peel them, beyond the array's edge
    counting as outside: the city-block distance to the other side, in one pass (2-3x faster)."""
    if outward:
        distance = ndimage.distance_transform_cdt(~mask, metric="taxicab")
    else:
        distance = ndimage.distance_transform_cdt(np.pad(mask, 1), metric="taxicab")[1:-1, 1:-1, 1:-1]
    return np.where(distance <= n, distance, 0).astype(np.uint8)


def lookalikes(tissues: np.ndarray, labels: np.ndarray, realism: Realism, rng: np.random.Generator):
    """Maps of the look-alike structures, each with its intensities per sequence.

    Args:
        tissues: (4, X, Y, Z) deformed WM, GM, CSF, mask fractions (crop grid).
        labels: canonical tumour labels on the same grid.

    Returns:
        (list of (name, (X, Y, Z) float32 fraction map, (4,) intensities), residue mask): the
        residue mask marks voxels outside the brain that skull stripping left in.
    """
    shape = labels.shape
    brain = tissues[MASK] > 0.5
    free = labels == 0
    inside = _depth(brain)
    out = []
    if realism.edge_rim > 0:
        thickness = 1.0 + 2.0 * _patches(rng, shape, 20.0, 0.5)
        layer = _layers(brain, 3)
        rim = (layer > 0) & (layer <= thickness)
        cover = _patches(rng, shape, 12.0, min(1.0, 0.55 * realism.edge_rim))
        out.append(("edge_rim", (rim * cover * free).astype(np.float32), structure_levels("edge_rim", rng)))
    if realism.vessels > 0:
        # Tubes where two independent smooth fields both cross zero; near the surface and in sulci.
        a, b = smooth_field(rng, shape, 9.0), smooth_field(rng, shape, 9.0)
        width = 0.09 * realism.vessels
        tube = np.clip(1 - (np.abs(a) + np.abs(b)) / width, 0, 1)
        near = (inside > 0) & ((inside < 12) | (tissues[CSF] > 0.5))
        out.append(("vessels", (tube * near * free).astype(np.float32), structure_levels("vessels", rng)))
    deep_csf = (tissues[CSF] > 0.7) & (inside > 18)
    if realism.choroid_plexus > 0 and deep_csf.any():
        blobs = _patches(rng, shape, 5.0, 0.25 * realism.choroid_plexus) * deep_csf
        out.append(("choroid_plexus", (blobs * free).astype(np.float32), structure_levels("choroid_plexus", rng)))
    if realism.periventricular_caps > 0 and deep_csf.any():
        reach = 2 + round(3 * realism.periventricular_caps)
        layer = _layers(deep_csf, reach, outward=True)
        band = np.where(layer > 0, 1 - layer / (reach + 1), 0) * brain
        band *= _patches(rng, shape, 15.0, 0.6)
        levels = structure_levels("periventricular_caps", rng)
        out.append(("periventricular_caps", (band * free).astype(np.float32), levels))
    if realism.csf_flair > 0:
        patches = _patches(rng, shape, 14.0, 0.35 * realism.csf_flair) * tissues[CSF]
        out.append(("csf_flair", (patches * free).astype(np.float32), structure_levels("csf_flair", rng)))
    residue = np.zeros(shape, bool)
    if realism.residue > 0:
        reach = max(1, round(3 * realism.residue))
        layer = _layers(brain, reach, outward=True)
        depth = reach * _patches(rng, shape, 16.0, 0.4)
        residue = (layer > 0) & (layer <= depth)
        out.append(("residue", residue.astype(np.float32), structure_levels("residue", rng)))
    return out, residue


def add_lookalikes(ideal: np.ndarray, structures) -> np.ndarray:
    """Blend each structure's intensity into the (4, X, Y, Z) noise-free images by its fraction
    (in place; only the voxels a structure touches are computed)."""
    for _, fraction, levels in structures:
        where = np.nonzero(fraction > 0)
        weight = np.clip(fraction[where], 0, 1)
        texture = 1 + 0.1 * (weight - 0.5)
        for index in range(len(ideal)):
            values = ideal[index][where]
            ideal[index][where] = values * (1 - weight) + weight * levels[index] * texture
    return ideal


def heterogeneity(shape, strength: float, rng: np.random.Generator) -> np.ndarray:
    """(4, X, Y, Z) multiplicative sub-cluster field: three regions per sequence of +-strength.

    Each sequence gets its own partition (tertiles of a smooth field, with 1-2 mm soft
    borders), so a tissue is a mixture of sub-clusters, as the SynthSeg family draws it.
    """
    out = np.ones((len(SEQUENCES), *shape), np.float32)
    if strength <= 0:
        return out
    for index in range(len(SEQUENCES)):
        field = smooth_field(rng, shape, 18.0)
        low, high = np.quantile(field[::4, ::4, ::4], [1 / 3, 2 / 3])
        offsets = rng.uniform(-strength, strength, 3).astype(np.float32)
        steep = np.float32(4.0)
        first = np.clip((field - low) * steep + 0.5, 0, 1)
        second = np.clip((field - high) * steep + 0.5, 0, 1)
        out[index] = 1 + offsets[0] + first * (offsets[1] - offsets[0]) + second * (offsets[2] - offsets[1])
    return out


def rigid_coordinates(shape, shift_mm, angles_deg) -> np.ndarray:
    """(3, X, Y, Z) sampling coordinates of a rigid motion about the volume's centre."""
    centre = (np.asarray(shape, np.float32) - 1) / 2
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, np.float64))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    matrix = (rx @ ry @ rz).astype(np.float32)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    grid -= centre[:, None, None, None]
    coords = np.einsum("ij,j...->i...", matrix, grid)
    coords += (centre + np.asarray(shift_mm, np.float32))[:, None, None, None]
    return coords


def misregister(image: np.ndarray, realism: Realism, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A secondary sequence moved rigidly against T1c; returns the image and what was drawn."""
    shift = rng.uniform(-1, 1, 3) * realism.misregistration_mm
    angles = rng.uniform(-1, 1, 3) * realism.misregistration_deg
    moved = warp(image[None], rigid_coordinates(image.shape, shift, angles))[0]
    return moved, {"shift_mm": [round(float(s), 2) for s in shift], "angles_deg": [round(float(a), 2) for a in angles]}


@dataclass(frozen=True)
class Annotation:
    """How a hospital's raters draw the reference.

    protocol: ``brats`` (non-enhancing tumour is tumour core, label 1) or ``enhancing`` (the
        paper's hospitals: enhancing tumour plus the necrosis it encloses; non-enhancing
        tumour is left to the oedema, label 2).
    rater_mm: how far a rater's tumour-core border wanders from the true one (smooth, +-mm);
        the paper's raters agreed with Dice 0.93-0.94.
    """

    protocol: str = "brats"
    rater_mm: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


PROTOCOLS = ("brats", "enhancing")


def annotate(labels: np.ndarray, unenhanced: np.ndarray, annotation: Annotation, rng: np.random.Generator):
    """The reference a hospital's rater draws from the true labels (canonical uint8)."""
    if annotation.protocol not in PROTOCOLS:
        raise ValueError(f"unknown annotation protocol {annotation.protocol!r}; expected one of {PROTOCOLS}")
    out = labels.copy()
    if annotation.protocol == "enhancing":
        out[unenhanced] = OEDEMA
    if annotation.rater_mm > 0 and (out == ENHANCING).any() | (out == NECROSIS).any():
        core = (out == ENHANCING) | (out == NECROSIS)
        box = tuple(slice(max(s.start - 6, 0), s.stop + 6) for s in ndimage.find_objects(core.astype(np.uint8))[0])
        # The border moves where a smooth random field pushes it: threshold a blurred mask
        # at a level that wanders, by up to about rater_mm.
        blurred = ndimage.gaussian_filter(core[box].astype(np.float32), 1.5)
        wander = smooth_field(rng, blurred.shape, 12.0) * np.float32(0.12 * annotation.rater_mm)
        drawn = blurred > np.clip(0.5 + wander, 0.05, 0.95)
        sub = out[box]
        grown = drawn & ~core[box] & (sub != 0)  # grows only into oedema
        shrunk = core[box] & ~drawn
        sub[shrunk] = OEDEMA
        sub[grown] = np.where(ndimage.binary_erosion(drawn, iterations=2)[grown], NECROSIS, ENHANCING)
    return out
