"""The four MRI sequences from tissue properties, with partial-volume mixing and texture.

Relative intensities per tissue start from DESIGN.md section 2; the tumour columns are
calibrated on the real BraTS 2020 case 001, whose label medians relative to white matter are
about T1 0.57/0.48/0.73, T1c 1.37/0.58/0.71, T2 (CSF = 1) 1.1/1.3/0.9 and FLAIR 1.1/1.0/1.1
(enhancing/necrosis/oedema). Each voxel mixes the tissues it contains, so boundaries look like
acquired images.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from core.sequences import ENHANCING, NECROSIS, OEDEMA, SEQUENCES
from core.synth.anatomy import CSF, GM, MASK, WM
from core.synth.fields import smooth_field

TISSUES = ("wm", "gm", "csf", "oedema", "necrosis", "enhancing")
# Rows follow SEQUENCES (t1, t1c, t2, flair); columns follow TISSUES.
CONTRAST = np.array(
    [
        [1.00, 0.70, 0.30, 0.72, 0.48, 0.60],
        [1.00, 0.70, 0.30, 0.70, 0.55, 1.40],
        [0.45, 0.60, 1.00, 0.88, 1.05, 0.90],
        [0.50, 0.65, 0.10, 1.08, 0.90, 1.00],
    ],
    dtype=np.float32,
)
# Texture: std of a smooth multiplicative field per tissue (necrosis is the most heterogeneous).
TEXTURE = np.array([0.03, 0.04, 0.03, 0.08, 0.22, 0.15], dtype=np.float32)
WHITE_MATTER_LEVEL = 400.0  # scanner-independent intensity of white matter on T1


def tissue_fractions(tissues: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(6, X, Y, Z) fractions of TISSUES per voxel, with soft tumour boundaries.

    Tumour classes are smoothed a little (partial volume at 1 mm) and displace normal tissue.
    Outside the brain mask all fractions are 0.
    """
    brain = tissues[MASK]
    fractions = np.zeros((len(TISSUES), *labels.shape), dtype=np.float32)
    box = ndimage.find_objects((labels > 0).astype(np.uint8))
    tumour_total = np.zeros(labels.shape, dtype=np.float32)
    if box:
        box = tuple(slice(max(s.start - 3, 0), s.stop + 3) for s in box[0])
        for row, label in ((3, OEDEMA), (4, NECROSIS), (5, ENHANCING)):
            soft = ndimage.gaussian_filter((labels[box] == label).astype(np.float32), 0.6)
            fractions[row][box] = soft
        total = fractions[3:][(slice(None), *box)].sum(0)
        over = total > 1
        for row in (3, 4, 5):
            fractions[row][box][over] /= total[over]
        tumour_total[box] = np.minimum(total, 1)
    normal = tissues[[WM, GM, CSF]]
    normal_total = normal.sum(0)
    scale = np.where(normal_total > 0, (brain - tumour_total * brain) / np.maximum(normal_total, 1e-6), 0)
    fractions[:3] = normal * np.clip(scale, 0, None)
    fractions[3:] *= brain
    return fractions


def render_sequences(fractions: np.ndarray, rng: np.random.Generator, contrast: np.ndarray | None = None,
                     texture_scale: float = 1.0) -> np.ndarray:  # fmt: skip
    """Noise-free sequences (4, X, Y, Z) float32 in scanner-independent units.

    Args:
        fractions: (6, X, Y, Z) from :func:`tissue_fractions`.
        contrast: (4, 6) relative intensities; defaults to :data:`CONTRAST`.
        texture_scale: multiplies :data:`TEXTURE` (1 = the first generator's texture).
    """
    contrast = np.asarray(CONTRAST if contrast is None else contrast, dtype=np.float32)
    shape = fractions.shape[1:]
    # One smooth texture field T shared by all tissues, with tissue-specific strength s_t:
    # sum_t c_st f_t (1 + s_t T) = (C f)_s + T (C diag(s) f)_s, two small matrix products.
    texture = 0.6 * smooth_field(rng, shape, correlation_mm=3.0) + 0.8 * smooth_field(rng, shape, correlation_mm=10.0)
    flat = fractions.reshape(len(TISSUES), -1)
    images = contrast @ flat
    images += (contrast * (TEXTURE * np.float32(texture_scale))) @ flat * texture.reshape(1, -1)
    images *= WHITE_MATTER_LEVEL
    return images.reshape(len(contrast), *shape)


assert CONTRAST.shape == (len(SEQUENCES), len(TISSUES))
