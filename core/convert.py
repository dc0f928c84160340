"""ONNX out and in: export a DeepMedic to an ONNX model folder, start a card for someone else's model.

``python -m core convert --model models/BraTS --to onnx --out DIR`` writes ``DIR/model.onnx`` +
``card.json`` (+ ``MODEL_CARD.md``): DeepMedic's valid convolutions become a sliding window
without overlap whose windows start on the x3 subsampling grid of the brain crop, as the native
tiles do, so the labels equal the native model's (float32; ``--check CASE`` compares them).
``python -m core import-model --onnx FILE --out DIR`` copies a model in and writes a card to
complete: the fields marked ``TODO`` are what only its authors know, and validation names them.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from core.external import ONNX_FILE, CardError, load_external, onnx_session, parse_card
from core.model import CARD, CONTEXT, SUBSAMPLE, ModelError, load_model, read_card, sha256_file

DEEPMEDIC_PATCH = 60  # output window edge: native CPU tiles are at most 60 (core.infer.tile_size)
TODO = "TODO"


def export_onnx(net: torch.nn.Module, path: Path, channels: int, size: int, opset: int = 17) -> Path:
    """Write ``net`` (eval mode) as ONNX with dynamic batch and spatial axes (input ``images``
    (B, C, X, Y, Z), output ``scores``); written to a temporary file first."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    example = torch.zeros(1, channels, size, size, size)
    axes = {0: "batch", 2: "x", 3: "y", 4: "z"}
    with warnings.catch_warnings():  # the TorchScript exporter: dynamic spatial axes without onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # DeepMedic's shape checks, fixed in the trace
        torch.onnx.export(net.eval(), (example,), str(tmp), dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["scores"],
                          dynamic_axes={"images": axes, "scores": axes})  # fmt: skip
    tmp.replace(path)
    return path


def write_external_folder(out: Path, card: dict, markdown: str) -> Path:
    """Finish an ONNX model folder: the card with the graph's sha256, validated, and MODEL_CARD.md."""
    card = dict(card)
    card["weights_sha256"] = sha256_file(out / ONNX_FILE)
    parse_card(card, out / CARD)
    (out / CARD).write_text(json.dumps(card, indent=2) + "\n")
    (out / "MODEL_CARD.md").write_text(markdown)
    return out


def export_deepmedic(model_folder: str | Path, out: str | Path, patch: int = DEEPMEDIC_PATCH) -> Path:
    """Export a DeepMedic model folder to an ONNX model folder that gives the same labels.

    Raises:
        ModelError: the source folder is not a valid DeepMedic folder.
        ValueError: ``patch`` is not a positive multiple of 3.
    """
    if patch <= 0 or patch % SUBSAMPLE:
        raise ValueError(f"patch {patch} is not a positive multiple of {SUBSAMPLE}")
    model = load_model(model_folder, fuse=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = model.config
    export_onnx(model, out / ONNX_FILE, config.in_channels, 9 + CONTEXT)
    native = model.card
    name = f"{native.get('name', Path(model_folder).name)}-onnx"
    card = {
        "name": name,
        "format": "onnx",
        "architecture": {"family": "DeepMedic", "exported_from": str(model_folder), **config.to_dict()},
        "parameters": native.get("parameters"),
        "exported_from": {"name": native.get("name"), "weights_sha256": native["weights_sha256"]},
        "inputs": list(native.get("inputs", ["t1", "t1c", "t2", "flair"])),
        "classes": native.get("classes"),
        "normalisation": {"method": "nyul+whitening", "landmarks": native["normalisation"]["landmarks"]},
        "missing": {"policy": "zeros"},
        "inference": {
            "mode": "sliding-window",
            "patch_size": [patch] * 3,
            "overlap": 0.0,
            "blend": "constant",
            "context": CONTEXT,
            "multiple_of": SUBSAMPLE,
        },  # fmt: skip
        "output": {"kind": "scores", "activation": "softmax", "labels": {str(i): i for i in range(config.num_classes)}},
        **{k: native[k] for k in ("training", "sparsity", "iterations", "seed", "validation") if k in native},
        "versions": {"torch": torch.__version__, "onnx_opset": 17},
    }
    markdown = (f"# {name}\n\nThe DeepMedic model `{native.get('name')}` (weights sha256 "
                f"`{native['weights_sha256']}`) exported to ONNX with `python -m core convert`. Same weights, "
                "same normalisation and missing-sequence handling; run by ONNX Runtime as a sliding window of "
                f"{patch}^3 outputs (+{CONTEXT} voxels of context) on the x3 grid of the brain crop, so its labels "
                "equal the native model's (float32). See the original model's MODEL_CARD.md for its training.\n\n"
                "Research and teaching use only; not a medical device.\n")  # fmt: skip
    return write_external_folder(out, card, markdown)


def compare_labels(native_folder: str | Path, onnx_folder: str | Path, case, missing=()) -> dict:
    """Labels of the native model and its ONNX export on one case (float32), and their timings."""
    from core.infer import predict_volume

    native = load_model(native_folder)
    exported = load_external(onnx_folder)
    a = predict_volume(native, case, missing)
    b = predict_volume(exported, case, missing)
    differing = int((a.labels != b.labels).sum())
    seconds = {"native_seconds": round(a.seconds, 2), "onnx_seconds": round(b.seconds, 2)}
    return {"case": case.case_id, "voxels": int(a.labels.size), "voxels_differing": differing, **seconds,
            "runtime": b.runtime}  # fmt: skip


def import_onnx(onnx_file: str | Path, out: str | Path, name: str | None = None) -> dict:
    """Copy an ONNX model into a new model folder and write a card to complete.

    What the graph says (channel counts, fixed or free spatial axes) is filled in; what only
    the model's authors know is ``TODO``. Returns {folder, card, to_complete: [fields]}.

    Raises:
        ModelError: ONNX Runtime cannot load the file, or ``out`` already holds a model.
    """
    onnx_file, out = Path(onnx_file), Path(out)
    if not onnx_file.is_file():
        raise ModelError(f"{onnx_file}: no such ONNX file")
    if (out / CARD).exists() or (out / ONNX_FILE).exists():
        raise ModelError(f"{out}: already holds a model; choose an empty folder")
    session = onnx_session(onnx_file)
    inputs, outputs = session.get_inputs()[0].shape, session.get_outputs()[0].shape
    if len(inputs) != 5:
        raise ModelError(f"{onnx_file}: takes a {len(inputs)}-D input {inputs}; expected (batch, channels, X, Y, Z)")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_file, out / ONNX_FILE)
    channels, classes = inputs[1], outputs[1]
    spatial = [n if isinstance(n, int) else None for n in inputs[2:]]
    inference = ({"mode": "whole", "multiple_of": 16} if None in spatial else
                 {"mode": "sliding-window", "patch_size": spatial, "overlap": 0.5, "blend": "gaussian"})  # fmt: skip
    kind = "scores" if not isinstance(classes, int) or classes > 1 else "labels"
    card = {
        "name": name or onnx_file.stem,
        "format": "onnx",
        "architecture": {
            "family": TODO,
            "source": onnx_file.name,
            "input_shape": list(map(str, inputs)),
            "output_shape": list(map(str, outputs)),
        },  # fmt: skip
        "inputs": [TODO] * (channels if isinstance(channels, int) else 1),
        "normalisation": {"method": TODO, "choices": "nyul+whitening (with landmarks) | zscore | none"},
        "missing": {"policy": TODO, "choices": "zeros | mean | cannot-run"},
        "inference": inference,
        "output": {
            "kind": kind,
            "activation": "softmax",
            "labels": {str(i): TODO for i in range(classes if isinstance(classes, int) else 4)},
        },  # fmt: skip
        "training": {"hospitals": [], "note": TODO},
        "sparsity": {},
        "weights_sha256": sha256_file(out / ONNX_FILE),
    }
    (out / CARD).write_text(json.dumps(card, indent=2) + "\n")
    todo = [key for key, value in _flatten(card).items() if value == TODO]
    return {"folder": str(out), "card": str(out / CARD), "to_complete": todo, "graph_inputs": list(map(str, inputs)),
            "graph_outputs": list(map(str, outputs))}  # fmt: skip


def validate_folder(folder: str | Path) -> dict:
    """Load an ONNX model folder as the app would; {ok, error} (the error names the field)."""
    try:
        model = load_external(folder)
    except (CardError, ModelError) as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, "inputs": list(model.spec.inputs), "runtime": model.runtime}


def _flatten(data, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items() if isinstance(data, dict) else enumerate(data):
        path = f"{prefix}.{key}" if prefix else str(key)
        flat |= _flatten(value, path) if isinstance(value, (dict, list)) else {path: value}
    return flat


def _convert(args) -> dict:
    from core.io import read_case

    start = time.perf_counter()
    if args.to != "onnx":
        raise ValueError(f"--to {args.to!r}: only onnx is supported")
    read_card(args.model)
    folder = export_deepmedic(args.model, args.out, args.patch)
    summary = {"out": str(folder), "card": json.loads((folder / CARD).read_text())["name"],
               "mb": round((folder / ONNX_FILE).stat().st_size / 1e6, 2)}  # fmt: skip
    if args.check:
        summary["check"] = compare_labels(args.model, folder, read_case(args.check))
    return summary | {"seconds": round(time.perf_counter() - start, 1)}


def _import(args) -> dict:
    summary = import_onnx(args.onnx, args.out, args.name)
    summary["validation"] = validate_folder(args.out)
    return summary


def add_commands(commands, print_json: Callable) -> None:
    """Register ``convert`` and ``import-model`` on the CLI's subparsers."""

    def call(body):
        return lambda args: print_json(body(args)) or 0

    convert = commands.add_parser("convert", help="export a DeepMedic model folder to an ONNX model folder")
    convert.add_argument("--model", type=Path, required=True, help="DeepMedic model folder")
    convert.add_argument("--to", default="onnx", choices=("onnx",))
    convert.add_argument("--out", type=Path, required=True, help="new model folder (model.onnx + card.json)")
    convert.add_argument("--patch", type=int, default=DEEPMEDIC_PATCH, help="output window edge (multiple of 3)")
    convert.add_argument("--check", type=Path, help="case folder: compare the labels with the native model's")
    convert.set_defaults(func=call(_convert))
    imp = commands.add_parser("import-model", help="an ONNX file into a model folder with a card to complete")
    imp.add_argument("--onnx", type=Path, required=True)
    imp.add_argument("--out", type=Path, required=True, help="new model folder")
    imp.add_argument("--name", help="model name (default: the file's stem)")
    imp.set_defaults(func=call(_import))
