"""Acquisition model: what a hospital's scanner and protocol do to an ideal image.

Per sequence: misregistration (a shift and an in-plane rotation against T1c), contrast (gamma),
enhancement strength (T1c), slice thickness (through-plane averaging, resampled back to 1 mm),
smooth bias field (TorchIO's polynomial model, same maths), intensity scale and Rician noise,
then skull stripping. Parameters are explicit and deterministic, so
the same module powers the cohort presets and the app's domain-shift lab.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from core.sequences import SEQUENCES
from core.synth.fields import resize, warp
from core.synth.mri import WHITE_MATTER_LEVEL

BIAS_ORDER = 3
N_BIAS_COEFFICIENTS = (BIAS_ORDER + 1) * (BIAS_ORDER + 2) * (BIAS_ORDER + 3) // 6
SLICE_AXIS = 2  # axial slices: thickness acts along the third (inferior-superior) axis


@dataclass(frozen=True)
class Acquisition:
    """How one sequence was acquired. All values explicit so a case can be explained."""

    slice_mm: float = 1.0
    gamma: float = 1.0
    noise: float = 0.0  # Rician sigma as a fraction of white-matter intensity
    bias: tuple[float, ...] = field(default_factory=lambda: (0.0,) * N_BIAS_COEFFICIENTS)
    scale: float = 1.0  # final intensity scale
    shift_mm: float = 0.0  # misregistration against T1c: a shift along the first (left-right) axis
    rotate_deg: float = 0.0  # and an in-plane rotation (about the slice axis)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Acquisition:
        data = dict(data)
        data["bias"] = tuple(float(b) for b in data.get("bias", ()))
        return cls(**data)

    def with_(self, **changes) -> Acquisition:
        return replace(self, **changes)


@dataclass(frozen=True)
class ScannerProfile:
    """A hospital's range of protocols; each case draws its acquisition from it."""

    field_strength_t: tuple[float, ...] = (3.0,)
    slice_mm: dict[str, tuple[float, float]] = field(default_factory=dict)  # per sequence, default 1 mm
    gamma: dict[str, tuple[float, float]] = field(default_factory=dict)  # per sequence, default 1
    noise: tuple[float, float] = (0.02, 0.04)  # at 3 T; 1.5 T is sqrt(2) noisier
    bias: float = 0.15  # coefficients drawn uniformly in +-bias
    scale: tuple[float, float] = (0.9, 1.1)
    enhancement: tuple[float, float] = (0.9, 1.1)  # multiplies the T1c enhancement over white matter

    def sample(self, rng: np.random.Generator) -> tuple[float, float, dict[str, Acquisition]]:
        """Draw (field strength, enhancement, acquisition per sequence) for one case."""
        field_t = float(rng.choice(self.field_strength_t))
        enhancement = float(rng.uniform(*self.enhancement))
        scale = float(rng.uniform(*self.scale))
        noise_factor = np.sqrt(3.0 / field_t)
        out = {}
        for sequence in SEQUENCES:
            out[sequence] = Acquisition(
                slice_mm=round(float(rng.uniform(*self.slice_mm.get(sequence, (1.0, 1.0)))), 2),
                gamma=round(float(rng.uniform(*self.gamma.get(sequence, (1.0, 1.0)))), 3),
                noise=round(float(rng.uniform(*self.noise) * noise_factor), 4),
                bias=tuple(round(float(b), 4) for b in rng.uniform(-self.bias, self.bias, N_BIAS_COEFFICIENTS)),
                scale=round(scale * float(rng.uniform(0.95, 1.05)), 4),
            )
        return field_t, enhancement, out


def bias_coefficients(strength: float, seed: int = 0) -> tuple[float, ...]:
    """Polynomial bias coefficients drawn in +-strength (a reproducible field of that strength)."""
    rng = np.random.default_rng([seed, 4242])
    return tuple(round(float(c), 4) for c in rng.uniform(-strength, strength, N_BIAS_COEFFICIENTS))


def polynomial_field(shape: tuple[int, int, int], coefficients, order: int = BIAS_ORDER) -> np.ndarray:
    """exp(sum of c * x^i y^j z^k, i + j + k <= order) on coordinates scaled to [-1, 1].

    TorchIO's ``RandomBiasField`` model (same coordinates, term order and arithmetic, so the
    same floats; the tests compare the two).
    """
    ranges = [np.arange(-n / 2, n / 2) + 0.5 for n in shape]
    meshes = np.asarray(np.meshgrid(*ranges, indexing="ij"))
    for mesh in meshes:
        if mesh.max() > 0:
            mesh /= mesh.max()
    x, y, z = meshes
    field = np.zeros(shape)
    terms = [(i, j, k) for i in range(order + 1) for j in range(order + 1 - i) for k in range(order + 1 - i - j)]
    for coefficient, (i, j, k) in zip(coefficients, terms):
        field += coefficient * x**i * y**j * z**k
    return np.exp(field).astype(np.float32)


def bias_field(shape: tuple[int, int, int], coefficients: tuple[float, ...]) -> np.ndarray:
    """Multiplicative bias field (:func:`polynomial_field`), computed at 1/4 and upsampled.

    The field is an order-3 polynomial, so the coarse grid loses nothing visible.
    """
    if not any(coefficients):
        return np.ones(shape, dtype=np.float32)
    coarse = tuple(max(4, n // 4) for n in shape)
    return resize(polynomial_field(coarse, coefficients), shape)


def thick_slices(volume: np.ndarray, slice_mm: float, axis: int = SLICE_AXIS) -> np.ndarray:
    """Simulate slices of ``slice_mm`` thickness: average over each slab, interpolate back to 1 mm."""
    n = volume.shape[axis]
    if slice_mm <= 1.0 + 1e-6:
        return volume
    slabs = max(2, int(round(n / slice_mm)))
    tensor = torch.from_numpy(np.ascontiguousarray(np.moveaxis(volume, axis, -1), dtype=np.float32))
    flat = tensor.reshape(1, -1, n)
    low = F.adaptive_avg_pool1d(flat, slabs)
    back = F.interpolate(low, size=n, mode="linear", align_corners=False)
    return np.moveaxis(back.reshape(tensor.shape).numpy(), -1, axis)


def rician(values: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of a complex signal with Gaussian noise of ``sigma`` in both channels."""
    if sigma <= 0:
        return values
    real = values + rng.standard_normal(values.shape, dtype=np.float32) * np.float32(sigma)
    imaginary = rng.standard_normal(values.shape, dtype=np.float32) * np.float32(sigma)
    return np.sqrt(real * real + imaginary * imaginary)


def acquire(ideal: np.ndarray, brain: np.ndarray, acquisition: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """One sequence as the scanner delivers it, skull-stripped (0 outside ``brain``).

    Args:
        ideal: (X, Y, Z) noise-free image, white matter near ``WHITE_MATTER_LEVEL``.
        brain: (X, Y, Z) boolean brain mask.
    """
    image = ideal
    if acquisition.shift_mm or acquisition.rotate_deg:
        from core.synth.realism import rigid_coordinates

        # Sampling at x - shift moves the content by +shift.
        angles = (0.0, 0.0, acquisition.rotate_deg)
        image = warp(image[None], rigid_coordinates(image.shape, (-acquisition.shift_mm, 0.0, 0.0), angles))[0]
    if acquisition.gamma != 1.0:
        image = WHITE_MATTER_LEVEL * np.power(np.maximum(image, 0) / WHITE_MATTER_LEVEL, acquisition.gamma)
    image = thick_slices(image, acquisition.slice_mm)
    image = image * bias_field(image.shape, acquisition.bias)
    out = np.zeros(image.shape, dtype=np.float32)
    # Noise only where the skull-stripped image keeps signal.
    out[brain] = rician(image[brain], acquisition.noise * WHITE_MATTER_LEVEL, rng) * np.float32(acquisition.scale)
    return out


def shift_case(images: np.ndarray, available, changes: dict[str, Acquisition], seed: int = 0) -> np.ndarray:
    """Apply acquisition changes to an already acquired case (the domain-shift lab).

    Each changed sequence is degraded as a scanner would: contrast (gamma), thicker slices,
    a bias field and extra Rician noise, with noise relative to that image's own median
    brain intensity (so it works on any intensity scale, real or synthetic). Zero voxels
    stay zero (skull-stripped background); unavailable sequences are left untouched.

    Args:
        images: (4, X, Y, Z) float32 in channel order SEQUENCES.
        changes: {sequence: Acquisition}; sequences not named are unchanged.

    Returns:
        A new (4, X, Y, Z) float32 array.
    """
    out = np.array(images, dtype=np.float32, copy=True)
    brain = np.any(out != 0, axis=0)
    children = np.random.SeedSequence(seed).spawn(len(SEQUENCES))
    for index, sequence in enumerate(SEQUENCES):
        change = changes.get(sequence)
        if change is None or not available[index] or not brain.any():
            continue
        level = float(np.median(out[index][brain])) or 1.0
        # acquire() works in units where white matter is WHITE_MATTER_LEVEL; rescale around it.
        ideal = out[index] * np.float32(WHITE_MATTER_LEVEL / level)
        shifted = acquire(ideal, brain, change, np.random.default_rng(children[index]))
        out[index] = shifted * np.float32(level / WHITE_MATTER_LEVEL)
    return out
