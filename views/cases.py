"""Cases: browse a cohort, its missing sequences, and each case's images with labels."""

import streamlit as st

from core.figures import overlay_rgb, take_slice, tumour_centre, window
from core.sequences import DISPLAY, SEQUENCES, combination_label
from ui.data import case_folder, demo_cohort, demo_patients, demo_store, load_case, preparing

st.title("Cases")
manifest = demo_patients(str(demo_cohort()), str(demo_store()))
if manifest.empty:
    st.info(f"No cohort found at {demo_cohort()}. Create one with `python -m core synth --out DIR`.")
    st.stop()

table = manifest[["patient_id", "hospital", "split", "missing", "source"]].copy()
table["sequences"] = table["missing"].map(combination_label)
st.caption(f"{len(table)} cases: the bundled demo files and the synthetic test cases of the demo results, "
           "which are regenerated bit for bit when opened.")  # fmt: skip
titles = {"patient_id": "Patient", "hospital": "Hospital", "split": "Split", "source": "Files",
          "sequences": "Sequences"}  # fmt: skip
st.dataframe(table.drop(columns="missing"), hide_index=True, width="stretch", height=388,
             column_config={c: st.column_config.TextColumn(t) for c, t in titles.items()})  # fmt: skip

case_id = st.selectbox("Case", table["patient_id"], key="case_id")
with st.spinner(preparing(case_id)):
    case = load_case(case_folder(case_id), case_id)
for message in case.warnings:
    st.caption(f":material/warning: {message}")

c1, c2, c3 = st.columns([1, 1, 2])
names = [DISPLAY[s] + ("" if ok else " (missing)") for s, ok in zip(SEQUENCES, case.available)]
choice = c1.radio("Sequence", names, index=1, key="sequence")
plane = c2.radio("Plane", ["axial", "coronal", "sagittal"], key="plane")
show_labels = c2.checkbox("Reference labels", value=True, disabled=case.labels is None)
axis = {"sagittal": 0, "coronal": 1, "axial": 2}[plane]
default = tumour_centre(case.labels, case.shape)[axis]
index = c3.slider("Slice", 0, case.shape[axis] - 1, default, key=f"slice_{plane}_{case_id}")

channel = names.index(choice)
if not case.available[channel]:
    st.info(f"{DISPLAY[SEQUENCES[channel]]} was not acquired for this case.")
else:
    gray = take_slice(window(case.images[channel]), plane, index)
    labels = take_slice(case.labels, plane, index) if show_labels and case.labels is not None else None
    st.image(overlay_rgb(gray, labels), width=520, caption=f"{case_id} · {choice} · {plane} {index}")
    st.caption(
        "Overlay colours: necrosis / non-enhancing tumour orange, oedema sky blue, enhancing yellow "
        "(colour-blind safe)."
    )
