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
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from core.card import model_card_markdown, training_card
from core.device import autocast
from core.model import build_model, read_card, save_model
from core.preprocess import fit_landmarks
from core.sampling import load_volumes, prepare_volumes, read_cropped, sample_batch, select_cases, validation_windows
from core.sequences import REGIONS, SEQUENCES, Sparsifier

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
    card = training_card(config, landmarks, rows, train_sources, val_sources, dist.world, dist.device, done)
    save_model(model, out, card)
    (out / "MODEL_CARD.md").write_text(model_card_markdown(read_card(out)))
