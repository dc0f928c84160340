"""The patient explorer page (AppTest): preview, metric chips, error map per region, the viewer."""

from __future__ import annotations

import json
import pickle
import re

import numpy as np
import pytest
from streamlit.proto.Metric_pb2 import Metric as MetricProto
from streamlit.testing.v1 import AppTest

from tests.test_app import ROOT, demo_cohort, explorer_data  # noqa: F401 (fixtures: the phantom cohort, a tiny model)

PAGE = str(ROOT / "views" / "explorer.py")


def explorer(live: bool = False) -> AppTest:
    """The page as a user opens it; ``live`` off: the model runs only when Run is pressed."""
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["live_run"] = live
    at.run()
    assert not at.exception, at.exception
    return at


def viewer_figure(at: AppTest) -> dict:
    return json.loads(at.get("plotly_chart")[0].proto.spec)


def test_quick_preview_without_a_stored_prediction_has_no_traceback(explorer_data):  # noqa: F811
    at = explorer()
    at.toggle(key="use_flair_P0").set_value(False).run()
    assert any(b.label.startswith("Run TinyBraTS (missing FLAIR)") and not b.disabled for b in at.button)
    axial = at.slider(key="slice_axial_P0").value
    next(b for b in at.button if b.label.startswith("Quick preview")).click().run()
    assert not at.exception, at.exception  # the button's key and the session-state key were both "preview"
    assert at.button(key="preview_button").label == f"Quick preview, axial {axial}"
    assert at.session_state["preview_choice"] == ("P0", "TinyBraTS", ("flair",), axial)
    assert any(c.value.startswith(f"The model's labels on axial slice {axial} alone") for c in at.caption)
    assert not any(c.value.startswith("No prediction yet") for c in at.caption)
    at.slider(key="slice_axial_P0").set_value(axial - 1).run()  # another slice: not previewed yet
    assert not at.exception and at.button(key="preview_button").label == f"Quick preview, axial {axial - 1}"
    assert any(c.value.startswith("No prediction yet") for c in at.caption)


@pytest.fixture
def fixed_metrics(explorer_data, monkeypatch):  # noqa: F811
    """Predictions for every switch, with metrics chosen by the test: without FLAIR the volume
    falls below the reference and HD95 stays the same to 0.1 mm."""
    import ui.data
    from core.infer import Prediction
    from core.metrics import RegionMetrics

    def cached_prediction(cohort, case_id, model_path, sha256, missing):
        case = ui.data.load_case(cohort, case_id)
        return Prediction(case.labels, None, frozenset(missing), 1.0, "test", (0, 0, 0))

    def metrics_table(prediction, case, num_classes=4):
        flair = "flair" in prediction.missing
        return {r: RegionMetrics(r, 0.80 if flair else 0.90, 0.9, 5.02 if flair else 5.0, 30.0 if flair else 41.6,
                                 41.6) for r in ("tc", "wt", "et")}  # fmt: skip

    monkeypatch.setattr(ui.data, "cached_prediction", cached_prediction)
    monkeypatch.setattr(ui.data, "metrics_table", metrics_table)


def test_metric_chips_point_the_way_the_value_moved(fixed_metrics):
    at = explorer()
    at.toggle(key="use_flair_P0").set_value(False).run()
    assert not at.exception
    chips = {m.label: m for m in at.metric[:4]}  # tumour core
    volume, hd95, dice = chips["Volume mL"], chips["HD95 mm"], chips["Dice"]
    assert volume.value == "30.0" and volume.proto.delta == "-11.6"  # 11.6 mL below the reference
    assert volume.proto.direction == MetricProto.MetricDirection.DOWN
    assert volume.proto.color == MetricProto.MetricColor.GRAY and "41.6" in volume.proto.delta_description
    assert hd95.proto.delta == "no change"  # 5.02 - 5.00 rounds to zero: neither worse nor better
    assert hd95.proto.direction == MetricProto.MetricDirection.NONE
    assert hd95.proto.color == MetricProto.MetricColor.GRAY
    assert dice.proto.delta == "-0.100" and dice.proto.direction == MetricProto.MetricDirection.DOWN
    assert dice.proto.color == MetricProto.MetricColor.RED
    assert dice.proto.delta_description == hd95.proto.delta_description == "vs as acquired"  # said against what


def visible_text(markup: str) -> str:
    return re.sub(r"<[^>]+>", "", markup)


def test_error_map_per_region_with_a_legend_in_words(explorer_data):  # noqa: F811
    at = explorer()
    at.button(key="preview_button").click().run()
    at.radio(key="overlay").set_value("errors").run()
    assert not at.exception
    assert at.selectbox(key="view_region").options == ["tumour core", "whole tumour", "enhancing tumour"]
    at.selectbox(key="view_region").set_value("wt").run()
    assert not at.exception
    legend = next(m.value for m in at.markdown if "Errors in the whole tumour" in m.value)
    for words in ("correct (prediction and reference)", "extra (prediction only)", "missed (reference only)"):
        assert words in legend
    assert legend.count("background:rgb") == 3  # a swatch before each
    shown = [visible_text(e.value) for e in (*at.caption, *at.markdown)]
    assert not any(re.search(r"rgb\s*\(?\d", text) for text in shown)  # no raw RGB triples in words
    assert [s.label for s in at.slider if s.key.startswith("opacity_")] == [
        "Correct opacity", "Extra opacity", "Missed opacity"]  # fmt: skip


def test_viewer_is_one_linked_tri_planar_figure(explorer_data):  # noqa: F811
    at = explorer()
    figure = viewer_figure(at)
    assert [t["type"] for t in figure["data"]].count("image") == 3
    x, y, z = (at.slider(key=f"slice_{p}_P0").value for p in ("sagittal", "coronal", "axial"))
    lines = figure["layout"]["shapes"]  # per plane: a vertical then a horizontal crosshair line
    assert [s["x0"] for s in lines[::2]] == [x, x, y]  # axial and coronal columns are x, sagittal's y
    assert [s["y0"] for s in lines[1::2]] == [39 - y, 39 - z, 39 - z]  # rows count down from the top
    at.slider(key="slice_axial_P0").set_value(z - 3).run()
    lines = viewer_figure(at)["layout"]["shapes"]
    assert [s["y0"] for s in lines[1::2]] == [39 - y, 39 - (z - 3), 39 - (z - 3)]  # the other planes follow
    assert f"axial {z - 3}" in [a["text"] for a in viewer_figure(at)["layout"]["annotations"]]
    # Zoomed to the tumour (its box and 12 voxels), then the whole slice.
    assert at.toggle(key="zoom_P0").value
    zoomed = viewer_figure(at)["layout"]["xaxis"]["range"]
    at.toggle(key="zoom_P0").set_value(False).run()
    assert viewer_figure(at)["layout"]["xaxis"]["range"] == [-0.5, 39.5] and zoomed != [-0.5, 39.5]
    # Window per sequence: narrowing T1c's changes the picture, and FLAIR keeps its own.
    before = viewer_figure(at)["data"][0]["source"]
    low, high = at.slider(key="window_t1c_P0").value
    at.slider(key="window_t1c_P0").set_value((low, low + (high - low) / 4)).run()
    assert viewer_figure(at)["data"][0]["source"] != before
    narrowed = at.slider(key="window_t1c_P0").value
    at.radio(key="view_sequence").set_value("FLAIR").run()
    assert at.slider(key="window_flair_P0").value != narrowed
    at.radio(key="view_sequence").set_value("T1c").run()
    assert at.slider(key="window_t1c_P0").value == narrowed  # kept while FLAIR was shown
    # Outlines instead of filled labels; opacity per class for filled labels.
    at.radio(key="overlay").set_value("reference").run()
    assert [s.label for s in at.slider if s.key.startswith("opacity_")] == [
        "Necrosis / non-enhancing opacity", "Oedema opacity", "Enhancing opacity"]  # fmt: skip
    at.radio(key="overlay").set_value("outlines").run()
    assert not at.exception and any("Outlines of the tumour core" in m.value for m in at.markdown)
    # Session state holds ids and choices, never arrays (AppTest has no public way to list it).
    state = at.session_state._state.filtered_state
    assert not any(isinstance(v, np.ndarray) for v in state.values())
    assert max(len(pickle.dumps(v)) for v in state.values()) < 1000


def test_live_switches_run_the_model_without_a_button(explorer_data):  # noqa: F811
    at = explorer(live=True)
    assert not any(b.label.startswith("Run TinyBraTS") for b in at.button)
    assert not any("Run the model" in i.value for i in at.info)
    assert [m.label for m in at.metric].count("Dice") == 3  # the case as acquired, computed on opening
    assert not any(m.delta for m in at.metric if m.label == "Dice")
    at.toggle(key="use_flair_P0").set_value(False).run()
    assert not at.exception, at.exception
    dice = [m for m in at.metric if m.label == "Dice"]
    assert len(dice) == 3 and all(m.delta for m in dice)  # compared with the complete-data run
    assert any("missing FLAIR" in m.value for m in at.markdown)
    assert len(at.get("plotly_chart")) == 1  # the preview was replaced, not stacked
    at.toggle(key="use_flair_P0").set_value(True).run()  # back: the stored run, no new computation
    assert any("computed already" in c.value for c in at.caption)


def test_clean_up_drops_a_speck_at_the_brain_edge(explorer_data, monkeypatch):  # noqa: F811
    """A prediction that is the reference plus a 3x3x3 blob at the brain's edge, far from the
    tumour: whole-tumour Dice below 1 as predicted, exactly 1 once cleaned up."""
    from scipy import ndimage

    import ui.data
    from core.infer import Prediction

    def cached_prediction(cohort, case_id, model_path, sha256, missing):
        case = ui.data.load_case(cohort, case_id)
        brain = np.any(case.images != 0, axis=0)
        depth = ndimage.distance_transform_edt(brain)
        far = ndimage.distance_transform_edt(case.labels == 0)
        x, y, z = np.argwhere(brain & (depth >= 2) & (depth <= 3) & (far > 12))[0]
        labels = case.labels.copy()
        labels[x - 1 : x + 2, y - 1 : y + 2, z - 1 : z + 2] = np.where(
            brain[x - 1 : x + 2, y - 1 : y + 2, z - 1 : z + 2], 2, 0
        )
        return Prediction(labels, None, frozenset(missing), 1.0, "test", (0, 0, 0))

    monkeypatch.setattr(ui.data, "cached_prediction", cached_prediction)
    at = explorer()
    wt = lambda: [m.value for m in at.metric if m.label == "Dice"][1]  # noqa: E731 (tumour core, whole, enhancing)
    assert float(wt()) < 1
    at.toggle(key="clean_up").set_value(True).run()
    assert not at.exception, at.exception
    assert wt() == "1.000"
    assert any("cleaned up: 1 component (" in m.value and "1 kept" in m.value for m in at.markdown)


def test_a_folder_of_ones_own_cases_opens_on_its_first_case(explorer_data, monkeypatch):  # noqa: F811
    """Case folders without a manifest (real BraTS folders, say) beside the demo results: the explorer
    lists them and opens on the first, not on the demo results' showcase patient (SYN_H1_0008)."""
    import os

    cohort = os.environ["GBM_DEMO_COHORT"]
    os.remove(os.path.join(cohort, "manifest.csv"))
    monkeypatch.setenv("GBM_DEMO_STORE", str(ROOT / "data_samples" / "results.sqlite"))
    at = explorer()
    assert at.selectbox(key="patient").value == "P0" and at.selectbox(key="hospital").value == "public"
    assert "P1" in at.selectbox(key="patient").options
