"""DeepMedic: two pathways of valid 3x3x3 convolutions, one on the input subsampled x3.

Normal pathway: 8 layers (30, 30, 40, 40, 40, 40, 50, 50 feature maps) on the central
``output + 16`` voxels, receptive field 17. Subsampled pathway: the same layers on every 3rd
voxel (centred) of the ``output + 48`` input, receptive field 51, upsampled by replication.
Concatenated, then 1x1x1 layers (150, 150) and the classifier. Each layer is conv, batch
norm, PReLU. Fully convolutional: any input of ``output + 48`` with ``output`` a multiple of
3 works, which whole-volume inference uses.

Model folders hold ``weights.safetensors`` + ``card.json`` (+ ``MODEL_CARD.md``); loading
checks the weights' sha256 recorded in the card and never unpickles anything. The card's
architecture is verified too: every tensor it implies must be in the weights with its shape,
with none left over, and ``architecture_sha256`` (written by :func:`save_model`; checked when
present) binds the architecture section to the weights, so an edited card (say
``residual: true``, which adds no tensor) is refused.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

SUBSAMPLE = 3
CONTEXT = 48  # input = output + 48: the subsampled pathway's 16 lost voxels, times 3
NORMAL_CONTEXT = 16  # 8 valid 3x3x3 convolutions


class ModelError(ValueError):
    """A model folder is missing, corrupt or does not match its card."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a DeepMedic network (saved in the model card)."""

    feature_maps: tuple[int, ...] = (30, 30, 40, 40, 40, 40, 50, 50)
    fc: tuple[int, ...] = (150, 150)
    in_channels: int = 4
    num_classes: int = 4
    residual: bool = False  # DeepMedic+: residual connections at layers 4, 6 and 8

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        data = dict(data)
        for key in ("feature_maps", "fc"):
            data[key] = tuple(data[key])
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


PRESETS = {
    "deepmedic": ModelConfig(),
    "deepmedic-lite": ModelConfig(feature_maps=(15, 15, 20, 20, 20, 20, 25, 25), fc=(75, 75)),
}
RESIDUAL_LAYERS = (4, 6, 8)  # 1-based, as in DeepMedic


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__(nn.Conv3d(cin, cout, kernel), nn.BatchNorm3d(cout), nn.PReLU(cout))


class Pathway(nn.Module):
    """Eight valid 3x3x3 convolution blocks, optionally with residual connections."""

    def __init__(self, in_channels: int, feature_maps: tuple[int, ...], residual: bool):
        super().__init__()
        channels = (in_channels, *feature_maps)
        self.layers = nn.ModuleList(ConvBlock(a, b, 3) for a, b in zip(channels[:-1], channels[1:]))
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before = None  # the output two layers back, for a residual connection (only that one is kept)
        for number, layer in enumerate(self.layers, start=1):
            y = layer(x)
            if self.residual and number in RESIDUAL_LAYERS:
                y = add_residual(y, before[:, :, 2:-2, 2:-2, 2:-2])  # two layers back, cropped by 2 per side
            before, x = (x if self.residual and number > 1 else None), y
        return x


def add_residual(y: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """``y`` plus a residual connection's ``skip`` (same positions), channels zero-padded or cut
    to ``y``'s."""
    pad = y.shape[1] - skip.shape[1]
    return y + (nn.functional.pad(skip, (0, 0, 0, 0, 0, 0, 0, pad)) if pad > 0 else skip[:, : y.shape[1]])


class DeepMedic(nn.Module):
    """DeepMedic for (B, C, O + 48, O + 48, O + 48) inputs -> (B, classes, O, O, O) logits."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.normal = Pathway(config.in_channels, config.feature_maps, config.residual)
        self.subsampled = Pathway(config.in_channels, config.feature_maps, config.residual)
        channels = (2 * config.feature_maps[-1], *config.fc)
        self.fc = nn.Sequential(*(ConvBlock(a, b, 1) for a, b in zip(channels[:-1], channels[1:])))
        self.classifier = nn.Conv3d(channels[-1], config.num_classes, 1)
        self.card: dict = {}
        self.fused = False  # True for inference copies (see fuse_for_inference)

    @staticmethod
    def output_size(input_size: int) -> int:
        """Output size for an input size; raises ValueError unless input = output + 48, output % 3 == 0."""
        output = input_size - CONTEXT
        if output <= 0 or output % SUBSAMPLE:
            raise ValueError(
                f"input size {input_size} is not output + {CONTEXT} with output a positive multiple of "
                f"{SUBSAMPLE} (e.g. 57 -> 9, 75 -> 27)"
            )
        return output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected input (B, {self.config.in_channels}, X, Y, Z), got {tuple(x.shape)}")
        sizes = [self.output_size(n) for n in x.shape[2:]]
        c = CONTEXT // 2 - NORMAL_CONTEXT // 2  # 16: the normal pathway sees the centre
        normal = self.normal(x[:, :, c : c + sizes[0] + 16, c : c + sizes[1] + 16, c : c + sizes[2] + 16])
        low = self.subsampled(x[:, :, 1::SUBSAMPLE, 1::SUBSAMPLE, 1::SUBSAMPLE])
        for axis in (2, 3, 4):  # upsample by replication: each low-res voxel serves 3 outputs
            low = low.repeat_interleave(SUBSAMPLE, dim=axis)
        return self.classifier(self.fc(torch.cat([normal, low], dim=1)))


def build_model(preset: str | ModelConfig = "deepmedic", in_channels: int = 4, num_classes: int = 4, residual=None):
    """A DeepMedic from a preset name (``deepmedic``, ``deepmedic-lite``) or a config.

    Raises:
        ValueError: unknown preset.
    """
    if isinstance(preset, ModelConfig):
        config = preset
    else:
        if preset not in PRESETS:
            raise ValueError(f"unknown model preset {preset!r}; expected one of {sorted(PRESETS)}")
        config = PRESETS[preset]
        changes = {"in_channels": in_channels, "num_classes": num_classes}
        if residual is not None:
            changes["residual"] = bool(residual)
        config = ModelConfig(**{**config.to_dict(), **changes})
    return DeepMedic(config)


class InferencePReLU(nn.PReLU):
    """PReLU for inference: the same values as ``nn.PReLU`` (bit for bit in float32; in bfloat16 it
    stays in bfloat16), where torch's kernel on a channels-last CPU tensor took as long as the
    convolutions. On a GPU it overwrites its input (a convolution's fresh output)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slope = self.weight.to(x.dtype)
        if x.device.type == "cpu":
            if x.ndim == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
                # Channels-last memory is (N, X, Y, Z, C): torch's kernel reads it as rows of Z x C
                # "channels" against the slopes repeated Z times, which vectorises, where a per-channel
                # broadcast over C (15-50) does not. One pass into a new tensor (the convolution's
                # output is then freed), one OpenMP region per layer: a whole brain 1.3x faster than
                # max(x, a x) in place in two passes over 8 MB blocks, for 0.2-0.3 GB more peak memory.
                n, c, *spatial = x.shape
                try:
                    rows = x.permute(0, 2, 3, 4, 1).view(-1, spatial[2] * c)
                except RuntimeError:  # a size-1 axis can make the layout ambiguous: the general kernel
                    return nn.functional.prelu(x, slope)
                out = nn.functional.prelu(rows, slope.repeat(spatial[2]))
                return out.view(n, *spatial, c).permute(0, 4, 1, 2, 3)
            return nn.functional.prelu(x, slope)
        return prelu_in_place(x, self.weight)


def prelu_in_place(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """PReLU of ``x`` (channels on axis 1) with slopes ``weight``, written over ``x``: with every
    slope <= 1 it is max(x, a x), with every slope >= 1 min(x, a x), one pass and one temporary
    (InferencePReLU's way on a GPU)."""
    slope = weight.to(x.dtype)
    slope = slope.view((1, -1) + (1,) * (x.ndim - 2)) if x.ndim > 2 else slope
    if bool((weight <= 1).all()):
        torch.maximum(x, x * slope, out=x)
    elif bool((weight >= 1).all()):
        torch.minimum(x, x * slope, out=x)
    else:
        negative = torch.clamp(x, max=0).mul_(slope)
        x.clamp_(min=0).add_(negative)
    return x


def fuse_for_inference(model: DeepMedic) -> DeepMedic:
    """A copy for inference: batch norm folded into the convolutions, InferencePReLU,
    channels-last layout.

    Conv then eval-mode BN is one affine map, so folding it changes outputs only by float
    rounding (about 1e-7) and saves a full pass over every activation. The copy cannot be
    trained or saved; the original is left untouched.
    """
    fused = copy.deepcopy(model).eval()
    with torch.no_grad():
        for block in fused.modules():
            if isinstance(block, ConvBlock) and isinstance(block[1], nn.BatchNorm3d):
                conv, bn = block[0], block[1]
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                conv.weight.mul_(scale.view(-1, 1, 1, 1, 1))
                conv.bias.copy_((conv.bias - bn.running_mean) * scale + bn.bias)
                block[1] = nn.Identity()
            if isinstance(block, ConvBlock) and type(block[2]) is nn.PReLU:
                fast = InferencePReLU(block[2].num_parameters)
                fast.weight.copy_(block[2].weight)
                block[2] = fast
    fused.fused = True
    return fused.to(memory_format=torch.channels_last_3d)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- model folders

WEIGHTS = "weights.safetensors"
CARD = "card.json"
ONNX = "model.onnx"  # a model from another framework (core.external)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def architecture_digest(architecture: dict, weights_sha256: str) -> str:
    """sha256 of a card's architecture section (canonical JSON) together with the weights' sha256."""
    canonical = json.dumps(architecture, sort_keys=True, separators=(",", ":"), default=_jsonable)
    return hashlib.sha256(f"{canonical}\n{weights_sha256}".encode()).hexdigest()


def save_model(model: DeepMedic, folder: str | Path, card: dict | None = None) -> Path:
    """Write ``weights.safetensors`` and ``card.json`` (architecture + sha256 + the given card).

    Raises:
        ModelError: the model is a fused inference copy (its weights no longer fit the card).
    """
    if getattr(model, "fused", False):
        raise ModelError("cannot save a fused inference copy; save the model it was made from")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS
    tmp = weights.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(weights)
    full = dict(card or {})
    full["architecture"] = model.config.to_dict()
    full["parameters"] = count_parameters(model)
    full["weights_sha256"] = sha256_file(weights)
    full["architecture_sha256"] = architecture_digest(full["architecture"], full["weights_sha256"])
    (folder / CARD).write_text(json.dumps(full, indent=2, default=_jsonable))
    return folder


def _jsonable(value):
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def model_folders(path: str | Path) -> list[Path]:
    """``path`` itself when it is a model folder, otherwise the model folders directly in it.

    Raises:
        ModelError: neither ``path/card.json`` nor ``path/*/card.json`` exists.
    """
    path = Path(path)
    if (path / CARD).is_file():
        return [path]
    folders = sorted(card.parent for card in path.glob(f"*/{CARD}"))
    if not folders:
        raise ModelError(f"{path}: no model here (neither {CARD} nor */{CARD})")
    return folders


def card_json(folder: str | Path, holds: str = f"{WEIGHTS} (or {ONNX})") -> dict:
    """The parsed card.json of a model folder (any JSON), or :class:`ModelError` naming the file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder}: model folder not found")
    path = folder / CARD
    if not path.is_file():
        raise ModelError(f"{folder}: no {CARD}; a model folder holds {holds} and {CARD}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from exc


def read_card(folder: str | Path) -> dict:
    """The card of a model folder. Raises :class:`ModelError` with what is wrong."""
    folder = Path(folder)
    card, path = card_json(folder), folder / CARD
    if not isinstance(card, dict) or "architecture" not in card or "weights_sha256" not in card:
        raise ModelError(f"{path}: lacks 'architecture' or 'weights_sha256'")
    return card


def load_model(path: str | Path, device: str | torch.device = "cpu", fuse: bool = True) -> DeepMedic:
    """Load a model folder, checking the weights against the card's sha256. Never unpickles.

    Returns:
        The model in eval mode on ``device``; its card is ``model.card``. With ``fuse`` (the
        default) it is an inference copy (:func:`fuse_for_inference`); ``fuse=False`` gives
        the network as trained.

    Raises:
        ModelError: folder, card or weights missing; sha256 mismatch; an architecture section
            that does not match its ``architecture_sha256``; weights that are not safetensors;
            weights that do not fit the architecture (the message lists the first missing,
            extra or wrongly shaped tensors with their shapes).
    """
    folder = Path(path)
    card = read_card(folder)
    weights = folder / WEIGHTS
    if (folder / ONNX).is_file() and not weights.is_file():  # a layer above this one runs ONNX models
        raise ModelError(f"{folder}: an ONNX model folder ({ONNX}); load it with core.external.load_any_model")
    if not weights.is_file():
        raise ModelError(f"{folder}: no {WEIGHTS}")
    digest = sha256_file(weights)
    if digest != card["weights_sha256"]:
        raise ModelError(
            f"{weights}: sha256 {digest[:12]}... does not match the card's {card['weights_sha256'][:12]}...; "
            "the weights were changed or corrupted"
        )
    try:
        state = load_file(str(weights))
    except Exception as exc:  # a pickle or anything else that is not safetensors: never unpickled
        raise ModelError(f"{weights}: not a safetensors file ({exc}); pickled weights are never loaded") from exc
    try:
        config = ModelConfig.from_dict(card["architecture"])
        with torch.device("meta"):  # shapes only: a card cannot make us allocate anything
            expected = DeepMedic(config).state_dict()
    except Exception as exc:
        raise ModelError(f"{folder}: cannot build the model from its card's architecture ({exc})") from exc
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        detail = [f"missing {missing[:3]}" if missing else "", f"unexpected {unexpected[:3]}" if unexpected else "",
                  "wrong shape " + ", ".join(f"{k} {tuple(state[k].shape)} (card: {tuple(expected[k].shape)})"
                                             for k in wrong[:3]) if wrong else ""]  # fmt: skip
        raise ModelError(f"{weights}: does not fit the card's architecture: " + "; ".join(d for d in detail if d))
    recorded = card.get("architecture_sha256")
    if recorded is not None and recorded != architecture_digest(card["architecture"], digest):
        raise ModelError(
            f"{folder / CARD}: the architecture section {card['architecture']} does not match the card's "
            f"architecture_sha256 {str(recorded)[:12]}...; the card was edited after the model was saved"
        )
    model = DeepMedic(config)
    model.load_state_dict(state)
    model.card = card
    model = model.eval()
    if fuse:
        model = fuse_for_inference(model)
    return model.to(device)
