"""What a model is called, who its twins are, and what its card says.

The paper's naming (BraTS, BraTSst, cH1BraTS, H2-6BraTSst, ...) and its pairs of models (with
and without sparsified training, with and without hospital 1's data); the card a training run
writes (``card.json``) and its human-readable MODEL_CARD.md, with the evaluation results that
``python -m core report --cards`` adds.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass

import numpy as np
import torch

import core
from core.device import bf16_supported
from core.postprocess import CLEANED
from core.sequences import (
    DISPLAY,
    LABEL_NAMES,
    REGION_DISPLAY,
    SEQUENCES,
    Sparsifier,
    combination_label,
    order_combinations,
)

# How the report and the cards word a target's status (met is True, False, or None without results).
STATUS = {True: "met", False: "not met", None: "no results"}


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


@dataclass(frozen=True)
class ModelSpec:
    """A paper model by its training data and flags; its name follows the paper's naming."""

    hospitals: tuple[str, ...]
    complete_only: bool = False
    sparsify: float = 0.0

    @property
    def name(self) -> str:
        return model_name(self.hospitals, self.complete_only, self.sparsify)


PAPER_NAME = re.compile(r"c?(H[0-9-]+)?BraTS(st)?")


def other_models(models) -> list[str]:
    """Models not named as the paper names its DeepMedic models (another architecture, a model of
    your own), in order: compared with the paper's models, not paired by name. A paper model's
    results after Clean up (``BraTS+clean``) are the paper's model."""
    return [m for m in sorted(models) if not PAPER_NAME.fullmatch(str(m).removesuffix(CLEANED))]


def sparsified_pairs(models) -> list[tuple[str, str]]:
    """(Xst, X) for every model X that has a sparsified twin."""
    return [(m, m[:-2]) for m in sorted(models) if m.endswith("st") and m[:-2] in set(models)]


def cleanup_pairs(models) -> list[tuple[str, str]]:
    """(X+clean, X) for every model X whose results after Clean up are there too (core.postprocess)."""
    models = set(models)
    return [(m, m.removesuffix(CLEANED)) for m in sorted(models)
            if m.endswith(CLEANED) and m.removesuffix(CLEANED) in models]  # fmt: skip


def site_pairs(models) -> list[tuple[str, str]]:
    """(with hospital 1 data, without) twins: H1BraTS vs BraTS, H1-6BraTSst vs H2-6BraTSst, ..."""
    models, pairs = set(models), []
    for model in sorted(m for m in models if not m.endswith(CLEANED)):  # the paper's models as they predict
        prefix, base = ("c", model[1:]) if model.startswith("c") else ("", model)
        if base.startswith("H1-6"):
            twin = prefix + "H2-6" + base[4:]
        elif base.startswith("H1BraTS") and not prefix:
            twin = base[2:]
        else:
            continue
        if twin in models:
            pairs.append((model, twin))
    return pairs


def paper_pairs(models) -> list[tuple[str, str]]:
    """The paper's family: every pair with and without sparsified training, and with and
    without hospital 1 data (9 pairs x 8 combinations = 72 tests with all 11 models)."""
    return sparsified_pairs(models) + site_pairs(models)


def synthetic_origin(sources) -> dict | None:
    """``{"preset", "scale", "seed"}`` of the synthetic cohort all ``sources`` (``core.cases.CaseSource``)
    come from, or None when they are not synthetic or come from several cohorts. Synthetic cases
    regenerate from these: that, not the folder, says what the data was."""
    origins = {tuple(str(s.meta.get(k, "")) for k in ("preset", "scale", "seed")) for s in sources}
    if len(origins) != 1 or "" in (origin := origins.pop()):
        return None
    return {"preset": origin[0], "scale": float(origin[1]), "seed": int(float(origin[2]))}


def training_card(config, landmarks: dict, rows: list[dict], train_sources, val_sources, world: int, device,
                  done: int) -> dict:  # fmt: skip
    """The card of a finished training run (:class:`core.train.TrainConfig` ``config``, its log
    ``rows``, ``done`` iterations); :func:`core.model.save_model` adds the weights' figures."""
    last_val = next((r for r in reversed(rows) if r.get("val_dice_tc") not in (None, "")), {})
    hospitals = sorted({str(s.meta.get("hospital", "public")) for s in train_sources})
    synthetic = synthetic_origin([*train_sources, *val_sources])
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
        "world_size": world,
        "device": str(device),
        "precision": "bfloat16 autocast" if config.amp and bf16_supported(device) else "float32",
        "versions": {
            "core": core.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },  # fmt: skip
    }
    return card


def model_card_markdown(card: dict) -> str:
    """A human-readable MODEL_CARD.md from a card (a DeepMedic's, or an ONNX model's:
    :func:`external_card_markdown`)."""
    if is_onnx_card(card):
        return external_card_markdown(card)
    training, sparsity = card["training"], card["sparsity"]
    dropped = ", ".join(f"{DISPLAY.get(s, s)} {p:g}" for s, p in sparsity.items() if p) or "none (ordinary training)"
    val = card["validation"]
    return f"""# {card["name"]}

DeepMedic (`{card["preset"]}`, {card["parameters"]:,} parameters) segmenting glioblastoma into
{", ".join(card["classes"])} from {", ".join(DISPLAY.get(s, s) for s in card["inputs"])} (missing sequences as zeros).

- Training data: hospitals {", ".join(training["hospitals"])} of {_cohort_words(training)},
  {training["n_train_cases"]} training cases{" with complete sequences only" if training["complete_only"] else ""},
  {training["n_val_cases"]} validation cases.
- Sparsified training (sequence dropout probability): {dropped}.
- Domain randomisation of training windows (`core.augment`; per-label intensities, contrast curve,
  bias, resolution, noise, misregistration): {_randomisation_words(card)}.
- {card["iterations"]} iterations{_stopped_early(card)}, seed {card["seed"]},
  {card["training_seconds"]:.0f} s on {card["device"]} (world size {card["world_size"]}).
- Validation Dice (tumour core / whole tumour, {val["note"]}): {val["dice_tc_windows"]} / {val["dice_wt_windows"]}.
- Normalisation: Nyul histogram standardisation + whitening; landmarks in `card.json`.
- Weights: `weights.safetensors`, sha256 `{card["weights_sha256"]}`.
{results_markdown(card.get("demo_results"))}
Research and teaching use only; not a medical device.
"""


DISCLAIMER = "Research and teaching use only; not a medical device."
RESULTS_HEADING = "\n## Results"


def is_onnx_card(card: dict) -> bool:
    """Whether a card is an ONNX model folder's (``format`` onnx), not a DeepMedic's."""
    return card.get("format") == "onnx"


def num_classes_of(card: dict) -> int:
    """Output classes of a model from its card: the architecture's (DeepMedic), else 2 for an ONNX
    model whose labels map to background and tumour core only, 4 otherwise."""
    classes = (card.get("architecture") or {}).get("num_classes")
    if isinstance(classes, int):
        return classes
    labels = ((card.get("output") or {}).get("labels") or {}).values()
    return 2 if labels and set(labels) <= {0, 1} else 4


def model_summary(card: dict) -> str:
    """A model in a few words for captions: its training data and sparsity, and its runtime."""
    hospitals = ", ".join((card.get("training") or {}).get("hospitals") or []) or "data not stated"
    sparsity = card.get("sparsity") or {}
    sparsified = "on" if any(sparsity.values()) else "off" if sparsity else "not stated"
    family = (card.get("architecture") or {}).get("family", "ONNX")
    runtime = f"; {family} in ONNX Runtime" if is_onnx_card(card) else ""
    world = training_world(card)
    data = f"{hospitals} (synthetic world: {world})" if world else hospitals
    return f"trained on {data}; sparsified training {sparsified}{runtime}"


def onnx_card_facts(card: dict) -> dict[str, str]:
    """What an ONNX model's card says about how it runs, in words: inputs, normalisation, missing
    sequences, inference, output, runtime (for the Models page and MODEL_CARD.md)."""
    norm = (card.get("normalisation") or {}).get("method", "?")
    policy = (card.get("missing") or {}).get("policy", "?")
    inference = card.get("inference") or {}
    if inference.get("mode") == "sliding-window":
        patch = "x".join(str(n) for n in inference.get("patch_size") or [])
        mode = (f"sliding window {patch}, overlap {inference.get('overlap', 0.5):g}, "
                f"{inference.get('blend', 'gaussian')} blending")  # fmt: skip
        if inference.get("context"):
            mode += f", +{inference['context']} voxels of context"
    else:
        mode = "one window over the brain"
    output = card.get("output") or {}
    labels = output.get("labels") or {}
    return {
        "inputs": ", ".join(card.get("inputs") or []),
        "normalisation": {"nyul+whitening": "Nyul histogram standardisation + whitening (landmarks in card.json)",
                          "zscore": "z-score per sequence inside the brain", "none": "none (raw intensities)"}
        .get(norm, norm),
        "missing sequence": {"zeros": "fed as zeros after normalisation (as the paper)",
                             "mean": "fed as the sequence's mean after normalisation",
                             "cannot-run": "cannot run: such combinations are recorded as not applicable"}
        .get(policy, policy),
        "inference": mode,
        "output": f"{output.get('kind', '?')} for canonical labels {sorted(set(labels.values()))}",
        "runtime": "ONNX Runtime (CPU, or its CUDA provider where present)",
    }  # fmt: skip


def external_card_markdown(card: dict) -> str:
    """MODEL_CARD.md of an ONNX model folder from its card: what it is, how it runs, its training
    as far as the card tells, and its results (``python -m core report --cards``)."""
    architecture = card.get("architecture") or {}
    parameters = card.get("parameters")
    facts = "\n".join(f"- {key.capitalize()}: {value}." for key, value in onnx_card_facts(card).items())
    training = card.get("training") or {}
    hospitals = ", ".join(training.get("hospitals") or []) or "not stated"
    dropped = ", ".join(f"{s} {p:g}" for s, p in (card.get("sparsity") or {}).items() if p) or "none stated"
    cases = training.get("n_train_cases")
    size = f" ({parameters:,} parameters)" if parameters else ""
    return f"""# {card.get("name", "model")}

{architecture.get("family", "A")} model{size} in ONNX, run by ONNX Runtime.

{facts}
- Training data: hospitals {hospitals}{f", {cases} training cases" if cases else ""}; sequence dropout: {dropped}.
- Weights: `model.onnx`, sha256 `{card.get("weights_sha256", "?")}`.
{results_markdown(card.get("demo_results"))}
{DISCLAIMER}
"""


def replace_results(markdown: str, results: dict | None) -> str:
    """A MODEL_CARD.md with its Results section replaced by ``results`` (kept otherwise: an ONNX
    model's card text is its authors', only the results are ours to write)."""
    body = markdown.split(RESULTS_HEADING)[0].replace(DISCLAIMER, "").rstrip() + "\n"
    return f"{body}{results_markdown(results)}\n{DISCLAIMER}\n"


def training_world(card: dict) -> str | None:
    """The synthetic world a model learnt from, in a few words: the cohort preset and the domain
    randomisation of its training windows (``core.augment``), e.g. ``realistic, domain randomisation 1``;
    None for a card that names no synthetic cohort and no randomisation (real or unstated data)."""
    synthetic = (card.get("training") or {}).get("synthetic")
    strength = _randomisation(card)
    if not synthetic and not strength:
        return None
    preset = synthetic["preset"] if synthetic else "cohort not stated"
    return f"{preset}, domain randomisation {strength:g}" if strength else preset


def _randomisation(card: dict) -> float:
    """Domain randomisation strength: in a trained DeepMedic's config, or an ONNX card's training."""
    config, training = card.get("config") or {}, card.get("training") or {}
    return float(config.get("randomise") or training.get("randomise") or 0.0)


def _cohort_words(training: dict) -> str:
    synthetic = training.get("synthetic")
    if not synthetic:
        return f"`{training['cohort']}`"
    return (f"the synthetic `{synthetic['preset']}` cohort (scale {synthetic['scale']:g}, seed {synthetic['seed']}; "
            "`python -m core synth` regenerates it)")  # fmt: skip


def results_markdown(results: dict | None) -> str:
    """The card's section on its evaluation results (``python -m core report --cards``)."""
    if not results:
        return ""
    region = f"{REGION_DISPLAY.get(results['region'], results['region'])} ({results['region'].upper()})"
    store = f" (`{results['store']}`)" if results.get("store") else ""
    lines = ["", f"## Results{store}", "", f"Median {region} Dice as acquired, per hospital:", "",
             "| hospital | median | n |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {h} | {v['median']:.3f} | {v['n']} |" for h, v in results["median_dice_as_acquired"].items()]
    if simulated := results["median_dice_simulated"]:
        lines += ["", f"Median {region} Dice with sequences switched off ({results['simulated_patients']} complete "
                  "cases):", "", "| sequences | median |", "|---|---|"]  # fmt: skip
        lines += [f"| {combination_label(m)} | {simulated[m]:.3f} |" for m in order_combinations(simulated)]
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


def _randomisation_words(card: dict) -> str:
    strength = _randomisation(card)
    return f"strength {strength:g}" if strength else "off"


def _stopped_early(card: dict) -> str:
    planned = card.get("iterations_planned", card["iterations"])
    return f" (of {planned} planned; stopped by the time limit)" if planned != card["iterations"] else ""
