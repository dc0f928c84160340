"""Models: cards, training curves, sparsity and training data; which models pair up."""

import pandas as pd
import streamlit as st

from core.figures import training_curve_figure
from ui.data import list_models, model_card_text, models_root, training_log

st.title("Models")
models = list_models(str(models_root()))
if not models:
    st.info(f"No model folders in {models_root()}. Train one with `python -m core train ... --out models/NAME`.")
    st.stop()

rows = []
for name, card in models.items():
    training = card.get("training", {})
    rows.append({
        "model": name,
        "preset": card.get("preset"),
        "parameters": card.get("parameters"),
        "hospitals": ", ".join(training.get("hospitals", [])),
        "complete only": training.get("complete_only"),
        "sparsified": any(card.get("sparsity", {}).values()),
        "training cases": training.get("n_train_cases"),
        "iterations": card.get("iterations"),
        "val Dice TC": card.get("validation", {}).get("dice_tc_windows"),
    })  # fmt: skip
table = pd.DataFrame(rows)
st.dataframe(table, hide_index=True, width="stretch")

# Paired comparisons: the same training data with and without sparsified training.
base = {name.removesuffix("st") for name in models if name.endswith("st")}
pairs = [(f"{b}st", b) for b in sorted(base) if b in models]
if pairs:
    st.markdown("**Paired comparisons** (sparsified vs not, same training data): "
                + "; ".join(f"{a} vs {b}" for a, b in pairs))  # fmt: skip

name = st.selectbox("Model", list(models), key="model_detail")
card = models[name]
log = training_log(card["path"])
if len(log):
    st.plotly_chart(training_curve_figure(log, f"{name}: training"), width="stretch")
with st.expander("Model card", expanded=True):
    st.markdown(model_card_text(card["path"]) or "No MODEL_CARD.md in this folder.")
