"""Glioblastoma shape: lobulated mass, necrotic core, enhancing rim, oedema along white matter.

Volumes are sampled first and hit exactly by thresholding smooth level fields at quantiles,
so the enhancing-tumour volumes follow the paper's Table 1 (median about 33 mL, IQR about
14-66 mL) by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from core.sequences import ENHANCING, NECROSIS, OEDEMA
from core.synth.anatomy import CSF, GM, MASK, WM, load_atlas
from core.synth.fields import smooth_field

# Log-normal enhancing volume: median 33 mL, sigma 1.05 gives quartiles of about 16 and 67 mL.
ET_MEDIAN_ML = 33.0
ET_LOG_SIGMA = 1.05
ET_RANGE_ML = (3.0, 150.0)
WT_MAX_ML = 300.0


@dataclass(frozen=True)
class TumourSpec:
    """What was sampled for one tumour (recorded in the manifest)."""

    centre: tuple[float, float, float]  # crop voxel coordinates
    et_ml: float
    necrosis_fraction: float  # necrosis / tumour core
    oedema_ratio: float  # oedema / tumour core
    lobulation: float
    rim_irregularity: float
    mass_effect: float  # displacement at the tumour radius, as a fraction of it

    @property
    def tc_ml(self) -> float:
        return self.et_ml / (1 - self.necrosis_fraction)

    @property
    def oedema_ml(self) -> float:
        """Oedema volume; whole tumour is capped at ``WT_MAX_ML``."""
        return float(np.clip(self.oedema_ratio * self.tc_ml, 0, max(WT_MAX_ML - self.tc_ml, 0)))

    @property
    def radius_mm(self) -> float:
        return float((3 * self.tc_ml * 1000 / (4 * np.pi)) ** (1 / 3))

    def to_dict(self) -> dict:
        return {
            "tumour_centre": "x".join(f"{c:.1f}" for c in self.centre),
            "necrosis_fraction": round(self.necrosis_fraction, 3),
            "oedema_ratio": round(self.oedema_ratio, 3),
            "lobulation": round(self.lobulation, 3),
            "mass_effect": round(self.mass_effect, 3),
        }


SITES = ("deep", "anywhere")


@lru_cache(maxsize=2)
def _candidate_centres(sites: str = "deep") -> np.ndarray:
    """Tumour centres (atlas crop voxels).

    ``deep``: deep white matter, >= 12 mm from the midline, in the upper half of the brain.
    ``anywhere``: white or grey matter >= 6 mm inside the brain and from the midline, above
    the lowest fifth (temporal lobes included; the cerebellum and brainstem mostly excluded),
    as glioblastomas grow cortical and deep, frontal and temporal most often.
    """
    if sites not in SITES:
        raise ValueError(f"unknown tumour sites {sites!r}; expected one of {SITES}")
    tissues = load_atlas().tissues
    shape = np.asarray(tissues.shape[1:])
    x = np.arange(shape[0])[:, None, None]
    z = np.arange(shape[2])[None, None, :]
    if sites == "deep":
        ok = ndimage.binary_erosion(tissues[MASK] > 0.5, iterations=12) & (tissues[WM] > 0.8)
        ok &= np.abs(x - (shape[0] - 1) / 2) >= 12
        ok &= z >= 0.5 * shape[2]
    else:
        ok = ndimage.binary_erosion(tissues[MASK] > 0.5, iterations=6) & (tissues[WM] + tissues[GM] > 0.8)
        ok &= np.abs(x - (shape[0] - 1) / 2) >= 6
        ok &= z >= 0.2 * shape[2]
    return np.argwhere(ok)


def sample_tumour(rng: np.random.Generator, sites: str = "deep") -> TumourSpec:
    """Sample a tumour centre (atlas crop coordinates, see :func:`_candidate_centres`) and its volumes."""
    candidates = _candidate_centres(sites)
    centre = candidates[rng.integers(len(candidates))] + rng.uniform(-0.5, 0.5, 3)
    et_ml = float(np.clip(ET_MEDIAN_ML * np.exp(ET_LOG_SIGMA * rng.standard_normal()), *ET_RANGE_ML))
    return TumourSpec(
        centre=tuple(float(c) for c in centre),
        et_ml=et_ml,
        necrosis_fraction=float(rng.uniform(0.15, 0.45)),
        oedema_ratio=float(rng.uniform(0.9, 3.0)),
        lobulation=float(rng.uniform(0.12, 0.3)),
        rim_irregularity=float(rng.uniform(0.15, 0.45)),
        mass_effect=float(rng.uniform(0.2, 0.45)),
    )


def _threshold_volume(field: np.ndarray, allowed: np.ndarray, voxels: int) -> np.ndarray:
    """The ``voxels`` allowed voxels with the lowest field values."""
    values = field[allowed]
    voxels = int(np.clip(voxels, 0, values.size))
    if voxels == 0:
        return np.zeros_like(allowed)
    cut = np.partition(values, voxels - 1)[voxels - 1]
    return allowed & (field <= cut)


def grow_tumour(spec: TumourSpec, tissues: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Canonical label map (uint8) of the tumour on the deformed tissue maps' grid.

    Enhancing rim thickness varies (the necrosis level field has its own noise); the rim is
    at least 2 voxels thick; oedema follows white matter and spares CSF.
    """
    shape = tissues.shape[1:]
    brain = tissues[MASK] > 0.5
    radius = spec.radius_mm
    # Work inside a box around the tumour: 3 radii plus room for oedema.
    half = int(np.ceil(3.2 * radius + 20))
    centre = np.round(spec.centre).astype(int)
    box = tuple(slice(max(c - half, 0), min(c + half + 1, n)) for c, n in zip(centre, shape))
    sub_shape = tuple(s.stop - s.start for s in box)
    grid = np.meshgrid(*[np.arange(s.start, s.stop, dtype=np.float32) for s in box], indexing="ij", sparse=True)
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, spec.centre))) / radius
    sub_brain = brain[box] & (tissues[CSF][box] < 0.7)

    level = distance * (1 + spec.lobulation * smooth_field(rng, sub_shape, correlation_mm=0.8 * radius + 4))
    tumour = _threshold_volume(level, sub_brain, round(spec.tc_ml * 1000))
    core_level = distance * (1 + spec.rim_irregularity * smooth_field(rng, sub_shape, correlation_mm=0.5 * radius + 3))
    inner = ndimage.binary_erosion(tumour, iterations=2)
    necrosis = _threshold_volume(core_level, inner, round(spec.necrosis_fraction * spec.tc_ml * 1000))

    # Oedema: the tumour's blurred influence, stronger in white matter, thresholded at a volume.
    sigma = 0.35 * radius + 4
    spread = ndimage.gaussian_filter(tumour.astype(np.float32), sigma, truncate=2.5)
    spread *= 0.2 + tissues[WM][box] + 0.3 * tissues[GM][box]
    spread *= 1 + 0.3 * smooth_field(rng, sub_shape, correlation_mm=8.0)
    room = sub_brain & ~tumour & (tissues[CSF][box] < 0.5)
    oedema = _threshold_volume(-spread, room & (spread > 1e-3), round(spec.oedema_ml * 1000))

    labels = np.zeros(shape, dtype=np.uint8)
    sub = labels[box]
    sub[oedema] = OEDEMA
    sub[tumour] = ENHANCING
    sub[necrosis] = NECROSIS
    return labels
