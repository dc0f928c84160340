"""Figure builders: arrays in, figures or RGB arrays out (no file I/O, no streamlit)."""

from __future__ import annotations

import numpy as np

from core.sequences import DISPLAY, ENHANCING, NECROSIS, OEDEMA, SEQUENCES

# Label colours (Okabe-Ito, readable with colour-vision deficiency).
LABEL_COLOURS = {NECROSIS: (213, 94, 0), OEDEMA: (86, 180, 233), ENHANCING: (240, 228, 66)}


def window(image: np.ndarray, mask: np.ndarray | None = None, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Scale intensities to [0, 1] between percentiles of the non-zero (or masked) voxels."""
    values = image[mask] if mask is not None else image[image != 0]
    if values.size == 0:
        return np.zeros_like(image, dtype=np.float32)
    lo, hi = np.percentile(values, [low, high])
    return np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


def take_slice(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """A 2-D slice for display (rows = anterior-posterior or superior-inferior, top = up).

    ``plane`` is axial (third axis), coronal (second) or sagittal (first); arrays follow
    the RAS-like voxel order of MNI and BraTS grids, rotated so anterior/superior is up.
    """
    if plane == "axial":
        out = volume[:, :, index]
    elif plane == "coronal":
        out = volume[:, index, :]
    elif plane == "sagittal":
        out = volume[index, :, :]
    else:
        raise ValueError(f"plane must be axial, coronal or sagittal, got {plane!r}")
    return np.rot90(out)


def overlay_rgb(gray: np.ndarray, labels: np.ndarray | None, opacity: float = 0.45) -> np.ndarray:
    """(H, W, 3) uint8: a [0, 1] gray slice with label colours blended in."""
    rgb = np.repeat(gray[..., None], 3, axis=-1) * 255
    if labels is not None:
        for label, colour in LABEL_COLOURS.items():
            mask = labels == label
            rgb[mask] = (1 - opacity) * rgb[mask] + opacity * np.asarray(colour, dtype=np.float32)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def outline_rgb(rgb: np.ndarray, mask: np.ndarray, colour=(255, 255, 255)) -> np.ndarray:
    """(H, W, 3) uint8: ``rgb`` with the one-pixel outline of a 2-D boolean mask drawn in ``colour``.

    The outline is the mask's pixels with a 4-neighbour outside it (image edges count as inside);
    an empty mask draws nothing.
    """
    padded = np.pad(mask, 1, mode="edge")
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    out = rgb.copy()
    out[mask & ~inner] = colour
    return out


# Error map colours (Okabe-Ito): true positive bluish green, false positive vermillion,
# false negative blue; distinguishable with the common colour-vision deficiencies.
ERROR_COLOURS = {"tp": (0, 158, 115), "fp": (213, 94, 0), "fn": (0, 114, 178)}


def error_map_rgb(gray: np.ndarray, pred: np.ndarray, ref: np.ndarray, opacity: float = 0.55) -> np.ndarray:
    """(H, W, 3) uint8: a [0, 1] gray slice with TP / FP / FN voxels of two boolean masks."""
    rgb = np.repeat(gray[..., None], 3, axis=-1) * 255
    for key, mask in (("tp", pred & ref), ("fp", pred & ~ref), ("fn", ~pred & ref)):
        rgb[mask] = (1 - opacity) * rgb[mask] + opacity * np.asarray(ERROR_COLOURS[key], dtype=np.float32)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def case_montage(images: np.ndarray, available, labels: np.ndarray | None, title: str = ""):
    """Matplotlib figure: four sequences and labels, axial and coronal through the tumour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if labels is not None and labels.any():
        centre = np.round(np.argwhere(labels > 0).mean(0)).astype(int)
    else:
        centre = np.array(images.shape[1:]) // 2
    fig, axes = plt.subplots(2, 5, figsize=(15, 6.6), facecolor="black")
    brain = images.any(0)
    for row, (plane, index) in enumerate((("axial", centre[2]), ("coronal", centre[1]))):
        for col, sequence in enumerate(SEQUENCES):
            ax = axes[row, col]
            if available[col]:
                ax.imshow(take_slice(window(images[col], brain), plane, index), cmap="gray", vmin=0, vmax=1)
            else:
                ax.text(
                    0.5,
                    0.5,
                    f"{DISPLAY[sequence]}\nmissing",
                    color="w",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                )
            ax.set_title(f"{DISPLAY[sequence]} {plane}", color="w", fontsize=9)
        t1c = window(images[SEQUENCES.index("t1c")], brain)
        lab = take_slice(labels, plane, index) if labels is not None else None
        axes[row, 4].imshow(overlay_rgb(take_slice(t1c, plane, index), lab))
        axes[row, 4].set_title(f"labels {plane}", color="w", fontsize=9)
    for ax in axes.flat:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, color="w")
    fig.tight_layout()
    return fig


def training_curve_figure(log, title: str = ""):
    """Plotly figure of a training log (DataFrame of training_log.csv): loss and validation Dice."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_trace(go.Scatter(x=log["iteration"], y=log["loss"], name="Dice loss", mode="lines"))
    for column, name, dash in (("val_dice_tc", "validation Dice, tumour core", "solid"),
                               ("val_dice_wt", "validation Dice, whole tumour", "dot")):  # fmt: skip
        if column in log and log[column].notna().any():
            valid = log[log[column].notna()]
            figure.add_trace(
                go.Scatter(x=valid["iteration"], y=valid[column], name=name, mode="lines+markers", line={"dash": dash}),
                secondary_y=True,
            )
    figure.update_layout(title=title, height=360, margin={"t": 40, "b": 40}, legend={"orientation": "h", "y": -0.2})
    figure.update_xaxes(title_text="iteration")
    figure.update_yaxes(title_text="loss", secondary_y=False)
    figure.update_yaxes(title_text="Dice", range=[0, 1], secondary_y=True)
    return figure


# --------------------------------------------------------------------------- cohort figures
# Long results tables (core.store.ResultStore.table) in, plotly figures out.

SIGNIFICANCE_MARK = "*"


def _combination_order(names) -> list[str]:
    from core.sequences import EXTENDED_COMBINATIONS, combination_name

    order = [combination_name(m) for m in EXTENDED_COMBINATIONS]
    return sorted(set(names), key=lambda n: order.index(n) if n in order else len(order))


def _label(name: str) -> str:
    from core.sequences import display_name, parse_combination

    return display_name(parse_combination(name))


def hospital_boxplot(table, metric: str = "dice", region: str = "tc", title: str = ""):
    """The paper's Figure 2: a metric per hospital (as acquired), every case a point, per model."""
    import plotly.express as px

    data = table[(table["region"] == region) & (table["missing"] == table["acquired_missing"])].copy()
    data["hospital"] = data["hospital"].map(lambda h: "public" if h == "public" else f"hospital {h}")
    order = sorted(data["hospital"].unique(), key=lambda h: (h != "public", h))
    figure = px.box(data, x="hospital", y=metric, color="model", points="all", hover_data=["patient_id", "missing"],
                    category_orders={"hospital": order}, title=title)  # fmt: skip
    figure.update_layout(height=420, boxmode="group", margin={"t": 50, "b": 40})
    if metric == "dice":
        figure.update_yaxes(range=[0, 1.02])
    return figure


def missing_comparison_figure(table, model_a: str, model_b: str, comparison=None, region: str = "tc",
                              metric: str = "dice", title: str = ""):  # fmt: skip
    """The paper's Figure 4: per combination of missing sequences, two models side by side.

    ``comparison`` (core.stats.comparison_table output) marks significant combinations with *.
    """
    import plotly.graph_objects as go

    data = table[(table["region"] == region) & table["model"].isin([model_a, model_b])]
    order = _combination_order(data["missing"])
    figure = go.Figure()
    for model in (model_a, model_b):
        part = data[data["model"] == model]
        figure.add_trace(go.Box(x=part["missing"].map(_label), y=part[metric], name=model, boxpoints="all",
                                jitter=0.3, pointpos=0))  # fmt: skip
    if comparison is not None:
        for _, row in comparison[comparison["significant"]].iterrows():
            figure.add_annotation(x=_label(row["missing"]), y=1.05 if metric == "dice" else None,
                                  text=SIGNIFICANCE_MARK, showarrow=False, font={"size": 20})  # fmt: skip
    figure.update_layout(boxmode="group", height=440, title=title, margin={"t": 50, "b": 80},
                         xaxis={"categoryorder": "array", "categoryarray": [_label(n) for n in order]})  # fmt: skip
    if metric == "dice":
        figure.update_yaxes(range=[0, 1.1], title="Dice")
    return figure


def median_heatmap(table, region: str = "tc", metric: str = "dice", title: str = ""):
    """The paper's Figure 5: median of a metric, models x combinations of missing sequences."""
    import plotly.graph_objects as go

    data = table[table["region"] == region]
    pivot = data.pivot_table(index="model", columns="missing", values=metric, aggfunc="median")
    pivot = pivot[_combination_order(pivot.columns)]
    figure = go.Figure(go.Heatmap(z=pivot.to_numpy(), x=[_label(c) for c in pivot.columns], y=list(pivot.index),
                                  colorscale="Viridis", zmin=0, zmax=1 if metric == "dice" else None,
                                  text=np.round(pivot.to_numpy(), 2), texttemplate="%{text}",
                                  colorbar={"title": f"median {metric}"}))  # fmt: skip
    figure.update_layout(height=120 + 40 * len(pivot), title=title, margin={"t": 50, "b": 80})
    return figure


def bland_altman_figure(table, model: str, region: str = "tc", title: str = ""):
    """Volume agreement of a model with the reference: difference vs mean, bias and 95 % limits."""
    import plotly.graph_objects as go

    data = table[(table["model"] == model) & (table["region"] == region)].dropna(subset=["volume_pred_ml"])
    mean = (data["volume_pred_ml"] + data["volume_ref_ml"]) / 2
    diff = data["volume_pred_ml"] - data["volume_ref_ml"]
    bias, spread = float(diff.mean()), float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    figure = go.Figure(go.Scatter(x=mean, y=diff, mode="markers", text=data["patient_id"] + " · " + data["missing"],
                                  name="cases"))  # fmt: skip
    for value, name in ((bias, f"bias {bias:.1f} mL"), (bias + 1.96 * spread, "+1.96 SD"),
                        (bias - 1.96 * spread, "-1.96 SD")):  # fmt: skip
        figure.add_hline(y=value, line_dash="dash" if "SD" in name else "solid", annotation_text=name)
    figure.update_layout(title=title or f"{model}: volume agreement", height=380,
                         xaxis_title="mean of predicted and reference volume (mL)",
                         yaxis_title="predicted - reference (mL)")  # fmt: skip
    return figure
