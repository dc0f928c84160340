"""Real browser: start `streamlit run app.py`, drive Debian's Chromium with Playwright."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.browser, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def user_dirs(tmp_path_factory):
    """A data root, a user results store and a case cache of the test's own: nothing is written into the repo."""
    base = tmp_path_factory.mktemp("user")
    (base / "data").mkdir()
    return {"GBM_DATA_ROOT": base / "data", "GBM_STORE": base / "results.sqlite", "GBM_CASE_CACHE": base / "cases"}


@pytest.fixture(scope="module")
def app_url(user_dirs):
    port = free_port()
    env = dict(os.environ, GBM_DEMO_COHORT=str(ROOT / "data_samples"), **{k: str(v) for k, v in user_dirs.items()})
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true",
         "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],  # an edit elsewhere in the tree must not raise "Source file changed"
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("streamlit did not start: " + process.stdout.read1().decode())
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def page(app_url):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian chromium is required (make test installs it when root)"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(60_000)
        yield page
        browser.close()


def wait_idle(page) -> None:
    """Wait until the app has finished its run (Streamlit's running indicator is gone)."""
    page.wait_for_timeout(500)
    page.wait_for_function("() => !document.querySelector(\"[data-testid='stStatusWidget']\")", timeout=300_000)


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the select box labelled ``label``."""
    page.get_by_test_id("stSelectbox").filter(has_text=label).click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_idle(page)


def metric_values(page) -> list[str]:
    """The metric values on screen once Streamlit has dropped the elements of the previous run
    (for a moment after a rerun, stale copies stand beside the new ones)."""
    page.wait_for_function("() => !document.querySelector(\"[data-stale='true']\")", timeout=60_000)
    return page.locator("[data-testid='stMetricValue']").all_inner_texts()


def test_explorer_switching_flair_off_changes_the_metrics(app_url, page):
    page.goto(app_url + "/explorer")
    page.get_by_role("heading", name="Patient explorer").wait_for()
    page.get_by_text("Dice").first.wait_for(timeout=300_000)  # live: the model ran (or its run was stored)
    complete = metric_values(page)
    assert len(complete) == 12  # Dice, sensitivity, HD95, volume for three regions
    page.locator("label").filter(has_text="FLAIR").first.click()
    page.get_by_text("As acquired vs current").wait_for(timeout=300_000)
    without_flair = metric_values(page)
    assert without_flair != complete
    assert page.locator("[data-testid='stMetricDelta']").count() >= 9  # change against complete data


def test_every_page_opens(app_url, page):
    for path, heading in (("", "Glioblastoma robustness explorer"), ("hospitals", "Hospitals"),
                          ("missing", "Missing sequences"), ("statistics", "Statistics"),
                          ("lab", "Domain-shift lab"), ("models", "Models"), ("cases", "Cases"),
                          ("your_data", "Your data")):  # fmt: skip
        page.goto(f"{app_url}/{path}")
        page.get_by_role("heading", name=heading).first.wait_for()
        assert page.locator("[data-testid='stException']").count() == 0, path
        # Opened by its address, a page keeps the app's navigation (titles, not file names).
        sidebar = page.locator("[data-testid='stSidebarNav']").inner_text()
        assert "Domain-shift lab" in sidebar and "Your data" in sidebar, sidebar
        assert "your data" not in sidebar and "explorer\n" not in sidebar.replace("Patient explorer\n", ""), sidebar


def test_home_and_cases_in_a_real_browser(app_url, page):
    page.goto(app_url)
    page.get_by_role("heading", name="Glioblastoma robustness explorer").wait_for()
    assert page.get_by_text("Not a medical device").is_visible()
    page.get_by_role("link", name="Cases").click()
    page.get_by_role("heading", name="Cases").wait_for()
    image = page.locator("[data-testid='stImage'] img").first
    image.wait_for()
    assert image.evaluate("img => img.naturalWidth") > 100
    page.get_by_text("SYN_PUB_0100 · T1c · axial").wait_for()


def test_lab_results_stay_when_the_slice_moves(app_url, page):
    page.goto(app_url + "/lab")
    page.get_by_role("heading", name="Domain-shift lab").wait_for()
    wait_idle(page)
    choose(page, "Model B", "BraTS")  # one model: one whole-brain run keeps the test short
    page.get_by_role("button", name="Run BraTS on the shifted case").click()
    table = page.get_by_test_id("stDataFrame")
    table.wait_for(timeout=300_000)
    wait_idle(page)
    dice = metric_values(page)
    assert len(dice) == 3  # tumour core, whole tumour, enhancing: shifted, with the change as acquired
    slider = page.get_by_test_id("stSlider").filter(has_text="Coronal slice")
    before = slider.get_by_test_id("stSliderThumbValue").inner_text()
    slider.get_by_role("slider").focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    page.wait_for_function(f"() => ![...document.querySelectorAll('[data-testid=stSliderThumbValue]')]"
                           f".some(e => e.innerText === {before!r})")  # fmt: skip
    wait_idle(page)
    assert table.is_visible() and metric_values(page) == dice  # the old page forgot its results here
    assert page.get_by_text("Stale").count() == 0
    noise = page.get_by_test_id("stSlider").filter(has_text="Extra Rician noise").get_by_role("slider")
    noise.focus()
    page.keyboard.press("ArrowRight")
    page.get_by_text("Stale").wait_for()
    wait_idle(page)
    assert table.is_visible() and metric_values(page) == dice  # the last run's results, marked stale
    assert page.locator("[data-testid='stException']").count() == 0


def test_home_models_and_statistics_text_is_not_cut_at_1280_px(app_url, page):
    """No metric label ends in an ellipsis and no table needs a horizontal scroll bar."""
    for path in ("", "models", "statistics"):
        page.goto(f"{app_url}/{path}")
        page.get_by_test_id("stMetricLabel").or_(page.get_by_test_id("stDataFrame")).first.wait_for()
        wait_idle(page)
        cut = page.evaluate("""() => [...document.querySelectorAll(
            "[data-testid=stMetricLabel] *, [data-testid=stDataFrame] .dvn-scroller")]
            .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText.slice(0, 40))""")
        assert cut == [], (path, cut)


def test_explorer_live_switch_and_run_button_on_a_patient_without_stored_predictions(app_url, page):
    page.goto(app_url + "/explorer")
    page.get_by_role("heading", name="Patient explorer").wait_for()
    wait_idle(page)
    choose(page, "Hospital", "2")
    choose(page, "Patient", "SYN_H2_0003")  # T2 not acquired; no stored prediction without FLAIR
    wait_idle(page)
    page.get_by_test_id("stCheckbox").filter(has_text="FLAIR").click()  # live: preview, then the whole brain
    page.get_by_text("As acquired vs current").wait_for(timeout=300_000)
    wait_idle(page)
    assert len(metric_values(page)) == 12
    assert "missing T2 + FLAIR" in " ".join(page.get_by_test_id("stMarkdown").all_inner_texts())
    # The one switch away that has no stored prediction (T1 off too) is prepared in the background.
    page.get_by_text("Getting ready in the background").wait_for()
    assert "missing T1 + T2 + FLAIR" in page.get_by_text("Getting ready in the background").inner_text()
    assert page.locator("[data-testid='stException']").count() == 0
    page.get_by_test_id("stCheckbox").filter(has_text="Live").click()  # off: the Run button and the quick preview
    page.get_by_test_id("stCheckbox").filter(has_text=re.compile(r"^T1$")).click()
    wait_idle(page)
    # FLAIR back on: missing T1 + T2, which the background was never asked for, so Run is needed.
    page.get_by_test_id("stCheckbox").filter(has_text="FLAIR").click()
    run = page.get_by_role("button", name="Run BraTS (missing T1 + T2)")
    run.wait_for()
    wait_idle(page)
    assert run.is_enabled()
    page.get_by_role("button", name=re.compile("Quick preview")).click()
    wait_idle(page)
    assert page.locator("[data-testid='stException']").count() == 0  # was StreamlitWidgetAlreadyInstantiatedError
    run.click()
    page.get_by_test_id("stMetricValue").first.wait_for(timeout=300_000)
    wait_idle(page)
    assert len(metric_values(page)) == 12  # Dice, sensitivity, HD95, volume for three regions
    assert page.locator("[data-testid='stException']").count() == 0


def hospital_summary(page, app_url) -> list[str]:
    """The cells of the Hospitals page's summary table (cases per model and hospital), demo results."""
    page.goto(app_url + "/hospitals")
    page.get_by_role("heading", name="Hospitals").wait_for()
    cells = page.get_by_test_id("stDataFrame").first.locator("[role=gridcell]")
    cells.first.wait_for(state="attached")  # the grid draws on a canvas; its cells are an offscreen table
    wait_idle(page)
    return cells.all_inner_texts()


def test_your_data_evaluation_of_a_demo_copy_leaves_the_demo_results_alone(app_url, page, user_dirs):
    demo = ROOT / "data_samples" / "results.sqlite"
    digest = hashlib.sha256(demo.read_bytes()).hexdigest()
    before = hospital_summary(page, app_url)
    assert "public" in before and "1" in before
    shutil.copytree(ROOT / "data_samples" / "SYN_H1_0008", user_dirs["GBM_DATA_ROOT"] / "copied" / "SYN_H1_0008")
    page.goto(app_url + "/your_data")
    page.get_by_role("heading", name="Your data").wait_for()
    path = page.get_by_label("Folder or manifest, relative to the data root")
    path.fill("copied")
    path.press("Enter")
    page.get_by_text("1 of 1 cases accepted").wait_for()
    page.get_by_role("button", name="Evaluate").click()
    page.get_by_text(re.compile(r"predictions? written to")).wait_for(timeout=300_000)
    wait_idle(page)
    page.get_by_role("heading", name="Your results for these cases").wait_for()
    assert page.locator("[data-testid='stException']").count() == 0
    assert hospital_summary(page, app_url) == before  # the demo results' counts per hospital
    assert hashlib.sha256(demo.read_bytes()).hexdigest() == digest
    assert Path(user_dirs["GBM_STORE"]).is_file()  # the evaluation went to the test's own store
