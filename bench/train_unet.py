"""A second architecture: a small MONAI 3-D U-Net trained on the synthetic cohort, bundled as ONNX.

Proof that a model from another framework runs through every robustness view: MONAI's ``UNet``
(channels 8-16-32-64, residual units, instance norm) on 64^3 patches (half centred in tumour),
our normalisation (Nyul + whitening, landmarks fitted on its training cases), sparsified
training (t1, t2, flair each zeroed with probability 0.2), optionally domain-randomised patches
(``--randomise``, as ``python -m core train --randomise``), Dice + cross-entropy, Adam. A
checkpoint every 25 iterations in ``--work`` lets a killed run resume; training stops after
``--minutes`` of training time in all. Then it is exported to ``--out`` (model.onnx + card.json +
MODEL_CARD.md) and scored with the exported model on ``--test`` cases (ONNX Runtime, as the app).

    python -m core synth --preset realistic --scale 1 --seed 0 --out runs/unet/cohort --patients ...
    python bench/train_unet.py --cohort runs/unet/cohort --out models/UNet3D --minutes 20 --randomise 1
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import core  # noqa: E402
from core.augment import Randomisation, randomise_window  # noqa: E402
from core.card import synthetic_origin, training_world  # noqa: E402
from core.cases import find_cases  # noqa: E402
from core.convert import export_onnx, write_external_folder  # noqa: E402
from core.external import load_external  # noqa: E402
from core.infer import predict_volume  # noqa: E402
from core.io import read_case  # noqa: E402
from core.metrics import evaluate  # noqa: E402
from core.preprocess import brain_crop, fit_landmarks, normalise  # noqa: E402
from core.sequences import SEQUENCES  # noqa: E402

CHANNELS, STRIDES = (8, 16, 32, 64), (2, 2, 2)
DROPPABLE = [SEQUENCES.index(s) for s in ("t1", "t2", "flair")]


def build_unet():
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=4, out_channels=4, channels=CHANNELS, strides=STRIDES, num_res_units=1,
                norm="instance")  # fmt: skip


def load_volumes(sources, landmarks):
    volumes = []
    for source in sources:
        case = read_case(source)
        crop = brain_crop(np.any(case.images != 0, 0), margin=8)
        images = crop.apply(normalise(case.images, case.available, landmarks))
        volumes.append((images.astype(np.float16), crop.apply(case.labels), np.argwhere(crop.apply(case.labels) > 0)))
    return volumes


def sample(volumes, rng, patch: int, batch: int, sparsify: float, randomise: float = 0.0):
    xs, ys = [], []
    for i in range(batch):
        images, labels, tumour = volumes[rng.integers(len(volumes))]
        shape = np.array(labels.shape)
        centre = tumour[rng.integers(len(tumour))] if i % 2 == 0 and len(tumour) else rng.integers(0, shape)
        start = np.clip(centre - patch // 2, 0, np.maximum(shape - patch, 0))
        region = tuple(slice(s, s + patch) for s in start)
        x = np.zeros((4, patch, patch, patch), np.float32)
        y = np.zeros((patch, patch, patch), np.int64)
        part = images[(slice(None), *region)]
        x[(slice(None), *[slice(0, n) for n in part.shape[1:]])] = part
        y[tuple(slice(0, n) for n in part.shape[1:])] = labels[region]
        dropped = {channel for channel in DROPPABLE if rng.random() < sparsify}
        for channel in dropped:
            x[channel] = 0
        if randomise > 0:
            present = [c for c in range(4) if c not in dropped and x[c].any()]
            randomise_window(x, y.astype(np.uint8), present, rng, Randomisation(strength=randomise))
        xs.append(x)
        ys.append(y)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))[:, None]


def check_resume(saved: dict, checkpoint: Path, args) -> None:
    """Refuse to resume a run with another randomisation than it was trained with (the card would
    report only the last one)."""
    before = float(saved.get("randomise", 0.0))
    if before != args.randomise:
        raise SystemExit(f"{checkpoint}: this run was trained with --randomise {before:g}, not --randomise "
                         f"{args.randomise:g}; resume with the same value or use another --work folder")  # fmt: skip


def train(args) -> dict:
    from monai.losses import DiceCELoss

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sources = find_cases(args.cohort)
    train_sources = [s for s in sources if s.meta.get("split") == "train"]
    torch.manual_seed(args.seed)
    checkpoint = work / "checkpoint.pt"
    landmarks_file = work / "landmarks.json"
    if not landmarks_file.is_file():
        cases = (read_case(s) for s in train_sources)
        landmarks_file.write_text(json.dumps(fit_landmarks((c.images, c.available) for c in cases)))
    landmarks = json.loads(landmarks_file.read_text())
    net = build_unet()
    optimiser = torch.optim.Adam(net.parameters(), lr=args.lr)
    state = {"iteration": 0, "seconds": 0.0, "log": []}
    if checkpoint.is_file():  # resume
        saved = torch.load(checkpoint, weights_only=True)
        check_resume(saved, checkpoint, args)
        net.load_state_dict(saved["net"])
        optimiser.load_state_dict(saved["optimiser"])
        state = {k: saved[k] for k in ("iteration", "seconds", "log")}
        print(f"resumed at iteration {state['iteration']} ({state['seconds']:.0f} s)", flush=True)
    volumes = load_volumes(train_sources, landmarks)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    rng = np.random.default_rng(args.seed + state["iteration"])
    net.train()

    def save() -> None:
        torch.save({"net": net.state_dict(), "optimiser": optimiser.state_dict(), **state,
                    "randomise": args.randomise}, checkpoint)  # fmt: skip

    while state["seconds"] < 60 * args.minutes:
        start = time.perf_counter()
        x, y = sample(volumes, rng, args.patch, args.batch_size, args.sparsify, args.randomise)
        loss = loss_fn(net(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        state["iteration"] += 1
        state["seconds"] += time.perf_counter() - start
        state["log"].append(round(loss.item(), 4))
        if state["iteration"] % 25 == 0:
            print(f"iteration {state['iteration']} loss {np.mean(state['log'][-25:]):.4f} "
                  f"{state['seconds']:.0f} s", flush=True)  # fmt: skip
            save()
    save()
    return {"net": net.eval(), "landmarks": landmarks, "train": train_sources, **state}


def score(folder: Path, cases: list[Path]) -> dict:
    model = load_external(folder)
    rows = {}
    for path in cases:
        case = read_case(path)
        for missing in ((), ("flair",)):
            prediction = predict_volume(model, case, missing)
            metrics = evaluate(prediction.labels, case.labels, case.spacing, ("tc", "wt"))
            key = case.case_id + (" missing flair" if missing else "")
            rows[key] = {r: round(m.dice, 4) for r, m in metrics.items()} | {"seconds": round(prediction.seconds, 1)}
            print(key, rows[key], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", default="runs/unet/cohort")
    parser.add_argument("--out", default="models/UNet3D")
    parser.add_argument("--work", default="runs/unet/train", help="checkpoint and landmarks (resumable)")
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--sparsify", type=float, default=0.2)
    parser.add_argument("--randomise", type=float, default=0.0, help="domain randomisation strength (0: off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test", nargs="*", default=[], help="case folders to score the exported model on")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    result = train(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    export_onnx(result["net"], out / "model.onnx", 4, args.patch)
    parameters = sum(p.numel() for p in result["net"].parameters())
    log = result["log"]
    card = {
        "name": out.name,
        "format": "onnx",
        "architecture": {
            "family": "MONAI UNet",
            "channels": list(CHANNELS),
            "strides": list(STRIDES),
            "num_res_units": 1,
            "norm": "instance",
            "in_channels": 4,
            "num_classes": 4,
        },  # fmt: skip
        "parameters": parameters,
        "inputs": list(SEQUENCES),
        "classes": ["background", "necrosis", "oedema", "enhancing"],
        "normalisation": {"method": "nyul+whitening", "landmarks": result["landmarks"]},
        "missing": {"policy": "zeros"},
        "inference": {
            "mode": "sliding-window",
            "patch_size": [args.patch] * 3,
            "overlap": 0.5,
            "blend": "gaussian",
            "multiple_of": 8,
        },  # fmt: skip
        "output": {"kind": "scores", "activation": "softmax", "labels": {"0": 0, "1": 1, "2": 2, "3": 3}},
        "training": {
            "cohort": str(args.cohort),
            **({"synthetic": world} if (world := synthetic_origin(result["train"])) else {}),
            "randomise": args.randomise,
            "hospitals": ["public"],
            "hospitals_with_cases": ["public"],
            "complete_only": False,
            "n_train_cases": len(result["train"]),
            "train_cases": [s.case_id for s in result["train"]],
            "command": "python " + shlex.join(sys.argv),
            "patch": args.patch,
            "batch_size": args.batch_size,
            "learning_rate": args.lr,
            "loss": "Dice + cross-entropy (MONAI)",
            "final_loss_mean_last_50": round(float(np.mean(log[-50:])), 4) if log else None,
        },  # fmt: skip
        "sparsity": {"t1": args.sparsify, "t1c": 0.0, "t2": args.sparsify, "flair": args.sparsify},
        "iterations": result["iteration"],
        "seed": args.seed,
        "training_seconds": round(result["seconds"], 1),
        "device": "cpu",
        "versions": {"core": core.__version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    write_external_folder(out, card, "(written below)\n")
    if args.test:
        card["test_dice"] = score(out, [Path(t) for t in args.test])
    write_external_folder(out, card, model_card(card))
    print(json.dumps({"out": str(out), "iterations": result["iteration"], "seconds": result["seconds"],
                      "mb": round((out / "model.onnx").stat().st_size / 1e6, 2)}))  # fmt: skip


def model_card(card: dict) -> str:
    training = card["training"]
    rows = "\n".join(f"| {case} | {v['tc']:.3f} | {v['wt']:.3f} |" for case, v in card.get("test_dice", {}).items())
    return f"""# {card["name"]}

A small 3-D U-Net (MONAI `UNet`, channels {card["architecture"]["channels"]}, {card["parameters"]:,} parameters),
exported to ONNX and run by ONNX Runtime: the proof that a model from another framework goes through
the same missing-sequence, hospital and statistics views as DeepMedic.

- Honest about its training: **short** ({card["iterations"]} iterations, {card["training_seconds"] / 60:.0f} min on a
  shared 2-core CPU), on **synthetic** data only: {training["n_train_cases"]} public training cases of the synthetic
  world `{training_world(card) or "not stated"}` (preset, domain randomisation strength), 64^3 patches half
  centred in tumour, batch {training["batch_size"]},
  Adam lr {training["learning_rate"]}, Dice + cross-entropy; mean loss over the last 50 iterations
  {training["final_loss_mean_last_50"]}.
- Sparsified training: t1, t2 and flair each zeroed with probability {card["sparsity"]["flair"]:g} (t1c never).
- Inputs t1, t1c, t2, flair; Nyul + whitening normalisation with landmarks fitted on its training
  cases; a missing sequence is fed as zeros after normalisation; sliding window 64^3, overlap 0.5,
  Gaussian blending.
- Command: `{training["command"]}`.

Dice (tumour core / whole tumour) of the exported model on synthetic cases it did not see:

| case | TC | WT |
|---|---|---|
{rows}

Research and teaching use only; not a medical device.
"""


if __name__ == "__main__":
    main()
