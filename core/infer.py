"""Whole-volume inference: DeepMedic's full convolution, streamed through the brain.

DeepMedic maps an input of ``output + 48`` to ``output`` voxels, for any output that is a
multiple of 3, so a whole brain needs no windows: :func:`brain_outputs` runs the subsampled
pathway once over the brain's crop (sampled on the same x3 grid as window-by-window 57^3 -> 9^3
inference), streams the normal pathway through the brain a few planes at a time, and the 1x1x1
layers on brain voxels only; scores equal window-by-window inference to float rounding.
:func:`tiled_outputs` (aligned tiles, every voxel of each) serves other networks and the tests.
Missing sequences are zeroed after normalisation, exactly as sparsified training dropped them.
Calls share no mutable state: the model is only read, under ``torch.inference_mode``."""

from __future__ import annotations

import copy
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
from core.model import CONTEXT, NORMAL_CONTEXT, RESIDUAL_LAYERS, SUBSAMPLE, DeepMedic, add_residual
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


def _rectangle(plane: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1): the bounding rectangle of a 2-D mask's True pixels."""
    xs, ys = np.flatnonzero(plane.any(1)), np.flatnonzero(plane.any(0))
    return int(xs[0]), int(xs[-1]) + 1, int(ys[0]), int(ys[-1]) + 1


def brain_steps(inside: np.ndarray, start: int, depth: int) -> list[tuple[int, tuple[int, int, int, int]]]:
    """The steps of one half of a run: planes ``start`` onwards along axis 0, ``depth`` at a time,
    each as (first plane, output rectangle in axes 1 and 2). A rectangle bounds the brain in its
    step's planes and in every later step's, so each lies within the one before: a step reuses
    the last two planes of every layer of the step before, cut to its own rectangle. Steps with
    no brain at or after them are left out."""
    steps, union = [], None
    for first in reversed(range(start, inside.shape[0], depth)):
        plane = inside[first : first + depth].any(0)
        if plane.any():
            x0, x1, y0, y1 = _rectangle(plane)
            union = (x0, x1, y0, y1) if union is None else (
                min(x0, union[0]), max(x1, union[1]), min(y0, union[2]), max(y1, union[3]))  # fmt: skip
        if union is not None:
            steps.append((first, union))
    return steps[::-1]


# Planes per step on a CPU. Thin steps hug the brain (one rectangle per step) at no halo cost along
# the stream; each step is 16 convolution calls, so thinner costs calls. On a 2-core AMD EPYC, whole brain
# (SYN_PUB_0100, lite): 9 and 12 beat 4 and 6 in bfloat16, and 9 beat 6 and 18 in float32.
CPU_DEPTH = 9


def _cpu_budget() -> float:
    """Bytes a whole-brain run may hold on a CPU: a sixth of the memory, at most 4 GB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        total = 8e9
    return min(4e9, total / 6)


def step_depth(model: torch.nn.Module, shape, device: torch.device, amp: bool = False) -> int:
    """Planes per step of :func:`brain_outputs` for a brain crop of ``shape``: ``CPU_DEPTH`` on a
    CPU; on a GPU as many as half its free share holds (the whole brain in two steps on a large
    GPU), where larger calls are faster. The estimate of a step's memory per output voxel of its
    planes (the first step holds the halo, 16 planes more) is above what was measured."""
    config = model.config
    size = 2 if amp and bf16_supported(device) else 4
    per_voxel = size * (4 * max(config.feature_maps) + 2 * max(config.fc)) + 32
    plane = per_voxel * (shape[1] + 16) * (shape[2] + 16)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        budget, deepest = min(free, total * gpu_share()) / 2, shape[0]
    else:
        budget, deepest = _cpu_budget(), CPU_DEPTH
    return int(max(2, min(deepest, budget / plane - 16)))


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


def _turned(pathway: torch.nn.Module) -> torch.nn.Module:
    """A copy of a pathway with its kernels reversed along axis 0: on an input reversed along that
    axis it computes the original's output reversed."""
    turned = copy.deepcopy(pathway)
    with torch.no_grad():
        for block in turned.layers:
            conv = block[0]
            conv.weight.copy_(conv.weight.flip(2))
    return turned


def _run_half(pathway, residual: bool, volume: np.ndarray, steps, depth: int, tensor):
    """The normal pathway over ``steps`` (:func:`brain_steps`): yields (output, first plane,
    rectangle) per step, ``depth`` output planes each. The first step computes its planes with
    their halo along axis 0; every later one computes only ``depth`` new planes per layer, from
    the layer before's new planes and the last two that layer kept of the step before."""
    kept: dict[int, torch.Tensor] = {}  # layer -> its last two output planes, for the next step
    last = None
    for first, rect in steps:
        sizes = [rect[1] - rect[0], rect[3] - rect[2]]
        if last is None:  # input planes first - 8 ... first + depth + 8: every layer's planes computed here
            x = tensor(extract(volume, [first - 8, rect[0] - 8, rect[2] - 8], [depth + 16, *[n + 16 for n in sizes]]))
        else:  # only the input planes the first layer's new planes need
            x = tensor(extract(volume, [first + 6, rect[0] - 8, rect[2] - 8], [depth + 2, *[n + 16 for n in sizes]]))
        skips, offset = {}, 2 if last is None else 0  # a skip's planes start `offset` before its target's
        for number, layer in enumerate(pathway.layers, start=1):
            y = layer(x)
            if residual and number in RESIDUAL_LAYERS:
                skip = skips.pop(number - 2)
                y = add_residual(y, skip[:, :, offset : offset + y.shape[2], 2:-2, 2:-2])
            if last is None or number == len(pathway.layers):
                x = y
            else:  # this layer's last two planes of the step before, in this step's rectangle, then its new ones
                margin = 8 - number
                dx, dy = rect[0] - last[0], rect[2] - last[2]
                before = kept[number][:, :, :, dx : dx + sizes[0] + 2 * margin, dy : dy + sizes[1] + 2 * margin]
                x = torch.cat([before, y], dim=2)
            if number < len(pathway.layers):  # the last layer's planes are not needed again
                tail = y[:, :, -2:]  # a view holds all of y: copied where steps are large (a GPU's)
                kept[number] = tail.clone() if y.device.type == "cuda" else tail
            if residual and number + 2 in RESIDUAL_LAYERS:
                skips[number] = x
        yield x, first, rect
        last = rect


@torch.inference_mode()
def brain_outputs(
    net: DeepMedic,
    volume: np.ndarray,
    inside: np.ndarray,
    depth: int,
    amp: bool = False,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> np.ndarray:
    """Class scores (N, classes) of the True voxels of ``inside`` (C order).

    The subsampled pathway runs once for the whole volume, as its grid is 27 times smaller. The
    normal pathway streams along axis 0 from the plane where the brain is widest, up and then
    down (on the volume reversed, with kernels reversed to match), ``depth`` planes per step, in
    each step's rectangle of brain (:func:`brain_steps`): about 1.8x the brain's own voxels per
    layer, where boxes of the brain's extent, with their halo, were 2.3-2.6x. The 1x1x1 layers
    run on brain voxels only. Equals :func:`tiled_outputs` at those voxels to float rounding:
    outputs depend only on the input, which is zero outside the volume.
    """
    if depth < 2:
        raise ValueError(f"a step needs at least 2 planes, got {depth}")
    device = model_device(net)
    channels_last = getattr(net, "fused", False)

    def tensor(block: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(block)[None].to(device)
        return x.contiguous(memory_format=torch.channels_last_3d) if channels_last else x

    out = torch.empty((int(inside.sum()), net.config.num_classes), dtype=torch.float32)
    if not len(out):
        return out.numpy()
    order = np.cumsum(inside.ravel()).reshape(inside.shape) - 1  # row of each brain voxel in the result
    widths = [np.prod(np.diff(np.reshape(_rectangle(plane), (2, 2)))) if plane.any() else 0 for plane in inside]
    middle, planes = int(np.argmax(widths)), inside.shape[0]
    halves = []  # (reversed, planes per step, steps): up from the widest plane, then down from the one below it
    for reverse, start in ((False, middle), (True, planes - middle)):
        if start < planes:  # a half's steps need not be deeper than the half
            deep = max(2, min(depth, planes - start))
            halves.append((reverse, deep, brain_steps(inside[::-1] if reverse else inside, start, deep)))
    total, done = sum(len(steps) for *_, steps in halves), 0
    if on_progress:  # before any work: a caller may stop the run there
        on_progress(0, total, "steps")
    low_grid = [-(-n // SUBSAMPLE) for n in inside.shape]  # every third voxel from 23 before the crop
    folded: dict[torch.dtype, list] = {}  # the 1x1x1 layers per dtype, batch norm folded once per brain

    def head_layers(dtype: torch.dtype) -> list:
        if dtype not in folded:
            folded[dtype] = _head_layers(net, dtype)
        return folded[dtype]

    with autocast(device, amp):
        low = net.subsampled(tensor(extract(volume, [1 - HALF] * 3, [n + NORMAL_CONTEXT for n in low_grid], SUBSAMPLE)))
        shared = _low_share(head_layers(low.dtype), low)
        for reverse, deep, steps in halves:
            mask = inside[::-1] if reverse else inside
            pathway = _turned(net.normal) if reverse else net.normal
            source = np.ascontiguousarray(volume[:, ::-1]) if reverse else volume
            for normal, first, rect in _run_half(pathway, net.config.residual, source, steps, deep, tensor):
                voxels = np.argwhere(mask[first : first + deep, rect[0] : rect[1], rect[2] : rect[3]])
                if len(voxels):
                    flat = np.ravel_multi_index(voxels.T, [deep, rect[1] - rect[0], rect[3] - rect[2]])
                    where = voxels + [first, rect[0], rect[2]]
                    if reverse:
                        where[:, 0] = planes - 1 - where[:, 0]
                    low_flat = np.ravel_multi_index((where // SUBSAMPLE).T, low_grid)
                    scores = _head(head_layers(normal.dtype), normal, shared, torch.from_numpy(flat).to(device),
                                   torch.from_numpy(low_flat).to(device))  # fmt: skip
                    out[torch.from_numpy(order[tuple(where.T)])] = scores.float().cpu()
                done += 1
                if on_progress:
                    on_progress(done, total, "steps")
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
    tile: tuple[int, int, int]  # the largest block computed at once: a stream step (planes, crop in-plane) or a tile

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
        tile: for DeepMedic, planes per step of the stream (:func:`step_depth` by default); for
            other networks the largest output tile edge (a multiple of 3), by default from the
            device's memory.
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
    if isinstance(model, DeepMedic):  # streamed through the brain; the 1x1x1 layers on brain voxels only
        depth = tile or step_depth(model, inside.shape, device, amp)
        scores = brain_outputs(model, volume, inside, depth, amp=amp, on_progress=on_progress).T
        tile = (depth, *inside.shape[1:])
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

    The slab and its in-plane box start on the x3 grid of the brain crop, where the subsampled
    pathway of :func:`predict_volume` samples too, so the slice equals the whole-volume prediction there.
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
