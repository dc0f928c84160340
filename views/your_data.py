"""Your data: open a cohort under the data root or upload a case or a model, validate, evaluate."""

import re
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from core.cases import inspect_path
from core.convert import install_model
from core.metrics import UNDEFINED, UNDEFINED_HELP, metric_text
from core.postprocess import CLEANED, RULE
from core.sequences import REGION_DISPLAY, combination_label, order_combinations
from core.stats import applicable_rows, not_applicable_words
from core.store import ResultStore, StoreError
from core.sweep import SweepConfig, run_sweep
from ui.data import (
    AMP,
    MAX_UPLOAD_MB,
    YOUR_MODEL,
    available_models,
    data_root,
    list_models,
    next_of,
    on_worker,
    resolve_in_root,
    results_table,
    user_models_root,
    user_store,
    waited_for,
)

st.title("Your data")
root = data_root()
if not root.is_dir():
    root.mkdir(parents=True, exist_ok=True)
    st.info(f"Created the data root **{root}** (empty): copy cohort or case folders there, or upload a case below.")
st.markdown(f"Cohort folders, case folders and manifests under **{root}** (set `GBM_DATA_ROOT` to change it). "
            "BraTS 2018-21 (`*_t1ce.nii.gz` ...) and 2023 (`*-t1c.nii.gz` ...) names are recognised. "
            f"Your results are written to **{user_store()}**, apart from the demo results; the cohort pages show "
            "them under **Results: your data**.")  # fmt: skip


def reasons(report: dict) -> list[str]:
    """Why each rejected case of an inspection report was rejected, with paths shortened to file names."""
    out = [report["error"]] if report.get("error") else []
    for case in report["cases"]:
        for reason in case.get("reasons") or []:
            out.append(re.sub(r"\S*/([^/\s]+)", r"\1", reason))
    return out


with st.expander("Upload one case"):
    name = st.text_input("Case name", "my_case", key="upload_name")
    files = st.file_uploader("NIfTI files of the case (named like BraTS: *_t1ce.nii.gz, *_flair.nii.gz ...)",
                             type=["nii", "gz"], accept_multiple_files=True, key="upload_files")  # fmt: skip
    if st.button("Save upload", key="upload_save", disabled=not files):
        big = [f.name for f in files if f.size > MAX_UPLOAD_MB * 2**20]
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            st.error(f"Case name {name!r}: use letters, digits, '.', '_' and '-' only.")
        elif big:
            st.error(f"{', '.join(big)}: larger than {MAX_UPLOAD_MB} MB.")
        else:
            # Validate in a staging folder first: nothing is announced or kept unless the case is accepted.
            (root / "uploads").mkdir(parents=True, exist_ok=True)
            staging = tempfile.mkdtemp(prefix=".staging-", dir=root / "uploads")
            case_folder = Path(staging) / name
            case_folder.mkdir()
            for upload in files:
                (case_folder / upload.name).write_bytes(upload.getvalue())
            report = inspect_path(case_folder, root=root)
            if report.get("error") or not report.get("n_accepted"):
                shutil.rmtree(staging, ignore_errors=True)
                st.error(f"Not saved: {name} was rejected.")
                for reason in reasons(report) or ["no case found in these files"]:
                    st.markdown(f"- {reason}")
            else:
                folder = root / "uploads" / name
                shutil.rmtree(folder, ignore_errors=True)  # a new upload of the same name replaces the old one
                shutil.move(str(case_folder), folder)
                shutil.rmtree(staging, ignore_errors=True)
                st.session_state["data_path"] = f"uploads/{name}"
                st.success(f"Saved {len(files)} file{'s' * (len(files) != 1)} to {folder}; the case is accepted.")

with st.expander("Upload a model (ONNX)"):
    st.markdown(f"An ONNX model folder: `model.onnx` + `card.json` (what the model takes, how it is normalised, how "
                "a missing sequence is fed, how it is run; `python -m core import-model` writes one to complete), as "
                f"the two files or one .zip, at most {MAX_UPLOAD_MB} MB. It is loaded and checked before it is kept, "
                f"in **{user_models_root()}**, apart from the bundled models; the model pickers then list it as "
                f"**NAME{YOUR_MODEL}**.")  # fmt: skip
    model_name = st.text_input("Model folder name", "my_model", key="model_upload_name")
    model_files = st.file_uploader("model.onnx and card.json (MODEL_CARD.md too, if you have one), or a .zip",
                                   type=["onnx", "json", "md", "zip"], accept_multiple_files=True,
                                   key="model_upload_files")  # fmt: skip
    if st.button("Check and save the model", key="model_upload_save", disabled=not model_files):
        size = sum(f.size for f in model_files)
        if size > MAX_UPLOAD_MB * 2**20:
            st.error(f"Not saved: {size / 2**20:.0f} MB uploaded, more than {MAX_UPLOAD_MB} MB.")
        else:
            saved = install_model({f.name: f.getvalue() for f in model_files}, user_models_root(), model_name,
                                  MAX_UPLOAD_MB * 2**20)  # fmt: skip
            if saved["ok"]:
                list_models.clear()
                st.success(f"Saved to {saved['folder']}: it takes {', '.join(saved['inputs'])} and runs on "
                           f"{saved['runtime']}. Choose it in the model pickers ({YOUR_MODEL.strip()}).")  # fmt: skip
            else:
                st.error(f"Not saved: {saved['error']}")

entries = sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []
path_text = st.text_input(
    "Folder or manifest, relative to the data root",
    key="data_path",
    placeholder=f"for example {entries[0]}" if entries else "copy a cohort or case folder there",
)
if not path_text:
    listed = ", ".join(entries[:12]) + (f" and {len(entries) - 12} more" if len(entries) > 12 else "")
    st.caption(f"In the data root now: {listed}." if entries else "The data root is empty.")
    st.stop()
try:
    path = resolve_in_root(path_text)
except ValueError as error:
    st.error(str(error))
    st.stop()

report = inspect_path(path, root=root)  # every file it reads, links resolved, must lie under the root
if report.get("error"):
    st.error(report["error"])
    st.stop()
rows = [{"case": c["case_id"], "ok": c["ok"], "missing": ", ".join(c.get("missing") or []) or "-",
         "labels": c.get("label_scheme") or "-", "problems": "; ".join(c.get("reasons") or c.get("warnings") or [])}
        for c in report["cases"]]  # fmt: skip
st.markdown(f"**{report['n_accepted']} of {report['n_cases']} cases accepted**")
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
for problem in reasons(report):
    st.error(problem)

models = available_models()
if not models or not report["n_accepted"]:
    st.stop()
st.subheader("Evaluate")
c1, c2, c3 = st.columns([2, 1, 1])
chosen = c1.multiselect("Models", list(models), default=list(models)[:1], key="data_models")
mode = c2.radio("Mode", ["acquired", "simulated"], key="data_mode",
                help="acquired: each case as it is; simulated: the 8 combinations on complete cases")  # fmt: skip
clean = c3.toggle("Clean up too", key="data_clean",
                  help=f"Also score each prediction after Clean up ({RULE}; the explorer's switch), stored as the "
                  f"model NAME{CLEANED} beside the raw results: the cohort pages show both, and Statistics compares "
                  "them (Clean up vs not). It adds about 0.2 s per prediction.")  # fmt: skip
# The click only asks for the run, which the rerun makes with the button disabled; popped, so a run that
# another click interrupts is not asked for again (what it wrote stays: the sweep resumes).
running = st.session_state.pop("data_running", False)
st.button("Evaluate", type="primary", key="data_run", disabled=not chosen or running,
          on_click=lambda: st.session_state.update(data_running=True))  # fmt: skip
if running:
    bar = st.progress(0.0, text="Evaluating: reading the cases...")
    # bfloat16 where the CPU runs it natively, as every page's predictions (ui.data.AMP)
    config = SweepConfig(tuple(models[m]["path"] for m in chosen), str(path), mode, splits=(), workers=1, amp=AMP,
                         root=str(root), clean=clean)  # fmt: skip

    def evaluate(progress):  # on the app's prediction thread (ui.data.on_worker), the store opened there
        with ResultStore(user_store()) as store:
            return run_sweep(store, config, on_progress=progress)

    try:
        with waited_for():  # the explorer's background predictions hold off meanwhile
            summary = on_worker(evaluate, lambda d, t, m: bar.progress(d / t, text=f"Evaluating {m}: prediction "
                                                                               f"{next_of(d, t)}"))  # fmt: skip
    except StoreError as error:
        st.error(str(error))
        st.stop()
    bar.empty()
    results_table.clear()
    # Combinations a model cannot run are not predicted; with Clean up a prediction has two results.
    written = summary.results_written - summary.not_applicable - summary.cleaned_written
    inapplicable = f", {summary.not_applicable} not applicable" if summary.not_applicable else ""
    what = f"{written} prediction{'' if written == 1 else 's'}"
    if cleaned := summary.cleaned_written - summary.cleaned_not_applicable:
        what = f"{written} raw and {cleaned} cleaned-up ({CLEANED}) result{'' if cleaned == 1 else 's'}"
    st.session_state["data_summary"] = (
        f"{what} written to {user_store()} in "
        f"{summary.seconds:.0f} s ({summary.skipped_done} result{'' if summary.skipped_done == 1 else 's'} already "
        f"there{inapplicable}). They are below, and on the Hospitals, Missing sequences and Statistics pages under "
        "**Results: your data**.",
        summary.errors,
    )
    st.rerun()  # the button enabled again, the summary below
if done := st.session_state.pop("data_summary", None):
    st.success(done[0])
    for error in done[1]:
        st.error(error)

# Your results for these cases and models (from your store only; the demo results are not read here).
mine = results_table(str(user_store()))
cases = {c["case_id"] for c in report["cases"] if c["ok"]}
if len(mine):
    # By weights, not name (an uploaded model is listed as NAME (your model)); with their results after Clean up.
    digests = {models[m]["weights_sha256"] for m in chosen}
    mine = mine[mine["patient_id"].isin(cases) & mine["model_sha256"].str.removesuffix(CLEANED).isin(digests)]
if len(mine):
    st.subheader("Your results for these cases")
    columns = ["model", "patient_id", "missing", "region", "dice", "sensitivity", "hd95", "volume_pred_ml",
               "volume_ref_ml", "device", "runtime"]  # fmt: skip
    # An undefined metric reads n/a, as on every page: the metrics are text here, since the browser's
    # table shows a missing number as "None" whatever a Styler says. Figure spaces pad them to one
    # width, so that sorting by a column (as text) still sorts the numbers. Combinations a model
    # cannot run on have no metrics at all: they are counted under the table, not shown as rows of n/a.
    # Complete first, then the combinations in their usual order; regions as everywhere.
    ranks = {"missing": {name: k for k, name in enumerate(order_combinations(mine["missing"]))},
             "region": {region: k for k, region in enumerate(REGION_DISPLAY)}}  # fmt: skip
    shown = applicable_rows(mine)[columns].sort_values(
        ["model", "patient_id", "missing", "region"], key=lambda c: c.map(ranks[c.name]) if c.name in ranks else c
    )
    shown["missing"] = shown["missing"].map(combination_label)
    shown["region"] = shown["region"].map(REGION_DISPLAY)
    for column in ("dice", "sensitivity", "hd95"):
        texts = [metric_text(v, 1 if column == "hd95" else 3) for v in shown[column]]
        width = max(map(len, texts), default=0)
        shown[column] = [t if t == UNDEFINED else t.rjust(width, "\u2007") for t in texts]
    words = not_applicable_words(mine)
    if len(shown):
        # Where every row was run alike, that goes in the caption: the table then fits at 1280 px.
        alike = [c for c in ("device", "runtime") if shown[c].nunique() == 1]
        titles = {"model": "Model", "patient_id": "Patient", "missing": "Sequences", "region": "Region"}
        config = {c: st.column_config.TextColumn(t) for c, t in titles.items()}
        config |= {c: st.column_config.NumberColumn(t, format="%.1f") for c, t in
                   (("volume_pred_ml", "Model mL"), ("volume_ref_ml", "Reference mL"))}  # fmt: skip
        config |= {c: st.column_config.TextColumn(t, alignment="right") for c, t in
                   (("dice", "Dice"), ("sensitivity", "Sensitivity"), ("hd95", "HD95 mm"))}  # fmt: skip
        config |= {"device": st.column_config.TextColumn("Run on"), "runtime": st.column_config.TextColumn("Engine")}
        st.dataframe(
            shown.drop(columns=alike),
            hide_index=True,
            width="stretch",
            column_config=config,
            height=min(38 + 35 * len(shown), 740),
        )  # a case's 8 x 3 rows at once, a cohort's scrolled
        ran = "; ".join(f"{config[c]['label'].lower()} {shown[c].iloc[0]}" for c in alike)
        words = f"HD95 in mm; {UNDEFINED_HELP}. " + (f"Every row: {ran}. " if ran else "") + words
    st.caption(words)
