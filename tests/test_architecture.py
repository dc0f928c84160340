"""Imports flow one way: views (the pages) -> ui -> core; core never imports streamlit."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_core_never_imports_streamlit_or_ui():
    for path in (ROOT / "core").rglob("*.py"):
        assert not imported_modules(path) & {"streamlit", "ui", "views"}, path


def test_pages_do_no_maths():
    for path in (ROOT / "views").glob("*.py"):
        assert not imported_modules(path) & {"torch", "scipy", "nibabel"}, path
