"""What the values of a label map mean: schemes, detection, and a check against anatomy.

Canonical labels are 0 background, 1 necrosis, 2 oedema, 3 enhancing (core.sequences).
Functions here know nothing about files; they raise :class:`LabelError` and the reader adds
the file's name.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from core.sequences import ENHANCING, LABEL_NAMES, LABEL_SCHEMES, NECROSIS, OEDEMA

_ROLE_WORDS = {"necrosis": NECROSIS, "ncr": NECROSIS, "oedema": OEDEMA, "edema": OEDEMA, "ed": OEDEMA,
               "enhancing": ENHANCING, "et": ENHANCING}  # fmt: skip


class LabelError(ValueError):
    """Label values that fit no scheme, or a scheme that cannot be parsed."""


def parse_label_scheme(scheme: str) -> dict[int, int]:
    """A scheme name (brats2020, brats2023, tc) or an explicit map ``1=enhancing,2=necrosis,3=oedema``."""
    name = scheme.strip().lower()
    if name in LABEL_SCHEMES:
        return dict(LABEL_SCHEMES[name])
    mapping = {0: 0}
    for part in name.split(","):
        value, _, role = part.partition("=")
        try:
            mapping[int(value)] = _ROLE_WORDS[role.strip()]
        except (ValueError, KeyError):
            raise LabelError(
                f"label scheme {scheme!r} is neither one of {sorted(LABEL_SCHEMES)} "
                "nor a map like '1=necrosis,2=oedema,4=enhancing'"
            ) from None
    return mapping


def detect_label_scheme(values: set[int]) -> str:
    """The scheme implied by the non-zero label values present.

    Raises:
        LabelError: the values fit no scheme (the message lists them).
    """
    values = set(values) - {0}
    if 3 in values and 4 in values:
        raise LabelError(f"label values {sorted(values)} mix 3 (BraTS 2023) and 4 (BraTS 2020)")
    for name, allowed in (("brats2020", {1, 2, 4}), ("brats2023", {1, 2, 3})):
        if values <= allowed and (values & {3, 4} or values - {1}):
            return name
    if values <= {1}:
        return "tc" if values else "brats2023"
    raise LabelError(f"label values {sorted(values)} fit no known scheme (BraTS 2020: 1,2,4; 2023: 1,2,3; binary: 1)")


def infer_label_roles(seg: np.ndarray, t1c: np.ndarray | None) -> dict[int, int] | None:
    """Meaning of three tumour labels from glioblastoma anatomy, or None if unclear.

    Topology: oedema is the label whose boundary touches background most; of the other two,
    necrosis is the one mostly enclosed by the other (the enhancing rim). Contrast: enhancing
    tumour has the highest median T1c. Returns a map file value -> canonical label only when
    the topology is clear and, when a T1c is given, both cues name the same enhancing label
    (a label file read on its own has topology only).
    """
    values = [int(v) for v in np.unique(seg) if v != 0]
    if len(values) != 3:
        return None
    box = ndimage.find_objects((seg > 0).astype(np.uint8))[0]
    box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
    seg = seg[box]
    neighbours, brightness = {}, {}
    for v in values:
        mask = seg == v
        shell = seg[ndimage.binary_dilation(mask) & ~mask]
        neighbours[v] = {w: float((shell == w).mean()) if shell.size else 0.0 for w in (0, *values)}
        if t1c is not None:
            brightness[v] = float(np.median(t1c[box][mask]))
    oedema = max(values, key=lambda v: neighbours[v][0])
    a, b = (v for v in values if v != oedema)
    necrosis, enhancing = (a, b) if neighbours[a][b] >= neighbours[b][a] else (b, a)
    clear = neighbours[oedema][0] > 0.3 and neighbours[necrosis][enhancing] > 0.5
    if not clear or (brightness and max(values, key=brightness.get) != enhancing):
        return None
    return {0: 0, necrosis: NECROSIS, enhancing: ENHANCING, oedema: OEDEMA}


def to_canonical(data: np.ndarray, scheme: str | None, t1c: np.ndarray | None) -> tuple[np.ndarray, str, list[str]]:
    """Map a label map's values to canonical labels.

    Args:
        data: (X, Y, Z) label values as stored (any integer or integral float dtype).
        scheme: a scheme name or explicit map (taken literally), or None to detect it and
            check the meaning of three tumour labels against anatomy (and T1c, if given).

    Returns:
        (canonical uint8 labels, the scheme used, warnings).

    Raises:
        LabelError: NaN/Inf, non-integer or negative values, or values outside the scheme.
    """
    warnings: list[str] = []
    if not np.issubdtype(data.dtype, np.integer):
        if not np.all(np.isfinite(data)):
            raise LabelError("label map has NaN or Inf voxels")
        if not np.array_equal(data, np.round(data)):
            odd = data[data != np.round(data)][:3]
            raise LabelError(f"label map has non-integer values such as {odd.tolist()}")
    values = {int(v) for v in np.unique(data)}
    if min(values) < 0:
        raise LabelError(f"label map has negative values {sorted(v for v in values if v < 0)}")
    explicit = scheme is not None
    name = scheme if explicit else detect_label_scheme(values)
    mapping = parse_label_scheme(name)
    unknown = sorted(values - set(mapping))
    if unknown:
        raise LabelError(f"label values {unknown} are not in scheme {name!r} (allowed {sorted(mapping)})")
    if not explicit and name != "tc":
        roles = infer_label_roles(data, t1c)
        if roles is not None and any(roles[v] != mapping.get(v) for v in roles):
            described = ", ".join(f"{v}={LABEL_NAMES[roles[v]]}" for v in sorted(roles) if v)
            evidence = "anatomy and T1c contrast" if t1c is not None else "anatomy"
            warnings.append(
                f"values {sorted(values - {0})} would read as {name}, but {evidence} "
                f"say {described}; using the latter (state label_scheme in a manifest to override)"
            )
            mapping, name = roles, described
        if values == {0}:
            warnings.append("reference segmentation is empty")
    lut = np.zeros(max(max(values), max(mapping)) + 1, dtype=np.uint8)
    for value, canonical in mapping.items():
        lut[value] = canonical
    return lut[data.astype(np.int64)], name, warnings
