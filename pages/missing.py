"""Missing sequences: each combination, two models side by side (Figure 4) and medians (Figure 5)."""

import streamlit as st

from core.figures import median_heatmap, missing_comparison_figure
from core.report import paper_pairs
from core.sequences import REGION_DISPLAY, combination_name, combinations_for
from core.stats import SCOPES, comparison_table, select_scope
from ui.data import all_results

st.title("Missing sequences")
table = all_results()
if table.empty:
    st.info("No results yet. Evaluate models with `python -m core evaluate --mode simulated`.")
    st.stop()

models = sorted(table["model"].unique())
pairs = paper_pairs(models) or [(models[0], models[-1])]
c1, c2, c3 = st.columns(3)
pair = c1.selectbox("Compare", pairs, format_func=lambda p: f"{p[0]} vs {p[1]}", key="miss_pair")
region = c2.selectbox("Region", ["tc", "wt", "et"], format_func=REGION_DISPLAY.get, key="miss_region")
count = c3.radio("Combinations", [8, 15], horizontal=True, key="miss_count",
                 help="8: T1, T2, FLAIR can be missing (the paper); 15: T1c too")  # fmt: skip
scope = st.radio("Cases", ["simulated", "all"], horizontal=True, key="miss_scope",
                 format_func=lambda s: {"simulated": "complete cases, every combination simulated (the paper's design)",
                                        "all": "also the incomplete cases as acquired"}[s])  # fmt: skip
names = [combination_name(m) for m in combinations_for(count)]
scoped = select_scope(table, scope)
data = scoped[(scoped["region"] == region) & scoped["missing"].isin(names)]
if data.empty:
    st.warning(f"No results for these choices ({SCOPES[scope]}).")
    st.stop()
st.caption(f"{data['patient_id'].nunique()} patients; hospitals {', '.join(sorted(data['hospital'].unique()))}.")
comparison = comparison_table(
    data[data["model"].isin(pair)], [pair], missing=[n for n in names if n in set(data["missing"])]
)
st.plotly_chart(missing_comparison_figure(data, pair[0], pair[1], comparison, region), width="stretch")
st.caption("\\* Bonferroni-adjusted p < 0.05 over the combinations shown (paired Wilcoxon signed-rank test).")
st.subheader("Median Dice, models x combinations")
st.plotly_chart(median_heatmap(data, region), width="stretch")
