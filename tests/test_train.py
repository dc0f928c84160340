"""Training: loss, schedule, names, learning, resume after a crash or SIGKILL, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core.card import model_name
from core.model import load_model
from core.train import TrainConfig, dice_loss, lr_at, train

ROOT = Path(__file__).resolve().parents[1]


def test_dice_loss_matches_hand_computation():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, 4)
    labels = torch.randint(0, 3, (2, 4, 4, 4))
    p = torch.softmax(logits, 1).numpy()
    g = np.stack([(labels.numpy() == c) for c in range(3)], 1).astype(float)
    per_class = [
        (2 * (g[:, c] * p[:, c]).sum() + 1e-5) / ((p[:, c] ** 2).sum() + g[:, c].sum() + 1e-5) for c in range(3)
    ]
    assert float(dice_loss(logits, labels)) == pytest.approx(1 - np.mean(per_class), rel=1e-6)
    perfect = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float() * 50
    assert float(dice_loss(perfect, labels)) == pytest.approx(0, abs=1e-6)


def test_loss_gradients_are_finite_for_all_background_windows():
    logits = torch.randn(2, 4, 5, 5, 5, requires_grad=True)
    loss = dice_loss(logits, torch.zeros(2, 5, 5, 5, dtype=torch.long))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_learning_rate_schedule_is_the_papers():
    # 1e-3 halved at 5000, 10000, 15000, then every 1500: 16500, ..., 28500 (12 halvings).
    assert lr_at(4999, 30000, 1e-3) == 1e-3
    assert lr_at(5000, 30000, 1e-3) == 5e-4
    assert lr_at(15000, 30000, 1e-3) == 1.25e-4
    assert lr_at(16499, 30000, 1e-3) == 1.25e-4 and lr_at(16500, 30000, 1e-3) == 6.25e-5
    assert lr_at(29999, 30000, 1e-3) == pytest.approx(1e-3 / 2**12)
    assert lr_at(500, 3000, 1e-3) == 5e-4  # scaled to 3000 iterations: halved at 500


def test_model_names_follow_the_paper():
    public, h1, h26, h16 = ["public"], ["public", "1"], ["public", *"23456"], ["public", *"123456"]
    assert model_name(public, False, 0) == "BraTS" and model_name(public, False, 0.2) == "BraTSst"
    assert model_name(h1, True, 0) == "cH1BraTS" and model_name(h1, False, 0.2) == "H1BraTSst"
    assert model_name(h26, True, 0) == "cH2-6BraTS" and model_name(h26, False, 0.2) == "H2-6BraTSst"
    assert model_name(h16, False, 0) == "H1-6BraTS" and model_name(h16, True, 0) == "cH1-6BraTS"
    assert model_name(["1", "3", "4"], False, 0) == "H1_3-4"


def config(cohort, **changes):
    base = dict(cohort=str(cohort), preset="deepmedic-lite", iterations=12, batch_size=4, output_size=9,
                val_every=6, checkpoint_every=4, val_windows=4, learning_rate=3e-3)  # fmt: skip
    return TrainConfig(**{**base, **changes})


@pytest.mark.slow
def test_short_run_raises_dice_and_writes_a_loadable_folder(phantom_cohort, tmp_path):
    torch.set_num_threads(2)
    folder = train(
        config(phantom_cohort, iterations=60, val_every=10, checkpoint_every=10, sparsify=0.2), tmp_path / "m"
    )
    log = (folder / "training_log.csv").read_text().splitlines()
    rows = [dict(zip(log[0].split(","), line.split(","))) for line in log[1:]]
    first, last = float(rows[0]["val_dice_tc"]), float(rows[-1]["val_dice_tc"])
    assert last > first + 0.2 and last > 0.6, (first, last)
    assert sum(int(r["dropped_flair"]) for r in rows) > 0 and sum(int(r["dropped_t1c"]) for r in rows) == 0
    model = load_model(folder)
    assert model.card["name"] == "BraTSst" and model.card["sparsity"]["flair"] == 0.2
    assert model.card["training"]["n_train_cases"] == 2 and set(model.card["normalisation"]["landmarks"]) == {
        "t1", "t1c", "t2", "flair"}  # fmt: skip
    assert (folder / "MODEL_CARD.md").read_text().startswith("# BraTSst")
    assert "synthetic" not in model.card["training"]  # phantom files on disk, not a generator cohort
    assert not (folder / "checkpoint.safetensors").exists()


def test_bfloat16_autocast_training_keeps_float32_weights_and_says_so(phantom_cohort, tmp_path):
    from core.device import bf16_supported

    folder = train(config(phantom_cohort, iterations=8, val_every=8, amp=True), tmp_path / "m")
    card = json.loads((folder / "card.json").read_text())
    assert card["config"]["amp"] is True
    assert card["precision"] == ("bfloat16 autocast" if bf16_supported("cpu") else "float32")
    model = load_model(folder, fuse=False)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
    log = (folder / "training_log.csv").read_text().splitlines()
    assert all(np.isfinite(float(line.split(",")[1])) for line in log[1:])


def test_a_time_limit_finishes_the_model_where_it_stopped(phantom_cohort, tmp_path, monkeypatch):
    import core.train

    clock = iter(range(10_000))  # a fake clock: one second passes at every reading
    monkeypatch.setattr(core.train.time, "perf_counter", lambda: float(next(clock)))
    folder = train(config(phantom_cohort, iterations=50, val_every=10, checkpoint_every=10), tmp_path / "m",
                   max_seconds=12)  # fmt: skip
    card = load_model(folder).card
    assert 0 < card["iterations"] < 50 and card["iterations_planned"] == 50
    log = (folder / "training_log.csv").read_text().splitlines()
    assert log[-1].split(",")[0] == str(card["iterations"]) and log[-1].split(",")[-2]  # validated where it stopped
    assert "of 50 planned; stopped by the time limit" in (folder / "MODEL_CARD.md").read_text()
    assert not (folder / "checkpoint.safetensors").exists()


class Crash(Exception):
    pass


@pytest.mark.slow
def test_resume_after_a_crash_equals_an_uninterrupted_run(phantom_cohort, tmp_path):
    torch.set_num_threads(1)
    cfg = config(phantom_cohort, sparsify=0.2)
    train(cfg, tmp_path / "straight")

    def crash_at_10(done, total, message):
        if done == 10:
            raise Crash

    with pytest.raises(Crash):
        train(cfg, tmp_path / "resumed", on_progress=crash_at_10)
    assert (tmp_path / "resumed" / "checkpoint.safetensors").exists()  # last saved at 8
    train(cfg, tmp_path / "resumed")
    a = (tmp_path / "straight" / "weights.safetensors").read_bytes()
    b = (tmp_path / "resumed" / "weights.safetensors").read_bytes()
    assert a == b
    log = (tmp_path / "resumed" / "training_log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in log[1:]] == ["4", "6", "8", "12"]
    # A checkpoint made with other settings is not silently continued.
    with pytest.raises(Crash):
        train(cfg, tmp_path / "other", on_progress=crash_at_10)
    with pytest.raises(ValueError, match=r"other settings \(iterations\)"):
        train(config(phantom_cohort, sparsify=0.2, iterations=13), tmp_path / "other")


@pytest.mark.slow
def test_cli_run_killed_with_sigkill_resumes(phantom_cohort, tmp_path):
    args = [sys.executable, "-m", "core", "train", "--cohort", str(phantom_cohort), "--iterations", "40",
            "--batch-size", "4", "--checkpoint-every", "2", "--val-every", "20",
            "--out", str(tmp_path / "m")]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    checkpoint = tmp_path / "m" / "checkpoint.safetensors"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists() and not (tmp_path / "m" / "card.json").exists()
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["iterations"] == 40
    assert load_model(tmp_path / "m").card["iterations"] == 40


@pytest.mark.slow
def test_ddp_with_two_gloo_processes(phantom_cohort, tmp_path):
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "core",
            "train", "--cohort", str(phantom_cohort), "--iterations", "6", "--batch-size", "2",
            "--checkpoint-every", "3", "--val-every", "3", "--device", "cpu",
            "--out", str(tmp_path / "ddp")]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    model = load_model(tmp_path / "ddp")
    assert model.card["world_size"] == 2 and model.card["iterations"] == 6


def test_a_batch_holds_the_sampled_windows_with_dropped_sequences_zeroed(phantom_cohort):
    from core.cases import find_cases
    from core.io import read_case
    from core.preprocess import fit_landmarks
    from core.sampling import extract_window, load_volumes, sample_batch, sample_centre
    from core.sequences import SEQUENCES, Sparsifier
    from core.train import TrainConfig

    sources = find_cases(phantom_cohort)
    case = read_case(sources[0])
    volumes = load_volumes(sources, fit_landmarks([(case.images, case.available)]))
    x, y, dropped = sample_batch(volumes, np.random.default_rng(5), TrainConfig(cohort="", batch_size=4),
                                 Sparsifier(0.5))  # fmt: skip
    assert x.dtype == torch.float16 and tuple(x.shape) == (4, 4, 57, 57, 57) and tuple(y.shape) == (4, 9, 9, 9)
    rng = np.random.default_rng(5)  # the same draws, window by window, into fresh float32 arrays
    for i in range(4):
        volume = volumes[rng.integers(len(volumes))]
        images, labels = extract_window(volume, sample_centre(volume, rng, in_tumour=i < 2), 9)
        drop = Sparsifier(0.5).draw(rng, volume.available)
        images[[SEQUENCES.index(s) for s in drop]] = 0
        np.testing.assert_array_equal(x[i].float().numpy(), images)
        np.testing.assert_array_equal(y[i].numpy(), labels)
        assert dropped[i] == drop
    assert any(dropped)  # p = 0.5: some sequence was dropped in four windows
