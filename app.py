"""Glioblastoma robustness explorer: page routing and page config only."""

import streamlit as st

st.set_page_config(page_title="GBM robustness explorer", page_icon="🧠", layout="wide")

pages = [
    st.Page("pages/home.py", title="Home", icon="🏠", default=True),
    st.Page("pages/cases.py", title="Cases", icon="🩻"),
]
st.navigation(pages).run()
