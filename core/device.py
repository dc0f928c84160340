"""Which device runs the networks, and how: choice, description, bfloat16 support, GPU share."""

from __future__ import annotations

import ctypes
import platform

import torch

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's mallopt parameters
_kept_freed_memory = False
_gpu_share = 1.0  # fraction of the GPU this process may use (several sweep workers share one)


def share_gpu(fraction: float, device: torch.device | str = "cuda") -> None:
    """Let this process use at most ``fraction`` of the GPU's memory (tiles are sized to it)."""
    global _gpu_share
    _gpu_share = float(fraction)
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(_gpu_share, device.index or 0)


def gpu_share() -> float:
    """The fraction of the GPU this process may use (1 unless :func:`share_gpu` said less)."""
    return _gpu_share


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
    threads = torch.get_num_threads()
    return f"CPU ({threads} thread{'' if threads == 1 else 's'})"


def bf16_supported(device: torch.device | str) -> bool:
    """Whether bfloat16 autocast runs natively here: CUDA with bf16, or a CPU with AVX-512 BF16
    / AMX (oneDNN), where it is 2-3x faster than float32 for DeepMedic."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        return bool(torch.backends.mkldnn.is_available() and check is not None and check())
    return False


def autocast(device: torch.device | str, amp: bool):
    """A bfloat16 autocast context when ``amp`` is asked for and the device runs it natively,
    else a no-op context (weights stay float32 either way)."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(amp) and bf16_supported(device))


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def keep_freed_memory() -> bool:
    """Keep freed memory in the process instead of handing it back (Linux with glibc only).

    glibc gives every block over 32 MB its own mapping, returned to the system when freed, so
    each large tensor is page-faulted in afresh: a whole-brain run allocates hundreds of
    them, and the faults cost a third of its time on a CPU. Once called, large blocks come from
    the heap and are reused; the process keeps its peak memory (1-2 GB after a whole brain).
    Threads started afterwards share that heap: glibc gives each thread an arena of its own whose
    heaps (64 MB at most) cannot keep a whole brain's blocks, so a prediction in a thread (the
    app's pages, its background worker) faulted about 470,000 pages again on every call (+0.7 s,
    2.6 s against 1.9 s on the main thread). Call it before such threads start.
    Returns whether the setting is in force.
    """
    global _kept_freed_memory
    if not _kept_freed_memory and platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        try:
            libc = ctypes.CDLL("libc.so.6")
            _kept_freed_memory = bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
                                      and libc.mallopt(_M_ARENA_MAX, 1))  # fmt: skip
        except (OSError, AttributeError):
            _kept_freed_memory = False
    return _kept_freed_memory
