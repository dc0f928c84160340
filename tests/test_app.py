"""One AppTest per page, asserting what the page must show."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def demo_cohort(monkeypatch):
    monkeypatch.setenv("GBM_DEMO_COHORT", str(ROOT / "data_samples"))
    monkeypatch.chdir(ROOT)


def demo_store_patients() -> dict[str, str]:
    """{patient: hospital} of the bundled demo results, read with plain SQL."""
    import sqlite3

    with sqlite3.connect(ROOT / "data_samples" / "results.sqlite") as db:
        return dict(db.execute("SELECT patient_id, hospital FROM cases"))


def bundled_patients() -> dict[str, str]:
    """{patient: hospital} of the bundled demo cases, read from their manifest with csv."""
    import csv

    with (ROOT / "data_samples" / "manifest.csv").open(newline="") as handle:
        return {row["patient_id"]: row["hospital"] for row in csv.DictReader(handle)}


def test_home_shows_what_is_loaded():
    at = AppTest.from_file(str(ROOT / "views" / "home.py"), default_timeout=60).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    patients = demo_store_patients() | bundled_patients()
    assert metrics["Demo cases"] == str(len(patients)) and metrics["Hospitals"] == str(len(set(patients.values())))
    assert metrics["Compute"].startswith(("CPU", "GPU"))
    assert "Not a medical device" in at.warning[0].value


def test_cases_page_lists_cases_and_shows_missing_sequences():
    at = AppTest.from_file(str(ROOT / "views" / "cases.py"), default_timeout=60).run()
    assert not at.exception
    table = at.dataframe[0].value
    bundled = ["SYN_PUB_0100", "SYN_H1_0008", "SYN_H2_0003", "SYN_H3_0004", "SYN_H6_0004"]
    assert set(table.loc[table["source"] == "bundled files", "patient_id"]) == set(bundled) == set(bundled_patients())
    regenerated = set(demo_store_patients()) - set(bundled)
    source = "regenerated (realistic preset, scale 1, seed 0)"
    assert set(table.loc[table["source"] == source, "patient_id"]) == regenerated
    assert dict(zip(table["patient_id"], table["sequences"]))["SYN_H3_0004"] == "missing T1 + T2 + FLAIR"
    at.selectbox(key="case_id").select("SYN_H2_0003").run()
    assert not at.exception
    options = at.radio(key="sequence").options
    assert options == ["T1", "T1c", "T2 (missing)", "FLAIR"]
    at.radio(key="sequence").set_value("T2 (missing)").run()
    assert any("T2 was not acquired" in i.value for i in at.info)


@pytest.fixture
def explorer_data(tmp_path, monkeypatch):
    """A phantom cohort and one small model, so the explorer predicts in a second."""
    import torch

    from core.io import read_case
    from core.model import build_model, save_model
    from core.preprocess import fit_landmarks
    from tests.conftest import write_phantom_cohort

    manifest = write_phantom_cohort(tmp_path / "cohort", n=2, size=40)
    case = read_case(manifest.parent / "P0")
    torch.manual_seed(0)
    model = build_model("deepmedic-lite")
    card = {"name": "TinyBraTS", "training": {"hospitals": ["public"]}, "sparsity": {"t1": 0, "t2": 0, "flair": 0},
            "normalisation": {"landmarks": fit_landmarks([(case.images, case.available)])}}  # fmt: skip
    save_model(model, tmp_path / "models" / "TinyBraTS", card)
    monkeypatch.setenv("GBM_DEMO_COHORT", str(manifest.parent))
    monkeypatch.setenv("GBM_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("GBM_DEMO_STORE", str(tmp_path / "no-demo-results.sqlite"))
    # The explorer's background predictions are tested on their own (tests/test_prefetch.py): off here,
    # so each page test takes one path, not whichever the worker's timing allows.
    monkeypatch.setenv("GBM_PREFETCH", "0")


def test_explorer_says_n_a_for_a_metric_the_reference_leaves_undefined(explorer_data):
    # P0 without enhancing tumour in its reference (BraTS label 4 drawn as necrosis): the enhancing region's
    # sensitivity and HD95 do not exist, and the page says so rather than printing nan.
    path = Path(os.environ["GBM_DEMO_COHORT"]) / "P0" / "P0_seg.nii.gz"
    image = nib.load(str(path))
    labels = np.asarray(image.dataobj).copy()
    assert (labels == 4).any()
    labels[labels == 4] = 1
    nib.save(nib.Nifti1Image(labels, image.affine, image.header), str(path))
    at = AppTest.from_file(str(ROOT / "views" / "explorer.py"), default_timeout=120)
    at.session_state["live_run"] = False
    at.run()
    next(b for b in at.button if b.label.startswith("Run TinyBraTS")).click().run()
    assert not at.exception
    enhancing = {m.label: m.value for m in at.metric[8:12]}  # tumour core, whole tumour, then enhancing tumour
    assert enhancing["Sensitivity"] == "n/a" and enhancing["HD95 mm"] == "n/a"
    volume = float(enhancing["Volume mL"])
    words = "The reference has no enhancing tumour: " + (f"the model's {volume:.1f} mL are all false positives"
                                                          if volume else "nor does the prediction")  # fmt: skip
    assert any(c.value.startswith(words) for c in at.caption)
    assert "nan" not in " ".join(m.value for m in at.metric)


def test_explorer_runs_the_model_and_shows_the_change(explorer_data):
    at = AppTest.from_file(str(ROOT / "views" / "explorer.py"), default_timeout=120)
    at.session_state["live_run"] = False  # the Run button (live switches: tests/test_page_explorer.py)
    at.run()
    assert not at.exception
    assert at.selectbox(key="model").value == "TinyBraTS" and at.selectbox(key="patient").value == "P0"
    assert any("Run the model" in i.value for i in at.info)
    run = next(b for b in at.button if b.label.startswith("Run TinyBraTS"))
    assert run.label == "Run TinyBraTS (all sequences)"
    run.click().run()
    assert not at.exception
    labels = [m.label for m in at.metric]
    assert labels.count("Dice") == 3 and "HD95 mm" in labels  # tumour core, whole tumour, enhancing
    assert any("**complete** · computed now on CPU (" in m.value for m in at.markdown)
    assert all(not m.delta for m in at.metric if m.label != "Volume mL")  # nothing to compare with yet
    # The button gives way to a caption at once: nothing is left to run for this combination.
    assert not any(b.label.startswith("Run TinyBraTS") for b in at.button)
    assert any("all sequences): this combination is computed already" in c.value for c in at.caption)
    at.toggle(key="use_flair_P0").set_value(False).run()
    run = next(b for b in at.button if b.label.startswith("Run TinyBraTS"))
    assert run.label == "Run TinyBraTS (missing FLAIR)" and not run.disabled
    run.click().run()
    assert not at.exception
    dice = [m for m in at.metric if m.label == "Dice"]
    assert all(m.delta for m in dice)  # change against the complete-data prediction
    assert any("missing FLAIR" in m.value for m in at.markdown)
    assert at.get("download_button")


def test_models_page_shows_cards_curves_and_pairs(tmp_path, monkeypatch):
    from core.card import model_card_markdown
    from core.model import build_model, save_model

    worlds = {"BraTS": ("paper", 0.0), "BraTSst": ("realistic", 1.0)}
    for name, p in (("BraTS", 0.0), ("BraTSst", 0.2)):
        folder = tmp_path / name
        preset, randomise = worlds[name]
        card = {"name": name, "preset": "deepmedic-lite", "training": {"hospitals": ["public"], "n_train_cases": 3,
                "n_val_cases": 1, "complete_only": False, "cohort": "c",
                "synthetic": {"preset": preset, "scale": 1.0, "seed": 0}}, "config": {"randomise": randomise},
                "sparsity": {"t1": p, "t2": p, "flair": p},
                "iterations": 20, "seed": 0, "training_seconds": 5.0, "device": "cpu", "world_size": 1,
                "inputs": ["t1", "t1c", "t2", "flair"], "classes": ["background", "necrosis", "oedema", "enhancing"],
                "validation": {"dice_tc_windows": 0.5, "dice_wt_windows": 0.4, "note": "windows"}}  # fmt: skip
        save_model(build_model("deepmedic-lite"), folder, card)
        (folder / "MODEL_CARD.md").write_text(model_card_markdown(json.loads((folder / "card.json").read_text())))
        (folder / "training_log.csv").write_text(
            "iteration,loss,val_dice_tc,val_dice_wt\n10,0.5,0.3,0.2\n20,0.4,0.5,0.4\n"
        )
    monkeypatch.setenv("GBM_MODELS", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "views" / "models.py"), default_timeout=60).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["model"]) == ["BraTS", "BraTSst"] and list(table["sparsified"]) == [False, True]
    assert list(table["synthetic world"]) == ["paper", "realistic, domain randomisation 1"]
    card_text = (tmp_path / "BraTSst" / "MODEL_CARD.md").read_text()
    assert "training windows" in card_text and "strength 1." in card_text
    assert any("BraTSst vs BraTS" in m.value for m in at.markdown)
    assert at.get("plotly_chart") and any(m.value.startswith("# BraTS") for m in at.markdown)


def test_lab_shifts_the_case_and_compares_two_models(explorer_data, tmp_path):
    import os

    from core.model import build_model, read_card, save_model

    card = read_card(os.path.join(os.environ["GBM_MODELS"], "TinyBraTS"))
    card["name"] = "TinyBraTSst"
    save_model(build_model("deepmedic-lite"), os.path.join(os.environ["GBM_MODELS"], "TinyBraTSst"), card)
    at = AppTest.from_file(str(ROOT / "views" / "lab.py"), default_timeout=120).run()
    assert not at.exception
    assert at.selectbox(key="lab_a").value == "TinyBraTS" and at.selectbox(key="lab_b").value == "TinyBraTSst"
    at.toggle(key="lab_use_t1").set_value(False).run()
    run = at.button(key="lab_run")
    assert "missing T1" in run.label
    run.click().run()
    assert not at.exception
    table = at.dataframe[0].value
    assert set(table["model"]) == {"TinyBraTS", "TinyBraTSst"} and len(table) == 6


@pytest.fixture
def results_store(tmp_path, monkeypatch):
    """A real store: BraTS and BraTSst on 12 hospital-1 patients, complete and without FLAIR.

    BraTSst is better by about 0.3 Dice without FLAIR and equal on complete data.
    """
    from core.metrics import RegionMetrics
    from core.store import ResultKey, ResultStore

    rng = np.random.default_rng(0)
    path = tmp_path / "demo.sqlite"
    with ResultStore(path) as store:
        for name in ("BraTS", "BraTSst"):
            store.add_model(f"sha-{name}", name, {"name": name})
        for k in range(12):
            key = f"H1_{k:02d}@abc"
            store.add_case(key, f"H1_{k:02d}", "abc", "1", "test", frozenset())
            for missing in ("none", "flair"):
                base = rng.uniform(0.7, 0.9)
                for name in ("BraTS", "BraTSst"):
                    drop = 0.3 if (missing == "flair" and name == "BraTS") else rng.uniform(-0.01, 0.01)
                    metrics = {r: RegionMetrics(r, base - drop, 0.9, 5.0, 40 + k, 42.0) for r in ("tc", "wt", "et")}
                    store.write(ResultKey(f"sha-{name}", key, missing), metrics, 1.0, "CPU")
    monkeypatch.setenv("GBM_DEMO_STORE", str(path))
    monkeypatch.setenv("GBM_STORE", str(tmp_path / "absent.sqlite"))
    from ui.data import results_table

    results_table.clear()
    return path


def test_hospitals_page_shows_boxplots_and_counts(results_store):
    at = AppTest.from_file(str(ROOT / "views" / "hospitals.py"), default_timeout=60).run()
    assert not at.exception
    summary = at.dataframe[0].value
    assert list(summary["cases"]) == [12, 12] and set(summary["hospital"]) == {"1"}
    assert at.get("plotly_chart")
    assert not any("Not every box" in c.value for c in at.caption)
    # Another architecture evaluated on 3 of hospital 1's 12 patients, and a hospital 2 patient it was not
    # run on: the caption names both, hospital by hospital.
    from core.metrics import RegionMetrics
    from core.store import ResultKey, ResultStore
    from ui.data import results_table

    with ResultStore(results_store) as store:
        store.add_model("sha-unet", "UNet3D", {"name": "UNet3D", "architecture": "unet3d"})
        store.add_case("H2_00@abc", "H2_00", "abc", "2", "test", frozenset())
        metrics = {r: RegionMetrics(r, 0.5, 0.6, 5.0, 40.0, 42.0) for r in ("tc", "wt", "et")}
        for name in ("BraTS", "BraTSst"):
            store.write(ResultKey(f"sha-{name}", "H2_00@abc", "none"), metrics, 1.0, "CPU")
        for k in range(3):
            store.write(ResultKey("sha-unet", f"H1_{k:02d}@abc", "none"), metrics, 1.0, "CPU")
    results_table.clear()
    at.multiselect(key="hosp_models").set_value(["BraTS", "UNet3D"]).run()
    assert not at.exception
    assert list(at.dataframe[0].value["cases"]) == [12, 1, 3]
    expected = "UNet3D: fewer cases (hospital 1: 3 against 12) and no results at hospital 2"
    assert any(expected in c.value for c in at.caption), [c.value for c in at.caption]


def test_missing_page_marks_the_significant_combination(results_store):
    at = AppTest.from_file(str(ROOT / "views" / "missing.py"), default_timeout=60).run()
    assert not at.exception
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    annotations = figure["layout"].get("annotations", [])
    assert [(a["x"], a["text"]) for a in annotations] == [("missing FLAIR", "*")]


def test_statistics_page_tabulates_the_comparisons(results_store):
    at = AppTest.from_file(str(ROOT / "views" / "statistics.py"), default_timeout=60).run()
    assert not at.exception
    result = at.dataframe[0].value
    assert list(result["missing"]) == ["complete", "missing FLAIR"] and list(result["significant"]) == [False, True]
    assert list(result["pair"]) == ["BraTSst - BraTS"] * 2 and "model_a" not in result  # as readers read it
    # All 12 differences positive without FLAIR: exact p = 2 / 2^12, two tests (Bonferroni x 2).
    assert result.loc[1, "p_value"] == pytest.approx(2 / 2**12)
    assert at.get("download_button") and len(at.get("plotly_chart")) == 1
    targets = at.table[0].value.reset_index()  # the paper's findings: only BraTSst vs BraTS is in this store
    assert list(targets["status"]) == ["no results", "met", "no results"] and targets.loc[1, "n"] == 12


def test_your_data_validates_stays_in_the_root_and_evaluates(explorer_data, tmp_path, monkeypatch):
    import os
    import shutil

    from core.metrics import RegionMetrics
    from core.store import ResultKey, ResultStore

    root = tmp_path / "root"
    shutil.copytree(os.environ["GBM_DEMO_COHORT"], root / "cohort")
    (root / "cohort" / "P1" / "P1_t2.nii.gz").write_bytes(b"")  # one broken case
    monkeypatch.setenv("GBM_DATA_ROOT", str(root))
    monkeypatch.setenv("GBM_STORE", str(tmp_path / "user.sqlite"))
    at = AppTest.from_file(str(ROOT / "views" / "your_data.py"), default_timeout=120).run()
    assert not at.exception
    assert any(c.value == "In the data root now: cohort." for c in at.caption)  # what there is to type
    at.text_input(key="data_path").set_value("../../").run()
    assert "outside the data root" in at.error[0].value and "GBM_DATA_ROOT" in at.error[0].value
    at.text_input(key="data_path").set_value("cohort").run()
    assert not at.exception
    report = at.dataframe[0].value
    assert list(report["ok"]) == [True, False] and "P1_t2.nii.gz: t2 file is empty" in report["problems"][1]
    at.button(key="data_run").click().run()
    assert not at.exception
    assert "1 prediction written" in at.success[0].value and "t2" in at.error[0].value
    with ResultStore(tmp_path / "user.sqlite") as store:
        assert store.counts()["results"] == 3
        # In the precision every page predicts in: bfloat16 where this CPU runs it natively.
        from core.device import bf16_supported

        device = store.db.execute("SELECT DISTINCT device FROM results").fetchone()[0]
        assert device.endswith(", bfloat16") == bf16_supported("cpu"), device
        # A combination the model cannot run on: counted under the table, not shown as a row of n/a.
        model, case = store.db.execute("SELECT model_sha256, case_key FROM results LIMIT 1").fetchone()
        assert store.write_not_applicable(ResultKey(model, case, "flair"), ["tc", "wt", "et"])
        # And one whose metrics are undefined (no enhancing tumour on either side): n/a, not None or nan.
        nan = float("nan")
        undefined = {"et": RegionMetrics("et", nan, nan, nan, 0.0, 0.0)}
        assert store.write(ResultKey(model, case, "t2"), undefined, 1.0, "CPU")
    from ui.data import results_table

    results_table.clear()
    at.run()
    assert not at.exception
    shown = at.dataframe[-1].value
    assert len(shown) == 4 and "missing FLAIR" not in set(shown["missing"])  # display names, not t2+flair
    # Complete first, then by combination; regions in the order tumour core, whole tumour, enhancing tumour.
    assert list(shown["missing"]) == ["complete"] * 3 + ["missing T2"]
    assert list(shown["region"][:3]) == ["tumour core", "whole tumour", "enhancing tumour"]
    undefined = shown[shown["missing"] == "missing T2"].iloc[0]
    assert [undefined[c] for c in ("dice", "sensitivity", "hd95")] == ["n/a"] * 3
    defined = shown[shown["missing"] != "missing T2"]
    assert defined["dice"].map(lambda v: v == "n/a" or len(v.split(".")[1]) == 3).all()
    assert "1 result not applicable left out" in at.caption[-1].value
    # Clean up too: the prediction is made again (the raw result is there) and scored after Clean up, as
    # a model of its own beside the raw one.
    at.toggle(key="data_clean").set_value(True).run()
    at.button(key="data_run").click().run()
    assert not at.exception
    assert "0 raw and 1 cleaned-up (+clean) result written" in at.success[0].value, at.success[0].value
    with ResultStore(tmp_path / "user.sqlite") as store:
        names = dict(store.db.execute("SELECT sha256, name FROM models"))
        cleaned = store.table().query("model.str.endswith('+clean')")
    (raw_sha, raw_name), (clean_sha, clean_name) = sorted(names.items())
    assert (clean_sha, clean_name) == (raw_sha + "+clean", raw_name + "+clean")
    assert len(cleaned) == 3 and set(cleaned["missing"]) == {"none"}
    results_table.clear()
    at.run()
    shown = at.dataframe[-1].value
    assert sorted(shown["model"].unique()) == [raw_name, clean_name]


def test_explorer_shows_precomputed_predictions_at_once(explorer_data, tmp_path, monkeypatch):
    import os

    from core.store import ResultStore
    from core.sweep import SweepConfig, run_sweep

    monkeypatch.setenv("GBM_STORE", str(tmp_path / "user.sqlite"))
    monkeypatch.setenv("GBM_DEMO_STORE", str(tmp_path / "absent.sqlite"))
    with ResultStore(tmp_path / "user.sqlite") as store:
        model = os.path.join(os.environ["GBM_MODELS"], "TinyBraTS")
        run_sweep(store, SweepConfig([model], os.environ["GBM_DEMO_COHORT"], "simulated", splits=()))
    at = AppTest.from_file(str(ROOT / "views" / "explorer.py"), default_timeout=120).run()
    assert not at.exception
    assert any("computed already" in c.value for c in at.caption)  # nothing to run: the sweep's prediction
    assert [m.label for m in at.metric].count("Dice") == 3
    assert any("**complete** · from the stored results (computed on CPU (" in m.value for m in at.markdown)
    at.toggle(key="use_flair_P0").set_value(False).run()
    assert all(m.delta for m in at.metric if m.label == "Dice")  # also precomputed, compared with complete


@pytest.mark.slow
def test_a_demo_results_case_is_regenerated_bit_for_bit_when_opened(tmp_path, monkeypatch):
    from core.cases import find_cases
    from core.store import ResultStore, case_key, files_hash
    from core.synth.cohort import plan_cohort, write_cohort

    plan = next(p for p in plan_cohort("paper", 0.03, 0) if p.split == "test" and p.hospital == "1")
    manifest = write_cohort(tmp_path / "evaluated", "paper", 0.03, 0, patient_ids=[plan.patient_id])
    digest = files_hash(find_cases(manifest)[0])
    key = case_key(plan.patient_id, digest)
    with ResultStore(tmp_path / "demo.sqlite") as store:  # what a sweep of that cohort records
        synthetic = {"preset": "paper", "scale": "0.03", "seed": "0", "case_index": str(plan.case_index)}
        store.add_case(key, plan.patient_id, digest, "1", "test", frozenset(), {"synthetic": synthetic})
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("GBM_DEMO_COHORT", str(tmp_path / "empty"))
    monkeypatch.setenv("GBM_DEMO_STORE", str(tmp_path / "demo.sqlite"))
    monkeypatch.setenv("GBM_CASE_CACHE", str(tmp_path / "cache"))
    from ui.data import _case_store_key, case_folder, demo_patients

    demo_patients.clear()
    patients = demo_patients(str(tmp_path / "empty"), str(tmp_path / "demo.sqlite"))
    assert list(patients["patient_id"]) == [plan.patient_id]
    assert patients["source"][0] == "regenerated (paper preset, scale 0.03, seed 0)"
    folder = case_folder(plan.patient_id)
    assert Path(folder) == tmp_path / "cache" / "paper_scale0.03_seed0"
    assert _case_store_key(folder, plan.patient_id) == key  # the same bytes the results were computed on
    with pytest.raises(KeyError, match="no case 'SYN_H9_0001'"):
        case_folder("SYN_H9_0001")


def test_home_counts_the_evaluated_predictions(results_store):
    at = AppTest.from_file(str(ROOT / "views" / "home.py"), default_timeout=60).run()
    assert not at.exception
    # 2 models x 12 patients x 2 missing sets, written by the fixture (three regions each).
    assert {m.label: m.value for m in at.metric}["Evaluated predictions"] == "48"


def test_explorer_opens_on_the_showcase_case_or_the_one_another_page_chose():
    import sqlite3

    with sqlite3.connect(ROOT / "data_samples" / "results.sqlite") as db:  # every combination cached, first by id
        showcase = db.execute(
            "SELECT c.patient_id FROM predictions p JOIN cases c USING (case_key) GROUP BY p.model_sha256, "
            "c.patient_id HAVING COUNT(DISTINCT p.missing) = 8 ORDER BY c.patient_id LIMIT 1"
        ).fetchone()[0]
    at = AppTest.from_file(str(ROOT / "views" / "explorer.py"), default_timeout=120).run()
    assert not at.exception and at.selectbox(key="patient").value == showcase
    assert [m.label for m in at.metric].count("Dice") == 3  # precomputed, shown at once
    at = AppTest.from_file(str(ROOT / "views" / "explorer.py"), default_timeout=120)
    at.session_state["hospital"], at.session_state["patient"] = "all", "SYN_H2_0003"  # as the Hospitals page does
    at.session_state["live_run"] = False  # opening is what is tested here, not a whole-brain run
    at.run()
    assert not at.exception and not at.warning and at.selectbox(key="patient").value == "SYN_H2_0003"
