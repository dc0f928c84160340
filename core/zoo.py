"""The paper's models, trained on a synthetic cohort: which data, which flags, in which order.

``train_zoo`` renders only the training and validation cases the chosen models need, then
trains each model into ``out/<name>``. Both steps resume: rendered cases are skipped,
training continues from its checkpoint, and finished models are left alone, so the zoo can
be built across several sessions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.synth.cohort import plan_cohort, write_cohort
from core.train import TrainConfig, model_name, train

H1 = ("public", "1")
H26 = ("public", "2", "3", "4", "5", "6")
H16 = ("public", "1", "2", "3", "4", "5", "6")


@dataclass(frozen=True)
class ModelSpec:
    hospitals: tuple[str, ...]
    complete_only: bool = False
    sparsify: float = 0.0

    @property
    def name(self) -> str:
        return model_name(self.hospitals, self.complete_only, self.sparsify)


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
) -> list[Path]:
    """Render what is needed and train the named models (default: all 11). Returns their folders.

    Raises:
        ValueError: an unknown model name.
    """
    names = names or list(ZOO)
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; the paper's are {list(ZOO)}")
    specs = [ZOO[n] for n in names]
    hospitals = set().union(*(s.hospitals for s in specs))
    needed = [p.patient_id for p in plan_cohort(preset, scale, seed) if p.hospital in hospitals and p.split != "test"]
    manifest = write_cohort(cohort, preset, scale, seed, patient_ids=needed, workers=workers, on_progress=on_progress)
    folders = []
    for spec in specs:
        folder = Path(out) / spec.name
        config = TrainConfig(cohort=str(manifest), hospitals=spec.hospitals, preset=model_preset,
                             complete_only=spec.complete_only, sparsify=spec.sparsify, iterations=iterations,
                             batch_size=batch_size, output_size=output_size, seed=seed,
                             val_every=max(1, iterations // 10), checkpoint_every=max(1, iterations // 40))  # fmt: skip
        if (folder / "card.json").is_file() and not (folder / "checkpoint.safetensors").is_file():
            folders.append(folder)  # finished earlier
            continue
        folders.append(train(config, folder, device=device, on_progress=on_progress))
    return folders
