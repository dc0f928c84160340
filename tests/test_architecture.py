"""Imports flow one way: views (the pages) -> ui -> core; core never imports streamlit."""

import ast
import re
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


# Core's layers, bottom first: a module imports only from its own layer or those below it.
LAYERS = [
    {"core", "core.sequences", "core.model", "core.device", "core.augment"},
    {
        "core.labels",
        "core.io",
        "core.cases",
        "core.preprocess",
        "core.metrics",
        "core.stats",
        "core.card",
        "core.postprocess",
    },
    {"core.sampling", "core.synth"},
    {"core.infer", "core.train", "core.sweep", "core.store", "core.external"},
    {"core.report", "core.zoo", "core.figures", "core.realism", "core.convert"},
    {"core.__main__"},
]
SQL = re.compile(
    r"\b(SELECT\s.+\sFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX)|PRAGMA)\b"
)
SQL_CALLS = {"execute", "executemany", "executescript", "read_sql", "read_sql_query"}


def speaks_sql(source: str) -> bool:
    """Whether code runs a query (a cursor's execute, pandas' read_sql) or holds SQL text."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_CALLS:
            return True
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
            return True
    return False


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def core_imports(path: Path) -> set[str]:
    """Core modules that ``path`` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return {n for n in names if n == "core" or n.startswith("core.")}


def layer(module: str) -> int:
    for level, members in enumerate(LAYERS):
        if module in members or any(module.startswith(m + ".") for m in members if m != "core"):
            return level
    raise AssertionError(f"{module} has no layer in tests/test_architecture.py")


def core_graph() -> dict[str, set[str]]:
    return {module_name(p): core_imports(p) - {module_name(p)} for p in (ROOT / "core").rglob("*.py")}


def test_no_import_cycle_in_core():
    graph = core_graph()
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == "open":
                raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(dep) :], dep]))
            if dep not in state:
                visit(dep, [*trail, dep])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_core_layers_point_down():
    for module, deps in core_graph().items():
        for dep in deps:
            assert layer(dep) <= layer(module), f"{module} (layer {layer(module)}) imports {dep} (layer {layer(dep)})"


def test_training_does_not_import_inference():
    assert "core.infer" not in core_graph()["core.train"]


def test_no_module_over_600_lines():
    for folder in ("core", "ui", "views", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            assert len(path.read_text().splitlines()) <= 600, path


def test_only_the_store_speaks_sql():
    for folder in ("core", "ui", "views", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            if path != ROOT / "core" / "store.py":
                assert not speaks_sql(path.read_text()), path


def test_cycle_check_finds_a_cycle(tmp_path):
    # The checks read real files: a two-module loop written to disk is reported as one.
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "a.py").write_text("from core.b import x\n")
    (tmp_path / "core" / "b.py").write_text("def f():\n    from core.a import y\n")
    imports = {p.stem: core_imports(p) for p in (tmp_path / "core").glob("*.py")}
    assert imports == {"a": {"core.b"}, "b": {"core.a"}}
    assert speaks_sql('store.db.execute("select id from cases where x = ?")')
    assert speaks_sql('QUERY = "SELECT model, dice FROM results"')
    assert not speaks_sql('st.caption("Select the cases you want from the list")')
