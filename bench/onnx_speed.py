"""Benchmark: a DeepMedic run by ONNX Runtime against the native engine, on one bundled case.

Exports the model (``python -m core convert``'s code) at each ``--patch`` and times
``predict_volume`` with the native model and with each export, ``--repeats`` times (the
minimum counts: the CPU may be shared), checking that the labels are equal.

    python bench/onnx_speed.py [--model models/BraTS] [--case data_samples/SYN_H1_0008] [--patch 60 90]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.convert import export_deepmedic  # noqa: E402
from core.external import load_external  # noqa: E402
from core.infer import predict_volume  # noqa: E402
from core.io import read_case  # noqa: E402
from core.model import load_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/BraTS")
    parser.add_argument("--case", default="data_samples/SYN_H1_0008")
    parser.add_argument("--patch", type=int, nargs="+", default=[60, 90])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    case = read_case(args.case)
    native = load_model(args.model)
    reference = predict_volume(native, case)
    times = {"native": min(predict_volume(native, case).seconds for _ in range(args.repeats))}
    with tempfile.TemporaryDirectory() as tmp:
        for patch in args.patch:
            model = load_external(export_deepmedic(args.model, Path(tmp) / f"p{patch}", patch))
            runs = [predict_volume(model, case) for _ in range(args.repeats)]
            differing = max(int(np.sum(r.labels != reference.labels)) for r in runs)
            times[f"onnx patch {patch}"] = min(r.seconds for r in runs)
            times[f"onnx patch {patch} voxels differing"] = differing
    print(json.dumps({"case": case.case_id, "device": reference.device, "runtime": runs[0].runtime,
                      "repeats": args.repeats, "seconds_min": times}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
