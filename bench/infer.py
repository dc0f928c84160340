"""Benchmark: whole-volume inference, slice preview and HD95 on a real-size 1 mm brain.

Baselines measured in the same run:
- the engine's efficiency: the network's FLOPs for the brain's voxels (halo excluded) divided
  by this machine's measured conv3d throughput on the network's own layers, in the same
  precision, divided by the measured time (target >= 30 % for both presets); each whole brain
  is timed right after a throughput measurement and the median of three such pairs is shown,
  as this machine's speed drifts within a run;
- the streamed engine against the tiled engine before it (tiles of at most 60 voxels, the
  1x1x1 layers on every voxel of the brain's box), on the same normalised input;
- tiles against batched window-by-window inference (57^3 -> 9^3, as in training) with the
  network as trained, on the same 54^3 block of brain (target: at least 2.5x faster on CPU);
- the whole brain with bfloat16 autocast (``--amp``) against float32, where it is native.
Also the slice preview (target < 2 s for deepmedic-lite on CPU) and HD95 of a brain-sized
pair (target < 0.2 s). Models have random weights: speed does not depend on them.

    python bench/infer.py [--device cpu|cuda] [--presets deepmedic-lite,deepmedic]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.device import bf16_supported, describe_device  # noqa: E402
from core.infer import (  # noqa: E402
    normalise_case,
    predict_slice,
    predict_volume,
    prepare_input,
    tile_shape,
    tile_size,
    tiled_outputs,
    windowed_outputs,
)
from core.io import read_case  # noqa: E402
from core.metrics import hd95  # noqa: E402
from core.model import build_model, fuse_for_inference, load_model  # noqa: E402
from core.preprocess import brain_crop, fit_landmarks  # noqa: E402


def timed(fn, repeats: int = 1):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def matmul_flops(device: torch.device) -> float:
    a = torch.randn(2048, 2048, device=device)
    torch.matmul(a, a)
    seconds, _ = timed(lambda: torch.matmul(a, a), repeats=5)
    return 2 * 2048**3 / seconds


def model_flops(config, tile: tuple[int, int, int]) -> float:
    """Multiply-adds x 2 of one tile: both pathways' valid convolutions and the 1x1x1 layers."""
    total = 0.0
    channels = (config.in_channels, *config.feature_maps)
    for edges in ([t + 16 for t in tile], [t // 3 + 16 for t in tile]):
        for layer, (cin, cout) in enumerate(zip(channels[:-1], channels[1:]), start=1):
            total += 2 * cin * cout * 27 * np.prod([e - 2 * layer for e in edges])
    fc = (2 * config.feature_maps[-1], *config.fc, config.num_classes)
    total += sum(2 * a * b for a, b in zip(fc[:-1], fc[1:])) * np.prod(tile)
    return total


def voxel_flops(config) -> float:
    """FLOPs per output voxel with no halo: each pathway's convolutions once per voxel it
    labels (the subsampled one per 27 voxels) and the 1x1x1 layers."""
    channels = (config.in_channels, *config.feature_maps)
    conv = sum(2 * a * b * 27 for a, b in zip(channels[:-1], channels[1:]))
    fc = (2 * config.feature_maps[-1], *config.fc, config.num_classes)
    return conv * (1 + 1 / 27) + sum(2 * a * b for a, b in zip(fc[:-1], fc[1:]))


def conv_throughput(config, device: torch.device, amp: bool, edge: int = 64) -> float:
    """FLOP/s of this network's 3x3x3 layers run alone on a large block (edge^3 outputs,
    channels-last, as the engine runs them), in the engine's precision: what conv3d reaches
    here for these shapes."""
    channels = (config.in_channels, *config.feature_maps)
    flops = seconds = 0.0
    for cin, cout in sorted(set(zip(channels[:-1], channels[1:]))):
        conv = torch.nn.Conv3d(cin, cout, 3).to(device).eval().to(memory_format=torch.channels_last_3d)
        x = torch.randn(1, cin, edge + 2, edge + 2, edge + 2, device=device).contiguous(
            memory_format=torch.channels_last_3d
        )
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            conv(x)
            t, _ = timed(lambda: conv(x), repeats=3)
        flops += 2 * cin * cout * 27 * edge**3
        seconds += t
    return flops / seconds


def tiled_engine(model, images, mask, amp: bool) -> np.ndarray:
    """The engine before slabs and streaming: tiles of at most 60 voxels over the brain's box, every
    tile that touches brain computed whole, labels by argmax of all its voxels."""
    crop = brain_crop(mask, margin=0)
    inside = crop.apply(mask)
    tile = tile_shape(inside.shape, tile_size(model))
    fill = np.array([0.0, -1e4, -1e4, -1e4], np.float32)[: model.config.num_classes]
    outputs = tiled_outputs(model, crop.apply(images), tile, model.config.num_classes, skip=inside, fill=fill, amp=amp)
    return crop.undo(np.where(inside, outputs.argmax(0), 0).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--presets", default="deepmedic-lite,deepmedic")
    parser.add_argument("--case", default=str(ROOT / "data_samples" / "SYN_PUB_0100"))
    args = parser.parse_args()
    device = torch.device(args.device)
    case = read_case(args.case)
    landmarks = fit_landmarks([(case.images, case.available)])
    peak = matmul_flops(device)
    print(f"device: {describe_device(device)}; case {case.case_id} {case.shape}; "
          f"measured float32 matmul {peak / 1e9:.0f} GFLOP/s")  # fmt: skip
    normalised = normalise_case(case, landmarks)
    images, mask, _ = prepare_input(case, landmarks, (), normalised)
    centre = np.round(np.argwhere(mask).mean(0)).astype(int)
    block = images[(slice(None), *[slice(c - 27, c + 27) for c in centre])].copy()
    for preset in args.presets.split(","):
        torch.manual_seed(0)
        trained = build_model(preset).to(device).eval()
        model = fuse_for_inference(trained)
        model.card = {"normalisation": {"landmarks": landmarks}}
        n = block[0].size
        t_win, windowed = timed(lambda: windowed_outputs(trained, block, 4, batch=16))
        t_win_fused, _ = timed(lambda: windowed_outputs(model, block, 4, batch=16))
        t_tile, tiled = timed(lambda: tiled_outputs(model, block, 54, 4), repeats=2)
        assert np.allclose(tiled, windowed, atol=1e-4), "tiled and windowed disagree"
        flops = model_flops(model.config, (54, 54, 54)) / t_tile
        print(f"{preset}: 54^3 block: windowed 57->9 {n / t_win:,.0f} vox/s, engine {n / t_tile:,.0f} vox/s "
              f"-> ratio {t_win / t_tile:.1f}x (target >= 2.5x; tiling alone {t_win_fused / t_tile:.1f}x); "
              f"{flops / 1e9:.1f} GFLOP/s = {100 * flops / peak:.0f}% of matmul peak")  # fmt: skip
        t_brain, prediction = timed(lambda: predict_volume(model, case))
        print(
            f"{preset}: whole 1 mm brain {t_brain:.1f} s float32 including normalisation "
            f"({mask.sum() / t_brain:,.0f} brain vox/s, steps of {prediction.tile[0]} planes)"
        )
        amp = bf16_supported(device)
        precision = "bfloat16" if amp else "float32"
        # This machine's speed drifts within a run: each whole brain is timed right after a
        # throughput measurement, and the efficiency is the median of those pairs.
        predict_volume(model, case, amp=amp, normalised=normalised)  # sets up the shapes in this precision
        rounds = []
        for _ in range(3):
            limit = conv_throughput(model.config, device, amp)
            seconds, fast = timed(lambda: predict_volume(model, case, amp=amp, normalised=normalised))
            rounds.append((limit, seconds))
        t_new = min(seconds for _, seconds in rounds)
        t_old, old_labels = timed(lambda: tiled_engine(model, images, mask, amp), repeats=2)
        # The app predicts in threads (its pages' script threads, its background worker).
        threaded = {}
        worker = threading.Thread(target=lambda: threaded.update(seconds=timed(
            lambda: predict_volume(model, case, amp=amp, normalised=normalised), repeats=2)[0]))  # fmt: skip
        worker.start()
        worker.join()
        ideal = voxel_flops(model.config) * mask.sum()
        differ = np.count_nonzero(fast.labels != old_labels)
        print(f"{preset}: whole brain, {precision}, normalised input cached: streamed {t_new:.2f} s, "
              f"tiles {t_old:.2f} s -> {t_old / t_new:.1f}x; labels differ in {differ} of {mask.sum():,} "
              "voxels")  # fmt: skip
        print(f"{preset}: whole brain in a new thread, as the app runs it: {threaded['seconds']:.2f} s, "
              f"{threaded['seconds'] / t_new:.2f}x the main thread's (target about 1)")  # fmt: skip
        low, median, high = sorted(100 * ideal / limit / seconds for limit, seconds in rounds)
        limits = sorted(limit / 1e9 for limit, _ in rounds)
        print(f"{preset}: efficiency {median:.0f}% (median of 3 pairs, {low:.0f}-{high:.0f}%; "
              f"tiles {100 * ideal / limit / t_old:.0f}% against the last; target >= 30%): "
              f"{voxel_flops(model.config) / 1e6:.2f} MFLOP x {mask.sum():,} brain voxels = {ideal / 1e9:.0f} GFLOP; "
              f"this network's conv3d layers alone reach {limits[0]:.0f}-{limits[2]:.0f} GFLOP/s in {precision} "
              f"here -> ideal {ideal / limit:.2f} s against the last")  # fmt: skip
        if bf16_supported(device):
            t_half, half = timed(lambda: predict_volume(model, case, amp=True))
            differ = np.count_nonzero(half.labels != prediction.labels)
            print(f"{preset}: whole brain with bfloat16 autocast {t_half:.1f} s -> {t_brain / t_half:.1f}x float32; "
                  f"labels differ in {differ} of {mask.sum():,} brain voxels")  # fmt: skip
        else:
            print(f"{preset}: bfloat16 autocast is not native on this device; --amp leaves float32")
        if preset == "deepmedic-lite":
            z = int(centre[2])
            cold, _ = timed(lambda: predict_slice(model, case, z))
            prepared = prepare_input(case, landmarks, ())
            warm, _ = timed(lambda: predict_slice(model, case, z, prepared=prepared), repeats=3)
            print(f"{preset}: slice preview {cold:.2f} s including normalisation, {warm:.2f} s with the case's "
                  f"normalised input cached (target < 2 s)")  # fmt: skip
    bundled = ROOT / "models" / "BraTS"
    if (bundled / "card.json").is_file() and bf16_supported(device):
        # Random weights label every voxel background, so agreement is measured on a trained model.
        trained = load_model(bundled, device)
        single = predict_volume(trained, case).labels
        half = predict_volume(trained, case, amp=True).labels
        differ = int(np.count_nonzero(single != half))
        print(f"bundled model {bundled.name}: bfloat16 labels differ from float32 in {differ} of {mask.sum():,} brain "
              f"voxels ({1e4 * differ / mask.sum():.2f} in 10,000)")  # fmt: skip
    ref = case.labels > 0
    pred = np.roll(ref, 3, axis=0) | np.roll(ref, -2, axis=2)
    t_hd, value = timed(lambda: hd95(pred, ref, case.spacing), repeats=3)
    print(f"HD95 of a {ref.sum() / 1000:.0f} mL whole-tumour pair on a {case.shape} grid: {t_hd:.3f} s "
          f"(= {value:.2f} mm; target < 0.2 s)")  # fmt: skip


if __name__ == "__main__":
    main()
