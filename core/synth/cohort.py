"""Cohort presets, the case plan (Table 2 of the paper) and rendering cases to BraTS folders.

A case is fully determined by (preset, scale, seed, case index): the plan fixes its hospital,
split and missing sequences, and its random streams come from
``SeedSequence([seed, hospital code, index within hospital])``, split into independent
streams for anatomy, tumour, texture and each sequence's acquisition, so a case can be
regenerated alone and dropping a sequence never changes the others.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from core.cases import MANIFEST_NAME, write_manifest
from core.io import Case, write_labels, write_volume
from core.sequences import (
    ENHANCING,
    NECROSIS,
    OEDEMA,
    PAPER_COMBINATIONS,
    SEQUENCES,
    availability,
    combination_name,
)
from core.synth.anatomy import MASK, AnatomySpec, deformed_tissues, load_atlas, place_in_template, sample_anatomy
from core.synth.mri import CONTRAST, TISSUES, WHITE_MATTER_LEVEL, render_sequences, tissue_fractions
from core.synth.realism import (
    REAL_SCANS,
    Annotation,
    Realism,
    add_lookalikes,
    annotate,
    heterogeneity,
    lookalikes,
    misregister,
    non_enhancing,
    structure_levels,
    tumour_contrast,
)
from core.synth.scanner import Acquisition, ScannerProfile, acquire
from core.synth.tumour import TumourSpec, grow_tumour, sample_tumour

HOSPITALS = ("public", "1", "2", "3", "4", "5", "6")
# Table 2 of the paper: cases per combination of missing secondaries, in the order of
# PAPER_COMBINATIONS (none, t1, t2, flair, t1+t2, t1+flair, t2+flair, t1+t2+flair).
TABLE2 = {
    "1": (89, 1, 2, 1, 0, 0, 1, 3),
    "2": (6, 0, 67, 0, 3, 0, 0, 0),
    "3": (59, 6, 0, 0, 0, 3, 1, 16),
    "4": (51, 1, 1, 0, 1, 0, 1, 18),
    "5": (61, 65, 2, 0, 0, 2, 1, 1),
    "6": (16, 1, 13, 2, 0, 0, 130, 9),
}
PUBLIC_SPLIT = {"train": 93, "val": 6, "test": 18}
HOSPITAL1_TEST = 20
HOSPITAL1_MIN_TEST = 5
SPLIT_FRACTIONS = {"val": 0.05, "test": 0.25}  # hospitals 2-6, the rest train

# Scanner profiles: the public set is curated 3 T data; each hospital shifts it its own way
# (thick T2/FLAIR, 1.5 T noise, weaker enhancement, other contrasts and intensity scales).
# Bias fields are what is left after N4 correction, which the paper ran on every hospital
# image: at most 0.12, near the public set's 0.1 (calibrated on a real BraTS case). Stronger
# fields (0.2-0.45 before) brightened white matter past the enhancing rim, so no model
# could find the tumour core on T1c alone.
PAPER_PROFILES = {
    "public": ScannerProfile(field_strength_t=(3.0, 3.0, 1.5), noise=(0.015, 0.03), bias=0.1,
                             slice_mm={"t2": (1.0, 2.0), "flair": (1.0, 2.0)}),
    "1": ScannerProfile(field_strength_t=(1.5,), noise=(0.03, 0.05), bias=0.1,
                        slice_mm={"t2": (3.0, 4.0), "flair": (3.0, 5.0)},
                        gamma={"flair": (0.8, 0.9), "t2": (0.9, 1.0)}, scale=(1.4, 1.8), enhancement=(0.75, 0.95)),
    "2": ScannerProfile(field_strength_t=(3.0,), noise=(0.02, 0.03), bias=0.12,
                        slice_mm={"t2": (4.0, 6.0), "flair": (4.0, 5.0), "t1": (1.0, 2.0)},
                        gamma={"t1": (1.15, 1.3)}, scale=(0.6, 0.8), enhancement=(1.05, 1.3)),
    "3": ScannerProfile(field_strength_t=(1.5,), noise=(0.05, 0.07), bias=0.08,
                        slice_mm={s: (3.0, 3.0) for s in SEQUENCES},
                        gamma={"flair": (1.1, 1.25), "t1c": (0.9, 1.0)}, scale=(2.0, 2.6)),
    "4": ScannerProfile(field_strength_t=(3.0,), noise=(0.015, 0.025), bias=0.12,
                        slice_mm={"t1": (2.0, 4.0), "t2": (2.0, 4.0), "flair": (2.0, 4.0)},
                        scale=(0.4, 0.6), enhancement=(0.85, 1.05)),
    "5": ScannerProfile(field_strength_t=(1.5,), noise=(0.035, 0.05), bias=0.1,
                        slice_mm={"flair": (5.0, 6.0), "t2": (4.0, 5.0)},
                        gamma={"t2": (1.1, 1.2)}, enhancement=(0.65, 0.85), scale=(1.0, 1.3)),
    "6": ScannerProfile(field_strength_t=(1.5, 3.0), noise=(0.03, 0.06), bias=0.1,
                        slice_mm={"t1": (1.0, 5.0), "t2": (3.0, 6.0), "flair": (3.0, 6.0)},
                        gamma={"t1": (0.85, 1.15), "flair": (0.85, 1.15)}, enhancement=(0.8, 1.2), scale=(0.8, 1.5)),
}  # fmt: skip


# The realistic preset's hospitals also differ where the paper's clinical data did beyond the
# scanner: hospital 1 enhances weaker and later (contrast given at another time, 1.5 T) and
# acquires T1 with another technique (spin echo: flatter grey/white contrast, here a gamma).
REALISTIC_PROFILES = PAPER_PROFILES | {
    "1": replace(PAPER_PROFILES["1"], enhancement=(0.45, 0.75), gamma={**PAPER_PROFILES["1"].gamma, "t1": (0.7, 0.8)}),
    "5": replace(PAPER_PROFILES["5"], enhancement=(0.5, 0.75)),
}


@dataclass(frozen=True)
class Preset:
    """A cohort design: hospitals, their missing-sequence counts, splits and scanners."""

    name: str
    profiles: dict[str, ScannerProfile]
    description: str = ""
    realism: Realism = Realism()  # real-scan factors (all off: the clean brains of the first generator)
    tumour_sites: str = "deep"  # "deep": cerebral white matter; "anywhere": cortical and deep, any lobe
    annotations: dict[str, Annotation] = field(default_factory=dict)  # per hospital; default BraTS's, exact


PRESETS = {
    "paper": Preset(
        "paper",
        PAPER_PROFILES,
        "Public set of 117 complete cases (93/6/18) and hospitals 1-6 with Table 2's missing sequences.",
    ),
    "realistic": Preset(
        "realistic",
        REALISTIC_PROFILES,
        "The paper's plan and hospitals, with what real scans show: bright rims and residue at the "
        "skull-stripping edge, vessels, choroid plexus, periventricular caps, imperfect CSF suppression on "
        "FLAIR, tissue sub-clusters, misregistration between sequences, tumours cortical and deep.",
        realism=REAL_SCANS,
        tumour_sites="anywhere",
        annotations={h: Annotation("enhancing", rater_mm=1.5) for h in HOSPITALS if h != "public"},
    ),
}
# The realistic world with tumour contrasts measured on real scans (Realism.tumour_contrast).
PRESETS["calibrated"] = replace(
    PRESETS["realistic"],
    name="calibrated",
    description=PRESETS["realistic"].description + " Oedema and non-enhancing tumour as bright as on real scans; "
    "tumours without enhancement are solid.",
    realism=replace(REAL_SCANS, tumour_contrast=1.0),
)


@dataclass(frozen=True)
class CasePlan:
    """One row of the cohort plan."""

    case_index: int
    patient_id: str
    hospital: str
    index_in_hospital: int
    split: str
    missing: frozenset[str]

    @property
    def available(self) -> tuple[bool, ...]:
        return availability(self.missing)


def _round(x: float) -> int:
    return int(np.floor(x + 0.5))


def _split_counts(n: int, fractions: dict[str, float]) -> dict[str, int]:
    counts = {split: _round(n * f) for split, f in fractions.items()}
    counts["train"] = n - sum(counts.values())
    return counts


@lru_cache(maxsize=16)
def plan_cohort(preset: str = "paper", scale: float = 1.0, seed: int = 0) -> tuple[CasePlan, ...]:
    """The cases of a cohort: hospital, split and missing sequences of each.

    At scale 1 the counts are exactly Table 2's; at scale S each cell keeps ``round(S x n)``
    cases (so every cell with S x n >= 0.5 keeps one) and hospital 1 keeps at least 5
    complete test cases.

    Raises:
        ValueError: unknown preset or a scale that leaves no case.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    if not 0 < scale <= 10:
        raise ValueError(f"scale must be in (0, 10], got {scale}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7919]))
    rows: list[tuple[str, str, frozenset[str]]] = []

    n_public = max(1, _round(117 * scale))
    public = _split_counts(n_public, {k: v / 117 for k, v in PUBLIC_SPLIT.items() if k != "train"})
    rows += [("public", split, frozenset()) for split in ("train", "val", "test") for _ in range(public[split])]

    for hospital, counts in TABLE2.items():
        cells = [(missing, _round(scale * n)) for missing, n in zip(PAPER_COMBINATIONS, counts)]
        if hospital == "1":
            n_test = max(HOSPITAL1_MIN_TEST, _round(HOSPITAL1_TEST * scale))
            cells[0] = (cells[0][0], max(cells[0][1], n_test))
            cases = [(missing, "train") for missing, n in cells for _ in range(n)]
            cases = [(m, "test" if i < n_test else s) for i, (m, s) in enumerate(cases)]
        else:
            flat = [missing for missing, n in cells for _ in range(n)]
            order = rng.permutation(len(flat))
            counts_by_split = _split_counts(len(flat), SPLIT_FRACTIONS)
            labels = ["test"] * counts_by_split["test"] + ["val"] * counts_by_split["val"]
            labels += ["train"] * counts_by_split["train"]
            cases = [(flat[i], split) for i, split in zip(order, labels)]
        # Shuffle so that patient numbers do not reveal the missing pattern.
        cases = [cases[i] for i in rng.permutation(len(cases))]
        rows += [(hospital, split, missing) for missing, split in cases]

    plans, per_hospital = [], {h: 0 for h in HOSPITALS}
    for index, (hospital, split, missing) in enumerate(rows):
        per_hospital[hospital] += 1
        k = per_hospital[hospital]
        prefix = "PUB" if hospital == "public" else f"H{hospital}"
        plans.append(CasePlan(index, f"SYN_{prefix}_{k:04d}", hospital, k, split, missing))
    return tuple(plans)


@dataclass(frozen=True)
class CaseSpec:
    """Everything sampled for one case before rendering."""

    anatomy: AnatomySpec
    tumour: TumourSpec
    field_strength_t: float
    enhancement: float
    acquisitions: dict[str, Acquisition]

    def to_dict(self) -> dict:
        row = {"field_strength_t": self.field_strength_t, "enhancement": round(self.enhancement, 3)}
        row |= self.anatomy.to_dict() | self.tumour.to_dict()
        for sequence, acquisition in self.acquisitions.items():
            row |= {f"{sequence}_{k}": v for k, v in acquisition.to_dict().items() if k != "bias"}
        return row


def _streams(plan: CasePlan, seed: int) -> dict[str, np.random.Generator]:
    code = HOSPITALS.index(plan.hospital)
    # New streams go at the end: earlier children, and so the cases of existing presets, stay the same.
    names = ("anatomy", "tumour", "scanner", "deform", "growth", "texture", *SEQUENCES, "realism", "rater")
    children = np.random.SeedSequence([seed, code, plan.index_in_hospital]).spawn(len(names))
    return {name: np.random.default_rng(child) for name, child in zip(names, children)}


def sample_case(preset: str, plan: CasePlan, seed: int) -> CaseSpec:
    """Sample anatomy, tumour and acquisition of one case (cheap; no rendering)."""
    streams = _streams(plan, seed)
    field_t, enhancement, acquisitions = PRESETS[preset].profiles[plan.hospital].sample(streams["scanner"])
    noise = PRESETS[preset].realism.noise
    if noise != 1.0:
        acquisitions = {s: a.with_(noise=round(a.noise * noise, 4)) for s, a in acquisitions.items()}
    tumour = sample_tumour(streams["tumour"], PRESETS[preset].tumour_sites)
    return CaseSpec(sample_anatomy(streams["anatomy"]), tumour, field_t, enhancement, acquisitions)


@dataclass
class SyntheticCase:
    """A rendered case on the MNI152 1 mm grid."""

    plan: CasePlan
    spec: CaseSpec
    images: np.ndarray  # (4, X, Y, Z) float32; missing sequences are zero
    labels: np.ndarray  # canonical uint8
    affine: np.ndarray
    acquisitions: dict[str, Acquisition] = field(default_factory=dict)
    tissues: np.ndarray | None = None  # (4, X, Y, Z) WM, GM, CSF, mask on the template grid, if kept
    misregistration: dict[str, dict] = field(default_factory=dict)  # per secondary sequence, if any

    @property
    def volumes_ml(self) -> dict[str, float]:
        """Tumour volumes in mL (1 mm voxels)."""
        count = {
            k: int(np.count_nonzero(self.labels == v))
            for k, v in (("necrosis", NECROSIS), ("oedema", OEDEMA), ("et", ENHANCING))
        }
        return {
            "et_ml": count["et"] / 1000,
            "tc_ml": (count["et"] + count["necrosis"]) / 1000,
            "wt_ml": sum(count.values()) / 1000,
            "necrosis_ml": count["necrosis"] / 1000,
            "oedema_ml": count["oedema"] / 1000,
        }

    def to_case(self) -> Case:
        """The case as :func:`core.io.read_case` would return it after writing (before int16 rounding)."""
        return Case(
            case_id=self.plan.patient_id,
            images=self.images,
            available=np.array(self.plan.available),
            labels=self.labels,
            affine=self.affine,
            spacing=(1.0, 1.0, 1.0),
            label_scheme="brats2020",
        )


def render_case(
    preset: str,
    plan: CasePlan,
    seed: int,
    acquisitions: dict[str, Acquisition] | None = None,
    keep_tissues: bool = False,
) -> SyntheticCase:
    """Render one case: deformed anatomy, tumour, sequences, acquisition, missing sequences.

    Args:
        acquisitions: override the sampled acquisition per sequence (domain-shift lab).
        keep_tissues: also return the deformed tissue maps (for teaching and tests).
    """
    spec = sample_case(preset, plan, seed)
    streams = _streams(plan, seed)  # fresh streams: rendering draws from its own ones
    atlas = load_atlas()

    tumour = spec.tumour
    brain_centre = (np.asarray(atlas.shape) - 1) / 2
    centre_out = brain_centre + (np.asarray(tumour.centre) - brain_centre) * np.asarray(spec.anatomy.scale)
    tumour = TumourSpec(**{**tumour.__dict__, "centre": tuple(float(c) for c in centre_out)})
    tissues = deformed_tissues(
        atlas, spec.anatomy, streams["deform"], centre_out, tumour.mass_effect * tumour.radius_mm, tumour.radius_mm
    )
    labels = grow_tumour(tumour, tissues, streams["growth"])
    realism = PRESETS[preset].realism
    rng = streams["realism"]
    labels, unenhanced = non_enhancing(labels, realism.non_enhancing, rng, solid=realism.tumour_contrast > 0)

    contrast, unenhanced_ratio = tumour_contrast(CONTRAST, realism.tumour_contrast, rng)
    enh = TISSUES.index("enhancing")
    t1c = SEQUENCES.index("t1c")
    contrast[t1c, enh] = contrast[t1c, 0] + (CONTRAST[t1c, enh] - contrast[t1c, 0]) * spec.enhancement
    ideal = render_sequences(tissue_fractions(tissues, labels), streams["texture"], contrast, realism.texture)

    brain = tissues[MASK] > 0.5
    moved: dict[str, dict] = {}
    if realism.any:
        ideal *= heterogeneity(labels.shape, realism.heterogeneity, rng)
        structures, residue = lookalikes(tissues, labels, realism, rng)
        if unenhanced.any():
            levels = structure_levels("non_enhancing", rng)  # drawn always: keeps the stream of realistic
            if realism.tumour_contrast:  # as bright as the case's own oedema says
                relative = contrast[:, TISSUES.index("oedema")] * unenhanced_ratio * WHITE_MATTER_LEVEL
                levels += np.float32(realism.tumour_contrast) * (relative - levels)
            structures.append(("non_enhancing", unenhanced.astype(np.float32), levels))
        ideal = add_lookalikes(ideal, structures)
        brain |= residue  # skull stripping keeps the residue
        if realism.misregistration_mm > 0 or realism.misregistration_deg > 0:
            for index, sequence in enumerate(SEQUENCES):
                if sequence == "t1c":  # the reference sequence: labels are drawn on it
                    continue
                image, moved[sequence] = misregister(ideal[index], realism, rng)  # drawn even when missing
                if sequence not in plan.missing:
                    ideal[index] = image
    acquisitions = dict(spec.acquisitions) | dict(acquisitions or {})
    images = np.zeros((len(SEQUENCES), *atlas.full_shape), dtype=np.float32)
    for index, sequence in enumerate(SEQUENCES):
        if sequence in plan.missing:
            continue
        acquired = acquire(ideal[index], brain, acquisitions[sequence], streams[sequence])
        if realism.smoothing_mm > 0:  # BraTS resampled every image to 1 mm: noise comes out smoother
            sigma = float(streams[sequence].uniform(0.4, 1.0) * realism.smoothing_mm)
            acquired = np.where(brain, ndimage.gaussian_filter(acquired, sigma), 0).astype(np.float32)
        images[index] = place_in_template(acquired, atlas)
    annotation = PRESETS[preset].annotations.get(plan.hospital)
    if annotation is not None:  # the hospital's rater draws the reference from the true labels
        labels = annotate(labels, unenhanced, annotation, streams["rater"])
    return SyntheticCase(
        plan=plan,
        spec=spec,
        images=images,
        labels=place_in_template(labels, atlas),
        affine=atlas.affine.copy(),
        acquisitions=acquisitions,
        tissues=place_in_template(tissues, atlas) if keep_tissues else None,
        misregistration=moved,
    )


def make_case(preset: str = "paper", scale: float = 1.0, seed: int = 0, case_index: int = 0) -> SyntheticCase:
    """Render case ``case_index`` of the cohort (preset, scale, seed) on its own."""
    plans = plan_cohort(preset, scale, seed)
    if not 0 <= case_index < len(plans):
        raise IndexError(f"case_index {case_index} out of range: the cohort has {len(plans)} cases")
    return render_case(preset, plans[case_index], seed)


# --------------------------------------------------------------------------- writing a cohort


def _relative_paths(plan: CasePlan) -> dict[str, str]:
    folder = plan.patient_id
    names = {"t1": "t1", "t1c": "t1ce", "t2": "t2", "flair": "flair"}
    paths = {s: "" if s in plan.missing else f"{folder}/{folder}_{names[s]}.nii.gz" for s in SEQUENCES}
    paths["seg"] = f"{folder}/{folder}_seg.nii.gz"
    return paths


def manifest_row(preset: str, scale: float, seed: int, plan: CasePlan, spec: CaseSpec, volumes: dict | None) -> dict:
    """The manifest row of a case; planned volumes when it was not rendered."""
    row = {"patient_id": plan.patient_id, "hospital": plan.hospital, "split": plan.split}
    row |= _relative_paths(plan)
    row |= {"missing": combination_name(plan.missing), "label_scheme": "brats2020"}
    row |= {"preset": preset, "scale": scale, "seed": seed, "case_index": plan.case_index}
    row |= spec.to_dict()
    planned = {"et_ml": round(spec.tumour.et_ml, 3), "tc_ml": round(spec.tumour.tc_ml, 3)}
    row |= {k: round(v, 3) for k, v in volumes.items()} if volumes else planned
    row["rendered"] = int(volumes is not None)
    return row


def _write_case(args: tuple[str, float, int, CasePlan, str]) -> dict:
    preset, scale, seed, plan, out = args
    folder = Path(out) / plan.patient_id
    sidecar = folder / "case.json"
    if sidecar.is_file():  # finished earlier: resume without rendering again
        return json.loads(sidecar.read_text())
    case = render_case(preset, plan, seed)
    paths = _relative_paths(plan)
    folder.mkdir(parents=True, exist_ok=True)
    for index, sequence in enumerate(SEQUENCES):
        if paths[sequence]:
            write_volume(case.images[index], Path(out) / paths[sequence], case.affine, np.int16)
    write_labels(case.labels, Path(out) / paths["seg"], case.to_case(), scheme="brats2020")
    row = manifest_row(preset, scale, seed, plan, case.spec, case.volumes_ml)
    row["bias"] = {s: list(a.bias) for s, a in case.acquisitions.items()}
    if case.misregistration:
        row["misregistration"] = json.dumps(case.misregistration, separators=(",", ":"))
    tmp = sidecar.with_suffix(".tmp")
    tmp.write_text(json.dumps(row))
    os.replace(tmp, sidecar)  # the sidecar appears only once every file is written
    return row


def _one_thread() -> None:
    """Pool workers render on one thread each (the pool is the parallelism). Only worker
    processes call this: rendering in the app's own process must not change its threads."""
    import torch

    torch.set_num_threads(1)


def write_cohort(
    out: str | Path,
    preset: str = "paper",
    scale: float = 1.0,
    seed: int = 0,
    manifest_only: bool = False,
    workers: int = 1,
    patient_ids: list[str] | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
    splits: tuple[str, ...] = (),
) -> Path:
    """Write a cohort as BraTS-style folders plus ``manifest.csv``; returns the manifest path.

    Finished cases (their ``case.json`` exists) are not rendered again, so an interrupted
    run resumes where it stopped, and the manifest lists every case rendered in ``out`` so
    far, so a cohort can be rendered in parts (training cases first, test cases later).

    Args:
        patient_ids, splits: render only these patients / splits (default: all).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plans = list(plan_cohort(preset, scale, seed))
    if patient_ids:
        unknown = set(patient_ids) - {p.patient_id for p in plans}
        if unknown:
            raise KeyError(f"unknown patient id(s) {sorted(unknown)} for preset {preset} at scale {scale}")
        plans = [p for p in plans if p.patient_id in set(patient_ids)]
    rows: list[dict] = []
    if splits:
        plans = [p for p in plans if p.split in splits]
    if manifest_only:
        for done, plan in enumerate(plans, start=1):
            rows.append(manifest_row(preset, scale, seed, plan, sample_case(preset, plan, seed), None))
            if on_progress:
                on_progress(done, len(plans), plan.patient_id)
    else:
        jobs = [(preset, scale, seed, plan, str(out)) for plan in plans]
        if workers > 1:
            with ProcessPoolExecutor(workers, initializer=_one_thread) as pool:
                for done, row in enumerate(pool.map(_write_case, jobs), start=1):
                    rows.append(row)
                    if on_progress:
                        on_progress(done, len(jobs), row["patient_id"])
        else:
            for done, job in enumerate(jobs, start=1):
                rows.append(_write_case(job))
                if on_progress:
                    on_progress(done, len(jobs), job[3].patient_id)
        rows = rendered_rows(out, preset, scale, seed)  # this call's cases and those rendered before
    manifest = out / MANIFEST_NAME
    write_manifest(rows, manifest, leave_out=("bias",))  # the bias coefficients stay in each case.json
    return manifest


def rendered_rows(out: Path, preset: str, scale: float, seed: int) -> list[dict]:
    """Manifest rows of every case of (preset, scale, seed) already rendered in ``out``, in plan order."""
    rows = []
    for plan in plan_cohort(preset, scale, seed):
        sidecar = out / plan.patient_id / "case.json"
        if sidecar.is_file():
            row = json.loads(sidecar.read_text())
            if (row.get("preset"), row.get("scale"), row.get("seed")) == (preset, scale, seed):
                rows.append(row)
    return rows
