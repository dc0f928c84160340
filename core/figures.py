"""Figure builders: arrays in, figures or RGB arrays out (no file I/O, no streamlit)."""

from __future__ import annotations

import numpy as np

from core.sequences import DISPLAY, ENHANCING, NECROSIS, OEDEMA, SEQUENCES, combination_label, order_combinations

# Label colours (Okabe-Ito, readable with colour-vision deficiency).
LABEL_COLOURS = {NECROSIS: (213, 94, 0), OEDEMA: (86, 180, 233), ENHANCING: (240, 228, 66)}
PLANES = ("axial", "coronal", "sagittal")
# Voxel axes of each plane as take_slice shows it: (image column, image row counted from the
# bottom, through the plane).
PLANE_AXES = {"axial": (0, 1, 2), "coronal": (0, 2, 1), "sagittal": (1, 2, 0)}


def intensity_limits(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float, float, float]:
    """(minimum, maximum, low percentile, high percentile) of the non-zero voxels of a volume:
    the range of a window slider and its default. An all-zero volume gives (0, 1, 0, 1)."""
    values = image[image != 0]
    if values.size == 0:
        return 0.0, 1.0, 0.0, 1.0
    lo, hi = np.percentile(values, [low, high])
    return float(values.min()), float(values.max()), float(lo), float(hi)


def scale_window(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Intensities mapped linearly to [0, 1] between ``lo`` (black) and ``hi`` (white), clipped."""
    return np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


def window(image: np.ndarray, mask: np.ndarray | None = None, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Scale intensities to [0, 1] between percentiles of the non-zero (or masked) voxels."""
    values = image[mask] if mask is not None else image[image != 0]
    if values.size == 0:
        return np.zeros_like(image, dtype=np.float32)
    lo, hi = np.percentile(values, [low, high])
    return scale_window(image, lo, hi)


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


def voxel_at(plane: str, column, row, index: int, shape: tuple[int, int, int]) -> tuple:
    """The voxel (x, y, z) shown at (column, row) of ``take_slice(volume, plane, index)``.

    ``column`` and ``row`` may be integer arrays (then the result is three arrays).
    """
    across, up, through = PLANE_AXES[plane]
    voxel = [None, None, None]
    voxel[across], voxel[up], voxel[through] = column, shape[up] - 1 - np.asarray(row), index
    return tuple(voxel)


def tumour_box(mask: np.ndarray | None, margin: int = 12) -> tuple[tuple[int, int], ...] | None:
    """Inclusive voxel range per axis of a mask's bounding box widened by ``margin`` voxels
    (clipped to the volume), e.g. to zoom a viewer to the tumour; None for an empty mask."""
    if mask is None or not mask.any():
        return None
    box = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append((max(int(present[0]) - margin, 0), min(int(present[-1]) + margin, mask.shape[axis] - 1)))
    return tuple(box)


def tumour_centre(labels: np.ndarray | None, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The voxel at the centre of mass of a label map's tumour (every non-zero label), rounded;
    the centre of a volume of ``shape`` when there is no tumour (no labels, or all zero)."""
    if labels is None or not labels.any():
        return tuple(int(n) // 2 for n in shape)
    return tuple(int(v) for v in np.round(np.argwhere(labels > 0).mean(0)))


def _blend(rgb: np.ndarray, mask: np.ndarray, colour, opacity: float) -> None:
    rgb[mask] = (1 - opacity) * rgb[mask] + opacity * np.asarray(colour, dtype=np.float32)


def _opacity(opacity: float | dict, key) -> float:
    return float(opacity.get(key, 0.0) if isinstance(opacity, dict) else opacity)


def overlay_rgb(gray: np.ndarray, labels: np.ndarray | None, opacity: float | dict = 0.45) -> np.ndarray:
    """(H, W, 3) uint8: a [0, 1] gray slice with label colours blended in.

    ``opacity`` is one value for every label or {label: opacity} (a label left out is not drawn).
    """
    rgb = np.repeat(gray[..., None], 3, axis=-1) * 255
    if labels is not None:
        for label, colour in LABEL_COLOURS.items():
            _blend(rgb, labels == label, colour, _opacity(opacity, label))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def outline(mask: np.ndarray, outer: bool = False) -> np.ndarray:
    """Boolean (H, W): the 4-connected boundary of a 2-D mask.

    Inner (default): pixels of the mask with a 4-neighbour outside it (beyond the edge counts
    as outside). Outer: pixels outside the mask with a 4-neighbour inside it. An empty mask has
    no boundary.
    """
    mask = np.asarray(mask, bool)
    padded = np.pad(mask, 1)
    neighbours = (padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:])
    if outer:
        return ~mask & np.logical_or.reduce(neighbours)
    return mask & ~np.logical_and.reduce(neighbours)


# Outline colours (Okabe-Ito vermillion and sky blue): far apart for every common colour-vision
# deficiency, and drawn opaque.
OUTLINE_COLOURS = {"prediction": (213, 94, 0), "reference": (86, 180, 233)}


def outline_rgb(gray: np.ndarray, pred: np.ndarray | None, ref: np.ndarray | None) -> np.ndarray:
    """(H, W, 3) uint8: a [0, 1] gray slice with the outlines of two boolean masks.

    The reference is drawn on its outer boundary and the prediction on its inner one, so where
    they agree both lines show side by side instead of one hiding the other.
    """
    rgb = np.repeat(gray[..., None], 3, axis=-1) * 255
    for name, mask, outer in (("reference", ref, True), ("prediction", pred, False)):
        if mask is not None:
            _blend(rgb, outline(mask, outer), OUTLINE_COLOURS[name], 1.0)
    return np.clip(rgb, 0, 255).astype(np.uint8)


# Error map colours (Okabe-Ito yellow, vermillion and blue): blended half and half with any
# gray they stay apart from each other and from the gray for normal vision and for protan,
# deutan and tritan vision (tests/test_figures.py simulates it).
ERROR_COLOURS = {"tp": (240, 228, 66), "fp": (213, 94, 0), "fn": (0, 114, 178)}
ERROR_WORDS = {"tp": "correct (prediction and reference)", "fp": "extra (prediction only)",
               "fn": "missed (reference only)"}  # fmt: skip


def error_map_rgb(gray: np.ndarray, pred: np.ndarray, ref: np.ndarray, opacity: float | dict = 0.55) -> np.ndarray:
    """(H, W, 3) uint8: a [0, 1] gray slice with TP / FP / FN voxels of two boolean masks.

    ``opacity`` is one value or {"tp": .., "fp": .., "fn": ..}.
    """
    rgb = np.repeat(gray[..., None], 3, axis=-1) * 255
    for key, mask in (("tp", pred & ref), ("fp", pred & ~ref), ("fn", ~pred & ref)):
        _blend(rgb, mask, ERROR_COLOURS[key], _opacity(opacity, key))
    return np.clip(rgb, 0, 255).astype(np.uint8)


OVERLAYS = ("prediction", "reference", "outlines", "errors", "none")


def slice_rgb(gray: np.ndarray, pred: np.ndarray | None = None, ref: np.ndarray | None = None,
              overlay: str = "prediction", region: str = "tc", opacity: float | dict = 0.5) -> np.ndarray:  # fmt: skip
    """(H, W, 3) uint8: one slice as the viewer shows it.

    Args:
        gray: (H, W) float in [0, 1], the windowed sequence.
        pred, ref: (H, W) canonical label slices, or None where there is none (that layer is left out).
        overlay: one of OVERLAYS: filled labels of the prediction or the reference (opacity per
            label), outlines of ``region`` of both (opaque), the error map of ``region``
            (opacity per error kind), or none.
        region: tc, wt or et (outlines and errors).
    """
    from core.metrics import region_mask

    if overlay not in OVERLAYS:
        raise ValueError(f"overlay must be one of {OVERLAYS}, got {overlay!r}")
    if overlay in ("prediction", "reference"):
        return overlay_rgb(gray, pred if overlay == "prediction" else ref, opacity)
    masks = [None if labels is None else region_mask(labels, region) for labels in (pred, ref)]
    if overlay == "outlines":
        return outline_rgb(gray, *masks)
    if overlay == "errors" and all(m is not None for m in masks):
        return error_map_rgb(gray, *masks, opacity)
    return overlay_rgb(gray, None)


def tri_planar_slices(image: np.ndarray, point, lo: float, hi: float, pred: np.ndarray | None = None,
                      ref: np.ndarray | None = None, overlay: str = "prediction", region: str = "tc",
                      opacity: float | dict = 0.5, axial_pred: np.ndarray | None = None) -> dict:  # fmt: skip
    """{plane: (H, W, 3) uint8}: the axial, coronal and sagittal slices through ``point`` as
    :func:`slice_rgb` draws them, the image windowed between ``lo`` and ``hi``.

    ``image``, ``pred`` and ``ref`` are (X, Y, Z) volumes (labels may be None). Without ``pred``,
    ``axial_pred`` (X, Y), the labels of the axial slice alone (a quick preview), stands in for it
    on the axial plane.
    """
    slices = {}
    for plane in PLANES:
        index = point[PLANE_AXES[plane][2]]
        labels = [None if v is None else take_slice(v, plane, index) for v in (pred, ref)]
        if pred is None and axial_pred is not None and plane == "axial":
            labels[0] = np.rot90(axial_pred)
        gray = scale_window(take_slice(image, plane, index), lo, hi)
        slices[plane] = slice_rgb(gray, *labels, overlay=overlay, region=region, opacity=opacity)
    return slices


def legend_html(items) -> str:
    """One line of HTML: a colour swatch before each description; ``items`` is [(rgb, words)]."""
    from html import escape

    swatch = ("<span style='display:inline-block;width:0.9em;height:0.9em;border:1px solid #666;"
              "vertical-align:middle;margin-right:0.3em;background:rgb{}'></span>{}")  # fmt: skip
    return " &nbsp; ".join(swatch.format(tuple(int(c) for c in colour), escape(words)) for colour, words in items)


def png_data_uri(rgb: np.ndarray) -> str:
    """An (H, W, 3) uint8 image as a PNG data URI (lossless; what a plotly image trace shows)."""
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


CLICK_POINTS = 2500  # clickable points per plane at most: a finer grid makes the browser slow


def clicked_voxel(point: dict) -> tuple[int, int, int] | None:
    """The voxel (x, y, z) a click on :func:`tri_planar_figure` names, from one selected point
    (its customdata arrives as a list, or as {"0": x, "1": y, "2": z} from a typed array); None
    for anything else (the image itself, an empty selection)."""
    data = point.get("customdata") if isinstance(point, dict) else None
    if isinstance(data, dict):
        data = [data.get(str(i), data.get(i)) for i in range(3)]
    if not isinstance(data, (list, tuple)) or len(data) != 3 or any(v is None for v in data):
        return None
    return tuple(int(v) for v in data)


def counted(n: int, noun: str) -> str:
    """``1 patient``, ``20 patients``: a count with its noun in the number it takes."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def tri_planar_figure(slices: dict, point, shape, box=None, titles: dict | None = None, height: int = 460):
    """Plotly figure: the axial slice through ``point`` large on the left, the coronal and
    sagittal ones stacked on the right, each with a crosshair at ``point``.

    Args:
        slices: {plane: (H, W, 3) uint8}, each from ``take_slice(volume, plane, point[axis])``.
        point: the crosshair voxel (x, y, z).
        shape: the volume's (X, Y, Z).
        box: ((x0, x1), (y0, y1), (z0, z1)) inclusive voxel ranges to zoom to, or None.
        titles: {plane: title}, written in each image's bottom-left corner; the plane's name by default.

    Axes: axial x/y, coronal x2/y2, sagittal x3/y3. Each plane carries a grid of invisible
    points (at most CLICK_POINTS, evenly spaced over the visible part) whose customdata is the
    voxel (x, y, z) under it: a click selects the nearest one (see :func:`clicked_voxel`).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    box = box or tuple((0, n - 1) for n in shape)
    titles = titles or {plane: plane for plane in PLANES}
    figure = make_subplots(rows=2, cols=2, column_widths=[0.64, 0.36], horizontal_spacing=0.01, vertical_spacing=0.02,
                           specs=[[{"rowspan": 2}, {}], [None, {}]])  # fmt: skip
    for number, (plane, (row, col)) in enumerate(zip(PLANES, ((1, 1), (1, 2), (2, 2))), start=1):
        across, up, through = PLANE_AXES[plane]
        columns = box[across]
        rows = (shape[up] - 1 - box[up][1], shape[up] - 1 - box[up][0])
        figure.add_trace(go.Image(source=png_data_uri(slices[plane]), hoverinfo="skip", name=plane), row, col)
        stride = max(1, int(np.ceil(np.sqrt((columns[1] - columns[0] + 1) * (rows[1] - rows[0] + 1) / CLICK_POINTS))))
        grid_r, grid_c = np.mgrid[rows[0] : rows[1] + 1 : stride, columns[0] : columns[1] + 1 : stride]
        grid_c, grid_r = grid_c.ravel(), grid_r.ravel()
        voxels = np.stack(np.broadcast_arrays(*voxel_at(plane, grid_c, grid_r, point[through], shape)), axis=1)
        figure.add_trace(go.Scatter(x=grid_c, y=grid_r, customdata=voxels, mode="markers", name=f"{plane} click",
                                    marker={"size": 6, "opacity": 0}, selected={"marker": {"opacity": 0}},
                                    unselected={"marker": {"opacity": 0}},
                                    hovertemplate="x %{customdata[0]}, y %{customdata[1]}, z %{customdata[2]}"
                                                  "<extra></extra>"), row, col)  # fmt: skip
        cross_col, cross_row = point[across], shape[up] - 1 - point[up]
        line = {"color": "rgba(255, 255, 255, 0.55)", "width": 1}
        figure.add_vline(x=cross_col, line=line, row=row, col=col)
        figure.add_hline(y=cross_row, line=line, row=row, col=col)
        axis = "" if number == 1 else str(number)
        # Bottom left: the top right is where Plotly's toolbar appears, over the coronal image.
        figure.add_annotation(text=titles[plane], xref=f"x{axis} domain", yref=f"y{axis} domain", x=0.01, y=0.01,
                              xanchor="left", yanchor="bottom", showarrow=False, font={"color": "white", "size": 12},
                              bgcolor="rgba(0, 0, 0, 0.5)")  # fmt: skip
        figure.update_xaxes(range=[columns[0] - 0.5, columns[1] + 0.5], row=row, col=col)
        figure.update_yaxes(range=[rows[1] + 0.5, rows[0] - 0.5], scaleanchor=f"x{axis}", row=row, col=col)
    figure.update_xaxes(visible=False, constrain="domain")
    figure.update_yaxes(visible=False, constrain="domain")
    figure.update_layout(height=height, margin={"l": 0, "r": 0, "t": 0, "b": 0}, showlegend=False,
                         plot_bgcolor="black", hovermode="closest")  # fmt: skip
    return figure


def case_montage(images: np.ndarray, available, labels: np.ndarray | None, title: str = ""):
    """Matplotlib figure: four sequences and labels, axial and coronal through the tumour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centre = tumour_centre(labels, images.shape[1:])
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
    """Plotly figure of a training log (DataFrame of training_log.csv): loss above, validation Dice below.

    Two panels on one iteration axis rather than two y axes on one panel: a second y axis takes
    its ticks from the first, so its top tick fell below Dice values near 1.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12, row_heights=[0.5, 0.5])
    figure.add_trace(go.Scatter(x=log["iteration"], y=log["loss"], name="Dice loss", mode="lines"), row=1, col=1)
    for column, name, dash in (("val_dice_tc", "validation Dice, tumour core", "solid"),
                               ("val_dice_wt", "validation Dice, whole tumour", "dot")):  # fmt: skip
        if column in log and log[column].notna().any():
            valid = log[log[column].notna()]
            figure.add_trace(
                go.Scatter(x=valid["iteration"], y=valid[column], name=name, mode="lines+markers", line={"dash": dash}),
                row=2, col=1,
            )  # fmt: skip
    figure.update_layout(title=title, height=460, margin={"t": 40, "b": 40}, legend={"orientation": "h", "y": -0.15})
    figure.update_xaxes(title_text="iteration", row=2, col=1)
    figure.update_yaxes(title_text="loss", rangemode="tozero", row=1, col=1)
    # Dice is in [0, 1]: ticks every 0.2 up to 1, and a little room above 1 for the markers.
    figure.update_yaxes(title_text="Dice", range=[0, 1.05], tickvals=[0, 0.2, 0.4, 0.6, 0.8, 1.0], row=2, col=1)
    return figure


# --------------------------------------------------------------------------- cohort figures
# Long results tables (core.store.ResultStore.table) in, plotly figures out.

SIGNIFICANCE_MARK = "*"


# Axis titles with units, per metric column of the results table.
METRIC_TITLES = {"dice": "Dice (0 to 1)", "sensitivity": "sensitivity (0 to 1)", "hd95": "HD95 (mm)",
                 "volume_diff_ml": "volume error, predicted - reference (mL)"}  # fmt: skip


def hospital_label(hospital: str) -> str:
    """A hospital as the figures and captions name it: "public", "hospital 3", "no hospital given"."""
    from core.store import NO_HOSPITAL

    hospital = str(hospital)
    if hospital in ("public", NO_HOSPITAL):
        return {"public": "public", NO_HOSPITAL: "no hospital given"}[hospital]
    return f"hospital {hospital}"


def hospital_order(hospitals) -> list:
    """Hospitals in reading order: public, then 1..6 numerically, then any others by name."""
    return sorted(set(hospitals), key=lambda h: (h != "public", not str(h).isdigit(), int(h) if str(h).isdigit() else 0,
                                                 str(h)))  # fmt: skip


def hospital_boxplot(table, metric: str = "dice", region: str = "tc", title: str = ""):
    """The paper's Figure 2: a metric per hospital (as acquired), every case a point, per model.

    Each point carries (patient_id, missing) as customdata, so a selection names its case.
    """
    import plotly.express as px

    from core.sequences import REGION_DISPLAY
    from core.stats import as_acquired

    data = as_acquired(table[table["region"] == region]).copy()  # not-applicable rows left out
    order = [hospital_label(h) for h in hospital_order(data["hospital"])]
    data["hospital"] = data["hospital"].map(hospital_label)
    metric_title = METRIC_TITLES.get(metric, metric)
    region_name = REGION_DISPLAY.get(region, region).capitalize()
    title = title or f"{region_name}: {metric_title} per hospital, each case as acquired"
    figure = px.box(data, x="hospital", y=metric, color="model", points="all", hover_data=["patient_id", "missing"],
                    category_orders={"hospital": order}, title=title)  # fmt: skip
    figure.update_layout(height=440, boxmode="group", margin={"t": 60, "b": 40})
    figure.update_xaxes(title_text="hospital (cases as acquired; each point is one case)")
    # Under each hospital: how many cases its boxes rest on (those with the metric defined), a
    # range where the models were evaluated on different numbers of them (short enough to stay
    # level at 1280 px; the Hospitals page's caption names the models).
    counts = data.groupby(["hospital", "model"])[metric].count().groupby(level="hospital")
    low, high = counts.min(), counts.max()
    ticks = [f"{h}<br>{counted(high[h], 'case')}" if low[h] == high[h]
             else f"{h}<br>{low[h]} to {high[h]} cases" for h in order]  # fmt: skip
    figure.update_xaxes(tickmode="array", tickvals=order, ticktext=ticks)
    figure.update_yaxes(title_text=metric_title)
    if metric == "dice":
        figure.update_yaxes(range=[0, 1.02])
    return figure


def missing_comparison_figure(table, model_a: str, model_b: str, comparison=None, region: str = "tc",
                              metric: str = "dice", title: str = ""):  # fmt: skip
    """The paper's Figure 4: per combination of missing sequences, two models side by side.

    ``comparison`` (core.stats.comparison_table output) marks significant combinations with *.
    """
    import plotly.graph_objects as go

    from core.stats import applicable_rows

    table = applicable_rows(table)  # a combination a model cannot run has no box, not a Dice of 0
    data = table[(table["region"] == region) & table["model"].isin([model_a, model_b])]
    order = order_combinations(data["missing"])
    figure = go.Figure()
    for model in (model_a, model_b):
        part = data[data["model"] == model]
        figure.add_trace(go.Box(x=part["missing"].map(combination_label), y=part[metric], name=model,
                                boxpoints="all", jitter=0.3, pointpos=0))  # fmt: skip
    if comparison is not None:
        for _, row in comparison[comparison["significant"]].iterrows():
            figure.add_annotation(x=combination_label(row["missing"]), y=1.05 if metric == "dice" else None,
                                  text=SIGNIFICANCE_MARK, showarrow=False, font={"size": 20})  # fmt: skip
    categories = [combination_label(n) for n in order]
    figure.update_layout(boxmode="group", height=440, title=title, margin={"t": 50 if title else 20, "b": 80},
                         xaxis={"categoryorder": "array", "categoryarray": categories})  # fmt: skip
    if metric == "dice":
        figure.update_yaxes(range=[0, 1.1], title="Dice")
    return figure


def median_heatmap(table, region: str = "tc", metric: str = "dice", title: str = ""):
    """The paper's Figure 5: median of a metric, models x combinations of missing sequences.

    Rows are labelled with the model and the number of patients behind its medians ("n=20", or
    "n=20 to 172" where the combinations rest on different numbers); each cell's own number is
    in its hover text.
    """
    import plotly.graph_objects as go

    from core.stats import applicable_rows

    data = applicable_rows(table)  # not applicable: an empty cell, not a median of 0
    data = data[data["region"] == region]
    pivot = data.pivot_table(index="model", columns="missing", values=metric, aggfunc="median")
    pivot = pivot[order_combinations(pivot.columns)]
    # The patients each median is of (an undefined metric is left out of it): models and combinations
    # evaluated on different numbers of patients can share the grid, but should not pass for one sample.
    counts = data.dropna(subset=[metric]).pivot_table(index="model", columns="missing", values="patient_id",
                                                      aggfunc="nunique")  # fmt: skip
    counts = counts.reindex(index=pivot.index, columns=pivot.columns).fillna(0).astype(int)
    rows = []
    for model, row in counts.iterrows():
        low, high = row[row > 0].min(), row.max()
        rows.append(f"{model} (n={high})" if low == high else f"{model} (n={low} to {high})")
    figure = go.Figure(go.Heatmap(z=pivot.to_numpy(), x=[combination_label(c) for c in pivot.columns],
                                  y=rows, customdata=counts.to_numpy(),
                                  hovertemplate="%{y}, %{x}: median %{z:.3f} of %{customdata} patients<extra></extra>",
                                  colorscale="Viridis", zmin=0, zmax=1 if metric == "dice" else None,
                                  text=np.round(pivot.to_numpy(), 2), texttemplate="%{text}",
                                  colorbar={"title": f"median {metric}"}))  # fmt: skip
    # At least 240 px: with one or two rows the colour bar would have no room for its title and ticks.
    figure.update_layout(
        height=max(240, 90 + 40 * len(pivot)) + (30 if title else 0),
        title=title,
        margin={"t": 50 if title else 20, "b": 100, "r": 40},
    )  # no title: no empty band above the grid
    return figure


def bland_altman_figure(table, model: str, region: str = "tc", title: str = ""):
    """Volume agreement of a model with the reference: difference vs mean, bias and 95 % limits.

    Pass one result per patient (one combination of missing sequences): the limits assume
    independent points, which results of one patient under several combinations are not.
    """
    import plotly.graph_objects as go

    from core.stats import applicable_rows

    table = applicable_rows(table)
    data = table[(table["model"] == model) & (table["region"] == region)].dropna(subset=["volume_pred_ml"])
    mean = (data["volume_pred_ml"] + data["volume_ref_ml"]) / 2
    diff = data["volume_pred_ml"] - data["volume_ref_ml"]
    bias, spread = float(diff.mean()), float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    figure = go.Figure(go.Scatter(x=mean, y=diff, mode="markers", text=data["patient_id"] + " · " + data["missing"],
                                  name="cases"))  # fmt: skip
    for value, name in ((bias, f"bias {bias:.1f} mL"), (bias + 1.96 * spread, f"+1.96 SD ({bias + 1.96 * spread:.1f})"),
                        (bias - 1.96 * spread, f"-1.96 SD ({bias - 1.96 * spread:.1f})")):  # fmt: skip
        figure.add_hline(y=value, line_dash="dash" if "SD" in name else "solid", annotation_text=name)
    figure.update_layout(title=title or f"{model}: volume agreement ({len(data)} cases)", height=380,
                         xaxis_title="mean of predicted and reference volume (mL)",
                         yaxis_title="predicted - reference (mL)")  # fmt: skip
    return figure
