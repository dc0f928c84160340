"""What the cohort pages share: the "Results" picker (demo results, your data, or both) and the
statistics, cached by the content of the results they are given and the choices."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.sequences import combination_label
from core.stats import MixedModelResult, comparison_table, mixed_model, not_applicable_words
from core.store import RESULT_SOURCES
from ui.data import cohort_results, user_store

EMPTY = {
    "demo": "No demo results. Evaluate models with `python -m core evaluate`.",
    "user": "No results of your own yet: evaluate cases on the **Your data** page (they are written to {store}).",
    "both": "No results yet. Evaluate models with `python -m core evaluate` or on the **Your data** page.",
}


def pick_results(page: str) -> tuple[str, pd.DataFrame]:
    """A "Results" radio (key ``<page>_source``) and the chosen source's results; stops the page
    with a note when there are none. Your results never change the demo results. Rows of
    combinations a model cannot run on (not applicable) stay in the table (the statistics and
    figures leave them out) and a caption says how many there are."""
    source = st.radio("Results", list(RESULT_SOURCES), format_func=RESULT_SOURCES.get, horizontal=True,
                      key=f"{page}_source",
                      help="demo results: the bundled store (read only); your data: what you evaluated on the "
                      "Your data page; both: each case counted once")  # fmt: skip
    table = cohort_results(source)
    if table.empty:
        st.info(EMPTY[source].format(store=user_store()))
        st.stop()
    if words := not_applicable_words(table):
        st.caption(words)
    return source, table


# Column titles of a comparison table as shown (the CSV keeps the names core.stats gives them).
COMPARISON_TITLES = {"pair": "A - B", "missing": "Sequences", "n": "n", "median_difference": "Median",
                     "estimate": "Estimate", "ci": "95 % CI", "p_value": "p", "p_adjusted": "p adj.",
                     "significant": "Sig.", "n_nonzero": "Differ"}  # fmt: skip
# Short values in pixels wide enough for them: the table then fits at 1280 px without a scroll bar.
NARROW = {"n": 48, "p_value": 68, "p_adjusted": 68, "significant": 48, "n_nonzero": 60}


def show_comparisons(table: pd.DataFrame) -> None:
    """A table of comparisons (``core.stats.comparison_table`` or a mixed model's contrasts) as
    readers read it: one "A - B" column, combinations in words, the CI as one column, p-values in
    significant digits (rounded to 4 decimals, every significant one would read 0)."""
    shown = table.assign(pair=table["model_a"] + " - " + table["model_b"],
                         missing=table["missing"].map(combination_label),
                         ci=[f"{lo:.3f} to {hi:.3f}" if pd.notna(lo) else "" for lo, hi in
                             zip(table["ci_low"], table["ci_high"])])  # fmt: skip
    shown = shown[[c for c in COMPARISON_TITLES if c in shown]]
    decimals = {c: "{:.3f}" for c in ("median_difference", "estimate") if c in shown}
    styled = shown.style.format(decimals | {"p_value": "{:.2g}", "p_adjusted": "{:.2g}"}, na_rep="")
    config = {c: st.column_config.Column(title, width=NARROW.get(c))
              for c, title in COMPARISON_TITLES.items() if c in shown}  # fmt: skip
    st.dataframe(styled, hide_index=True, width="stretch", column_config=config)


@st.cache_data(max_entries=16, show_spinner="Testing...")
def comparisons(results: pd.DataFrame, pairs: list, metric: str = "dice", missing: list | None = None,
                adjust: str = "bonferroni") -> pd.DataFrame:  # fmt: skip
    """``core.stats.comparison_table``, computed once per results table (by content) and choices."""
    return comparison_table(results, pairs, metric=metric, missing=missing, adjust=adjust)


@st.cache_data(max_entries=8, show_spinner="Fitting the mixed-effects model...")
def mixed_effects(results: pd.DataFrame, pairs: list, metric: str = "dice",
                  adjust: str = "bonferroni") -> MixedModelResult:  # fmt: skip
    """``core.stats.mixed_model``, computed once per results table (by content) and choices.

    Raises:
        ValueError: as mixed_model (not cached: raised again on the next run).
    """
    return mixed_model(results, pairs, metric=metric, adjust=adjust)
