"""The explorer's background worker (ui/prefetch.py): order, cancellation, waiting, the page."""

from __future__ import annotations

import threading
import time

import pytest

from tests.test_app import explorer_data  # noqa: F401 (fixture: a phantom cohort and a tiny model)
from ui.prefetch import Prefetcher


def worker():
    kept: dict = {}
    return Prefetcher(keep=kept.__setitem__, has=kept.__contains__), kept


def steps(value, n=1, pause=0.0, started=None, log=None):
    """A job of ``n`` progress steps returning ``value``."""

    def compute(progress):
        if started is not None:
            started.set()
        for i in range(n):
            time.sleep(pause)
            progress(i + 1, n, "step")
        if log is not None:
            log.append(value)
        return value

    return compute


def test_jobs_run_first_first_and_what_is_kept_is_not_computed_again():
    prefetcher, kept = worker()
    log = []
    kept["b"] = "old b"
    prefetcher.want([("a", steps("A", log=log)), ("b", steps("B", log=log)), ("c", steps("C", log=log))])
    assert prefetcher.idle(10)
    assert log == ["A", "C"] and kept == {"a": "A", "b": "old b", "c": "C"}
    assert list(prefetcher.finished) == ["a", "c"]


def test_new_wishes_replace_the_queue_and_the_queue_is_bounded():
    prefetcher, kept = worker()
    gate = threading.Event()
    started = threading.Event()

    def blocked(progress):
        started.set()
        gate.wait(10)
        return "first"

    prefetcher.want([("first", blocked)])
    assert started.wait(10)
    prefetcher.want([(k, steps(k)) for k in "abcdef"])
    assert prefetcher.pending() == ["first", "a", "b", "c", "d"]  # at most four queued
    prefetcher.want([("x", steps("x"))])
    assert prefetcher.pending() == ["first", "x"]
    gate.set()
    assert prefetcher.idle(10) and set(kept) == {"first", "x"}


def test_a_foreground_prediction_cancels_another_running_job_and_holds_the_queue():
    prefetcher, kept = worker()
    started = threading.Event()
    prefetcher.want([("slow", steps("S", n=200, pause=0.01, started=started)), ("next", steps("N"))])
    assert started.wait(10)
    with prefetcher.foreground("other"):
        deadline = time.monotonic() + 5
        while "slow" in prefetcher.pending() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert prefetcher.pending() == ["next"]  # cancelled at its next step, nothing started meanwhile
        time.sleep(0.2)
        assert prefetcher.pending() == ["next"] and "slow" not in kept
    assert prefetcher.idle(10)
    assert kept == {"next": "N"} and list(prefetcher.finished) == ["next"]


def test_a_foreground_prediction_of_the_running_job_waits_for_it_with_its_progress():
    prefetcher, kept = worker()
    started, seen_first = threading.Event(), threading.Event()

    def gated(progress):  # stays at its first step until the foreground has seen it
        started.set()
        progress(1, 3, "step")
        seen_first.wait(10)
        progress(2, 3, "step")
        return "S"

    prefetcher.want([("same", gated)])
    assert started.wait(10)
    seen = []

    def on_progress(done, total, message):
        seen.append((done, total))
        if done == 1:
            seen_first.set()

    with prefetcher.foreground("same", on_progress=on_progress):
        assert kept == {"same": "S"}  # finished, not cancelled: the caller finds it kept
    assert (1, 3) in seen and len(seen) == len(set(seen))  # passed on, each step once


def test_a_rerun_raised_by_the_pages_progress_callback_does_not_stop_the_worker():
    prefetcher, kept = worker()
    started, release = threading.Event(), threading.Event()

    def slow(progress):
        started.set()
        progress(1, 2, "step")
        release.wait(10)
        return "S"

    prefetcher.want([("same", slow)])
    assert started.wait(10)

    def rerun(done, total, message):  # what a Streamlit widget call does once the user moved on
        raise RuntimeError("rerun")

    try:
        with prefetcher.foreground("same", on_progress=rerun):
            pass
    except RuntimeError:
        pass
    release.set()
    prefetcher.want([("next", steps("N"))])
    assert prefetcher.idle(10) and kept == {"same": "S", "next": "N"}


def test_a_failing_guess_is_dropped_and_the_worker_goes_on():
    prefetcher, kept = worker()

    def broken(progress):
        raise ValueError("unreadable")

    prefetcher.want([("bad", broken), ("good", steps("G"))])
    assert prefetcher.idle(10) and kept == {"good": "G"}


def test_a_call_runs_on_the_workers_thread_before_the_queue_with_its_progress_passed_on():
    prefetcher, kept = worker()
    started, release = threading.Event(), threading.Event()

    def blocked(progress):
        started.set()
        release.wait(10)
        return "first"

    prefetcher.want([("first", blocked), ("queued", steps("Q"))])
    assert started.wait(10)
    seen, threads = [], []

    def compute(progress):
        threads.append(threading.current_thread().name)
        for i in range(3):
            progress(i + 1, 3, "step")
        return 42

    release.set()
    with prefetcher.foreground("other"):  # the running job is settled first
        assert prefetcher.call(compute, lambda *p: seen.append(p)) == 42
        assert prefetcher.pending() == ["queued"]  # the queue waits for the foreground
    assert threads == ["prefetch"] and seen[-1] == (3, 3, "step")
    assert prefetcher.idle(10) and set(kept) == {"first", "queued"}

    def fails(progress):
        raise ValueError("no such sequence")

    with pytest.raises(ValueError, match="no such sequence"):
        prefetcher.call(fails)
    assert prefetcher.call(lambda progress: "still working") == "still working"
    prefetcher.close()
    assert prefetcher.call(lambda progress: threading.current_thread().name) == threading.current_thread().name


def test_a_call_whose_waiter_leaves_is_given_up_at_its_next_step():
    prefetcher, _ = worker()
    reached = []

    def long(progress):
        for i in range(200):
            time.sleep(0.01)
            reached.append(i)
            progress(i + 1, 200, "step")
        return "done"

    def leave(done, total, message):
        if done >= 3:
            raise RuntimeError("rerun")

    with pytest.raises(RuntimeError, match="rerun"):
        prefetcher.call(long, leave)
    deadline = time.monotonic() + 10
    while prefetcher.call(lambda progress: len(reached)) != len(reached) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(reached) < 200  # stopped early; the worker serves the next call
    prefetcher.close()


def test_the_explorer_prepares_the_switches_one_away_in_the_background(explorer_data, monkeypatch):  # noqa: F811
    from streamlit.testing.v1 import AppTest

    import ui.data
    from tests.test_app import ROOT

    monkeypatch.setenv("GBM_PREFETCH", "1")
    at = AppTest.from_file(str(ROOT / "views" / "explorer.py"), default_timeout=120)
    at.session_state["live_run"] = True
    at.run()  # the case as acquired (complete), computed on opening
    assert not at.exception, at.exception
    assert any("Getting ready in the background" in c.value and "missing FLAIR" in c.value for c in at.caption)
    assert ui.data.prefetcher().idle(120)
    cohort = str(ui.data.demo_cohort())
    model = next(iter(ui.data.available_models().values()))
    kept = {key[-1] for key in ui.data._predictions() if key[:2] == (cohort, "P0")}
    assert {("flair",), ("t2",), ("t1",)} <= kept
    prefetched = ui.data._predictions()[(cohort, "P0", model["path"], model["weights_sha256"], ("t2",))]
    at.toggle(key="use_t2_P0").set_value(False).run()  # the switch finds the background's answer
    assert not at.exception, at.exception
    assert any("computed already" in c.value for c in at.caption)
    assert ui.data.cached_prediction(cohort, "P0", model["path"], model["weights_sha256"], ("t2",)) is prefetched
    assert ui.data.prefetcher().idle(120)  # what the switch queued, done before the next test


def test_a_switch_to_what_the_worker_is_computing_waits_for_it_instead_of_a_preview(explorer_data, monkeypatch):  # noqa: F811
    from streamlit.testing.v1 import AppTest

    import ui.data
    from core.infer import predict_volume
    from tests.test_app import ROOT

    monkeypatch.setenv("GBM_PREFETCH", "1")
    at = AppTest.from_file(str(ROOT / "views" / "explorer.py"), default_timeout=120)
    at.session_state["live_run"] = True
    at.run()
    assert not at.exception, at.exception
    assert ui.data.prefetcher().idle(120)
    cohort = str(ui.data.demo_cohort())
    model = next(iter(ui.data.available_models().values()))
    key = (cohort, "P0", model["path"], model["weights_sha256"], ("t1", "t2"))  # two switches away: not prepared
    assert key not in ui.data._predictions()
    answer = predict_volume(ui.data.load_model_cached(model["path"], model["weights_sha256"]),
                            ui.data.load_case(cohort, "P0"), frozenset({"t1", "t2"}))  # fmt: skip
    started, release = threading.Event(), threading.Event()

    def slow(progress):  # the worker's job for that combination, held until the page waits
        started.set()
        progress(0, 2, "slab")
        release.wait(30)
        progress(1, 2, "slab")
        return answer

    previews = []
    monkeypatch.setattr(ui.data, "preview_slice", lambda *a, **k: previews.append(a))
    waited = ui.data.waited_for

    def waiting(wanted=None, on_progress=None):  # the job finishes only once the page waits for it
        if wanted == key:
            release.set()
        return waited(wanted, on_progress)

    monkeypatch.setattr(ui.data, "waited_for", waiting)
    ui.data.prefetcher().want([(key, slow)])
    assert started.wait(30) and ui.data.being_prepared(*key)
    at.toggle(key="use_t1_P0").set_value(False)
    at.toggle(key="use_t2_P0").set_value(False).run()
    assert not at.exception, at.exception
    assert previews == []  # no slice preview: it would have cancelled the job and started again
    assert ui.data.cached_prediction(*key) is answer  # the page showed the worker's answer
    assert not ui.data.being_prepared(*key)
    assert ui.data.prefetcher().idle(120)


def test_without_prefetch_the_explorer_queues_nothing(explorer_data):  # noqa: F811
    from streamlit.testing.v1 import AppTest

    import ui.data
    from tests.test_app import ROOT

    at = AppTest.from_file(str(ROOT / "views" / "explorer.py"), default_timeout=120)
    at.session_state["live_run"] = True
    at.run()  # GBM_PREFETCH=0 (the fixture): the whole brain as acquired, and nothing else
    assert not at.exception, at.exception
    assert not any("Getting ready in the background" in c.value for c in at.caption)
    cohort = str(ui.data.demo_cohort())
    assert [key[-1] for key in ui.data._predictions() if key[:2] == (cohort, "P0")] == [()]


def test_running_names_the_job_being_computed_and_not_one_being_cancelled():
    prefetcher, _ = worker()
    started, release = threading.Event(), threading.Event()

    def held(progress):
        started.set()
        release.wait(10)
        progress(1, 2, "step")  # cancelled here when asked to
        return "x"

    assert prefetcher.running() is None
    prefetcher.want([(("a",), held)])
    assert started.wait(10) and prefetcher.running() == ("a",)
    stop = threading.Thread(target=lambda: prefetcher.foreground().__enter__())
    stop.start()  # someone waits for other work: the job is cancelled at its next step
    deadline = time.monotonic() + 10
    while prefetcher.running() is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert prefetcher.running() is None
    release.set()
    stop.join(10)
    prefetcher.close()


def test_close_cancels_the_running_job_and_ends_the_thread():
    prefetcher, kept = worker()
    started = threading.Event()
    prefetcher.want([("slow", steps("S", n=500, pause=0.01, started=started)), ("next", steps("N"))])
    assert started.wait(10)
    prefetcher.close()
    assert not prefetcher._thread.is_alive() and kept == {}


def test_the_worker_is_not_asked_for_what_a_results_store_holds(explorer_data, monkeypatch):  # noqa: F811
    import os

    import ui.data
    from core.store import ResultStore
    from core.sweep import SweepConfig, run_sweep

    cohort = str(ui.data.demo_cohort())
    model = next(iter(ui.data.available_models().values()))
    with ResultStore(os.environ["GBM_DEMO_STORE"]) as store:
        run_sweep(store, SweepConfig((model["path"],), cohort, "simulated", combinations=8, splits=("train",)))
        table = store.table()
    held = {tuple(m.split("+")) if m else () for m in table[table["patient_id"] == "P0"]["missing"]}
    assert len(held) == 8 and ("t1c",) not in held  # the 8 combinations keep T1c
    asked = [("t1c",), ("t1",), ("t1c", "flair"), ("t2", "flair")]
    assert ui.data.stored_combinations(cohort, "P0", model["weights_sha256"], asked) == {("t1",), ("t2", "flair")}
    monkeypatch.setenv("GBM_PREFETCH", "1")
    queued = ui.data.prefetch(cohort, "P0", model["path"], model["weights_sha256"], asked)
    assert queued == [("t1c",), ("t1c", "flair")]
    assert ui.data.prefetcher().idle(120)
