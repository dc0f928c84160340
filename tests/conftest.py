"""Fixtures: small synthetic cases written on the fly in each naming and label scheme."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REFERENCE_CASE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "BraTS20_Training_001"
SHAPE = (24, 26, 20)

# File-name suffixes per naming scheme, in the order t1, t1c, t2, flair, seg.
NAMES = {
    "brats2020": ("t1", "t1ce", "t2", "flair", "seg"),
    "brats2023": ("t1n", "t1c", "t2w", "t2f", "seg"),
}


def phantom(shape=SHAPE, centre=(12, 13, 10)):
    """A glioblastoma phantom: necrosis ball (r<3), enhancing shell (3<=r<5), oedema (5<=r<8).

    Returns (images (4, X, Y, Z) float32, canonical labels uint8).
    """
    grid = np.indices(shape).astype(float)
    r = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
    labels = np.zeros(shape, np.uint8)
    labels[r < 8] = 2
    labels[r < 5] = 3
    labels[r < 3] = 1
    # Rows t1, t1c, t2, flair; columns background, necrosis, oedema, enhancing.
    base = np.array([[100, 45, 70, 60], [100, 50, 70, 140], [50, 95, 85, 80], [50, 80, 110, 90]], float)
    images = np.stack([base[s][labels] for s in range(4)]).astype(np.float32)
    images += np.random.default_rng(0).uniform(0, 1, images.shape).astype(np.float32)
    return images, labels


def save(data, path: Path, affine=None, dtype=None) -> Path:
    data = np.asarray(data)
    image = nib.Nifti1Image(data.astype(dtype or data.dtype), np.eye(4) if affine is None else affine)
    nib.save(image, str(path))
    return path


@pytest.fixture
def write_case(tmp_path):
    """Write a case folder: ``write_case(name, naming=..., missing=(...), seg_values={canonical: file value})``."""

    def make(name="case", naming="brats2020", missing=(), seg_values=None, with_seg=True, affine=None):
        folder = tmp_path / name
        folder.mkdir()
        images, labels = phantom()
        suffixes = NAMES[naming]
        sep = "_" if naming == "brats2020" else "-"
        for index, suffix in enumerate(suffixes[:4]):
            if ("t1", "t1c", "t2", "flair")[index] in missing:
                continue
            save(images[index].astype(np.int16), folder / f"{name}{sep}{suffix}.nii.gz", affine)
        if with_seg:
            values = seg_values or ({1: 1, 2: 2, 3: 4} if naming == "brats2020" else {1: 1, 2: 2, 3: 3})
            lut = np.zeros(4, np.uint8)
            for canonical, value in values.items():
                lut[canonical] = value
            save(lut[labels], folder / f"{name}{sep}seg.nii.gz", affine)
        return folder, images, labels

    return make


def write_phantom_cohort(root: Path, n: int = 3, size: int = 40, seed: int = 0) -> Path:
    """A tiny cohort of spherical tumours in noise (BraTS 2020 names) with a manifest.

    All cases are 'public'; the last one is the validation case. Fast to train on.
    """
    rng = np.random.default_rng(seed)
    lines = ["patient_id,hospital,split,t1,t1c,t2,flair,seg"]
    for k in range(n):
        centre = rng.uniform(14, size - 14, 3)
        images, labels = phantom((size,) * 3, centre)
        images += rng.normal(0, 3, images.shape).astype(np.float32)
        edge = np.indices((size,) * 3)
        brain = np.sqrt(sum((g - size / 2 + 0.5) ** 2 for g in edge)) < size / 2 - 1
        images *= brain
        labels = labels * brain
        name = f"P{k}"
        folder = root / name
        folder.mkdir(parents=True)
        files = []
        for suffix, volume in zip(("t1", "t1ce", "t2", "flair"), images):
            files.append(f"{name}/{name}_{suffix}.nii.gz")
            save(np.clip(volume, 0, None).astype(np.int16), root / files[-1])
        lut = np.array([0, 1, 2, 4], np.uint8)
        save(lut[labels], folder / f"{name}_seg.nii.gz")
        split = "val" if k == n - 1 else "train"
        lines.append(f"{name},public,{split},{','.join(files)},{name}/{name}_seg.nii.gz")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


@pytest.fixture
def phantom_cohort(tmp_path):
    return write_phantom_cohort(tmp_path / "cohort")
