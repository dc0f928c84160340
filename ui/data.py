"""Where the app's data lives, and the one place that caches what pages load."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from core.io import Case, find_cases, read_case

ROOT = Path(__file__).resolve().parent.parent
DEMO_COHORT = Path(os.environ.get("GBM_DEMO_COHORT", ROOT / "data_samples"))


@st.cache_data(max_entries=4, show_spinner=False)
def load_manifest(path: str) -> pd.DataFrame:
    """The manifest of a cohort folder (missing columns filled), or an empty table."""
    manifest = Path(path) / "manifest.csv"
    if not manifest.is_file():
        return pd.DataFrame(columns=["patient_id", "hospital", "split", "missing"])
    table = pd.read_csv(manifest, dtype={"hospital": str}, keep_default_na=False)
    return table


@st.cache_resource(max_entries=2, show_spinner="Reading the case...")
def load_case(cohort: str, case_id: str) -> Case:
    """Read one case of a cohort; cached as a shared read-only resource (volumes are large)."""
    for source in find_cases(cohort):
        if source.case_id == case_id:
            case = read_case(source)
            case.images.setflags(write=False)
            return case
    raise KeyError(f"no case {case_id!r} in {cohort}")
