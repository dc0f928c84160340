"""Reading cases: naming schemes, label schemes, missing sequences, every bad input's message."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest

from core.cases import inspect_path, read_manifest
from core.io import CaseError, read_case, write_labels
from tests.conftest import REFERENCE_CASE, SHAPE, phantom, save, write_phantom_cohort


def test_brats2020_names_and_labels(write_case):
    folder, images, labels = write_case("BraTS20_Training_007")
    case = read_case(folder)
    assert case.case_id == "BraTS20_Training_007"
    assert case.images.shape == (4, *SHAPE) and case.images.dtype == np.float32
    assert case.available.tolist() == [True] * 4
    np.testing.assert_array_equal(case.images, images.astype(np.int16).astype(np.float32))
    np.testing.assert_array_equal(case.labels, labels)  # 1, 2, 4 on disk -> 1, 2, 3
    assert case.label_scheme == "brats2020"
    assert case.spacing == (1.0, 1.0, 1.0)
    assert case.warnings == []


def test_brats2023_names_and_labels(write_case):
    folder, _, labels = write_case("BraTS-GLI-00001-000", naming="brats2023")
    case = read_case(folder)
    np.testing.assert_array_equal(case.labels, labels)
    assert case.label_scheme == "brats2023"


def test_uncompressed_nii_accepted(tmp_path):
    images, _ = phantom()
    for suffix, volume in zip(("t1", "t1ce", "t2", "flair"), images):
        save(volume, tmp_path / f"x_{suffix}.nii")
    case = read_case(tmp_path)
    assert case.available.all() and case.labels is None  # a case to segment has no reference


def test_tumour_core_only_labels(write_case):
    # Binary tumour-core mask: necrosis and enhancing -> 1, oedema -> 0.
    folder, _, labels = write_case(seg_values={1: 1, 2: 0, 3: 1})
    case = read_case(folder)
    assert case.label_scheme == "tc"
    np.testing.assert_array_equal(case.labels > 0, np.isin(labels, [1, 3]))


def test_permuted_labels_are_recognised_from_anatomy(write_case):
    # Values 1=enhancing, 2=necrosis, 3=oedema (as in the real BraTS20_Training_001 here).
    folder, _, labels = write_case(seg_values={3: 1, 1: 2, 2: 3})
    case = read_case(folder)
    np.testing.assert_array_equal(case.labels, labels)
    assert any("1=enhancing, 2=necrosis, 3=oedema" in w for w in case.warnings)


def test_manifest_scheme_overrides_detection(tmp_path, write_case):
    folder, _, labels = write_case(seg_values={3: 1, 1: 2, 2: 3})
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "patient_id,t1,t1c,t2,flair,seg,label_scheme\n"
        "p1,case/case_t1.nii.gz,case/case_t1ce.nii.gz,,case/case_flair.nii.gz,case/case_seg.nii.gz,brats2023\n"
    )
    (source,) = read_manifest(manifest)
    case = read_case(source)
    assert case.label_scheme == "brats2023" and case.warnings == []
    # Taken literally: file value 1 (enhancing shell) becomes canonical 1.
    np.testing.assert_array_equal(case.labels == 1, labels == 3)
    assert case.available.tolist() == [True, True, False, True]
    assert not case.images[2].any()


def test_unknown_label_values_are_named(write_case):
    folder, _, _ = write_case(seg_values={1: 1, 2: 2, 3: 7})
    with pytest.raises(CaseError, match=r"case_seg\.nii\.gz.*label values \[1, 2, 7\] fit no known scheme"):
        read_case(folder)


def test_labels_mixing_3_and_4(write_case):
    folder, _, _ = write_case(seg_values={1: 3, 2: 2, 3: 4})
    with pytest.raises(CaseError, match="mix 3"):
        read_case(folder)


@pytest.mark.parametrize("missing", [("t1",), ("t2",), ("flair",), ("t1", "t2", "flair")])
def test_missing_secondary_gives_zeros_and_flags(write_case, missing):
    folder, images, _ = write_case(missing=missing)
    case = read_case(folder)
    for index, sequence in enumerate(("t1", "t1c", "t2", "flair")):
        assert case.available[index] == (sequence not in missing)
        if sequence in missing:
            assert not case.images[index].any()
        else:
            np.testing.assert_array_equal(case.images[index], images[index].astype(np.int16))
    assert case.missing == frozenset(missing)


def test_missing_t1c_rejects(write_case):
    folder, _, _ = write_case(missing=("t1c",))
    with pytest.raises(CaseError, match="T1c is missing"):
        read_case(folder)


def test_all_zero_t1c_rejects_and_all_zero_secondary_is_missing(write_case):
    folder, _, _ = write_case()
    save(np.zeros(SHAPE, np.int16), folder / "case_t1ce.nii.gz")
    with pytest.raises(CaseError, match=r"case_t1ce\.nii\.gz: T1c is all zeros"):
        read_case(folder)
    folder2, _, _ = write_case("other")
    save(np.zeros(SHAPE, np.int16), folder2 / "other_flair.nii.gz")
    case = read_case(folder2)
    assert case.available.tolist() == [True, True, True, False]
    assert any("all zeros, treated as a missing flair" in w for w in case.warnings)


def test_empty_file(write_case):
    folder, _, _ = write_case()
    (folder / "case_t2.nii.gz").write_bytes(b"")
    with pytest.raises(CaseError, match=r"case_t2\.nii\.gz: t2 file is empty \(0 bytes\)"):
        read_case(folder)


def test_truncated_file(write_case):
    folder, _, _ = write_case()
    path = folder / "case_flair.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CaseError, match=r"case_flair\.nii\.gz: flair file is corrupt or truncated"):
        read_case(folder)


def test_corrupt_file(write_case):
    folder, _, _ = write_case()
    (folder / "case_t1.nii.gz").write_bytes(gzip.compress(b"not a nifti header" * 30))
    with pytest.raises(CaseError, match=r"case_t1\.nii\.gz: t1 file is corrupt"):
        read_case(folder)


def test_4d_single_volume_is_squeezed_and_multi_volume_rejected(write_case):
    folder, images, _ = write_case()
    save(images[2][..., None].astype(np.int16), folder / "case_t2.nii.gz")
    np.testing.assert_array_equal(read_case(folder).images[2], images[2].astype(np.int16))
    save(np.stack([images[2]] * 3, -1).astype(np.int16), folder / "case_t2.nii.gz")
    with pytest.raises(CaseError, match=r"case_t2\.nii\.gz: t2 has shape \(24, 26, 20, 3\); expected a 3-D volume"):
        read_case(folder)


def test_shape_mismatch_names_both_files(write_case):
    folder, _, _ = write_case()
    save(np.ones((24, 26, 21), np.int16), folder / "case_t2.nii.gz")
    with pytest.raises(
        CaseError, match=r"case_t2\.nii\.gz has shape \(24, 26, 21\) but case_t1ce\.nii\.gz has \(24, 26, 20\)"
    ):
        read_case(folder)


def test_voxel_size_mismatch_rejects(write_case):
    folder, images, _ = write_case()
    save(images[3].astype(np.int16), folder / "case_flair.nii.gz", affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    with pytest.raises(CaseError, match="voxel size"):
        read_case(folder)


def test_affine_offset_warns_and_uses_t1c(write_case):
    folder, _, labels = write_case()
    shifted = np.diag([-1.0, -1.0, 1.0, 1.0])
    shifted[1, 3] = 239
    save(nib.load(str(folder / "case_seg.nii.gz")).get_fdata().astype(np.uint8), folder / "case_seg.nii.gz", shifted)
    case = read_case(folder)
    np.testing.assert_array_equal(case.affine, np.eye(4))
    np.testing.assert_array_equal(case.labels, labels)
    assert any("case_seg.nii.gz: affine differs" in w for w in case.warnings)


def test_nan_voxels_reject(write_case):
    folder, images, _ = write_case()
    bad = images[0].copy()
    bad[3, 4, 5] = np.nan
    bad[1, 1, 1] = np.inf
    save(bad, folder / "case_t1.nii.gz")
    with pytest.raises(CaseError, match=r"case_t1\.nii\.gz: t1 has 2 NaN/Inf voxels"):
        read_case(folder)


def test_anisotropic_spacing_is_resampled_to_1mm(tmp_path):
    # 1 x 1 x 3 mm voxels: 10 slices cover 27 mm -> 28 slices at 1 mm.
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    ramp = np.broadcast_to(np.arange(10, dtype=np.float32) * 30, (8, 9, 10)).copy() + 5
    labels = np.zeros((8, 9, 10), np.uint8)
    labels[2:6, 2:6, 3:6] = 4
    for suffix in ("t1", "t1ce", "t2", "flair"):
        save(ramp, tmp_path / f"c_{suffix}.nii.gz", affine)
    save(labels, tmp_path / "c_seg.nii.gz", affine)
    case = read_case(tmp_path)
    assert case.shape == (8, 9, 28) and case.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_allclose(case.affine, np.eye(4))
    # Linear resampling of a linear ramp in z (30 per 3 mm = 10 per mm) is exact.
    np.testing.assert_allclose(case.images[1, 0, 0], 5 + 10 * np.arange(28), atol=1e-4)
    # Label slab z in [3, 6) at 3 mm covers 9..15 mm; nearest neighbour keeps 8..16 (rounding at 7.5/16.5).
    assert np.flatnonzero(case.labels[3, 3]).tolist() == list(range(8, 17))
    assert case.original_grid.shape == (8, 9, 10)
    assert any("resampled to 1 mm" in w for w in case.warnings)


def test_cohort_reading_reports_bad_cases_and_keeps_going(tmp_path, write_case):
    write_case("good1")
    bad, _, _ = write_case("bad")
    (bad / "bad_t2.nii.gz").write_bytes(b"")
    write_case("good2", missing=("flair",))
    (tmp_path / "notes").mkdir()  # a folder without NIfTI files is reported too
    report = inspect_path(tmp_path)
    by_id = {c["case_id"]: c for c in report["cases"]}
    assert report["n_cases"] == 4 and report["n_accepted"] == 2 and not report["ok"]
    assert by_id["good1"]["ok"] and by_id["good2"]["missing"] == ["flair"]
    assert "bad_t2.nii.gz: t2 file is empty" in by_id["bad"]["reasons"][0]
    assert "no BraTS-named NIfTI files" in by_id["notes"]["reasons"][0]
    json.dumps(report)  # JSON-ready


def test_manifest_errors(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("patient_id,t1c\nA,a.nii.gz\n")
    with pytest.raises(CaseError, match=r"m\.csv: manifest lacks column\(s\) \['t1', 't2', 'flair'\]"):
        read_manifest(manifest)
    manifest.write_text("patient_id,t1,t1c,t2,flair\nA,,a.nii.gz,,\nA,,b.nii.gz,,\n")
    with pytest.raises(CaseError, match="'A' on lines 2 and 3"):
        read_manifest(manifest)
    manifest.write_text("patient_id,t1,t1c,t2,flair\nA,,nothere.nii.gz,,\n")
    with pytest.raises(CaseError, match=r"nothere\.nii\.gz: t1c file not found"):
        read_case(read_manifest(manifest)[0])


def test_write_labels_round_trip_keeps_affine_and_header(tmp_path, write_case):
    affine = np.array([[-1.0, 0, 0, 90], [0, -1.0, 0, 126], [0, 0, 1.0, -72], [0, 0, 0, 1]])
    folder, _, labels = write_case(affine=affine)
    case = read_case(folder)
    out = write_labels(case.labels, tmp_path / "pred.nii.gz", case)
    image = nib.load(str(out))
    np.testing.assert_array_equal(image.affine, affine)
    assert image.get_data_dtype() == np.uint8
    assert int(image.header["sform_code"]) == int(nib.load(str(folder / "case_t1ce.nii.gz")).header["sform_code"])
    written = np.asarray(image.dataobj)
    assert set(np.unique(written)) == {0, 1, 2, 4}  # BraTS 2020 values by default
    np.testing.assert_array_equal(read_case(folder).labels, labels)
    # Reading the written file with the images gives the same canonical labels.
    (folder / "case_seg.nii.gz").unlink()
    out.rename(folder / "case_seg.nii.gz")
    np.testing.assert_array_equal(read_case(folder).labels, labels)


def test_write_labels_rejects_wrong_shape(tmp_path, write_case):
    folder, _, _ = write_case()
    case = read_case(folder)
    with pytest.raises(CaseError, match="labels have shape"):
        write_labels(np.zeros((3, 3, 3), np.uint8), tmp_path / "p.nii.gz", case)


@pytest.mark.skipif(not REFERENCE_CASE.is_dir(), reason="the real BraTS case is not redistributed with the repository")
def test_reads_real_brats2020_case():
    case = read_case(REFERENCE_CASE)
    assert case.images.shape == (4, 240, 240, 155)
    assert case.available.all()
    counts = np.bincount(case.labels.ravel(), minlength=4)
    # On disk: 1 (27742 voxels, bright on T1c, enclosing 2), 2 (15443, enclosed), 3 (168794, outermost).
    assert counts[1:].tolist() == [15443, 168794, 27742]
    t1c = case.images[1]
    assert np.median(t1c[case.labels == 3]) > 1.5 * np.median(t1c[case.labels == 2])


def test_label_map_read_alone_uses_topology(write_case):
    from core.io import read_label_map

    folder, _, labels = write_case(seg_values={3: 1, 1: 2, 2: 3})  # 1 = enhancing, 2 = necrosis, 3 = oedema
    canonical, spacing, affine = read_label_map(folder / "case_seg.nii.gz")
    np.testing.assert_array_equal(canonical, labels)
    assert spacing == (1.0, 1.0, 1.0) and affine.shape == (4, 4)
    # An explicit scheme is taken literally.
    literal, _, _ = read_label_map(folder / "case_seg.nii.gz", scheme="brats2023")
    np.testing.assert_array_equal(literal == 3, labels == 2)


def test_a_written_manifest_reads_back_with_hospital_split_and_missing(tmp_path):
    from core.cases import DEFAULT_HOSPITAL, MANIFEST_HEAD, manifest_summary, read_manifest_rows, write_manifest

    rows = [
        {"patient_id": "A", "hospital": "3", "split": "test", "t1": "", "t1c": "A/t1c.nii.gz", "t2": "A/t2.nii.gz",
         "flair": "", "seg": "A/seg.nii.gz", "missing": "t1+flair", "extra": 7, "bias": [1, 2]},
        {"patient_id": "B", "hospital": "public", "split": "train", "t1": "B/t1.nii.gz", "t1c": "B/t1c.nii.gz",
         "t2": "B/t2.nii.gz", "flair": "B/flair.nii.gz", "seg": "", "more": "x"},
    ]  # fmt: skip
    write_manifest(rows, tmp_path / "manifest.csv", leave_out=("bias",))
    columns, back = read_manifest_rows(tmp_path / "manifest.csv")
    assert columns == [*MANIFEST_HEAD, "extra", "more"]  # the head first, then others as met
    assert back[0]["extra"] == "7" and back[0]["more"] == "" and back[1]["t1"] == "B/t1.nii.gz"
    assert not (tmp_path / "manifest.tmp").exists()
    assert manifest_summary(tmp_path) == [
        {"patient_id": "A", "hospital": "3", "split": "test", "missing": "t1+flair"},
        {"patient_id": "B", "hospital": "public", "split": "train", "missing": ""},  # as written: empty
    ]
    # Without a missing column (nor hospital or split) it comes from the empty secondary paths.
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "manifest.csv").write_text("patient_id,t1,t1c,t2,flair\nC,,c.nii.gz,,c2.nii.gz\n")
    assert manifest_summary(tmp_path / "plain") == [
        {"patient_id": "C", "hospital": DEFAULT_HOSPITAL, "split": "", "missing": "t1+t2"}
    ]
    assert manifest_summary(tmp_path / "nowhere") == []
    # Without a manifest: the case folders it holds (real BraTS folders, say), FLAIR missing where its file is
    cohort = write_phantom_cohort(tmp_path / "folders", n=2).parent
    (cohort / "manifest.csv").unlink()
    (cohort / "P1" / "P1_flair.nii.gz").unlink()
    (cohort / "notes").mkdir()  # a folder of no case's files is not listed
    (cohort / "notes" / "readme.txt").write_text("x")
    assert manifest_summary(cohort) == [
        {"patient_id": "P0", "hospital": DEFAULT_HOSPITAL, "split": "", "missing": "none"},
        {"patient_id": "P1", "hospital": DEFAULT_HOSPITAL, "split": "", "missing": "flair"},
    ]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.csv").write_text("patient_id,t1\nD,x\n")
    with pytest.raises(CaseError, match="lacks column"):
        manifest_summary(tmp_path / "bad")
