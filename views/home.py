"""Home: what the tool shows, what is loaded, where to start."""

import streamlit as st

from core.device import describe_device
from core.postprocess import CLEANED
from core.sequences import DISPLAY, SEQUENCES
from ui.data import all_results, demo_cohort, demo_patients, demo_store, list_models, models_root

st.title("Glioblastoma robustness explorer")
st.markdown(
    "See what **missing MRI sequences** and **hospital-to-hospital differences** do to automatic "
    "glioblastoma segmentation, following *DeepMedic + sparsified training* (Radiology: AI 2020). "
    "Each case has four sequences: " + ", ".join(DISPLAY[s] for s in SEQUENCES) + "; T1c is always required."
)
st.warning("Research and teaching tool. Not a medical device; not for diagnosis or treatment decisions.")

manifest = demo_patients(str(demo_cohort()), str(demo_store()))
models = list_models(str(models_root()))
results = all_results()
# A model's results after Clean up (NAME+clean) score the same predictions again: not counted twice.
made = results[~results["model_sha256"].str.endswith(CLEANED)] if len(results) else results
predictions = len(made.drop_duplicates(["model_sha256", "case_key", "missing"])) if len(made) else 0
# Widths so that no label is cut at 1280 px: the count of predictions has the longest one.
cases, hospitals, model_count, result_count, compute = st.columns([1, 1, 0.8, 1.6, 2.4])
cases.metric("Demo cases", len(manifest))
hospitals.metric("Hospitals", manifest["hospital"].nunique() if len(manifest) else 0)
model_count.metric("Models", len(models))
result_count.metric("Evaluated predictions", f"{predictions:,}")
compute.metric("Compute", describe_device())

st.subheader("Where to start")
st.markdown(
    "- **Patient explorer**: pick a model and a patient, switch T1, T2 or FLAIR off, run the model and compare "
    "the outline and Dice / sensitivity / HD95 / volume with the complete-data prediction.\n"
    "- **Hospitals**: how each model does per hospital, every case a point (the paper's Figure 2).\n"
    "- **Missing sequences**: each combination of missing sequences, sparsified training vs not, with "
    "significance marks (Figure 4), and the median Dice heat map (Figure 5).\n"
    "- **Statistics**: paired Wilcoxon tests with confidence intervals and Bonferroni or Holm adjustment; "
    "volume agreement.\n"
    "- **Domain-shift lab**: give a case another scanner (noise, bias field, thick slices, contrast) and "
    "compare two models on it.\n"
    "- **Models**: what each model was trained on and how training went. **Cases** and **Your data**: browse "
    "the demo cohort, or validate and evaluate your own BraTS-style data.\n\n"
    "How to read the numbers: Dice and sensitivity run from 0 (no overlap) to 1 (perfect); HD95 is the 95th "
    "percentile of the distance between the predicted and reference outlines, in mm (lower is better). "
    "The demo cases are synthetic glioblastomas on real anatomy (MNI152 2009a), made with "
    "`python -m core synth`; see `data_samples/README.md`."
)
