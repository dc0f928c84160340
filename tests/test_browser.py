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
