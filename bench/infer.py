"""Benchmark: whole-volume inference, slice preview and HD95 on a real-size 1 mm brain.

Baselines measured in the same run:
- the inference engine (tiled, batch norm folded, channels-last) against batched
  window-by-window inference (57^3 -> 9^3, as in training) with the network as trained, on
  the same 54^3 block of brain (target: at least 2.5x faster on CPU); the tiling alone is
  reported too (same fused network both ways);
- achieved FLOP/s against this machine's measured float32 matmul FLOP/s (the physical limit);
- the whole brain with bfloat16 autocast (``--amp``) against float32, where it is native.
Also: a whole brain per preset, the slice preview (target < 2 s for deepmedic-lite on CPU),
and HD95 of a brain-sized pair (target < 0.2 s). Models have random weights: speed does not
depend on them.

    python bench/infer.py [--device cpu|cuda] [--presets deepmedic-lite,deepmedic]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.device import bf16_supported, describe_device  # noqa: E402
from core.infer import (  # noqa: E402
    predict_slice,
    predict_volume,
    prepare_input,
    tiled_outputs,
    windowed_outputs,
)
from core.io import read_case  # noqa: E402
from core.metrics import hd95  # noqa: E402
from core.model import build_model, fuse_for_inference  # noqa: E402
from core.preprocess import fit_landmarks  # noqa: E402


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
    images, mask, _ = prepare_input(case, landmarks, ())
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
            f"{preset}: whole 1 mm brain {t_brain:.1f} s ({mask.sum() / t_brain:,.0f} brain vox/s, "
            f"tiles {prediction.tile})"
        )
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
    ref = case.labels > 0
    pred = np.roll(ref, 3, axis=0) | np.roll(ref, -2, axis=2)
    t_hd, value = timed(lambda: hd95(pred, ref, case.spacing), repeats=3)
    print(f"HD95 of a {ref.sum() / 1000:.0f} mL whole-tumour pair on a {case.shape} grid: {t_hd:.3f} s "
          f"(= {value:.2f} mm; target < 0.2 s)")  # fmt: skip


if __name__ == "__main__":
    main()
