"""Benchmark: training throughput (iterations/s and labelled voxels/s) per preset and window.

Baseline, measured in the same run: the paper's 9^3 output window (57^3 input). Compared:
a 27^3 output window (75^3 input), which shares the 48-voxel context over more labelled
voxels. Uses random volumes with a spherical tumour (the loop does not depend on content).
Also the batch sampler: windows written in place into one float16 batch, against the
baseline of a float32 array per window stacked afterwards. And, where the device runs it
natively, the 9^3 step with bfloat16 autocast (``--amp``) against float32.

    python bench/train.py [--device cpu|cuda] [--iterations 6] [--batch-size 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.device import autocast, bf16_supported  # noqa: E402
from core.model import build_model  # noqa: E402
from core.sampling import TrainingVolume, extract_window, sample_batch, sample_centre  # noqa: E402
from core.sequences import SEQUENCES, Sparsifier  # noqa: E402
from core.train import TrainConfig, dice_loss  # noqa: E402


def fake_volume(rng: np.random.Generator, shape=(140, 170, 140)) -> TrainingVolume:
    images = rng.standard_normal((4, *shape), dtype=np.float32).astype(np.float16)
    grid = np.indices(shape, sparse=True)
    r = np.sqrt(sum((g - n / 2) ** 2 for g, n in zip(grid, shape)))
    labels = np.where(r < 12, 3, np.where(r < 20, 2, 0)).astype(np.uint8)
    labels[r < 6] = 1
    return TrainingVolume("bench", images, labels, np.ones(4, bool), np.argwhere(labels > 0).astype(np.int32))


def stacked_float32_batch(volumes, rng, config: TrainConfig, sparsifier: Sparsifier):
    """The baseline sampler: a new float32 window per sample, stacked into the batch."""
    xs, ys = [], []
    for i in range(config.batch_size):
        volume = volumes[rng.integers(len(volumes))]
        x, y = extract_window(volume, sample_centre(volume, rng, i < (config.batch_size + 1) // 2), config.output_size)
        x[[SEQUENCES.index(s) for s in sparsifier.draw(rng, volume.available)]] = 0
        xs.append(x)
        ys.append(y)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def sampler_ms(sample, volumes, batch: int, repeats: int = 30) -> float:
    config, sparsifier = TrainConfig(cohort="", batch_size=batch), Sparsifier(0.2)
    start = time.perf_counter()
    for i in range(repeats):
        x = sample(volumes, np.random.default_rng(i), config, sparsifier)[0]
        x.float()  # what the network gets
    return 1000 * (time.perf_counter() - start) / repeats


def measure(preset: str, output: int, batch: int, iterations: int, device: torch.device, volumes,
            amp: bool = False) -> dict:  # fmt: skip
    torch.manual_seed(0)
    model = build_model(preset).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    config = TrainConfig(cohort="", batch_size=batch, output_size=output)
    sparsifier = Sparsifier(0.2)
    times = []
    for i in range(iterations + 1):  # the first iteration warms up
        rng = np.random.default_rng(i)
        start = time.perf_counter()
        x, y, _ = sample_batch(volumes, rng, config, sparsifier)
        with autocast(device, amp):
            logits = model(x.to(device).float())
        loss = dice_loss(logits.float(), y.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    per_iteration = float(np.median(times[1:]))
    return {"it_s": 1 / per_iteration, "voxels_s": batch * output**3 / per_iteration}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--presets", default="deepmedic-lite,deepmedic")
    args = parser.parse_args()
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    volumes = [fake_volume(rng) for _ in range(2)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; batch {args.batch_size}; median of {args.iterations} iterations after one warm-up")
    old = sampler_ms(stacked_float32_batch, volumes, args.batch_size)
    new = sampler_ms(sample_batch, volumes, args.batch_size)
    print(
        f"sampler, 9^3 windows: float32 windows stacked (baseline) {old:.1f} ms, float16 batch in place "
        f"{new:.1f} ms per batch ({old / new:.1f}x)"
    )
    for preset in args.presets.split(","):
        base = measure(preset, 9, args.batch_size, args.iterations, device, volumes)
        big = measure(preset, 27, args.batch_size, args.iterations, device, volumes)
        for label, result in (("9^3 (paper, baseline)", base), ("27^3", big)):
            print(
                f"{preset:15s} output {label:22s} {result['it_s']:7.2f} it/s "
                f"{result['voxels_s']:11,.0f} labelled voxels/s"
            )
        print(f"{preset:15s} 27^3 / 9^3 labelled voxels/s ratio: {big['voxels_s'] / base['voxels_s']:.1f}x")
        if bf16_supported(device):
            half = measure(preset, 9, args.batch_size, args.iterations, device, volumes, amp=True)
            print(f"{preset:15s} output 9^3, bfloat16 autocast {half['it_s']:7.2f} it/s -> "
                  f"{half['it_s'] / base['it_s']:.1f}x float32")  # fmt: skip


if __name__ == "__main__":
    main()
