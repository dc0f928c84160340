"""The synthetic cohort: Table 2 counts, splits, determinism, contrast, tumour volumes."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from core.io import read_case
from core.sequences import ENHANCING, NECROSIS, OEDEMA, combination_name
from core.synth.cohort import plan_cohort, render_case, sample_case, write_cohort
from core.synth.scanner import Acquisition

# Table 2 of the paper, typed here from the paper (not imported from the code under test).
# Columns: complete, T1, T2, FLAIR, T1+T2, T1+FLAIR, T2+FLAIR, all three.
PAPER_TABLE2 = {
    "1": [89, 1, 2, 1, 0, 0, 1, 3],
    "2": [6, 0, 67, 0, 3, 0, 0, 0],
    "3": [59, 6, 0, 0, 0, 3, 1, 16],
    "4": [51, 1, 1, 0, 1, 0, 1, 18],
    "5": [61, 65, 2, 0, 0, 2, 1, 1],
    "6": [16, 1, 13, 2, 0, 0, 130, 9],
}
COLUMNS = ["none", "t1", "t2", "flair", "t1+t2", "t1+flair", "t2+flair", "t1+t2+flair"]


def counts(plans, hospital):
    found = Counter(combination_name(p.missing) for p in plans if p.hospital == hospital)
    return [found[c] for c in COLUMNS]


def test_table2_counts_and_splits_at_scale_1():
    plans = plan_cohort("paper", 1.0, 0)
    for hospital, row in PAPER_TABLE2.items():
        assert counts(plans, hospital) == row, hospital
    public = [p for p in plans if p.hospital == "public"]
    assert len(public) == 117 and all(not p.missing for p in public)
    assert Counter(p.split for p in public) == {"train": 93, "val": 6, "test": 18}
    h1 = [p for p in plans if p.hospital == "1"]
    test = [p for p in h1 if p.split == "test"]
    assert len(test) == 20 and all(not p.missing for p in test)
    assert Counter(p.split for p in h1) == {"test": 20, "train": 77}
    # Hospitals 2-6: 5 % validation and 25 % test, rounded; totals 76, 85, 73, 132, 171.
    expected = {"2": (4, 19), "3": (4, 21), "4": (4, 18), "5": (7, 33), "6": (9, 43)}
    for hospital, (val, test_n) in expected.items():
        split = Counter(p.split for p in plans if p.hospital == hospital)
        assert (split["val"], split["test"]) == (val, test_n), hospital
    assert len(plans) == 117 + 97 + 76 + 85 + 73 + 132 + 171
    assert len({p.patient_id for p in plans}) == len(plans)


@pytest.mark.parametrize("scale", [0.1, 0.25])
def test_scaled_cohort_keeps_proportions(scale):
    plans = plan_cohort("paper", scale, 0)
    for hospital, row in PAPER_TABLE2.items():
        got = counts(plans, hospital)
        for column, (n, k) in enumerate(zip(row, got)):
            if column == 0 and hospital == "1":
                continue  # hospital 1's complete cell is raised to hold its test cases
            assert k == int(np.floor(scale * n + 0.5)), (hospital, COLUMNS[column])
            if scale * n >= 0.5:
                assert k >= 1
    h1_test = [p for p in plans if p.hospital == "1" and p.split == "test"]
    assert len(h1_test) == max(5, round(20 * scale))


def test_plan_depends_on_seed_but_not_on_call():
    assert plan_cohort("paper", 0.1, 3) == plan_cohort("paper", 0.1, 3)
    a = [p.missing for p in plan_cohort("paper", 1.0, 1)]
    b = [p.missing for p in plan_cohort("paper", 1.0, 2)]
    assert a != b and sorted(map(sorted, a)) == sorted(map(sorted, b))


def test_enhancing_volumes_follow_table1():
    # Paper Table 1: enhancing tumour median about 31-40 mL, IQR about 14-66 mL.
    plans = plan_cohort("paper", 1.0, 0)
    volumes = np.array([sample_case("paper", p, 0).tumour.et_ml for p in plans])
    q1, median, q3 = np.percentile(volumes, [25, 50, 75])
    assert 28 <= median <= 40
    assert 12 <= q1 <= 20 and 55 <= q3 <= 75


@pytest.fixture(scope="module")
def rendered():
    """One public case with its tissue maps, and the same case with FLAIR missing."""
    plan = next(p for p in plan_cohort("paper", 0.1, 0) if p.hospital == "public")
    case = render_case("paper", plan, 0, keep_tissues=True)
    return plan, case


@pytest.mark.slow
def test_rendering_is_deterministic_and_volumes_as_planned(rendered):
    plan, case = rendered
    again = render_case("paper", plan, 0)
    np.testing.assert_array_equal(case.images, again.images)
    np.testing.assert_array_equal(case.labels, again.labels)
    volumes = case.volumes_ml
    assert volumes["et_ml"] == pytest.approx(case.spec.tumour.et_ml, abs=0.002)
    assert volumes["tc_ml"] == pytest.approx(case.spec.tumour.tc_ml, abs=0.002)
    assert volumes["oedema_ml"] == pytest.approx(case.spec.tumour.oedema_ml, rel=0.02)


@pytest.mark.slow
def test_missing_sequence_leaves_the_others_unchanged(rendered):
    plan, case = rendered
    from dataclasses import replace

    without_flair = render_case("paper", replace(plan, missing=frozenset({"flair"})), 0)
    assert not without_flair.images[3].any()
    np.testing.assert_array_equal(without_flair.images[:3], case.images[:3])


@pytest.mark.slow
def test_tissue_contrast_order(rendered):
    _, case = rendered
    wm, gm, csf, mask = case.tissues
    free = case.labels == 0
    regions = {
        "wm": (wm > 0.95) & free,
        "gm": (gm > 0.9) & free,
        "csf": (csf > 0.95) & free,
        "oedema": case.labels == OEDEMA,
        "necrosis": case.labels == NECROSIS,
        "enhancing": case.labels == ENHANCING,
    }
    median = {
        seq: {name: float(np.median(case.images[i][m])) for name, m in regions.items()}
        for i, seq in enumerate(("t1", "t1c", "t2", "flair"))
    }
    t1, t1c, t2, flair = (median[s] for s in ("t1", "t1c", "t2", "flair"))
    assert t1["wm"] > t1["gm"] > t1["csf"]
    assert t2["csf"] == max(t2[k] for k in ("wm", "gm", "csf"))
    assert flair["oedema"] > flair["wm"] and flair["csf"] == min(flair.values())
    assert t1c["enhancing"] == max(t1c.values())
    assert (case.images[:, mask < 0.5] == 0).all()  # skull-stripped


@pytest.mark.slow
def test_written_cohort_reads_back_and_regenerates_alone(tmp_path):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    manifest = write_cohort(tmp_path, "paper", 0.05, 0, patient_ids=["SYN_H2_0001", "SYN_H6_0002"])
    # Rendering in this process (as the app regenerates a case) leaves its thread count alone.
    assert torch.get_num_threads() == 2
    torch.set_num_threads(threads)
    plans = {p.patient_id: p for p in plan_cohort("paper", 0.05, 0)}
    for patient_id in ("SYN_H2_0001", "SYN_H6_0002"):
        from core.cases import find_cases

        source = next(s for s in find_cases(manifest) if s.case_id == patient_id)
        case = read_case(source)
        plan = plans[patient_id]
        assert case.missing == plan.missing and case.label_scheme == "brats2020"
        alone = render_case("paper", plan, 0)
        for index, available in enumerate(plan.available):
            expected = np.clip(np.rint(alone.images[index]), -32768, 32767) if available else 0
            np.testing.assert_array_equal(case.images[index], expected)
        np.testing.assert_array_equal(case.labels, alone.labels)
    # Rerunning skips finished cases (their files are not rewritten).
    before = (tmp_path / "SYN_H2_0001" / "SYN_H2_0001_t1ce.nii.gz").stat().st_mtime_ns
    write_cohort(tmp_path, "paper", 0.05, 0, patient_ids=["SYN_H2_0001"])
    assert (tmp_path / "SYN_H2_0001" / "SYN_H2_0001_t1ce.nii.gz").stat().st_mtime_ns == before


def test_acquisition_changes_images_deterministically():
    from core.synth.scanner import acquire, thick_slices

    rng = np.random.default_rng(0)
    ideal = np.zeros((20, 20, 30), np.float32)
    ideal[:, :, 15:] = 400
    brain = np.ones(ideal.shape, bool)
    # A 5 mm slice blurs the step edge over several 1 mm slices.
    thick = thick_slices(ideal, 5.0)
    assert 0 < thick[0, 0, 14] < 400 and thick[0, 0, 2] == 0 and thick[0, 0, 27] == 400
    noisy = acquire(ideal, brain, Acquisition(noise=0.05), rng)
    background = noisy[:, :, :10]
    # Rician noise on zero signal has mean sigma * sqrt(pi / 2) (sigma = 0.05 * 400 = 20).
    assert background.mean() == pytest.approx(20 * np.sqrt(np.pi / 2), rel=0.05)
    a = acquire(ideal, brain, Acquisition(noise=0.05), np.random.default_rng(1))
    b = acquire(ideal, brain, Acquisition(noise=0.05), np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)


def test_shift_case_degrades_only_the_changed_sequences():
    from core.synth.scanner import shift_case

    rng = np.random.default_rng(0)
    images = np.zeros((4, 20, 20, 30), np.float32)
    images[:, 2:18, 2:18, 2:28] = rng.uniform(900, 1100, (4, 16, 16, 26))
    shifted = shift_case(images, [True] * 4, {"flair": Acquisition(noise=0.1), "t2": Acquisition(slice_mm=5.0)}, 1)
    np.testing.assert_array_equal(shifted[:2], images[:2])  # t1, t1c untouched
    assert (shifted[:, images[0] == 0] == 0).all()  # background stays zero
    # FLAIR: Rician noise of 10 % of its median (~1000) raises the spread well above the input's ~58.
    assert shifted[3][images[3] > 0].std() > 2 * images[3][images[3] > 0].std()
    # T2: 5 mm slices average neighbouring slices, so the through-plane texture is smoother.
    through = lambda v: np.abs(np.diff(v[2:18, 2:18, 4:26], axis=2)).mean()  # noqa: E731
    assert through(shifted[2]) < 0.6 * through(images[2])
    again = shift_case(images, [True] * 4, {"flair": Acquisition(noise=0.1), "t2": Acquisition(slice_mm=5.0)}, 1)
    np.testing.assert_array_equal(again, shifted)


@pytest.mark.parametrize("shape", [(45, 54, 45), (4, 7, 5)])
def test_bias_field_equals_torchio(shape):
    from torchio.transforms.augmentation.intensity.random_bias_field import BiasField

    from core.synth.scanner import N_BIAS_COEFFICIENTS, polynomial_field

    coefficients = [float(c) for c in np.random.default_rng(1).uniform(-0.4, 0.4, N_BIAS_COEFFICIENTS)]
    expected = BiasField.generate_bias_field(np.zeros((1, *shape), np.float32), 3, coefficients)
    np.testing.assert_array_equal(polynomial_field(shape, coefficients), expected)


def test_the_bundled_demo_case_is_what_the_realistic_preset_renders():
    # The demo store's predictions are matched to regenerated cases by content hash, so the
    # "realistic" preset must keep rendering exactly what it rendered for the bundled cases.
    plan = next(p for p in plan_cohort("realistic", 1.0, 0) if p.patient_id == "SYN_H1_0008")
    case = render_case("realistic", plan, 0)
    stored = read_case(Path(__file__).resolve().parents[1] / "data_samples" / "SYN_H1_0008")
    np.testing.assert_array_equal(stored.images[1], np.clip(np.rint(case.images[1]), -32768, 32767))
    np.testing.assert_array_equal(stored.labels, case.labels)


def test_paper_preset_still_renders_what_it_rendered():
    # Stores filled on the "paper" preset match regenerated cases by content hash. These digests are
    # of SYN_H1_0008 as the paper preset rendered it for the demo bundled until the realistic world
    # replaced it (its files were checked against the renderer then).
    plan = next(p for p in plan_cohort("paper", 1.0, 0) if p.patient_id == "SYN_H1_0008")
    case = render_case("paper", plan, 0)
    t1c = np.clip(np.rint(case.images[1]), -32768, 32767).astype(np.int16)
    assert hashlib.sha256(t1c.tobytes()).hexdigest() == (
        "3ff95bc2a100f65060c4e897ad435092b570cedc2e15632621b0d8e5832f8b43"
    )
    assert hashlib.sha256(np.ascontiguousarray(case.labels, np.uint8).tobytes()).hexdigest() == (
        "f806049a264659c6aa532ac292a7ab7f90cca2d164c5fc3b49aceb7ff0c309df"
    )


def test_lookalikes_stay_out_of_the_tumour_and_residue_out_of_the_brain():
    from core.synth.anatomy import MASK, load_atlas
    from core.synth.realism import REAL_SCANS, Realism, lookalikes

    tissues = np.asarray(load_atlas().tissues)
    labels = np.zeros(tissues.shape[1:], np.uint8)
    centre = np.array(labels.shape) // 2
    labels[tuple(slice(c - 15, c + 15) for c in centre)] = OEDEMA
    structures, residue = lookalikes(tissues, labels, REAL_SCANS, np.random.default_rng(0))
    names = [name for name, _, _ in structures]
    assert names == ["edge_rim", "vessels", "choroid_plexus", "periventricular_caps", "csf_flair", "residue"]
    brain = tissues[MASK] > 0.5
    for name, fraction, levels in structures:
        assert fraction.min() >= 0 and fraction.max() <= 1 and fraction.any(), name
        assert not fraction[labels > 0].any(), name
        assert levels.shape == (4,)
    assert residue.any() and not (residue & brain).any()
    rim = dict((n, f) for n, f, _ in structures)["edge_rim"] > 0
    from scipy import ndimage

    assert not (rim & ndimage.binary_erosion(brain, iterations=3)).any()  # within 3 mm of the edge
    assert lookalikes(tissues, labels, Realism(), np.random.default_rng(0))[0] == []


def test_realistic_preset_records_misregistration_and_keeps_t1c_in_place():
    plan = plan_cohort("realistic", 0.05, 0)[0]
    case = render_case("realistic", plan, 0)
    assert set(case.misregistration) == {"t1", "t2", "flair"}
    for drawn in case.misregistration.values():
        assert max(abs(v) for v in drawn["shift_mm"]) <= 1.5 and max(abs(v) for v in drawn["angles_deg"]) <= 1.5
    assert case.labels.any()
    # T1c carries the labels: an enhancing tumour, where there is one, is brighter than the brain.
    t1c = case.images[1]
    if (case.labels == ENHANCING).any():
        assert np.median(t1c[case.labels == ENHANCING]) > np.median(t1c[(case.labels == 0) & (t1c > 0)])


def test_non_enhancing_tumour_turns_rim_into_label_1_only():
    from core.synth.realism import non_enhancing

    labels = np.zeros((30, 30, 30), np.uint8)
    labels[5:25, 5:25, 5:25] = OEDEMA
    labels[8:22, 8:22, 8:22] = ENHANCING
    labels[11:19, 11:19, 11:19] = NECROSIS
    same, none = non_enhancing(labels, 0.0, np.random.default_rng(0))
    assert same is labels and not none.any()
    for seed in range(6):
        out, changed = non_enhancing(labels, 1.0, np.random.default_rng(seed))
        assert np.all(labels[changed] == ENHANCING) and np.all(out[changed] == NECROSIS)
        np.testing.assert_array_equal(out[~changed], labels[~changed])
        assert changed.sum() <= (labels == ENHANCING).sum()


def test_hospital_annotation_leaves_out_non_enhancing_tumour_and_raters_wander():
    from core.synth.realism import Annotation, annotate

    grid = np.indices((48, 48, 48)) - 24
    radius = np.sqrt((grid**2).sum(0))
    labels = np.where(radius < 20, OEDEMA, 0).astype(np.uint8)
    labels[radius < 12] = ENHANCING
    labels[radius < 8] = NECROSIS
    unenhanced = (radius < 12) & (radius >= 8) & (grid[0] > 0)  # half the rim does not enhance
    labels[unenhanced] = NECROSIS
    exact = annotate(labels, unenhanced, Annotation("brats"), np.random.default_rng(0))
    np.testing.assert_array_equal(exact, labels)
    paper = annotate(labels, unenhanced, Annotation("enhancing"), np.random.default_rng(0))
    assert np.all(paper[unenhanced] == OEDEMA)
    np.testing.assert_array_equal(paper[~unenhanced], labels[~unenhanced])
    core = np.isin(labels, (NECROSIS, ENHANCING))
    rater_protocol = Annotation("brats", rater_mm=1.5)
    for seed in range(3):
        drawn = annotate(labels, np.zeros_like(unenhanced), rater_protocol, np.random.default_rng(seed))
        rater = np.isin(drawn, (NECROSIS, ENHANCING))
        agreement = 2 * (rater & core).sum() / (rater.sum() + core.sum())
        assert 0.85 < agreement < 0.99  # the paper's raters: 0.93-0.94
        np.testing.assert_array_equal(drawn > 0, labels > 0)  # the whole tumour is unchanged
    with pytest.raises(ValueError, match="protocol"):
        annotate(labels, unenhanced, Annotation("who knows"), np.random.default_rng(0))


def test_misregistration_moves_the_image_by_the_given_millimetres():
    from core.synth.scanner import acquire

    ideal = np.zeros((40, 40, 20), np.float32)
    ideal[10:20, 12:22, 5:15] = 400
    brain = np.ones(ideal.shape, bool)
    moved = acquire(ideal, brain, Acquisition(shift_mm=3.0), np.random.default_rng(0))
    # The content moves by +3 voxels along the first axis.
    np.testing.assert_allclose(moved[13:23, 12:22, 5:15], 400, atol=1e-3)
    assert moved[10:13, 12:22, 5:15].max() < 1e-3
    turned = acquire(ideal, brain, Acquisition(rotate_deg=90.0), np.random.default_rng(0))
    np.testing.assert_allclose(turned.sum(), ideal.sum(), rtol=0.02)  # a quarter turn in plane keeps the cube
    assert not np.allclose(turned, ideal)


def test_tumour_contrast_draws_oedema_per_case_and_keeps_the_order_real_scans_show():
    from core.synth.mri import CONTRAST
    from core.synth.realism import tumour_contrast

    rng = np.random.default_rng(0)
    same, _ = tumour_contrast(CONTRAST, 0.0, rng)
    np.testing.assert_array_equal(same, CONTRAST)
    assert rng.random() == np.random.default_rng(0).random()  # strength 0 draws nothing
    # Rows t1, t1c, t2, flair; columns wm, gm, csf, oedema, necrosis, enhancing (core.synth.mri).
    moved = np.zeros(CONTRAST.shape, bool)
    moved[[0, 2, 3], 3] = True
    moved[3, 4] = True
    flair_oedema = []
    for seed in range(20):
        full, ratios = tumour_contrast(CONTRAST, 1.0, np.random.default_rng(seed))
        half, _ = tumour_contrast(CONTRAST, 0.5, np.random.default_rng(seed))
        np.testing.assert_array_equal(full[~moved], CONTRAST[~moved])
        np.testing.assert_allclose(half, (CONTRAST + full) / 2, rtol=1e-6)
        # In CONTRAST units (ratios to white matter before rendering): oedema within the real
        # range of about 1.2-2.2x on T2 and 1.3-2.3x on FLAIR; necrosis no brighter than oedema on
        # FLAIR; non-enhancing tumour brighter than its oedema on T2, at least as bright on FLAIR,
        # no brighter on T1.
        assert 1.2 < full[2, 3] / full[2, 0] < 2.2 and 1.3 < full[3, 3] / full[3, 0] < 2.3
        assert full[3, 4] <= full[3, 3]
        assert ratios[2] > 1 and ratios[3] >= 1 and ratios[0] <= 1
        flair_oedema.append(full[3, 3])
    assert np.ptp(flair_oedema) > 0.2  # drawn per case, not one value


def test_a_tumour_without_enhancement_is_solid_when_asked():
    from core.synth.realism import non_enhancing

    labels = np.zeros((30, 30, 30), np.uint8)
    labels[5:25, 5:25, 5:25] = OEDEMA
    labels[8:22, 8:22, 8:22] = ENHANCING
    labels[11:19, 11:19, 11:19] = NECROSIS
    wholes = 0
    for seed in range(12):
        first = np.random.default_rng(seed).random()  # the draw that decides "the whole rim"
        out, changed = non_enhancing(labels, 1.0, np.random.default_rng(seed), solid=True)
        plain, plain_changed = non_enhancing(labels, 1.0, np.random.default_rng(seed))
        np.testing.assert_array_equal(out, plain)  # labels do not depend on solidity
        if first < 0.25:
            wholes += 1
            np.testing.assert_array_equal(changed, (labels == ENHANCING) | (labels == NECROSIS))
            np.testing.assert_array_equal(plain_changed, labels == ENHANCING)  # not solid: the rim only
            assert not (out == ENHANCING).any()
        else:
            np.testing.assert_array_equal(changed, plain_changed)
    assert wholes >= 1


@pytest.mark.slow
def test_calibrated_world_makes_non_enhancing_tumour_brighter_than_oedema_on_flair():
    # Real BraTS scans: a tumour that does not enhance is brighter than its oedema on FLAIR and
    # T2, and oedema is at most about 1.5x white matter on FLAIR. SYN_PUB_0001 has no enhancing tumour
    # in both worlds; white matter is where the deformed atlas is mostly white matter.
    plan = next(p for p in plan_cohort("realistic", 1.0, 0) if p.patient_id == "SYN_PUB_0001")
    ratios = {}
    for preset in ("realistic", "calibrated"):
        case = render_case(preset, plan, 0, keep_tissues=True)
        assert not (case.labels == ENHANCING).any()
        wm = (case.tissues[0] > 0.9) & (case.labels == 0)
        flair, t2 = case.images[3], case.images[2]
        core, oedema = case.labels == NECROSIS, case.labels == OEDEMA
        ratios[preset] = (
            np.median(flair[core]) / np.median(flair[oedema]),
            np.median(t2[core]) / np.median(t2[oedema]),
            np.median(flair[oedema]) / np.median(flair[wm]),
        )
    assert ratios["realistic"][0] < 1 < ratios["calibrated"][0]
    assert ratios["calibrated"][1] > 1.1
    assert ratios["calibrated"][2] < 1.6 < ratios["realistic"][2]
