"""Training DeepMedic with or without sparsified training, as the paper did.

The loop reads like the algorithm: sample windows (half centred in tumour, half anywhere in
the brain), drop sequences at random (sparsified training), Dice loss, Adam with the paper's
step schedule, validation Dice, checkpoints. Randomness for iteration ``i`` on rank ``r``
comes from ``default_rng([seed, r, i])``, so a run resumed from a checkpoint draws exactly
what an uninterrupted run draws and ends with the same weights (CPU).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import core
from core.augment import Randomisation, randomise_window
from core.infer import autocast, bf16_supported
from core.io import Case, find_cases, read_case
from core.model import CONTEXT, build_model, save_model
from core.preprocess import brain_crop, brain_mask, fit_landmarks, normalise
from core.sequences import LABEL_NAMES, REGIONS, SEQUENCES, Sparsifier

DICE_EPS = 1e-5
LOG = "training_log.csv"
CHECKPOINT = "checkpoint.safetensors"
LOG_COLUMNS = ["iteration", "loss", "lr", "seconds", "dropped_t1", "dropped_t1c", "dropped_t2", "dropped_flair",
               "val_dice_tc", "val_dice_wt"]  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved in the card and the checkpoint)."""

    cohort: str
    hospitals: tuple[str, ...] = ("public",)
    preset: str = "deepmedic-lite"
    complete_only: bool = False
    sparsify: float = 0.0
    iterations: int = 200
    batch_size: int = 10
    output_size: int = 9  # the paper's 9^3 output window; larger gives more labelled voxels per step
    learning_rate: float = 1e-3
    seed: int = 0
    val_every: int = 50
    checkpoint_every: int = 25
    num_classes: int = 4
    residual: bool = False
    max_cases: int = 0  # 0 = all training cases; else this many, evenly spread over the manifest's order
    max_val_cases: int = 0  # 0 = all validation cases; else evenly spread like max_cases
    # Only these patients (the zoo passes each model's planned cases, so what else is rendered
    # in a shared cohort folder cannot change a model's training set); empty = every case.
    patients: tuple[str, ...] = ()
    val_windows: int = 8  # fixed validation windows per validation case
    amp: bool = False  # bfloat16 autocast for the forward pass where the device runs it natively
    randomise: float = 0.0  # domain randomisation strength of each window (core.augment); 0 = off

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        data["hospitals"] = tuple(data["hospitals"])
        data["patients"] = tuple(data.get("patients", ()))
        return cls(**data)


def model_name(hospitals, complete_only: bool, sparsify: float) -> str:
    """The paper's naming: BraTS, BraTSst, cH1BraTS, H2-6BraTSst, H1-6BraTS, ..."""
    numbers = sorted(int(h) for h in hospitals if h != "public")
    runs, start = [], None
    for i, n in enumerate(numbers):
        start = n if start is None else start
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            runs.append(f"{start}-{n}" if n != start else f"{n}")
            start = None
    name = ("H" + "_".join(runs) if runs else "") + ("BraTS" if "public" in hospitals else "")
    return ("c" if complete_only else "") + name + ("st" if sparsify > 0 else "")


def lr_at(iteration: int, total: int, base: float) -> float:
    """The paper's schedule scaled to ``total``: halve every 5000 of 30000 iterations until
    15000, then every 1500."""
    steps = [5000, 10000, 15000, *range(16500, 30000, 1500)]
    passed = sum(iteration >= round(s * total / 30000) for s in steps)
    return base * 0.5**passed


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, eps: float = DICE_EPS) -> torch.Tensor:
    """1 - mean over classes of (2 sum(g p) + eps) / (sum(p^2) + sum(g) + eps), softmax p.

    Sums run over the batch and all voxels; a class absent from the batch gives
    eps / (sum(p^2) + eps), which pushes its probabilities to 0 with finite gradients.
    """
    probabilities = torch.softmax(logits, dim=1)
    onehot = nn.functional.one_hot(labels.long(), logits.shape[1]).movedim(-1, 1).to(probabilities.dtype)
    dims = (0, 2, 3, 4)
    numerator = 2 * (onehot * probabilities).sum(dims) + eps
    denominator = (probabilities**2).sum(dims) + onehot.sum(dims) + eps
    return 1 - (numerator / denominator).mean()


# --------------------------------------------------------------------------- training data


@dataclass
class TrainingVolume:
    """A normalised case cropped to the brain, in float16, with its tumour voxels indexed."""

    case_id: str
    images: np.ndarray  # (4, X, Y, Z) float16
    labels: np.ndarray  # (X, Y, Z) uint8
    available: np.ndarray
    tumour: np.ndarray  # (N, 3) int32 voxel indices with label > 0


def crop_case(case: Case) -> Case:
    """The case cropped to its brain (plus 2 voxels), which holds every voxel normalisation uses."""
    crop = brain_crop(brain_mask(case.images, case.available), margin=2)
    labels = crop.apply(case.labels) if case.labels is not None else None
    return replace(case, images=np.ascontiguousarray(crop.apply(case.images)), labels=labels)


def prepare_volume(case: Case, landmarks: dict, num_classes: int = 4) -> TrainingVolume:
    """Normalise, crop to the brain, store in float16; 2 classes = background / tumour core."""
    case = crop_case(case)
    images = normalise(case.images, case.available, landmarks).astype(np.float16)
    labels = case.labels if case.labels is not None else np.zeros(images.shape[1:], np.uint8)
    if num_classes == 2:
        labels = np.isin(labels, list(REGIONS["tc"])).astype(np.uint8)
    return TrainingVolume(case.case_id, images, np.ascontiguousarray(labels), case.available.copy(),
                          np.argwhere(labels > 0).astype(np.int32))  # fmt: skip


def _overlap(start, size: int, shape) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Source slices in a volume of ``shape`` and destination slices in a size^3 window that
    starts at ``start`` (it may stick out of the volume: that part stays zero)."""
    src = tuple(slice(max(s, 0), min(s + size, n)) for s, n in zip(start, shape))
    dst = tuple(slice(a.start - s, a.stop - s) for a, s in zip(src, start))
    return src, dst


def extract_window(volume: TrainingVolume, centre: np.ndarray, output: int,
                   images: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Input (4, O+48, ...) and label (O, O, O) windows around ``centre``, zero-padded.

    The input goes into ``images`` when given (a zeroed array, e.g. a slot of a batch),
    else into a new float32 array.
    """
    size = output + CONTEXT
    start = centre - output // 2 - CONTEXT // 2
    images = np.zeros((4, size, size, size), np.float32) if images is None else images
    src, dst = _overlap(start, size, volume.labels.shape)
    images[(slice(None), *dst)] = volume.images[(slice(None), *src)]
    labels = np.zeros((output,) * 3, np.uint8)
    src, dst = _overlap(start + CONTEXT // 2, output, volume.labels.shape)
    labels[dst] = volume.labels[src]
    return images, labels


def input_labels(volume: TrainingVolume, centre: np.ndarray, output: int) -> np.ndarray:
    """Labels of the whole input window (O+48)^3 around ``centre``, zero-padded like its images."""
    size = output + CONTEXT
    labels = np.zeros((size,) * 3, np.uint8)
    src, dst = _overlap(centre - output // 2 - CONTEXT // 2, size, volume.labels.shape)
    labels[dst] = volume.labels[src]
    return labels


def sample_centre(volume: TrainingVolume, rng: np.random.Generator, in_tumour: bool) -> np.ndarray:
    """A voxel in the tumour, or anywhere in the brain (rejection sampling in the crop)."""
    if in_tumour and len(volume.tumour):
        return volume.tumour[rng.integers(len(volume.tumour))].astype(np.int64)
    shape = np.asarray(volume.labels.shape)
    for _ in range(100):
        centre = rng.integers(0, shape)
        if volume.images[(slice(None), *centre)].any() or volume.labels[tuple(centre)]:
            return centre
    return shape // 2


def sample_batch(volumes, rng, config: TrainConfig, sparsifier: Sparsifier):
    """A batch of windows; half centred in tumour. Returns (x, y, dropped sets).

    ``x`` is float16, as the volumes are stored (exact; half the bytes to copy and to send to
    a GPU): convert it on the device.
    """
    size = config.output_size + CONTEXT
    x = np.zeros((config.batch_size, 4, size, size, size), np.float16)
    y = np.empty((config.batch_size, *(config.output_size,) * 3), np.uint8)
    dropped = []
    for i in range(config.batch_size):
        volume = volumes[rng.integers(len(volumes))]
        centre = sample_centre(volume, rng, in_tumour=i < (config.batch_size + 1) // 2)
        _, y[i] = extract_window(volume, centre, config.output_size, images=x[i])
        drop = sparsifier.draw(rng, volume.available)
        for sequence in drop:
            x[i, SEQUENCES.index(sequence)] = 0
        dropped.append(drop)
        if config.randomise > 0:
            present = [c for c, s in enumerate(SEQUENCES) if volume.available[c] and s not in drop]
            randomise_window(x[i], input_labels(volume, centre, config.output_size), present, rng,
                             Randomisation(strength=config.randomise))  # fmt: skip
    return torch.from_numpy(x), torch.from_numpy(y), dropped


def spread(items: list, limit: int) -> list:
    """At most ``limit`` items evenly spread over the list (all of them when ``limit`` is 0).

    Manifests list hospitals one after the other, so a spread keeps each hospital's share.
    """
    if not limit or len(items) <= limit:
        return list(items)
    return [items[i] for i in np.unique(np.linspace(0, len(items) - 1, limit).round().astype(int))]


def select_cases(config: TrainConfig, split: str):
    """Case sources of the cohort manifest for the config's hospitals and a split (only
    ``patients`` when given; capped by ``max_cases`` / ``max_val_cases``)."""
    sources = find_cases(config.cohort)
    chosen, patients = [], set(config.patients)
    for source in sources:
        hospital = str(source.meta.get("hospital", "public"))
        if hospital not in config.hospitals or source.meta.get("split", "train") != split:
            continue
        if patients and source.case_id not in patients:
            continue
        if config.complete_only and any(source.paths.get(s) is None for s in SEQUENCES):
            continue
        chosen.append(source)
    return spread(chosen, config.max_cases if split == "train" else config.max_val_cases)


def _threads() -> int:
    return min(8, os.cpu_count() or 1)


def read_cropped(sources) -> list[Case]:
    """Read cases and crop each to its brain, several at a time (decompression releases the GIL)."""
    with ThreadPoolExecutor(_threads()) as pool:
        return list(pool.map(lambda source: crop_case(read_case(source)), sources))


def prepare_volumes(cases, landmarks, num_classes=4) -> list[TrainingVolume]:
    """:func:`prepare_volume` of each case, several at a time (numpy's percentiles release the GIL)."""
    with ThreadPoolExecutor(_threads()) as pool:
        return list(pool.map(lambda case: prepare_volume(case, landmarks, num_classes), cases))


def load_volumes(sources, landmarks, num_classes=4) -> list[TrainingVolume]:
    return prepare_volumes(read_cropped(sources), landmarks, num_classes)


# --------------------------------------------------------------------------- validation


def validation_windows(volumes, config: TrainConfig):
    """Fixed validation windows (27^3 outputs), drawn once from the seed: half in tumour."""
    rng = np.random.default_rng([config.seed, 999_983])
    windows = []
    for volume in volumes:
        for k in range(config.val_windows):
            centre = sample_centre(volume, rng, in_tumour=k % 2 == 0)
            windows.append(extract_window(volume, centre, 27))
    return windows


@torch.no_grad()
def validation_dice(model: nn.Module, windows, device) -> dict[str, float]:
    """Dice of tumour core and whole tumour pooled over the validation windows."""
    if not windows:
        return {}
    was_training = model.training
    model.eval()
    binary = model.config.num_classes == 2
    counts = {region: np.zeros(3) for region in (("tc",) if binary else ("tc", "wt"))}  # tp, fp, fn
    for start in range(0, len(windows), 4):
        chunk = windows[start : start + 4]
        x = torch.from_numpy(np.stack([w[0] for w in chunk])).to(device)
        pred = model(x).argmax(1).cpu().numpy()
        ref = np.stack([w[1] for w in chunk])
        for region, counter in counts.items():
            labels = [1] if binary else list(REGIONS[region])
            p, r = np.isin(pred, labels), np.isin(ref, labels)
            counter += [np.sum(p & r), np.sum(p & ~r), np.sum(~p & r)]
    model.train(was_training)
    return {region: float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else float("nan")
            for region, (tp, fp, fn) in counts.items()}  # fmt: skip


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, model: nn.Module, optimizer, iteration: int, config: TrainConfig, extra: dict):
    """One safetensors file: model + optimizer tensors, JSON state in its metadata. Atomic."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    state = optimizer.state_dict()
    for index, values in state["state"].items():
        for key, value in values.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    metadata = {"iteration": str(iteration), "config": json.dumps(config.to_dict()),
                "param_groups": json.dumps(state["param_groups"]), "extra": json.dumps(extra)}  # fmt: skip
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: nn.Module, optimizer) -> tuple[int, TrainConfig, dict]:
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict = {"state": {}, "param_groups": json.loads(metadata["param_groups"])}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state["state"].setdefault(int(index), {})[name] = value
    optimizer.load_state_dict(state)
    return (
        int(metadata["iteration"]),
        TrainConfig.from_dict(json.loads(metadata["config"])),
        json.loads(metadata["extra"]),
    )


# --------------------------------------------------------------------------- the run


@dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def from_environment(cls, device: torch.device) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls(0, 1, device)
        import torch.distributed as dist

        backend = "nccl" if device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend)
        rank = dist.get_rank()
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
            torch.cuda.set_device(device)
        return cls(rank, world, device)


def _write_log(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _read_log(path: Path, up_to: int) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if int(row["iteration"]) <= up_to]


def train(
    config: TrainConfig,
    out: str | Path,
    device: torch.device | str = "cpu",
    on_progress: Callable[[int, int, str], None] | None = None,
    max_seconds: float = 0.0,
) -> Path:
    """Train (or resume) a model into ``out``; returns the model folder.

    Args:
        max_seconds: a wall-clock limit for this call (0: none). When it is reached the model
            is finished at the iteration reached, and its card says so.

    Raises:
        ValueError: no training cases for the chosen hospitals, or a checkpoint from a
            different configuration in ``out``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dist = Distributed.from_environment(torch.device(device))
    torch.manual_seed(config.seed)
    model = build_model(config.preset, num_classes=config.num_classes, residual=config.residual).to(dist.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    checkpoint = out / CHECKPOINT
    start, extra = 0, {}
    if checkpoint.is_file():
        start, saved, extra = load_checkpoint(checkpoint, model, optimizer)
        if saved != config:
            changed = sorted(k for k, v in config.to_dict().items() if saved.to_dict().get(k) != v)
            raise ValueError(f"{checkpoint}: was made with other settings ({', '.join(changed)}); use another --out")
    model.to(dist.device)

    deadline = time.perf_counter() + max_seconds if max_seconds else None
    train_sources = select_cases(config, "train")
    if not train_sources:
        raise ValueError(f"{config.cohort}: no training cases for hospitals {list(config.hospitals)}"
                         + (" with complete sequences" if config.complete_only else ""))  # fmt: skip
    cases = read_cropped(train_sources)
    landmarks = extra.get("landmarks") or fit_landmarks((c.images, c.available) for c in cases)
    volumes = prepare_volumes(cases, landmarks, config.num_classes)
    del cases
    val_sources = select_cases(config, "val")
    val_volumes = load_volumes(val_sources, landmarks, config.num_classes) if dist.rank == 0 else []
    val_windows = validation_windows(val_volumes, config)

    net: nn.Module = model
    if dist.world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.device] if dist.device.type == "cuda" else None
        )
    sparsifier = Sparsifier(config.sparsify)
    log_path = out / LOG
    rows = _read_log(log_path, start) if dist.rank == 0 else []
    dropped_counts = dict.fromkeys(SEQUENCES, 0)
    losses, started = [], time.perf_counter() - float(extra.get("seconds", 0.0))

    def log_row(done: int, validate: bool) -> dict:
        """Append the log row of the iterations since the last one (and validation Dice) and save the log."""
        row = {"iteration": done, "loss": round(float(np.mean(losses)), 6) if losses else "",
               "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - started, 2)}  # fmt: skip
        row |= {f"dropped_{s}": n for s, n in dropped_counts.items()}
        if validate:
            row |= {f"val_dice_{k}": round(v, 4) for k, v in validation_dice(model, val_windows, dist.device).items()}
        rows.append(row)
        _write_log(log_path, rows)
        return row

    net.train()
    done = start
    for iteration in range(start, config.iterations):
        if deadline is not None and _out_of_time(deadline, dist):
            break
        rng = np.random.default_rng([config.seed, dist.rank, iteration])
        x, y, dropped = sample_batch(volumes, rng, config, sparsifier)
        for lr_group in optimizer.param_groups:
            lr_group["lr"] = lr_at(iteration, config.iterations, config.learning_rate)
        with autocast(dist.device, config.amp):
            logits = net(x.to(dist.device).float())
        loss = dice_loss(logits.float(), y.to(dist.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        last_loss = loss.item()
        losses.append(last_loss)
        for drop in dropped:
            for sequence in drop:
                dropped_counts[sequence] += 1
        done = iteration + 1
        if dist.rank == 0 and (
            done % config.checkpoint_every == 0 or done % config.val_every == 0 or done == config.iterations
        ):
            validate = done % config.val_every == 0 or done == config.iterations
            row = log_row(done, validate)
            losses, dropped_counts = [], dict.fromkeys(SEQUENCES, 0)
            save_checkpoint(checkpoint, model, optimizer, done, config,
                            {"landmarks": landmarks, "seconds": row["seconds"]})  # fmt: skip
        if on_progress and dist.rank == 0:
            on_progress(done, config.iterations, f"loss {last_loss:.3f}")

    if done < config.iterations and dist.rank == 0:  # stopped by the time limit: log where it stopped
        log_row(done, validate=True)
    if dist.rank == 0:
        _finish(model, out, config, landmarks, rows, train_sources, val_sources, dist, done)
        checkpoint.unlink(missing_ok=True)
    if dist.world > 1:
        import torch.distributed as td

        td.barrier()
    return out


def _out_of_time(deadline: float, dist: Distributed) -> bool:
    """Whether the time limit has passed (rank 0 decides for every rank, so all stop together)."""
    late = time.perf_counter() >= deadline
    if dist.world == 1:
        return late
    import torch.distributed as td

    flag = torch.tensor([float(late)], device=dist.device)
    td.broadcast(flag, 0)
    return bool(flag.item())


def _finish(model, out: Path, config: TrainConfig, landmarks, rows, train_sources, val_sources, dist,
            done: int) -> None:  # fmt: skip
    last_val = next((r for r in reversed(rows) if r.get("val_dice_tc") not in (None, "")), {})
    hospitals = sorted({str(s.meta.get("hospital", "public")) for s in train_sources})
    # Synthetic cases regenerate from (preset, scale, seed): that, not the folder, says what the data was.
    keys = ("preset", "scale", "seed")
    origins = {tuple(str(s.meta.get(k, "")) for k in keys) for s in [*train_sources, *val_sources]}
    origin = origins.pop() if len(origins) == 1 else ("",)
    synthetic = None
    if "" not in origin:
        synthetic = {"preset": origin[0], "scale": float(origin[1]), "seed": int(float(origin[2]))}
    card = {
        "name": model_name(config.hospitals, config.complete_only, config.sparsify),
        "preset": config.preset,
        "inputs": list(SEQUENCES),
        "classes": [LABEL_NAMES[i] for i in range(config.num_classes)]
        if config.num_classes == 4
        else ["background", "tumour core"],  # fmt: skip
        "training": {
            "cohort": str(config.cohort),
            **({"synthetic": synthetic} if synthetic else {}),
            "hospitals": list(config.hospitals),
            "hospitals_with_cases": hospitals,
            "complete_only": config.complete_only,
            "n_train_cases": len(train_sources),
            "n_val_cases": len(val_sources),
            "train_cases": [s.case_id for s in train_sources],
        },
        "sparsity": Sparsifier(config.sparsify).to_dict(),
        "normalisation": {
            "method": "nyul+whitening",
            "percentiles": [1, 10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 99],
            "landmarks": landmarks,
        },  # fmt: skip
        "iterations": done,
        "iterations_planned": config.iterations,
        "seed": config.seed,
        "config": config.to_dict(),
        "validation": {
            "dice_tc_windows": last_val.get("val_dice_tc"),
            "dice_wt_windows": last_val.get("val_dice_wt"),
            "note": "pooled over fixed 27^3 validation windows, half centred in tumour",
        },  # fmt: skip
        "training_seconds": float(rows[-1]["seconds"]) if rows else 0.0,
        "world_size": dist.world,
        "device": str(dist.device),
        "precision": "bfloat16 autocast" if config.amp and bf16_supported(dist.device) else "float32",
        "versions": {
            "core": core.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },  # fmt: skip
    }
    save_model(model, out, card)
    (out / "MODEL_CARD.md").write_text(model_card_markdown(json.loads((out / "card.json").read_text())))


def model_card_markdown(card: dict) -> str:
    """A human-readable MODEL_CARD.md from a card."""
    training, sparsity = card["training"], card["sparsity"]
    dropped = ", ".join(f"{s} {p:g}" for s, p in sparsity.items() if p) or "none (ordinary training)"
    val = card["validation"]
    return f"""# {card["name"]}

DeepMedic (`{card["preset"]}`, {card["parameters"]:,} parameters) segmenting glioblastoma into
{", ".join(card["classes"])} from {", ".join(card["inputs"])} (missing sequences as zeros).

- Training data: hospitals {", ".join(training["hospitals"])} of {_cohort_words(training)},
  {training["n_train_cases"]} training cases{" with complete sequences only" if training["complete_only"] else ""},
  {training["n_val_cases"]} validation cases.
- Sparsified training (sequence dropout probability): {dropped}.
- {card["iterations"]} iterations{_stopped_early(card)}, seed {card["seed"]},
  {card["training_seconds"]:.0f} s on {card["device"]} (world size {card["world_size"]}).
- Validation Dice (tumour core / whole tumour, {val["note"]}): {val["dice_tc_windows"]} / {val["dice_wt_windows"]}.
- Normalisation: Nyul histogram standardisation + whitening; landmarks in `card.json`.
- Weights: `weights.safetensors`, sha256 `{card["weights_sha256"]}`.
{_results_markdown(card.get("demo_results"))}
Research and teaching use only; not a medical device.
"""


def _cohort_words(training: dict) -> str:
    synthetic = training.get("synthetic")
    if not synthetic:
        return f"`{training['cohort']}`"
    return (f"the synthetic `{synthetic['preset']}` cohort (scale {synthetic['scale']:g}, seed {synthetic['seed']}; "
            "`python -m core synth` regenerates it)")  # fmt: skip


def _results_markdown(results: dict | None) -> str:
    """The card's section on its evaluation results (``python -m core report --cards``)."""
    if not results:
        return ""
    from core.report import STATUS  # the report's wording of a target's status

    region = results["region"].upper()
    store = f" (`{results['store']}`)" if results.get("store") else ""
    lines = ["", f"## Results{store}", "", f"Median {region} Dice as acquired, per hospital:", "",
             "| hospital | median | n |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {h} | {v['median']:.3f} | {v['n']} |" for h, v in results["median_dice_as_acquired"].items()]
    if results["median_dice_simulated"]:
        lines += ["", f"Median {region} Dice with sequences switched off ({results['simulated_patients']} complete "
                  "cases):", "", "| missing | median |", "|---|---|"]  # fmt: skip
        lines += [f"| {m} | {v:.3f} |" for m, v in results["median_dice_simulated"].items()]
    significant = [t for t in results.get("tests", []) if t["significant"]]
    if results.get("tests"):
        lines += ["", f"Paired Wilcoxon against {', '.join(sorted({t['versus'] for t in results['tests']}))}: "
                  f"{len(significant)} of {len(results['tests'])} combinations significant (Bonferroni over "
                  f"{results['family_size']} tests)."]  # fmt: skip
    for target in results.get("targets", []):
        status = STATUS[target["met"]]
        value = "" if target["value"] is None else f": {target['value']:.3f}"
        if "p_adjusted" in target:
            value += f", adjusted p {target['p_adjusted']:.3g}"
        lines += ["", f"Target ({target['target']}){value}, n = {target['n']}: **{status}**."]
    return "\n".join(lines) + "\n"


def _stopped_early(card: dict) -> str:
    planned = card.get("iterations_planned", card["iterations"])
    return f" (of {planned} planned; stopped by the time limit)" if planned != card["iterations"] else ""
