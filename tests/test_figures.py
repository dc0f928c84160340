"""Figure builders (pure) and the HTML report."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.card import sparsified_pairs
from core.figures import error_map_rgb, hospital_boxplot, median_heatmap, missing_comparison_figure, overlay_rgb
from core.report import build_report
from core.stats import comparison_table


def long_table() -> pd.DataFrame:
    """12 hospital-1 patients; BraTSst beats BraTS by 0.3 without FLAIR and ties otherwise."""
    rng = np.random.default_rng(0)
    rows = []
    for k in range(12):
        for missing in ("none", "flair"):
            base = rng.uniform(0.7, 0.9)
            for model, drop in (("BraTS", 0.3 + rng.uniform(0, 0.05) if missing == "flair" else 0.0),
                                ("BraTSst", rng.uniform(-0.01, 0.01))):  # fmt: skip
                rows.append({"model": model, "patient_id": f"H1_{k}", "hospital": "1", "acquired_missing": "none",
                             "missing": missing, "region": "tc", "dice": base - drop})  # fmt: skip
    return pd.DataFrame(rows)


def test_missing_comparison_marks_significant_combinations():
    table = long_table()
    comparison = comparison_table(table, [("BraTSst", "BraTS")])
    assert list(comparison["significant"]) == [False, True]
    figure = missing_comparison_figure(table, "BraTSst", "BraTS", comparison)
    assert [a.text for a in figure.layout.annotations] == ["*"]
    assert figure.layout.annotations[0].x == "missing FLAIR"
    assert [t.name for t in figure.data] == ["BraTSst", "BraTS"] and len(figure.data[0].y) == 24


def test_heatmap_holds_medians_and_boxplot_one_box_per_model():
    table = long_table()
    heat = median_heatmap(table)
    z = np.asarray(heat.data[0].z)
    expected = table.pivot_table(index="model", columns="missing", values="dice", aggfunc="median")
    np.testing.assert_allclose(z, expected[["none", "flair"]].to_numpy())
    assert list(heat.data[0].x) == ["complete", "missing FLAIR"]
    assert list(heat.data[0].y) == ["BraTS (n=12)", "BraTSst (n=12)"]
    fewer = table[~((table["model"] == "BraTSst") & table["patient_id"].isin(["H1_0", "H1_1"]))]
    assert list(median_heatmap(fewer).data[0].y) == ["BraTS (n=12)", "BraTSst (n=10)"]
    # One combination on fewer patients than another: the row says both, each cell its own.
    partial = table[~((table["model"] == "BraTS") & (table["missing"] == "flair") & (table["patient_id"] == "H1_3"))]
    heat = median_heatmap(partial)
    assert list(heat.data[0].y) == ["BraTS (n=11 to 12)", "BraTSst (n=12)"]
    assert np.asarray(heat.data[0].customdata).tolist() == [[12, 11], [12, 12]]
    box = hospital_boxplot(table)
    assert {t.name for t in box.data} == {"BraTS", "BraTSst"} and all(len(t.y) == 12 for t in box.data)
    assert box.layout.xaxis.ticktext == ("hospital 1<br>12 cases",)
    undefined = fewer.copy()
    undefined.loc[(undefined["model"] == "BraTS") & (undefined["patient_id"] == "H1_5"), "dice"] = np.nan
    one = table[table["patient_id"] == "H1_0"]
    assert hospital_boxplot(one).layout.xaxis.ticktext == ("hospital 1<br>1 case",)
    assert hospital_boxplot(undefined).layout.xaxis.ticktext == ("hospital 1<br>10 to 11 cases",)


def test_report_is_self_contained_with_the_three_figures():
    table = long_table()
    assert sparsified_pairs(table["model"].unique()) == [("BraTSst", "BraTS")]
    page = build_report(table)
    assert page.count("<h2>Figure") == 3 and "Paired Wilcoxon" in page
    assert "Plotly.newPlot" in page and "<script src=" not in page  # plotly.js inlined: opens offline


def test_overlays_colour_only_their_voxels():
    gray = np.full((4, 4), 0.5, np.float32)
    pred, ref = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    pred[0, 0] = ref[0, 0] = True  # true positive
    pred[1, 1] = True  # false positive
    ref[2, 2] = True  # false negative
    rgb = error_map_rgb(gray, pred, ref, opacity=1.0)
    assert tuple(rgb[0, 0]) == (240, 228, 66) and tuple(rgb[1, 1]) == (213, 94, 0) and tuple(rgb[2, 2]) == (0, 114, 178)
    assert tuple(rgb[3, 3]) == (127, 127, 127)
    labels = np.zeros((4, 4), np.uint8)
    labels[0, 1] = 3
    assert tuple(overlay_rgb(gray, labels, 1.0)[0, 1]) == (240, 228, 66)


def test_the_papers_family_is_72_tests_with_all_eleven_models():
    from core.card import paper_pairs, site_pairs
    from core.zoo import ZOO

    pairs = paper_pairs(list(ZOO))
    # Typed from the paper's design: 4 pairs with and without sparsified training, 5 with and
    # without hospital 1 data (cH1BraTS has no complete-only twin without hospital 1).
    assert sorted(site_pairs(ZOO)) == sorted([("H1BraTS", "BraTS"), ("H1BraTSst", "BraTSst"),
                                              ("H1-6BraTS", "H2-6BraTS"), ("H1-6BraTSst", "H2-6BraTSst"),
                                              ("cH1-6BraTS", "cH2-6BraTS")])  # fmt: skip
    assert len(pairs) == 9 and len(pairs) * 8 == 72
    assert ("H1BraTSst", "H1BraTS") in pairs and ("BraTSst", "BraTS") in pairs


def test_results_after_clean_up_pair_with_their_model_and_stay_out_of_the_papers_family():
    from core.card import cleanup_pairs, other_models, paper_pairs

    models = ["BraTS", "BraTSst", "H1BraTS", "H1BraTS+clean", "BraTSst+clean", "UNet3D", "UNet3D+clean", "X+clean"]
    assert cleanup_pairs(models) == [("BraTSst+clean", "BraTSst"), ("H1BraTS+clean", "H1BraTS"),
                                     ("UNet3D+clean", "UNet3D")]  # fmt: skip
    assert sorted(paper_pairs(models)) == [("BraTSst", "BraTS"), ("H1BraTS", "BraTS")]
    assert other_models(models) == ["UNet3D", "UNet3D+clean", "X+clean"]


def targets_table() -> pd.DataFrame:
    """BraTS on 4 public cases; BraTS/BraTSst/H2-6BraTSst on 12 hospital-1 cases, two combinations."""
    rows = [{"model": "BraTS", "patient_id": f"P{k}", "hospital": "public", "acquired_missing": "none",
             "missing": "none", "dice": dice} for k, dice in enumerate((0.70, 0.82, 0.86, 0.90))]  # fmt: skip
    for row in long_table().to_dict("records"):
        rows.append(row)
        if row["model"] == "BraTSst":  # H2-6BraTSst: 0.1 below BraTSst with FLAIR missing, 0.05 above otherwise
            rows.append(
                row | {"model": "H2-6BraTSst", "dice": row["dice"] + (-0.1 if row["missing"] == "flair" else 0.05)}
            )
    table = pd.DataFrame(rows)
    table["region"] = "tc"
    table["model_sha256"] = table["model"].map(lambda m: f"sha-{m}")
    return table


def test_targets_are_measured_from_the_results():
    from core.report import paper_targets

    table = targets_table()
    brats, sparsified, robust = paper_targets(table)
    assert brats["model"] == "BraTS" and brats["n"] == 4
    assert brats["value"] == np.median([0.70, 0.82, 0.86, 0.90]) and brats["met"]  # 0.84
    # BraTSst is 0.3 better on all 12 FLAIR-missing pairs: exact p = 2 / 2^12, x2 tests (one pair) = 0.00098.
    assert sparsified["n"] == 12 and sparsified["met"] and "over the 2 tests" in sparsified["target"]
    assert abs(sparsified["p_adjusted"] - 2 * 2 / 2**12) < 1e-12
    flair = table[(table["model"] == "BraTSst") & (table["missing"] == "flair")]["dice"].to_numpy() - 0.1
    assert robust["worst"] == "flair" and abs(robust["value"] - np.median(flair)) < 1e-12
    assert robust["met"] == (np.median(flair) >= 0.80) and robust["combinations"] == 2
    assert [t["met"] for t in paper_targets(table[table["model"] == "BraTSst"])] == [None, None, None]
    # A family the caller computed and found empty (None) is taken as it is, not recomputed.
    assert paper_targets(table, family=None)[1]["met"] is None


def test_report_cards_get_the_results_of_their_own_weights(tmp_path):
    import json

    import torch

    from core.model import build_model, read_card, save_model
    from core.report import update_cards

    table = targets_table()
    for seed, name in enumerate(("BraTSst", "Other")):
        torch.manual_seed(seed)
        save_model(build_model("deepmedic-lite"), tmp_path / name, {"name": name})
    sha = read_card(tmp_path / "BraTSst")["weights_sha256"]
    table.loc[table["model"] == "BraTSst", "model_sha256"] = sha
    assert update_cards(table, tmp_path, source="results.sqlite") == ["BraTSst"]
    results = json.loads((tmp_path / "BraTSst" / "card.json").read_text())["demo_results"]
    assert "demo_results" not in read_card(tmp_path / "Other")
    flair = table[(table["model"] == "BraTSst") & (table["missing"] == "flair")]["dice"]
    assert results["median_dice_simulated"]["flair"] == round(float(flair.median()), 3)
    complete = table[(table["model"] == "BraTSst") & (table["missing"] == "none")]["dice"]
    assert results["median_dice_as_acquired"] == {"1": {"median": round(float(complete.median()), 3), "n": 12}}
    assert [t["missing"] for t in results["tests"] if t["significant"]] == ["flair"] and results["family_size"] == 2
    assert results["targets"][0]["model"] == "BraTSst" and results["targets"][0]["met"]
    text = (tmp_path / "BraTSst" / "MODEL_CARD.md").read_text()
    assert "## Results (`results.sqlite`)" in text and "| missing FLAIR |" in text and "**met**" in text
    assert "Median tumour core (TC) Dice" in text and text.index("| complete |") < text.index("| missing FLAIR |")


# --------------------------------------------------------------------------- the slice viewer


def simulated_lab(rgb, deficiency: str) -> np.ndarray:
    """CIELAB (D65) of sRGB colours as seen with a colour-vision deficiency.

    Machado, Oliveira & Fernandes 2009, severity 1.0, applied in linear RGB; the matrices are
    the paper's Table 1 (also in colorspacious and DaltonLens).
    """
    matrices = {"normal": np.eye(3),
                "protan": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                           [-0.003882, -0.048116, 1.051998]],
                "deutan": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                           [-0.011820, 0.042940, 0.968881]],
                "tritan": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
                           [0.004733, 0.691367, 0.303900]]}  # fmt: skip
    c = np.asarray(rgb, float) / 255
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    linear = np.clip(linear @ np.asarray(matrices[deficiency]).T, 0, 1)
    xyz = linear @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    f = xyz / np.array([0.9505, 1.0, 1.089])
    f = np.where(f > 0.008856, np.cbrt(f), 7.787 * f + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def test_error_colours_stay_apart_when_blended_with_gray_for_colour_blind_readers():
    from itertools import combinations

    from core.figures import ERROR_COLOURS

    gray = np.zeros((1, 1), np.float32)
    for level in (0.2, 0.45, 0.7):  # dark to bright tissue, at the default opacity of 0.5
        cases = {"tp": (True, True), "fp": (True, False), "fn": (False, True)}  # (pred, ref) of one pixel
        blended = {k: error_map_rgb(gray + level, np.array([[p]]), np.array([[r]]), 0.5)[0, 0]
                   for k, (p, r) in cases.items()}  # fmt: skip
        assert set(blended) == set(ERROR_COLOURS)
        for deficiency in ("normal", "protan", "deutan", "tritan"):
            lab = {k: simulated_lab(v, deficiency) for k, v in blended.items()}
            background = simulated_lab(np.full(3, np.round(255 * level)), deficiency)
            # Delta E 76 of about 10 is clearly visible side by side; the old green and blue were 2.7 from the gray.
            assert all(np.linalg.norm(lab[a] - lab[b]) > 15 for a, b in combinations(lab, 2)), (level, deficiency)
            assert all(np.linalg.norm(v - background) > 12 for v in lab.values()), (level, deficiency)


def test_error_map_per_region_shows_the_oedema_a_prediction_missed():
    from core.figures import ERROR_COLOURS, slice_rgb

    ref = np.zeros((7, 7), np.uint8)
    ref[1:6, 1:6] = 2  # oedema around
    ref[2:5, 2:5] = 1  # a necrotic core
    pred = np.where(ref == 1, 1, 0).astype(np.uint8)  # the core found, the oedema lost
    gray = np.full((7, 7), 0.5, np.float32)
    core = slice_rgb(gray, pred, ref, overlay="errors", region="tc", opacity=1.0)
    whole = slice_rgb(gray, pred, ref, overlay="errors", region="wt", opacity=1.0)
    assert tuple(core[3, 3]) == tuple(whole[3, 3]) == ERROR_COLOURS["tp"]
    assert tuple(core[1, 1]) == (127, 127, 127)  # oedema is not tumour core: no error there
    assert tuple(whole[1, 1]) == ERROR_COLOURS["fn"]  # but the whole tumour missed it
    per_kind = slice_rgb(gray, pred, ref, overlay="errors", region="wt", opacity={"tp": 0.0, "fn": 1.0})
    assert tuple(per_kind[3, 3]) == (127, 127, 127) and tuple(per_kind[1, 1]) == ERROR_COLOURS["fn"]


def test_outlines_are_the_boundary_pixels_and_both_show_where_masks_agree():
    from core.figures import OUTLINE_COLOURS, outline, slice_rgb

    square = np.zeros((9, 9), bool)
    square[2:7, 2:7] = True
    inner = {(r, c) for r in range(2, 7) for c in range(2, 7)} - {(r, c) for r in range(3, 6) for c in range(3, 6)}
    outer = {(1, c) for c in range(2, 7)} | {(7, c) for c in range(2, 7)} | {(r, 1) for r in range(2, 7)} | {
        (r, 7) for r in range(2, 7)}  # fmt: skip
    assert set(zip(*np.nonzero(outline(square)))) == inner and len(inner) == 16
    assert set(zip(*np.nonzero(outline(square, outer=True)))) == outer and len(outer) == 20
    assert not outline(np.zeros((4, 4), bool)).any()
    labels = square.astype(np.uint8) * 3
    rgb = slice_rgb(np.zeros((9, 9), np.float32), labels, labels, overlay="outlines", region="et")
    assert {(r, c) for r, c in zip(*np.nonzero((rgb == OUTLINE_COLOURS["prediction"]).all(-1)))} == inner
    assert {(r, c) for r, c in zip(*np.nonzero((rgb == OUTLINE_COLOURS["reference"]).all(-1)))} == outer


def test_overlay_opacity_per_label():
    gray = np.zeros((1, 3), np.float32)
    labels = np.array([[1, 2, 3]], np.uint8)
    rgb = overlay_rgb(gray, labels, {1: 1.0, 2: 0.0, 3: 0.5})
    assert tuple(rgb[0, 0]) == (213, 94, 0) and tuple(rgb[0, 1]) == (0, 0, 0) and tuple(rgb[0, 2]) == (120, 114, 33)


def test_voxel_at_names_the_voxel_take_slice_shows():
    from core.figures import PLANE_AXES, PLANES, take_slice, voxel_at

    shape = (5, 6, 7)
    volume = np.arange(np.prod(shape)).reshape(shape)  # every voxel its own value
    for plane in PLANES:
        index = 2
        image = take_slice(volume, plane, index)
        for row in range(image.shape[0]):
            for column in range(image.shape[1]):
                voxel = voxel_at(plane, column, row, index, shape)
                assert volume[voxel] == image[row, column] and voxel[PLANE_AXES[plane][2]] == index


def decode(uri: str) -> np.ndarray:
    import base64
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_tri_planar_figure_crosshair_zoom_and_clicks_name_the_voxel_shown():
    from core.figures import PLANES, take_slice, tri_planar_figure, tumour_box

    shape = (30, 40, 20)
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 256, shape).astype(np.uint8)
    point = (11, 25, 7)
    slices = {p: np.repeat(take_slice(volume, p, point[{"axial": 2, "coronal": 1, "sagittal": 0}[p]])[..., None], 3, -1)
              for p in PLANES}  # fmt: skip
    figure = tri_planar_figure(slices, point, shape)
    images = [t for t in figure.data if t.type == "image"]
    for plane, image in zip(PLANES, images):
        np.testing.assert_array_equal(decode(image.source), slices[plane])  # lossless
    clicks = [t for t in figure.data if t.type == "scatter"]
    for plane, image, grid in zip(PLANES, images, clicks):
        pixels = decode(image.source)[..., 0]
        voxels = np.asarray(grid.customdata)
        assert len(voxels) <= 2500
        # The voxel a click reports is the voxel drawn under the point clicked.
        assert np.array_equal(pixels[np.asarray(grid.y), np.asarray(grid.x)], volume[tuple(voxels.T)]), plane
    lines = figure.layout.shapes  # per plane a vertical and a horizontal line through the point
    assert [s.x0 for s in lines[::2]] == [11, 11, 25] and [s.y0 for s in lines[1::2]] == [40 - 1 - 25, 19 - 7, 19 - 7]
    mask = np.zeros(shape, bool)
    mask[10:14, 20:31, 5:9] = True
    box = tumour_box(mask, margin=2)
    assert box == ((8, 15), (18, 32), (3, 10))
    zoomed = tri_planar_figure(slices, point, shape, box)
    assert list(zoomed.layout.xaxis.range) == [7.5, 15.5] and list(zoomed.layout.yaxis.range) == [21.5, 6.5]
    assert list(zoomed.layout.xaxis3.range) == [17.5, 32.5] and list(zoomed.layout.yaxis3.range) == [16.5, 8.5]
    assert tumour_box(np.zeros(shape, bool)) is None


def test_intensity_limits_ignore_the_zero_background():
    from core.figures import intensity_limits, scale_window

    image = np.zeros((10, 10, 10), np.float32)
    image[:5] = np.arange(1, 501, dtype=np.float32).reshape(5, 10, 10)
    low, high, lo, hi = intensity_limits(image, 0, 100)
    assert (low, high, lo, hi) == (1.0, 500.0, 1.0, 500.0)
    assert intensity_limits(np.zeros(3)) == (0.0, 1.0, 0.0, 1.0)
    np.testing.assert_allclose(scale_window(np.array([0.0, 100.0, 150.0, 300.0]), 100, 200), [0, 0, 0.5, 1])


def test_a_click_names_its_voxel_whether_customdata_is_a_list_or_a_typed_array():
    from core.figures import clicked_voxel

    assert clicked_voxel({"x": 3, "y": 4, "customdata": [10, 20, 30]}) == (10, 20, 30)
    assert clicked_voxel({"customdata": {"0": 10, "1": 20, "2": 30}}) == (10, 20, 30)  # JSON of an Int64Array
    assert clicked_voxel({"x": 3, "y": 4}) is None and clicked_voxel({"customdata": [1, 2]}) is None


def test_tumour_centre_is_the_rounded_centre_of_mass_or_the_volume_centre():
    from core.figures import tumour_centre

    labels = np.zeros((10, 12, 9), np.uint8)
    labels[2:5, 3, 4] = 1  # x 2, 3, 4
    labels[7, 3, 4] = 3  # mean x (2 + 3 + 4 + 7) / 4 = 4
    labels[2:4, 8, 6] = 2  # the oedema counts: x 2, 3; y 8; z 6
    # mean over 6 voxels: x (16 + 5) / 6 = 3.5 -> 4 (half to even), y (4 * 3 + 2 * 8) / 6 = 4.67 -> 5,
    # z (4 * 4 + 2 * 6) / 6 = 4.67 -> 5
    assert tumour_centre(labels, labels.shape) == (4, 5, 5)
    assert tumour_centre(np.zeros_like(labels), labels.shape) == (5, 6, 4)
    assert tumour_centre(None, (7, 8, 9)) == (3, 4, 4)


def test_figures_leave_not_applicable_rows_out():
    import pandas as pd

    from core.figures import bland_altman_figure, hospital_boxplot, median_heatmap, missing_comparison_figure

    rows = []
    for patient in range(4):
        for missing in ("none", "flair"):
            for model in ("A", "B"):
                usable = not (model == "B" and missing == "flair")
                rows.append({"model": model, "patient_id": f"P{patient}", "hospital": "1", "acquired_missing": "none",
                             "missing": missing, "region": "tc", "dice": 0.8 if usable else None,
                             "volume_pred_ml": 10.0 if usable else None, "volume_ref_ml": 11.0,
                             "applicable": int(usable)})  # fmt: skip
    table = pd.DataFrame(rows)
    heatmap = median_heatmap(table)
    z = np.asarray(heatmap.data[0].z, float)
    assert np.isnan(z[1, 1]) and np.nanmin(z) == 0.8  # B without FLAIR: an empty cell, never 0
    boxes = missing_comparison_figure(table, "A", "B")
    assert [len(trace.y) for trace in boxes.data] == [8, 4]
    assert sum(len(trace.y) for trace in hospital_boxplot(table).data) == 8
    assert len(bland_altman_figure(table[table["missing"] == "flair"], "B").data[0].x) == 0


def test_report_cards_of_an_onnx_model_keep_its_text_and_replace_its_results(tmp_path):
    import json

    from core.card import model_card_markdown
    from core.report import update_cards

    folder = tmp_path / "UNet"
    folder.mkdir()
    card = {"name": "UNet", "format": "onnx", "architecture": {"family": "MONAI UNet"}, "parameters": 1000,
            "inputs": ["t1c", "flair"], "normalisation": {"method": "zscore"}, "missing": {"policy": "cannot-run"},
            "inference": {"mode": "sliding-window", "patch_size": [64, 64, 64], "overlap": 0.5},
            "output": {"kind": "scores", "labels": {"0": 0, "1": 1}}, "training": {"hospitals": ["public"]},
            "sparsity": {}, "weights_sha256": "sha-unet"}  # fmt: skip
    (folder / "card.json").write_text(json.dumps(card))
    text = model_card_markdown(card)  # an ONNX card has none of a DeepMedic card's training fields
    assert text.startswith("# UNet") and "cannot run" in text and "zscore" not in text and "z-score" in text
    (folder / "MODEL_CARD.md").write_text("# UNet\n\nTrained by its authors on their data.\n\n"
                                          "Research and teaching use only; not a medical device.\n")  # fmt: skip
    table = targets_table()
    table.loc[table["model"] == "BraTSst", "model"] = "UNet"
    table.loc[table["model"] == "UNet", "model_sha256"] = "sha-unet"
    for _ in range(2):  # a second report replaces the results section, never stacks it
        assert update_cards(table, tmp_path, source="results.sqlite") == ["UNet"]
    markdown = (folder / "MODEL_CARD.md").read_text()
    assert "Trained by its authors on their data." in markdown and markdown.count("## Results") == 1
    assert markdown.rstrip().endswith("not a medical device.") and "| missing FLAIR |" in markdown
    assert json.loads((folder / "card.json").read_text())["demo_results"]["median_dice_simulated"]
