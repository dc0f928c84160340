"""Missing sequences: each combination, two models side by side (Figure 4) and medians (Figure 5)."""

from pathlib import Path

import streamlit as st

from core.card import cleanup_pairs, other_models, paper_pairs, synthetic_origin
from core.cases import find_cases
from core.figures import counted, hospital_label, hospital_order, median_heatmap, missing_comparison_figure
from core.postprocess import CLEANED
from core.report import extended_evaluation_command
from core.sequences import REGION_DISPLAY, combination_name, combinations_for
from core.stats import SCOPES, select_scope
from core.store import RESULT_SOURCES
from ui.cohort import comparisons, pick_results
from ui.data import ROOT, demo_cohort, demo_patients, demo_store, list_models, models_root, user_store

st.title("Missing sequences")
source, table = pick_results("miss")
models = sorted(table["model"].unique())
# The paper's pairs, each model's results after Clean up against its raw ones, then each other
# architecture against each of the paper's models.
others = other_models(models)
pairs = paper_pairs(models) + cleanup_pairs(models) + [(o, m) for o in others for m in models if m not in others]
pairs = pairs or [(a, b) for i, a in enumerate(models) for b in models[i + 1 :]]
c1, c2, c3 = st.columns(3)
if pairs:
    pair = c1.selectbox("Compare", pairs, format_func=lambda p: f"{p[0]} vs {p[1]}", key="miss_pair")
else:  # one model: its medians below, nothing to compare it with
    pair = None
    c1.markdown(f"**{models[0]}** alone")
compared = pair or tuple(models)  # the models the commands below would evaluate
region = c2.selectbox("Region", ["tc", "wt", "et"], format_func=REGION_DISPLAY.get, key="miss_region")
count = c3.radio("Combinations", [8, 15], horizontal=True, key="miss_count",
                 help="8: T1, T2, FLAIR can be missing (the paper); 15: T1c too")  # fmt: skip
scope = st.radio("Cases", ["simulated", "all"], horizontal=True, key="miss_scope",
                 format_func=lambda s: {"simulated": "complete cases, every combination simulated (the paper's design)",
                                        "all": "also the incomplete cases as acquired"}[s])  # fmt: skip
names = [combination_name(m) for m in combinations_for(count)]
scoped = select_scope(table, scope)
without_t1c = [n for n in names if "t1c" in n]
if without_t1c and not set(without_t1c) & set(scoped["missing"]):
    # The 15 differ from the 8 only by the combinations with T1c missing: say why they are absent.
    simulated = select_scope(table, "simulated")  # the complete patients with simulated combinations
    patients = demo_patients(str(demo_cohort()), str(demo_store()))
    chosen = patients[patients["patient_id"].isin(set(simulated["patient_id"]))]
    # Where the cases come from: the store says for regenerated ones, the bundled cases' manifest for its own
    # (read only when every chosen case is bundled).
    regenerated = chosen[chosen["preset"] != ""]
    if len(regenerated):
        preset, scale, seed = regenerated[["preset", "scale", "seed"]].iloc[0]
    else:
        bundled = [s for s in find_cases(str(demo_cohort())) if s.case_id in set(chosen["patient_id"])]
        own = synthetic_origin(bundled) or {"preset": "realistic", "scale": 1.0, "seed": 0}
        preset, scale, seed = own["preset"], own["scale"], own["seed"]
    cards = list_models(str(models_root()))
    # A model's results after Clean up (NAME+clean) come from its own folder, evaluated with --clean.
    bases = list(dict.fromkeys(m.removesuffix(CLEANED) for m in compared))
    clean = any(m.endswith(CLEANED) for m in compared)
    folders = [Path(cards[m]["path"]) for m in bases if m in cards]
    folders = [f.relative_to(ROOT) if f.is_relative_to(ROOT) else f for f in folders]
    store = user_store().relative_to(ROOT) if user_store().is_relative_to(ROOT) else user_store()
    st.info(
        "These results hold no combination with **T1c missing**, so choosing 15 shows the same 8 combinations "
        "as choosing 8 (the bundled demo results were evaluated on the paper's 8: T1c, the reference sequence, always "
        f"present). To add the other 7 for {' and '.join(compared)} on the {simulated['patient_id'].nunique()} "
        f"complete patients (those whose combinations are simulated), run the commands below; the results go to "
        f"your own store ({store}) and appear here under "
        "**Results: your data** (the demo results are never changed)."
    )
    out = "runs/t1c" if len(chosen) else "YOUR_COHORT"  # a cohort of the user's own is theirs to name
    st.code(extended_evaluation_command(folders or [f"models/{m}" for m in bases], sorted(set(chosen["patient_id"])),
                                        preset, float(scale), int(seed), str(store), out, clean), language="bash",
            wrap_lines=True)  # fmt: skip
data = scoped[(scoped["region"] == region) & scoped["missing"].isin(names)]
if data.empty:
    st.warning(f"No results for these choices ({SCOPES[scope]}).")
    st.stop()
hospitals = ", ".join(hospital_label(h) for h in hospital_order(data["hospital"]))
st.caption(f"{counted(data['patient_id'].nunique(), 'patient')} ({hospitals}); results: {RESULT_SOURCES[source]}.")
shown = [n for n in names if n in set(data["missing"])]
if pair is None:
    st.info(f"These results hold one model, {models[0]}: a comparison needs two (evaluate another on the Your data "
            "page, or choose other results above). Its medians per combination are below.")  # fmt: skip
else:
    comparison = comparisons(data[data["model"].isin(pair)], [pair], missing=shown)
    st.plotly_chart(missing_comparison_figure(data, pair[0], pair[1], comparison, region), width="stretch")
    left_out = int((~comparison["tested"]).sum())
    st.caption(
        f"\\* Bonferroni-adjusted p < 0.05 over the {int(comparison['tested'].sum())} testable combinations shown "
        "(paired Wilcoxon signed-rank test)"
        + (f"; {left_out} left out with fewer than 2 pairs that differ." if left_out else ".")
    )
st.subheader("Median Dice, models x combinations")
st.plotly_chart(median_heatmap(data, region), width="stretch")
