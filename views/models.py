"""Models: cards, training curves, sparsity and training data; which models pair up."""

import pandas as pd
import streamlit as st

from core.card import is_onnx_card, onnx_card_facts, site_pairs, sparsified_pairs, training_world
from core.figures import training_curve_figure
from ui.data import available_models, model_card_text, models_root, training_log

st.title("Models")
models = available_models()
if not models:
    st.info(f"No model folders in {models_root()}. Train one with `python -m core train ... --out models/NAME`.")
    st.stop()

rows = []
for name, card in models.items():
    training = card.get("training", {})
    done = card.get("iterations") or 0
    family = (card.get("architecture") or {}).get("family", "ONNX")
    network = f"{family} (ONNX)" if is_onnx_card(card) else str(card.get("preset", "DeepMedic")).replace(
        "deepmedic", "DeepMedic").replace("-", " ")  # fmt: skip
    parameters = card.get("parameters")
    rows.append({
        "model": name,
        "architecture": network + (f" · {parameters / 1e3:,.0f}k" if parameters else ""),
        "hospitals": ", ".join(training.get("hospitals", [])),
        "synthetic world": training_world(card) or "not stated",
        "complete only": training.get("complete_only"),
        "sparsified": any(card.get("sparsity", {}).values()),
        "training cases": training.get("n_train_cases"),
        "iterations": f"{done:,}" + (f" of {planned:,}" if (planned := card.get("iterations_planned") or done) != done
                                     else ""),  # fmt: skip
        "val Dice TC": f"{dice:.3f}" if (dice := card.get("validation", {}).get("dice_tc_windows")) is not None
        else "not measured",  # e.g. an imported model trained without a validation set
    })  # fmt: skip
table = pd.DataFrame(rows)
# What every model shares goes in a caption: the table then fits at 1280 px without a scroll bar.
shared = [
    column
    for column in ("architecture", "synthetic world")
    if len(table) > 1 and table[column].nunique(dropna=False) == 1
]
st.dataframe(table.drop(columns=shared), hide_index=True, width="stretch")
st.caption("Architecture: the network and its parameters in thousands (k); synthetic world: the cohort preset "
           "trained on (paper: the paper's setting, clean; realistic: look-alikes, hospital protocols, "
           "misregistration) and the domain randomisation strength of its training windows; iterations: of the "
           "planned number when training stopped early.")  # fmt: skip
if shared:
    st.caption("Every model: " + ", ".join(f"{column} {table[column].iloc[0]}" for column in shared))
if any(card.get("yours") for card in models.values()):
    st.caption("Models marked **(your model)** were uploaded on the Your data page; they are kept apart from the "
               "bundled models.")  # fmt: skip

# The paper's paired comparisons: sparsified training or not, hospital 1 data or not.
for title, pairs in (("sparsified vs not, same training data", sparsified_pairs(models)),
                     ("with vs without hospital 1 data", site_pairs(models))):  # fmt: skip
    if pairs:
        st.markdown(f"**Paired comparisons** ({title}): " + "; ".join(f"{a} vs {b}" for a, b in pairs))

name = st.selectbox("Model", list(models), key="model_detail")
card = models[name]
if is_onnx_card(card):
    # An ONNX model: what its card says it needs and how it is run, from card.json.
    st.markdown(f"**{name}: how it runs** (from its `card.json`)")
    facts = onnx_card_facts(card)
    st.dataframe(pd.DataFrame({"": list(facts), "card says": list(facts.values())}), hide_index=True,
                 width="stretch")  # fmt: skip
log = training_log(card["path"])
if len(log):
    st.plotly_chart(training_curve_figure(log, f"{name}: training"), width="stretch")
else:
    st.caption(f"{name} has no training log (training_log.csv): its card says how it was trained.")
with st.expander("Model card", expanded=True):
    st.markdown(model_card_text(card["path"]) or "No MODEL_CARD.md in this folder.")
