"""Statistics against R: literal values from R 4.2.2, produced by this R code (see
``wilcox.test(x, y, paired = TRUE, conf.int = TRUE)``):

    set.seed(1); x <- round(runif(12, 0.5, 0.9), 3); y <- round(x - rnorm(12, 0.03, 0.05), 3)  # exact
    set.seed(2); x <- round(runif(15, 0.4, 0.9), 2); y <- round(x - rnorm(15, 0.02, 0.04), 2)  # ties
    set.seed(3); x <- round(runif(14, 0.4, 0.9), 3); y <- x
    y[1:10] <- round(x[1:10] + rnorm(10, 0.05, 0.05), 3)                                          # zeroes
    set.seed(4); x <- runif(60, 0.3, 0.9); y <- x - rnorm(60, 0.01, 0.05)                        # n >= 50
    set.seed(5); x <- round(runif(9, 0.2, 0.8), 4); y <- round(x + rnorm(9, 0.1, 0.05), 4)     # V = 0
    r <- wilcox.test(x, y, paired = TRUE, conf.int = TRUE)
    sprintf("%.17g", c(r$statistic, r$p.value, r$estimate, r$conf.int))
    p <- c(0.01, 0.2, NA, 0.003, 0.04, 0.5); p.adjust(p, "bonferroni"); p.adjust(p, "holm"); p.adjust(p, "BH")
    wilcox.test(0.8, 0.7, paired = TRUE)$p.value                                                  # 1 (n = 1)
"""

import numpy as np
import pandas as pd
import pytest

from core.stats import (
    adjust_p,
    bonferroni,
    comparison_table,
    holm,
    mixed_model,
    psignrank,
    qsignrank,
    untested_reasons,
    wilcoxon_paired,
)

R_CASES = [
    pytest.param(
        [0.606, 0.649, 0.729, 0.863, 0.581, 0.859, 0.878, 0.764, 0.752, 0.525, 0.582, 0.571],
        [0.552, 0.582, 0.67, 0.848, 0.475, 0.81, 0.879, 0.845, 0.666, 0.497, 0.553, 0.494],
        67.0,
        0.026855468750000017,
        0.046750000000000014,
        (0.012500000000000011, 0.06999999999999995),
        "Wilcoxon signed rank exact test",
        id="exact",
    ),
    pytest.param(
        [0.49, 0.75, 0.69, 0.48, 0.87, 0.87, 0.46, 0.82, 0.63, 0.67, 0.68, 0.52, 0.78, 0.49, 0.6],
        [0.43, 0.76, 0.73, 0.47, 0.89, 0.85, 0.45, 0.84, 0.65, 0.61, 0.65, 0.52, 0.8, 0.49, 0.62],
        45.5,
        1.0,
        -1.7505965087927125e-05,
        (-0.019951515137266545, 0.02004180396290142),
        "Wilcoxon signed rank test with continuity correction",
        id="ties",
    ),
    pytest.param(
        [0.484, 0.804, 0.592, 0.564, 0.701, 0.702, 0.462, 0.547, 0.689, 0.715, 0.656, 0.653, 0.667, 0.679],
        [0.59, 0.793, 0.705, 0.577, 0.694, 0.716, 0.525, 0.605, 0.724, 0.717, 0.656, 0.653, 0.667, 0.679],
        5.0,
        0.024932455602863113,
        -0.03557785722215086,
        (-0.07396890210821258, -0.002013739458093601),
        "Wilcoxon signed rank test with continuity correction",
        id="zeroes",
    ),
    pytest.param(
        [
            0.651480183005333,
            0.30536747742444276,
            0.47624376718886197,
            0.46642497475259004,
            0.7881445289589466,
            0.4562566628213972,
            0.7346435355953873,
            0.843655290780589,
            0.869424132630229,
            0.34388668164610864,
            0.7528050161898137,
            0.4716003724839538,
            0.3600321129430085,
            0.872441265033558,
            0.5493642711080611,
            0.5730614505708218,
            0.8826333935838193,
            0.6503927878104151,
            0.8773227746598424,
            0.757021441916004,
            0.728705121204257,
            0.8979677141178399,
            0.6037625365890562,
            0.5939659429248423,
            0.6894968211650849,
            0.798483847361058,
            0.5891994014382362,
            0.8050477341748774,
            0.6082210410386324,
            0.6178665212821215,
            0.6402673275209964,
            0.44336932701990006,
            0.8267975604627282,
            0.6927132102660836,
            0.5894225367810577,
            0.8826178782619536,
            0.5760155463125557,
            0.673233892209828,
            0.5330508207902313,
            0.3039556360803544,
            0.8629914523568005,
            0.445302655454725,
            0.6393567181192339,
            0.40853946190327406,
            0.8426995740272105,
            0.35057478309608997,
            0.8407030292786659,
            0.8349668794311584,
            0.7340249598026276,
            0.6388859335798771,
            0.533165998896584,
            0.74755731029436,
            0.8372525906190278,
            0.7854460499715061,
            0.7911277956794949,
            0.5527199811302126,
            0.40601789904758334,
            0.404271935345605,
            0.8355274467263372,
            0.7460004372987896,
        ],
        [
            0.6338069740276016,
            0.24277084847496225,
            0.5039543278297378,
            0.5305344307351516,
            0.7350879353340607,
            0.466482654359247,
            0.7360138064590681,
            0.7869504822374644,
            0.8827189266197766,
            0.36576385657461946,
            0.6756195848798451,
            0.4525236032540569,
            0.2854064961221514,
            0.9468436938267978,
            0.5804139499896088,
            0.6061687577758101,
            0.8676912091269215,
            0.659175545020333,
            0.8311275668956295,
            0.8368905428446308,
            0.7518922782830681,
            0.9191540385542989,
            0.5977441581809643,
            0.5621847047833719,
            0.5809517726788729,
            0.8183217809865144,
            0.6068247620186843,
            0.7602494024898221,
            0.6060042392690317,
            0.5404216115222349,
            0.6836934810453351,
            0.38014678967969356,
            0.8824336486896023,
            0.5795284751534884,
            0.5728533862479238,
            0.8842023007077005,
            0.5858833224612285,
            0.6187622880957593,
            0.4967423688153948,
            0.3025192982284854,
            0.8450576074846378,
            0.4595859087633463,
            0.6773020218691942,
            0.3895135972979213,
            0.7966128598862646,
            0.35905180700212985,
            0.818826113651683,
            0.8582629850519041,
            0.7638653352947654,
            0.6314707801454462,
            0.4588195822317083,
            0.7482647934312795,
            0.8559898638340979,
            0.8489824021861226,
            0.8327647173206199,
            0.608046223892196,
            0.4379305194135405,
            0.450804619396844,
            0.8070900379621864,
            0.7460905883153335,
        ],
        959.0,
        0.7487941871577282,
        0.002242389223471751,
        (-0.009523169274493612, 0.015606040939728467),
        "Wilcoxon signed rank test with continuity correction",
        id="n60",
    ),
    pytest.param(
        [0.3201, 0.6111, 0.7501, 0.3706, 0.2628, 0.6206, 0.5168, 0.6848, 0.7739],
        [0.3589, 0.7099, 0.8575, 0.4289, 0.4236, 0.7708, 0.646, 0.7471, 0.8714],
        0.0,
        0.00390625,
        -0.0998,
        (-0.13410000000000002, -0.06230000000000002),
        "Wilcoxon signed rank exact test",
        id="exact_negative",
    ),
]


@pytest.mark.parametrize(("x", "y", "v", "p", "estimate", "ci", "method"), R_CASES)
def test_wilcoxon_matches_r(x, y, v, p, estimate, ci, method):
    result = wilcoxon_paired(x, y)
    assert result.v == v
    assert result.p_value == pytest.approx(p, rel=1e-9)
    assert result.method == method
    # Exact cases are closed form; asymptotic ones come from R's Brent root finder (ported).
    assert result.estimate == pytest.approx(estimate, rel=1e-9, abs=1e-12)
    assert (result.ci_low, result.ci_high) == pytest.approx(ci, rel=1e-9, abs=1e-12)
    assert result.conf_level == 0.95
    assert result.median_difference == pytest.approx(float(np.median(np.subtract(x, y))))


def test_zero_differences_are_dropped_from_n():
    x, y = R_CASES[2].values[:2]
    result = wilcoxon_paired(x, y)
    assert result.n == 10 and result.n_pairs == 14


def test_nan_pairs_are_dropped_and_bad_input_named():
    x, y = R_CASES[0].values[:2]
    with_nan = wilcoxon_paired([*x, np.nan], [*y, 0.5])
    assert with_nan.n_pairs == 12 and with_nan.p_value == wilcoxon_paired(x, y).p_value
    with pytest.raises(ValueError, match="x has 3 values but y has 2"):
        wilcoxon_paired([1, 2, 3], [1, 2])


def test_signrank_distribution():
    # n = 3: sums of subsets of {1, 2, 3}: 0,1,2,3,3,4,5,6 -> P(V <= 3) = 5/8.
    assert psignrank(3, 3) == pytest.approx(5 / 8, rel=1e-14) and psignrank(-1, 3) == 0 and psignrank(6, 3) == 1
    assert qsignrank(0.025, 12) == 14  # R: qsignrank(0.025, 12)


def test_p_adjust_matches_r():
    p = [0.01, 0.2, np.nan, 0.003, 0.04, 0.5]
    np.testing.assert_allclose(bonferroni(p), [0.05, 1, np.nan, 0.015, 0.2, 1])
    np.testing.assert_allclose(holm(p), [0.04, 0.4, np.nan, 0.015, 0.12, 0.5])
    np.testing.assert_allclose(adjust_p(p, "bh"), [0.025, 0.25, np.nan, 0.015, 0.04 * 5 / 3, 0.5])
    with pytest.raises(ValueError, match="adjust must be one of"):
        adjust_p(p, "sidak")


def test_comparison_table_pairs_by_patient_and_adjusts_over_the_family():
    rng = np.random.default_rng(0)
    rows = []
    for missing in ("none", "flair"):
        for k in range(12):
            base = rng.uniform(0.5, 0.9)
            rows.append({"model": "A", "patient_id": f"p{k}", "missing": missing, "dice": base})
            shift = 0.1 if missing == "flair" else 0.0
            rows.append(
                {"model": "B", "patient_id": f"p{k}", "missing": missing, "dice": base - shift - rng.uniform(0, 0.01)}
            )
    table = comparison_table(pd.DataFrame(rows), [("A", "B")])
    assert list(table["missing"]) == ["none", "flair"] and list(table["n"]) == [12, 12]
    flair = table[table["missing"] == "flair"].iloc[0]
    # All 12 differences positive: exact p = 2 / 2^12; two tests -> Bonferroni x 2.
    assert flair["p_value"] == pytest.approx(2 / 2**12) and flair["p_adjusted"] == pytest.approx(4 / 2**12)
    assert flair["significant"] and flair["median_difference"] > 0.1
    assert list(table.columns) == [
        "model_a",
        "model_b",
        "missing",
        "n",
        "median_difference",
        "estimate",
        "ci_low",
        "ci_high",
        "p_value",
        "p_adjusted",
        "significant",
        "n_nonzero",
        "tested",
    ]


def test_scopes_select_simulated_complete_cases_or_acquired_ones():
    import pandas as pd

    from core.stats import select_scope

    rows = [  # (patient, acquired missing, evaluated missing)
        ("A", "none", "none"), ("A", "none", "flair"), ("A", "none", "t1"),  # complete, combinations simulated
        ("B", "none", "none"),  # complete, evaluated as acquired only
        ("C", "t2", "t2"),  # acquired without T2
    ]  # fmt: skip
    table = pd.DataFrame(rows, columns=["patient_id", "acquired_missing", "missing"])
    assert select_scope(table, "simulated")["patient_id"].tolist() == ["A", "A", "A"]
    assert select_scope(table, "acquired")[["patient_id", "missing"]].values.tolist() == [
        ["A", "none"], ["B", "none"], ["C", "t2"]]  # fmt: skip
    assert len(select_scope(table, "all")) == 5
    with pytest.raises(ValueError, match="scope must be one of"):
        select_scope(table, "some")


def test_only_testable_comparisons_enter_the_family():
    rng = np.random.default_rng(0)
    rows = []
    for missing, patients in (("none", 12), ("flair", 12), ("t1", 1), ("t2", 5)):
        for k in range(patients):
            base = rng.uniform(0.5, 0.9)
            b = {"flair": base - 0.1 - rng.uniform(0, 0.01), "t1": base - 0.1, "t2": base}.get(missing)
            b = base - rng.uniform(-0.01, 0.01) if b is None else b
            rows += [{"model": "A", "patient_id": f"p{k}", "missing": missing, "dice": base},
                     {"model": "B", "patient_id": f"p{k}", "missing": missing, "dice": b}]  # fmt: skip
    table = comparison_table(pd.DataFrame(rows), [("A", "B")]).set_index("missing")
    # t1: one pair (R: p = 1 whatever the data); t2: every difference zero. Neither is a test.
    assert table["tested"].to_dict() == {"none": True, "t1": False, "t2": False, "flair": True}
    assert table.loc["t1", "p_value"] == 1 and np.isnan(table.loc["t1", "p_adjusted"])
    assert table.loc["t1", "n_nonzero"] == 1 and table.loc["t2", "n_nonzero"] == 0 and table.loc["t2", "n"] == 5
    assert not table.loc["t1", "significant"] and not table.loc["t2", "significant"]
    # Bonferroni over the 2 tests, not 4: exact p = 2 / 2^12 times 2.
    assert table.loc["flair", "p_adjusted"] == pytest.approx(4 / 2**12)
    assert untested_reasons(table.reset_index()) == ["A vs B, t1: 1 of 1 pairs differ", "A vs B, t2: all 5 pairs equal"]


def test_mixed_model_contrasts_equal_the_balanced_two_way_anova():
    """Balanced data (every patient has every model x combination once): REML's fixed effects
    are the cell means and its residual variance the ANOVA's mean square error (patient as a
    block), so a within-patient contrast A - B has the mean paired difference as estimate and
    standard error sqrt(2 MSE / n). Computed here with numpy least squares, not statsmodels."""
    from scipy.stats import norm

    rng = np.random.default_rng(1)
    n, combos = 8, ["none", "flair"]
    patient_effect = rng.normal(0, 0.1, n)
    rows = []
    for k in range(n):
        for combo in combos:
            for model, shift in (("A", 0.0), ("B", 0.15 if combo == "flair" else 0.01)):
                dice = 0.7 + patient_effect[k] - shift + rng.normal(0, 0.03)
                rows.append({"model": model, "patient_id": f"p{k}", "missing": combo, "dice": dice})
    data = pd.DataFrame(rows)
    result = mixed_model(data, [("A", "B")], adjust="holm")
    # Least squares with patient blocks and the model x combination cells.
    cells = data["model"] + "|" + data["missing"]
    design = np.column_stack([pd.get_dummies(data["patient_id"]).to_numpy(float),
                              pd.get_dummies(cells).to_numpy(float)[:, 1:]])  # fmt: skip
    y = data["dice"].to_numpy()
    residual = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    mse = residual @ residual / (len(y) - np.linalg.matrix_rank(design))
    table = result.contrasts.set_index("missing")
    for combo in combos:
        wide = data[data["missing"] == combo].pivot(index="patient_id", columns="model", values="dice")
        estimate, se = (wide["A"] - wide["B"]).mean(), np.sqrt(2 * mse / n)
        assert table.loc[combo, "estimate"] == pytest.approx(estimate, abs=1e-6)
        assert table.loc[combo, "ci_high"] - table.loc[combo, "estimate"] == pytest.approx(
            norm.isf(0.025) * se, rel=1e-4
        )
        assert table.loc[combo, "p_value"] == pytest.approx(2 * norm.sf(abs(estimate) / se), rel=1e-3)
    assert result.residual_variance == pytest.approx(mse, rel=1e-4) and result.patient_variance > 0
    assert result.n_obs == 32 and result.n_patients == n and result.converged and result.left_out == ()
    holm_p = table["p_value"].sort_values()
    assert table.loc[holm_p.index[0], "p_adjusted"] == pytest.approx(2 * holm_p.iloc[0])
    assert result.formula == "dice ~ model * missing + (1 | patient)"
    with pytest.raises(ValueError, match="at least 2 models on 2 patients"):
        mixed_model(data[data["patient_id"] == "p0"], [("A", "B")])


def test_as_acquired_keeps_each_case_with_its_own_missing_sequences():
    import pandas as pd

    from core.stats import as_acquired, select_scope

    table = pd.DataFrame({"patient_id": ["a", "a", "b", "b"], "acquired_missing": ["none", "none", "t2", "t2"],
                          "missing": ["none", "flair", "t2", "t2+flair"]})  # fmt: skip
    assert as_acquired(table)["missing"].tolist() == ["none", "t2"]
    assert select_scope(table, "acquired").equals(as_acquired(table))


def test_not_applicable_rows_are_left_out_and_counted():
    from core.stats import applicable_rows, not_applicable_count, not_applicable_words, select_scope

    rng = np.random.default_rng(0)
    rows = []
    for patient in range(6):
        for missing in ("none", "flair"):
            for model in ("A", "B"):
                usable = not (model == "B" and missing == "flair")  # B's card: cannot run without FLAIR
                rows.append({"model": model, "patient_id": f"P{patient}", "hospital": "1", "acquired_missing": "none",
                             "missing": missing, "region": "tc", "dice": rng.uniform(0.5, 0.9) if usable else np.nan,
                             "applicable": int(usable)})  # fmt: skip
    table = pd.DataFrame(rows)
    assert len(applicable_rows(table)) == 18 and not_applicable_count(table) == 6
    assert "6 results not applicable" in not_applicable_words(table) and "B" in not_applicable_words(table)
    assert not_applicable_words(applicable_rows(table)) == ""
    assert len(select_scope(table, "simulated")) == 18 and len(select_scope(table, "all")) == 18
    result = comparison_table(table, [("A", "B")])
    flair = result[result["missing"] == "flair"].iloc[0]
    assert flair["n"] == 0 and not flair["tested"]  # no pair: not a comparison with Dice 0
    assert result[result["missing"] == "none"].iloc[0]["n"] == 6
    fit = mixed_model(table, [("A", "B")])
    assert fit.left_out == ("flair",)
