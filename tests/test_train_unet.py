"""bench/train_unet.py: the second architecture's patches (sparsified, randomised) and its card's world."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _trainer():
    spec = importlib.util.spec_from_file_location("train_unet", ROOT / "bench" / "train_unet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _volume(size=40):
    rng = np.random.default_rng(1)
    grid = np.indices((size,) * 3) - size // 2
    brain = (grid**2).sum(0) < (size // 2 - 2) ** 2
    images = np.where(brain, rng.normal(0, 1, (4, size, size, size)), 0).astype(np.float16)
    labels = np.where((grid**2).sum(0) < 36, 3, 0).astype(np.uint8)
    return images, labels, np.argwhere(labels > 0)


def test_patches_keep_dropped_sequences_zero_and_randomise_the_others():
    train_unet = _trainer()
    volumes = [_volume()]
    plain_x, plain_y = train_unet.sample(volumes, np.random.default_rng(5), 32, 1, sparsify=1.0)
    x, y = train_unet.sample(volumes, np.random.default_rng(5), 32, 1, sparsify=1.0, randomise=1.0)
    assert np.array_equal(y, plain_y)  # the same patch (drawn before the randomisation); labels never change
    for channel in (0, 2, 3):  # t1, t2, flair dropped with probability 1: exactly zero
        assert not x[:, channel].any() and not plain_x[:, channel].any()
    t1c = x[:, 1].numpy()
    assert t1c.any() and not np.allclose(t1c, plain_x[:, 1].numpy())  # the one present sequence is randomised
    assert np.array_equal(t1c == 0, plain_x[:, 1].numpy() == 0)  # and stays zero outside the brain


def test_the_card_names_the_synthetic_world_of_the_training_cases():
    from core.card import model_summary, synthetic_origin, training_world

    source = SimpleNamespace(meta={"preset": "realistic", "scale": "1.0", "seed": "0"})
    world = synthetic_origin([source, source])
    assert world == {"preset": "realistic", "scale": 1.0, "seed": 0}
    assert synthetic_origin([source, SimpleNamespace(meta={"preset": "paper", "scale": "1.0", "seed": "0"})]) is None
    assert synthetic_origin([SimpleNamespace(meta={"hospital": "1"})]) is None  # real cases
    assert training_world({"training": {"synthetic": world, "randomise": 1.0}}) == "realistic, domain randomisation 1"
    trained = {"training": {"synthetic": world}, "config": {"randomise": 0.5}}  # a DeepMedic card
    assert training_world(trained) == "realistic, domain randomisation 0.5"
    assert training_world({"training": {"synthetic": world, "randomise": 0.0}}) == "realistic"
    assert training_world({"training": {"hospitals": ["1"]}}) is None  # a model trained on real data
    real = {"training": {"hospitals": ["1"]}, "sparsity": {"flair": 0.2}}
    assert model_summary(real) == "trained on 1; sparsified training on"
    synthetic = {"training": {"hospitals": ["public"], "synthetic": world}, "sparsity": {"flair": 0.0}}
    assert model_summary(synthetic) == "trained on public (synthetic world: realistic); sparsified training off"


def test_a_resumed_run_keeps_its_randomisation(tmp_path):
    import pytest
    import torch

    train_unet = _trainer()
    torch.save({"net": {}, "optimiser": {}, "iteration": 25, "seconds": 1.0, "log": [], "randomise": 1.0},
               tmp_path / "checkpoint.pt")  # fmt: skip
    with pytest.raises(SystemExit, match="checkpoint.pt.*--randomise 1.*--randomise 0"):
        train_unet.check_resume(torch.load(tmp_path / "checkpoint.pt", weights_only=True), tmp_path / "checkpoint.pt",
                                SimpleNamespace(randomise=0.0))  # fmt: skip
    train_unet.check_resume({"randomise": 1.0}, tmp_path / "checkpoint.pt", SimpleNamespace(randomise=1.0))
    train_unet.check_resume({}, tmp_path / "checkpoint.pt", SimpleNamespace(randomise=0.0))  # saved before the option
