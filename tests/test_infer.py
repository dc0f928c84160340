"""Inference: stitching is exact, tiled equals windowed, missing sequences, slice preview, grids."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

import core.infer
from core.device import bf16_supported, choose_device, describe_device
from core.infer import (
    brain_outputs,
    brain_steps,
    normalise_case,
    predict_slice,
    predict_volume,
    prepare_input,
    tile_shape,
    tiled_outputs,
    windowed_outputs,
)
from core.io import read_case
from core.model import build_model, fuse_for_inference, save_model
from core.preprocess import fit_landmarks
from tests.conftest import save, write_phantom_cohort

ROOT = Path(__file__).resolve().parents[1]


class ShiftNet(torch.nn.Module):
    """Fake predictor: output = the input's central crop + 1 (what stitching must reproduce)."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x[:, :, 24:-24, 24:-24, 24:-24] + 1


class FlairNet(ShiftNet):
    """Two classes: tumour where normalised FLAIR is above its mean (logit = FLAIR)."""

    def __init__(self, landmarks):
        super().__init__()
        self.config = SimpleNamespace(num_classes=2, feature_maps=(1,), fc=(1,))
        self.card = {"normalisation": {"landmarks": landmarks}}

    def forward(self, x):
        flair = x[:, 3:4, 24:-24, 24:-24, 24:-24]
        return torch.cat([torch.zeros_like(flair), flair], 1)


@pytest.mark.parametrize("tile", [9, (12, 15, 6), 30])
def test_fake_predictor_proves_stitching_exact(tile):
    volume = np.random.default_rng(0).standard_normal((2, 20, 23, 31)).astype(np.float32)
    out = tiled_outputs(ShiftNet(), volume, tile, num_outputs=2)
    np.testing.assert_array_equal(out, volume + 1)
    skip = np.zeros(volume.shape[1:], bool)
    skip[:9, :9, :9] = True
    partial = tiled_outputs(ShiftNet(), volume, 9, num_outputs=2, skip=skip, fill=np.array([-5, 7]))
    np.testing.assert_array_equal(partial[:, :9, :9, :9], volume[:, :9, :9, :9] + 1)
    assert (partial[0, 9:] == -5).all() and (partial[1, :, 9:] == 7).all()
    with pytest.raises(ValueError, match="multiple of 3"):
        tiled_outputs(ShiftNet(), volume, 10, num_outputs=2)


def test_tile_shape_covers_with_least_padding():
    assert tile_shape((145, 175, 150), 60) == (51, 60, 51)
    assert tile_shape((30, 9, 61), 60) == (30, 9, 33)


@pytest.mark.parametrize("residual", [False, True])
def test_tiled_equals_window_by_window(residual):
    torch.manual_seed(0)
    model = build_model("deepmedic-lite", residual=residual).eval()
    volume = np.random.default_rng(1).standard_normal((4, 30, 33, 27)).astype(np.float32)
    windowed = windowed_outputs(model, volume, 4)  # 57^3 -> 9^3, as in training
    for tile in (18, (12, 21, 27)):
        np.testing.assert_allclose(tiled_outputs(model, volume, tile, 4), windowed, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def phantom_case(tmp_path_factory):
    manifest = write_phantom_cohort(tmp_path_factory.mktemp("c"), n=1, size=40)
    return read_case(manifest.parent / "P0")


def test_missing_sequences_are_zero_after_normalisation(phantom_case):
    landmarks = fit_landmarks([(phantom_case.images, phantom_case.available)])
    net = FlairNet(landmarks).eval()
    complete = predict_volume(net, phantom_case, tile=9)
    assert complete.labels.any() and complete.missing_name == "none"
    # The FLAIR-driven "tumour" is where FLAIR is brighter than its mean in the brain.
    images, mask, _ = prepare_input(phantom_case, landmarks, ())
    np.testing.assert_array_equal(complete.labels > 0, (images[3] > 0) & mask)
    without = predict_volume(net, phantom_case, missing={"flair"}, tile=9)
    assert without.missing_name == "flair" and not without.labels.any()  # zeros: no FLAIR evidence
    with pytest.raises(ValueError, match="every sequence would be missing"):
        predict_volume(net, phantom_case, missing={"t1", "t1c", "t2", "flair"})
    with pytest.raises(ValueError, match="unknown sequence"):
        predict_volume(net, phantom_case, missing={"dwi"})


def random_model(case, seed=3):
    torch.manual_seed(seed)
    model = build_model("deepmedic-lite").eval()
    with torch.no_grad():
        model.classifier.weight.mul_(50)  # spread the random logits so labels vary in space
    model.card = {"normalisation": {"landmarks": fit_landmarks([(case.images, case.available)])}}
    return model


def test_slice_preview_equals_the_whole_volume_slice(phantom_case):
    model = random_model(phantom_case)
    full = predict_volume(model, phantom_case, missing={"t2"}, tile=12)
    assert len(np.unique(full.labels)) > 1
    for index in (5, 19, 20, 21, 33):
        np.testing.assert_array_equal(
            predict_slice(model, phantom_case, index, missing={"t2"}), full.labels[:, :, index]
        )


def test_bfloat16_autocast_agrees_with_float32_or_is_not_used(phantom_case):
    model = random_model(phantom_case)
    full = predict_volume(model, phantom_case, missing={"t1"}, tile=12)
    half = predict_volume(model, phantom_case, missing={"t1"}, tile=12, amp=True)
    assert "bfloat16" not in full.device
    if bf16_supported("cpu"):  # AVX-512 BF16 / AMX: bfloat16 rounding flips only near-tied voxels
        assert half.device.endswith(", bfloat16")
        assert (half.labels == full.labels).mean() > 0.99
        assert len(np.unique(half.labels)) == len(np.unique(full.labels))
    else:  # the flag is ignored where bfloat16 is not native
        assert "bfloat16" not in half.device
        np.testing.assert_array_equal(half.labels, full.labels)


def test_reusing_the_normalised_case_gives_the_same_prediction(phantom_case):
    model = random_model(phantom_case, seed=5)
    normalised = normalise_case(phantom_case, model.card["normalisation"]["landmarks"])
    for missing in ({"flair"}, {"t1", "t2"}, set()):
        np.testing.assert_array_equal(
            predict_volume(model, phantom_case, missing=missing, tile=12, normalised=normalised).labels,
            predict_volume(model, phantom_case, missing=missing, tile=12).labels,
        )
    assert normalised[0][3].any()  # the cached images were not zeroed in place


def test_prediction_returns_on_the_original_grid(tmp_path):
    images = np.random.default_rng(0).uniform(50, 100, (4, 16, 16, 8)).astype(np.float32)
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    for suffix, volume in zip(("t1", "t1ce", "t2", "flair"), images):
        save(volume, tmp_path / f"c_{suffix}.nii.gz", affine)
    case = read_case(tmp_path)
    assert case.shape == (16, 16, 22)
    net = FlairNet(fit_landmarks([(case.images, case.available)])).eval()
    prediction = predict_volume(net, case, tile=9, probabilities=True)
    assert prediction.labels.shape == (16, 16, 8) and prediction.probabilities.shape == (2, 16, 16, 8)
    np.testing.assert_allclose(prediction.probabilities.sum(0), 1, atol=1e-5)


def test_device_choice():
    assert choose_device("cpu").type == "cpu"
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert describe_device(torch.device("cpu")) == "CPU (1 thread)"
        torch.set_num_threads(2)
        assert describe_device(torch.device("cpu")) == "CPU (2 threads)"
    finally:
        torch.set_num_threads(threads)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda' is not available"):
            choose_device("cuda")


@pytest.mark.slow
def test_predict_cli_writes_labels_on_the_input_grid(tmp_path, phantom_case):
    folder = tmp_path / "m"
    model = build_model("deepmedic-lite")
    save_model(model, folder, {"name": "try", "normalisation": {"landmarks": fit_landmarks(
        [(phantom_case.images, phantom_case.available)])}})  # fmt: skip
    manifest = write_phantom_cohort(tmp_path / "c", n=1, size=40)
    out = tmp_path / "pred.nii.gz"
    result = subprocess.run([sys.executable, "-m", "core", "predict", "--model", str(folder), "--case", "P0",
                             "--cohort", str(manifest), "--missing", "flair", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["missing"] == "flair" and report["device"].startswith("CPU") and "tc" in report["metrics"]
    image = nib.load(str(out))
    reference = nib.load(str(manifest.parent / "P0" / "P0_t1ce.nii.gz"))
    np.testing.assert_array_equal(image.affine, reference.affine)
    assert image.shape == reference.shape and image.get_data_dtype() == np.uint8

    # --clean says what it kept: the components of the file it writes (which labels it drops is
    # tests/test_postprocess.py's; an untrained model's near-tied labels may differ between runs)
    cleaned = tmp_path / "clean.nii.gz"
    result = subprocess.run([sys.executable, "-m", "core", "predict", "--model", str(folder), "--case", "P0",
                             "--cohort", str(manifest), "--missing", "flair", "--out", str(cleaned), "--clean"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    cleanup = json.loads(result.stdout)["cleanup"]
    kept = np.asarray(nib.load(str(cleaned)).dataobj)
    assert ndimage.label(kept > 0, np.ones((3, 3, 3)))[1] == cleanup["kept"]
    assert set(cleanup) == {"kept", "dropped", "dropped_ml"}


@pytest.mark.parametrize("residual", [False, True])
def test_streamed_brain_equals_tiles_at_every_brain_voxel(residual, monkeypatch):
    # An irregular "brain" with a second piece: steps follow its rectangle per step, the rectangles
    # shrink towards both ends, the lower half runs reversed. The 1x1x1 layers take 50 voxels at a
    # time, so steps end on a shorter block.
    monkeypatch.setattr(core.infer, "HEAD_ROWS", 50)
    torch.manual_seed(7)
    model = build_model("deepmedic-lite", residual=residual).eval()
    with torch.no_grad():  # batch norm as after training, so that folding it is not the identity
        for norm in model.modules():
            if isinstance(norm, torch.nn.BatchNorm3d):
                for value, (low, high) in zip((norm.running_mean, norm.running_var, norm.weight, norm.bias),
                                              ((-0.5, 0.5), (0.5, 2.0), (0.5, 1.5), (-0.3, 0.3))):  # fmt: skip
                    value.uniform_(low, high)
    rng = np.random.default_rng(2)
    volume = rng.standard_normal((4, 31, 26, 29)).astype(np.float32)
    grid = np.indices(volume.shape[1:])
    inside = ((grid[0] - 15) ** 2 / 140 + (grid[1] - 12) ** 2 / 90 + (grid[2] - 14) ** 2 / 160) < 1
    inside[24:, :6, 20:] = True  # a second piece, apart from the ellipsoid, in the last planes
    tiled = tiled_outputs(model, volume, 12, 4)  # the reference engine, as trained (batch norm unfolded)
    for net in (model, fuse_for_inference(model)):
        for depth in (2, 5, 40):  # the fewest planes a step can have; several steps; one step per half
            scores = brain_outputs(net, volume, inside, depth)
            np.testing.assert_allclose(scores, tiled[:, inside].T, atol=1e-5, rtol=0)
    # widest at the first plane: one half only
    flat = np.zeros_like(inside)
    flat[:5, 3:20, 4:25] = True
    flat[5:12, 8:12, 10:14] = True
    np.testing.assert_allclose(brain_outputs(model, volume, flat, 3), tiled[:, flat].T, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="at least 2 planes"):
        brain_outputs(model, volume, inside, 1)


def test_brain_steps_cover_the_brain_in_shrinking_rectangles():
    inside = np.zeros((20, 12, 14), bool)
    inside[3:9, 2:10, 1:13] = True
    inside[9:15, 4:7, 5:8] = True  # narrower further on
    inside[17, 0, 0] = True  # a lone voxel at a corner, after a gap with no brain
    steps = brain_steps(inside, 3, 4)
    assert [first for first, _ in steps] == [3, 7, 11, 15]  # planes 19.. have no brain at or after them
    for (first, rect), (_, after) in zip(steps, steps[1:] + [(None, None)]):
        x0, x1, y0, y1 = rect
        covered = np.zeros(inside.shape[1:], bool)
        covered[x0:x1, y0:y1] = True
        assert not (inside[first : first + 4].any(0) & ~covered).any()
        if after is not None:  # each rectangle lies within the one before
            assert rect[0] <= after[0] and after[1] <= rect[1] and rect[2] <= after[2] and after[3] <= rect[3]
    assert steps[-1][1] == (0, 1, 0, 1) and steps[0][1] == (0, 10, 0, 13)


@pytest.mark.parametrize("slopes", [[0.25, -0.5, 0.0, 1.0, 0.7, 0.01],  # all <= 1: max(x, a x)
                                    [1.0, 1.5, 3.0, 1.0, 1.7, 2.0],  # all >= 1: min(x, a x)
                                    [0.25, -0.5, 0.0, 1.0, 1.7, 0.01]])  # fmt: skip
def test_inference_prelu_equals_torchs_prelu(slopes):
    from core.model import InferencePReLU

    torch.manual_seed(0)
    reference = torch.nn.PReLU(6)
    with torch.no_grad():
        reference.weight.copy_(torch.tensor(slopes))
    fast = InferencePReLU(6)
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(2, 6, 5, 4, 3).contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        expected = torch.where(x > 0, x, x * torch.tensor(slopes).view(1, -1, 1, 1, 1))  # PReLU's definition
        np.testing.assert_array_equal(fast(x.clone()).numpy(), expected.numpy())
        np.testing.assert_array_equal(fast(x.clone()).numpy(), reference(x).numpy())
        # bfloat16 against torch's PReLU in float32: within bfloat16's rounding
        half = x.to(torch.bfloat16)
        np.testing.assert_allclose(fast(half.clone()).float().numpy(), reference(half.float()).numpy(),
                                   rtol=2**-7, atol=0)  # fmt: skip
        rows = torch.randn(7, 6)
        np.testing.assert_array_equal(fast(rows.clone()).numpy(), reference(rows).numpy())
        for shape in ((1, 6, 5, 1, 3), (1, 6, 1, 1, 1)):  # size-1 axes, and the default layout
            for y in (torch.randn(shape).contiguous(memory_format=torch.channels_last_3d), torch.randn(shape)):
                np.testing.assert_array_equal(fast(y.clone()).numpy(), reference(y).numpy())


def test_inference_prelu_keeps_the_layout_and_its_gpu_way_equals_torchs_prelu():
    from core.model import InferencePReLU, prelu_in_place

    torch.manual_seed(0)
    x = torch.randn(1, 6, 5, 3, 3).contiguous(memory_format=torch.channels_last_3d)
    rows = torch.randn(7, 6)
    for slopes in (torch.tensor([0.25, -0.5, 0.0, 1.0, 0.7, 0.01]), torch.tensor([1.0, 1.5, 3.0, 1.0, 1.7, 2.0]),
                   torch.tensor([0.25, -0.5, 0.0, 1.0, 1.7, 0.01])):  # fmt: skip
        fast = InferencePReLU(6)
        with torch.no_grad():
            fast.weight.copy_(slopes)
        with torch.inference_mode():
            expected = torch.where(x > 0, x, x * slopes.view(1, -1, 1, 1, 1))  # PReLU's definition
            out = fast(x.clone())
            # The next convolution gets channels-last input, as from the convolution before.
            assert out.is_contiguous(memory_format=torch.channels_last_3d) and out.shape == x.shape
            np.testing.assert_array_equal(out.numpy(), expected.numpy())
            # On a GPU: in place, max(x, a x) or min(x, a x) where the slopes allow (run here on the CPU).
            y = x.clone()
            assert prelu_in_place(y, slopes) is y
            np.testing.assert_array_equal(y.numpy(), expected.numpy())
            np.testing.assert_array_equal(
                prelu_in_place(rows.clone(), slopes), torch.where(rows > 0, rows, rows * slopes)
            )
