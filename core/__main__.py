"""Command line: ``python -m core <command>``; commands that return numbers print JSON."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from core.io import CaseError
from core.model import ModelError
from core.postprocess import RULE
from core.store import StoreError

AMP_HELP = "bfloat16 autocast where the device runs it natively (CUDA; CPUs with AVX-512 BF16 or AMX)"
CLEAN_HELP = RULE.replace("%", "%%") + " (specks, rims at the brain's edge; core/postprocess.py)"


def _progress(description: str, unit: str = "case"):
    """An ``on_progress(done, total, message)`` callback drawing a tqdm bar on stderr."""
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int, message: str = "") -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=description, unit=unit, file=sys.stderr, dynamic_ncols=True)
        bar.set_postfix_str(message, refresh=False)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def _names(text: str | None) -> list[str]:
    """Items of a comma-separated option ("public, 1,2" -> ["public", "1", "2"]); [] when empty."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _pairs(text: str | None) -> list[tuple[str, str]]:
    """Model pairs of an option like "BraTSst:BraTS,H1BraTSst:H1BraTS"."""
    return [tuple(item.split(":", 1)) for item in _names(text)]


def _print_json(data) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def cmd_synth(args: argparse.Namespace) -> int:
    from core.synth.cohort import plan_cohort, render_case, write_cohort

    start = time.perf_counter()
    patients = _names(args.patients) or None
    manifest = write_cohort(
        args.out,
        preset=args.preset,
        scale=args.scale,
        seed=args.seed,
        manifest_only=args.manifest_only,
        workers=args.workers,
        patient_ids=patients,
        on_progress=_progress("synth"),
        splits=tuple(_names(args.splits)),
    )
    splits = _names(args.splits)
    plans = [p for p in plan_cohort(args.preset, args.scale, args.seed)
             if (not patients or p.patient_id in patients) and (not splits or p.split in splits)]  # fmt: skip
    counts = Counter((p.hospital, p.split) for p in plans)
    summary = {
        "manifest": str(manifest),
        "n_cases": len(plans),
        "rendered": not args.manifest_only,
        "seconds": round(time.perf_counter() - start, 1),
        "cases_per_hospital_split": {f"{h}/{s}": n for (h, s), n in sorted(counts.items())},
    }
    if args.preview:
        from core.figures import case_montage

        plan = (
            next((p for p in plans if p.patient_id == args.preview_case), plans[0]) if args.preview_case else plans[0]
        )
        case = render_case(args.preset, plan, args.seed)
        title = f"{plan.patient_id} (hospital {plan.hospital}, {args.preset}, seed {args.seed})"
        case_montage(case.images, plan.available, case.labels, title).savefig(args.preview, dpi=80)
        summary["preview"] = str(args.preview)
    _print_json(summary)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from core.cases import inspect_path

    report = inspect_path(args.path, on_progress=_progress("inspect"))
    _print_json(report)
    return 0 if report["ok"] else 1


def cmd_train(args: argparse.Namespace) -> int:
    from core.device import choose_device
    from core.train import TrainConfig, train

    hospitals = tuple(_names(args.hospitals))
    config = TrainConfig(
        cohort=str(args.cohort),
        hospitals=hospitals,
        preset=args.preset,
        complete_only=args.complete_only,
        sparsify=args.sparsify,
        iterations=args.iterations,
        batch_size=args.batch_size,
        output_size=args.output_size,
        learning_rate=args.lr,
        seed=args.seed,
        val_every=args.val_every,
        checkpoint_every=args.checkpoint_every,
        num_classes=args.classes,
        residual=args.residual,
        max_cases=args.max_cases,
        max_val_cases=args.max_val_cases,
        amp=args.amp,
        randomise=args.randomise,
    )
    start = time.perf_counter()
    folder = train(config, args.out, device=choose_device(args.device), on_progress=_progress("train", unit="it"),
                   max_seconds=60 * args.max_minutes)  # fmt: skip
    if int(os.environ.get("RANK", "0")) == 0:
        card = json.loads((folder / "card.json").read_text())
        _print_json({"model": str(folder), "name": card["name"], "iterations": card["iterations"],
                     "validation": card["validation"], "seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from core.cases import find_cases
    from core.device import choose_device
    from core.external import load_any_model as load_model  # DeepMedic or ONNX model folder
    from core.infer import predict_volume
    from core.io import read_case, scoring_grid_words, scoring_reference, write_labels
    from core.metrics import evaluate
    from core.postprocess import clean_prediction
    from core.sequences import parse_combination, scorable_regions

    if args.case.exists():
        case = read_case(args.case)
    else:
        source = next((s for s in find_cases(args.cohort) if s.case_id == str(args.case)), None)
        if source is None:
            raise CaseError(f"{args.case}: neither a case folder nor a patient id in {args.cohort}")
        case = read_case(source)
    model = load_model(args.model, device=choose_device(args.device))
    prediction = predict_volume(model, case, parse_combination(args.missing), amp=args.amp,
                                on_progress=_progress("predict", unit="step"))  # fmt: skip
    report = {"case": case.case_id, "model": model.card.get("name", str(args.model)), "out": str(args.out),
              "missing": prediction.missing_name, "seconds": round(prediction.seconds, 2), "device": prediction.device,
              "tile": list(prediction.tile)}  # fmt: skip
    if args.clean:
        prediction, cleanup = clean_prediction(prediction, case)
        report["cleanup"] = cleanup.to_dict()
    if case.labels is not None:  # scored before anything is written: a failure leaves no label file
        regions = scorable_regions(case.label_scheme, model.config.num_classes)
        reference, spacing = scoring_reference(case)
        scores = evaluate(prediction.labels, reference, spacing, regions)
        report["metrics"] = {r: m.to_dict() for r, m in scores.items()}
        report["scored_on"] = scoring_grid_words(case)
    write_labels(prediction.labels, args.out, case, scheme=args.scheme)
    _print_json(report)
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from core.io import read_label_map
    from core.metrics import compute_region

    pred, spacing, _ = read_label_map(args.pred)
    ref, ref_spacing, _ = read_label_map(args.ref)
    if pred.shape != ref.shape:
        raise CaseError(f"{args.pred} has shape {pred.shape} but {args.ref} has {ref.shape}")
    if not np.allclose(spacing, ref_spacing, atol=1e-3):
        raise CaseError(f"{args.pred} has voxel size {spacing} mm but {args.ref} has {ref_spacing}")
    _print_json(compute_region(pred, ref, args.region, ref_spacing, args.empty).to_dict())
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from core.device import choose_device
    from core.store import ResultStore
    from core.sweep import SweepConfig, default_workers, run_sweep

    config = SweepConfig(
        model_paths=tuple(_names(args.models)),
        cohort=str(args.cohort),
        mode=args.mode,
        combinations=args.combinations,
        splits=tuple(_names(args.splits)) if args.splits != "all" else (),
        hospitals=tuple(_names(args.hospitals)) or None,
        regions=tuple(_names(args.regions)),
        empty_policy=args.empty,
        workers=args.workers or default_workers(),
        dask=args.dask,
        keep_predictions=not args.no_predictions,
        device=str(choose_device(args.device or "cpu")),
        amp=args.amp,
        per_hospital=args.max_per_hospital,
        clean=args.clean,
    )
    with ResultStore(args.store) as store:
        summary = run_sweep(store, config, on_progress=_progress("evaluate", unit="prediction"))
        counts = store.counts()
    _print_json(summary.__dict__ | {"store": str(args.store), "store_counts": counts})
    return 0 if not summary.errors else 1


def cmd_export(args: argparse.Namespace) -> int:
    from core.store import ResultStore

    with ResultStore(args.store) as store:
        table = store.table()
    if args.out.suffix == ".parquet":
        table.to_parquet(args.out, index=False)
    elif args.out.suffix == ".csv":
        table.to_csv(args.out, index=False)
    else:
        raise ValueError(f"{args.out}: the output must end in .csv or .parquet")
    _print_json({"out": str(args.out), "rows": len(table), "models": sorted(table["model"].unique().tolist())})
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from core.stats import comparison_table, not_applicable_count, select_scope, untested_reasons
    from core.store import ResultStore

    with ResultStore(args.store) as store:
        everything = store.table()
    everything = everything[(everything["region"] == args.region) & (everything["empty_policy"] == args.empty)]
    table = select_scope(everything, args.scope)
    if hospitals := _names(args.hospitals):
        table = table[table["hospital"].isin(hospitals)]
    if table.empty:
        raise ValueError(f"{args.store}: no {args.scope} results for these choices (try --scope acquired or all)")
    models = sorted(table["model"].unique())
    if args.pairs:
        pairs = _pairs(args.pairs)
        unknown = sorted({m for pair in pairs for m in pair} - set(models))
        if unknown:
            raise ValueError(f"model(s) {unknown} have no results in {args.store}; it has {models}")
    else:  # the paper's family: with and without sparsified training, with and without hospital 1 data
        from core.card import paper_pairs

        pairs = paper_pairs(models)
        if not pairs:
            raise ValueError(f"no pairs of the paper's family among {models}; name pairs with --pairs A:B")
    result = comparison_table(table, pairs, metric=args.metric, adjust=args.adjust, alpha=args.alpha)
    result.to_csv(args.out, index=False)
    # The family is the testable comparisons only (core.stats.comparison_table); the others stay in
    # the CSV with tested = False and are named here.
    _print_json({"out": str(args.out), "scope": args.scope, "tests": int(result["tested"].sum()),
                 "not_applicable_left_out": not_applicable_count(everything),
                 "left_out": untested_reasons(result), "significant": int(result["significant"].sum()),
                 "rows": result.to_dict(orient="records")})  # fmt: skip
    return 0


def _weights_in(folder: Path) -> dict[str, str]:
    """sha256 -> name of the model in ``folder``, or of each model folder inside it.

    Raises:
        ModelError: no model card there.
    """
    from core.model import model_folders, read_card

    folders = model_folders(folder)
    cards = [read_card(f) for f in folders]
    return {card["weights_sha256"]: card.get("name", f.name) for card, f in zip(cards, folders)}


def cmd_trim(args: argparse.Namespace) -> int:
    from core.store import ResultStore

    if args.keep_per_hospital is None and args.keep_models is None and not args.forget_file_hashes:
        raise ValueError("trim needs --keep-per-hospital N, --keep-models DIR or --forget-file-hashes")
    keep = _weights_in(args.keep_models) if args.keep_models else None
    before = args.store.stat().st_size
    out = {"store": str(args.store)}
    with ResultStore(args.store) as store:
        if keep is not None:
            out["models_kept"] = sorted(keep.values())
            out["dropped_with_other_weights"] = store.keep_models(keep)
        if args.forget_file_hashes:
            out["file_hashes_forgotten"] = store.forget_file_hashes()
        if args.keep_per_hospital is not None:
            out["predictions_dropped"] = store.trim_predictions(args.keep_per_hospital)
        else:
            store.compact()
        counts = store.counts()
    _print_json(out | {"mb_before": round(before / 1e6, 2), "mb_after": round(args.store.stat().st_size / 1e6, 2),
                       "store_counts": counts})  # fmt: skip
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from core.report import build_report, paper_targets, update_cards
    from core.stats import not_applicable_count
    from core.store import ResultStore

    with ResultStore(args.store) as store:
        table = store.table()
    if table.empty:
        raise ValueError(f"{args.store}: no results yet; run 'python -m core evaluate' first")
    pairs = _pairs(args.pairs) or None
    args.out.write_text(build_report(table, args.region, pairs, args.adjust), encoding="utf-8")
    summary = {"out": str(args.out), "bytes": args.out.stat().st_size, "rows": len(table),
               "not_applicable": not_applicable_count(table),
               "targets": paper_targets(table, args.region, args.adjust)}  # fmt: skip
    if args.cards:
        summary["cards_updated"] = update_cards(table, args.cards, args.region, args.adjust, source=str(args.store))
    _print_json(summary)
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    from core.device import choose_device
    from core.model import read_card
    from core.zoo import train_zoo

    names = _names(args.models) or None
    folders = train_zoo(args.cohort, args.out, names, args.preset, args.scale, args.seed, args.model_preset,
                        args.iterations, args.batch_size, args.output_size, args.workers,
                        str(choose_device(args.device)), on_progress=_progress("zoo", unit="step"),
                        max_cases=args.max_cases, max_val_cases=args.max_val_cases, jobs=args.jobs,
                        max_minutes=args.max_minutes, amp=args.amp, randomise=args.randomise)  # fmt: skip
    cards = [read_card(f) for f in folders]
    _print_json([{"model": c["name"], "folder": str(f), "train_cases": c["training"]["n_train_cases"],
                  "iterations": c["iterations"], "seconds": c["training_seconds"], "validation": c["validation"]}
                 for c, f in zip(cards, folders)])  # fmt: skip
    return 0


def cmd_realism(args: argparse.Namespace) -> int:
    from core.model import read_card
    from core.realism import NOTES, cohort_features, compare, markdown_table, montage_figure

    landmarks = read_card(args.model)["normalisation"]["landmarks"]
    real = cohort_features(args.real, landmarks, args.max_cases, _progress("realism: real"))
    synthetic = cohort_features(args.synthetic, landmarks, args.max_cases, _progress("realism: synthetic"))
    rows = compare(real, synthetic)
    report = {"real": str(args.real), "synthetic": str(args.synthetic), "landmarks": str(args.model),
              "real_cases": [c.case_id for c in real], "synthetic_cases": [c.case_id for c in synthetic],
              "notes": list(NOTES), "features": [r.to_dict() for r in rows],
              "per_case": {c.case_id: c.values for c in (*real, *synthetic)}}  # fmt: skip
    if args.out:
        import pandas as pd

        args.out.mkdir(parents=True, exist_ok=True)
        report["outputs"] = {k: str(args.out / f"realism.{k}") for k in ("json", "md", "csv")}
        report["outputs"]["montage"] = str(args.out / "montage.png")
        (args.out / "realism.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        (args.out / "realism.md").write_text(markdown_table(rows) + "\n" + "\n".join(f"- {n}" for n in NOTES) + "\n")
        pd.DataFrame([r.to_dict() for r in rows]).to_csv(args.out / "realism.csv", index=False)
        montage_figure(real, synthetic).savefig(args.out / "montage.png", dpi=100, facecolor="black")
    _print_json(report)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core",
        description="Glioblastoma robustness explorer",
        epilog="Paths given here are read as given: symbolic links (and a manifest's ../ or absolute paths) are "
        "followed wherever they point. The app's Your data page reads only under its data root. Predictions are "
        "scored on each case's own grid, as in its files.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="write a synthetic cohort (BraTS folders + manifest.csv)")
    synth.add_argument("--preset", default="paper", help="synthetic world: paper, realistic or calibrated")
    synth.add_argument("--scale", type=float, default=1.0, help="fraction of the preset's case counts")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--manifest-only", action="store_true", help="plan and write manifest.csv, render nothing")
    synth.add_argument("--workers", type=int, default=1, help="processes rendering cases in parallel")
    synth.add_argument("--patients", help="comma-separated patient ids to write (default: all)")
    synth.add_argument("--splits", help="comma-separated splits to write, e.g. test (default: all)")
    synth.add_argument("--preview", type=Path, help="save a PNG montage of one case")
    synth.add_argument("--preview-case", help="patient id for --preview (default: the first)")
    synth.set_defaults(func=cmd_synth)

    inspect = commands.add_parser("inspect", help="validate a case folder, cohort folder or manifest (JSON report)")
    inspect.add_argument("path", type=Path)
    inspect.set_defaults(func=cmd_inspect)

    train = commands.add_parser("train", help="train DeepMedic (resumes from a checkpoint in --out)")
    train.add_argument("--cohort", type=Path, required=True, help="manifest.csv or cohort folder")
    train.add_argument("--preset", default="deepmedic-lite", help="deepmedic (paper size) or deepmedic-lite")
    train.add_argument("--hospitals", default="public", help="comma-separated: public,1,2,...")
    train.add_argument("--complete-only", action="store_true", help="train on cases with all four sequences only")
    train.add_argument("--sparsify", type=float, default=0.0, help="sequence dropout probability (paper: 0.2)")
    train.add_argument("--iterations", type=int, default=200)
    train.add_argument("--batch-size", type=int, default=10)
    train.add_argument("--output-size", type=int, default=9, help="output window edge, a multiple of 3")
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--val-every", type=int, default=50)
    train.add_argument("--checkpoint-every", type=int, default=25)
    train.add_argument("--classes", type=int, choices=(2, 4), default=4, help="4 = bg/necrosis/oedema/enhancing")
    train.add_argument("--residual", action="store_true", help="DeepMedic+ residual connections")
    train.add_argument(
        "--max-cases", type=int, default=0, help="use at most this many training cases, evenly spread over the manifest"
    )
    train.add_argument("--max-val-cases", type=int, default=0, help="use at most this many validation cases")
    train.add_argument(
        "--max-minutes",
        type=float,
        default=0,
        help="finish the model at the iteration reached after this long (0: no limit)",
    )
    train.add_argument(
        "--randomise",
        type=float,
        nargs="?",
        const=1.0,
        default=0.0,
        help="domain randomisation of each training window (per-label intensities, contrast curve, bias, "
        "slice thickness, noise, misregistration; core/augment.py); optional strength, 1 when omitted",
    )
    train.add_argument("--device", choices=("cuda", "mps", "cpu"), help="default: the best available")
    train.add_argument("--amp", action="store_true", help=AMP_HELP)
    train.add_argument("--out", type=Path, required=True, help="model folder")
    train.set_defaults(func=cmd_train)

    predict = commands.add_parser("predict", help="segment a case with some sequences switched off")
    predict.add_argument("--model", type=Path, required=True, help="model folder")
    predict.add_argument("--case", type=Path, required=True, help="case folder, or a patient id of --cohort")
    predict.add_argument("--cohort", type=Path, default=Path("data_samples"), help="cohort for a patient id")
    predict.add_argument("--missing", default="", help="sequences to switch off, e.g. flair,t2")
    predict.add_argument("--out", type=Path, required=True, help="output label NIfTI (.nii.gz)")
    predict.add_argument(
        "--scheme", default="brats2020", choices=("brats2020", "brats2023"), help="label values written"
    )
    predict.add_argument("--device", choices=("cuda", "mps", "cpu"), help="default: the best available")
    predict.add_argument("--clean", action="store_true", help=CLEAN_HELP)
    predict.add_argument("--amp", action="store_true", help=AMP_HELP)
    predict.set_defaults(func=cmd_predict)

    metrics = commands.add_parser("metrics", help="Dice, sensitivity, HD95 and volumes of a prediction (JSON)")
    metrics.add_argument("--pred", type=Path, required=True)
    metrics.add_argument("--ref", type=Path, required=True)
    metrics.add_argument("--region", choices=("tc", "wt", "et"), default="tc")
    metrics.add_argument("--empty", choices=("nan", "brats"), default="nan", help="empty-mask policy")
    metrics.set_defaults(func=cmd_metrics)

    evaluate = commands.add_parser("evaluate", help="models x cases x missing sets into a results store")
    evaluate.add_argument("--models", required=True, help="comma-separated model folders")
    evaluate.add_argument("--cohort", type=Path, required=True, help="manifest.csv or cohort folder")
    evaluate.add_argument("--mode", choices=("acquired", "simulated"), default="acquired")
    evaluate.add_argument("--combinations", type=int, choices=(8, 15), default=8)
    evaluate.add_argument("--splits", default="test", help="comma-separated splits, or 'all'")
    evaluate.add_argument("--hospitals", help="comma-separated hospitals (default: all)")
    evaluate.add_argument("--regions", default="tc,wt,et")
    evaluate.add_argument(
        "--max-per-hospital", type=int, default=0, help="only the first N cases of each hospital (a quick first pass)"
    )
    evaluate.add_argument("--empty", choices=("nan", "brats"), default="nan", help="empty-mask policy")
    evaluate.add_argument("--clean", action="store_true", help="also score each prediction after Clean up ("
                          + CLEAN_HELP + ") and store it as the model NAME+clean beside the raw results")  # fmt: skip
    evaluate.add_argument("--store", type=Path, required=True, help="SQLite results store")
    evaluate.add_argument("--workers", type=int, default=0, help="local processes (default: cores, at most 4)")
    evaluate.add_argument(
        "--device",
        choices=("cuda", "mps", "cpu"),
        help="where workers run the models (default: cpu; cuda: the workers share the GPU)",
    )
    evaluate.add_argument(
        "--no-predictions", action="store_true", help="store metrics only, not the predicted label maps (smaller store)"
    )
    evaluate.add_argument("--amp", action="store_true", help=AMP_HELP)
    evaluate.add_argument("--dask", help="tcp://scheduler:8786, or local:N for a LocalCluster of N workers")
    evaluate.set_defaults(func=cmd_evaluate)

    export = commands.add_parser("export", help="the long results table as CSV or Parquet")
    export.add_argument("--store", type=Path, required=True)
    export.add_argument("--out", type=Path, required=True, help="FILE.csv or FILE.parquet")
    export.set_defaults(func=cmd_export)

    stats = commands.add_parser("stats", help="paired Wilcoxon comparison table (CSV; JSON summary)")
    stats.add_argument("--store", type=Path, required=True)
    stats.add_argument("--out", type=Path, required=True)
    stats.add_argument("--pairs", help="A:B,... (default: the paper's family, Xst vs X and H1... vs ...)")
    stats.add_argument("--metric", default="dice", choices=("dice", "sensitivity", "hd95", "volume_diff_ml"))
    stats.add_argument("--region", default="tc", choices=("tc", "wt", "et"))
    stats.add_argument("--empty", default="nan", choices=("nan", "brats"))
    stats.add_argument(
        "--adjust", default="bonferroni", choices=("bonferroni", "holm", "bh"), help="bh: Benjamini-Hochberg"
    )
    stats.add_argument("--alpha", type=float, default=0.05)
    stats.add_argument(
        "--scope",
        default="simulated",
        choices=("simulated", "acquired", "all"),
        help="simulated: complete cases with every combination (the paper's design); "
        "acquired: each case as acquired; all: both",
    )
    stats.add_argument("--hospitals", help="comma-separated hospitals (default: all)")
    stats.set_defaults(func=cmd_stats)

    trim = commands.add_parser("trim", help="drop cached label maps (metrics stay), results of removed models")
    trim.add_argument("--store", type=Path, required=True)
    trim.add_argument("--keep-per-hospital", type=int, help="keep the label maps of the first N patients per hospital")
    trim.add_argument(
        "--keep-models",
        type=Path,
        help="a model folder, or a folder of them: drop the results of every other set of weights "
        "(e.g. a model's before it was retrained); a kept model's results after Clean up (NAME+clean) stay",
    )
    trim.add_argument("--forget-file-hashes", action="store_true", help="forget remembered case-file hashes")
    trim.set_defaults(func=cmd_trim)

    report = commands.add_parser("report", help="self-contained HTML: Figures 2, 4, 5 and the Wilcoxon tables")
    report.add_argument("--store", type=Path, required=True)
    report.add_argument("--out", type=Path, required=True)
    report.add_argument("--region", default="tc", choices=("tc", "wt", "et"))
    report.add_argument("--pairs", help="A:B,... (default: the paper's family, Xst vs X and H1... vs ...)")
    report.add_argument("--adjust", default="bonferroni", choices=("bonferroni", "holm"))
    report.add_argument(
        "--cards", type=Path, help="models folder: write each model's results into its card.json and MODEL_CARD.md"
    )
    report.set_defaults(func=cmd_report)

    zoo = commands.add_parser("zoo", help="render the synthetic cohort and train the paper's models (resumable)")
    zoo.add_argument("--preset", default="paper", help="synthetic world: paper, realistic or calibrated")
    zoo.add_argument("--scale", type=float, default=1.0)
    zoo.add_argument("--seed", type=int, default=0)
    zoo.add_argument("--cohort", type=Path, default=Path("cohort"), help="where the training cases are rendered")
    zoo.add_argument("--out", type=Path, default=Path("models"))
    zoo.add_argument("--models", help="comma-separated names (default: all 11: BraTS, BraTSst, cH1BraTS, ...)")
    zoo.add_argument("--model-preset", default="deepmedic-lite", help="deepmedic (paper size) or deepmedic-lite")
    zoo.add_argument("--iterations", type=int, default=2000)
    zoo.add_argument("--batch-size", type=int, default=10)
    zoo.add_argument("--output-size", type=int, default=9)
    zoo.add_argument("--workers", type=int, default=1, help="processes rendering cases")
    zoo.add_argument("--max-cases", type=int, default=0, help="training cases per model, spread over hospitals")
    zoo.add_argument("--max-val-cases", type=int, default=0, help="validation cases per model")
    zoo.add_argument("--jobs", type=int, default=1, help="models trained at once (own processes; one GPU is fine)")
    zoo.add_argument("--max-minutes", type=float, default=0, help="per model: finish at the iteration reached")
    zoo.add_argument("--device", choices=("cuda", "mps", "cpu"))
    zoo.add_argument("--amp", action="store_true", help=AMP_HELP)
    zoo.add_argument(
        "--randomise",
        type=float,
        nargs="?",
        const=1.0,
        default=0.0,
        help="domain randomisation of each training window (core/augment.py); optional strength, 1 when omitted",
    )
    zoo.set_defaults(func=cmd_zoo)

    realism = commands.add_parser("realism", help="how far synthetic cases are from real ones, feature by feature")
    realism.add_argument("--real", type=Path, required=True, help="folder of real case folders (with labels)")
    realism.add_argument("--synthetic", type=Path, required=True, help="synthetic cohort folder or manifest.csv")
    realism.add_argument("--model", type=Path, default=Path("models/BraTS"), help="model whose landmarks normalise")
    realism.add_argument("--out", type=Path, help="folder for realism.json/.md/.csv and montage.png")
    realism.add_argument("--max-cases", type=int, default=0, help="at most N cases per side, evenly spread")
    realism.set_defaults(func=cmd_realism)
    from core.convert import add_commands  # convert (DeepMedic to ONNX), import-model (an ONNX file in)

    add_commands(commands, _print_json)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CaseError, ModelError, StoreError, ValueError, KeyError, IndexError, FileNotFoundError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:  # e.g. the store locked by another writer for longer than the timeout
        print(f"error: results store: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"error: {args.command} ran out of memory", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
