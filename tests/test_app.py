"""One AppTest per page, asserting what the page must show."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def demo_cohort(monkeypatch):
    monkeypatch.setenv("GBM_DEMO_COHORT", str(ROOT / "data_samples"))
    monkeypatch.chdir(ROOT)


def test_home_shows_what_is_loaded():
    at = AppTest.from_file(str(ROOT / "pages" / "home.py"), default_timeout=60).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Demo cases"] == "4" and metrics["Hospitals"] == "4"
    assert metrics["Compute"].startswith(("CPU", "GPU"))
    assert "Not a medical device" in at.warning[0].value


def test_cases_page_lists_cases_and_shows_missing_sequences():
    at = AppTest.from_file(str(ROOT / "pages" / "cases.py"), default_timeout=60).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["patient_id"]) == ["SYN_PUB_0100", "SYN_H2_0003", "SYN_H3_0004", "SYN_H6_0004"]
    assert dict(zip(table["patient_id"], table["sequences"]))["SYN_H3_0004"] == "missing T1 + T2 + FLAIR"
    at.selectbox(key="case_id").select("SYN_H2_0003").run()
    assert not at.exception
    options = at.radio(key="sequence").options
    assert options == ["T1", "T1c", "T2 (missing)", "FLAIR"]
    at.radio(key="sequence").set_value("T2 (missing)").run()
    assert any("T2 was not acquired" in i.value for i in at.info)
