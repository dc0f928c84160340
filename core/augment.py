"""Domain randomisation of training windows, so synthetic-only training transfers to real scans.

In the spirit of SynthSeg (Billot et al., 2023): each window's intensities are redrawn around
what the generator made, per label (a Gaussian mixture over tumour classes, with sub-clusters
for normal brain), then a random monotonic contrast curve, bias, slice thickness, noise and a
small misregistration are applied per sequence. The network cannot rely on our generator's
exact intensities, only on what survives such changes: shape, context and relative contrast.

Works on normalised windows (whitened inside the brain, 0 outside). Channels that are missing
or dropped are not touched, so they stay exactly zero, and voxels outside the brain stay 0.
Every draw is returned, so a training run can say what it did.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import torch
from scipy import ndimage


@dataclass(frozen=True)
class Randomisation:
    """Ranges of the random changes, in whitened intensity units unless named otherwise.

    strength scales every range at once (0 = off, 1 = as below).
    """

    strength: float = 1.0
    label_shift: float = 0.35  # std of each tumour label's mean offset
    tissue_shift: float = 0.15  # std of each normal-brain sub-cluster's mean offset
    curve: float = 0.3  # x + a tanh(x), a in +-curve: a monotonic contrast change
    scale: float = 0.15  # x * s, s in 1 +- scale
    bias: float = 0.3  # additive linear field, largest value at the window's corners
    noise: float = 0.12  # Gaussian noise std, drawn in [0, noise]
    slice_mm: float = 5.0  # through-plane averaging over up to this many voxels, half the time
    shift_voxels: int = 1  # misregistration of each secondary sequence, in voxels per axis

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Randomisation:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


NOISE_BANK = 1 << 22  # standard normal values drawn once per process; a window's noise is a slice


@lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    return np.random.default_rng(0x5EED).standard_normal(NOISE_BANK, dtype=np.float32)


def _noise(rng: np.random.Generator, shape) -> np.ndarray:
    """Standard normal noise of ``shape``: a random slice of a fixed bank, 3x cheaper than a fresh
    draw; what a window gets still depends only on ``rng``."""
    size = int(np.prod(shape))
    bank = _noise_bank()
    if size > bank.size:
        return rng.standard_normal(shape, dtype=np.float32)
    start = int(rng.integers(bank.size - size + 1))
    return bank[start : start + size].reshape(shape)


def _shift(volume: np.ndarray, offsets) -> np.ndarray:
    """Integer shift with edge replication (no wrap-around)."""
    out = volume
    for axis, offset in enumerate(offsets):
        if offset:
            out = np.take(out, np.clip(np.arange(out.shape[axis]) - offset, 0, out.shape[axis] - 1), axis=axis)
    return out


def randomise_window(images: np.ndarray, labels: np.ndarray, channels, rng: np.random.Generator,
                     config: Randomisation = Randomisation()) -> dict:  # fmt: skip
    """Randomise the listed channels of one (4, S, S, S) normalised window in place.

    Args:
        images: (4, S, S, S) float array (float16 or float32), 0 outside the brain.
        labels: (S, S, S) canonical labels of the same window (0 background).
        channels: indices of the channels to change (the present ones; T1c = 1 is never shifted).

    Returns:
        What was drawn, per channel index.
    """
    k = float(config.strength)
    drawn: dict[int, dict] = {}
    if k <= 0:
        return drawn
    size = np.asarray(labels.shape, np.float32)
    grid = [np.linspace(-1, 1, int(n), dtype=np.float32) for n in size]
    labels = labels.clip(0, 3).astype(np.uint8)
    tumour = labels > 0
    normal_sample = ~tumour[::3, ::3, ::3]
    for c in channels:
        x = torch.from_numpy(images[c]).to(torch.float32, copy=True).numpy()  # numpy's float16 casts are slow
        brain = x != 0
        if not brain.any():
            continue
        offsets = rng.normal(0, config.label_shift * k, 4).astype(np.float32)
        offsets[0] = 0
        # One lookup adds both changes: tumour labels 1-3 move by their offset, normal brain
        # (codes 4-6) by the offset of its sub-cluster, the tertiles of its own intensities
        # estimated on every 27th voxel. Voxels outside the brain are zeroed at the end.
        table = np.zeros(7, np.float32)
        table[:4] = offsets
        sampled = x[::3, ::3, ::3]
        sample = sampled[normal_sample & (sampled != 0)]
        if sample.size > 30:
            low, high = np.quantile(sample, [1 / 3, 2 / 3])
            table[4:] = rng.normal(0, config.tissue_shift * k, 3).astype(np.float32)
            code = (x > low).view(np.uint8)
            code += (x > high).view(np.uint8)
            code += 4
            np.copyto(code, labels, where=tumour)
        else:
            code = labels
        x += table.take(code)
        curve = float(rng.uniform(-config.curve, config.curve) * k)
        scale = float(1 + rng.uniform(-config.scale, config.scale) * k)
        x = (x + curve * np.tanh(x)) * scale
        gradient = rng.uniform(-config.bias, config.bias, 4).astype(np.float32) * k
        x += gradient[0] / 2 + gradient[1] * grid[0][:, None, None] + gradient[2] * grid[1][None, :, None]
        x += gradient[3] * grid[2][None, None, :]
        thickness, axis = 1, int(rng.integers(3))
        if config.slice_mm > 1 and rng.random() < 0.5 * min(k, 1.0):
            thickness = int(rng.integers(2, max(3, int(round(config.slice_mm * k))) + 1))
            x = ndimage.uniform_filter1d(x, thickness, axis=axis, mode="nearest")
        shift = (0, 0, 0)
        if c != 1 and config.shift_voxels:
            shift = tuple(int(v) for v in rng.integers(-config.shift_voxels, config.shift_voxels + 1, 3))
            x = _shift(x, shift)
        sigma = float(rng.uniform(0, config.noise * k))
        if sigma > 0:
            x += _noise(rng, x.shape) * np.float32(sigma)
        x *= brain
        torch.from_numpy(images[c]).copy_(torch.from_numpy(x))
        drawn[c] = {"offsets": [round(float(o), 3) for o in offsets], "curve": round(curve, 3),
                    "scale": round(scale, 3), "slice": thickness, "axis": axis, "shift": shift,
                    "noise": round(sigma, 3)}  # fmt: skip
    return drawn
