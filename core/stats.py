"""Paired Wilcoxon signed-rank tests exactly as R computes them, and p-value adjustment.

``wilcoxon_paired(x, y)`` reproduces ``wilcox.test(x, y, paired = TRUE, conf.int = TRUE)``
(R 4.x, two-sided, continuity correction): zero differences dropped; the exact null
distribution when fewer than 50 non-zero differences and no ties, else the normal
approximation with tie and continuity corrections; the Hodges-Lehmann estimate and CI from
Walsh averages (exact) or by root finding on the asymptotic statistic (with R's own Brent
``zeroin`` ported, tolerance 1e-4, so the numbers agree with R's). The median of the paired
differences is reported beside them, as in the paper.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from scipy.stats import norm, rankdata

from core.sequences import order_combinations

EPSILON = np.finfo(float).eps


@lru_cache(maxsize=64)
def _signrank_counts(n: int) -> tuple[float, ...]:
    """Number of subsets of {1..n} with each sum 0..n(n+1)/2 (R's csignrank)."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1
    for k in range(1, n + 1):
        counts[k:] = counts[k:] + counts[:-k].copy()
    return tuple(counts)


def psignrank(q: float, n: int, lower_tail: bool = True) -> float:
    """P(V <= q) of the signed-rank statistic (R's psignrank)."""
    q = math.floor(q + 1e-7 + 0.5) if q + 1e-7 >= 0 else -1
    total = n * (n + 1) / 2
    if q < 0:
        return 0.0 if lower_tail else 1.0
    if q >= total:
        return 1.0 if lower_tail else 0.0
    counts, f = _signrank_counts(n), math.exp(-n * math.log(2))
    if q <= total / 2:
        p = sum(counts[i] * f for i in range(int(q) + 1))
    else:
        p = sum(counts[i] * f for i in range(int(total - q)))
        lower_tail = not lower_tail
    return p if lower_tail else 1 - p


def qsignrank(p: float, n: int) -> int:
    """Smallest q with P(V <= q) >= p (R's qsignrank, lower tail)."""
    counts, f = _signrank_counts(n), math.exp(-n * math.log(2))
    cumulative, q = 0.0, 0
    if p <= 0.5:
        p = p - 10 * EPSILON
        while True:
            cumulative += counts[q] * f
            if cumulative >= p:
                return q
            q += 1
    p = 1 - p + 10 * EPSILON
    while True:
        cumulative += counts[q] * f
        if cumulative > p:
            return int(n * (n + 1) / 2 - q)
        q += 1


def zeroin(f, a: float, b: float, fa: float, fb: float, tol: float = 1e-4, maxiter: int = 1000) -> float:
    """R's R_zeroin2 (Brent's method), ported line by line so roots match R's ``uniroot``."""
    c, fc = a, fa
    if fa == 0:
        return a
    if fb == 0:
        return b
    for _ in range(maxiter + 1):
        prev_step = b - a
        if abs(fc) < abs(fb):
            a, b, c = b, c, b
            fa, fb, fc = fb, fc, fb
        tol_act = 2 * EPSILON * abs(b) + tol / 2
        new_step = (c - b) / 2
        if abs(new_step) <= tol_act or fb == 0:
            return b
        if abs(prev_step) >= tol_act and abs(fa) > abs(fb):
            cb = c - b
            if a == c:
                t1 = fb / fa
                p, q = cb * t1, 1.0 - t1
            else:
                q, t1, t2 = fa / fc, fb / fc, fb / fa
                p = t2 * (cb * q * (q - t1) - (b - a) * (t1 - 1.0))
                q = (q - 1.0) * (t1 - 1.0) * (t2 - 1.0)
            if p > 0:
                q = -q
            else:
                p = -p
            if p < (0.75 * cb * q - abs(tol_act * q) / 2) and p < abs(prev_step * q / 2):
                new_step = p / q
        if abs(new_step) < tol_act:
            new_step = tol_act if new_step > 0 else -tol_act
        a, fa = b, fb
        b += new_step
        fb = f(b)
        if (fb > 0 and fc > 0) or (fb < 0 and fc < 0):
            c, fc = a, fa
    return b


@dataclass(frozen=True)
class WilcoxonResult:
    """R's htest fields for a paired two-sided signed-rank test, plus the median difference."""

    n: int  # pairs with a non-zero difference (what the test uses)
    n_pairs: int  # complete pairs before dropping zero differences
    v: float
    p_value: float
    estimate: float  # Hodges-Lehmann (pseudo)median of the differences
    ci_low: float
    ci_high: float
    conf_level: float
    median_difference: float  # median of x - y over complete pairs
    method: str

    def to_dict(self) -> dict:
        return asdict(self)


def _asymptotic_z(d: np.ndarray, correct: bool) -> float:
    d = d[d != 0]
    n = len(d)
    ranks = rankdata(np.abs(d))
    z = ranks[d > 0].sum() - n * (n + 1) / 4
    _, ties = np.unique(ranks, return_counts=True)
    sigma = math.sqrt(n * (n + 1) * (2 * n + 1) / 24 - (ties**3 - ties).sum() / 48)
    correction = math.copysign(0.5, z) if correct and z != 0 else 0.0
    return (z - correction) / sigma if sigma > 0 else math.copysign(math.inf, z - correction) if z else math.nan


def wilcoxon_paired(x, y, conf_level: float = 0.95) -> WilcoxonResult:
    """Paired Wilcoxon signed-rank test as ``wilcox.test(x, y, paired=TRUE, conf.int=TRUE)``.

    Pairs with a NaN on either side are dropped first (R's complete.cases).

    Raises:
        ValueError: x and y differ in length, or no complete pair remains.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.shape != y.shape:
        raise ValueError(f"x has {x.size} values but y has {y.size}; paired samples must match")
    ok = ~(np.isnan(x) | np.isnan(y))
    d = x[ok] - y[ok]
    if d.size == 0:
        raise ValueError("no complete (non-NaN) pairs")
    median_difference = float(np.median(d))
    zeroes = bool(np.any(d == 0))
    d = d[d != 0]
    n = len(d)
    nan = float("nan")
    if n == 0:
        return WilcoxonResult(0, int(ok.sum()), 0.0, nan, nan, nan, nan, conf_level, median_difference,
                              "Wilcoxon signed rank test (all differences zero)")  # fmt: skip
    ranks = rankdata(np.abs(d))
    v = float(ranks[d > 0].sum())
    ties = len(np.unique(ranks)) != n
    alpha = 1 - conf_level
    if n < 50 and not ties and not zeroes:
        p = psignrank(v - 1, n, lower_tail=False) if v > n * (n + 1) / 4 else psignrank(v, n)
        walsh = np.sort((d[:, None] + d[None, :])[np.triu_indices(n)]) / 2
        qu = qsignrank(alpha / 2, n) or 1
        ql = int(n * (n + 1) / 2 - qu)
        achieved = 2 * psignrank(math.trunc(qu) - 1, n)
        level = 1 - float(f"{achieved:.2g}") if achieved - alpha > alpha / 2 else conf_level
        return WilcoxonResult(n, int(ok.sum()), v, min(2 * p, 1.0), float(np.median(walsh)), float(walsh[qu - 1]),
                              float(walsh[ql]), level, median_difference,
                              "Wilcoxon signed rank exact test")  # fmt: skip

    z = _asymptotic_z(d, correct=True)
    p_value = 2 * min(norm.cdf(z), norm.sf(z))
    low, high = float(d.min()), float(d.max())

    def statistic(shift: float, correct: bool = True) -> float:
        return _asymptotic_z(d - shift, correct)

    w_low, w_high = statistic(low), statistic(high)
    level = conf_level
    if not (math.isfinite(w_low) and math.isfinite(w_high)):
        ci = (nan, nan)
    else:
        while w_low - norm.isf(alpha / 2) < 0 or w_high - norm.ppf(alpha / 2) > 0:
            alpha *= 2
        if alpha >= 1 or 1 - conf_level < alpha * 0.75:
            level = 1 - min(1.0, alpha)
        if alpha < 1:
            ci = tuple(
                zeroin(lambda s, q=q: statistic(s) - q, low, high, w_low - q, w_high - q)
                for q in (norm.isf(alpha / 2), norm.ppf(alpha / 2))
            )
        else:
            ci = (float(np.median(d)), float(np.median(d)))
    e_low, e_high = statistic(low, False), statistic(high, False)
    estimate = zeroin(lambda s: statistic(s, False), low, high, e_low, e_high) if e_low * e_high <= 0 else nan
    return WilcoxonResult(n, int(ok.sum()), v, float(p_value), float(estimate), float(ci[0]), float(ci[1]), level,
                          median_difference, "Wilcoxon signed rank test with continuity correction")  # fmt: skip


# Multiple testing through statsmodels (our names -> multipletests' method names).
ADJUSTMENT_METHODS = {"bonferroni": "bonferroni", "holm": "holm", "bh": "fdr_bh"}
ADJUSTMENT_NAMES = {"bonferroni": "Bonferroni", "holm": "Holm", "bh": "Benjamini-Hochberg (FDR)"}
ADJUSTMENTS = tuple(ADJUSTMENT_METHODS)
# A comparison enters the family only with at least this many pairs with a non-zero difference:
# with one, the exact two-sided p is 1 whatever the data (R's wilcox.test), so it cannot reject.
MIN_NONZERO_PAIRS = 2
TABLE_COLUMNS = ["model_a", "model_b", "missing", "n", "median_difference", "estimate", "ci_low", "ci_high",
                 "p_value", "p_adjusted", "significant", "n_nonzero", "tested"]  # fmt: skip


def adjust_p(p_values, method: str = "bonferroni") -> np.ndarray:
    """Adjusted p-values (``statsmodels.stats.multitest.multipletests``; as R's p.adjust with
    "bonferroni", "holm" and "BH"). NaNs are kept and not counted in the family.

    Raises:
        ValueError: an unknown method.
    """
    from statsmodels.stats.multitest import multipletests

    if method not in ADJUSTMENT_METHODS:
        raise ValueError(f"adjust must be one of {sorted(ADJUSTMENT_METHODS)}, got {method!r}")
    p = np.asarray(p_values, float)
    out = np.full(p.shape, np.nan)
    valid = ~np.isnan(p)
    if valid.any():
        out[valid] = multipletests(p[valid], method=ADJUSTMENT_METHODS[method])[1]
    return out


def bonferroni(p_values) -> np.ndarray:
    """Bonferroni-adjusted p-values (R's p.adjust "bonferroni"); NaNs are kept and not counted."""
    return adjust_p(p_values, "bonferroni")


def holm(p_values) -> np.ndarray:
    """Holm step-down adjusted p-values (R's p.adjust "holm"); NaNs kept and not counted."""
    return adjust_p(p_values, "holm")


SCOPES = {
    "simulated": "complete cases with combinations of missing sequences simulated, as in the paper's Figure 4",
    "acquired": "every case as it was acquired (its own missing sequences)",
    "all": "every result row",
}


def applicable_rows(results):
    """The rows with metrics: rows of a combination the model cannot run on (``applicable`` 0 in
    the store: its card says ``cannot-run``) are not results and are left out, never read as Dice 0."""
    if "applicable" not in results.columns:
        return results
    return results[results["applicable"].fillna(1).astype(bool)]


def not_applicable_count(results) -> int:
    """How many (model, case, combination) results are not applicable (each has one row per region)."""
    if "applicable" not in results.columns:
        return 0
    skipped = results[~results["applicable"].fillna(1).astype(bool)]
    return int(len(skipped.drop_duplicates(["model", "patient_id", "missing"])))


def not_applicable_words(results) -> str:
    """A caption for the results left out as not applicable ("" when none): how many, of which models."""
    count = not_applicable_count(results)
    if not count:
        return ""
    skipped = results[~results["applicable"].fillna(1).astype(bool)]
    models = ", ".join(sorted(skipped["model"].astype(str).unique()))
    return (f"{count} result{'s' * (count != 1)} not applicable left out ({models}: the model's card says it cannot "
            "run without a sequence that was missing; not counted as Dice 0).")  # fmt: skip


def as_acquired(results):
    """The result rows of each case as it was acquired: the sequences switched off are the case's own
    (not-applicable rows left out)."""
    results = applicable_rows(results)
    return results[results["missing"] == results["acquired_missing"]]


def select_scope(results, scope: str = "simulated"):
    """The result rows a comparison uses.

    ``simulated``: complete cases that were also evaluated with sequences switched off, so
    every combination is compared on the same patients; ``acquired``: each case once, as it
    was acquired; ``all``: both (a combination then pools simulated and acquired cases).

    Not-applicable rows (:func:`applicable_rows`) are left out in every scope.

    Raises:
        ValueError: an unknown scope.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {sorted(SCOPES)}, got {scope!r}")
    results = applicable_rows(results)
    if scope == "all":
        return results
    if scope == "acquired":
        return as_acquired(results)
    complete = results[results["acquired_missing"] == "none"]
    simulated = set(complete.loc[complete["missing"] != "none", "patient_id"])
    return complete[complete["patient_id"].isin(simulated)]


def _combinations(results, missing=None) -> list[str]:
    """The combination names to compare: ``missing``, or every one present, complete first."""
    if missing is not None:
        return list(missing)
    return order_combinations(results["missing"])


def comparison_table(results, pairs, metric: str = "dice", missing=None, adjust: str = "bonferroni", alpha=0.05):
    """The paper's comparison table: model pairs x missing combinations.

    Only testable comparisons enter the family that is adjusted: at least MIN_NONZERO_PAIRS
    pairs with a non-zero difference (with one, R's exact p is 1 whatever the data). The
    others are kept in the table with ``tested`` False, R's p-value, and no adjusted p.

    Args:
        results: a DataFrame with columns model, patient_id, missing and ``metric``.
        pairs: (model_a, model_b) tuples; differences are a - b.
        missing: combination names to include (default: all present, complete first).
        adjust: "bonferroni", "holm" or "bh" (Benjamini-Hochberg), over the tested rows.

    Returns:
        DataFrame with TABLE_COLUMNS; ``n`` complete pairs, ``n_nonzero`` those with a
        non-zero difference (n = 0: NaN statistics).
    """
    import pandas as pd

    if adjust not in ADJUSTMENT_METHODS:
        raise ValueError(f"adjust must be one of {sorted(ADJUSTMENT_METHODS)}, got {adjust!r}")
    results = applicable_rows(results)  # a model that cannot run a combination has no pair there
    combos = _combinations(results, missing)
    wide = results.pivot_table(index=["missing", "patient_id"], columns="model", values=metric, aggfunc="first")
    rows = []
    for a, b in pairs:
        for combo in combos:
            row = {"model_a": a, "model_b": b, "missing": combo}
            if a in wide.columns and b in wide.columns and combo in wide.index.get_level_values(0):
                part = wide.loc[combo][[a, b]].dropna()
            else:
                part = pd.DataFrame(columns=[a, b])
            if len(part):
                result = wilcoxon_paired(part[a].to_numpy(), part[b].to_numpy())
                row |= {"n": result.n_pairs, "median_difference": result.median_difference, "estimate": result.estimate,
                        "ci_low": result.ci_low, "ci_high": result.ci_high, "p_value": result.p_value,
                        "n_nonzero": result.n}  # fmt: skip
            else:
                row |= {"n": 0, "n_nonzero": 0} | dict.fromkeys(
                    ["median_difference", "estimate", "ci_low", "ci_high", "p_value"], np.nan
                )
            rows.append(row)
    table = pd.DataFrame(rows, columns=[c for c in TABLE_COLUMNS if c not in ("p_adjusted", "significant", "tested")])
    table["tested"] = table["n_nonzero"] >= MIN_NONZERO_PAIRS
    table["p_adjusted"] = adjust_p(table["p_value"].where(table["tested"]).to_numpy(float), adjust)
    table["significant"] = table["p_adjusted"] < alpha
    return table[TABLE_COLUMNS]


def untested_reasons(table) -> list[str]:
    """Why each comparison of :func:`comparison_table` was left out of the family, in words."""
    out = []
    for row in table[~table["tested"]].itertuples():
        why = (
            "no pair with both results"
            if row.n == 0
            else (f"{row.n_nonzero} of {row.n} pairs differ" if row.n_nonzero else f"all {row.n} pairs equal")
        )
        out.append(f"{row.model_a} vs {row.model_b}, {row.missing}: {why}")
    return out


@dataclass(frozen=True)
class MixedModelResult:
    """One linear mixed-effects model over every combination: ``metric ~ model * missing``
    with a random intercept per patient, and the model contrasts it gives per combination."""

    formula: str
    # DataFrame: model_a, model_b, missing, estimate, ci_low, ci_high, p_value, p_adjusted, significant
    contrasts: object
    n_obs: int
    n_patients: int
    patient_variance: float  # variance of the random intercept
    residual_variance: float
    converged: bool
    left_out: tuple[str, ...]  # combinations without results of every model (not in the fit)


def mixed_model(results, pairs, metric: str = "dice", missing=None, adjust: str = "bonferroni",
                alpha: float = 0.05) -> MixedModelResult:  # fmt: skip
    """Fit ``metric ~ C(model) * C(missing)`` with a random intercept per patient
    (``statsmodels.formula.api.mixedlm``, REML) over the models of ``pairs`` and every
    combination that all of them have; each pair's difference a - b per combination is a
    Wald contrast (normal approximation), adjusted over the contrasts as ``adjust`` says.

    Raises:
        ValueError: fewer than two models or two patients with results.
    """
    import warnings

    import pandas as pd
    import statsmodels.formula.api as smf

    models = sorted({m for pair in pairs for m in pair})
    results = applicable_rows(results)
    data = results[results["model"].isin(models)][["patient_id", "model", "missing", metric]].dropna()
    combos = _combinations(data, missing)
    cells = data.groupby("missing")["model"].nunique()
    kept = [c for c in combos if cells.get(c, 0) == len(models)]
    data = data[data["missing"].isin(kept)].rename(columns={metric: "y"}).reset_index(drop=True)
    if data["model"].nunique() < 2 or data["patient_id"].nunique() < 2:
        raise ValueError(
            f"a mixed model needs results of at least 2 models on 2 patients; got models {sorted(set(data['model']))} "
            f"on {data['patient_id'].nunique()} patients"
        )
    formula = "y ~ C(model) * C(missing)" if len(kept) > 1 else "y ~ C(model)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = smf.mixedlm(formula, data, groups=data["patient_id"]).fit(reml=True)
    converged = bool(getattr(fit, "converged", True)) and not any("converge" in str(w.message) for w in caught)
    # Every row of one (model, combination) cell has the same fixed-effect design row.
    first = data.reset_index().groupby(["model", "missing"])["index"].first()
    exog = np.asarray(fit.model.exog)
    rows, contrasts = [], []
    for a, b in pairs:
        for combo in kept:
            if (a, combo) in first.index and (b, combo) in first.index:
                contrasts.append(exog[first[(a, combo)]] - exog[first[(b, combo)]])
                rows.append({"model_a": a, "model_b": b, "missing": combo})
    table = pd.DataFrame(rows, columns=["model_a", "model_b", "missing"])
    if rows:
        test = fit.t_test(np.vstack(contrasts))
        ci = np.asarray(test.conf_int(alpha=alpha))
        table["estimate"] = np.asarray(test.effect, float)
        table["ci_low"], table["ci_high"] = ci[:, 0], ci[:, 1]
        table["p_value"] = np.asarray(test.pvalue, float).ravel()
    else:
        table = table.assign(estimate=np.nan, ci_low=np.nan, ci_high=np.nan, p_value=np.nan)
    table["p_adjusted"] = adjust_p(table["p_value"].to_numpy(float), adjust)
    table["significant"] = table["p_adjusted"] < alpha
    return MixedModelResult(
        formula=f"{metric} ~ model * missing + (1 | patient)" if len(kept) > 1 else f"{metric} ~ model + (1 | patient)",
        contrasts=table, n_obs=int(len(data)), n_patients=int(data["patient_id"].nunique()),
        patient_variance=float(np.asarray(fit.cov_re)[0, 0]), residual_variance=float(fit.scale),
        converged=converged, left_out=tuple(c for c in combos if c not in kept),
    )  # fmt: skip
