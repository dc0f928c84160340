"""Core of the glioblastoma robustness explorer: reading, synthesis, models, metrics.

Nothing in this package imports streamlit; the app's pages call into it.
"""

__version__ = "0.1.0"
