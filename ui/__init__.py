"""Streamlit helpers shared by the pages: paths, cached loaders. Pages stay thin."""
