"""Hospitals: a metric per hospital, every case a point (the paper's Figure 2)."""

import streamlit as st

from core.figures import hospital_boxplot
from core.sequences import REGION_DISPLAY
from ui.data import all_results, demo_cohort, demo_patients, demo_store

st.title("Hospitals")
table = all_results()
if table.empty:
    st.info("No results yet. Evaluate models with `python -m core evaluate` or on the Your data page.")
    st.stop()

c1, c2, c3 = st.columns(3)
models = c1.multiselect("Models", sorted(table["model"].unique()), default=sorted(table["model"].unique())[:2],
                        key="hosp_models")  # fmt: skip
LABELS = {"volume_diff_ml": "volume error (mL)", "hd95": "HD95 (mm)"}
metric = c2.selectbox("Metric", ["dice", "sensitivity", "hd95", "volume_diff_ml"], key="hosp_metric",
                      format_func=lambda m: LABELS.get(m, m))  # fmt: skip
region = c3.selectbox("Region", ["tc", "wt", "et"], format_func=REGION_DISPLAY.get, key="hosp_region")
which = st.radio("Cases", ["all", "complete only", "incomplete only"], horizontal=True, key="hosp_cases")
data = table[table["model"].isin(models) & (table["missing"] == table["acquired_missing"])]
if which != "all":
    data = data[(data["acquired_missing"] == "none") == (which == "complete only")]
if data.empty:
    st.warning("No cases match these choices.")
    st.stop()
st.plotly_chart(hospital_boxplot(data, metric, region), width="stretch")
summary = (data[data["region"] == region].groupby(["model", "hospital"])[metric]
           .agg(cases="count", median="median", q1=lambda v: v.quantile(0.25), q3=lambda v: v.quantile(0.75))
           .round(3).reset_index())  # fmt: skip
st.dataframe(summary, hide_index=True, width="stretch")
viewable = sorted(set(data["patient_id"]) & set(demo_patients(str(demo_cohort()), str(demo_store()))["patient_id"]))
if viewable:
    patient = st.selectbox("Open a case in the patient explorer", viewable, key="hosp_open")
    if st.button("Open in the explorer", key="hosp_go"):
        st.session_state["hospital"] = "all"
        st.session_state["patient"] = patient
        st.switch_page("pages/explorer.py")
else:
    st.caption(f"None of these cases is in the explorer's cohort ({demo_cohort()}).")
