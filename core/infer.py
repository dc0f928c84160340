"""Device choice for inference (CUDA, then MPS, then CPU)."""

from __future__ import annotations

import torch


def choose_device(preferred: str | None = None) -> torch.device:
    """The best available device, or ``preferred`` ("cuda", "mps", "cpu") when it is available.

    Raises:
        ValueError: ``preferred`` names a device this machine does not have.
    """
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if preferred:
        if not available.get(preferred, False):
            have = [k for k, ok in available.items() if ok]
            raise ValueError(f"device {preferred!r} is not available here; available: {have}")
        return torch.device(preferred)
    for name in ("cuda", "mps"):
        if available[name]:
            return torch.device(name)
    return torch.device("cpu")


def describe_device(device: torch.device | None = None) -> str:
    """Human-readable device name, e.g. "GPU: NVIDIA H200 (139 GiB)" or "CPU (2 threads)"."""
    device = device or choose_device()
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"GPU: {props.name} ({props.total_memory / 2**30:.0f} GiB)"
    if device.type == "mps":
        return "GPU: Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"
