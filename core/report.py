"""A self-contained HTML report of a results store: the paper's Figures 2, 4 and 5 and tables."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from pathlib import Path

from core.card import STATUS, is_onnx_card, model_card_markdown, paper_pairs, replace_results, results_markdown
from core.figures import hospital_boxplot, median_heatmap, missing_comparison_figure
from core.stats import (
    MIN_NONZERO_PAIRS,
    SCOPES,
    comparison_table,
    not_applicable_words,
    select_scope,
    untested_reasons,
)

# The paper's findings, as targets on the synthetic cohort (median tumour-core Dice, paired
# Wilcoxon with Bonferroni over the paper's family of tests present in the store).
TARGET_DICE = 0.80


# Default of the ``family`` arguments below: compute the family (None is a computed "no pairs").
COMPUTE = object()


def _family(table, region: str, adjust: str = "bonferroni"):
    """The paper's family of tests on the simulated-combination cases (None without pairs)."""
    scoped = select_scope(table[table["region"] == region], "simulated")
    pairs = paper_pairs(sorted(table["model"].unique()))
    return comparison_table(scoped, pairs, metric="dice", adjust=adjust) if pairs and len(scoped) else None


def paper_targets(table, region: str = "tc", adjust: str = "bonferroni", family=COMPUTE) -> list[dict]:
    """The three targets, each with its model, measured value, threshold and whether it is met
    (``met`` is None where the store lacks the model or the cases). ``family``: the paper's
    tests when the caller already has them (:func:`_family`'s result).

    1. BraTS: median Dice on the public test set (as acquired) at least 0.80.
    2. BraTSst better than BraTS with FLAIR missing: median difference above 0 and adjusted p < .05.
    3. H2-6BraTSst: median Dice on hospital 1's test cases at least 0.80 in every combination.
    """
    rows = table[table["region"] == region]
    acquired, simulated = select_scope(rows, "acquired"), select_scope(rows, "simulated")
    public = acquired[(acquired["model"] == "BraTS") & (acquired["hospital"] == "public")]["dice"]
    targets = [{"model": "BraTS", "target": f"median {region.upper()} Dice on the public test set >= {TARGET_DICE}",
                "value": float(public.median()) if len(public) else None, "n": int(len(public))}]  # fmt: skip
    targets[0]["met"] = None if not len(public) else targets[0]["value"] >= TARGET_DICE
    family = _family(table, region, adjust) if family is COMPUTE else family
    row = None
    if family is not None:
        match = family[
            (family["model_a"] == "BraTSst") & (family["model_b"] == "BraTS") & (family["missing"] == "flair")
        ]
        row = match.iloc[0] if len(match) and match.iloc[0]["tested"] else None
    tests = 0 if family is None else int(family["tested"].sum())
    second = {"model": "BraTSst", "target": f"better than BraTS with FLAIR missing (median difference), "
              f"{adjust}-adjusted p < 0.05 over the {tests} tests of the paper's family"}  # fmt: skip
    if row is None:
        second |= {"value": None, "n": 0, "met": None}
    else:
        better = bool(row["median_difference"] > 0 and row["p_adjusted"] < 0.05)
        second |= {"value": float(row["median_difference"]), "p_adjusted": float(row["p_adjusted"]),
                   "n": int(row["n"]), "met": better}  # fmt: skip
    targets.append(second)
    h1 = simulated[(simulated["model"] == "H2-6BraTSst") & (simulated["hospital"] == "1")]
    medians = h1.groupby("missing")["dice"].median()
    third = {"model": "H2-6BraTSst", "target": f"median {region.upper()} Dice on hospital 1's test cases >= "
             f"{TARGET_DICE} in every combination of missing sequences"}  # fmt: skip
    if len(medians):
        third |= {"value": float(medians.min()), "worst": str(medians.idxmin()), "n": int(h1["patient_id"].nunique()),
                  "combinations": int(len(medians)), "met": bool(medians.min() >= TARGET_DICE)}  # fmt: skip
    else:
        third |= {"value": None, "n": 0, "met": None}
    targets.append(third)
    return targets


def model_results(table, model: str, region: str = "tc", adjust: str = "bonferroni", family=COMPUTE,
                  targets=None) -> dict:  # fmt: skip
    """A model's figures on the results in ``table`` (for its card): median Dice per hospital as
    acquired, per combination on the simulated cases, its tests in the paper's family, and the
    targets that concern it. ``family`` and ``targets`` skip recomputing what the caller has."""
    rows = table[(table["model"] == model) & (table["region"] == region)]
    acquired, simulated = select_scope(rows, "acquired"), select_scope(rows, "simulated")
    by_hospital = acquired.groupby("hospital")["dice"].agg(["median", "size"])
    by_missing = simulated.groupby("missing")["dice"].median()
    out = {
        "region": region,
        "median_dice_as_acquired": {
            h: {"median": round(float(r["median"]), 3), "n": int(r["size"])} for h, r in by_hospital.iterrows()
        },  # fmt: skip
        "median_dice_simulated": {m: round(float(v), 3) for m, v in by_missing.items()},  # as the tables print them
        "simulated_patients": int(simulated["patient_id"].nunique()),
    }
    family = _family(table, region, adjust) if family is COMPUTE else family
    if family is not None:
        mine = family[(family["model_a"] == model) & family["tested"]]
        out["tests"] = [{"versus": r.model_b, "missing": r.missing, "n": int(r.n),
                         "median_difference": round(float(r.median_difference), 4),
                         "p_adjusted": float(r.p_adjusted), "significant": bool(r.significant)}
                        for r in mine.itertuples()]  # fmt: skip
        out["family_size"] = int(family["tested"].sum())
    targets = paper_targets(table, region, adjust, family) if targets is None else targets
    out["targets"] = [t for t in targets if t["model"] == model]
    return out


def update_cards(table, folder: str | Path, region: str = "tc", adjust: str = "bonferroni",
                 source: str = "") -> list[str]:  # fmt: skip
    """Write each model's results into ``folder/<model>/card.json`` (``demo_results``) and its
    MODEL_CARD.md. Models are matched by the sha256 of their weights, so a card only gets the
    results of exactly its weights. Returns the names of the cards updated."""
    from core.model import CARD, model_folders, read_card

    names = dict(zip(table["model_sha256"], table["model"]))
    family = _family(table, region, adjust)
    targets = paper_targets(table, region, adjust, family)
    updated = []
    for model_folder in model_folders(folder):
        card_path = model_folder / CARD
        card = read_card(model_folder)
        name = names.get(card["weights_sha256"])
        if name is None:
            continue
        results = model_results(table, name, region, adjust, family, targets)
        card["demo_results"] = results | ({"store": source} if source else {})
        card_path.write_text(json.dumps(card, indent=2))
        # A card written by training gets its whole MODEL_CARD.md; an ONNX model's keeps its text with
        # the results section replaced; any other gets only the results.
        markdown = card_path.parent / "MODEL_CARD.md"
        if is_onnx_card(card) or (model_folder / "model.onnx").is_file():
            text = replace_results(markdown.read_text() if markdown.is_file() else model_card_markdown(card),
                                   card["demo_results"])  # fmt: skip
        elif "training" in card:
            text = model_card_markdown(card)
        else:
            text = f"# {name}\n{results_markdown(card['demo_results'])}"
        markdown.write_text(text)
        updated.append(name)
    return updated


def targets_html(targets: list[dict]) -> str:
    """The targets as an HTML table."""
    rows = []
    for t in targets:
        value = "" if t["value"] is None else f"{t['value']:.3f}"
        if "p_adjusted" in t:
            value += f" (adjusted p {t['p_adjusted']:.3g})"
        elif "worst" in t:
            value += f" (lowest: {t['worst']} missing)"
        rows.append(f"<tr><td>{html.escape(t['model'])}</td><td>{html.escape(t['target'])}</td>"
                    f"<td>{html.escape(value)}</td><td>{t['n']}</td><td>{STATUS[t['met']]}</td></tr>")  # fmt: skip
    header = "<tr><th>model</th><th>target</th><th>value</th><th>n</th><th>status</th></tr>"
    return f"<table>{header}{''.join(rows)}</table>"


def build_report(table, region: str = "tc", pairs=None, adjust: str = "bonferroni") -> str:
    """HTML of the report; plotly.js is inlined once so the file opens offline."""
    models = sorted(table["model"].unique())
    paper_default = not pairs
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
        tested = comparison[comparison["tested"]]
        left_out = untested_reasons(comparison)
        note = (f" {len(left_out)} comparisons left out (fewer than {MIN_NONZERO_PAIRS} pairs with a non-zero "
                f"difference): {html.escape('; '.join(left_out))}." if left_out else "")  # fmt: skip
        parts.append(f"<h2>Paired Wilcoxon signed-rank tests ({adjust}-adjusted over {len(tested)} tests)</h2>"
                     f"<p>Scope: {html.escape(SCOPES[scope])}; {cases} patients.{note}</p>")  # fmt: skip
        parts.append(tested.to_html(index=False, float_format=lambda v: f"{v:.4g}", classes="table"))
    parts.append("<h2>The paper's findings as targets</h2>")
    # The comparison above is the paper's family when it ran on the simulated cases with its pairs.
    family = comparison if scope == "simulated" and paper_default else COMPUTE
    parts.append(targets_html(paper_targets(table, region, adjust, family)))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"Glioblastoma robustness report ({html.escape(region)})"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px}}</style></head>
<body><h1>{title}</h1><p>{len(models)} models, {table["patient_id"].nunique()} cases, {len(table)} result rows;
generated {stamp}. Asterisk: adjusted p &lt; 0.05. {html.escape(not_applicable_words(table))}
Research and teaching use only.</p>{"".join(parts)}</body></html>"""


def extended_evaluation_command(model_folders, patients, preset: str = "realistic", scale: float = 1.0, seed: int = 0,
                                store: str = "results.sqlite", out: str = "runs/t1c",
                                clean: bool = False) -> str:  # fmt: skip
    """The commands that add the 7 combinations with T1c missing (15 in all) for ``patients`` of
    a synthetic cohort: render their cases again (bit for bit, from preset, scale and seed),
    then evaluate them (``clean``: after Clean up too). Without patients, the evaluation of a
    cohort folder ``out`` of your own. The results go to ``store`` (the user's store: the bundled
    demo store is never written)."""
    render = (f"python -m core synth --preset {preset} --scale {scale:g} --seed {seed} "
              f"--patients {','.join(sorted(patients))} --out {out}\n") if len(patients) else ""  # fmt: skip
    return (
        f"{render}python -m core evaluate --models {','.join(str(m) for m in model_folders)} "
        f"--cohort {out}/manifest.csv --mode simulated --combinations 15 --splits all --store {store}"
        + (" --clean" if clean else "")
    )
