"""Smooth random fields and resizing helpers shared by the generator's stages."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def resize(volume: np.ndarray, shape: tuple[int, ...], mode: str = "trilinear") -> np.ndarray:
    """Resize a (X, Y, Z) or (C, X, Y, Z) float array with torch interpolation (corners aligned)."""
    tensor = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
    squeeze = tensor.ndim == 3
    tensor = tensor[None, None] if squeeze else tensor[None]
    kwargs = {"align_corners": True} if mode == "trilinear" else {}
    out = F.interpolate(tensor, size=tuple(shape), mode=mode, **kwargs)[0]
    return (out[0] if squeeze else out).numpy()


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], correlation_mm: float, channels: int = 0):
    """Zero-mean, unit-std random field smooth over about ``correlation_mm`` (1 mm voxels).

    White noise on a coarse grid upsampled with trilinear interpolation; cheap and smooth
    enough for textures, deformations and lobulation.
    """
    coarse = tuple(max(2, int(np.ceil(n / correlation_mm)) + 1) for n in shape)
    size = (channels, *coarse) if channels else coarse
    noise = rng.standard_normal(size).astype(np.float32)
    field = resize(noise, shape)
    std = field.std()
    return field / std if std > 0 else field


def warp(volumes: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Sample (C, X, Y, Z) volumes at voxel coordinates (3, X', Y', Z') with trilinear interpolation.

    Outside the input the result is 0.
    """
    c, *shape = volumes.shape
    grid = np.empty((*coords.shape[1:], 3), dtype=np.float32)
    # grid_sample's last axis is (W, H, D) = our (Z, Y, X), normalised to [-1, 1].
    for axis in range(3):
        grid[..., 2 - axis] = coords[axis] * (2.0 / (shape[axis] - 1)) - 1.0
    out = F.grid_sample(
        torch.from_numpy(np.ascontiguousarray(volumes, dtype=np.float32))[None],
        torch.from_numpy(grid)[None],
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )
    return out[0].numpy()
