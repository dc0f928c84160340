"""Per-patient brain anatomy: the MNI152 2009a template's tissue maps, deformed.

The template and its grey-matter, white-matter and brain-mask maps ship inside the nilearn
wheel, so nothing is downloaded. Each patient gets a smooth random deformation, a size
change and the mass effect of the tumour, applied in one backward warp.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from core.synth.fields import smooth_field, warp

MARGIN_VOXELS = 6


@dataclass(frozen=True)
class Atlas:
    """Tissue probability maps cropped to the brain's bounding box (plus a margin).

    ``tissues`` is (4, X, Y, Z) float32: white matter, grey matter, CSF, brain mask.
    ``offset`` places the crop in the full template grid of ``full_shape`` and ``affine``.
    """

    tissues: np.ndarray
    offset: tuple[int, int, int]
    full_shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.tissues.shape[1:])


WM, GM, CSF, MASK = range(4)


@lru_cache(maxsize=1)
def load_atlas() -> Atlas:
    """Load the MNI152 2009a 1 mm maps from nilearn's package data (no network)."""
    from nilearn import datasets

    gm = datasets.load_mni152_gm_template(resolution=1)
    affine = gm.affine.copy()
    gm = gm.get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)
    mask = (datasets.load_mni152_brain_mask(resolution=1).get_fdata(dtype=np.float32) > 0.5).astype(np.float32)
    gm, wm = gm * mask, wm * mask
    total = gm + wm
    over = total > 1
    gm[over] /= total[over]
    wm[over] /= total[over]
    csf = np.clip(mask - gm - wm, 0, 1)
    index = np.argwhere(mask > 0)
    lo = np.maximum(index.min(0) - MARGIN_VOXELS, 0)
    hi = np.minimum(index.max(0) + MARGIN_VOXELS + 1, mask.shape)
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    tissues = np.stack([wm[crop], gm[crop], csf[crop], mask[crop]]).astype(np.float32)
    tissues.setflags(write=False)
    return Atlas(tissues=tissues, offset=tuple(int(v) for v in lo), full_shape=mask.shape, affine=affine)


@dataclass(frozen=True)
class AnatomySpec:
    """What was sampled for one patient's anatomy (recorded in the manifest)."""

    scale: tuple[float, float, float]
    deformation_mm: float

    def to_dict(self) -> dict:
        return {
            "anatomy_scale": "x".join(f"{s:.3f}" for s in self.scale),
            "deformation_mm": round(self.deformation_mm, 2),
        }


def sample_anatomy(rng: np.random.Generator) -> AnatomySpec:
    """Head size varies by about +-6 % per axis; smooth deformation of 1.5-3.5 mm."""
    return AnatomySpec(
        scale=tuple(float(s) for s in rng.uniform(0.94, 1.06, 3)), deformation_mm=float(rng.uniform(1.5, 3.5))
    )


def deformed_tissues(
    atlas: Atlas,
    spec: AnatomySpec,
    rng: np.random.Generator,
    centre: np.ndarray,
    mass_mm: float,
    mass_radius_mm: float,
) -> np.ndarray:
    """Warp the atlas tissue maps for one patient.

    Args:
        centre: tumour centre in crop voxel coordinates (output space).
        mass_mm: outward displacement of tissue at ``mass_radius_mm`` from the centre.

    Returns:
        (4, X, Y, Z) float32 tissue fractions (WM, GM, CSF, mask) on the crop grid.
    """
    shape = atlas.shape
    axes = [np.arange(n, dtype=np.float32) for n in shape]
    brain_centre = (np.asarray(shape, dtype=np.float32) - 1) / 2
    coords = spec.deformation_mm * smooth_field(rng, shape, correlation_mm=24.0, channels=3)
    # Mass effect: tissue at distance r is taken from r - m(r); m peaks at the tumour's
    # radius and has slope < 1 everywhere, so the map stays one-to-one.
    offsets = [a - np.float32(c) for a, c in zip(axes, centre)]
    r = np.sqrt(offsets[0][:, None, None] ** 2 + offsets[1][None, :, None] ** 2 + offsets[2][None, None, :] ** 2)
    r += np.float32(1e-3)
    length = np.float32(max(mass_radius_mm, 1.0))
    push = np.float32(mass_mm) / length * np.exp(np.float32(0.5) * (1 - (r / length) ** 2))  # m(r) / r
    for axis, (a, offset, c, s) in enumerate(zip(axes, offsets, brain_centre, spec.scale)):
        view = [None, None, None]
        view[axis] = slice(None)
        coords[axis] += (c + (a - c) / np.float32(s))[tuple(view)]
        coords[axis] -= offset[tuple(view)] * push
    return warp(np.asarray(atlas.tissues), coords)


def place_in_template(volume: np.ndarray, atlas: Atlas, fill: float = 0) -> np.ndarray:
    """Put a crop-grid volume (leading channel axes allowed) back into the full template grid."""
    out = np.full((*volume.shape[:-3], *atlas.full_shape), fill, dtype=volume.dtype)
    region = tuple(slice(o, o + n) for o, n in zip(atlas.offset, volume.shape[-3:]))
    out[(..., *region)] = volume
    return out
