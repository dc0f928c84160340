"""A self-contained HTML report of a results store: the paper's Figures 2, 4 and 5 and tables."""

from __future__ import annotations

import html
from datetime import UTC, datetime

from core.figures import hospital_boxplot, median_heatmap, missing_comparison_figure
from core.stats import SCOPES, comparison_table, select_scope


def sparsified_pairs(models) -> list[tuple[str, str]]:
    """(Xst, X) for every model X that has a sparsified twin."""
    return [(m, m[:-2]) for m in sorted(models) if m.endswith("st") and m[:-2] in set(models)]


def site_pairs(models) -> list[tuple[str, str]]:
    """(with hospital 1 data, without) twins: H1BraTS vs BraTS, H1-6BraTSst vs H2-6BraTSst, ..."""
    models, pairs = set(models), []
    for model in sorted(models):
        prefix, base = ("c", model[1:]) if model.startswith("c") else ("", model)
        if base.startswith("H1-6"):
            twin = prefix + "H2-6" + base[4:]
        elif base.startswith("H1BraTS") and not prefix:
            twin = base[2:]
        else:
            continue
        if twin in models:
            pairs.append((model, twin))
    return pairs


def paper_pairs(models) -> list[tuple[str, str]]:
    """The paper's family: every pair with and without sparsified training, and with and
    without hospital 1 data (9 pairs x 8 combinations = 72 tests with all 11 models)."""
    return sparsified_pairs(models) + site_pairs(models)


def build_report(table, region: str = "tc", pairs=None, adjust: str = "bonferroni") -> str:
    """HTML of the report; plotly.js is inlined once so the file opens offline."""
    models = sorted(table["model"].unique())
    pairs = pairs or paper_pairs(models)
    # Figures 4 and 5 and the tests compare combinations on the same (complete) patients.
    simulated = select_scope(table, "simulated")
    scope = "simulated" if len(simulated) else "all"
    scoped = simulated if len(simulated) else table
    region_table = scoped[scoped["region"] == region]
    comparison = comparison_table(region_table, pairs, metric="dice", adjust=adjust) if pairs else None
    parts, first = [], True

    def figure_html(figure) -> str:
        nonlocal first
        out = figure.to_html(full_html=False, include_plotlyjs="inline" if first else False)
        first = False
        return out

    parts.append("<h2>Figure 2: Dice per hospital (as acquired)</h2>")
    parts.append(figure_html(hospital_boxplot(table, region=region)))
    parts.append("<h2>Figure 4: each combination of missing sequences, model pairs side by side</h2>")
    scope_text = html.escape(SCOPES[scope])
    parts.append(f"<p>{scope_text[0].upper() + scope_text[1:]}: {region_table['patient_id'].nunique()} patients.</p>")
    if comparison is None:
        parts.append("<p>No sparsified pair (X and Xst) in this store.</p>")
    for a, b in pairs:
        rows = comparison[(comparison["model_a"] == a) & (comparison["model_b"] == b)]
        parts.append(figure_html(missing_comparison_figure(region_table, a, b, rows, region, title=f"{a} vs {b}")))
    parts.append("<h2>Figure 5: median Dice, models x combinations</h2>")
    parts.append(figure_html(median_heatmap(scoped, region=region)))
    if comparison is not None:
        cases = region_table["patient_id"].nunique()
        parts.append(f"<h2>Paired Wilcoxon signed-rank tests ({adjust}-adjusted over {len(comparison)} tests)</h2>"
                     f"<p>Scope: {html.escape(SCOPES[scope])}; {cases} patients.</p>")  # fmt: skip
        parts.append(comparison.to_html(index=False, float_format=lambda v: f"{v:.4g}", classes="table"))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"Glioblastoma robustness report ({html.escape(region)})"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px}}</style></head>
<body><h1>{title}</h1><p>{len(models)} models, {table["patient_id"].nunique()} cases, {len(table)} result rows;
generated {stamp}. Asterisk: adjusted p &lt; 0.05. Research and teaching use only.</p>{"".join(parts)}</body></html>"""
