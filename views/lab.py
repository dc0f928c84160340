"""Domain-shift lab: change how a case was acquired, drop sequences, compare two models."""

import math

import numpy as np
import pandas as pd
import streamlit as st

from core.card import num_classes_of
from core.external import combination_applicable
from core.figures import outline, overlay_rgb, take_slice, tumour_centre, window
from core.metrics import UNDEFINED_HELP, metric_text
from core.sequences import DISPLAY, REGION_DISPLAY, SECONDARY, SEQUENCES, run_phrase
from ui.data import (
    available_models,
    cached_prediction,
    cached_shifted_prediction,
    case_folder,
    demo_cohort,
    demo_patients,
    demo_store,
    how_computed,
    load_case,
    metrics_table,
    models_root,
    next_of,
    preparing,
    run_prediction,
    run_shifted_prediction,
    shifted_case,
)

PLANES = {"axial": 2, "coronal": 1, "sagittal": 0}  # plane -> the array axis a slice of it fixes
SEED = 0

st.title("Domain-shift lab")
st.markdown("Apply a different scanner or protocol to a case (noise, bias field, slice thickness, contrast), "
            "switch sequences off, and see how two models cope compared with the case as acquired.")  # fmt: skip
models = available_models()
manifest = demo_patients(str(demo_cohort()), str(demo_store()))
if len(models) < 1 or manifest.empty:
    st.info(f"Needs models in {models_root()} and a cohort in {demo_cohort()}.")
    st.stop()

c1, c2, c3 = st.columns(3)
case_id = c1.selectbox("Patient", manifest["patient_id"], key="lab_patient")
names = list(models)
model_a = c2.selectbox("Model A", names, index=0, key="lab_a")
model_b = c3.selectbox("Model B", names, index=min(1, len(names) - 1), key="lab_b")
with st.spinner(preparing(case_id)):
    cohort = case_folder(case_id)
case = load_case(cohort, case_id)
acquired = [s for s in SEQUENCES if s not in case.missing]

s1, s2 = st.columns([1, 2])
targets = s1.multiselect("Sequences to change", acquired, default=[s for s in acquired if s in ("t2", "flair")],
                         format_func=DISPLAY.get, key="lab_targets")  # fmt: skip
noise = s2.slider("Extra Rician noise (% of the median brain intensity)", 0.0, 15.0, 5.0, 0.5, format="%.1f %%",
                  key="lab_noise")  # fmt: skip
bias = s2.slider("Bias field strength (largest coefficient of the log-intensity field, unitless)", 0.0, 0.6, 0.3,
                 0.05, format="± %.2f", key="lab_bias")  # fmt: skip
thickness_mm = s2.slider("Slice thickness (mm; the case was acquired at 1 mm)", 1.0, 6.0, 4.0, 0.5,
                         format="%.1f mm", key="lab_thickness")  # fmt: skip
gamma = s2.slider("Contrast (gamma exponent, unitless; 1 = unchanged)", 0.7, 1.3, 1.0, 0.05, format="γ %.2f",
                  key="lab_gamma")  # fmt: skip
misregistration = s2.slider("Misregistration against T1c and the labels (mm left-right, and as many degrees "
                            "in-plane rotation)", 0.0, 5.0, 0.0, 0.5, format="%.1f mm", key="lab_misregistration",
                            help="Real pipelines leave 1-2 mm and 1-2 degrees between a case's sequences")  # fmt: skip
missing = tuple(
    s for s in SEQUENCES
    if s in case.missing or (s in SECONDARY and not s1.toggle(
        f"{DISPLAY[s]} on" if s not in case.missing else f"{DISPLAY[s]} (not acquired)", value=s not in case.missing,
        disabled=s in case.missing, key=f"lab_use_{s}"))
)  # fmt: skip
chosen = [s for s in SEQUENCES if s in targets]
changes = tuple((s, thickness_mm, gamma, noise / 100, bias, misregistration) for s in chosen)
# What a run depends on: ids and choices only; predictions stay in ui.data's caches.
current = {"case": case_id, "models": tuple(dict.fromkeys([model_a, model_b])), "changes": changes, "missing": missing}


def describe(settings: dict) -> str:
    """Settings in words: models, acquisition change, sequences switched off."""
    if settings["changes"]:
        _, mm, g, n, b, m = settings["changes"][0]
        change = (f"{' + '.join(DISPLAY[c[0]] for c in settings['changes'])} at {mm:g} mm slices, γ {g:.2f}, "
                  f"noise {100 * n:g} %, bias ±{b:.2f}" + (f", moved {m:g} mm / {m:g}°" if m else ""))  # fmt: skip
    else:
        change = "no acquisition change"
    return f"{' and '.join(settings['models'])}; {change}; {run_phrase(frozenset(settings['missing']))}"


def lookup(settings: dict) -> dict | None:
    """{model: (prediction as acquired, prediction shifted)} when every one is cached or stored, else None."""
    found = {}
    for name in settings["models"]:
        if name not in models:
            return None
        model = (models[name]["path"], models[name]["weights_sha256"], settings["missing"])
        baseline = cached_prediction(cohort, settings["case"], *model)
        shifted = baseline
        if settings["changes"]:
            shifted = cached_shifted_prediction(cohort, settings["case"], settings["changes"], SEED, *model)
        if baseline is None or shifted is None:
            return None
        found[name] = (baseline, shifted)
    return found


ready = lookup(current)
# A model whose card says it cannot run without a missing sequence: not applicable, nothing to run.
blocked = [name for name in current["models"] if not combination_applicable(models[name], missing)]
if blocked:
    st.warning(f"{' and '.join(blocked)} cannot run {run_phrase(frozenset(missing))} (its card says a missing "
               "sequence cannot be fed): not applicable. Switch it back on or choose another model.")  # fmt: skip
label = f"Run {' and '.join(current['models'])} on the shifted case ({run_phrase(frozenset(missing))})"
if st.button(label, type="primary", key="lab_run", disabled=ready is not None or bool(blocked),
             help="Already computed: the results below are for these settings." if ready else None):  # fmt: skip
    bar = st.progress(0.0, text="Predicting...")
    steps = [(name, kind) for name in current["models"] for kind in ("as acquired", "shifted")]
    for k, (name, kind) in enumerate(steps):
        card = models[name]
        model = (card["path"], card["weights_sha256"], missing)

        def progress(done, total, _, k=k, name=name, kind=kind):
            bar.progress((k + done / total) / len(steps), text=f"{name}, {kind}: part {next_of(done, total)}")

        if kind == "as acquired" and cached_prediction(cohort, case_id, *model) is None:
            run_prediction(cohort, case_id, *model, on_progress=progress)
        elif kind == "shifted" and changes:
            run_shifted_prediction(cohort, case_id, changes, SEED, *model, on_progress=progress)
    bar.empty()
    st.rerun()  # drawn again from the cache: the results, and the button disabled
if ready is not None:
    st.session_state["lab_last"] = current  # the settings of the results on screen, for when they change

last = st.session_state.get("lab_last")
shown, settings = ready, current
if ready is None and last is not None and last["case"] == case_id:
    shown, settings = lookup(last), last
if shown is None:
    st.caption("Run predicts the case as acquired and shifted with each model (a whole brain each: a few "
               "seconds per model on a CPU; predictions of the case as acquired stored with the demo results "
               "are reused).")  # fmt: skip
elif settings is not current:
    seconds = sum(shifted.seconds for _, shifted in shown.values())
    st.warning(f"**Stale**: the results below are for the last run ({describe(last)}); the settings now are "
               f"{describe(current)}. Press Run to update (about {seconds:.0f} s, as the last run; settings run "
               "before in this app come back instantly, without a run).")  # fmt: skip


st.subheader("View")
v1, v2, v3 = st.columns([3, 2, 3])
first = chosen[0] if chosen else "t1c"  # a changed sequence by default: that is where the shift shows
view = v1.radio("Sequence", acquired, index=acquired.index(first), horizontal=True, key=f"lab_view_{'_'.join(chosen)}",
                format_func=lambda s: DISPLAY[s] + (" (changed)" if s in chosen else ""))  # fmt: skip
plane = v2.radio("Plane", list(PLANES), index=1, horizontal=True, key="lab_plane",
                 help="Slices are acquired axially: thicker slices blur along the head-foot axis, "
                      "so they show in the coronal and sagittal planes, not the axial one.")  # fmt: skip
axis = PLANES[plane]
default = tumour_centre(case.labels, case.shape)[axis]
index = v3.slider(f"{plane.capitalize()} slice ({case.spacing[axis]:g} mm apart)", 0, case.shape[axis] - 1, default,
                  format="slice %d", key=f"lab_index_{case_id}_{plane}")  # fmt: skip
channel = SEQUENCES.index(view)
reference = take_slice(case.labels > 0, plane, index) if case.labels is not None else None


def picture(volume: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """The slice of a windowed volume, labels filled in, the reference whole tumour outlined in white."""
    rgb = overlay_rgb(take_slice(volume, plane, index), None if labels is None else take_slice(labels, plane, index))
    if reference is not None:
        rgb[outline(reference, outer=True)] = 255  # white: apart from every label colour
    return rgb


shifted = shifted_case(cohort, case_id, changes, SEED) if changes else case
as_acquired, gray_shifted = window(case.images[channel]), window(shifted.images[channel])
before, after = st.columns(2)
before.image(picture(as_acquired), caption=f"{DISPLAY[view]} as acquired", width="stretch")
after.image(picture(gray_shifted), caption=f"{DISPLAY[view]} shifted", width="stretch")
if reference is not None:
    st.caption("White outline: the reference whole tumour. Filled colours below: the models' labels "
               "(orange necrosis / non-enhancing tumour, sky blue oedema, yellow enhancing).")  # fmt: skip

if shown is None:
    st.stop()
if settings["changes"] != changes:  # stale results: their own shifted case under them
    gray_shifted = window((shifted_case(cohort, case_id, settings["changes"], SEED) if settings["changes"] else case)
                          .images[channel])  # fmt: skip


def with_change(now: float, before: float, digits: int) -> str:
    """ "0.871 (-0.119)": a metric and its change; "n/a" where the metric is undefined (an empty
    region's HD95), "(was n/a)" for the change where only the one before is."""
    change = now - before
    if not math.isfinite(now):
        return metric_text(now, digits)
    return f"{metric_text(now, digits)} " + (f"({change:+.{digits}f})" if math.isfinite(change) else "(was n/a)")


rows = []
for name, (baseline, prediction) in shown.items():
    left, right, chips = st.columns([2, 2, 1])
    left.image(picture(as_acquired, baseline.labels), caption=f"{name} · as acquired · {how_computed(baseline)}",
               width="stretch")  # fmt: skip
    right.image(picture(gray_shifted, prediction.labels), width="stretch",
                caption=f"{name} · shifted · {how_computed(prediction)}")  # fmt: skip
    if case.labels is None:
        continue
    num_classes = num_classes_of(models[name])
    before_metrics = metrics_table(baseline, case, num_classes)
    after_metrics = metrics_table(prediction, case, num_classes)
    for region, m in after_metrics.items():
        b = before_metrics[region]
        delta = f"{m.dice - b.dice:+.3f}" if math.isfinite(m.dice - b.dice) else None
        still = {"delta_arrow": "off", "delta_color": "off"} if delta and float(delta) == 0 else {}  # no arrow: +0.000
        chips.metric(f"{region.upper()} Dice", metric_text(m.dice, 3), delta, help=f"Dice of the "
                     f"{REGION_DISPLAY[region]}, shifted; below it the change from the case as acquired. "
                     f"{UNDEFINED_HELP}.", **still)  # fmt: skip
        # Each metric as "shifted (change)": six columns fit at 1280 px, ten did not.
        rows.append({"model": name, "region": REGION_DISPLAY[region], "Dice": with_change(m.dice, b.dice, 3),
                     "sensitivity": with_change(m.sensitivity, b.sensitivity, 3),
                     "HD95 mm": with_change(m.hd95, b.hd95, 1),
                     "volume mL": with_change(m.volume_pred_ml, b.volume_pred_ml, 1)})  # fmt: skip
if rows:
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    references = ", ".join(f"{REGION_DISPLAY[r]} {m.volume_ref_ml:.1f} mL" for r, m in after_metrics.items())
    st.caption("Each metric on the shifted case (in brackets: the change from the case as acquired, same model, "
               f"same sequences off). HD95 in mm, lower is better; {UNDEFINED_HELP}. Reference volumes: "
               f"{references}."
               + "".join(f" The reference has no {REGION_DISPLAY[r]}: any the models label so is a false positive "
                         "(Dice 0), and its sensitivity and HD95 are undefined." for r, m in after_metrics.items()
                         if m.volume_ref_ml == 0))  # fmt: skip
