"""AppTests of the cohort pages (Hospitals, Missing sequences, Statistics) and Your data:
user results kept apart from the demo results, the testable family, one combination per
Bland-Altman, the 15 combinations explained, and the Your data paths a new user walks."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.test_app import demo_cohort, explorer_data, results_store  # noqa: F401  (fixtures, reused)

ROOT = Path(__file__).resolve().parents[1]


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "views" / f"{name}.py"), default_timeout=120)


def points(trace: dict) -> int:
    """How many points a plotly trace of a chart's JSON holds (plain list or base64 array)."""
    x = trace["x"]
    return len(base64.b64decode(x["bdata"])) // np.dtype(x["dtype"]).itemsize if isinstance(x, dict) else len(x)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def demo_and_copy(explorer_data, tmp_path, monkeypatch):  # noqa: F811
    """Demo results of the phantom cohort (P0 and P1, hospital public) and a data root holding a
    copy of P0's folder (same content, no manifest, so no hospital)."""
    from core.store import ResultStore
    from core.sweep import SweepConfig, run_sweep
    from ui.data import results_table

    demo = tmp_path / "demo.sqlite"
    with ResultStore(demo) as store:
        run_sweep(store, SweepConfig([os.path.join(os.environ["GBM_MODELS"], "TinyBraTS")],
                                     os.environ["GBM_DEMO_COHORT"], "acquired", splits=(), workers=1))  # fmt: skip
        store.compact()
    root = tmp_path / "root"
    shutil.copytree(Path(os.environ["GBM_DEMO_COHORT"]) / "P0", root / "copy" / "P0")
    monkeypatch.setenv("GBM_DEMO_STORE", str(demo))
    monkeypatch.setenv("GBM_STORE", str(tmp_path / "user.sqlite"))
    monkeypatch.setenv("GBM_DATA_ROOT", str(root))
    results_table.clear()
    return demo


def hospital_counts(source: str) -> dict[str, int]:
    at = page("hospitals")
    at.session_state["hosp_source"] = source
    at.run()
    assert not at.exception
    summary = at.dataframe[0].value
    return dict(zip(summary["hospital"], summary["cases"]))


def test_evaluating_a_copy_of_a_demo_case_leaves_the_demo_results_alone(demo_and_copy):
    before = sha256(demo_and_copy)
    assert hospital_counts("demo") == {"public": 2}
    at = page("your_data").run()
    at.text_input(key="data_path").set_value("copy/P0").run()
    at.button(key="data_run").click().run()
    assert not at.exception and "1 prediction written" in at.success[0].value
    mine = at.dataframe[-1].value  # the new results, on the page itself
    assert list(mine["patient_id"]) == ["P0"] * 3
    assert set(mine["region"]) == {"tumour core", "whole tumour", "enhancing tumour"}
    assert sha256(demo_and_copy) == before
    assert hospital_counts("demo") == {"public": 2}  # not 1 (the copy replacing P0) and no blank group
    assert hospital_counts("user") == {"not given": 1}  # a named group
    assert hospital_counts("both") == {"public": 2}  # the copy is the same case: counted once
    at = page("missing")
    at.session_state["miss_source"] = "user"
    at.run()
    assert not at.exception
    assert at.warning or all(", ," not in c.value and "hospitals ," not in c.value for c in at.caption)


def test_hospitals_page_titles_axes_selects_points_and_fits_its_table(results_store):  # noqa: F811
    at = page("hospitals").run()
    assert not at.exception
    chart = at.get("plotly_chart")[0].proto
    figure = json.loads(chart.spec)
    assert "per hospital" in figure["layout"]["title"]["text"]
    assert figure["layout"]["yaxis"]["title"]["text"] == "Dice (0 to 1)"
    assert figure["layout"]["xaxis"]["title"]["text"].startswith("hospital")
    assert figure["data"][0]["customdata"][0][0].startswith("H1_")  # each point names its case
    assert list(chart.selection_mode)  # clicking a point is handled (on_select)


def test_statistics_leaves_untestable_comparisons_out_of_the_family(results_store):  # noqa: F811
    from core.metrics import RegionMetrics
    from core.store import ResultKey, ResultStore
    from ui.data import results_table

    # One patient also without T1: a single pair, p = 1 whatever the data.
    with ResultStore(os.environ["GBM_DEMO_STORE"]) as store:
        for name, dice in (("BraTS", 0.5), ("BraTSst", 0.7)):
            metrics = {r: RegionMetrics(r, dice, 0.9, 5.0, 40.0, 42.0) for r in ("tc", "wt", "et")}
            store.write(ResultKey(f"sha-{name}", "H1_00@abc", "t1"), metrics, 1.0, "CPU")
    results_table.clear()
    at = page("statistics").run()
    assert not at.exception
    result = at.dataframe[0].value
    assert list(result["missing"]) == ["complete", "missing FLAIR"] and "missing T1" not in set(result["missing"])
    # All 12 differences positive without FLAIR: exact p = 2 / 2^12, Bonferroni over 2 tests (not 3).
    assert result["p_adjusted"].iloc[1] == pytest.approx(4 / 2**12)
    assert any("1 comparisons left out" in i.value and "t1: 1 of 1 pairs differ" in i.value for i in at.info)
    mixed = at.dataframe[1].value  # the mixed-effects model's contrasts
    # The mixed model keeps the single T1 pair (it borrows the patient's intercept from the other combinations).
    mixed = mixed.set_index("missing")
    assert list(mixed.index) == ["complete", "missing T1", "missing FLAIR"]
    assert mixed.loc["missing FLAIR", "estimate"] == pytest.approx(0.3, abs=0.02)  # BraTSst - BraTS
    assert any("dice ~ model * missing + (1 | patient)" in c.value for c in at.caption)
    at.radio(key="stat_adjust").set_value("bh").run()
    bh = at.dataframe[0].value  # Benjamini-Hochberg over 2 tests: the smaller p times 2, the larger p times 2/2
    assert not at.exception and bh["p_adjusted"].iloc[1] == pytest.approx(4 / 2**12)
    assert bh["p_adjusted"].iloc[0] == pytest.approx(bh["p_value"].iloc[0]) and bh["p_value"].iloc[0] > 4 / 2**12


def test_statistics_compares_results_after_clean_up_with_the_raw_ones(results_store):  # noqa: F811
    from core.metrics import RegionMetrics
    from core.store import ResultKey, ResultStore
    from ui.data import results_table

    # BraTSst+clean (evaluate --clean): 0.05 better than BraTSst on every patient without FLAIR, equal on complete.
    with ResultStore(os.environ["GBM_DEMO_STORE"]) as store:
        store.add_model("sha-BraTSst+clean", "BraTSst+clean", {"name": "BraTSst+clean"})
        raw = store.table().query("model == 'BraTSst' and region == 'tc'")
        for row in raw.itertuples():
            dice = row.dice + (0.05 if row.missing == "flair" else 0.0)
            metrics = {r: RegionMetrics(r, dice, 0.9, 5.0, 40.0, 42.0) for r in ("tc", "wt", "et")}
            store.write(ResultKey("sha-BraTSst+clean", row.case_key, row.missing), metrics, 1.0, "CPU")
    results_table.clear()
    at = page("statistics").run()
    assert not at.exception
    family = at.dataframe[0].value  # the paper's family: the raw models only, as before
    assert set(family["pair"]) == {"BraTSst - BraTS"}
    at.radio(key="stat_family").set_value("Clean up vs not").run()
    assert not at.exception
    result = at.dataframe[0].value.set_index("missing")
    # Complete: no difference, untested. Without FLAIR all 12 differences are +0.05, tied: as R's wilcox.test,
    # the normal approximation with the tie and continuity corrections, V = 78 against a mean of 39.
    assert list(result.index) == ["missing FLAIR"] and set(result["pair"]) == {"BraTSst+clean - BraTSst"}
    assert result.loc["missing FLAIR", "median_difference"] == pytest.approx(0.05)
    variance = 12 * 13 * 25 / 24 - (12**3 - 12) / 48
    assert result.loc["missing FLAIR", "p_value"] == pytest.approx(math.erfc((78 - 39 - 0.5) / math.sqrt(variance * 2)))
    # The Missing sequences page pairs them too, and its command to add T1c's combinations evaluates the
    # model's own folder with --clean.
    at = page("missing").run()
    at.selectbox(key="miss_pair").select(("BraTSst+clean", "BraTSst")).run()
    at.radio(key="miss_count").set_value(15).run()
    assert not at.exception
    command = at.code[0].value
    assert "--models models/BraTSst --cohort" in command and command.endswith("--clean")


def test_statistics_bland_altman_shows_one_combination_and_targets_wrap(results_store):  # noqa: F811
    at = page("statistics").run()
    assert not at.exception
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert points(figure["data"][0]) == 12  # 12 patients of one combination, not 24 pooled points
    at.selectbox(key="stat_ba_missing").set_value("flair").run()
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert points(figure["data"][0]) == 12 and "missing FLAIR" in figure["layout"]["title"]["text"]
    targets = at.table[0].value  # a static table: its long "target" text wraps instead of being cut
    assert list(targets["status"]) == ["no results", "met", "no results"]


def test_missing_page_says_why_15_combinations_add_nothing_and_how_to_fill_them(results_store):  # noqa: F811
    at = page("missing").run()
    assert not at.exception and not at.info
    at.radio(key="miss_count").set_value(15).run()
    assert not at.exception
    assert any("no combination with **T1c missing**" in i.value for i in at.info)
    command = at.code[0].value
    assert "python -m core evaluate" in command and "--combinations 15" in command and "--mode simulated" in command
    assert "absent.sqlite" in command  # into the user's store, never the demo's


def test_missing_page_renders_bundled_cases_from_the_world_their_manifest_names(tmp_path, monkeypatch):
    import csv

    from core.metrics import RegionMetrics
    from core.store import ResultKey, ResultStore
    from ui.data import results_table

    bundled = ["SYN_H1_0008", "SYN_PUB_0100"]  # complete bundled cases only: no regenerated case to say the world
    path = tmp_path / "demo.sqlite"
    with ResultStore(path) as store:
        for name in ("BraTS", "BraTSst"):
            store.add_model(f"sha-{name}", name, {"name": name})
        for patient in bundled:
            store.add_case(f"{patient}@abc", patient, "abc", "1", "test", frozenset())
            for missing in ("none", "flair"):
                for name in ("BraTS", "BraTSst"):
                    metrics = {r: RegionMetrics(r, 0.8, 0.9, 5.0, 40.0, 42.0) for r in ("tc", "wt", "et")}
                    store.write(ResultKey(f"sha-{name}", f"{patient}@abc", missing), metrics, 1.0, "CPU")
    monkeypatch.setenv("GBM_DEMO_STORE", str(path))
    monkeypatch.setenv("GBM_STORE", str(tmp_path / "absent.sqlite"))
    results_table.clear()
    with (ROOT / "data_samples" / "manifest.csv").open(newline="") as handle:
        world = {(row["preset"], row["scale"], row["seed"]) for row in csv.DictReader(handle)}
    assert len(world) == 1
    preset, scale, seed = world.pop()
    at = page("missing").run()
    at.radio(key="miss_count").set_value(15).run()
    assert not at.exception
    assert (f"--preset {preset} --scale {float(scale):g} --seed {int(seed)} --patients {','.join(bundled)}"
            in at.code[0].value)  # fmt: skip


def test_your_data_creates_its_root_and_rejects_a_bad_upload_before_saying_saved(tmp_path, monkeypatch):
    root = tmp_path / "not-yet"
    monkeypatch.setenv("GBM_DATA_ROOT", str(root))
    monkeypatch.setenv("GBM_STORE", str(tmp_path / "user.sqlite"))
    at = page("your_data").run()
    assert not at.exception and root.is_dir()
    assert any("Created the data root" in i.value and str(root) in i.value for i in at.info)
    at.file_uploader(key="upload_files").set_value(("my_case_t1ce.nii.gz", b"not a nifti", "application/gzip"))
    at.run()
    at.button(key="upload_save").click().run()
    assert not at.exception
    assert not at.success  # nothing announced as saved
    assert "Not saved" in at.error[0].value
    reason = " ".join(m.value for m in at.markdown if m.value.startswith("- "))
    assert "my_case_t1ce.nii.gz" in reason and str(tmp_path) not in reason  # the whole reason, file names only
    assert not (root / "uploads" / "my_case").exists() and not list((root / "uploads").iterdir())


def test_your_data_saves_a_good_upload(write_case, tmp_path, monkeypatch):
    folder, _, _ = write_case("up")
    monkeypatch.setenv("GBM_DATA_ROOT", str(tmp_path / "root"))
    at = page("your_data").run()
    files = [(p.name, p.read_bytes(), "application/gzip") for p in sorted(folder.iterdir())]
    at.file_uploader(key="upload_files").set_value(files).run()
    at.text_input(key="upload_name").set_value("up").run()
    at.button(key="upload_save").click().run()
    assert not at.exception and "Saved 5 files" in at.success[0].value and "accepted" in at.success[0].value
    assert sorted(p.name for p in (tmp_path / "root" / "uploads" / "up").iterdir()) == [p for p, _, _ in files]
    assert at.text_input(key="data_path").value == "uploads/up" and at.dataframe[0].value["ok"].tolist() == [True]


def test_cohort_pages_with_one_model_show_it_alone(results_store):  # noqa: F811
    """Results of one model (a user who evaluated one): nothing to compare, said in words; what
    needs no pair (the median heat map, the volume agreement) is still shown."""
    import sqlite3

    from ui.data import results_table

    with sqlite3.connect(results_store) as db:
        db.execute("DELETE FROM results WHERE model_sha256 = 'sha-BraTSst'")
    results_table.clear()
    at = page("missing").run()
    assert not at.exception and [s.key for s in at.selectbox] == ["miss_region"]  # no "BraTS vs BraTS" to choose
    assert any(i.value.startswith("These results hold one model, BraTS") for i in at.info)
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert [c["data"][0]["type"] for c in charts] == ["heatmap"]  # the medians, no comparison of BraTS with itself
    assert charts[0]["data"][0]["y"] == ["BraTS (n=12)"] and charts[0]["layout"]["height"] >= 240
    at = page("statistics").run()
    assert not at.exception and not at.dataframe
    assert any("Nothing to compare in these results (BraTS)" in i.value for i in at.info)
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert points(figure["data"][0]) == 12  # Bland-Altman of BraTS: 12 patients, complete
    with sqlite3.connect(results_store) as db:  # one patient left: "1 patient", not "1 patients"
        db.execute("DELETE FROM results WHERE case_key != 'H1_00@abc'")
    results_table.clear()
    at = page("missing").run()
    assert any(c.value.startswith("1 patient (hospital 1)") for c in at.caption)
    at = page("statistics").run()
    assert any(c.value.startswith("1 result of 1 patient:") for c in at.caption)


def test_statistics_caption_counts_the_patients_of_each_test(results_store):  # noqa: F811
    at = page("statistics").run()
    assert any(c.value.startswith("2 tests on 12 patients each") for c in at.caption)
