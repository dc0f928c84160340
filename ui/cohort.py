"""The "Results" picker every cohort page opens with: demo results, your data, or both."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.store import RESULT_SOURCES
from ui.data import cohort_results, user_store

EMPTY = {
    "demo": "No demo results. Evaluate models with `python -m core evaluate`.",
    "user": "No results of your own yet: evaluate cases on the **Your data** page (they are written to {store}).",
    "both": "No results yet. Evaluate models with `python -m core evaluate` or on the **Your data** page.",
}


def pick_results(page: str) -> tuple[str, pd.DataFrame]:
    """A "Results" radio (key ``<page>_source``) and the chosen source's results; stops the page
    with a note when there are none. Your results never change the demo results."""
    source = st.radio("Results", list(RESULT_SOURCES), format_func=RESULT_SOURCES.get, horizontal=True,
                      key=f"{page}_source",
                      help="demo results: the bundled store (read only); your data: what you evaluated on the "
                      "Your data page; both: each case counted once")  # fmt: skip
    table = cohort_results(source)
    if table.empty:
        st.info(EMPTY[source].format(store=user_store()))
        st.stop()
    return source, table
