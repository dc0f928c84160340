"""The paper's models, trained on a synthetic cohort: which data, which flags, in which order.

``train_zoo`` renders only the training and validation cases the chosen models need, then
trains each model into ``out/<name>``, one after the other or several at once. Both steps
resume: rendered cases are skipped, training continues from its checkpoint, and finished
models are left alone, so the zoo can be built across several sessions.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

from core.card import ModelSpec
from core.sampling import planned_cases
from core.synth.cohort import plan_cohort, write_cohort
from core.train import TrainConfig, train

H1 = ("public", "1")
H26 = ("public", "2", "3", "4", "5", "6")
H16 = ("public", "1", "2", "3", "4", "5", "6")


# The paper's 11 models, cheapest first (BraTS data only, then more hospitals).
PAPER_MODELS = [
    ModelSpec(("public",)), ModelSpec(("public",), sparsify=0.2),
    ModelSpec(H1, complete_only=True), ModelSpec(H1), ModelSpec(H1, sparsify=0.2),
    ModelSpec(H26, complete_only=True), ModelSpec(H26), ModelSpec(H26, sparsify=0.2),
    ModelSpec(H16, complete_only=True), ModelSpec(H16), ModelSpec(H16, sparsify=0.2),
]  # fmt: skip
ZOO = {spec.name: spec for spec in PAPER_MODELS}


def train_zoo(
    cohort: str | Path,
    out: str | Path,
    names: list[str] | None = None,
    preset: str = "paper",
    scale: float = 1.0,
    seed: int = 0,
    model_preset: str = "deepmedic-lite",
    iterations: int = 2000,
    batch_size: int = 10,
    output_size: int = 9,
    workers: int = 1,
    device: str = "cpu",
    on_progress: Callable[[int, int, str], None] | None = None,
    max_cases: int = 0,
    max_val_cases: int = 0,
    jobs: int = 1,
    max_minutes: float = 0.0,
    amp: bool = False,
    randomise: float = 0.0,
) -> list[Path]:
    """Render what is needed and train the named models (default: all 11). Returns their folders.

    Args:
        max_cases, max_val_cases: per model, at most this many training / validation cases,
            evenly spread over the hospitals (0: all); only those are rendered.
        jobs: models trained at once, each in its own process (several small models share
            one GPU well).
        max_minutes: per model, finish at the iteration reached after this long (0: no limit).
        randomise: domain randomisation strength of training windows (0: off; see core.augment).

    Raises:
        ValueError: an unknown model name.
    """
    names = names or list(ZOO)
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; the paper's are {list(ZOO)}")
    specs = [ZOO[n] for n in names]
    configs = {spec.name: TrainConfig(cohort="", hospitals=spec.hospitals, preset=model_preset,
                                      complete_only=spec.complete_only, sparsify=spec.sparsify,
                                      iterations=iterations, batch_size=batch_size, output_size=output_size, seed=seed,
                                      val_every=max(1, iterations // 10), checkpoint_every=max(1, iterations // 40),
                                      max_cases=max_cases, max_val_cases=max_val_cases, amp=amp,
                                      randomise=randomise)
               for spec in specs}  # fmt: skip
    plans = plan_cohort(preset, scale, seed)
    # Each model trains on exactly its planned cases: a spread over the shared cohort folder
    # would depend on which cases the other models had rendered there.
    configs = {name: replace(config, patients=tuple(p.patient_id for p in planned_cases(plans, config)))
               for name, config in configs.items()}  # fmt: skip
    needed = sorted({patient for config in configs.values() for patient in config.patients})
    manifest = write_cohort(cohort, preset, scale, seed, patient_ids=needed, workers=workers, on_progress=on_progress)
    todo, folders = [], []
    for name, config in configs.items():
        folder = Path(out) / name
        folders.append(folder)
        if not ((folder / "card.json").is_file() and not (folder / "checkpoint.safetensors").is_file()):
            todo.append((replace(config, cohort=str(manifest)), str(folder), device, 60 * max_minutes))
    if jobs <= 1 or len(todo) <= 1:
        for config, folder, device, seconds in todo:
            train(config, folder, device=device, on_progress=on_progress, max_seconds=seconds)
        return folders
    # Separate processes (spawned: CUDA does not survive a fork), each model on its own.
    with ProcessPoolExecutor(min(jobs, len(todo)), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_train_job, job): job[1] for job in todo}
        for done, future in enumerate(as_completed(futures), start=1):
            future.result()
            if on_progress:
                on_progress(done, len(todo), f"{Path(futures[future]).name} trained")
    return folders


def _train_job(job) -> str:
    config, folder, device, seconds = job
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 4))
    return str(train(config, folder, device=device, max_seconds=seconds))
