"""Patient explorer: switch sequences off, run a model, see the outline and the numbers change."""

import numpy as np
import streamlit as st

from core.figures import ERROR_COLOURS, error_map_rgb, overlay_rgb, take_slice, window
from core.metrics import region_mask
from core.sequences import DISPLAY, REGION_DISPLAY, SECONDARY, SEQUENCES, combination_name, display_name, run_phrase
from ui.data import (
    cached_prediction,
    case_folder,
    demo_cohort,
    demo_patients,
    demo_store,
    list_models,
    load_case,
    metrics_table,
    models_root,
    prediction_nifti,
    preview_slice,
    run_prediction,
    showcase_patient,
)

st.title("Patient explorer")
models = list_models(str(models_root()))
manifest = demo_patients(str(demo_cohort()), str(demo_store()))
if not models or manifest.empty:
    st.info(f"Needs models in {models_root()} and a cohort in {demo_cohort()}.")
    st.stop()

left, middle, right = st.columns([1.2, 1, 1.4])
name = left.selectbox("Model", list(models), key="model")
card = models[name]
hospitals = ["all", *sorted(manifest["hospital"].unique())]
# Open where every switch has a precomputed answer, unless another page chose the patient.
showcase = None if "patient" in st.session_state else showcase_patient(str(demo_store()))
home = manifest.loc[manifest["patient_id"] == showcase, "hospital"].tolist()
hospital = middle.selectbox("Hospital", hospitals, key="hospital", index=hospitals.index(home[0]) if home else 0)
rows = manifest if hospital == "all" else manifest[manifest["hospital"] == hospital]
patients = rows["patient_id"].tolist()
case_id = right.selectbox("Patient", patients, key="patient",
                          index=patients.index(showcase) if showcase in patients else 0)  # fmt: skip
with st.spinner(f"Preparing {case_id} (a synthetic case is generated once, in a few seconds)..."):
    cohort = case_folder(case_id)
case = load_case(cohort, case_id)

st.caption(f"{name}: trained on {', '.join(card['training']['hospitals'])}; sparsified training "
           f"{'on' if any(card['sparsity'].values()) else 'off'}. "
           f"As acquired: {display_name(case.missing)}.")  # fmt: skip
switches = st.columns(4)
switches[1].toggle("T1c (required)", value=True, disabled=True, key="use_t1c")
use = {}
for column, sequence in zip((switches[0], switches[2], switches[3]), SECONDARY):
    acquired = sequence not in case.missing
    use[sequence] = column.toggle(DISPLAY[sequence] + ("" if acquired else " (not acquired)"), value=acquired,
                                  disabled=not acquired, key=f"use_{sequence}_{case_id}")  # fmt: skip
missing = tuple(s for s in SEQUENCES if s in case.missing or (s in use and not use[s]))
args = (cohort, case_id, card["path"], card["weights_sha256"])

prediction = cached_prediction(*args, missing)
complete = cached_prediction(*args, tuple(sorted(case.missing, key=SEQUENCES.index)))
run = st.button(f"Run {name} ({run_phrase(frozenset(missing))})", type="primary",
                disabled=prediction is not None)  # fmt: skip
if run:
    bar = st.progress(0.0, text="Predicting...")
    prediction = run_prediction(*args, missing, on_progress=lambda d, t, m: bar.progress(d / t, text=f"{m} {d}/{t}"))
    bar.empty()

names = [DISPLAY[s] for s in SEQUENCES]
view1, view2, view3 = st.columns([2, 2, 1])
sequence = view1.radio("Sequence", names, index=1, key="view_sequence", horizontal=True)
overlay = view2.radio("Overlay", ["prediction", "reference", "errors", "none"], key="overlay", horizontal=True)
opacity = view3.slider("Opacity", 0.0, 1.0, 0.5, key="opacity")
channel = names.index(sequence)
centre = np.argwhere(case.labels > 0).mean(0).astype(int) if case.labels is not None and case.labels.any() else None
if overlay == "errors":
    st.caption("Tumour core errors: true positive green, false positive vermillion, false negative blue "
               "(" + " · ".join(f"{k.upper()} rgb{v}" for k, v in ERROR_COLOURS.items()) + ").")  # fmt: skip
elif overlay != "none":
    st.caption("Labels: necrosis orange, oedema sky blue, enhancing yellow (colour-blind safe).")
if overlay in ("prediction", "errors") and prediction is None:
    st.caption("No prediction yet: run the model (or preview one axial slice).")


def view(plane: str, column) -> None:
    """One plane of the tri-planar viewer: its slice slider and the overlaid image."""
    axis = {"sagittal": 0, "coronal": 1, "axial": 2}[plane]
    default = int(centre[axis]) if centre is not None else case.shape[axis] // 2
    index = column.slider(plane.capitalize(), 0, case.shape[axis] - 1, default, key=f"slice_{plane}_{case_id}")
    if not case.available[channel]:
        column.info(f"{sequence} was not acquired for this case: there is no image to show.")
        return
    gray = take_slice(window(case.images[channel]), plane, index)
    ref = take_slice(case.labels, plane, index) if case.labels is not None else None
    pred = take_slice(prediction.labels, plane, index) if prediction is not None else None
    if plane == "axial" and pred is None:
        if column.button("Quick preview of this slice", key="preview"):
            st.session_state["preview"] = (case_id, name, missing, index)
        if st.session_state.get("preview") == (case_id, name, missing, index):
            pred = np.rot90(preview_slice(*args, missing, index))
    if overlay == "errors" and pred is not None and ref is not None:
        rgb = error_map_rgb(gray, region_mask(pred, "tc"), region_mask(ref, "tc"), opacity)
    else:
        rgb = overlay_rgb(gray, {"prediction": pred, "reference": ref}.get(overlay), opacity)
    off = " (switched off: the model does not see it)" if SEQUENCES[channel] in missing else ""
    column.image(rgb, width="stretch", caption=f"{case_id} · {sequence}{off} · {plane} {index}")


planes = st.columns(3)
for plane, column in zip(("axial", "coronal", "sagittal"), planes):
    view(plane, column)

if prediction is None:
    st.info("Run the model to see Dice, sensitivity, HD95 and volumes.")
else:
    summary, download = st.columns([3, 1])
    summary.markdown(f"**{display_name(prediction.missing)}** · {prediction.device} · {prediction.seconds:.1f} s")
    download.download_button("Download segmentation (NIfTI)", prediction_nifti(prediction, case),
                             file_name=f"{case_id}_{name}_{combination_name(prediction.missing)}.nii.gz",
                             mime="application/gzip")  # fmt: skip

if prediction is not None:
    if case.labels is None:
        st.write("No reference segmentation for this case.")
    else:
        now = metrics_table(prediction, case)
        before = metrics_table(complete, case) if complete is not None and complete is not prediction else None
        for region, m in now.items():
            ref_m = before[region] if before else None
            st.markdown(f"**{REGION_DISPLAY[region].capitalize()}**")
            a, b, c, d = st.columns(4)
            a.metric("Dice", f"{m.dice:.3f}", None if ref_m is None else f"{m.dice - ref_m.dice:+.3f}")
            b.metric("Sensitivity", f"{m.sensitivity:.3f}",
                     None if ref_m is None else f"{m.sensitivity - ref_m.sensitivity:+.3f}")  # fmt: skip
            c.metric("HD95 mm", f"{m.hd95:.1f}", None if ref_m is None else f"{m.hd95 - ref_m.hd95:+.1f}",
                     delta_color="inverse")  # fmt: skip
            d.metric("Volume mL", f"{m.volume_pred_ml:.1f}", f"ref {m.volume_ref_ml:.1f}", delta_color="off")
        if before is None and prediction.missing != case.missing:
            st.caption("Run with every acquired sequence on too, to see the change against complete data.")

if complete is not None and prediction is not None and complete is not prediction and case.available[channel]:
    st.subheader("Complete vs current")
    index = st.session_state.get(f"slice_axial_{case_id}", case.shape[2] // 2)
    gray = take_slice(window(case.images[channel]), "axial", index)
    one, two = st.columns(2)
    one.image(overlay_rgb(gray, take_slice(complete.labels, "axial", index), opacity),
              caption=f"as acquired · axial {index}", width=420)  # fmt: skip
    two.image(overlay_rgb(gray, take_slice(prediction.labels, "axial", index), opacity),
              caption=f"{display_name(prediction.missing)} · axial {index}", width=420)  # fmt: skip
