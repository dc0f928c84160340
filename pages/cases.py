"""Cases: browse a cohort, its missing sequences, and each case's images with labels."""

import streamlit as st

from core.figures import overlay_rgb, take_slice, window
from core.sequences import DISPLAY, SEQUENCES, display_name, parse_combination
from ui.data import demo_cohort, load_case, load_manifest

st.title("Cases")
manifest = load_manifest(str(demo_cohort()))
if manifest.empty:
    st.info(f"No cohort found at {demo_cohort()}. Create one with `python -m core synth --out DIR`.")
    st.stop()

table = manifest[["patient_id", "hospital", "split", "missing"]].copy()
table["sequences"] = [display_name(parse_combination(m)) for m in table["missing"]]
st.dataframe(table.drop(columns="missing"), hide_index=True, width="stretch")

case_id = st.selectbox("Case", table["patient_id"], key="case_id")
case = load_case(str(demo_cohort()), case_id)
for message in case.warnings:
    st.caption(f":material/warning: {message}")

c1, c2, c3 = st.columns([1, 1, 2])
names = [DISPLAY[s] + ("" if ok else " (missing)") for s, ok in zip(SEQUENCES, case.available)]
choice = c1.radio("Sequence", names, index=1, key="sequence")
plane = c2.radio("Plane", ["axial", "coronal", "sagittal"], key="plane")
show_labels = c2.checkbox("Reference labels", value=True, disabled=case.labels is None)
axis = {"sagittal": 0, "coronal": 1, "axial": 2}[plane]
default = (
    int(case.labels.nonzero()[axis].mean()) if case.labels is not None and case.labels.any() else case.shape[axis] // 2
)
index = c3.slider("Slice", 0, case.shape[axis] - 1, default, key=f"slice_{plane}_{case_id}")

channel = names.index(choice)
if not case.available[channel]:
    st.info(f"{DISPLAY[SEQUENCES[channel]]} was not acquired for this case.")
else:
    gray = take_slice(window(case.images[channel]), plane, index)
    labels = take_slice(case.labels, plane, index) if show_labels and case.labels is not None else None
    st.image(overlay_rgb(gray, labels), width=520, caption=f"{case_id} · {choice} · {plane} {index}")
    st.caption("Overlay colours: necrosis orange, oedema sky blue, enhancing yellow (colour-blind safe).")
