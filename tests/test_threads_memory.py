"""A whole brain predicted in a thread (as the app's pages and background worker do) reuses the
process's freed memory instead of faulting it in again on every call (core.device.keep_freed_memory)."""

import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import resource, threading
import numpy as np, torch
from core.infer import predict_volume
from core.io import Case
from core.model import build_model

torch.manual_seed(0)
model = build_model("deepmedic-lite").eval()
model.card = {"normalisation": {"landmarks": {}}}  # unused: the input comes normalised
size = (150, 180, 140)  # a brain's extent: its blocks are too large for a thread's own malloc arena
grid = np.indices(size, dtype=np.float32)
brain = sum(((g - n / 2) / (n / 2 - 2)) ** 2 for g, n in zip(grid, size)) < 1
images = np.stack([np.where(brain, 100.0 + 10 * k, 0.0) for k in range(4)]).astype(np.float32)
case = Case("P", images, np.ones(4, bool), None, np.eye(4), (1.0, 1.0, 1.0))
normalised = (np.where(brain, 1.0, 0.0).astype(np.float32)[None].repeat(4, 0), brain)
predict_volume(model, case, amp=True, normalised=normalised)  # on the main thread first, as the app's first page run
faults = []

def run():
    for _ in range(2):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        predict_volume(model, case, amp=True, normalised=normalised)
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)

worker = threading.Thread(target=run)
worker.start()
worker.join()
print(faults[-1])
"""


@pytest.mark.slow
@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_a_prediction_in_a_thread_does_not_fault_its_memory_in_again():
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    faults = int(done.stdout.split()[-1])
    # Measured on this volume with a thread's own arena: about 1,000,000 minor faults on every call.
    # Once threads share the main heap: 0-3 on a quiet machine, up to about 35,000 when the torch
    # workers' allocations interleave otherwise and the heap grows once more (23,000 seen in CI).
    # The bound sits between the two, far from both.
    assert faults < 200_000, faults
