"""Save a screenshot of every page of the app (1280 px wide) with Debian's Chromium.

python bench/screens.py [--out docs]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# page name -> (url path, selector that shows the page has finished drawing)
PAGES = {
    "home": ("", "[data-testid='stMetric']"),
    "explorer": ("explorer", "[data-testid='stMetricValue']"),
    "hospitals": ("hospitals", ".js-plotly-plot, [data-testid='stAlert']"),
    "missing": ("missing", ".js-plotly-plot, [data-testid='stAlert']"),
    "statistics": ("statistics", "[data-testid='stDataFrame'], [data-testid='stAlert']"),
    "lab": ("lab", "[data-testid='stImage'] img"),
    "models": ("models", ".js-plotly-plot"),
    "cases": ("cases", "[data-testid='stImage'] img"),
    "your_data": ("your_data", "text=Folder or manifest"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true"],
        cwd=ROOT, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-background-networking"]
            )
            page = browser.new_page(viewport={"width": 1280, "height": 1700})
            for name, (path, ready) in PAGES.items():
                start = time.perf_counter()
                page.goto(f"{url}/{path}")
                page.wait_for_selector(ready, timeout=60_000)
                time.sleep(1.0)  # let the last elements finish drawing
                page.screenshot(path=str(args.out / f"{name}.png"), full_page=True)
                print(f"{name}: {time.perf_counter() - start:.1f} s -> {args.out / f'{name}.png'}")
                if name == "explorer":  # the same case with FLAIR switched off
                    page.locator("label").filter(has_text="FLAIR").first.click()  # Live: the model runs at once
                    page.get_by_text("As acquired vs current").wait_for(timeout=300_000)
                    time.sleep(1.5)
                    page.screenshot(path=str(args.out / "explorer_flair.png"), full_page=True)
                    print(f"explorer without FLAIR -> {args.out / 'explorer_flair.png'}")
            browser.close()
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
