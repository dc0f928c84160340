"""Benchmark: time and peak memory to generate one 1 mm synthetic case.

Target: at most 5 s and 2 GB per case on a 2-core CPU. Baseline, measured in the same run:
reading the same case back from its NIfTI files with ``read_case``, i.e. what regenerating a
case on demand costs against storing it. Each measurement runs in a fresh process so peak
memory (ru_maxrss) belongs to it alone.

    python bench/synth.py [--cases 6] [--preset paper|realistic]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child_render(n: int, preset: str = "paper") -> dict:
    from core.synth.anatomy import load_atlas
    from core.synth.cohort import plan_cohort, render_case

    start = time.perf_counter()
    load_atlas()
    atlas_s = time.perf_counter() - start
    plans = plan_cohort(preset, 1.0, 0)
    # Spread over hospitals: every 120th case.
    chosen = [plans[i] for i in range(0, len(plans), max(1, len(plans) // n))][:n]
    seconds = []
    for plan in chosen:
        start = time.perf_counter()
        render_case(preset, plan, 0)
        seconds.append(time.perf_counter() - start)
    return {"atlas_s": atlas_s, "case_s": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child_read(folder: str, repeats: int) -> dict:
    from core.io import read_case

    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        read_case(folder)
        seconds.append(time.perf_counter() - start)
    return {"case_s": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def in_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--preset", default="paper", help="cohort preset to render (paper, realistic)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = child_render(int(rest[0]), rest[1]) if kind == "render" else child_read(rest[0], int(rest[1]))
        print(json.dumps(result))
        return

    import statistics

    from core.synth.cohort import write_cohort

    render = in_child("render", str(args.cases), args.preset)
    with tempfile.TemporaryDirectory() as tmp:
        write_cohort(tmp, "paper", 1.0, 0, patient_ids=["SYN_H1_0008"])
        read = in_child("read", str(Path(tmp) / "SYN_H1_0008"), "3")
    gen = statistics.median(render["case_s"])
    base = statistics.median(read["case_s"])
    print(f"atlas load (once per process): {render['atlas_s']:.2f} s")
    print(f"{args.preset} preset: generate one 1 mm case: median {gen:.2f} s, max {max(render['case_s']):.2f} s "
          f"over {args.cases} cases "
          f"(target <= 5 s); peak memory {render['peak_mb']:.0f} MB (target <= 2048 MB)")  # fmt: skip
    print(f"baseline, read_case of the same-size written case: median {base:.2f} s; peak {read['peak_mb']:.0f} MB")
    print(f"ratio generate / read: {gen / base:.2f}x")
    ok = max(render["case_s"]) <= 5 and render["peak_mb"] <= 2048
    print("targets met" if ok else "TARGET MISSED")


if __name__ == "__main__":
    main()
