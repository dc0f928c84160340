"""Domain-shift lab: change how a case was acquired, drop sequences, compare two models."""

import pandas as pd
import streamlit as st

from core.figures import overlay_rgb, take_slice, window
from core.sequences import DISPLAY, REGION_DISPLAY, SECONDARY, SEQUENCES, run_phrase
from ui.data import (
    case_folder,
    demo_cohort,
    demo_patients,
    demo_store,
    list_models,
    load_case,
    metrics_table,
    models_root,
    run_shifted_prediction,
    shifted_case,
)

st.title("Domain-shift lab")
st.markdown("Apply a different scanner or protocol to a case (noise, bias field, slice thickness, contrast), "
            "switch sequences off, and see how two models cope.")  # fmt: skip
models = list_models(str(models_root()))
manifest = demo_patients(str(demo_cohort()), str(demo_store()))
if len(models) < 1 or manifest.empty:
    st.info(f"Needs models in {models_root()} and a cohort in {demo_cohort()}.")
    st.stop()

c1, c2, c3 = st.columns(3)
case_id = c1.selectbox("Patient", manifest["patient_id"], key="lab_patient")
names = list(models)
model_a = c2.selectbox("Model A", names, index=0, key="lab_a")
model_b = c3.selectbox("Model B", names, index=min(1, len(names) - 1), key="lab_b")
with st.spinner(f"Preparing {case_id} (a synthetic case is generated once, in a few seconds)..."):
    cohort = case_folder(case_id)
case = load_case(cohort, case_id)
acquired = [s for s in SEQUENCES if s not in case.missing]

s1, s2 = st.columns([1, 2])
targets = s1.multiselect("Sequences to change", [DISPLAY[s] for s in acquired],
                         default=[DISPLAY[s] for s in acquired if s in ("t2", "flair")], key="lab_targets")  # fmt: skip
noise = s2.slider("Extra Rician noise (% of median intensity)", 0.0, 15.0, 5.0, 0.5, key="lab_noise")
bias = s2.slider("Bias field strength", 0.0, 0.6, 0.3, 0.05, key="lab_bias")
slices = s2.slider("Slice thickness (mm)", 1.0, 6.0, 4.0, 0.5, key="lab_slice")
gamma = s2.slider("Contrast (gamma)", 0.7, 1.3, 1.0, 0.05, key="lab_gamma")
off = st.columns(3)
missing = tuple(
    s for s in SEQUENCES
    if s in case.missing or (s in SECONDARY and not off[SECONDARY.index(s)].toggle(
        f"{DISPLAY[s]} on", value=s not in case.missing, disabled=s in case.missing, key=f"lab_use_{s}"))
)  # fmt: skip
chosen = [s for s in SEQUENCES if DISPLAY[s] in targets]
changes = tuple((s, slices, gamma, noise / 100, bias) for s in chosen)
shifted = shifted_case(cohort, case_id, changes, 0)

view = st.radio("Show", [DISPLAY[s] for s in acquired], horizontal=True, key="lab_view")
channel = [DISPLAY[s] for s in SEQUENCES].index(view)
index = st.slider("Axial slice", 0, case.shape[2] - 1, case.shape[2] // 2, key=f"lab_slice_{case_id}")
before, after = st.columns(2)
before.image(take_slice(window(case.images[channel]), "axial", index), caption=f"{view} as acquired", width=380)
after.image(take_slice(window(shifted.images[channel]), "axial", index), caption=f"{view} shifted", width=380)

label = f"Run {model_a} and {model_b} on the shifted case ({run_phrase(frozenset(missing))})"
if st.button(label, type="primary", key="lab_run"):
    bar = st.progress(0.0, text="Predicting...")
    results = {}
    for k, name in enumerate(dict.fromkeys([model_a, model_b])):
        card = models[name]
        results[name] = run_shifted_prediction(
            cohort, case_id, changes, 0, card["path"], card["weights_sha256"], missing,
            on_progress=lambda d, t, m, k=k, name=name: bar.progress((k + d / t) / 2, text=f"{name}: {m} {d}/{t}"),
        )  # fmt: skip
    bar.empty()
    st.session_state["lab_results"] = (case_id, changes, missing, list(results))
    columns = st.columns(len(results))
    rows = []
    for column, (name, prediction) in zip(columns, results.items()):
        column.image(overlay_rgb(take_slice(window(shifted.images[channel]), "axial", index),
                                 take_slice(prediction.labels, "axial", index)),
                     caption=f"{name} · {prediction.seconds:.1f} s on {prediction.device}", width=380)  # fmt: skip
        if case.labels is not None:
            for region, m in metrics_table(prediction, case).items():
                rows.append({"model": name, "region": REGION_DISPLAY[region], "Dice": m.dice,
                             "sensitivity": m.sensitivity, "HD95 mm": m.hd95, "volume mL": m.volume_pred_ml,
                             "reference mL": m.volume_ref_ml})  # fmt: skip
    if rows:
        st.dataframe(pd.DataFrame(rows).round(3), hide_index=True, width="stretch")
