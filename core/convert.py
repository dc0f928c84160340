"""ONNX out and in: export a DeepMedic to an ONNX model folder, start a card for someone else's model.

``python -m core convert --model models/BraTS --to onnx --out DIR`` writes ``DIR/model.onnx`` +
``card.json`` (+ ``MODEL_CARD.md``): DeepMedic's valid convolutions become a sliding window
without overlap whose windows start on the x3 subsampling grid of the brain crop, as the native
tiles do, so the labels equal the native model's (float32; ``--check CASE`` compares them).
``python -m core import-model --onnx FILE --out DIR`` copies a model in and writes a card to
complete: the fields marked ``TODO`` are what only its authors know, and validation names them.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

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


MODEL_FILES = (ONNX_FILE, CARD, "MODEL_CARD.md")  # what an uploaded model folder may hold
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def unpack_model_upload(files: dict[str, bytes], max_bytes: int) -> dict[str, bytes]:
    """The files of an uploaded model folder: ``model.onnx`` + ``card.json`` (+ MODEL_CARD.md) as
    they are, or inside one .zip (at its top or in one folder; other members are ignored).

    Raises:
        ValueError: naming the file: a zip that is not one, past ``max_bytes`` unpacked, a file
            given twice, or model.onnx / card.json missing.
    """
    found: dict[str, bytes] = {}

    def add(name: str, data: bytes, where: str) -> None:
        base = PurePosixPath(name.replace("\\", "/")).name
        if base not in MODEL_FILES:
            return
        if base in found:
            raise ValueError(f"{where}: {base} is given twice; a model folder holds one {ONNX_FILE} and one {CARD}")
        found[base] = data

    for name, data in files.items():
        members = _zip_members(name, data, max_bytes) if name.lower().endswith(".zip") else {name: data}
        for member, content in members.items():
            add(member, content, name)
    for needed in (ONNX_FILE, CARD):
        if needed not in found:
            raise ValueError(f"no {needed} in the upload ({', '.join(files) or 'nothing'}); a model folder holds "
                             f"{ONNX_FILE} and {CARD} (import-model writes a card to complete)")  # fmt: skip
    return found


def _zip_members(name: str, data: bytes, max_bytes: int) -> dict[str, bytes]:
    """{member: bytes} of the files in a zip, refused past ``max_bytes`` unpacked (before reading)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [m for m in archive.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX")]
            size = sum(m.file_size for m in members)
            if size > max_bytes:
                raise ValueError(f"{name}: {size / 2**20:.0f} MB unpacked, more than {max_bytes / 2**20:.0f} MB")
            return {m.filename: archive.read(m) for m in members}
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{name}: not a zip file ({exc})") from exc


def install_model(files: dict[str, bytes], dest: str | Path, name: str, max_bytes: int) -> dict:
    """Check an uploaded ONNX model folder as the app loads it (:func:`validate_folder`) in a
    staging folder under ``dest`` and, when it loads, move it to ``dest/name`` (replacing an
    older upload of that name). Nothing is kept when it is rejected.

    Returns:
        {ok, folder, inputs, runtime} or {ok: False, error} with the error naming the file and
        the card's field, e.g. "card.json: field 'missing.policy': 'skip' is unknown; ...".
    """
    if not NAME.fullmatch(name):
        return {"ok": False, "error": f"model name {name!r}: use letters, digits, '.', '_' and '-' only"}
    try:
        found = unpack_model_upload(files, max_bytes)
    except ValueError as exc:
        return {"ok": False, "error": str(exc)}
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=dest))
    try:
        for base, data in found.items():
            (staging / base).write_bytes(data)
        report = validate_folder(staging)
        if not report["ok"]:
            return {"ok": False, "error": report["error"].replace(f"{staging}/", "").replace(str(staging), name)}
        folder = dest / name
        shutil.rmtree(folder, ignore_errors=True)
        staging.replace(folder)
        return report | {"folder": str(folder)}
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
