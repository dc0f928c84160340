"""Where the app's data lives, and the one place that caches what pages load or compute."""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.cases import find_cases
from core.device import choose_device, keep_freed_memory
from core.external import is_external, load_any_model, normalise_for, prepare_for
from core.infer import Prediction, predict_slice, predict_volume
from core.io import Case, read_case
from core.metrics import evaluate
from core.model import ModelError, model_folders, read_card
from ui.prefetch import Prefetcher

ROOT = Path(__file__).resolve().parent.parent
# bfloat16 autocast where the device runs it natively (3x faster on CPUs with AMX; labels
# differ from float32 in about 1 voxel in 20,000); GBM_AMP=0 turns it off.
AMP = os.environ.get("GBM_AMP", "1") != "0"
# Before the background worker and the pages' later script threads start: predictions in threads
# then reuse the process's freed memory instead of faulting it in again (core.device).
keep_freed_memory()


def demo_cohort() -> Path:
    """The cohort the app opens on (``GBM_DEMO_COHORT``, default the bundled demo cases)."""
    return Path(os.environ.get("GBM_DEMO_COHORT", ROOT / "data_samples"))


def models_root() -> Path:
    """Where model folders are (``GBM_MODELS``, default the bundled models)."""
    return Path(os.environ.get("GBM_MODELS", ROOT / "models"))


@st.cache_data(max_entries=4, show_spinner=False)
def load_manifest(path: str) -> pd.DataFrame:
    """The manifest of a cohort folder (``core.cases.manifest_summary``), or an empty table."""
    from core.cases import manifest_summary

    return pd.DataFrame(manifest_summary(path), columns=["patient_id", "hospital", "split", "missing"])


def case_cache() -> Path:
    """Where synthetic demo cases are regenerated on demand (``GBM_CASE_CACHE``)."""
    return Path(os.environ.get("GBM_CASE_CACHE", ROOT / ".cache" / "cases"))


@st.cache_data(ttl=60, show_spinner=False)
def demo_patients(cohort: str, store: str) -> pd.DataFrame:
    """Every patient the app can show: the cohort's cases on disk, then the synthetic cases of
    the results store (regenerated on demand, bit for bit, from preset, scale and seed).

    Columns: patient_id, hospital, split, missing, source (words), and preset, scale, seed
    for regenerated cases (empty for the cohort's own).
    """
    from core.store import ResultStore

    columns = ["patient_id", "hospital", "split", "missing"]
    rows = load_manifest(cohort)[columns].assign(source="bundled files", preset="", scale=1.0, seed=0)
    if Path(store).is_file():
        with ResultStore(store) as results:
            cases = results.case_records()
        extra, bundled = [], set(rows["patient_id"])
        for case in cases:
            synthetic = case["meta"].get("synthetic")
            if synthetic and case["patient_id"] not in bundled:
                preset, scale, seed = synthetic["preset"], float(synthetic["scale"]), int(float(synthetic["seed"]))
                source = f"regenerated ({preset} preset, scale {scale:g}, seed {seed})"
                extra.append((case["patient_id"], case["hospital"], case["split"], case["acquired_missing"], source,
                              preset, scale, seed))  # fmt: skip
        extra = pd.DataFrame(sorted(set(extra)), columns=rows.columns)
        rows = pd.concat([rows, extra], ignore_index=True).drop_duplicates("patient_id")
    order = {h: i for i, h in enumerate(["public", "1", "2", "3", "4", "5", "6"])}
    return rows.sort_values(["hospital", "patient_id"], key=lambda c: c.map(order).fillna(99) if c.name == "hospital"
                            else c).reset_index(drop=True)  # fmt: skip


@st.cache_data(ttl=60, show_spinner=False)
def showcase_patient(store: str) -> str | None:
    """The first patient (by id) with a cached prediction for every combination of missing
    sequences, so the explorer opens where every switch answers at once."""
    from core.sequences import PAPER_COMBINATIONS
    from core.store import ResultStore

    if not Path(store).is_file():
        return None
    with ResultStore(store) as results:
        return results.first_patient_with_predictions(len(PAPER_COMBINATIONS))


def case_folder(case_id: str) -> str:
    """The cohort folder that holds ``case_id``: the demo cohort, or the regeneration cache,
    rendering the case there first if needed (5-10 s on two cores; the same bytes the demo results
    were computed on, checked by the results store's content hash).

    Raises:
        KeyError: the patient is in neither the cohort nor the demo results.
    """
    from core.synth.cohort import write_cohort

    patients = demo_patients(str(demo_cohort()), str(demo_store()))
    row = patients[patients["patient_id"] == case_id]
    if row.empty:
        raise KeyError(f"no case {case_id!r} in {demo_cohort()} or {demo_store()}")
    preset, scale, seed = row[["preset", "scale", "seed"]].iloc[0]
    if not preset:
        return str(demo_cohort())
    folder = case_cache() / f"{preset}_scale{scale:g}_seed{seed}"
    if not (folder / case_id / "case.json").is_file() or not (folder / "manifest.csv").is_file():
        with waited_for():  # the background worker's predictions hold off: the user waits for this
            on_worker(lambda _: write_cohort(folder, preset, float(scale), int(seed), patient_ids=[case_id]))
    return str(folder)


def preparing(case_id: str) -> str:
    """The spinner's words while :func:`case_folder` may be generating a case."""
    return (f"Preparing {case_id} (a synthetic case that is not bundled is generated once: 5-10 s, longer while "
            "the computer is busy)...")  # fmt: skip


def user_models_root() -> Path:
    """Where model folders uploaded on the Your data page are kept (``GBM_USER_MODELS``, default
    ``models`` under the data root), apart from the bundled models."""
    return Path(os.environ.get("GBM_USER_MODELS", data_root() / "models"))


YOUR_MODEL = " (your model)"  # how the selectors mark an uploaded model


def available_models() -> dict[str, dict]:
    """{name: card} of the bundled models, then the uploaded ones, each named "<name> (your model)"
    and its card marked ``yours`` (a bundled model is never replaced by an upload)."""
    models = dict(list_models(str(models_root())))
    for name, card in list_models(str(user_models_root())).items():
        models[f"{name}{YOUR_MODEL}"] = card | {"yours": True}
    return models


@st.cache_data(ttl=60, show_spinner=False)
def list_models(root: str) -> dict[str, dict]:
    """{name: card} of the model folders under ``root`` (folders with a card.json: a DeepMedic's
    weights.safetensors or an ONNX model's model.onnx beside it)."""
    try:
        folders = model_folders(root)
    except ModelError:
        return {}
    cards = {}
    for folder in folders:
        try:
            card = read_card(folder)
        except ModelError:
            continue  # a folder being written, or not a model: the pickers simply leave it out
        card["path"] = str(folder)
        if is_external(folder):  # an ONNX model folder, whether or not its card says "format": "onnx"
            card["format"] = "onnx"
        cards[card.get("name", folder.name)] = card
    return cards


@st.cache_resource(max_entries=2, show_spinner="Reading the case...")
def load_case(cohort: str, case_id: str) -> Case:
    """Read one case of a cohort; a shared read-only resource (volumes are large)."""
    for source in find_cases(cohort):
        if source.case_id == case_id:
            case = read_case(source)
            case.images.setflags(write=False)
            return case
    raise KeyError(f"no case {case_id!r} in {cohort}")


@st.cache_resource(max_entries=6, show_spinner="Loading the model...")
def load_model_cached(path: str, sha256: str):
    """A model for inference on the best device, keyed by folder and weights hash: a DeepMedic, or
    an ONNX model folder run by ONNX Runtime (``core.external.load_any_model``)."""
    return load_any_model(path, device=choose_device())


@st.cache_resource(max_entries=3, show_spinner="Normalising the case...")
def normalised_case(cohort: str, case_id: str, model_path: str, sha256: str):
    """The case normalised as the model needs (a DeepMedic's landmarks, an ONNX model's card), and
    its brain mask: the same for every missing set, so a switch pays only for the network (shared,
    read-only)."""
    model = load_model_cached(model_path, sha256)
    return normalise_for(model, load_case(cohort, case_id))


@st.cache_resource(max_entries=3, show_spinner=False)
def prepared_input(cohort: str, case_id: str, model_path: str, sha256: str, missing: tuple[str, ...]):
    """Normalised input with the missing sequences fed as the model takes them (shared, read-only).

    Raises:
        core.external.NotApplicable: the model's card says it cannot run without one of them.
    """
    model = load_model_cached(model_path, sha256)
    return prepare_for(model, load_case(cohort, case_id), missing, normalised_case(cohort, case_id, model_path, sha256))


# Whole-brain predictions of this app process (all sessions), least recently used dropped past
# KEPT_PREDICTIONS: a module dict, not a cached resource, because the prefetch thread fills it too.
KEPT_PREDICTIONS = 24
_PREDICTIONS: OrderedDict[tuple, Prediction] = OrderedDict()
_KEEPING = threading.Lock()


def _predictions() -> OrderedDict:
    return _PREDICTIONS


@st.cache_data(max_entries=64, show_spinner=False)
def _case_store_key(cohort: str, case_id: str) -> str | None:
    """The results-store key of a case of the cohort (``core.store.source_key``), or None."""
    from core.store import source_key

    source = next((s for s in find_cases(cohort) if s.case_id == case_id), None)
    return source_key(source) if source is not None else None


def _ask_stores(cohort: str, case_id: str, ask):
    """``ask(store, key)`` on the user store, then the demo store (each opened once); the first
    answer that is not None, or None."""
    from core.store import ResultStore

    key = _case_store_key(cohort, case_id)
    if key is None:
        return None
    for path in (user_store(), demo_store()):
        if path.is_file():
            with ResultStore(path) as store:
                found = ask(store, key)
            if found is not None:
                return found
    return None


STORED = "precomputed ("  # how a stored prediction's device begins (stored_prediction)


def stored_prediction(cohort: str, case_id: str, sha256: str, missing: tuple[str, ...]) -> Prediction | None:
    """A prediction precomputed by a sweep (demo or user store), or None."""
    found = _ask_stores(cohort, case_id, lambda store, key: store.stored_prediction(sha256, key, frozenset(missing)))
    if found is None:
        return None
    return Prediction(found.labels, None, frozenset(missing), found.seconds, f"{STORED}{found.device})", (0, 0, 0))


def stored_combinations(cohort: str, case_id: str, sha256: str,
                        combinations: list[tuple[str, ...]]) -> set[tuple[str, ...]]:  # fmt: skip
    """Which of these combinations a results store holds a prediction for (cheap: nothing is loaded)."""
    held: set[tuple[str, ...]] = set()

    def ask(store, key):
        held.update(m for m in combinations if m not in held and store.has_prediction(sha256, key, frozenset(m)))

    _ask_stores(cohort, case_id, ask)
    return held


def how_computed(prediction: Prediction) -> str:
    """Where a prediction comes from and what it cost, in words: "computed now on CPU (2 threads),
    bfloat16 (half precision), in 2.3 s" or "from the stored results (computed on ..., in 26.1 s)"."""
    device = prediction.device.replace("bfloat16", "bfloat16 (half precision)")
    if device.startswith(STORED):
        return f"from the stored results (computed on {device[len(STORED) : -1]}, in {prediction.seconds:.1f} s)"
    return f"computed now on {device}, in {prediction.seconds:.1f} s"


def cached_prediction(cohort: str, case_id: str, model_path: str, sha256: str, missing: tuple[str, ...]):
    """A prediction computed in this app session or precomputed in a results store, or None."""
    key = (cohort, case_id, model_path, sha256, missing)
    found = _recall(key)
    if found is not None:
        return found
    found = stored_prediction(cohort, case_id, sha256, missing)
    return None if found is None else _remember(key, lambda: found)


def _recall(key: tuple) -> Prediction | None:
    """A kept prediction (now the most recently used), or None."""
    with _KEEPING:  # the prefetch thread may drop one meanwhile
        found = _PREDICTIONS.get(key)
        if found is not None:
            _PREDICTIONS.move_to_end(key)
        return found


def _remember(key: tuple, compute) -> Prediction:
    """The prediction under ``key``, computed once and kept (the least recently used dropped past
    ``KEPT_PREDICTIONS``)."""
    found = _recall(key)
    if found is None:
        found = compute()
        with _KEEPING:
            _PREDICTIONS[key] = found
            while len(_PREDICTIONS) > KEPT_PREDICTIONS:  # keep memory bounded
                _PREDICTIONS.popitem(last=False)
    return found


def prefetch_enabled() -> bool:
    """Whether the explorer predicts the next likely switches in the background (``GBM_PREFETCH``, default on)."""
    return os.environ.get("GBM_PREFETCH", "1") != "0"


_WORKER: list[Prefetcher] = []  # the app process's one background worker, started on first use
_STARTING = threading.Lock()  # sessions asking for the worker at once start one


def prefetcher() -> Prefetcher:
    """The app process's background worker (``ui.prefetch``); it keeps what it computes with the rest."""
    with _STARTING:
        if not _WORKER:
            _WORKER.append(Prefetcher(keep=lambda key, prediction: _remember(key, lambda: prediction),
                                      has=lambda key: key in _PREDICTIONS))  # fmt: skip
        return _WORKER[0]


def next_of(done: int, total: int) -> str:
    """Progress in words, the step under way: 0 of 5 done reads "1 of 5", 5 of 5 "5 of 5"."""
    return f"{min(done + 1, total)} of {total}"


def waited_for(key: tuple | None = None, on_progress=None):
    """Around work a user waits for: the background worker, if started, holds off (``Prefetcher.foreground``)."""
    return _WORKER[0].foreground(key, on_progress) if _WORKER else nullcontext()


def on_worker(compute, on_progress=None):
    """``compute(progress)`` for a waiting user, run on the worker's thread ahead of its queue: all
    of the app's network work runs on that one thread (``ui.prefetch``: a second thread's OpenMP
    pool made a whole brain 1.7x slower). Call it inside :func:`waited_for`."""
    return prefetcher().call(compute, on_progress)


def being_prepared(cohort: str, case_id: str, model_path: str, sha256: str, missing: tuple[str, ...]) -> bool:
    """Whether the background worker is computing this whole-brain prediction right now (the page
    then waits for it rather than preview a slice: a preview would cancel it)."""
    return bool(_WORKER) and _WORKER[0].running() == (cohort, case_id, model_path, sha256, missing)


def stop_prefetching() -> None:
    """Drop the background worker's queue (its running job finishes): a user who turned live runs off."""
    if _WORKER:
        _WORKER[0].want([])


def run_prediction(cohort, case_id, model_path, sha256, missing: tuple[str, ...], on_progress=None) -> Prediction:
    """Predict (or take from the cache) the whole volume; kept for the switches to reuse. A
    background prediction of the same combination is waited for, any other one is cancelled."""
    model = load_model_cached(model_path, sha256)
    case = load_case(cohort, case_id)
    normalised = normalised_case(cohort, case_id, model_path, sha256)
    key = (cohort, case_id, model_path, sha256, missing)

    def compute(progress):
        return predict_volume(model, case, frozenset(missing), amp=AMP, on_progress=progress, normalised=normalised)

    with waited_for(key, on_progress):
        return _remember(key, lambda: on_worker(compute, on_progress))


def prefetch(cohort, case_id, model_path, sha256, combinations: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Ask the background worker for these combinations (first first), replacing older wishes.

    Only what is neither kept nor stored is asked for (a stored one is not loaded here). Returns
    the combinations queued.
    """
    if not prefetch_enabled():
        return []
    todo = [m for m in combinations if (cohort, case_id, model_path, sha256, m) not in _PREDICTIONS]
    held = stored_combinations(cohort, case_id, sha256, todo) if todo else set()
    todo = [m for m in todo if m not in held]
    if not todo:
        return []
    # The worker gets the loaded objects, not the cached functions: it has no page to run in.
    model = load_model_cached(model_path, sha256)
    case = load_case(cohort, case_id)
    normalised = normalised_case(cohort, case_id, model_path, sha256)

    def job(missing):
        return lambda progress: predict_volume(model, case, frozenset(missing), amp=AMP, on_progress=progress,
                                               normalised=normalised)  # fmt: skip

    prefetcher().want([((cohort, case_id, model_path, sha256, m), job(m)) for m in todo])
    return todo


@st.cache_data(max_entries=16, show_spinner="Predicting one slice...")
def preview_slice(cohort, case_id, model_path, sha256, missing: tuple[str, ...], index: int) -> np.ndarray:
    """Labels (X, Y) of one axial slice, computed alone (about a second on a CPU; then kept)."""
    model = load_model_cached(model_path, sha256)
    prepared = prepared_input(cohort, case_id, model_path, sha256, missing)
    case = load_case(cohort, case_id)
    with waited_for():
        return on_worker(lambda _: predict_slice(model, case, index, prepared=prepared, amp=AMP))


@st.cache_data(max_entries=8, show_spinner=False)
def case_view(cohort: str, case_id: str) -> dict:
    """What the explorer's viewer needs of a case, computed once (small):
    ``limits`` {sequence: (min, max, low, high)} window limits of each acquired sequence;
    ``centre`` the tumour's centre voxel (the volume's centre without a reference tumour);
    ``box`` the tumour's bounding box widened by 12 voxels (inclusive ranges), or None."""
    from core.figures import intensity_limits, tumour_box, tumour_centre
    from core.sequences import SEQUENCES

    case = load_case(cohort, case_id)
    limits = {s: intensity_limits(case.images[i]) for i, s in enumerate(SEQUENCES) if case.available[i]}
    tumour = case.labels > 0 if case.labels is not None else None
    return {"limits": limits, "centre": tumour_centre(case.labels, case.shape), "box": tumour_box(tumour, margin=12)}


def _digest(array: np.ndarray) -> str:
    """A short content hash of an array (a cache key: about 10 ms for a brain's label map)."""
    return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).hexdigest()


@st.cache_data(max_entries=48, show_spinner=False)
def _scores(case_id: str, labels_digest: str, reference_digest: str, num_classes: int, _labels: np.ndarray,
            _case: Case) -> dict:  # fmt: skip
    from core.io import scoring_reference
    from core.sequences import scorable_regions

    regions = scorable_regions(_case.label_scheme, num_classes)
    return evaluate(_labels, *scoring_reference(_case), regions)


def metrics_table(prediction: Prediction, case: Case, num_classes: int = 4) -> dict:
    """{region: RegionMetrics} of a prediction against the case's reference, for the regions a
    ``num_classes`` model and the case's labels allow (``core.sequences.scorable_regions``),
    scored on the case's own grid as in its files (``core.io.scoring_grid_words`` says which).
    Cached by case, the prediction's content and the reference's: two cohorts may share a case id."""
    reference = "" if case.labels is None else _digest(case.labels)
    return _scores(case.case_id, _digest(prediction.labels), reference, num_classes, prediction.labels, case)


@st.cache_resource(max_entries=8, show_spinner=False)
def _cleaned(case_id: str, labels_digest: str, run: tuple, _prediction: Prediction, _case: Case):
    from core.postprocess import clean_prediction

    cleaned, cleanup = clean_prediction(_prediction, _case)
    cleaned.labels.setflags(write=False)
    return cleaned, cleanup


def cleaned_prediction(prediction: Prediction, case: Case):
    """The prediction with its main lesions only (``core.postprocess.keep_main_lesions``) and the
    ``Cleanup`` saying what went; shared and cached by case, the prediction's content and its run
    (missing set, device, time: two runs may give the same labels), so the same prediction gives the
    same object."""
    run = (prediction.missing_name, prediction.device, prediction.seconds)
    return _cleaned(case.case_id, _digest(prediction.labels), run, prediction, case)


@st.cache_data(max_entries=4, show_spinner=False)
def _nifti(case_id: str, labels_digest: str, grid_digest: str, _labels: np.ndarray, _case: Case) -> bytes:
    from core.io import label_nifti_bytes

    return label_nifti_bytes(_labels, _case)


def prediction_nifti(prediction: Prediction, case: Case) -> bytes:
    """The prediction as .nii.gz bytes for download, cached by case, the prediction's content and the
    case's grid (its affine and shape: two cohorts may share a case id)."""
    grid = _digest(np.append(np.asarray(case.affine, np.float64).ravel(), case.shape))
    return _nifti(case.case_id, _digest(prediction.labels), grid, prediction.labels, case)


@st.cache_data(max_entries=16, show_spinner=False)
def training_log(model_path: str) -> pd.DataFrame:
    """The model's training_log.csv as a table (empty when absent)."""
    path = Path(model_path) / "training_log.csv"
    return pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["iteration", "loss"])


def model_card_text(model_path: str) -> str:
    path = Path(model_path) / "MODEL_CARD.md"
    return path.read_text() if path.is_file() else ""


@st.cache_resource(max_entries=2, show_spinner="Applying the acquisition changes...")
def shifted_case(cohort: str, case_id: str, changes: tuple, seed: int) -> Case:
    """The case with acquisition changes applied; ``changes`` is a tuple of
    (sequence, slice_mm, gamma, noise, bias_strength, misregistration: mm shift and degrees)."""
    from dataclasses import replace

    from core.synth.scanner import Acquisition, bias_coefficients, shift_case

    case = load_case(cohort, case_id)
    acquisitions = {
        sequence: Acquisition(
            slice_mm=slice_mm,
            gamma=gamma,
            noise=noise,
            bias=bias_coefficients(bias, seed),
            shift_mm=moved,
            rotate_deg=moved,
        )
        for sequence, slice_mm, gamma, noise, bias, moved in changes
    }
    images = shift_case(case.images, case.available, acquisitions, seed)
    images.setflags(write=False)
    return replace(case, images=images, case_id=f"{case_id} (shifted)")


def run_shifted_prediction(cohort, case_id, changes: tuple, seed: int, model_path, sha256, missing: tuple[str, ...],
                           on_progress=None) -> Prediction:  # fmt: skip
    """Prediction on the shifted case, cached beside the others."""
    model = load_model_cached(model_path, sha256)
    case = shifted_case(cohort, case_id, changes, seed)
    with waited_for():
        return _remember((cohort, case_id, changes, seed, model_path, sha256, missing), lambda: on_worker(
            lambda progress: predict_volume(model, case, frozenset(missing), amp=AMP, on_progress=progress),
            on_progress))  # fmt: skip


def cached_shifted_prediction(cohort, case_id, changes: tuple, seed: int, model_path, sha256,
                              missing: tuple[str, ...]) -> Prediction | None:  # fmt: skip
    """The prediction on the shifted case if it was computed in this app process, else None (never computes)."""
    return _recall((cohort, case_id, changes, seed, model_path, sha256, missing))


def demo_store() -> Path:
    """The bundled results (read only)."""
    return Path(os.environ.get("GBM_DEMO_STORE", ROOT / "data_samples" / "results.sqlite"))


def user_store() -> Path:
    """Where the app writes the user's own evaluations."""
    return Path(os.environ.get("GBM_STORE", ROOT / "results.sqlite"))


@st.cache_data(ttl=30, max_entries=4, show_spinner="Reading results...")
def results_table(path: str) -> pd.DataFrame:
    """The long results table of one store (empty when the file does not exist)."""
    from core.store import ResultStore

    if not Path(path).is_file():
        return pd.DataFrame()
    with ResultStore(path) as store:
        return store.table()


def cohort_results(source: str = "both") -> pd.DataFrame:
    """The results of ``source`` ("demo", "user" or "both"; core.store.RESULT_SOURCES), each row
    tagged with its source: the user's results never replace the demo results."""
    from core.store import combine_sources

    tables = {"demo": results_table(str(demo_store())), "user": results_table(str(user_store()))}
    return combine_sources(tables, source)


def all_results() -> pd.DataFrame:
    return cohort_results("both")


MAX_UPLOAD_MB = 200


def data_root() -> Path:
    """The only place the Your data page may read from (``GBM_DATA_ROOT``)."""
    return Path(os.environ.get("GBM_DATA_ROOT", ROOT / "user_data")).resolve()


def resolve_in_root(text: str) -> Path:
    """A user-typed path resolved inside the data root (links resolved).

    Only the path itself is checked here: pass ``root=data_root()`` to ``core.cases.inspect_path``
    and ``core.sweep.SweepConfig`` so that every file they read (a folder's links, a manifest's
    paths) is confined too.

    Raises:
        ValueError: the path leaves the data root or does not exist.
    """
    root = data_root()
    path = (root / text.strip()).resolve()
    # What to do about it: the page reads only below the root, which the server's owner chooses.
    remedy = (f"copy your case folders into {root}, or start the app with GBM_DATA_ROOT set to the folder "
              "that holds them (or use Upload one case)")  # fmt: skip
    if not path.is_relative_to(root):
        raise ValueError(f"{text!r} is outside the data root {root}: this page reads only below it; {remedy}")
    if not path.exists():
        raise ValueError(f"{text!r} does not exist under the data root {root}; {remedy}")
    return path
