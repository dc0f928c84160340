"""Benchmark: evaluation sweep throughput, local process pool vs a Dask LocalCluster.

Same grid both ways (every case of a cohort, as acquired, with one model), each into a fresh
store; prints cases per second and the ratio. With ``--store`` it also reports the wall time
and throughput of the results already in a store (e.g. the demo grid).

    python bench/sweep.py [--cohort data_samples] [--model models/BraTS] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.store import ResultStore  # noqa: E402
from core.sweep import SweepConfig, run_sweep  # noqa: E402


def random_model(folder: Path, cohort: Path) -> str:
    """A random-weights lite model with landmarks from the cohort (speed does not depend on weights)."""
    from core.cases import find_cases
    from core.io import read_case
    from core.model import build_model, save_model
    from core.preprocess import fit_landmarks

    case = read_case(find_cases(cohort)[0])
    landmarks = fit_landmarks([(case.images, case.available)])
    save_model(build_model("deepmedic-lite"), folder, {"name": "bench", "normalisation": {"landmarks": landmarks}})
    return str(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", type=Path, default=ROOT / "data_samples")
    parser.add_argument("--model", help="model folder (default: random weights)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--store", type=Path, help="also summarise the results in this store")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or random_model(Path(tmp) / "model", args.cohort)
        timings = {}
        for label, options in (("local pool", {"workers": args.workers}), ("dask", {"dask": f"local:{args.workers}"})):
            with ResultStore(Path(tmp) / f"{label}.sqlite") as store:
                start = time.perf_counter()
                summary = run_sweep(store, SweepConfig((model,), str(args.cohort), "acquired", splits=(), **options))
                timings[label] = (time.perf_counter() - start, summary.results_written)
            seconds, n = timings[label]
            print(f"{label} ({args.workers} workers): {n} cases in {seconds:.1f} s = {n / seconds:.3f} cases/s")
    ratio = timings["local pool"][0] / timings["dask"][0]
    print(f"ratio dask / local pool throughput: {ratio:.2f}x")
    if args.store:
        summarise_store(args.store)


def summarise_store(path: Path) -> None:
    """Per device: predictions, inference time each, and the wall time from first to last result."""
    with ResultStore(path) as store:
        rows = store.timing_by_device()
    for device, (count, seconds, first, last) in rows.items():
        wall = last - first
        rate = count / max(wall, 1e-9)
        print(f"{path} on {device}: {count} predictions, {seconds:.2f} s each in a worker; "
              f"{wall / 60:.1f} min from first to last result = {rate:.2f} predictions/s")  # fmt: skip


if __name__ == "__main__":
    main()
