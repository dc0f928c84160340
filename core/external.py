"""Models from other frameworks: an ONNX file and a card that says what the model needs.

A model folder holding ``model.onnx`` + ``card.json`` is run by ONNX Runtime (CPU, or its CUDA
provider where present) and returns the same :class:`core.infer.Prediction` as DeepMedic, on
the case's original grid. Its card names the input sequences and their order (any subset of
t1, t1c, t2, flair), the normalisation (``nyul+whitening`` with landmarks as ours,
``zscore`` per channel inside the brain, or ``none``), how a missing sequence is fed
(``zeros`` after normalisation as in the paper, the channel ``mean``, or ``cannot-run``:
then :class:`NotApplicable` is raised and the combination is not applicable, never Dice 0),
the inference (one ``whole`` window, or a ``sliding-window`` with patch size, overlap and
``constant`` / ``gaussian`` blending; ``context`` voxels of input beyond each output window for
networks of valid convolutions such as DeepMedic, windows on a ``multiple_of`` grid) and the
output (class ``scores`` or label values) with its map to canonical labels. Labels are kept
inside the brain (voxels non-zero in an available sequence), as DeepMedic's are.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import product
from pathlib import Path

import numpy as np
import torch

from core.device import describe_device
from core.infer import Prediction, extract
from core.io import Case, prediction_to_original
from core.model import CARD, ONNX, ModelError, card_json, load_model, sha256_file
from core.preprocess import brain_crop, brain_mask, normalise
from core.sequences import LABEL_NAMES, SEQUENCES, missing_set

ONNX_FILE = ONNX
NORMALISATIONS = ("nyul+whitening", "zscore", "none")
MISSING_POLICIES = ("zeros", "mean", "cannot-run")
MODES = ("whole", "sliding-window")
BLENDS = ("constant", "gaussian")
OUTPUT_KINDS = ("scores", "labels")
LANDMARKS = 13  # core.preprocess.PERCENTILES
GAUSSIAN_SIGMA = 0.125  # of the patch edge, as nnU-Net and MONAI weight sliding windows


class CardError(ModelError):
    """A card that does not say what the model needs; the message names the field and the file."""


class NotApplicable(ValueError):
    """The model cannot run on this combination of sequences (its card says ``cannot-run``)."""


# --------------------------------------------------------------------------- the card


@dataclass(frozen=True)
class InferenceSpec:
    """How the network is applied: one window or a sliding window (edges in voxels)."""

    mode: str = "whole"
    patch_size: tuple[int, int, int] | None = None  # output window (sliding-window)
    overlap: float = 0.5  # fraction of the patch shared by neighbours
    blend: str = "gaussian"
    context: int = 0  # input = output + context per axis (valid convolutions)
    multiple_of: int = 1  # window edges and starts on this grid (DeepMedic: 3, a U-Net: 2^depth)

    def to_dict(self) -> dict:
        return asdict(self) | {"patch_size": list(self.patch_size) if self.patch_size else None}


@dataclass(frozen=True)
class ExternalCard:
    """The validated parts of an ONNX model's card (``card.json``); ``raw`` is all of it."""

    name: str
    inputs: tuple[str, ...]
    normalisation: str
    landmarks: dict = field(default_factory=dict)
    missing: str = "zeros"
    means: dict = field(default_factory=dict)  # policy "mean": value per input, after normalisation
    inference: InferenceSpec = InferenceSpec()
    output: str = "scores"
    label_map: dict = field(default_factory=dict)  # output channel (scores) or value (labels) -> canonical
    softmax: bool = True  # scores are logits (probabilities are their softmax)
    raw: dict = field(default_factory=dict, compare=False)

    @property
    def num_classes(self) -> int:
        """2 for a tumour-core model (canonical labels 0 and 1 only), else 4."""
        return 2 if set(self.label_map.values()) <= {0, 1} else 4


def _fail(where, field_name: str, message: str):
    raise CardError(f"{where}: field '{field_name}': {message}")


def _ints(value, where, name: str, count: int | None = None) -> tuple[int, ...]:
    ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    if not ok or (count is not None and len(value) != count):
        _fail(where, name, f"{value!r} is not a list of {count or 'some'} positive integers")
    return tuple(value)


def parse_card(card: dict, where: str | Path = CARD) -> ExternalCard:
    """Validate an ONNX model's card.

    Raises:
        CardError: naming the field and ``where`` (the file), e.g. an unknown normalisation,
            an input that is not a sequence, a label map to a label that does not exist.
    """
    if not isinstance(card, dict):
        raise CardError(f"{where}: not a JSON object")
    inputs = card.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        _fail(where, "inputs", f"{inputs!r} is not a non-empty list of sequences ({', '.join(SEQUENCES)})")
    for name in inputs:
        if name not in SEQUENCES:
            _fail(
                where, "inputs", f"{name!r} is not a sequence; expected some of {', '.join(SEQUENCES)} in input order"
            )
    if len(set(inputs)) != len(inputs):
        _fail(where, "inputs", f"{inputs} names a sequence twice")
    norm = card.get("normalisation") or {}
    method = norm.get("method") if isinstance(norm, dict) else None
    if method not in NORMALISATIONS:
        _fail(where, "normalisation.method", f"{method!r} is unknown; expected one of {', '.join(NORMALISATIONS)}")
    landmarks = norm.get("landmarks") or {}
    if method == "nyul+whitening":
        for name in inputs:
            values = landmarks.get(name) if isinstance(landmarks, dict) else None
            if (
                not isinstance(values, list)
                or len(values) != LANDMARKS
                or not all(isinstance(v, (int, float)) for v in values)
            ):
                _fail(where, f"normalisation.landmarks.{name}", f"expected {LANDMARKS} numbers, got {values!r}")
    missing = card.get("missing") or {}
    policy = missing.get("policy") if isinstance(missing, dict) else None
    if policy not in MISSING_POLICIES:
        _fail(where, "missing.policy", f"{policy!r} is unknown; expected one of {', '.join(MISSING_POLICIES)}")
    means = dict(missing.get("means") or {})
    if policy == "mean":
        for name in inputs:
            if name not in means and method == "none":  # whitened channels have mean 0; raw ones need a value
                _fail(where, f"missing.means.{name}", "policy 'mean' without normalisation needs each input's mean")
            if not isinstance(means.setdefault(name, 0.0), (int, float)):
                _fail(where, f"missing.means.{name}", f"{means[name]!r} is not a number")
    inference = _parse_inference(card.get("inference") or {}, where)
    output = card.get("output") or {}
    kind = output.get("kind") if isinstance(output, dict) else None
    if kind not in OUTPUT_KINDS:
        _fail(where, "output.kind", f"{kind!r} is unknown; expected one of {', '.join(OUTPUT_KINDS)}")
    raw_map = output.get("labels")
    if not isinstance(raw_map, dict) or not raw_map:
        _fail(where, "output.labels", f"{raw_map!r} is not a map of output {'channel' if kind == 'scores' else 'value'}"
              " to canonical label (0 background, 1 necrosis, 2 oedema, 3 enhancing)")  # fmt: skip
    label_map = {}
    for key, value in raw_map.items():
        if not str(key).lstrip("-").isdigit() or value not in LABEL_NAMES or isinstance(value, bool):
            _fail(where, "output.labels", f"{key!r}: {value!r} does not map an integer to a canonical label "
                  f"{sorted(LABEL_NAMES)}")  # fmt: skip
        label_map[int(key)] = int(value)
    if kind == "scores" and sorted(label_map) != list(range(len(label_map))):
        _fail(where, "output.labels", f"channels {sorted(label_map)} are not 0..{len(label_map) - 1}")
    return ExternalCard(str(card.get("name", "")), tuple(inputs), method, dict(landmarks), policy, means, inference,
                        kind, label_map, output.get("activation", "softmax") == "softmax", card)  # fmt: skip


def _parse_inference(spec: dict, where) -> InferenceSpec:
    mode = spec.get("mode", "whole")
    if mode not in MODES:
        _fail(where, "inference.mode", f"{mode!r} is unknown; expected one of {', '.join(MODES)}")
    multiple = _ints([spec.get("multiple_of", 1)], where, "inference.multiple_of", 1)[0]
    context = spec.get("context", 0)
    if not isinstance(context, int) or context < 0 or context % 2:
        _fail(where, "inference.context", f"{context!r} is not an even number of voxels >= 0")
    patch = None
    if mode == "sliding-window":
        patch = _ints(spec.get("patch_size"), where, "inference.patch_size", 3)
        if any(p % multiple for p in patch):
            _fail(where, "inference.patch_size", f"{list(patch)} is not a multiple of multiple_of {multiple}")
    overlap = spec.get("overlap", 0.5)
    if not isinstance(overlap, (int, float)) or not 0 <= overlap < 1:
        _fail(where, "inference.overlap", f"{overlap!r} is not a fraction in [0, 1)")
    blend = spec.get("blend", "gaussian")
    if blend not in BLENDS:
        _fail(where, "inference.blend", f"{blend!r} is unknown; expected one of {', '.join(BLENDS)}")
    return InferenceSpec(mode, patch, float(overlap), blend, context, multiple)


# --------------------------------------------------------------------------- sliding windows


def window_starts(length: int, patch: int, step: int) -> list[int]:
    """Starts (multiples of ``step``) of windows of ``patch`` voxels covering ``length``; the
    last one may reach past the end, where the input is zero."""
    return list(range(0, max(length - patch, 0) + step, step)) if length > patch else [0]


def blend_weights(patch, blend: str) -> np.ndarray:
    """(X, Y, Z) weights of a window's voxels: ones, or a Gaussian (sigma 1/8 of the edge) that
    trusts a window's centre more than its borders."""
    if blend == "constant":
        return np.ones(patch, np.float32)
    axes = []
    for n in patch:
        x = np.arange(n) - (n - 1) / 2
        axes.append(np.exp(-(x**2) / (2 * (GAUSSIAN_SIGMA * n) ** 2)))
    weights = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return np.maximum(weights / weights.max(), 1e-3).astype(np.float32)  # borders still count a little


def sliding_window(
    run: Callable[[np.ndarray], np.ndarray],
    volume: np.ndarray,
    spec: InferenceSpec,
    num_outputs: int,
    kind: str = "scores",
    skip: np.ndarray | None = None,
    only_z: int | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """Network outputs over a (C, X, Y, Z) volume, window by window, blended where windows overlap.

    Args:
        run: maps a (1, C, P + context, ...) float32 input to (1, num_outputs, P, ...) outputs.
        spec: ``whole`` is one window over the volume (edges rounded up to ``multiple_of``).
        kind: ``scores`` are averaged with the blend weights; ``labels`` (one output) take the
            value of the window with the highest weight at each voxel.
        skip: boolean (X, Y, Z); windows whose output has no True voxel are not run.
        only_z: run only the windows whose output covers this slice (its values are unchanged).

    Returns:
        (outputs (num_outputs, X, Y, Z) float32, covered (X, Y, Z) bool, patch size).
    """
    shape = volume.shape[1:]
    grid = spec.multiple_of
    if spec.mode == "whole":
        patch = tuple(int(np.ceil(n / grid) * grid) for n in shape)
        steps = patch
    else:
        patch = spec.patch_size
        steps = tuple(max(grid, int(p * (1 - spec.overlap)) // grid * grid) for p in patch)
    weights = blend_weights(patch, spec.blend if spec.mode == "sliding-window" else "constant")
    out = np.zeros((num_outputs, *shape), np.float32)
    total = np.zeros(shape, np.float32)
    starts = [window_starts(n, p, s) for n, p, s in zip(shape, patch, steps)]
    if only_z is not None:
        starts[2] = [z for z in starts[2] if z <= only_z < z + patch[2]]
    origins = list(product(*starts))
    half = spec.context // 2
    if on_progress:  # before the first window too: a caller may stop the run there
        on_progress(0, len(origins), "windows")
    for done, origin in enumerate(origins, start=1):
        region = tuple(slice(o, min(o + p, n)) for o, p, n in zip(origin, patch, shape))
        if skip is None or skip[region].any():
            window = extract(volume, [o - half for o in origin], [p + spec.context for p in patch])
            result = np.asarray(run(window[None]), np.float32)[0]
            if result.shape != (num_outputs, *patch):
                raise ModelError(
                    f"the model returned {result.shape[1:]} for a window of {tuple(window.shape)} "
                    f"(expected {(num_outputs, *patch)}; check inference.context and patch_size)"
                )
            inside = tuple(slice(0, r.stop - r.start) for r in region)
            w = weights[inside]
            if kind == "scores":
                out[(slice(None), *region)] += result[(slice(None), *inside)] * w
                total[region] += w
            else:  # label values cannot be averaged: the most central window decides
                better = w > total[region]
                out[(slice(None), *region)] = np.where(
                    better, result[(slice(None), *inside)], out[(slice(None), *region)]
                )
                total[region] = np.maximum(total[region], w)
        if on_progress:
            on_progress(done, len(origins), "windows")
    covered = total > 0
    if kind == "scores":
        out[:, covered] /= total[covered]
    return out, covered, patch


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class ExternalConfig:
    """What callers of a DeepMedic's ``config`` ask of a model."""

    in_channels: int
    num_classes: int


@dataclass
class ExternalPrediction(Prediction):
    """A :class:`core.infer.Prediction` that also names the runtime that computed it."""

    runtime: str = ""


class ExternalModel:
    """An ONNX model with its card, run by ONNX Runtime; mirrors what callers use of a DeepMedic
    (``card``, ``config``, ``training``) and is passed to :func:`core.infer.predict_volume` and
    :func:`core.infer.predict_slice` like one."""

    training = False

    def __init__(self, folder: Path, spec: ExternalCard, session, device: str):
        self.folder, self.spec, self.card, self.session = Path(folder), spec, spec.raw, session
        self.config = ExternalConfig(len(spec.inputs), spec.num_classes)
        self.device = device
        import onnxruntime

        self.runtime = f"onnxruntime {onnxruntime.__version__} ({session.get_providers()[0]})"
        self._input = session.get_inputs()[0].name

    def eval(self) -> ExternalModel:
        return self

    def run(self, x: np.ndarray) -> np.ndarray:
        """Raw outputs of the network for a (B, C, ...) float32 input."""
        return self.session.run(None, {self._input: np.ascontiguousarray(x, np.float32)})[0]

    def normalise_case(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        """(4, X, Y, Z) float32 normalised as the card says (channels this model does not take
        and missing ones are 0) and the brain mask; the same for every missing set."""
        mask = brain_mask(case.images, case.available)
        used = np.array([s in self.spec.inputs and a for s, a in zip(SEQUENCES, case.available)])
        if self.spec.normalisation == "nyul+whitening":
            return normalise(case.images, used, self.spec.landmarks, mask), mask
        images = np.where(used[:, None, None, None], case.images, 0).astype(np.float32)
        if self.spec.normalisation == "zscore":
            for index in np.flatnonzero(used):
                values = images[index][mask]
                std = float(values.std()) if values.size else 0.0
                images[index] = np.where(mask, (images[index] - values.mean()) / (std or 1.0), 0)
        return images, mask

    def prepare_input(self, case: Case, missing=(), normalised=None) -> tuple[np.ndarray, np.ndarray, frozenset]:
        """Normalised (4, X, Y, Z) input with the missing sequences fed as the card says, the
        brain mask and the effective missing set (the case's own + ``missing``).

        Raises:
            NotApplicable: an input is missing and the card says ``cannot-run``, or every input is.
            ValueError: an unknown sequence in ``missing``.
        """
        effective = missing_set(missing) | case.missing
        lacking = [s for s in self.spec.inputs if s in effective]
        name = self.spec.name or self.folder.name
        if len(lacking) == len(self.spec.inputs):
            raise NotApplicable(f"{name} takes {', '.join(self.spec.inputs)}: all missing in {case.case_id}")
        if lacking and self.spec.missing == "cannot-run":
            raise NotApplicable(f"{name} cannot run without {', '.join(lacking)} (card: missing.policy cannot-run)")
        images, mask = normalised or self.normalise_case(case)
        images = images.copy() if lacking else images
        for sequence in lacking:
            fill = self.spec.means.get(sequence, 0.0) if self.spec.missing == "mean" else 0.0
            images[SEQUENCES.index(sequence)] = np.where(mask, np.float32(fill), 0) if fill else 0
        return images, mask, effective

    def _outputs(self, images, mask, only_z=None, on_progress=None):
        channels = [SEQUENCES.index(s) for s in self.spec.inputs]
        crop = brain_crop(mask, margin=0)
        inside = crop.apply(mask)
        count = len(self.spec.label_map) if self.spec.output == "scores" else 1
        z = None if only_z is None else only_z - crop.box[2][0]
        outputs, covered, patch = sliding_window(self.run, crop.apply(images[channels]), self.spec.inference, count,
                                                 self.spec.output, inside, z, on_progress)  # fmt: skip
        return outputs, inside & covered, crop, patch

    def _labels(self, outputs: np.ndarray) -> np.ndarray:
        lut = self.spec.label_map
        if self.spec.output == "scores":
            order = np.array([lut[i] for i in range(len(lut))], np.uint8)
            return order[outputs.argmax(0)]
        values = np.rint(outputs[0]).astype(np.int64)
        unknown = sorted(set(np.unique(values).tolist()) - set(lut))
        if unknown:
            raise ModelError(f"{self.folder / ONNX_FILE} output label value(s) {unknown[:5]} that the card's "
                             f"output.labels {sorted(lut)} does not map")  # fmt: skip
        table = np.zeros(max(lut) + 1, np.uint8)
        for value, label in lut.items():
            table[value] = label
        return table[values]

    def predict_volume(self, case: Case, missing=(), tile=None, amp: bool = False, probabilities: bool = False,
                       on_progress=None, normalised=None) -> ExternalPrediction:  # fmt: skip
        """Segment a case with some sequences switched off (arguments as
        :func:`core.infer.predict_volume`; ``tile`` and ``amp`` do not apply, ``normalised`` is
        :meth:`normalise_case`'s result).

        Raises:
            NotApplicable: the card says the model cannot run without a sequence that is missing.
        """
        start = time.perf_counter()
        images, mask, effective = self.prepare_input(case, missing, normalised)
        outputs, inside, crop, patch = self._outputs(images, mask, on_progress=on_progress)
        labels = crop.undo(np.where(inside, self._labels(outputs), 0).astype(np.uint8))
        probs = None
        if probabilities:
            probs = self._probabilities(outputs, inside, crop, case.shape)
        labels, probs = prediction_to_original(labels, probs, case)
        return ExternalPrediction(labels, probs, effective, time.perf_counter() - start, self.device, patch,
                                  self.runtime)  # fmt: skip

    def _probabilities(self, outputs, inside, crop, shape) -> np.ndarray:
        """(4 or 2, X, Y, Z) canonical-class probabilities (one-hot for a label-valued output)."""
        classes = self.config.num_classes
        if self.spec.output == "scores":
            scores = torch.from_numpy(outputs)
            scores = torch.softmax(scores, 0).numpy() if self.spec.softmax else outputs / outputs.sum(0).clip(1e-12)
            soft = np.zeros((classes, *outputs.shape[1:]), np.float32)
            for channel, label in self.spec.label_map.items():
                soft[label] += scores[channel]
        else:
            soft = np.eye(classes, dtype=np.float32)[np.minimum(self._labels(outputs), classes - 1)].transpose(
                3, 0, 1, 2
            )
        soft[:, ~inside] = 0
        soft[0, ~inside] = 1
        probs = np.zeros((classes, *shape), np.float32)
        probs[0] = 1.0
        probs[(slice(None), *crop.slices)] = soft
        return probs

    def predict_slice(self, case: Case, index: int, missing=(), prepared=None, amp: bool = False) -> np.ndarray:
        """Labels (X, Y) of one axial slice, running only the windows that cover it (so it equals
        the whole-volume prediction there). ``prepared``: :meth:`prepare_input`'s result."""
        if not 0 <= index < case.shape[2]:
            raise ValueError(f"slice {index} is outside 0..{case.shape[2] - 1}")
        images, mask, _ = prepared or self.prepare_input(case, missing)
        labels = np.zeros(case.shape[:2], np.uint8)
        crop = brain_crop(mask, margin=0)
        if not crop.box[2][0] <= index < crop.box[2][1] or not mask[:, :, index].any():
            return labels
        outputs, inside, crop, _ = self._outputs(images, mask, only_z=index)
        z = index - crop.box[2][0]
        part = np.where(inside[:, :, z], self._labels(outputs[..., z : z + 1])[..., 0], 0)
        labels[crop.slices[:2]] = part
        return labels


def onnx_session(path: Path, device: str | torch.device = "cpu"):
    """An ONNX Runtime session on CUDA when asked for and present, else on the CPU."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own types for a corrupt or unsupported graph
        raise ModelError(f"{path}: ONNX Runtime cannot load it ({exc})") from exc


def check_against_graph(spec: ExternalCard, session, where) -> None:
    """The card's channel counts against the graph's (where the graph fixes them)."""
    shape = session.get_inputs()[0].shape
    if len(shape) != 5:
        raise CardError(f"{where}: {ONNX_FILE} takes a {len(shape)}-D input; expected (batch, channels, X, Y, Z)")
    if isinstance(shape[1], int) and shape[1] != len(spec.inputs):
        _fail(where, "inputs", f"lists {len(spec.inputs)} sequences ({', '.join(spec.inputs)}) but {ONNX_FILE} "
              f"takes {shape[1]} channels")  # fmt: skip
    channels = session.get_outputs()[0].shape[1]
    expected = len(spec.label_map) if spec.output == "scores" else 1
    if isinstance(channels, int) and channels != expected:
        _fail(where, "output.labels", f"maps {expected} {'channels' if spec.output == 'scores' else 'label output'}"
              f" but {ONNX_FILE} outputs {channels} channels")  # fmt: skip


def load_external(path: str | Path, device: str | torch.device = "cpu") -> ExternalModel:
    """Load an ONNX model folder (``model.onnx`` + ``card.json``), validating the card first.

    Raises:
        CardError: a card field is wrong (the message names it) or does not match the graph.
        ModelError: files missing, sha256 mismatch, a graph ONNX Runtime cannot load.
    """
    folder = Path(path)
    where = folder / CARD
    card = card_json(folder, holds=ONNX_FILE)
    spec = parse_card(card, where)
    onnx_path = folder / ONNX_FILE
    if not onnx_path.is_file():
        raise ModelError(f"{folder}: no {ONNX_FILE}")
    digest = sha256_file(onnx_path)
    if card.get("weights_sha256") != digest:
        _fail(where, "weights_sha256", f"{str(card.get('weights_sha256'))[:12]}... does not match {ONNX_FILE}'s "
              f"sha256 {digest[:12]}...; the model was changed or the card not completed")  # fmt: skip
    session = onnx_session(onnx_path, device)
    check_against_graph(spec, session, where)
    on_gpu = session.get_providers()[0] == "CUDAExecutionProvider"
    name = describe_device(torch.device("cuda" if on_gpu else "cpu"))
    return ExternalModel(folder, spec, session, name)


def is_external(path: str | Path) -> bool:
    """Whether a model folder holds an ONNX model."""
    return (Path(path) / ONNX_FILE).is_file()


def load_any_model(path: str | Path, device: str | torch.device = "cpu"):
    """A DeepMedic (:func:`core.model.load_model`) or an ONNX model folder, by what it holds."""
    return load_external(path, device) if is_external(path) else load_model(path, device=device)


def normalise_for(model, case: Case) -> tuple[np.ndarray, np.ndarray]:
    """The case normalised as ``model`` needs (an ONNX model as its card says, a DeepMedic with
    its landmarks) and the brain mask: the same for every missing set, computed once per case."""
    if isinstance(model, ExternalModel):
        return model.normalise_case(case)
    from core.infer import normalise_case

    return normalise_case(case, model.card["normalisation"]["landmarks"])


def prepare_for(model, case: Case, missing=(), normalised=None) -> tuple[np.ndarray, np.ndarray, frozenset]:
    """Normalised input with the missing sequences fed as ``model`` takes them, the brain mask and
    the effective missing set (``normalised``: :func:`normalise_for`'s result).

    Raises:
        NotApplicable: an ONNX model whose card says it cannot run without a missing sequence.
    """
    if isinstance(model, ExternalModel):
        return model.prepare_input(case, missing, normalised)
    from core.infer import prepare_input

    return prepare_input(case, model.card["normalisation"]["landmarks"], missing, normalised)


def runtime_of(model) -> str:
    """The runtime that runs ``model``: ONNX Runtime with its provider, or the native engine ("torch")."""
    return getattr(model, "runtime", "torch")


def combination_applicable(card: dict, missing) -> bool:
    """Whether a model with this card runs with these sequences missing (``cannot-run`` cards
    do not when one of their inputs is missing; no model runs with all its inputs missing)."""
    inputs = card.get("inputs", SEQUENCES)
    lacking = set(missing) & set(inputs)
    policy = (card.get("missing") or {}).get("policy", "zeros")
    return len(lacking) < len(inputs) and not (lacking and policy == "cannot-run")
