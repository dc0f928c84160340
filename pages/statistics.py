"""Statistics: paired Wilcoxon comparisons with CIs and adjusted p-values; volume agreement."""

import pandas as pd
import streamlit as st

from core.figures import bland_altman_figure
from core.report import COMPUTE, STATUS, paper_pairs, paper_targets, site_pairs, sparsified_pairs
from core.sequences import REGION_DISPLAY
from core.stats import SCOPES, comparison_table, select_scope
from ui.data import all_results

st.title("Statistics")
table = all_results()
if table.empty:
    st.info("No results yet. Evaluate models with `python -m core evaluate`.")
    st.stop()

models = sorted(table["model"].unique())
c1, c2, c3, c4 = st.columns(4)
family = c1.radio("Comparisons", ["the paper's family", "sparsified vs not", "hospital 1 data vs not", "choose pairs"],
                  key="stat_family",
                  help="The paper: every pair with and without sparsified training, and with and without "
                  "hospital 1 data, Bonferroni over all their tests")  # fmt: skip
region = c2.selectbox("Region", ["tc", "wt", "et"], format_func=REGION_DISPLAY.get, key="stat_region")
metric = c3.selectbox("Metric", ["dice", "sensitivity", "hd95"], key="stat_metric")
adjust = c4.radio("Adjustment", ["bonferroni", "holm"], key="stat_adjust")
if family != "choose pairs":
    pairs = {"the paper's family": paper_pairs, "sparsified vs not": sparsified_pairs,
             "hospital 1 data vs not": site_pairs}[family](models)  # fmt: skip
else:
    a = st.multiselect("Model A", models, default=models[:1], key="stat_a")
    b = st.multiselect("Model B", models, default=models[-1:], key="stat_b")
    pairs = [(x, y) for x in a for y in b if x != y]
if not pairs:
    st.warning("No model pairs to compare (sparsified pairs need X and Xst; hospital 1 pairs H1X and X).")
    st.stop()
scope = st.radio("Cases", list(SCOPES), horizontal=True, key="stat_scope", format_func=SCOPES.get)
scoped = select_scope(table, scope)
if scoped.empty:
    st.warning(f"No results for these choices ({SCOPES[scope]}).")
    st.stop()
result = comparison_table(scoped[scoped["region"] == region], pairs, metric=metric, adjust=adjust)
# p-values in significant digits: rounded to 4 decimals, every significant one would read 0.
p_columns = {"p_value": "{:.2g}", "p_adjusted": "{:.2g}"}
decimals = {c: "{:.4f}" for c in result.select_dtypes("float").columns if c not in p_columns}
shown = result.style.format(decimals | p_columns)
st.dataframe(shown, hide_index=True, width="stretch")
st.caption(
    f"{len(result)} tests on {scoped['patient_id'].nunique()} patients; differences are A - B; "
    "estimate and 95 % CI: Hodges-Lehmann, as R's wilcox.test."
)
st.download_button("Download CSV", result.to_csv(index=False), "comparisons.csv", "text/csv", key="stat_csv")
st.subheader("The paper's findings, checked on these results")
# The table above is the paper's family when it ran the paper's pairs on Dice over the simulated cases.
paper_family = family == "the paper's family" and metric == "dice" and scope == "simulated"
targets = pd.DataFrame(paper_targets(table, region, adjust, result if paper_family else COMPUTE))
targets["status"] = targets["met"].map(STATUS)
st.dataframe(targets[["model", "target", "value", "n", "status"]].round(3), hide_index=True, width="stretch")
st.caption("BraTS accurate on the public data; sparsified training helps most without FLAIR; a model trained "
           "on many hospitals holds up on a new one whatever is missing.")  # fmt: skip
st.subheader("Volume agreement (Bland-Altman)")
model = st.selectbox("Model", sorted(scoped["model"].unique()), key="stat_ba")
agreement = scoped[(scoped["model"] == model) & (scoped["region"] == region)]
st.plotly_chart(bland_altman_figure(agreement, model, region), width="stretch")
st.caption(f"{len(agreement)} results of {agreement['patient_id'].nunique()} patients: the cases chosen above "
           f"({SCOPES[scope]}).")  # fmt: skip
