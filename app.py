"""Glioblastoma robustness explorer: page routing and page config only."""

import streamlit as st

st.set_page_config(page_title="GBM robustness explorer", page_icon=":material/neurology:", layout="wide")

pages = [
    st.Page("views/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("views/explorer.py", title="Patient explorer", icon=":material/neurology:"),
    st.Page("views/hospitals.py", title="Hospitals", icon=":material/local_hospital:"),
    st.Page("views/missing.py", title="Missing sequences", icon=":material/grid_view:"),
    st.Page("views/statistics.py", title="Statistics", icon=":material/functions:"),
    st.Page("views/lab.py", title="Domain-shift lab", icon=":material/tune:"),
    st.Page("views/cases.py", title="Cases", icon=":material/view_in_ar:"),
    st.Page("views/your_data.py", title="Your data", icon=":material/upload_file:"),
    st.Page("views/models.py", title="Models", icon=":material/model_training:"),
]
st.navigation(pages).run()
