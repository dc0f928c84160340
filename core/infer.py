"""Whole-volume inference: DeepMedic's full convolution over large aligned tiles.

DeepMedic maps an input of ``output + 48`` to ``output`` voxels, for any output that is a
multiple of 3. Tiles start at multiples of the tile size (a multiple of 3) from the brain's
bounding box, so every tile samples the x3 subsampled pathway on the same grid as
window-by-window 57^3 -> 9^3 inference and the stitched result equals it (to float
rounding). Tiles without brain are skipped (background). Missing sequences are zeroed after
normalisation, exactly as sparsified training dropped them. Calls share no mutable state: the
model is only read, under ``torch.inference_mode``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import product

import numpy as np
import torch
from torch.nn import functional as nn_functional

from core.device import autocast, bf16_supported, describe_device, gpu_share, keep_freed_memory, model_device
from core.io import Case, prediction_to_original
from core.model import CONTEXT, NORMAL_CONTEXT, SUBSAMPLE, DeepMedic
from core.preprocess import brain_crop, brain_mask, normalise
from core.sequences import NECROSIS, SEQUENCES, apply_missing, combination_name, missing_set

HALF = CONTEXT // 2
PREVIEW_SLAB = SUBSAMPLE  # a slice preview computes one aligned slab of 3 slices


def tile_size(model: torch.nn.Module, device: torch.device | None = None) -> int:
    """Output tile edge (a multiple of 3) that fits the device's memory.

    Peak activation memory is about 4 bytes x (2 x widest conv + 2 x widest FC layer) per
    input voxel; CUDA uses up to half its free memory, CPU up to 1.5 GB (larger tiles bring
    no speed on a CPU). A process given a share of the GPU (:func:`core.device.share_gpu`) sizes its tiles
    to that share.
    """
    device = device or model_device(model)
    config = model.config
    per_voxel = 4 * (2 * max(config.feature_maps) + 2 * max(config.fc) + config.num_classes)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        budget, largest = min(free, total * gpu_share()) / 2, 240
    else:
        budget, largest = 1.5e9, 60
    edge = int((budget / per_voxel) ** (1 / 3)) - CONTEXT
    return int(max(SUBSAMPLE, min(largest, edge - edge % SUBSAMPLE)))


def tile_shape(shape, largest: int) -> tuple[int, int, int]:
    """Per-axis tile edges (multiples of 3, at most ``largest``) that cover ``shape`` with the
    fewest tiles and the least padding."""
    edges = []
    for n in shape:
        count = int(np.ceil(n / largest))
        edges.append(int(np.ceil(n / count / SUBSAMPLE)) * SUBSAMPLE)
    return tuple(edges)


def _run(net, x: torch.Tensor, amp: bool) -> torch.Tensor:
    if getattr(net, "fused", False):
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with autocast(x.device, amp):
        return net(x).float()


def extract(volume: np.ndarray, starts, sizes, step: int = 1) -> np.ndarray:
    """A (C, *sizes) block of a (C, X, Y, Z) volume: every ``step``-th voxel from ``starts`` on
    each axis; zeros outside the volume."""
    out = np.zeros((volume.shape[0], *sizes), np.float32)
    src, dst = [], []
    for start, size, n in zip(starts, sizes, volume.shape[1:]):
        first, stop = max(0, -(start // step)), min(size, -((start - n) // step))  # samples inside [0, n)
        if first >= stop:
            return out
        src.append(slice(start + step * first, start + step * (stop - 1) + 1, step))
        dst.append(slice(first, stop))
    out[(slice(None), *dst)] = volume[(slice(None), *src)]
    return out


@torch.inference_mode()
def tiled_outputs(
    net: torch.nn.Module,
    volume: np.ndarray,
    tile: int | tuple[int, int, int],
    num_outputs: int,
    skip: np.ndarray | None = None,
    fill: np.ndarray | None = None,
    amp: bool = False,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> np.ndarray:
    """Raw network outputs (num_outputs, X, Y, Z) for a (C, X, Y, Z) volume, tile by tile.

    Outside the volume the input is zero. Args:
        net: maps (1, C, T+48, T+48, T+48) to (1, num_outputs, T, T, T).
        tile: output tile edge(s), multiples of 3 (tiles start at multiples of them).
        skip: boolean (X, Y, Z); tiles with no True voxel are not computed and get ``fill``.
    """
    tiles = (tile,) * 3 if isinstance(tile, int) else tuple(tile)
    if any(t % SUBSAMPLE for t in tiles):
        raise ValueError(f"tile {tile} must be a multiple of {SUBSAMPLE} to stay on the subsampling grid")
    device = model_device(net)
    shape = volume.shape[1:]
    out = np.empty((num_outputs, *shape), np.float32)
    out[:] = (np.zeros(num_outputs, np.float32) if fill is None else np.asarray(fill, np.float32))[:, None, None, None]
    origins = list(product(*[range(0, n, t) for n, t in zip(shape, tiles)]))
    if on_progress:  # before the first tile too: a caller may stop the run there
        on_progress(0, len(origins), "tiles")
    for done, origin in enumerate(origins, start=1):
        region = tuple(slice(o, min(o + t, n)) for o, t, n in zip(origin, tiles, shape))
        if skip is None or skip[region].any():
            window = extract(volume, [o - HALF for o in origin], [t + CONTEXT for t in tiles])
            result = _run(net, torch.from_numpy(window)[None].to(device), amp)[0]
            out[(slice(None), *region)] = (
                result[(slice(None), *[slice(0, r.stop - r.start) for r in region])].cpu().numpy()
            )
        if on_progress:
            on_progress(done, len(origins), "tiles")
    return out


def _even_split(start: int, stop: int, largest: int) -> list[tuple[int, int]]:
    """[start, stop) cut into the fewest pieces of at most ``largest`` voxels, each a multiple
    of 3 long (the last may reach past ``stop``) and starting ``start`` + a multiple of 3."""
    count = int(np.ceil((stop - start) / largest))
    edge = int(np.ceil((stop - start) / count / SUBSAMPLE)) * SUBSAMPLE
    return [(a, a + edge) for a in range(start, stop, edge)]


def brain_boxes(inside: np.ndarray, largest: tuple[int, int, int]) -> list[tuple[tuple[int, int], ...]]:
    """Output boxes that cover every True voxel of ``inside`` (the brain, in its crop).

    Slabs along the last axis, each cut to the brain's extent within it and split where an
    edge would pass ``largest``. Every box starts on the x3 grid of the crop, so the
    subsampled pathway samples the same voxels as tiles and windows do. Where every slab is
    one box, the slabs are then grown to two shapes (:func:`_two_shapes`), so a grown box may
    reach past the brain's extent and the crop (the input is zero there).
    """
    boxes = []
    for z0, z1 in _even_split(0, inside.shape[2], largest[2]):
        plane = inside[:, :, z0:z1].any(2)
        if not plane.any():
            continue
        xs, ys = np.flatnonzero(plane.any(1)), np.flatnonzero(plane.any(0))
        x0, y0 = xs[0] // SUBSAMPLE * SUBSAMPLE, ys[0] // SUBSAMPLE * SUBSAMPLE
        for bx in _even_split(int(x0), int(xs[-1]) + 1, largest[0]):
            for by in _even_split(int(y0), int(ys[-1]) + 1, largest[1]):
                if inside[bx[0] : bx[1], by[0] : by[1], z0:z1].any():
                    boxes.append((bx, by, (z0, z1)))
    whole_slabs = len({box[2] for box in boxes}) == len(boxes)
    return _two_shapes(boxes) if whole_slabs else boxes


def _two_shapes(boxes: list[tuple[tuple[int, int], ...]]) -> list[tuple[tuple[int, int], ...]]:
    """The boxes grown in place (starts kept) to at most two shapes, the smaller boxes to one
    and the larger to the other, split where the normal pathway computes the fewest voxels.
    Every new shape costs oneDNN a set-up of each convolution on its first run, about 18 ms
    each on a 2-core CPU (0.7 s for a brain in five slabs of five shapes); growing the slabs of
    a brain to two shapes costs 4-7 % more voxels."""
    sizes = [tuple(b - a for a, b in box) for box in boxes]
    if len(set(sizes)) <= 2:
        return boxes
    order = sorted(range(len(boxes)), key=lambda i: (np.prod(sizes[i]), sizes[i]))

    def shape(group):
        return tuple(max(sizes[i][axis] for i in group) for axis in range(3))

    def voxels(group):
        return len(group) * np.prod([n + NORMAL_CONTEXT for n in shape(group)])

    split = min(range(1, len(order)), key=lambda k: voxels(order[:k]) + voxels(order[k:]))
    grown = list(boxes)
    for group in (order[:split], order[split:]):
        edges = shape(group)
        for i in group:
            grown[i] = tuple((a, a + n) for (a, _), n in zip(boxes[i], edges))
    return grown


# Slab depth on a CPU: thinner pays more halo, thicker boxes hug the brain less. With PReLU one pass
# per layer, 45 beat 36, 54 and 72 on two demo cases for both presets (two rounds: 4-9 % faster than 36).
CPU_DEPTH = 45


def _cpu_budget() -> float:
    """Bytes a whole-brain run may hold on a CPU: a sixth of the memory, at most 4 GB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        total = 8e9
    return min(4e9, total / 6)


def box_edges(model: torch.nn.Module, shape, device: torch.device, amp: bool = False) -> tuple[int, int, int]:
    """Largest output box for :func:`brain_outputs`: the whole brain in-plane, and slabs of
    ``CPU_DEPTH`` slices on a CPU (on a GPU as many as half its free share holds), fewer where
    memory is short. Peak memory per box voxel (a whole-brain run's growth of the process's peak
    memory over the largest box's voxels, slabs of 45 slices, only the layer outputs still needed
    kept): about 420 bytes for deepmedic-lite and 640 for deepmedic in bfloat16 (1,300 for
    deepmedic in float32 when every layer output was kept); the estimate below is above each."""
    config = model.config
    size = 2 if amp and bf16_supported(device) else 4
    per_voxel = size * (4 * max(config.feature_maps) + 2 * max(config.fc)) + 32
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        budget, deepest = min(free, total * gpu_share()) / 2, 10**6
    else:
        budget, deepest = _cpu_budget(), CPU_DEPTH
    x, y = (int(np.ceil(n / SUBSAMPLE)) * SUBSAMPLE for n in shape[:2])
    depth = min(deepest, int(budget / per_voxel / ((x + 16) * (y + 16))) - 16)
    if depth < 3 * SUBSAMPLE:  # a very large plane: square boxes instead of whole slabs
        edge = tile_size(model, device)
        return edge, edge, edge
    return x, y, depth - depth % SUBSAMPLE


HEAD_ROWS = 1 << 14  # voxels per block of the 1x1x1 layers on a CPU: a block's activations stay in cache


def _head_layers(net, dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor, torch.nn.Module | None]]:
    """(weight (out, in), bias, activation) of DeepMedic's 1x1x1 layers in ``dtype``, batch norm
    folded in where the network is as trained; the classifier last, with no activation."""
    layers = []
    for conv, norm, act in net.fc:
        weight, bias = conv.weight.flatten(1), conv.bias
        if isinstance(norm, torch.nn.BatchNorm3d):
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            weight, bias = weight * scale[:, None], (bias - norm.running_mean) * scale + norm.bias
        layers.append((weight.to(dtype), bias.to(dtype), act))
    layers.append((net.classifier.weight.flatten(1).to(dtype), net.classifier.bias.to(dtype), None))
    return layers


def _low_share(layers, low: torch.Tensor) -> torch.Tensor:
    """The subsampled pathway's share of the first 1x1x1 layer (bias included), one row per
    low-resolution voxel (C order): computed once per such voxel, not for each of its 27.
    ``layers``: :func:`_head_layers` in ``low``'s dtype."""
    channels = low.shape[1]
    first, bias, _ = layers[0]
    return nn_functional.linear(low.permute(0, 2, 3, 4, 1).reshape(-1, channels), first[:, channels:], bias)


def _head(
    layers, normal: torch.Tensor, shared: torch.Tensor, flat: torch.Tensor, low_flat: torch.Tensor
) -> torch.Tensor:
    """Class scores of the chosen voxels (rows ``flat`` of the normal pathway's output, rows
    ``low_flat`` of :func:`_low_share`): DeepMedic's 1x1x1 layers (:func:`_head_layers` in
    ``normal``'s dtype) as matrix products on those voxels only. On a CPU the voxels go through
    all the layers a block at a time, so that each layer reads the last one's output from cache
    rather than from memory."""
    channels = normal.shape[1]
    (first, _, first_act), rest = layers[0], layers[1:]
    if len(flat) == 0:
        return normal.new_empty((0, layers[-1][0].shape[0]))
    rows = normal.permute(0, 2, 3, 4, 1).reshape(-1, channels)  # a view for fused (channels-last) networks
    own, shared = first[:, :channels].t(), shared.to(normal.dtype)
    step = HEAD_ROWS if normal.device.type == "cpu" else len(flat)
    blocks = []
    for start in range(0, len(flat), step):
        hidden = torch.index_select(shared, 0, low_flat[start : start + step])
        hidden = first_act(hidden.addmm_(torch.index_select(rows, 0, flat[start : start + step]), own))
        for weight, bias, act in rest:
            hidden = nn_functional.linear(hidden, weight, bias)
            hidden = act(hidden) if act is not None else hidden
        blocks.append(hidden)
    return torch.cat(blocks) if len(blocks) > 1 else blocks[0]


@torch.inference_mode()
def brain_outputs(
    net: DeepMedic,
    volume: np.ndarray,
    inside: np.ndarray,
    largest: tuple[int, int, int],
    amp: bool = False,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> np.ndarray:
    """Class scores (N, classes) of the True voxels of ``inside`` (C order), box by box.

    The subsampled pathway runs once for the whole volume (per box only where that would not
    fit in memory), the normal pathway once per box, and the 1x1x1 layers only on brain voxels.
    Equals :func:`tiled_outputs` at those voxels to float rounding: outputs depend only on the
    input, which is zero outside the volume, and every box starts on the x3 grid.
    """
    if any(n % SUBSAMPLE for n in largest):
        raise ValueError(f"box edges {largest} must be multiples of {SUBSAMPLE}")
    device = model_device(net)
    channels_last = getattr(net, "fused", False)

    def tensor(block: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(block)[None].to(device)
        return x.contiguous(memory_format=torch.channels_last_3d) if channels_last else x

    folded: dict[torch.dtype, list] = {}  # the 1x1x1 layers per dtype, batch norm folded once per brain

    def head_layers(dtype: torch.dtype) -> list:
        if dtype not in folded:
            folded[dtype] = _head_layers(net, dtype)
        return folded[dtype]

    order = np.cumsum(inside.ravel()).reshape(inside.shape) - 1  # row of each brain voxel in the result
    out = torch.empty((int(inside.sum()), net.config.num_classes), dtype=torch.float32)
    boxes = brain_boxes(inside, largest)
    # The subsampled pathway samples every third voxel from 23 before the crop, as each box's does.
    low_grid = [-(-n // SUBSAMPLE) for n in inside.shape]
    once = np.prod([n + NORMAL_CONTEXT for n in low_grid]) <= np.prod([n + NORMAL_CONTEXT for n in largest])
    if on_progress:  # before any work: a caller may stop the run there
        on_progress(0, len(boxes), "boxes")
    if once:  # no more voxels than the largest box's normal pathway: it fits where that does
        with autocast(device, amp):
            low = tensor(extract(volume, [1 - HALF] * 3, [n + NORMAL_CONTEXT for n in low_grid], SUBSAMPLE))
            low = net.subsampled(low)
            shared = _low_share(head_layers(low.dtype), low)
    for done, box in enumerate(boxes, start=1):
        starts, sizes = [a for a, _ in box], [b - a for a, b in box]
        region = tuple(slice(a, min(b, n)) for (a, b), n in zip(box, inside.shape))
        voxels = np.argwhere(inside[region])  # never empty: brain_boxes keeps boxes with brain only
        flat = np.ravel_multi_index(voxels.T, sizes)
        with autocast(device, amp):
            if once:
                low_flat = np.ravel_multi_index(((voxels + starts) // SUBSAMPLE).T, low_grid)
                x = tensor(
                    extract(volume, [a - NORMAL_CONTEXT // 2 for a in starts], [n + NORMAL_CONTEXT for n in sizes])
                )
            else:
                low_flat = np.ravel_multi_index((voxels // SUBSAMPLE).T, [n // SUBSAMPLE for n in sizes])
                window = tensor(extract(volume, [a - HALF for a in starts], [n + CONTEXT for n in sizes]))
                low = net.subsampled(window[:, :, 1::SUBSAMPLE, 1::SUBSAMPLE, 1::SUBSAMPLE])
                shared = _low_share(head_layers(low.dtype), low)
                c = HALF - NORMAL_CONTEXT // 2
                x = window[:, :, c : c + sizes[0] + 16, c : c + sizes[1] + 16, c : c + sizes[2] + 16]
            normal = net.normal(x)
            scores = _head(
                head_layers(normal.dtype),
                normal,
                shared,
                torch.from_numpy(flat).to(device),
                torch.from_numpy(low_flat).to(device),
            )
        out[torch.from_numpy(order[region][inside[region]])] = scores.float().cpu()
        if on_progress:
            on_progress(done, len(boxes), "boxes")
    return out.numpy()


@torch.inference_mode()
def windowed_outputs(net: torch.nn.Module, volume: np.ndarray, num_outputs: int, output: int = 9, batch: int = 32,
                     skip: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Reference strategy: window by window (57^3 -> 9^3 as in training), batched."""
    device = model_device(net)
    shape = volume.shape[1:]
    out = np.zeros((num_outputs, *shape), np.float32)
    origins = [o for o in product(*[range(0, n, output) for n in shape])
               if skip is None or skip[tuple(slice(a, a + output) for a in o)].any()]  # fmt: skip
    for start in range(0, len(origins), batch):
        chunk = origins[start : start + batch]
        x = np.stack([extract(volume, [a - HALF for a in o], [output + CONTEXT] * 3) for o in chunk])
        y = _run(net, torch.from_numpy(x).to(device), False).cpu().numpy()
        for o, result in zip(chunk, y):
            region = tuple(slice(a, min(a + output, n)) for a, n in zip(o, shape))
            out[(slice(None), *region)] = result[(slice(None), *[slice(0, r.stop - r.start) for r in region])]
    return out


@dataclass
class Prediction:
    """A whole-volume prediction on the case's original grid."""

    labels: np.ndarray  # (X, Y, Z) uint8 canonical labels
    probabilities: np.ndarray | None  # (classes, X, Y, Z) float32, if asked for
    missing: frozenset[str]  # sequences the model saw as zeros (case's own + simulated)
    seconds: float
    device: str
    tile: tuple[int, int, int]

    @property
    def missing_name(self) -> str:
        return combination_name(self.missing)


def _effective_missing(case: Case, missing) -> frozenset[str]:
    effective = missing_set(missing) | case.missing
    if effective >= set(SEQUENCES):
        raise ValueError(f"{case.case_id}: every sequence would be missing ({combination_name(effective)})")
    return effective


def normalise_case(case: Case, landmarks: dict) -> tuple[np.ndarray, np.ndarray]:
    """Normalised images (of the sequences the case has) and the brain mask: the same for every
    missing set, so a sweep computes them once per case."""
    mask = brain_mask(case.images, case.available)
    return normalise(case.images, case.available, landmarks, mask), mask


def prepare_input(case: Case, landmarks: dict, missing,
                  normalised: tuple[np.ndarray, np.ndarray] | None = None):  # fmt: skip
    """Normalised images with the missing set zeroed (after normalisation), the brain mask, and
    the effective missing set. ``normalised`` may pass :func:`normalise_case`'s result."""
    effective = _effective_missing(case, missing)
    images, mask = normalised or normalise_case(case, landmarks)
    return apply_missing(images, effective), mask, effective


def _labels_from_outputs(outputs: np.ndarray) -> np.ndarray:
    labels = outputs.argmax(0).astype(np.uint8)
    if outputs.shape[0] == 2:  # binary tumour-core model: label 1 stands for the tumour core
        labels[labels == 1] = NECROSIS
    return labels


def predict_volume(
    model: torch.nn.Module,
    case: Case,
    missing=(),
    tile: int | None = None,
    amp: bool = False,
    probabilities: bool = False,
    on_progress: Callable[[int, int, str], None] | None = None,
    normalised: tuple[np.ndarray, np.ndarray] | None = None,
) -> Prediction:
    """Segment a case with some sequences switched off.

    Args:
        model: a DeepMedic in eval mode (``load_model`` returns one), on its device.
        missing: sequences to treat as missing, in addition to those the case lacks.
        tile: largest output tile edge (multiple of 3); default from the device's memory.
        amp: bfloat16 autocast where the device runs it natively (:func:`bf16_supported`);
            labels then differ from float32 in 1-2 voxels in 10,000 (the bundled BraTS model).
        normalised: :func:`normalise_case` of this case with this model's landmarks, to reuse
            across missing sets.

    Returns:
        A :class:`Prediction` on the case's original grid (resampled back if the case was
        read from a non-1 mm grid).

    Raises:
        ValueError: the model is in training mode, the missing set is unknown or would
            leave no sequence.
    """
    if not isinstance(model, torch.nn.Module):  # an ONNX model (core.external) runs itself
        return model.predict_volume(case, missing, tile, amp, probabilities, on_progress, normalised)
    if model.training:
        raise ValueError("model is in training mode; call .eval() first (load_model does)")
    start = time.perf_counter()
    device = model_device(model)
    if device.type == "cpu":
        keep_freed_memory()
    images, mask, effective = prepare_input(case, model.card["normalisation"]["landmarks"], missing, normalised)
    crop = brain_crop(mask, margin=0)
    inside, volume = crop.apply(mask), crop.apply(images)
    classes = model.config.num_classes
    if isinstance(model, DeepMedic):  # one pass per slab of brain; the 1x1x1 layers on brain voxels only
        tile = (tile,) * 3 if tile else box_edges(model, inside.shape, device, amp)
        scores = brain_outputs(model, volume, inside, tile, amp=amp, on_progress=on_progress).T
    else:  # any network mapping T + 48 to T voxels
        tile = tile_shape(inside.shape, tile or tile_size(model, device))
        fill = np.full(classes, -1e4, np.float32)
        fill[0] = 0.0
        outputs = tiled_outputs(model, volume, tile, classes, skip=inside, fill=fill, amp=amp, on_progress=on_progress)
        scores = outputs[:, inside]
    cropped = np.zeros(inside.shape, np.uint8)
    cropped[inside] = _labels_from_outputs(scores)
    labels = crop.undo(cropped)
    probs = None
    if probabilities:
        soft = np.zeros((classes, *inside.shape), np.float32)
        soft[0] = 1.0  # background probability 1 outside the brain
        soft[:, inside] = torch.softmax(torch.from_numpy(scores), 0).numpy()
        probs = np.zeros((classes, *case.shape), np.float32)
        probs[0] = 1.0
        probs[(slice(None), *crop.slices)] = soft
    labels, probs = prediction_to_original(labels, probs, case)
    name = describe_device(device) + (", bfloat16" if amp and bf16_supported(device) else "")
    return Prediction(labels, probs, effective, time.perf_counter() - start, name, tile)


def predict_slice(model: torch.nn.Module, case: Case, index: int, missing=(), prepared=None,
                  amp: bool = False) -> np.ndarray:  # fmt: skip
    """Labels (X, Y) of one axial slice (third axis), computing only an aligned 3-slice slab.

    The slab and its in-plane box start on the x3 grid of the brain crop, as the tiles of
    :func:`predict_volume` do, so the slice equals the whole-volume prediction there.
    ``prepared`` may pass a cached :func:`prepare_input` result (normalising is the rest of
    the cost).
    """
    if not isinstance(model, torch.nn.Module):  # an ONNX model (core.external) runs itself
        return model.predict_slice(case, index, missing, prepared, amp)
    if model.training:
        raise ValueError("model is in training mode; call .eval() first (load_model does)")
    if not 0 <= index < case.shape[2]:
        raise ValueError(f"slice {index} is outside 0..{case.shape[2] - 1}")
    images, mask, _ = prepared or prepare_input(case, model.card["normalisation"]["landmarks"], missing)
    crop = brain_crop(mask, margin=0)
    volume, inside = crop.apply(images), crop.apply(mask)
    labels = np.zeros(case.shape[:2], np.uint8)
    z = index - crop.box[2][0]
    if not 0 <= z < volume.shape[3]:
        return labels
    slab = z // PREVIEW_SLAB * PREVIEW_SLAB
    present = inside[:, :, z]
    if not present.any():
        return labels
    rows, cols = np.flatnonzero(present.any(1)), np.flatnonzero(present.any(0))
    x0, y0 = rows[0] // SUBSAMPLE * SUBSAMPLE, cols[0] // SUBSAMPLE * SUBSAMPLE
    size = [int(np.ceil((rows[-1] + 1 - x0) / 3) * 3), int(np.ceil((cols[-1] + 1 - y0) / 3) * 3), PREVIEW_SLAB]
    window = extract(volume, [x0 - HALF, y0 - HALF, slab - HALF], [n + CONTEXT for n in size])
    with torch.inference_mode():
        out = _run(model, torch.from_numpy(window)[None].to(model_device(model)), amp)[0].cpu().numpy()
    part = _labels_from_outputs(out[..., z - slab])
    nx, ny = min(size[0], volume.shape[1] - x0), min(size[1], volume.shape[2] - y0)
    part = np.where(inside[x0 : x0 + nx, y0 : y0 + ny, z], part[:nx, :ny], 0)
    (bx, _), (by, _), _ = crop.box
    labels[bx + x0 : bx + x0 + nx, by + y0 : by + y0 + ny] = part
    return labels
