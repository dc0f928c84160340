"""Statistics: paired Wilcoxon comparisons with CIs and adjusted p-values; a mixed-effects model; volume agreement."""

import pandas as pd
import streamlit as st

from core.card import STATUS, cleanup_pairs, paper_pairs, site_pairs, sparsified_pairs
from core.figures import METRIC_TITLES, bland_altman_figure, counted
from core.report import COMPUTE, paper_targets
from core.sequences import REGION_DISPLAY, combination_label, order_combinations
from core.stats import (
    ADJUSTMENT_NAMES,
    ADJUSTMENTS,
    MIN_NONZERO_PAIRS,
    SCOPES,
    select_scope,
    untested_reasons,
)
from ui.cohort import comparisons, mixed_effects, pick_results, show_comparisons

st.title("Statistics")
source, table = pick_results("stat")
models = sorted(table["model"].unique())
c1, c2, c3, c4 = st.columns(4)
family = c1.radio("Comparisons", ["the paper's family", "sparsified vs not", "hospital 1 data vs not",
                                  "Clean up vs not", "choose pairs"], key="stat_family",
                  help="The paper: every pair with and without sparsified training, and with and without "
                  "hospital 1 data, adjusted over all their tests. Clean up vs not: each model's results after Clean "
                  "up (NAME+clean, from Your data's evaluations or evaluate --clean) against its raw ones")  # fmt: skip
region = c2.selectbox("Region", ["tc", "wt", "et"], format_func=REGION_DISPLAY.get, key="stat_region")
metric = c3.selectbox("Metric", ["dice", "sensitivity", "hd95"], key="stat_metric", format_func=METRIC_TITLES.get)
adjust = c4.radio("Adjustment", ADJUSTMENTS, format_func=ADJUSTMENT_NAMES.get, key="stat_adjust")
if family != "choose pairs":
    pairs = {"the paper's family": paper_pairs, "sparsified vs not": sparsified_pairs,
             "hospital 1 data vs not": site_pairs, "Clean up vs not": cleanup_pairs}[family](models)  # fmt: skip
else:
    a = st.multiselect("Model A", models, default=models[:1], key="stat_a")
    b = st.multiselect("Model B", models, default=models[-1:], key="stat_b")
    pairs = [(x, y) for x in a for y in b if x != y]
scope = st.radio("Cases", list(SCOPES), horizontal=True, key="stat_scope", format_func=SCOPES.get)
scoped = select_scope(table, scope)
if scoped.empty:
    st.warning(f"No results for these choices ({SCOPES[scope]}).")
    st.stop()
rows = scoped[scoped["region"] == region]


def volume_agreement() -> None:
    """Bland-Altman of one model in one combination: it needs no pair."""
    st.subheader("Volume agreement (Bland-Altman)")
    c1, c2 = st.columns(2)
    model = c1.selectbox("Model", sorted(scoped["model"].unique()), key="stat_ba")
    combinations = order_combinations(scoped["missing"])
    combination = c2.selectbox("Missing sequences", combinations, format_func=combination_label,
                               key="stat_ba_missing",
                               help="One combination at a time: the 95 % limits assume independent points, and "
                               "one patient's results under several combinations are not")  # fmt: skip
    agreement = rows[(rows["model"] == model) & (rows["missing"] == combination)]
    n = agreement["patient_id"].nunique()
    title = f"{model}, {combination_label(combination)}: volume agreement ({counted(n, 'patient')})"
    st.plotly_chart(bland_altman_figure(agreement, model, region, title=title), width="stretch")
    st.caption(f"{counted(len(agreement), 'result')} of {counted(n, 'patient')}: the cases chosen above "
               f"({SCOPES[scope]}), {combination_label(combination)}.")  # fmt: skip


if not pairs:
    needs = {"the paper's family": "a model and its sparsified twin (BraTS and BraTSst) or a model with and without "
             "hospital 1 data (H1BraTS and BraTS)", "sparsified vs not": "a model and its sparsified twin (BraTS and "
             "BraTSst)", "hospital 1 data vs not": "a model with and without hospital 1 data (H1BraTS and BraTS)",
             "Clean up vs not": "a model's results with and without Clean up (evaluate them on the Your data page "
             "with Clean up on, or with python -m core evaluate --clean)",
             "choose pairs": "two different models in A and B"}[family]  # fmt: skip
    st.info(f"Nothing to compare in these results ({', '.join(models)}): these comparisons need {needs}. "
            "Choose other comparisons or results above; the volume agreement of each model is below.")  # fmt: skip
    volume_agreement()
    st.stop()
result = comparisons(rows, pairs, metric=metric, adjust=adjust)
tested = result[result["tested"]].drop(columns=["tested"]).reset_index(drop=True)
show_comparisons(tested)
counts = sorted(set(tested["n"].astype(int)))
patients = "" if not counts else f"{counts[0]}" if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
st.caption(
    (f"{counted(len(tested), 'test')} on {patients} patients each" if counts else "No test")
    + f", {ADJUSTMENT_NAMES[adjust]}-adjusted over "
    "these tests. n: patients with both results; median and estimate of A - B, the estimate and its 95 % CI by "
    "Hodges-Lehmann, as R's wilcox.test; sig.: adjusted p < 0.05; differ: patients whose two results are not "
    "equal (the signed-rank test ranks only those)."
)
if left_out := untested_reasons(result):
    st.info(
        f"{len(left_out)} comparisons left out of the family: a test needs at least {MIN_NONZERO_PAIRS} patients "
        "with both results and a non-zero difference (with one, the p-value is 1 whatever the data). "
        + "; ".join(left_out)
    )
st.download_button("Download CSV (every comparison, with a tested column)", result.to_csv(index=False),
                   "comparisons.csv", "text/csv", key="stat_csv")  # fmt: skip

st.subheader("One mixed-effects model over every combination")
try:
    mixed = mixed_effects(rows, pairs, metric=metric, adjust=adjust)
except ValueError as error:
    st.info(f"No mixed-effects model: {error}.")
else:
    show_comparisons(mixed.contrasts)
    variance = f"patient variance {mixed.patient_variance:.4g}, residual {mixed.residual_variance:.4g}"
    st.caption(
        f"`{mixed.formula}`, REML (statsmodels mixedlm) on {mixed.n_obs} results of {mixed.n_patients} patients; "
        f"{variance}. Each row: A - B in that combination, Wald 95 % CI and p, {ADJUSTMENT_NAMES[adjust]}-adjusted "
        "over these contrasts (sig.: adjusted p < 0.05)."
        + ("" if mixed.converged else " The fit did not converge: read with care.")
        + (f" Left out (not every model has results): {', '.join(mixed.left_out)}." if mixed.left_out else "")
    )

st.subheader("The paper's findings, checked on these results")
# The table above is the paper's family when it ran the paper's pairs on Dice over the simulated cases.
paper_family = family == "the paper's family" and metric == "dice" and scope == "simulated"
targets = pd.DataFrame(paper_targets(table, region, adjust, result if paper_family else COMPUTE))
targets["status"] = targets["met"].map(STATUS)
targets["value"] = targets["value"].map(lambda v: "" if v is None or pd.isna(v) else f"{v:.3f}")
st.table(targets[["model", "target", "value", "n", "status"]].set_index("model"))
st.caption("The paper's claims: BraTS accurate on the public data; sparsified training helps most without FLAIR; a "
           "model trained on many hospitals holds up on a new one whatever is missing. The status column says "
           "whether these results bear each one out.")  # fmt: skip

volume_agreement()
