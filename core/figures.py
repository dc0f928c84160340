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
