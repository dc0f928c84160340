"""Evaluation sweeps: models x cases x missing sets, on local processes or a Dask cluster.

Work is grouped per (model, case), so a volume is read and normalised once for all its
missing sets; workers compute and return, and only the driver writes to the store (one
transaction per result), so a sweep killed at any moment resumes without partial or
duplicate rows, and two sweeps on one store write each result once. Predictions are scored
on each case's own grid, as in its files (``core.io.scoring_reference``). Modes:
``acquired`` evaluates each case as it is; ``simulated`` applies each combination of missing
sequences to the complete cases.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from core.io import CaseError, CaseSource, check_source, find_cases, read_case, scoring_reference
from core.metrics import evaluate
from core.model import read_card
from core.sequences import SEQUENCES, combination_name, combinations_for
from core.store import CODE_VERSION, SCORED_ON, ResultKey, ResultStore, case_key, encode_labels


@dataclass(frozen=True)
class WorkUnit:
    """One model on one case, for one or more missing sets (names of simulated sets)."""

    model_path: str
    model_sha256: str
    source: CaseSource
    case_key: str
    missing: tuple[str, ...]  # combination names; the case's own missing sequences are added
    regions: tuple[str, ...] = ("tc", "wt", "et")
    empty_policy: str = "nan"
    keep_predictions: bool = True  # cache the label maps in the store
    device: str = "cpu"
    amp: bool = False  # bfloat16 autocast where the device runs it natively


@dataclass
class UnitResult:
    unit: WorkUnit
    results: list[dict] = field(default_factory=list)  # per missing set: name, metrics, seconds, labels
    error: str = ""


def files_hash(source: CaseSource, store: ResultStore | None = None) -> str:
    """Content hash of a case's files (the bytes on disk, no decoding).

    With a store, the digest is remembered under the files' paths, sizes and modification
    times, so a file is read again only when it changed.
    """
    paths = [source.paths.get(s) for s in SEQUENCES] + [source.seg]
    present = [Path(p) if p is not None and Path(p).is_file() else None for p in paths]
    signature = json.dumps([[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] if p else None for p in present])
    if store is not None:
        remembered = store.remembered_digest(signature)
        if remembered is not None:
            return remembered
    digest = hashlib.blake2b(digest_size=8)
    for path in present:
        digest.update(b"|")
        if path is not None:
            digest.update(path.read_bytes())
    value = digest.hexdigest()
    if store is not None:
        store.remember_digest(signature, value)
    return value


@lru_cache(maxsize=4)
def _model(path: str, sha256: str, device: str = "cpu"):
    from core.model import load_model

    return load_model(path, device=device)


def run_unit(unit: WorkUnit) -> UnitResult:
    """Evaluate one work unit (in a worker process). Errors are returned, not raised."""
    from core.infer import normalise_case, predict_volume
    from core.sequences import parse_combination

    out = UnitResult(unit)
    try:
        model = _model(unit.model_path, unit.model_sha256, unit.device)
        case = read_case(unit.source)
        if case.labels is None:
            raise ValueError(f"{case.case_id}: no reference segmentation to evaluate against")
        regions = tuple(r for r in unit.regions if case.label_scheme != "tc" or r == "tc")
        reference, spacing = scoring_reference(case)  # the grid predictions come back on
        normalised = normalise_case(case, model.card["normalisation"]["landmarks"])  # once for every missing set
        for name in unit.missing:
            prediction = predict_volume(model, case, parse_combination(name), amp=unit.amp, normalised=normalised)
            metrics = evaluate(prediction.labels, reference, spacing, regions, unit.empty_policy)
            out.results.append({
                "missing": prediction.missing_name,
                "metrics": metrics,
                "seconds": prediction.seconds,
                "device": prediction.device,
                "labels": encode_labels(prediction.labels) if unit.keep_predictions else None,
            })  # fmt: skip
    except Exception as exc:  # a bad case or model must not stop the sweep
        out.error = f"{type(exc).__name__}: {exc}"
    return out


def _init_worker(device: str = "cpu", gpu_share: float = 1.0) -> None:
    """One thread per worker (workers are processes); on a GPU, each its share of the memory."""
    import torch

    torch.set_num_threads(1)
    if device.startswith("cuda"):
        from core.device import share_gpu

        share_gpu(gpu_share, device)


@dataclass
class SweepPlan:
    units: list[WorkUnit]
    skipped_done: int
    skipped_cases: list[str]
    rejected: list[str] = field(default_factory=list)  # why a case was left out before reading it


def plan_sweep(store: ResultStore, model_paths: list[str], cohort: str | Path, mode: str = "acquired",
               combinations: int = 8, splits=("test",), hospitals=None, regions=("tc", "wt", "et"),
               empty_policy: str = "nan", keep_predictions: bool = True, device: str = "cpu",
               amp: bool = False, per_hospital: int = 0, root: str | Path | None = None) -> SweepPlan:  # fmt: skip
    """Work units not yet in the store (with ``per_hospital``, only the first that many cases
    of each hospital, in the manifest's order: a quick, balanced first pass).

    ``root`` confines every case file (links resolved) to that folder: a case with a file
    outside it, or a broken link, is rejected before any of its files is read or hashed.

    Raises:
        ValueError: unknown mode, or a model folder without a readable card.
        CaseError: the cohort itself cannot be read or leaves ``root``.
    """
    if mode not in ("acquired", "simulated"):
        raise ValueError(f"mode must be 'acquired' or 'simulated', got {mode!r}")
    models = []
    for path in model_paths:
        card = read_card(path)
        store.add_model(card["weights_sha256"], card.get("name", Path(path).name), card)
        models.append((str(path), card["weights_sha256"]))
    units, done_count, skipped, rejected, taken = [], 0, [], [], Counter()
    for source in find_cases(cohort, root):
        meta = source.meta
        hospital = str(meta.get("hospital", "public"))
        if splits and meta.get("split", "test") not in splits:
            continue
        if hospitals and hospital not in hospitals:
            continue
        if per_hospital and taken[hospital] >= per_hospital:
            continue
        if not source.paths:  # a folder that is not a case; inspect reports why
            skipped.append(source.case_id)
            continue
        try:
            check_source(source)
        except CaseError as exc:
            skipped.append(source.case_id)
            rejected.append(f"{source.case_id}: {exc}")
            continue
        own = frozenset(s for s in SEQUENCES if source.paths.get(s) is None)
        if mode == "acquired":
            wanted = [combination_name(own)]
        elif own:
            skipped.append(source.case_id)  # simulated combinations need a complete case
            continue
        else:
            wanted = [combination_name(m) for m in combinations_for(combinations)]
        taken[hospital] += 1
        digest = files_hash(source, store)
        key = case_key(source.case_id, digest)
        synthetic = {k: meta[k] for k in ("preset", "scale", "seed", "case_index") if meta.get(k, "") != ""}
        case_meta = {"origin": source.origin} | ({"synthetic": synthetic} if synthetic else {})
        store.add_case(key, source.case_id, digest, str(meta.get("hospital", "")), str(meta.get("split", "")),
                       combination_name(own), case_meta)  # fmt: skip
        for path, sha in models:
            keys = [ResultKey(sha, key, name, empty_policy, CODE_VERSION) for name in wanted]
            done = store.done(keys)
            done_count += len(done)
            todo = tuple(k.missing for k in keys if k not in done)
            if todo:
                units.append(WorkUnit(path, sha, source, key, todo, tuple(regions), empty_policy, keep_predictions,
                                      device, amp))  # fmt: skip
    return SweepPlan(units, done_count, skipped, rejected)


def _local_results(units: list[WorkUnit], workers: int, device: str = "cpu") -> Iterator[UnitResult]:
    if workers <= 1:
        for unit in units:
            yield run_unit(unit)
        return
    gpu = device.startswith("cuda")
    context = multiprocessing.get_context("spawn" if gpu else None)  # CUDA does not survive a fork
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                             initargs=(device, 0.9 / workers if gpu else 1.0)) as pool:  # fmt: skip
        for future in as_completed([pool.submit(run_unit, u) for u in units]):
            yield future.result()


def _dask_results(units: list[WorkUnit], address: str, device: str = "cpu") -> Iterator[UnitResult]:
    from dask.distributed import Client, LocalCluster
    from dask.distributed import as_completed as dask_completed

    cluster = None
    if address.startswith("local:"):
        cluster = LocalCluster(n_workers=int(address.split(":", 1)[1]), threads_per_worker=1, processes=True,
                               dashboard_address=None)  # fmt: skip
        client = Client(cluster)
    else:
        client = Client(address)
    try:
        workers = max(1, len(client.scheduler_info()["workers"]))
        client.run(_init_worker, device, 0.9 / workers if device.startswith("cuda") else 1.0)
        futures = client.map(run_unit, units, pure=False)
        for future in dask_completed(futures):
            yield future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


@dataclass
class SweepSummary:
    units: int
    results_written: int
    skipped_done: int
    skipped_cases: list[str]
    errors: list[str]
    seconds: float
    scored_on: str = SCORED_ON


def run_sweep(store: ResultStore, model_paths: list[str], cohort: str | Path, mode: str = "acquired",
              combinations: int = 8, splits=("test",), hospitals=None, regions=("tc", "wt", "et"),
              empty_policy: str = "nan", workers: int = 1, dask: str | None = None,
              on_progress: Callable[[int, int, str], None] | None = None,
              keep_predictions: bool = True, device: str = "cpu", amp: bool = False,
              per_hospital: int = 0, root: str | Path | None = None) -> SweepSummary:  # fmt: skip
    """Evaluate what the store lacks and write it, result by result, from this process only.

    ``results_written`` counts what this sweep wrote: a result another writer stored first is
    left as it is. ``root``: see :func:`plan_sweep`.
    """
    start = time.perf_counter()
    plan = plan_sweep(store, model_paths, cohort, mode, combinations, splits, hospitals, regions, empty_policy,
                      keep_predictions, device, amp, per_hospital, root)  # fmt: skip
    results = _dask_results(plan.units, dask, device) if dask else _local_results(plan.units, workers, device)
    written, errors = 0, list(plan.rejected)
    for done, result in enumerate(results, start=1):
        unit = result.unit
        for item in result.results:
            key = ResultKey(unit.model_sha256, unit.case_key, item["missing"], unit.empty_policy, CODE_VERSION)
            written += store.write(key, item["metrics"], item["seconds"], item["device"], item["labels"])
        if result.error:
            errors.append(f"{unit.source.case_id} with {Path(unit.model_path).name}: {result.error}")
        if on_progress:
            on_progress(done, len(plan.units), unit.source.case_id)
    return SweepSummary(len(plan.units), written, plan.skipped_done, plan.skipped_cases, errors,
                        time.perf_counter() - start)  # fmt: skip


def default_workers() -> int:
    """Local processes: one per core, at most 4 (each inference already uses its threads well)."""
    return max(1, min(4, os.cpu_count() or 1))
