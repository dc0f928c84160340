"""Hospitals: a metric per hospital, every case a point (the paper's Figure 2)."""

import streamlit as st

from core.card import other_models
from core.figures import METRIC_TITLES, hospital_boxplot, hospital_label, hospital_order
from core.sequences import REGION_DISPLAY
from core.stats import as_acquired
from ui.cohort import pick_results
from ui.data import demo_cohort, demo_patients, demo_store

st.title("Hospitals")
source, table = pick_results("hosp")
c1, c2, c3 = st.columns([2, 1, 1])  # room for three models' tags
names = sorted(table["model"].unique())
# Two of the paper's models, and any other architecture next to them.
models = c1.multiselect("Models", names, default=list(dict.fromkeys(names[:2] + other_models(names))),
                        key="hosp_models")  # fmt: skip
metric = c2.selectbox("Metric", ["dice", "sensitivity", "hd95", "volume_diff_ml"], key="hosp_metric",
                      format_func=METRIC_TITLES.get)  # fmt: skip
region = c3.selectbox("Region", ["tc", "wt", "et"], format_func=REGION_DISPLAY.get, key="hosp_region")
which = st.radio("Cases", ["all", "complete only", "incomplete only"], horizontal=True, key="hosp_cases")
data = as_acquired(table[table["model"].isin(models)])
if which != "all":
    data = data[(data["acquired_missing"] == "none") == (which == "complete only")]
if data.empty:
    st.warning("No cases match these choices.")
    st.stop()
viewable = sorted(set(data["patient_id"]) & set(demo_patients(str(demo_cohort()), str(demo_store()))["patient_id"]))


def open_in_explorer(patient: str) -> None:
    st.session_state["hospital"] = "all"
    st.session_state["patient"] = patient
    st.switch_page("views/explorer.py")


chart = st.plotly_chart(hospital_boxplot(data, metric, region), width="stretch", key="hosp_chart",
                        on_select="rerun", selection_mode="points")  # fmt: skip
picked = [p["customdata"][0] for p in (chart.selection.points if chart else []) if p.get("customdata")]
if picked and picked[0] in viewable:
    open_in_explorer(picked[0])
elif picked:
    st.info(f"{picked[0]} is not in the explorer's cohort ({demo_cohort()}); its results are shown here only.")
else:
    st.caption("Click a case's point to open it in the patient explorer.")
summary = (data[data["region"] == region].groupby(["model", "hospital"])[metric]
           .agg(cases="count", median="median", **{"lower quartile": lambda v: v.quantile(0.25),
                                                    "upper quartile": lambda v: v.quantile(0.75)})
           .round(3).reset_index())  # fmt: skip
rank = {h: i for i, h in enumerate(hospital_order(summary["hospital"]))}
summary = summary.sort_values(["model", "hospital"], key=lambda c: c.map(rank) if c.name == "hospital" else c)
# A model evaluated on fewer of the cases than another (UNet3D on a subset, say) gets boxes of the same size.
# Counted as the boxes and the table count (the table's cases: results with this metric defined).
counts = summary.pivot(index="model", columns="hospital", values="cases").fillna(0).astype(int)
counts = counts[hospital_order(counts.columns)]
most = counts.max()
notes = []
for model in counts.index if len(counts) > 1 else []:
    fewer = [f"{hospital_label(h)}: {counts.loc[model, h]} against {most[h]}" for h in counts.columns
             if 0 < counts.loc[model, h] < most[h]]  # fmt: skip
    absent = [hospital_label(h) for h in counts.columns if counts.loc[model, h] == 0]
    parts = ([f"fewer cases ({', '.join(fewer)})"] if fewer else []) + (
        [f"no results at {', '.join(absent)}"] if absent else []
    )
    if parts:
        notes.append(f"{model}: {' and '.join(parts)}")
if notes:
    st.caption(f"Not every box rests on as many cases: {'; '.join(notes)}. A box of few cases is rough.")
digits = "%.1f" if metric in ("hd95", "volume_diff_ml") else "%.3f"  # one number of decimals per column
quartiles = {c: st.column_config.NumberColumn(format=digits) for c in ("median", "lower quartile", "upper quartile")}
st.dataframe(summary, hide_index=True, width="stretch", height="content", column_config=quartiles)
if viewable:
    patient = st.selectbox("Open a case in the patient explorer", viewable, key="hosp_open")
    if st.button("Open in the explorer", key="hosp_go"):
        open_in_explorer(patient)
else:
    st.caption(f"None of these cases is in the explorer's cohort ({demo_cohort()}).")
