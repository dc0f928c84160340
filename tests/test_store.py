"""Results store and sweeps: resume without duplicates, Dask, migration, export round trip."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage

from core.io import read_case
from core.model import build_model, save_model
from core.preprocess import fit_landmarks
from core.store import MIGRATIONS, NO_HOSPITAL, SCHEMA_VERSION, ResultStore, combine_sources
from core.sweep import SweepConfig, run_sweep
from tests.conftest import write_phantom_cohort

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "val")  # the phantom cohort has no test split


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """Three phantom cases and two small models (one 'sparsified' by name)."""
    root = tmp_path_factory.mktemp("grid")
    manifest = write_phantom_cohort(root / "cohort", n=3, size=36)
    case = read_case(manifest.parent / "P0")
    landmarks = fit_landmarks([(case.images, case.available)])
    models = []
    for seed, name in ((0, "A"), (1, "Ast")):
        torch.manual_seed(seed)
        folder = save_model(build_model("deepmedic-lite"), root / "models" / name,
                            {"name": name, "normalisation": {"landmarks": landmarks}})  # fmt: skip
        models.append(str(folder))
    return manifest, models


def test_acquired_and_simulated_sweeps_fill_the_store_once(grid, tmp_path):
    manifest, models = grid
    with ResultStore(tmp_path / "r.sqlite") as store:
        summary = run_sweep(store, SweepConfig(models, manifest, "acquired", splits=SPLITS))
        assert summary.units == 6 and summary.results_written == 6 and not summary.errors
        assert store.counts()["results"] == 6 * 3  # three regions each
        again = run_sweep(store, SweepConfig(models, manifest, "acquired", splits=SPLITS))
        assert again.units == 0 and again.skipped_done == 6
        simulated = run_sweep(store, SweepConfig(models, manifest, "simulated", combinations=8, splits=SPLITS))
        # "none" is already there from the acquired sweep (same key), 7 new combinations each.
        assert simulated.results_written == 2 * 3 * 7 and simulated.skipped_done == 6
        table = store.table()
    assert len(table) == 2 * 3 * 8 * 3
    assert set(table["missing"]) == {"none", "t1", "t2", "flair", "t1+t2", "t1+flair", "t2+flair", "t1+t2+flair"}
    assert not table.duplicated(["model", "patient_id", "missing", "region"]).any()
    labels = ResultStore(tmp_path / "r.sqlite").prediction(table["model_sha256"][0], table["case_key"][0], "none")
    assert labels.shape == (36, 36, 36) and labels.dtype == np.uint8


def test_sweep_progress_counts_predictions_within_each_case(grid, tmp_path):
    manifest, models = grid
    calls = []
    with ResultStore(tmp_path / "r.sqlite") as store:
        run_sweep(store, SweepConfig(models[:1], manifest, "simulated", combinations=8, splits=SPLITS),
                  on_progress=lambda done, total, words: calls.append((done, total, words)))  # fmt: skip
    # 3 complete cases x 8 combinations, one prediction at a time, in one process.
    assert [done for done, _, _ in calls] == list(range(3 * 8 + 1))
    assert {total for _, total, _ in calls} == {24}
    assert calls[5][2] == "P0, A" and calls[9][2] == "P1, A"  # the case and model being predicted


def test_dask_local_cluster_gives_the_same_results(grid, tmp_path):
    pytest.importorskip("dask.distributed")
    manifest, models = grid
    with ResultStore(tmp_path / "local.sqlite") as store:
        run_sweep(store, SweepConfig(models[:1], manifest, "acquired", splits=SPLITS))
        local = store.table()
    with ResultStore(tmp_path / "dask.sqlite") as store:
        summary = run_sweep(store, SweepConfig(models[:1], manifest, "acquired", splits=SPLITS, dask="local:2"))
        remote = store.table()
    assert summary.results_written == 3 and not summary.errors
    cols = ["patient_id", "missing", "region", "dice", "hd95", "volume_pred_ml"]
    pd.testing.assert_frame_equal(local[cols].reset_index(drop=True), remote[cols].reset_index(drop=True))


@pytest.mark.slow
def test_sweep_killed_with_sigkill_resumes_without_partial_or_duplicate_rows(grid, tmp_path):
    manifest, models = grid
    path = tmp_path / "r.sqlite"
    args = [sys.executable, "-m", "core", "evaluate", "--models", ",".join(models), "--cohort", str(manifest),
            "--mode", "simulated", "--splits", "train,val", "--workers", "1", "--store", str(path)]  # fmt: skip
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    written = 0
    while time.time() < deadline and process.poll() is None:
        time.sleep(0.3)
        if path.exists():
            try:
                written = sqlite3.connect(str(path)).execute("SELECT COUNT(*) FROM results").fetchone()[0]
            except sqlite3.OperationalError:
                written = 0
            if written >= 9:
                break
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 0 < written < 2 * 3 * 8 * 3, "kill it mid-sweep"
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["skipped_done"] > 0
    with ResultStore(path) as store:
        table = store.table()
    assert len(table) == 2 * 3 * 8 * 3
    per_unit = table.groupby(["model", "patient_id", "missing"]).size()
    assert (per_unit == 3).all()  # every result has all its regions: no partial writes


def test_schema_migration_keeps_old_rows(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(str(path), isolation_level=None)
    db.executescript(f"BEGIN; {MIGRATIONS[1]} PRAGMA user_version = 1; COMMIT;")
    db.execute("INSERT INTO models VALUES ('abc', 'BraTS', '{}')")
    db.execute("INSERT INTO cases VALUES ('p@1', 'p', '1', 'public', 'test', 'none', '{}')")
    db.execute("INSERT INTO results VALUES ('abc', 'p@1', 'none', 'tc', 'nan', '0.1.0', 0.8, 0.9, 3.0, 10, 11)")
    db.close()
    with ResultStore(path) as store:
        assert store.version == SCHEMA_VERSION == 5
        table = store.table()
        assert table.loc[0, "dice"] == 0.8 and pd.isna(table.loc[0, "seconds"])
        assert store.counts()["predictions"] == 0


def test_migration_5_names_one_thread_in_the_singular(tmp_path):
    path = tmp_path / "v4.sqlite"
    db = sqlite3.connect(str(path), isolation_level=None)
    script = " ".join(MIGRATIONS[v] for v in (1, 2, 3, 4))
    db.executescript(f"BEGIN; {script} PRAGMA user_version = 4; COMMIT;")
    db.execute("INSERT INTO models VALUES ('abc', 'BraTS', '{}')")
    db.execute("INSERT INTO cases VALUES ('p@1', 'p', '1', '1', 'test', 'none', '{}')")
    for missing, device in (("none", "CPU (1 threads)"), ("flair", "CPU (2 threads)"), ("t1", "GPU: H200 (1 threads)")):
        db.execute("INSERT INTO results (model_sha256, case_key, missing, region, empty_policy, code_version, dice, "
                   "device) VALUES ('abc', 'p@1', ?, 'tc', 'nan', '0.1.0', 0.8, ?)", (missing, device))  # fmt: skip
    db.close()
    with ResultStore(path) as store:
        devices = dict(store.db.execute("SELECT missing, device FROM results").fetchall())
    assert devices == {"none": "CPU (1 thread)", "flair": "CPU (2 threads)", "t1": "GPU: H200 (1 thread)"}


def test_export_round_trip_and_stats_cli(grid, tmp_path):
    manifest, models = grid
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        run_sweep(store, SweepConfig(models, manifest, "simulated", splits=SPLITS))
        expected = store.table()
    for suffix in (".csv", ".parquet"):
        out = tmp_path / f"results{suffix}"
        result = subprocess.run([sys.executable, "-m", "core", "export", "--store", str(path), "--out", str(out)],
                                cwd=ROOT, capture_output=True, text=True, check=True)  # fmt: skip
        assert json.loads(result.stdout)["rows"] == len(expected)
        back = pd.read_csv(out, dtype={"hospital": str}) if suffix == ".csv" else pd.read_parquet(out)
        pd.testing.assert_frame_equal(back[["model", "patient_id", "missing", "region", "dice"]],
                                      expected[["model", "patient_id", "missing", "region", "dice"]])  # fmt: skip
    out = tmp_path / "table.csv"
    result = subprocess.run([sys.executable, "-m", "core", "stats", "--store", str(path), "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, check=True)  # fmt: skip
    summary = json.loads(result.stdout)
    table = pd.read_csv(out)
    assert len(table) == 8 and list(table["model_a"].unique()) == ["Ast"]
    # The family is the testable rows only (2+ pairs with a non-zero difference); the others are named.
    assert summary["tests"] == int((table["n_nonzero"] >= 2).sum()) == int(table["tested"].sum())
    assert len(summary["left_out"]) == 8 - summary["tests"]
    assert list(table.columns) == ["model_a", "model_b", "missing", "n", "median_difference", "estimate", "ci_low",
                                   "ci_high", "p_value", "p_adjusted", "significant", "n_nonzero",
                                   "tested"]  # fmt: skip
    assert table.loc[~table["tested"], "p_adjusted"].isna().all()
    assert (table["n"] == 3).all()


@pytest.mark.slow
def test_evaluate_clean_stores_the_cleaned_results_as_a_model_of_their_own(tmp_path):
    """The bundled BraTS model on the demo's hospital 2 case, raw first (as the demo results are),
    then ``evaluate --clean``: the cleaned results come as the model BraTS+clean."""
    manifest, model = ROOT / "data_samples" / "manifest.csv", str(ROOT / "models" / "BraTS")
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        run_sweep(store, SweepConfig([model], manifest, "acquired", splits=(), hospitals=("2",), amp=True))
    args = [sys.executable, "-m", "core", "evaluate", "--models", model, "--cohort", str(manifest), "--splits", "all",
            "--hospitals", "2", "--workers", "1", "--amp", "--store", str(path), "--clean"]  # fmt: skip
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    # The raw result was there: only the cleaned one is new.
    assert summary["results_written"] == summary["cleaned_written"] == 1 and summary["skipped_done"] == 1
    with ResultStore(path) as store:
        table = store.table()
        sha, case_key, missing = table.loc[table["model"] == "BraTS", ["model_sha256", "case_key", "missing"]].iloc[0]
        assert set(table["model"]) == {"BraTS", "BraTS+clean"}
        assert set(table.loc[table["model"] == "BraTS+clean", "model_sha256"]) == {sha + "+clean"}
        raw = store.prediction(sha, case_key, missing)
        cleaned = store.prediction(sha + "+clean", case_key, missing)
    kept = cleaned > 0
    assert (cleaned[kept] == raw[kept]).all()  # labels are only ever dropped
    components, _ = ndimage.label(raw > 0, structure=np.ones((3, 3, 3)))
    dropped = np.unique(components[(raw > 0) & ~kept])
    assert len(dropped) and not kept[np.isin(components, dropped)].any()  # whole components go
    assert kept[components == np.bincount(components[raw > 0]).argmax()].all()  # the main lesion stays
    reference = read_case(ROOT / "data_samples" / "SYN_H2_0003").labels
    dice = table[table["region"] == "wt"].set_index("model")["dice"]
    for labels, name in ((raw, "BraTS"), (cleaned, "BraTS+clean")):
        a, b = labels > 0, reference > 0
        assert dice[name] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert json.loads(again.stdout)["results_written"] == 0


def test_clean_scores_the_stored_prediction_and_a_failed_clean_up_keeps_the_raw_results(grid, tmp_path, monkeypatch):
    import core.sweep
    from core.store import encode_labels

    manifest, models = grid
    with ResultStore(tmp_path / "r.sqlite") as store:
        run_sweep(store, SweepConfig(models[:1], manifest, "acquired", splits=SPLITS))
        # The stored prediction of P0 becomes a lesion deep inside plus a voxel in a corner, which no
        # prediction of the model would give: what the cleaned result scores shows which one was cleaned.
        sha, key = store.db.execute("SELECT model_sha256, case_key FROM results JOIN cases USING (case_key) "
                                    "WHERE patient_id = 'P0' LIMIT 1").fetchone()  # fmt: skip
        labels = np.zeros((36, 36, 36), np.uint8)
        labels[14:22, 14:22, 14:22] = 2
        labels[0, 0, 0] = 2
        header, blob = encode_labels(labels)
        store.db.execute("UPDATE predictions SET shape = ?, labels = ? WHERE model_sha256 = ? AND case_key = ?",
                         (header, blob, sha, key))  # fmt: skip
        raw_seconds, device = store.db.execute("SELECT seconds, device FROM results WHERE model_sha256 = ? AND "
                                               "case_key = ? LIMIT 1", (sha, key)).fetchone()  # fmt: skip
        summary = run_sweep(store, SweepConfig(models[:1], manifest, "acquired", splits=SPLITS, clean=True))
        assert summary.results_written == summary.cleaned_written == 3 and not summary.errors
        cleaned = store.prediction(sha + "+clean", key, "none")
        row = store.table().query("case_key == @key and model == 'A+clean' and region == 'wt'").iloc[0]
        # Only the timing of the predictions, not their cleaned scores again.
        assert store.timing_by_device()[device][0] == 3
    expected = labels.copy()
    expected[0, 0, 0] = 0
    np.testing.assert_array_equal(cleaned, expected)
    reference = read_case(manifest.parent / "P0").labels > 0
    assert row["dice"] == pytest.approx(
        2 * (reference & (expected > 0)).sum() / (reference.sum() + (expected > 0).sum())
    )
    assert row["device"] == device and raw_seconds <= row["seconds"] < raw_seconds + 5

    # Clean up failing on a case: its raw results are stored all the same, and the error is named.
    def fail(*args):
        raise RuntimeError("no brain")

    monkeypatch.setattr(core.sweep, "clean_labels", fail)
    with ResultStore(tmp_path / "fresh.sqlite") as store:
        summary = run_sweep(store, SweepConfig(models[:1], manifest, "acquired", splits=SPLITS, clean=True))
        assert summary.results_written == 3 and summary.cleaned_written == 0
        assert len(summary.errors) == 3 and "Clean up: RuntimeError: no brain" in summary.errors[0]
        assert set(store.table()["model"]) == {"A"}


def test_file_digests_are_remembered_until_a_file_changes(grid, tmp_path):
    import os

    from core.cases import find_cases
    from core.store import files_hash

    manifest, _ = grid
    source = find_cases(manifest)[0]
    with ResultStore(tmp_path / "r.sqlite") as store:
        first = files_hash(source, store)
        assert first == files_hash(source)  # the same digest as reading every byte
        assert store.counts()["file_hashes"] == 1 and files_hash(source, store) == first
        t2 = source.paths["t2"]
        data = t2.read_bytes()
        t2.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        os.utime(t2, ns=(time.time_ns(), time.time_ns() + 10**9))
        try:
            assert files_hash(source, store) != first
        finally:
            t2.write_bytes(data)


def test_prediction_encoding_round_trips_and_reads_old_rows():
    import zlib

    from core.store import decode_labels, encode_labels

    labels = np.zeros((40, 50, 30), np.uint8)
    labels[10:20, 5:45, 12:13] = 2
    labels[15, 20, 12] = 3
    header, blob = encode_labels(labels)
    assert json.loads(header)["box"] == [[10, 20], [5, 45], [12, 13]]
    np.testing.assert_array_equal(decode_labels(header, blob), labels)
    empty = np.zeros((4, 5, 6), np.uint8)
    np.testing.assert_array_equal(decode_labels(*encode_labels(empty)), empty)
    # Rows written by schema version 2 stored the whole grid with zlib under a plain shape.
    np.testing.assert_array_equal(decode_labels(json.dumps([40, 50, 30]), zlib.compress(labels.tobytes())), labels)


def test_a_first_pass_takes_the_first_cases_of_each_hospital(grid, tmp_path):
    manifest, models = grid
    with ResultStore(tmp_path / "r.sqlite") as store:
        first = run_sweep(store, SweepConfig(models, manifest, "acquired", splits=SPLITS, per_hospital=2))
        assert first.units == 2 * 2 and set(store.table()["patient_id"]) == {"P0", "P1"}
        rest = run_sweep(store, SweepConfig(models, manifest, "acquired", splits=SPLITS))
        assert rest.units == 2 and rest.skipped_done == 4 and set(store.table()["patient_id"]) == {"P0", "P1", "P2"}


def test_trim_keeps_the_first_patients_label_maps_and_every_metric(grid, tmp_path):
    manifest, models = grid
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        run_sweep(store, SweepConfig(models, manifest, "acquired", splits=SPLITS))
        results = store.counts()["results"]
        assert store.trim_predictions(keep_per_hospital=2) == 2  # 3 patients of one hospital, 2 models: drop P2's
        kept = {row[0] for row in store.db.execute("SELECT DISTINCT c.patient_id FROM predictions JOIN cases c "
                                                   "USING (case_key)")}  # fmt: skip
        assert kept == {"P0", "P1"} and store.counts()["results"] == results


def test_trim_keep_models_drops_the_results_of_other_weights(grid, tmp_path):
    """A retrained model keeps its name but not its weights: its old rows must go, the rest stay, with
    the kept model's results after Clean up."""
    manifest, models = grid
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        run_sweep(store, SweepConfig(models, manifest, "acquired", splits=SPLITS, clean=True))
        per_model = dict(store.db.execute("SELECT m.name, COUNT(*) FROM results r JOIN models m "
                                          "ON m.sha256 = r.model_sha256 GROUP BY m.name"))  # fmt: skip
        maps = dict(store.db.execute("SELECT m.name, COUNT(*) FROM predictions p JOIN models m "
                                     "ON m.sha256 = p.model_sha256 GROUP BY m.name"))  # fmt: skip
    assert per_model == {"A": 9, "Ast": 9, "A+clean": 9, "Ast+clean": 9}  # 3 cases x 3 regions
    assert maps == {"A": 3, "Ast": 3, "A+clean": 3, "Ast+clean": 3}
    result = subprocess.run([sys.executable, "-m", "core", "trim", "--store", str(path), "--keep-models", models[0]],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["models_kept"] == ["A"]
    assert report["dropped_with_other_weights"] == {"predictions": 6, "results": 18, "models": 2}
    with ResultStore(path) as store:
        table = store.table()
    assert set(table["model"]) == {"A", "A+clean"} and len(table) == 18
    result = subprocess.run([sys.executable, "-m", "core", "trim", "--store", str(path), "--keep-models",
                             str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode != 0 and "no model here" in result.stderr + result.stdout


def _rows(patient, key, hospital, dice, model="BraTS", sha="sha-a"):
    """Result rows of one case (tc, complete) as ResultStore.table() gives them."""
    return {"model": model, "patient_id": patient, "hospital": hospital, "split": "test", "acquired_missing": "none",
            "missing": "none", "region": "tc", "dice": dice, "empty_policy": "nan", "model_sha256": sha,
            "case_key": key}  # fmt: skip


def test_user_results_never_replace_the_demo_results():
    # The demo store: P0 and P1 at hospital 1. The user's store: a copy of P0 (same content hash,
    # evaluated from a folder without a manifest, so no hospital) and a new case Q.
    demo = pd.DataFrame([_rows("P0", "P0@h0", "1", 0.8), _rows("P1", "P1@h1", "1", 0.7)])
    user = pd.DataFrame([_rows("P0", "P0@h0", "", 0.8), _rows("Q", "Q@hq", None, 0.6),
                         _rows("P1", "P1@changed", "", 0.5)])  # fmt: skip
    tables = {"demo": demo, "user": user}
    only_demo = combine_sources(tables, "demo")
    assert only_demo[["patient_id", "hospital", "dice"]].values.tolist() == [["P0", "1", 0.8], ["P1", "1", 0.7]]
    assert set(only_demo["source"]) == {"demo results"}
    only_user = combine_sources(tables, "user")
    assert only_user["hospital"].tolist() == [NO_HOSPITAL] * 3 and set(only_user["source"]) == {"your data"}
    both = combine_sources(tables, "both")
    # P0 counted once (the demo row); Q kept; the changed P1 is another case, renamed so tests never pair it.
    assert both[["patient_id", "hospital", "source"]].values.tolist() == [
        ["P0", "1", "demo results"], ["P1", "1", "demo results"], ["Q", NO_HOSPITAL, "your data"],
        ["P1 (your data)", NO_HOSPITAL, "your data"]]  # fmt: skip
    assert combine_sources({"demo": demo, "user": pd.DataFrame()}, "user").empty
    with pytest.raises(ValueError, match="source must be one of"):
        combine_sources(tables, "mine")
    # The user's P0 evaluated with Clean up too: its raw row (the prediction the cleaned one scores)
    # replaces the demo's, so a comparison of the two pairs one prediction; P1 stays the demo's.
    user = pd.DataFrame([_rows("P0", "P0@h0", "", 0.79), _rows("P0", "P0@h0", "", 0.85, "BraTS+clean", "sha-a+clean")])
    both = combine_sources({"demo": demo, "user": user}, "both")
    assert both[["patient_id", "model", "dice", "source"]].values.tolist() == [
        ["P1", "BraTS", 0.7, "demo results"], ["P0", "BraTS", 0.79, "your data"],
        ["P0", "BraTS+clean", 0.85, "your data"]]  # fmt: skip


def _open_new_store(path: str, barrier) -> str:
    """Open a store once every process is ready; "" or the error."""
    try:
        barrier.wait(timeout=60)
        with ResultStore(path) as store:
            assert store.version == SCHEMA_VERSION
            store.counts()
        return ""
    except Exception as exc:  # reported back to the test
        return f"{type(exc).__name__}: {exc}"


@pytest.mark.slow
def test_processes_opening_one_new_store_at_once_all_succeed(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # fresh interpreters, as separate commands would be
    with context.Pool(4) as pool:
        for round_number in range(5):
            path = str(tmp_path / f"new{round_number}.sqlite")
            barrier = context.Manager().Barrier(4)
            errors = pool.starmap(_open_new_store, [(path, barrier)] * 4)
            assert errors == [""] * 4, errors
            with ResultStore(path) as store:
                tables = {row[0] for row in store.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                assert tables == {"models", "cases", "results", "predictions", "file_hashes"}


def test_migration_is_one_transaction_and_reruns_as_a_no_op(tmp_path):
    path = tmp_path / "r.sqlite"
    ResultStore(path).close()
    with ResultStore(path) as store:  # a second open finds it done: nothing to apply
        store.migrate()
        assert store.version == SCHEMA_VERSION
    db = sqlite3.connect(str(path))
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    from core.store import StoreError

    with pytest.raises(StoreError, match="schema version 99 is newer"):
        ResultStore(path)


@pytest.mark.slow
def test_two_sweeps_and_the_app_writing_one_store_lose_no_row_and_write_none_twice(grid, tmp_path):
    manifest, models = grid
    path = tmp_path / "shared.sqlite"
    args = [sys.executable, "-m", "core", "evaluate", "--models", ",".join(models), "--cohort", str(manifest),
            "--mode", "simulated", "--splits", "train,val", "--workers", "1", "--store", str(path)]  # fmt: skip
    sweeps = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]  # fmt: skip
    with ResultStore(path) as store:  # the app's Your data page, in this process, at the same time
        app = run_sweep(store, SweepConfig(models, manifest, "simulated", splits=SPLITS, root=manifest.parent))
    outputs = [sweep.communicate(timeout=600) for sweep in sweeps]
    for sweep, (_, err) in zip(sweeps, outputs):
        assert sweep.returncode == 0, err
    written = app.results_written + sum(json.loads(out)["results_written"] for out, _ in outputs)
    with ResultStore(path) as store:
        table = store.table()
    units = 2 * 3 * 8  # models x cases x combinations
    assert written == units and not app.errors  # each result written by exactly one writer
    assert len(table) == units * 3 and not table.duplicated(["model", "patient_id", "missing", "region"]).any()


def test_the_store_answers_what_the_app_asks(grid, tmp_path):
    from core.cases import find_cases
    from core.store import case_key, files_hash, source_key

    manifest, models = grid
    with ResultStore(tmp_path / "r.sqlite") as store:
        assert store.first_patient_with_predictions(1) is None and store.case_records() == []
        run_sweep(store, SweepConfig(models[:1], manifest, "simulated", combinations=8, splits=("val",)))
        run_sweep(store, SweepConfig(models[:1], manifest, "acquired", splits=("train",), keep_predictions=False))
        source = next(s for s in find_cases(manifest) if s.case_id == "P2")  # the validation case
        key = source_key(source)
        assert key == case_key("P2", files_hash(source)) == f"P2@{files_hash(source, store)}"
        found = store.stored_prediction(store.table()["model_sha256"][0], key, frozenset({"t1", "flair"}))
        table = store.table()
        row = table[(table["case_key"] == key) & (table["missing"] == "t1+flair")].iloc[0]
        assert found.seconds == pytest.approx(row["seconds"]) and found.device == row["device"]
        assert np.array_equal(found.labels, store.prediction(row["model_sha256"], key, "t1+flair"))
        assert store.stored_prediction(row["model_sha256"], key, frozenset({"t1c"})) is None  # never evaluated
        assert store.has_prediction(row["model_sha256"], key, frozenset({"t1", "flair"}))
        assert not store.has_prediction(row["model_sha256"], key, frozenset({"t1c"}))
        p0 = source_key(next(s for s in find_cases(manifest) if s.case_id == "P0"))
        assert not store.has_prediction(row["model_sha256"], p0, frozenset())  # metrics only, no label map
        # P2 has all 8 combinations cached; P0 and P1 only their metrics.
        assert store.first_patient_with_predictions(8) == "P2" and store.first_patient_with_predictions(9) is None
        records = sorted(store.case_records(), key=lambda r: r["patient_id"])
        assert [(r["patient_id"], r["hospital"], r["split"], r["acquired_missing"]) for r in records] == [
            ("P0", "public", "train", "none"),
            ("P1", "public", "train", "none"),
            ("P2", "public", "val", "none"),
        ]
        assert records[0]["meta"]["origin"] == "manifest.csv line 2"
        ((device, (count, seconds, first, last)),) = store.timing_by_device().items()
        assert device == row["device"] and count == 8 + 2 and seconds > 0 and last >= first


def test_a_two_class_model_is_scored_on_the_tumour_core_only(grid, tmp_path):
    manifest, models = grid
    case = read_case(manifest.parent / "P0")
    landmarks = fit_landmarks([(case.images, case.available)])
    folder = save_model(build_model("deepmedic-lite", num_classes=2), tmp_path / "TC",
                        {"name": "TC", "normalisation": {"landmarks": landmarks}})  # fmt: skip
    with ResultStore(tmp_path / "r.sqlite") as store:
        summary = run_sweep(store, SweepConfig([str(folder)], manifest, splits=("val",)))
        assert summary.results_written == 1 and not summary.errors
        assert store.table()["region"].tolist() == ["tc"]


def test_a_case_without_a_manifest_counts_as_public_but_is_stored_without_a_hospital(grid, tmp_path):
    import shutil

    manifest, models = grid
    shutil.copytree(manifest.parent / "P0", tmp_path / "loose" / "P0")
    with ResultStore(tmp_path / "r.sqlite") as store:
        # No split: a sweep's DEFAULT_SPLIT (test); no hospital: chosen as DEFAULT_HOSPITAL (public).
        summary = run_sweep(store, SweepConfig(models[:1], tmp_path / "loose", hospitals=("public",)))
        assert summary.results_written == 1
        assert [(r["hospital"], r["split"]) for r in store.case_records()] == [("", "")]  # as given: nothing
        assert combine_sources({"user": store.table()}, "user")["hospital"].unique().tolist() == [NO_HOSPITAL]


def test_a_sweep_config_round_trips_and_refuses_an_unknown_mode():
    config = SweepConfig(["m/A", Path("m/B")], Path("cohort"), "simulated", 15, splits=["test"], hospitals=["1"])
    assert config.model_paths == ("m/A", "m/B") and config.cohort == "cohort" and config.hospitals == ("1",)
    assert SweepConfig.from_dict(config.to_dict()) == config
    assert hash(config) == hash(SweepConfig.from_dict(json.loads(json.dumps(config.to_dict()))))
    with pytest.raises(ValueError, match="mode must be"):
        SweepConfig(("m",), "cohort", "sometimes")


def test_a_version_3_store_gains_the_runtime_and_not_applicable_rows(tmp_path):
    from core.metrics import RegionMetrics
    from core.store import ResultKey

    path = tmp_path / "v3.sqlite"
    db = sqlite3.connect(str(path), isolation_level=None)
    script = " ".join(MIGRATIONS[v] for v in (1, 2, 3))
    db.executescript(f"BEGIN; {script} PRAGMA user_version = 3; COMMIT;")
    db.execute("INSERT INTO models VALUES ('abc', 'BraTS', '{}')")
    db.execute("INSERT INTO models VALUES ('def', 'Onnx', '{}')")
    db.execute("INSERT INTO cases VALUES ('p@1', 'p', '1', '1', 'test', 'none', '{}')")
    db.execute("INSERT INTO results VALUES ('abc', 'p@1', 'none', 'tc', 'nan', '0.1.0', 0.8, 0.9, 3.0, 10, 11, 2.0, "
               "'CPU', 1.0)")  # fmt: skip
    db.close()
    with ResultStore(path) as store:
        assert store.version == SCHEMA_VERSION
        old = store.table()
        # Rows before version 4 are the native engine's, without rewriting them.
        assert old.loc[0, "runtime"] == "torch" and old.loc[0, "applicable"] == 1 and old.loc[0, "dice"] == 0.8
        metrics = {"tc": RegionMetrics("tc", 0.7, 0.8, 4.0, 9.0, 11.0)}
        assert store.write(ResultKey("def", "p@1", "none"), metrics, 3.0, "CPU", runtime="onnxruntime 1 (CPU)")
        key = ResultKey("def", "p@1", "flair")
        assert store.write_not_applicable(key, ["tc", "wt"], "onnxruntime 1 (CPU)")
        assert not store.write_not_applicable(key, ["tc", "wt"])  # written once, like any result
        assert store.done([key]) == {key}  # a rerun does not try it again
        table = store.table()
        skipped = table[table["missing"] == "flair"]
        assert len(skipped) == 2 and (skipped["applicable"] == 0).all() and skipped["dice"].isna().all()
        assert table.loc[table["model"] == "Onnx", "runtime"].eq("onnxruntime 1 (CPU)").all()
        timing = store.timing_by_runtime()
        assert timing == {("BraTS", "torch"): (1, 2.0, 2.0), ("Onnx", "onnxruntime 1 (CPU)"): (1, 3.0, 3.0)}
        assert store.forget_file_hashes() == 0
