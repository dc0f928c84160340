"""Patient explorer: switch sequences off, run a model, see the outline and the numbers change."""

import math

import streamlit as st

from core.card import model_summary, num_classes_of
from core.external import combination_applicable
from core.figures import (
    ERROR_COLOURS,
    ERROR_WORDS,
    LABEL_COLOURS,
    OUTLINE_COLOURS,
    OVERLAYS,
    PLANE_AXES,
    PLANES,
    clicked_voxel,
    legend_html,
    tri_planar_figure,
    tri_planar_slices,
)
from core.io import scoring_grid_words
from core.metrics import HD95_HELP, UNDEFINED_HELP, metric_text
from core.postprocess import RULE
from core.sequences import (
    DISPLAY,
    LABEL_LEGEND,
    REGION_DISPLAY,
    SECONDARY,
    SEQUENCES,
    combination_name,
    display_name,
    parse_combination,
    run_phrase,
    scorable_regions,
)
from ui.data import (
    available_models,
    being_prepared,
    cached_prediction,
    case_folder,
    case_view,
    cleaned_prediction,
    demo_cohort,
    demo_patients,
    demo_store,
    how_computed,
    load_case,
    metrics_table,
    models_root,
    next_of,
    prediction_nifti,
    prefetch,
    preparing,
    preview_slice,
    run_prediction,
    showcase_patient,
    stop_prefetching,
)

st.title("Patient explorer")
models = available_models()
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
own = manifest.loc[manifest["source"] == "bundled files", "patient_id"].tolist()
if showcase is not None and own and showcase not in own:  # a cohort of one's own (real scans): its first case
    showcase = own[0]
home = manifest.loc[manifest["patient_id"] == showcase, "hospital"].tolist()
hospital = middle.selectbox("Hospital", hospitals, key="hospital", index=hospitals.index(home[0]) if home else 0)
rows = manifest if hospital == "all" else manifest[manifest["hospital"] == hospital]
patients = rows["patient_id"].tolist()
case_id = right.selectbox("Patient", patients, key="patient",
                          index=patients.index(showcase) if showcase in patients else 0)  # fmt: skip
# The switches come first, from the manifest: a click on one while a case is being generated is kept.
try:
    acquired_missing = parse_combination(rows.loc[rows["patient_id"] == case_id, "missing"].iloc[0])
except ValueError:  # a manifest's own wording: the case as read below still decides what is missing
    acquired_missing = frozenset()
st.caption(f"{name}: {model_summary(card)}. As acquired: {display_name(acquired_missing)}.")
switches = st.columns(4)
switches[1].toggle("T1c (required)", value=True, disabled=True, key="use_t1c")
use = {}
for column, sequence in zip((switches[0], switches[2], switches[3]), SECONDARY):
    acquired = sequence not in acquired_missing
    use[sequence] = column.toggle(DISPLAY[sequence] + ("" if acquired else " (not acquired)"), value=acquired,
                                  disabled=not acquired, key=f"use_{sequence}_{case_id}")  # fmt: skip
with st.spinner(preparing(case_id)):
    cohort = case_folder(case_id)
case = load_case(cohort, case_id)
missing = tuple(s for s in SEQUENCES if s in case.missing or (s in use and not use[s]))
args = (cohort, case_id, card["path"], card["weights_sha256"])
# A model whose card says it cannot run without a sequence: that combination is not applicable.
applicable = combination_applicable(card, missing)
if not applicable:
    lacking = [DISPLAY[s] for s in card.get("inputs", SEQUENCES) if s in missing]
    st.warning(f"{name} cannot run without {', '.join(lacking)} (its card: missing sequences cannot be fed): "
               "this combination is not applicable, and is recorded so in evaluations, never as Dice 0.")  # fmt: skip

prediction = cached_prediction(*args, missing)
complete = cached_prediction(*args, tuple(sorted(case.missing, key=SEQUENCES.index)))
action, mode, tidy = st.columns([3, 0.7, 1], vertical_alignment="center")
st.session_state.setdefault("live_run", True)
live = mode.toggle("Live", key="live_run",
                   help="Run the model on every switch: the axial slice at once, then the whole brain. "
                        "Off: run it with the button.")  # fmt: skip
clean = tidy.toggle("Clean up", key="clean_up",
                    help=f"{RULE[0].upper()}{RULE[1:]} (specks, and the bright rims at the brain's edge that real "
                         "scans show and our synthetic ones do not). Off: the network's own labels, as the demo "
                         "results hold them.")  # fmt: skip
progress = st.empty()


def predict_with_progress():
    bar = progress.progress(0.0, text="Predicting the whole brain...")
    done = run_prediction(*args, missing, on_progress=lambda d, t, _: bar.progress(
        d / t, text=f"Predicting the whole brain: part {next_of(d, t)}"))  # fmt: skip
    progress.empty()
    return done


if not applicable:
    action.caption(f"{name} does not run {run_phrase(frozenset(missing))}.")
elif live:
    action.caption(f"{name} runs on every switch ({run_phrase(frozenset(missing))})"
                   + (": this combination is computed already." if prediction is not None else "."))  # fmt: skip
elif prediction is not None:
    action.caption(f"{name} ({run_phrase(frozenset(missing))}): this combination is computed already.")
elif action.button(f"Run {name} ({run_phrase(frozenset(missing))})", type="primary"):
    predict_with_progress()
    st.rerun()  # drawn again from the cache: the answer, without the button

names = [DISPLAY[s] for s in SEQUENCES]
view = case_view(cohort, case_id)  # window limits, tumour centre and box: computed once per case
one, two, three = st.columns([1.8, 1.75, 0.9], vertical_alignment="bottom")
sequence = SEQUENCES[names.index(one.radio("Sequence", names, index=1, key="view_sequence", horizontal=True))]
low, high, lo, hi = view["limits"].get(sequence, (0.0, 1.0, 0.0, 1.0))
if sequence in view["limits"]:
    high, kept = max(high, low + 1e-3), f"window_kept_{sequence}_{case_id}"  # kept while another sequence shows
    lo, hi = two.slider(f"{DISPLAY[sequence]} window (intensity)", low, high, st.session_state.get(kept, (lo, hi)),
                        step=(high - low) / 500, format="%.4g", key=f"window_{sequence}_{case_id}",
                        help="Black at the left value, white at the right: narrow it for contrast. "
                             "Each sequence keeps its own.")  # fmt: skip
    st.session_state[kept] = (lo, hi)
zoom = three.toggle("Zoom to tumour", value=view["box"] is not None, key=f"zoom_{case_id}",
                    disabled=view["box"] is None)  # fmt: skip

one, two, three = st.columns([3.1, 1.15, 0.8], vertical_alignment="bottom")
overlay = one.radio("Overlay", OVERLAYS, key="overlay", horizontal=True,
                    help="Filled labels of the prediction or the reference; outlines of both; the error map; "
                         "none. Outlines and errors are of the region chosen beside.")  # fmt: skip
num_classes = num_classes_of(card)
regions = scorable_regions(case.label_scheme, num_classes)
region = two.selectbox("Region (outlines, errors)", regions, format_func=lambda r: REGION_DISPLAY[r],
                       key="view_region", disabled=overlay not in ("outlines", "errors"))  # fmt: skip
if overlay in ("prediction", "reference"):
    classes = {label: LABEL_LEGEND[label] for label in LABEL_COLOURS}
elif overlay == "errors":
    classes = {kind: ERROR_WORDS[kind].split(" (")[0] for kind in ERROR_COLOURS}
else:
    classes = {}
with three.popover("Opacity", disabled=not classes, width="stretch"):
    opacity = {key: st.slider(f"{words.capitalize()} opacity", 0.0, 1.0, 0.5, 0.05, key=f"opacity_{key}")
               for key, words in classes.items()}  # fmt: skip

preview = None
if prediction is None and not live and applicable:
    note, button = st.columns([2.3, 1.2], vertical_alignment="center")
    axial = st.session_state.get(f"slice_axial_{case_id}", view["centre"][2])
    choice = (case_id, name, missing, axial)  # ids and choices only: the labels stay in the cache
    if button.button(f"Quick preview, axial {axial}", key="preview_button", width="stretch"):
        st.session_state["preview_choice"] = choice
    if st.session_state.get("preview_choice") == choice:
        preview = preview_slice(*args, missing, axial)
        note.caption(f"The model's labels on axial slice {axial} alone, below: run it for the whole brain and the "
                     "numbers.")  # fmt: skip
    else:
        note.caption("No prediction yet: run the model, or preview the axial slice alone (a few seconds).")

viewer = st.container()
point = [0, 0, 0]
for column, plane in zip(st.columns(3), PLANES):
    axis, key = PLANE_AXES[plane][2], f"slice_{plane}_{case_id}"
    st.session_state.setdefault(key, int(view["centre"][axis]))  # a click sets it too: no second default
    point[axis] = column.slider(f"{plane.capitalize()} slice ({'xyz'[axis]}, mm)", 0, case.shape[axis] - 1, key=key)


def move_crosshair() -> None:
    """A click in one plane moves the crosshair, and so the other two planes, to the voxel clicked."""
    points = st.session_state["viewer"]["selection"]["points"]
    voxel = clicked_voxel(points[0]) if points else None
    if voxel is not None:
        for plane in PLANES:
            axis = PLANE_AXES[plane][2]
            st.session_state[f"slice_{plane}_{case_id}"] = min(max(int(voxel[axis]), 0), case.shape[axis] - 1)


def viewer_figure(labels, preview=None):
    slices = tri_planar_slices(case.images[SEQUENCES.index(sequence)], point, lo, hi, labels, case.labels, overlay,
                               region, opacity, axial_pred=preview)  # fmt: skip
    titles = {plane: f"{plane} {point[PLANE_AXES[plane][2]]}" for plane in PLANES}
    return tri_planar_figure(slices, point, case.shape, view["box"] if zoom else None, titles)


off = " (switched off: the model does not see it)" if sequence in missing and sequence not in case.missing else ""
if sequence in case.missing:
    viewer.info(f"{DISPLAY[sequence]} was not acquired for this case: there is no image to show, only the overlay.")
chart = viewer.empty()
if prediction is None and live and applicable:  # the axial slice at once, then the whole brain in its place
    # Unless the background is computing this very combination: its answer comes sooner than a
    # preview would (which would cancel it and start the whole brain again), so the image waits alone.
    ahead = being_prepared(*args, missing)
    chart.plotly_chart(viewer_figure(None, None if ahead else preview_slice(*args, missing, point[2])),
                       width="stretch", config={"displaylogo": False})  # fmt: skip
    prediction = predict_with_progress()
cleanup = None
if clean:  # what is drawn and scored; the cache keeps the network's own labels
    same = complete is prediction
    if prediction is not None:
        prediction, cleanup = cleaned_prediction(prediction, case)
    complete = prediction if same else complete and cleaned_prediction(complete, case)[0]
chart.plotly_chart(viewer_figure(None if prediction is None else prediction.labels, preview), key="viewer",
                   on_select=move_crosshair, selection_mode="points", width="stretch",
                   config={"displaylogo": False})  # fmt: skip
if not live:
    stop_prefetching()  # the model runs when asked to, not ahead
elif applicable and prediction is not None:
    # While the user looks, the combinations one switch away are predicted in the background.
    flips = [s for s in reversed(SECONDARY) if s not in case.missing]  # FLAIR first: the paper's lesson
    nearby = [tuple(s for s in SEQUENCES if (s in missing) != (s == flip)) for flip in flips]
    queued = prefetch(*args, [m for m in nearby if combination_applicable(card, m)])
    if queued:
        progress.caption("Getting ready in the background, so a switch answers at once: "
                         + "; ".join(run_phrase(frozenset(m)) for m in queued) + ".")  # fmt: skip
if overlay in ("prediction", "reference"):
    items = [(LABEL_COLOURS[label], LABEL_LEGEND[label]) for label in LABEL_COLOURS]
    heading = f"{overlay.capitalize()} labels"
elif overlay == "outlines":
    items = [(OUTLINE_COLOURS[k], f"{k} (drawn {'inside' if k == 'prediction' else 'outside'} its edge)")
             for k in ("prediction", "reference")]  # fmt: skip
    heading = f"Outlines of the {REGION_DISPLAY[region]}"
elif overlay == "errors":
    items = [(ERROR_COLOURS[kind], ERROR_WORDS[kind]) for kind in ERROR_COLOURS]
    heading = f"Errors in the {REGION_DISPLAY[region]}"
else:
    items, heading = [], "No overlay"
viewer.markdown(f"<small>**{heading}**: {legend_html(items)}</small>", unsafe_allow_html=True)
viewer.caption(f"{case_id} · {DISPLAY[sequence]}{off}. Click a point in one plane to move the other two there; "
               "the sliders below move the crosshair too.")  # fmt: skip
if overlay in ("prediction", "outlines", "errors") and prediction is None and preview is None:
    viewer.caption("The prediction's layer appears once the model has run (or on the previewed axial slice).")

if prediction is None:
    st.info("Run the model to see Dice, sensitivity, HD95 and volumes." if applicable else
            "Not applicable: switch a sequence back on, or choose another model.")  # fmt: skip
else:
    summary, download = st.columns([2.6, 1.4])
    summary.markdown(f"**{display_name(prediction.missing)}** · {how_computed(prediction)}"
                     + (f" · cleaned up: {cleanup.words}" if cleanup else ""))  # fmt: skip
    stem = f"{case_id}_{name}_{combination_name(prediction.missing)}" + ("_clean" if clean else "")
    download.download_button("Download segmentation (NIfTI)", prediction_nifti(prediction, case),
                             file_name=f"{stem}.nii.gz",
                             mime="application/gzip")  # fmt: skip


def change(now: float, before: float | None, digits: int, against: str = "vs as acquired") -> dict:
    """st.metric arguments for a change, said against what: signed, and "no change" in grey
    without an arrow when it rounds to zero."""
    if before is None or not math.isfinite(now - before):
        return {}
    text = f"{now - before:+.{digits}f}"
    if float(text) == 0:
        return {"delta": "no change", "delta_arrow": "off", "delta_color": "off", "delta_description": against}
    return {"delta": text, "delta_description": against}


if prediction is not None:
    if case.labels is None:
        st.write("No reference segmentation for this case.")
    else:
        now = metrics_table(prediction, case, num_classes)
        before = None if complete is None or complete is prediction else metrics_table(complete, case, num_classes)
        for region_name, m in now.items():
            was = before[region_name] if before else None
            st.markdown(f"**{REGION_DISPLAY[region_name].capitalize()}**")
            a, b, c, d = st.columns(4)
            a.metric("Dice", metric_text(m.dice, 3), help=UNDEFINED_HELP, **change(m.dice, was and was.dice, 3))
            b.metric("Sensitivity", metric_text(m.sensitivity, 3), help=UNDEFINED_HELP,
                     **change(m.sensitivity, was and was.sensitivity, 3))  # fmt: skip
            c.metric("HD95 mm", metric_text(m.hd95, 1), help=HD95_HELP,
                     **({"delta_color": "inverse"} | change(m.hd95, was and was.hd95, 1)))  # fmt: skip
            d.metric("Volume mL", f"{m.volume_pred_ml:.1f}", **(change(m.volume_pred_ml, m.volume_ref_ml, 1,
                     f"vs reference {m.volume_ref_ml:.1f}") | {"delta_color": "off"}))  # fmt: skip
            if m.volume_ref_ml == 0:  # why Dice is 0 (or n/a) and sensitivity n/a
                st.caption(f"The reference has no {REGION_DISPLAY[region_name]}: "
                           + (f"the model's {m.volume_pred_ml:.1f} mL are all false positives (Dice 0)"
                              if m.volume_pred_ml > 0 else "nor does the prediction (Dice undefined)")
                           + "; sensitivity (the share of the reference found) and HD95 are undefined.")  # fmt: skip
        if before is None and prediction.missing != case.missing:
            st.caption("Run with every acquired sequence on too, to see the change against the case as acquired.")
        st.caption(f"Scored on {scoring_grid_words(case)}.")

if complete is not None and prediction is not None and complete is not prediction and sequence not in case.missing:
    st.subheader("As acquired vs current")
    one, two = st.columns(2)
    label_opacity = opacity if overlay in ("prediction", "reference") else 0.5  # filled labels here
    for column, shown, words in ((one, complete, "as acquired"), (two, prediction, display_name(prediction.missing))):
        axial = tri_planar_slices(case.images[SEQUENCES.index(sequence)], point, lo, hi, shown.labels,
                                  opacity=label_opacity)["axial"]  # fmt: skip
        column.image(axial, caption=f"{words} · axial {point[2]}", width=420)
