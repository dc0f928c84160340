"""Sequence names, label schemes and the combinations of missing sequences.

Every other module takes its constants from here, so that the channel order, the label
values and the names of missing combinations are written once.
"""

from __future__ import annotations

from itertools import combinations

# Channel order of every in-memory case: (4, X, Y, Z) in this order.
SEQUENCES: tuple[str, ...] = ("t1", "t1c", "t2", "flair")
REFERENCE_SEQUENCE = "t1c"
SECONDARY: tuple[str, ...] = ("t1", "t2", "flair")
DISPLAY = {"t1": "T1", "t1c": "T1c", "t2": "T2", "flair": "FLAIR"}

# Canonical labels (the BraTS 2023 values).
BACKGROUND, NECROSIS, OEDEMA, ENHANCING = 0, 1, 2, 3
LABEL_NAMES = {BACKGROUND: "background", NECROSIS: "necrosis", OEDEMA: "oedema", ENHANCING: "enhancing"}
# As legends name them: label 1 is BraTS's "necrotic and non-enhancing tumour core", both at once.
LABEL_LEGEND = LABEL_NAMES | {NECROSIS: "necrosis / non-enhancing"}

# Label schemes found on disk -> mapping to canonical labels.
#   brats2020: BraTS 2017-2021, 1 necrosis / non-enhancing core, 2 oedema, 4 enhancing.
#   brats2023: BraTS 2023+, 1 necrosis, 2 oedema, 3 enhancing (identical to canonical).
#   tc: a binary tumour-core mask; kept as label 1, and only the tumour core is evaluable.
LABEL_SCHEMES: dict[str, dict[int, int]] = {
    "brats2020": {0: 0, 1: NECROSIS, 2: OEDEMA, 4: ENHANCING},
    "brats2023": {0: 0, 1: NECROSIS, 2: OEDEMA, 3: ENHANCING},
    "tc": {0: 0, 1: NECROSIS},
}

# Regions evaluated by the metrics, as sets of canonical labels.
REGIONS: dict[str, frozenset[int]] = {
    "tc": frozenset({NECROSIS, ENHANCING}),
    "wt": frozenset({NECROSIS, OEDEMA, ENHANCING}),
    "et": frozenset({ENHANCING}),
}
REGION_DISPLAY = {"tc": "tumour core", "wt": "whole tumour", "et": "enhancing tumour"}
REGIONS_BY_SCHEME = {"brats2020": ("tc", "wt", "et"), "brats2023": ("tc", "wt", "et"), "tc": ("tc",)}


def scorable_regions(label_scheme: str | None, num_classes: int = 4,
                     wanted: tuple[str, ...] = tuple(REGIONS)) -> tuple[str, ...]:  # fmt: skip
    """The regions of ``wanted`` that can be scored for a case and a model, in ``wanted``'s order.

    A binary tumour-core reference (label scheme ``tc``) and a two-class model (background /
    tumour core) both leave only the tumour core; any other scheme (or none) allows all three.
    """
    allowed = REGIONS_BY_SCHEME.get(label_scheme, tuple(REGIONS)) if num_classes != 2 else ("tc",)
    return tuple(r for r in wanted if r in allowed)


def _all_subsets(items: tuple[str, ...]) -> list[frozenset[str]]:
    return [frozenset(c) for k in range(len(items) + 1) for c in combinations(items, k)]


def combination_name(missing: frozenset[str] | set[str] | tuple[str, ...] | list[str]) -> str:
    """Name of a set of missing sequences: ``none``, ``flair``, ``t1+flair``, ``t1+t2+flair``.

    Sequences appear in channel order, so every set has exactly one name.
    """
    missing = set(missing)
    unknown = missing - set(SEQUENCES)
    if unknown:
        raise ValueError(f"unknown sequence(s) {sorted(unknown)}; expected some of {list(SEQUENCES)}")
    if not missing:
        return "none"
    return "+".join(s for s in SEQUENCES if s in missing)


def parse_combination(name: str) -> frozenset[str]:
    """Inverse of :func:`combination_name`; also accepts commas (``flair,t2``) and ``""``."""
    name = name.strip().lower()
    if name in ("", "none"):
        return frozenset()
    parts = [p.strip() for p in name.replace(",", "+").split("+") if p.strip()]
    unknown = [p for p in parts if p not in SEQUENCES]
    if unknown:
        raise ValueError(f"unknown sequence(s) {unknown} in {name!r}; expected some of {list(SEQUENCES)}")
    return frozenset(parts)


def missing_set(missing) -> frozenset[str]:
    """Sequences to treat as missing, as a frozenset (None: none).

    Raises:
        ValueError: an unknown sequence name.
    """
    missing = frozenset(missing or ())
    unknown = missing - set(SEQUENCES)
    if unknown:
        raise ValueError(f"unknown sequence(s) {sorted(unknown)} in missing; expected some of {list(SEQUENCES)}")
    return missing


def run_phrase(missing: frozenset[str] | set[str]) -> str:
    """How a run is described on buttons: ``all sequences`` or ``missing T1 + FLAIR``."""
    return "all sequences" if not missing else display_name(missing)


def display_name(missing: frozenset[str] | set[str]) -> str:
    """Display name: ``complete``, ``missing FLAIR``, ``missing T1 + FLAIR``."""
    if not missing:
        return "complete"
    return "missing " + " + ".join(DISPLAY[s] for s in SEQUENCES if s in missing)


# The paper's 8 combinations of missing secondaries (T1c always present), and the
# extended 15 in which T1c can be missing too (all four missing is never a case).
PAPER_COMBINATIONS: tuple[frozenset[str], ...] = tuple(_all_subsets(SECONDARY))
EXTENDED_COMBINATIONS: tuple[frozenset[str], ...] = tuple(s for s in _all_subsets(SEQUENCES) if len(s) < len(SEQUENCES))


COMBINATION_ORDER: tuple[str, ...] = tuple(combination_name(m) for m in EXTENDED_COMBINATIONS)


def order_combinations(names) -> list[str]:
    """Combination names in reading order, each once: complete first, then as EXTENDED_COMBINATIONS
    lists them (fewest missing first); any other names last, alphabetically."""
    present = set(names)
    return [n for n in COMBINATION_ORDER if n in present] + sorted(present - set(COMBINATION_ORDER))


def combination_label(name: str) -> str:
    """The display name of a combination name: ``t1+flair`` -> ``missing T1 + FLAIR``."""
    return display_name(parse_combination(name))


def combinations_for(count: int) -> tuple[frozenset[str], ...]:
    """The 8 paper combinations or the extended 15."""
    if count == 8:
        return PAPER_COMBINATIONS
    if count == 15:
        return EXTENDED_COMBINATIONS
    raise ValueError(f"combinations must be 8 or 15, got {count}")


def availability(missing: frozenset[str] | set[str]) -> tuple[bool, ...]:
    """Availability vector in channel order for a set of missing sequences."""
    return tuple(s not in missing for s in SEQUENCES)


class Sparsifier:
    """Sparsified training's random sequence dropout.

    Each sequence is independently dropped (replaced by zeros) with its own probability;
    the paper drops each secondary with p = 0.2 and never T1c. A draw never drops every
    available sequence: such a draw is redrawn. ``draw`` returns what was dropped, so each
    training sample can record it.
    """

    def __init__(self, p: float | dict[str, float] = 0.2, drop_t1c: bool = False):
        probabilities = dict.fromkeys(SECONDARY, p) if not isinstance(p, dict) else dict(p)
        unknown = set(probabilities) - set(SEQUENCES)
        if unknown:
            raise ValueError(f"unknown sequence(s) {sorted(unknown)} in dropout probabilities")
        if probabilities.get(REFERENCE_SEQUENCE, 0) > 0 and not drop_t1c:
            raise ValueError("T1c is never dropped in the paper's protocol; pass drop_t1c=True to allow it")
        for sequence, value in probabilities.items():
            if not 0 <= value < 1:
                raise ValueError(f"dropout probability for {sequence} must be in [0, 1), got {value}")
        self.p = {s: float(probabilities.get(s, 0.0)) for s in SEQUENCES}

    @property
    def active(self) -> bool:
        return any(self.p.values())

    def draw(self, rng, available=(True, True, True, True)) -> frozenset[str]:
        """Sequences to drop for one sample, among the available ones."""
        present = [s for s, ok in zip(SEQUENCES, available) if ok]
        if not self.active or not present:
            return frozenset()
        while True:
            dropped = frozenset(s for s in present if rng.random() < self.p[s])
            if len(dropped) < len(present):
                return dropped

    def to_dict(self) -> dict[str, float]:
        return dict(self.p)


def apply_missing(images, missing):
    """A copy of (4, ...) images with the channels in ``missing`` set to exactly zero."""
    out = images.copy()
    for sequence in missing:
        out[SEQUENCES.index(sequence)] = 0
    return out
