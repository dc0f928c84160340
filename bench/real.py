"""Real-scan check: the bundled models on real BraTS cases, beside the same models on the
synthetic public test set (the sim-to-real gap).

For each model and each real case it predicts the whole brain with all sequences and with
FLAIR missing, and prints median tumour-core (TC), whole-tumour (WT) and enhancing-tumour (ET)
Dice. On a case without enhancing tumour ET Dice is 0 when the model predicts some and
undefined (NaN, left out of the median; n counts the rest) when it predicts none. The
cleaned columns score the same predictions after ``core.postprocess.keep_main_lesions`` (the
explorer's "Clean up", ``predict --clean``): components with under 30 % of the main lesion's
volume deeper than 6 mm inside the brain dropped. The
synthetic column is the median TC Dice of the same weights on the public test set in a
results store (default: the bundled demo store).

    python bench/real.py [FOLDER] [--models models] [--store data_samples/results.sqlite]
                         [--synthetic COHORT] [--missing none,flair] [--json out.json] [--no-amp]

``--synthetic COHORT`` measures the synthetic column on that cohort's public test cases instead
of reading it from the store (for models the store has not seen, e.g. while tuning the generator).

FOLDER (default ../shared/reference) holds BraTS case folders or a manifest; the cases are
read with ``core.io.read_case`` exactly as the app and the CLI read them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.cases import find_cases  # noqa: E402
from core.device import bf16_supported  # noqa: E402
from core.external import load_any_model  # noqa: E402
from core.infer import predict_volume  # noqa: E402
from core.io import CaseError, read_case  # noqa: E402
from core.metrics import evaluate  # noqa: E402
from core.model import model_folders  # noqa: E402
from core.postprocess import clean_prediction  # noqa: E402
from core.preprocess import brain_mask  # noqa: E402
from core.sequences import combination_name, parse_combination  # noqa: E402

REGIONS = ("tc", "wt", "et")


def synthetic_medians(store_path: Path) -> dict[str, float]:
    """Median TC Dice per model sha256 on the synthetic public test set, as acquired."""
    if not store_path.is_file():
        return {}
    from core.store import ResultStore

    with ResultStore(store_path) as store:
        table = store.table()
    rows = table[(table["hospital"] == "public") & (table["split"] == "test") & (table["region"] == "tc")
                 & (table["missing"] == table["acquired_missing"])]  # fmt: skip
    return rows.groupby("model_sha256")["dice"].median().to_dict()


def real_scores(model, cases, missing_sets, progress) -> list[dict]:
    """One row per (case, missing set): Dice per region and predicted / reference volumes."""
    rows = []
    for case in cases:
        brain = brain_mask(case.images, case.available)  # Clean up's, once per case
        for missing in missing_sets:
            prediction = predict_volume(model, case, missing, amp=progress["amp"])
            metrics = evaluate(prediction.labels, case.labels, case.spacing, REGIONS)
            row = {"case": case.case_id, "missing": combination_name(missing), "seconds": prediction.seconds}
            for region, m in metrics.items():
                row[f"{region}_dice"] = m.dice
                row[f"{region}_pred_ml"] = m.volume_pred_ml
                row[f"{region}_ref_ml"] = m.volume_ref_ml
            cleaned, cleanup = clean_prediction(prediction, case, brain)  # the explorer's "Clean up", predict --clean
            for region, m in evaluate(cleaned.labels, case.labels, case.spacing, REGIONS).items():
                row[f"{region}_dice_cleaned"] = m.dice
            row["dropped_ml"] = cleanup.dropped_ml
            rows.append(row)
            progress["bar"].update()
    return rows


def median(values) -> tuple[float, int]:
    values = np.asarray([v for v in values if v == v], dtype=float)
    return (float(np.median(values)) if len(values) else float("nan")), len(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default=str(ROOT.parent / "shared" / "reference"))
    parser.add_argument("--models", default=str(ROOT / "models"), help="a model folder or a folder of them")
    parser.add_argument("--store", default=str(ROOT / "data_samples" / "results.sqlite"))
    parser.add_argument(
        "--synthetic",
        help="cohort folder or manifest: predict its public test cases for the "
        "synthetic column instead of reading the store",
    )
    parser.add_argument("--missing", default="none,flair", help="missing sets, comma separated; + joins sequences")
    parser.add_argument("--json", help="also write every per-case row here")
    parser.add_argument("--no-amp", action="store_true", help="float32 instead of bfloat16 autocast")
    args = parser.parse_args(argv)

    try:
        sources = find_cases(args.folder)
        cases = [read_case(s) for s in sources]
    except (CaseError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    cases = [c for c in cases if c.labels is not None]
    if not cases:
        print(f"error: {args.folder}: no case with a reference segmentation", file=sys.stderr)
        return 2
    missing_sets = [parse_combination(m) for m in args.missing.split(",")]
    folders = model_folders(args.models)
    synthetic = {} if args.synthetic else synthetic_medians(Path(args.store))
    synthetic_cases = []
    if args.synthetic:
        public = [s for s in find_cases(args.synthetic) if s.meta.get("hospital", "public") == "public"]
        sources = [s for s in public if s.meta.get("split", "test") == "test"]
        synthetic_cases = [read_case(s) for s in sources]
    amp = not args.no_amp and bf16_supported("cpu")
    start = time.perf_counter()
    total = len(folders) * (len(cases) * len(missing_sets) + len(synthetic_cases))
    bar = tqdm(total=total, desc="predicting", unit="case", file=sys.stderr)
    progress = {"bar": bar, "amp": amp}
    rows = []
    for folder in folders:
        model = load_any_model(folder)  # DeepMedic or an ONNX model folder
        for row in real_scores(model, cases, missing_sets, progress):
            rows.append({"model": folder.name, "sha256": model.card["weights_sha256"], **row})
        if synthetic_cases:
            scores = real_scores(model, synthetic_cases, [frozenset()], progress)
            synthetic[model.card["weights_sha256"]] = median(r["tc_dice"] for r in scores)[0]
    bar.close()

    print(f"{len(cases)} cases from {args.folder} ({', '.join(c.case_id for c in cases)}); "
          f"{'bfloat16' if amp else 'float32'}; {time.perf_counter() - start:.0f} s")  # fmt: skip
    where = f"{len(synthetic_cases)} public test cases of {args.synthetic}" if args.synthetic else args.store
    print(f"synthetic column: median TC Dice on {where}")
    print()
    head = ("| model | missing | TC Dice | WT Dice | ET Dice (n) | TC pred / ref mL | synthetic public test TC "
            "| cleaned TC | cleaned WT | cleaned ET (n) |")  # fmt: skip
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for folder in folders:
        for missing in missing_sets:
            name = combination_name(missing)
            sub = [r for r in rows if r["model"] == folder.name and r["missing"] == name]
            tc, _ = median(r["tc_dice"] for r in sub)
            wt, _ = median(r["wt_dice"] for r in sub)
            et, n_et = median(r["et_dice"] for r in sub)
            pred_ml, _ = median(r["tc_pred_ml"] for r in sub)
            ref_ml, _ = median(r["tc_ref_ml"] for r in sub)
            syn = synthetic.get(sub[0]["sha256"]) if name == "none" else None
            syn_text = f"{syn:.3f}" if syn is not None else "-"
            cleaned = [median(r[f"{region}_dice_cleaned"] for r in sub) for region in REGIONS]
            print(f"| {folder.name} | {name} | {tc:.3f} | {wt:.3f} | {et:.3f} ({n_et}) | "
                  f"{pred_ml:.1f} / {ref_ml:.1f} | {syn_text} | {cleaned[0][0]:.3f} | {cleaned[1][0]:.3f} | "
                  f"{cleaned[2][0]:.3f} ({cleaned[2][1]}) |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
