"""The pages with an ONNX model folder beside a DeepMedic (AppTest): explorer, lab, Models, Your data
(upload), and the cohort pages with a model that cannot run every combination."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.test_app import ROOT, explorer_data  # noqa: F401 (fixture: the phantom cohort, TinyBraTS)
from tests.test_external import Linear, fake_folder


@pytest.fixture
def onnx_models(explorer_data, tmp_path, monkeypatch):  # noqa: F811
    """TinyBraTS (DeepMedic) and two ONNX folders: TinyUNet (zeros for a missing sequence) and
    OnlyFlair (t1c + flair, cannot run without either); a user data root and store of their own."""
    models = Path(os.environ["GBM_MODELS"])
    patch = {"mode": "sliding-window", "patch_size": [16, 16, 16], "overlap": 0.0, "blend": "constant"}
    unet = fake_folder(tmp_path / "u", name="TinyUNet", inference=patch)
    unet.rename(models / "TinyUNet")
    only = fake_folder(tmp_path / "o", net=Linear(2, 4), name="OnlyFlair", inputs=["t1c", "flair"],
                       missing={"policy": "cannot-run"}, inference=patch)  # fmt: skip
    only.rename(models / "OnlyFlair")
    monkeypatch.setenv("GBM_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("GBM_STORE", str(tmp_path / "user.sqlite"))
    return models


def page(name: str, **state) -> AppTest:
    at = AppTest.from_file(str(ROOT / "views" / f"{name}.py"), default_timeout=120)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def test_explorer_runs_an_onnx_model_preview_and_whole_brain(onnx_models):
    at = page("explorer", live_run=False, model="TinyUNet")
    assert not at.exception, at.exception
    assert any("TinyUNet: trained on" in c.value and "ONNX Runtime" in c.value for c in at.caption)
    at.button(key="preview_button").click().run()  # one axial slice by ExternalModel.predict_slice
    assert not at.exception, at.exception
    run = next(b for b in at.button if b.label.startswith("Run TinyUNet"))
    run.click().run()
    assert not at.exception, at.exception
    assert [m.label for m in at.metric].count("Dice") == 3
    assert any("missing" not in m.value and " s" in m.value for m in at.markdown if m.value.startswith("**"))


def test_explorer_says_not_applicable_for_a_model_that_cannot_run(onnx_models):
    at = page("explorer", live_run=True, model="OnlyFlair")
    assert not at.exception, at.exception
    assert [m.label for m in at.metric].count("Dice") == 3  # complete: it runs
    at.toggle(key="use_flair_P0").set_value(False).run()
    assert not at.exception, at.exception
    assert any("OnlyFlair cannot run without FLAIR" in w.value and "never as Dice 0" in w.value for w in at.warning)
    assert any(i.value.startswith("Not applicable") for i in at.info) and not at.metric


def test_lab_compares_a_deepmedic_with_an_onnx_model(onnx_models):
    at = page("lab", lab_a="TinyBraTS", lab_b="TinyUNet")
    assert not at.exception, at.exception
    at.button(key="lab_run").click().run()
    assert not at.exception, at.exception
    assert set(at.dataframe[0].value["model"]) == {"TinyBraTS", "TinyUNet"}
    blocked = page("lab", lab_a="TinyBraTS", lab_b="OnlyFlair", lab_use_flair=False)
    assert any("OnlyFlair cannot run" in w.value for w in blocked.warning) and blocked.button(key="lab_run").disabled


def test_models_page_shows_an_onnx_card(onnx_models):
    at = page("models", model_detail="TinyUNet")
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert dict(zip(table["model"], table["architecture"]))["TinyUNet"] == "fake (ONNX)"
    facts = dict(zip(at.dataframe[1].value[""], at.dataframe[1].value["card says"]))
    assert facts["inputs"] == "t1, t1c, t2, flair" and facts["normalisation"].startswith("z-score")
    assert facts["missing sequence"].startswith("fed as zeros") and "sliding window 16x16x16" in facts["inference"]
    assert "ONNX Runtime" in facts["runtime"]
    assert any("no training log" in c.value for c in at.caption) and not at.get("plotly_chart")


def test_your_data_keeps_a_valid_model_apart_and_names_what_is_wrong_with_a_bad_one(onnx_models, tmp_path):
    source = onnx_models / "TinyUNet"
    onnx, card = (source / "model.onnx").read_bytes(), json.loads((source / "card.json").read_text())
    at = page("your_data")
    bad = card | {"inputs": ["t1", "T1c", "t2", "flair"]}
    upload = [("model.onnx", onnx, "application/octet-stream"), ("card.json", json.dumps(bad).encode(), "text/json")]
    at.file_uploader(key="model_upload_files").set_value(upload).run()
    at.button(key="model_upload_save").click().run()
    assert not at.exception and not at.success
    error = at.error[0].value
    assert error.startswith("Not saved: card.json: field 'inputs': 'T1c' is not a sequence")
    assert str(tmp_path) not in error
    upload[1] = ("card.json", json.dumps(card | {"name": "Mine"}).encode(), "text/json")
    at.file_uploader(key="model_upload_files").set_value(upload).run()
    at.text_input(key="model_upload_name").set_value("mine").run()
    at.button(key="model_upload_save").click().run()
    assert not at.exception and "Saved to" in at.success[0].value
    kept = tmp_path / "data" / "models" / "mine"
    assert sorted(p.name for p in kept.iterdir()) == ["card.json", "model.onnx"]
    assert not (onnx_models / "mine").exists()  # apart from the bundled models
    explorer = page("explorer", live_run=False)
    assert "Mine (your model)" in explorer.selectbox(key="model").options


def test_cohort_pages_skip_not_applicable_results_and_say_so(onnx_models, tmp_path, monkeypatch):
    from core.sequences import combination_label
    from core.store import ResultStore
    from core.sweep import SweepConfig, run_sweep

    store = tmp_path / "demo.sqlite"
    folders = [str(onnx_models / "TinyUNet"), str(onnx_models / "OnlyFlair")]
    with ResultStore(store) as results:
        run_sweep(results, SweepConfig(folders, os.environ["GBM_DEMO_COHORT"], "simulated", splits=(), workers=1,
                                       keep_predictions=False))  # fmt: skip
    monkeypatch.setenv("GBM_DEMO_STORE", str(store))
    for name, key in (("missing", "miss"), ("statistics", "stat"), ("hospitals", "hosp")):
        at = page(name, **{f"{key}_source": "demo"})
        assert not at.exception, (name, at.exception)
        assert any("8 results not applicable left out (OnlyFlair" in c.value for c in at.caption), name
    heatmap = json.loads(page("missing", miss_source="demo").get("plotly_chart")[-1].proto.spec)["data"][0]
    assert heatmap["y"] == ["OnlyFlair (n=2)", "TinyUNet (n=2)"] and combination_label("flair") in heatmap["x"]
