"""The domain-shift lab, home and models pages: results that stay, a baseline, units, text that fits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
LAB = str(ROOT / "views" / "lab.py")


@pytest.fixture
def lab_data(tmp_path, monkeypatch):
    """A phantom cohort and two small models (random weights), so a lab run takes a second."""
    import torch

    from core.io import read_case
    from core.model import build_model, save_model
    from core.preprocess import fit_landmarks
    from tests.conftest import write_phantom_cohort

    manifest = write_phantom_cohort(tmp_path / "cohort", n=2, size=40)
    case = read_case(manifest.parent / "P0")
    landmarks = fit_landmarks([(case.images, case.available)])
    for seed, name in enumerate(("TinyBraTS", "TinyBraTSst")):
        torch.manual_seed(seed)
        card = {"name": name, "training": {"hospitals": ["public"]}, "sparsity": {"t1": 0, "t2": 0, "flair": 0},
                "normalisation": {"landmarks": landmarks}}  # fmt: skip
        save_model(build_model("deepmedic-lite"), tmp_path / "models" / name, card)
    monkeypatch.setenv("GBM_DEMO_COHORT", str(manifest.parent))
    monkeypatch.setenv("GBM_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("GBM_DEMO_STORE", str(tmp_path / "no-demo-results.sqlite"))
    monkeypatch.setenv("GBM_STORE", str(tmp_path / "no-user-results.sqlite"))
    monkeypatch.chdir(ROOT)
    return manifest.parent


def run_lab() -> AppTest:
    at = AppTest.from_file(LAB, default_timeout=120).run()
    assert not at.exception
    at.button(key="lab_run").click().run()
    assert not at.exception
    assert at.button(key="lab_run").disabled  # at once: these settings are computed
    return at


def index_slider(at: AppTest):
    return next(s for s in at.slider if s.key.startswith("lab_index_"))


def test_results_stay_and_follow_the_slice_after_a_run(lab_data):
    at = run_lab()
    images = len(at.get("imgs"))
    table = at.dataframe[0].value
    slider = index_slider(at)
    slider.set_value(slider.value - 3).run()  # the old page forgot its results on any widget change
    assert not at.exception
    assert at.dataframe[0].value.equals(table) and len(at.get("imgs")) == images
    assert not at.warning  # same settings: nothing is stale
    at.radio(key="lab_plane").set_value("axial").run()
    assert not at.exception and at.dataframe[0].value.equals(table)


def test_changed_settings_mark_the_results_stale_and_cached_ones_come_back(lab_data):
    at = run_lab()
    table = at.dataframe[0].value
    at.slider(key="lab_noise").set_value(10.0).run()
    assert not at.exception
    assert at.dataframe[0].value.equals(table)  # still shown, for the last run's settings
    assert "Stale" in at.warning[0].value and "instantly" in at.warning[0].value
    assert not at.button(key="lab_run").disabled
    at.slider(key="lab_noise").set_value(5.0).run()  # back to settings computed before: shown at once
    assert not at.warning and at.button(key="lab_run").disabled
    assert at.dataframe[0].value.equals(table)


def test_session_state_holds_choices_not_arrays(lab_data):
    at = run_lab()
    at.slider(key="lab_noise").set_value(10.0).run()

    def small(value) -> bool:
        if isinstance(value, dict | tuple | list):
            return all(small(v) for v in (value.values() if isinstance(value, dict) else value))
        return isinstance(value, str | int | float | bool) or value is None

    state = at.session_state.to_dict()
    assert "lab_last" in state and all(small(v) for v in state.values())


def changed(text: str) -> tuple[float, float]:
    """(value, change) of a cell such as "0.871 (-0.119)", "12.3 (was n/a)" or "n/a" (NaN for n/a)."""
    parts = text.replace("(was ", "(").replace("(", "").replace(")", "").replace("n/a", "nan").split()
    value, change = parts if len(parts) == 2 else (parts[0], "nan")
    return float(value), float(change)


def test_the_change_is_measured_against_the_case_as_acquired(lab_data):
    """Dice change = shifted Dice minus the Dice of the same model on the unshifted case,
    predicted and evaluated here without the app."""
    from core.infer import predict_volume
    from core.io import read_case
    from core.metrics import evaluate
    from core.model import load_model

    at = run_lab()
    table = at.dataframe[0].value
    assert list(table.columns) == ["model", "region", "Dice", "sensitivity", "HD95 mm", "volume mL"]
    case = read_case(lab_data / "P0")
    from ui.data import AMP

    for name in ("TinyBraTS", "TinyBraTSst"):
        model = load_model(Path(lab_data).parent / "models" / name)
        baseline = evaluate(predict_volume(model, case, amp=AMP).labels, case.labels, case.spacing, ("tc", "wt", "et"))
        rows = table[table["model"] == name].set_index("region")
        for region, words in (("tc", "tumour core"), ("wt", "whole tumour")):
            shifted, change = changed(rows.loc[words, "Dice"])
            assert abs(shifted - change - baseline[region].dice) <= 1e-3
    at.multiselect(key="lab_targets").set_value([]).run()  # nothing shifted: the baseline, shown at once
    assert not at.exception and at.button(key="lab_run").disabled
    for column in ("Dice", "sensitivity", "HD95 mm", "volume mL"):
        assert all(
            changed(text)[1] == 0 or not math.isfinite(changed(text)[0]) for text in at.dataframe[0].value[column]
        )


def test_viewer_shows_a_changed_sequence_three_planes_and_units(lab_data):
    at = AppTest.from_file(LAB, default_timeout=120).run()
    assert not at.exception
    view = next(r for r in at.radio if r.key.startswith("lab_view"))
    assert view.value == "t2" and "(changed)" in view.format_func("t2")  # T2 and FLAIR change by default, not T1
    assert at.radio(key="lab_plane").options == ["axial", "coronal", "sagittal"]
    units = {"lab_noise": "%", "lab_bias": "unitless", "lab_thickness": "mm", "lab_gamma": "unitless"}
    for slider in at.slider:
        assert units.get(slider.key, "mm") in slider.label, slider.label
    at.multiselect(key="lab_targets").set_value(["t1"]).run()
    assert next(r for r in at.radio if r.key.startswith("lab_view")).value == "t1"
    assert any("reference whole tumour" in c.value for c in at.caption)


def test_models_training_plot_shows_every_validation_point(tmp_path, monkeypatch):
    """The old Dice axis was fixed to [0, 1]: curves reaching 1 drew above the top tick."""
    from core.model import build_model, save_model

    folder = tmp_path / "BraTS"
    save_model(build_model("deepmedic-lite"), folder, {"name": "BraTS", "training": {"hospitals": ["public"]},
                                                       "iterations": 20})  # fmt: skip
    (folder / "training_log.csv").write_text("iteration,loss,val_dice_tc,val_dice_wt\n10,0.5,0.3,0.9\n20,0.4,1.0,1.0\n")
    monkeypatch.setenv("GBM_MODELS", str(tmp_path))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "views" / "models.py"), default_timeout=60).run()
    assert not at.exception
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    dice = [t for t in figure["data"] if t["name"].startswith("validation Dice")]
    loss = next(t for t in figure["data"] if t["name"] == "Dice loss")
    axis = dice[0]["yaxis"]
    assert {t["yaxis"] for t in dice} == {axis} != loss.get("yaxis", "y")  # Dice on its own axis
    layout = figure["layout"]["yaxis" + axis[1:]]
    assert 1.0 <= layout["tickvals"][-1] <= layout["range"][1]  # the highest Dice (1.0) is not above the top tick


def test_the_app_does_not_watch_the_whole_tree():
    """`make run` (and any `streamlit run` from the repo root) reads .streamlit/config.toml: the default
    watcher watched .venv, .cache and the data folders recursively and overflowed the inotify queue."""
    import tomllib

    server = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())["server"]
    assert server["fileWatcherType"] in ("poll", "none")
    assert {".venv", ".cache", "data_samples", "user_data"} <= set(server["folderWatchBlacklist"])
