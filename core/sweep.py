"""Evaluation sweeps: models x cases x missing sets, on local processes or a Dask cluster.

Work is grouped per (model, case), so a volume is read and normalised once for all its
missing sets; workers compute and return, and only the driver writes to the store (one
transaction per result), so a sweep killed at any moment resumes without partial or
duplicate rows, and two sweeps on one store write each result once. Predictions are scored
on each case's own grid, as in its files (``core.io.scoring_reference``). Modes:
``acquired`` evaluates each case as it is; ``simulated`` applies each combination of missing
sequences to the complete cases. With ``clean``, each prediction is also scored after Clean up
(``core.postprocess``) and stored as the results of a model of its own (``NAME+clean``).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from core.cases import find_cases, given_hospital, hospital_of
from core.io import CaseError, CaseSource, check_source, read_case, scoring_reference
from core.metrics import evaluate
from core.model import read_card
from core.postprocess import CLEANED, clean_labels, cleaned_model
from core.preprocess import brain_mask
from core.sequences import SEQUENCES, combination_name, combinations_for, scorable_regions
from core.store import CODE_VERSION, SCORED_ON, ResultKey, ResultStore, decode_labels, encode_labels

# The split a sweep gives a case whose manifest names none (or that has no manifest): evaluation
# data. Training reads such a case as training data instead (core.train).
DEFAULT_SPLIT = "test"
MODES = ("acquired", "simulated")


@dataclass(frozen=True)
class SweepConfig:
    """What a sweep evaluates, and how.

    ``splits`` / ``hospitals``: keep only cases of these (empty / None: all); a case without a
    split counts as DEFAULT_SPLIT, one without a hospital as ``core.cases.DEFAULT_HOSPITAL``.
    ``per_hospital``: only the first that many cases of each hospital, in the manifest's order
    (a quick, balanced first pass; 0: all). ``root`` confines every case file (links resolved)
    to that folder: a case with a file outside it, or a broken link, is rejected before any of
    its files is read or hashed. ``dask``: a scheduler address, or ``local:N``; else ``workers``
    local processes. ``clean``: also score each prediction after Clean up, stored as the model
    ``NAME+clean`` (:func:`core.postprocess.cleaned_model`).
    """

    model_paths: tuple[str, ...]
    cohort: str
    mode: str = "acquired"
    combinations: int = 8
    splits: tuple[str, ...] = (DEFAULT_SPLIT,)
    hospitals: tuple[str, ...] | None = None
    regions: tuple[str, ...] = ("tc", "wt", "et")
    empty_policy: str = "nan"
    workers: int = 1
    dask: str | None = None
    keep_predictions: bool = True
    device: str = "cpu"
    amp: bool = False
    per_hospital: int = 0
    root: str | None = None
    clean: bool = False

    def __post_init__(self):
        # Paths and sequences of any kind in, plain hashable values kept.
        object.__setattr__(self, "model_paths", tuple(str(p) for p in self.model_paths))
        object.__setattr__(self, "cohort", str(self.cohort))
        object.__setattr__(self, "splits", tuple(self.splits or ()))
        object.__setattr__(self, "hospitals", tuple(self.hospitals) if self.hospitals else None)
        object.__setattr__(self, "regions", tuple(self.regions))
        object.__setattr__(self, "root", None if self.root is None else str(self.root))
        if self.mode not in MODES:
            raise ValueError(f"mode must be 'acquired' or 'simulated', got {self.mode!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SweepConfig:
        return cls(**data)


@dataclass(frozen=True)
class WorkUnit:
    """One model on one case, for one or more missing sets (the simulated ones)."""

    model_path: str
    model_sha256: str
    source: CaseSource
    case_key: str
    missing: tuple[frozenset[str], ...]  # the case's own missing sequences are added
    regions: tuple[str, ...] = ("tc", "wt", "et")
    empty_policy: str = "nan"
    keep_predictions: bool = True  # cache the label maps in the store
    device: str = "cpu"
    amp: bool = False  # bfloat16 autocast where the device runs it natively
    clean: bool = False  # also score each prediction after Clean up
    # Missing sets whose raw result is stored but not its cleaned one: (missing, encoded labels, seconds,
    # device) of the stored prediction, cleaned instead of predicted again, so the two score one prediction.
    stored: tuple[tuple[frozenset[str], tuple[str, bytes], float, str], ...] = ()


@dataclass
class UnitResult:
    unit: WorkUnit
    results: list[dict] = field(default_factory=list)  # per missing set: missing, metrics, seconds, labels
    error: str = ""


@lru_cache(maxsize=4)
def _model(path: str, sha256: str, device: str = "cpu"):
    from core.external import load_any_model  # a DeepMedic or an ONNX model folder

    return load_any_model(path, device=device)


def run_unit(unit: WorkUnit, on_step: Callable[[int], None] | None = None) -> UnitResult:
    """Evaluate one work unit (in a worker process). Errors are returned, not raised; a
    combination the model's card says it cannot run on comes back as not applicable (no metrics).
    ``on_step(k)``: called after the k-th missing set (in the process that runs the unit)."""
    from core.external import NotApplicable, normalise_for, runtime_of
    from core.infer import predict_volume

    out = UnitResult(unit)
    try:
        model = _model(unit.model_path, unit.model_sha256, unit.device)
        case = read_case(unit.source)
        if case.labels is None:
            raise ValueError(f"{case.case_id}: no reference segmentation to evaluate against")
        regions = scorable_regions(case.label_scheme, model.config.num_classes, unit.regions)
        reference, spacing = scoring_reference(case)  # the grid predictions come back on
        stored = {missing: rest for missing, *rest in unit.stored}
        # Once for every missing set: the normalised case (unless every one is stored) and Clean up's brain mask.
        normalised = normalise_for(model, case) if set(unit.missing) - set(stored) else None
        brain = brain_mask(case.images, case.available) if unit.clean else None
        for step, missing in enumerate(unit.missing, start=1):
            if on_step and step > 1:
                on_step(step - 1)
            if missing in stored:  # the raw result is stored: clean its label map
                encoded, seconds, device = stored[missing]
                labels, item = decode_labels(*encoded), {"device": device}
            else:
                try:
                    prediction = predict_volume(model, case, missing, amp=unit.amp, normalised=normalised)
                except NotApplicable as exc:  # recorded as not applicable, never as Dice 0
                    out.results.append({"missing": frozenset(missing) | case.missing, "applicable": False,
                                        "regions": regions, "runtime": runtime_of(model),
                                        "reason": str(exc)})  # fmt: skip
                    continue
                labels, seconds = prediction.labels, prediction.seconds
                item = {
                    "metrics": evaluate(labels, reference, spacing, regions, unit.empty_policy),
                    "seconds": seconds,
                    "device": prediction.device,
                    "labels": encode_labels(labels) if unit.keep_predictions else None,
                }  # fmt: skip
            item |= {"missing": frozenset(missing) | case.missing, "applicable": True, "runtime": runtime_of(model)}
            if unit.clean:
                try:
                    start = time.perf_counter()
                    cleaned = clean_labels(labels, case, brain).labels
                    item["cleaned"] = {
                        "metrics": evaluate(cleaned, reference, spacing, regions, unit.empty_policy),
                        "seconds": seconds + time.perf_counter() - start,
                        "labels": encode_labels(cleaned) if unit.keep_predictions else None,
                    }  # fmt: skip
                except Exception as exc:  # the raw result is kept all the same
                    item["clean_error"] = f"Clean up: {type(exc).__name__}: {exc}"
            out.results.append(item)
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


def plan_sweep(store: ResultStore, config: SweepConfig) -> SweepPlan:
    """Work units of ``config`` not yet in the store; records each model and case in the store.

    Raises:
        ValueError: a model folder without a readable card.
        CaseError: the cohort itself cannot be read or leaves ``config.root``.
    """
    models = []
    for path in config.model_paths:
        card = read_card(path)
        name = card.get("name", Path(path).name)
        store.add_model(card["weights_sha256"], name, card)
        if config.clean:
            store.add_model(*cleaned_model(card["weights_sha256"], name, card))
        models.append((str(path), card["weights_sha256"]))
    units, done_count, skipped, rejected, taken = [], 0, [], [], Counter()
    for source in find_cases(config.cohort, config.root):
        meta = source.meta
        hospital = hospital_of(meta)
        if config.splits and meta.get("split", DEFAULT_SPLIT) not in config.splits:
            continue
        if config.hospitals and hospital not in config.hospitals:
            continue
        if config.per_hospital and taken[hospital] >= config.per_hospital:
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
        if config.mode == "acquired":
            wanted = [own]
        elif own:
            skipped.append(source.case_id)  # simulated combinations need a complete case
            continue
        else:
            wanted = list(combinations_for(config.combinations))
        taken[hospital] += 1
        synthetic = {k: meta[k] for k in ("preset", "scale", "seed", "case_index") if meta.get(k, "") != ""}
        case_meta = {"origin": source.origin} | ({"synthetic": synthetic} if synthetic else {})
        # The row keeps the hospital as given: a case without one is chosen as DEFAULT_HOSPITAL
        # above but shows as "not given" (core.store.NO_HOSPITAL), never mixed into the public set.
        key = store.add_source(source, given_hospital(meta), str(meta.get("split", "")), own, case_meta)
        for path, sha in models:
            # Each missing set's results: the raw prediction's, and with clean the cleaned one's too.
            shas = (sha, sha + CLEANED) if config.clean else (sha,)
            keys = {m: [_result_key(s, key, m, config.empty_policy) for s in shas] for m in wanted}
            done = store.done(k for both in keys.values() for k in both)
            done_count += len(done)
            todo = tuple(m for m, both in keys.items() if not done.issuperset(both))
            # Raw stored, cleaned not: the stored label map is cleaned (predicting again could give
            # another prediction, on another device or precision); without one, it is predicted again.
            stored = tuple((m, *found) for m in todo if keys[m][0] in done
                           and (found := store.encoded_prediction(sha, key, combination_name(m))))  # fmt: skip
            if todo:
                units.append(WorkUnit(path, sha, source, key, todo, config.regions, config.empty_policy,
                                      config.keep_predictions, config.device, config.amp, config.clean,
                                      stored))  # fmt: skip
    return SweepPlan(units, done_count, skipped, rejected)


def _result_key(model_sha256: str, key: str, missing: frozenset[str], empty_policy: str) -> ResultKey:
    return ResultKey(model_sha256, key, combination_name(missing), empty_policy, CODE_VERSION)


def _local_results(units: list[WorkUnit], workers: int, device: str = "cpu",
                   on_step: Callable[[WorkUnit, int], None] | None = None) -> Iterator[UnitResult]:  # fmt: skip
    if workers <= 1:  # in this process: progress within a unit too
        for unit in units:
            yield run_unit(unit, on_step and (lambda k, unit=unit: on_step(unit, k)))
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
    not_applicable: int = 0  # raw combinations written as not applicable (the model's card: cannot-run)
    cleaned_written: int = 0  # of results_written, those of the model NAME+clean (SweepConfig.clean)
    cleaned_not_applicable: int = 0  # of cleaned_written, not applicable


def run_sweep(store: ResultStore, config: SweepConfig,
              on_progress: Callable[[int, int, str], None] | None = None) -> SweepSummary:  # fmt: skip
    """Evaluate what the store lacks and write it, result by result, from this process only.

    ``results_written`` counts what this sweep wrote (with ``clean``, a prediction's raw and
    cleaned results count one each): a result another writer stored first is left as it is.
    ``on_progress(done, total, words)`` counts predictions (combinations of missing sequences),
    with the case and model in words; in one local process it moves after each prediction, else
    after each model's case.
    """
    start = time.perf_counter()
    plan = plan_sweep(store, config)
    # Progress counts predictions (a unit holds 1 to 15), so that a long unit moves the bar too.
    total, finished = sum(len(u.missing) for u in plan.units), 0

    def step(unit: WorkUnit, k: int) -> None:
        on_progress(finished + k, total, _progress_words(unit))

    if config.dask:
        results = _dask_results(plan.units, config.dask, config.device)
    else:
        results = _local_results(plan.units, config.workers, config.device, step if on_progress else None)
    if on_progress and plan.units:
        on_progress(0, total, _progress_words(plan.units[0]))
    written, errors, not_applicable, cleaned, cleaned_na = 0, list(plan.rejected), 0, 0, 0
    for result in results:
        unit = result.unit
        for item in result.results:
            key = _result_key(unit.model_sha256, unit.case_key, item["missing"], unit.empty_policy)
            clean_key = replace(key, model_sha256=unit.model_sha256 + CLEANED)
            if not item["applicable"]:
                wrote = store.write_not_applicable(key, item["regions"], item["runtime"])
                written, not_applicable = written + wrote, not_applicable + wrote
                if unit.clean:
                    wrote = store.write_not_applicable(clean_key, item["regions"], item["runtime"])
                    written, cleaned, cleaned_na = written + wrote, cleaned + wrote, cleaned_na + wrote
                continue
            if "metrics" in item:  # not when the raw result was stored already and only cleaned here
                written += store.write(key, item["metrics"], item["seconds"], item["device"], item["labels"],
                                       item["runtime"])  # fmt: skip
            if "clean_error" in item:
                errors.append(f"{unit.source.case_id} with {Path(unit.model_path).name}: {item['clean_error']}")
            if "cleaned" in item:
                done = item["cleaned"]
                wrote = store.write(clean_key, done["metrics"], done["seconds"], item["device"], done["labels"],
                                    item["runtime"])  # fmt: skip
                written, cleaned = written + wrote, cleaned + wrote
        if result.error:
            errors.append(f"{unit.source.case_id} with {Path(unit.model_path).name}: {result.error}")
        finished += len(unit.missing)
        if on_progress:
            on_progress(finished, total, _progress_words(unit))
    seconds = time.perf_counter() - start
    return SweepSummary(len(plan.units), written, plan.skipped_done, plan.skipped_cases, errors, seconds,
                        not_applicable=not_applicable, cleaned_written=cleaned,
                        cleaned_not_applicable=cleaned_na)  # fmt: skip


def _progress_words(unit: WorkUnit) -> str:
    return f"{unit.source.case_id}, {Path(unit.model_path).name}"


def default_workers() -> int:
    """Local processes: one per core, at most 4 (each inference already uses its threads well)."""
    return max(1, min(4, os.cpu_count() or 1))
