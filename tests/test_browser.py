"""Real browser: start `streamlit run app.py`, drive Debian's Chromium with Playwright."""

from __future__ import annotations

import os
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
def app_url():
    port = free_port()
    env = dict(os.environ, GBM_DEMO_COHORT=str(ROOT / "data_samples"))
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true",
         "--browser.gatherUsageStats", "false"],
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


def metric_values(page) -> list[str]:
    return page.locator("[data-testid='stMetricValue']").all_inner_texts()


def run_if_needed(page, label: str) -> None:
    """Press the explorer's Run button unless a precomputed prediction is already shown."""
    button = page.get_by_role("button", name=label)
    button.wait_for()
    if button.is_enabled():
        button.click()


def test_explorer_switching_flair_off_changes_the_metrics(app_url, page):
    page.goto(app_url + "/explorer")
    page.get_by_role("heading", name="Patient explorer").wait_for()
    run_if_needed(page, "Run BraTS (all sequences)")
    page.get_by_text("Dice").first.wait_for(timeout=300_000)
    complete = metric_values(page)
    assert len(complete) == 12  # Dice, sensitivity, HD95, volume for three regions
    page.locator("label").filter(has_text="FLAIR").first.click()
    run_if_needed(page, "Run BraTS (missing FLAIR)")
    page.get_by_text("Complete vs current").wait_for(timeout=300_000)
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
