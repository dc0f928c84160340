"""ONNX models: card validation, sliding-window stitching, missing-sequence policies, export round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import correlate

from core.convert import export_deepmedic, export_onnx, import_onnx, validate_folder, write_external_folder
from core.external import (
    CardError,
    ExternalPrediction,
    InferenceSpec,
    NotApplicable,
    combination_applicable,
    load_any_model,
    load_external,
    parse_card,
    sliding_window,
)
from core.infer import predict_slice, predict_volume
from core.io import read_case
from core.model import ModelError, load_model

ROOT = Path(__file__).resolve().parents[1]


class Linear(torch.nn.Module):
    """A fake network with a known answer: per-voxel y = W x + b (1x1x1 convolution)."""

    def __init__(self, channels=4, outputs=4, seed=0):
        super().__init__()
        self.conv = torch.nn.Conv3d(channels, outputs, 1)
        with torch.no_grad():
            g = torch.Generator().manual_seed(seed)
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g))
            self.conv.bias.copy_(torch.randn(outputs, generator=g))

    def forward(self, x):
        return self.conv(x)


def card(**changes) -> dict:
    base = {
        "name": "Fake",
        "inputs": ["t1", "t1c", "t2", "flair"],
        "normalisation": {"method": "zscore"},
        "missing": {"policy": "zeros"},
        "inference": {"mode": "sliding-window", "patch_size": [8, 8, 8], "overlap": 0.5, "blend": "gaussian"},
        "output": {"kind": "scores", "labels": {"0": 0, "1": 1, "2": 2, "3": 3}},
        "architecture": {"family": "fake"},
    }
    for key, value in changes.items():
        base[key] = value
    return base


def fake_folder(tmp_path, net=None, **changes) -> Path:
    folder = tmp_path / "fake"
    folder.mkdir(parents=True, exist_ok=True)
    net = net or Linear()
    export_onnx(net, folder / "model.onnx", net.conv.in_channels, 8)
    return write_external_folder(folder, card(**changes), "# Fake\n")


# --------------------------------------------------------------------------- stitching


@pytest.mark.parametrize("blend", ["constant", "gaussian"])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_sliding_window_of_a_linear_model_is_exact(blend, overlap):
    rng = np.random.default_rng(1)
    volume = rng.standard_normal((2, 21, 17, 13)).astype(np.float32)
    weight, bias = rng.standard_normal((3, 2)).astype(np.float32), np.array([1, -2, 0.5], np.float32)

    def run(x):
        return np.einsum("oc,bc...->bo...", weight, x) + bias[None, :, None, None, None]

    spec = InferenceSpec("sliding-window", (8, 6, 8), overlap, blend)
    out, covered, _ = sliding_window(run, volume, spec, 3)
    assert covered.all()
    np.testing.assert_allclose(out, run(volume[None])[0], rtol=1e-5, atol=1e-5)


def test_valid_convolution_windows_with_context_equal_one_pass():
    """A 3x3x3 box filter without padding (context 2): the stitched windows equal the filter
    over the whole zero-padded volume."""
    rng = np.random.default_rng(2)
    volume = rng.standard_normal((1, 19, 14, 11)).astype(np.float32)

    def run(x):
        x = x[0, 0]
        full = correlate(x, np.ones((3, 3, 3), np.float32), mode="constant")
        return full[1:-1, 1:-1, 1:-1][None, None]

    spec = InferenceSpec("sliding-window", (6, 6, 6), 0.0, "constant", context=2, multiple_of=3)
    out, _, _ = sliding_window(run, volume, spec, 1)
    expected = correlate(volume[0], np.ones((3, 3, 3), np.float32), mode="constant")
    np.testing.assert_allclose(out[0], expected, rtol=1e-5, atol=1e-4)


def test_label_outputs_take_the_most_central_window():
    volume = np.arange(10 * 10 * 10, dtype=np.float32).reshape(1, 10, 10, 10) % 4
    out, _, _ = sliding_window(lambda x: x, volume, InferenceSpec("sliding-window", (4, 4, 4), 0.5), 1, "labels")
    np.testing.assert_array_equal(out, volume)  # an identity labeller returns its input, whichever window decides


def test_skipped_windows_are_not_run():
    calls = []
    skip = np.zeros((16, 16, 16), bool)
    skip[2, 2, 2] = True

    def run(x):
        calls.append(1)
        return np.zeros((1, 1, 8, 8, 8), np.float32)

    sliding_window(run, np.zeros((1, 16, 16, 16), np.float32), InferenceSpec("sliding-window", (8, 8, 8), 0.0), 1,
                   skip=skip)  # fmt: skip
    assert len(calls) == 1


# --------------------------------------------------------------------------- cards


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"inputs": ["t1", "pd"]}, "field 'inputs': 'pd' is not a sequence"),
        ({"inputs": []}, "field 'inputs'"),
        ({"inputs": ["t1c", "t1c"]}, "field 'inputs': ['t1c', 't1c'] names a sequence twice"),
        ({"normalisation": {"method": "minmax"}}, "field 'normalisation.method': 'minmax' is unknown"),
        ({"normalisation": {"method": "nyul+whitening", "landmarks": {}}}, "normalisation.landmarks.t1"),
        ({"missing": {"policy": "impute"}}, "field 'missing.policy'"),
        ({"output": {"kind": "scores", "labels": {"0": 0, "1": 7}}}, "field 'output.labels'"),
        ({"output": {"kind": "scores", "labels": {"0": 0, "2": 1}}}, "channels [0, 2] are not 0..1"),
        ({"output": {"kind": "probabilities", "labels": {"0": 0}}}, "field 'output.kind'"),
        ({"inference": {"mode": "sliding-window", "patch_size": [8, 8]}}, "field 'inference.patch_size'"),
        ({"inference": {"mode": "tiles"}}, "field 'inference.mode'"),
        ({"inference": {"mode": "whole", "blend": "median"}}, "field 'inference.blend'"),
        ({"inference": {"mode": "whole", "overlap": 1.0}}, "field 'inference.overlap'"),
    ],
)
def test_bad_cards_name_the_field_and_file(changes, fragment):
    with pytest.raises(CardError, match="model/card.json: field") as error:
        parse_card(card(**changes), "model/card.json")
    assert fragment in str(error.value)


def test_card_against_the_graph(tmp_path):
    folder = fake_folder(tmp_path)
    data = json.loads((folder / "card.json").read_text())
    data["inputs"] = ["t1c", "flair"]
    (folder / "card.json").write_text(json.dumps(data))
    with pytest.raises(CardError, match="field 'inputs': lists 2 sequences .* but model.onnx takes 4 channels"):
        load_external(folder)
    data["inputs"] = ["t1", "t1c", "t2", "flair"]
    data["output"]["labels"] = {"0": 0, "1": 1}
    (folder / "card.json").write_text(json.dumps(data))
    with pytest.raises(CardError, match="field 'output.labels': maps 2 channels but model.onnx outputs 4"):
        load_external(folder)
    (folder / "model.onnx").write_bytes((folder / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(CardError, match="field 'weights_sha256'"):
        load_external(folder)


def test_import_writes_a_card_to_complete(tmp_path):
    export_onnx(Linear(2, 3), tmp_path / "theirs.onnx", 2, 8)
    summary = import_onnx(tmp_path / "theirs.onnx", tmp_path / "Theirs")
    assert {"inputs.0", "inputs.1", "normalisation.method", "missing.policy", "output.labels.2"} <= set(
        summary["to_complete"]
    )
    assert not validate_folder(tmp_path / "Theirs")["ok"]
    assert "field 'inputs'" in validate_folder(tmp_path / "Theirs")["error"]
    data = json.loads((tmp_path / "Theirs" / "card.json").read_text())
    data |= {"inputs": ["t1c", "flair"], "normalisation": {"method": "zscore"}, "missing": {"policy": "cannot-run"},
             "output": {"kind": "scores", "labels": {"0": 0, "1": 1, "2": 2}}}  # fmt: skip
    (tmp_path / "Theirs" / "card.json").write_text(json.dumps(data))
    assert validate_folder(tmp_path / "Theirs")["ok"]
    with pytest.raises(ModelError, match="already holds a model"):
        import_onnx(tmp_path / "theirs.onnx", tmp_path / "Theirs")


# --------------------------------------------------------------------------- running on cases


def test_prediction_on_a_case_and_its_slices(tmp_path, write_case):
    folder_case, images, _ = write_case()
    case = read_case(folder_case)
    model = load_any_model(fake_folder(tmp_path))
    prediction = predict_volume(model, case)
    assert isinstance(prediction, ExternalPrediction) and prediction.runtime.startswith("onnxruntime")
    assert prediction.labels.shape == case.shape and prediction.labels.dtype == np.uint8
    # Independently: z-score per channel inside the brain, the linear map, argmax.
    mask = np.any(case.images != 0, 0)
    x = np.zeros_like(case.images)
    for c in range(4):
        v = case.images[c][mask]
        x[c][mask] = (v - v.mean()) / v.std()
    net = Linear()
    with torch.no_grad():
        expected = net(torch.from_numpy(x)[None])[0].argmax(0).numpy()
    np.testing.assert_array_equal(prediction.labels, np.where(mask, expected, 0))
    for z in (0, 7, case.shape[2] - 1):
        np.testing.assert_array_equal(predict_slice(model, case, z), prediction.labels[:, :, z])
    probs = predict_volume(model, case, probabilities=True).probabilities
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)


def test_missing_policies(tmp_path, write_case):
    case = read_case(write_case()[0])
    zeros = load_external(fake_folder(tmp_path))
    images, _, effective = zeros.prepare_input(case, ("flair",))
    assert effective == {"flair"} and not images[3].any()
    means = {s: 10.0 for s in ("t1", "t1c", "t2", "flair")}
    mean = load_external(fake_folder(tmp_path / "m", normalisation={"method": "none"},
                                     missing={"policy": "mean", "means": means}))  # fmt: skip
    images, mask, _ = mean.prepare_input(case, ("t2",))
    assert (images[2][mask] == 10).all() and (images[2][~mask] == 0).all()
    only = load_external(fake_folder(tmp_path / "o", net=Linear(2, 2), inputs=["t1c", "flair"],
                                     missing={"policy": "cannot-run"},
                                     output={"kind": "scores", "labels": {"0": 0, "1": 1}}))  # fmt: skip
    assert only.config.num_classes == 2
    assert predict_volume(only, case, ("t1", "t2")).missing == {"t1", "t2"}  # sequences it does not take
    with pytest.raises(NotApplicable, match="cannot run without flair"):
        predict_volume(only, case, ("flair",))
    assert not combination_applicable(only.card, {"flair"}) and combination_applicable(only.card, {"t1", "t2"})
    assert not combination_applicable(zeros.card, {"t1", "t1c", "t2", "flair"})


def test_load_model_points_onnx_folders_to_the_right_loader(tmp_path):
    with pytest.raises(ModelError, match="an ONNX model folder"):
        load_model(fake_folder(tmp_path))


def test_cli_predict_and_import_model(tmp_path, write_case, capsys):
    from core.__main__ import main

    folder = fake_folder(tmp_path)
    case_folder = write_case()[0]
    out = tmp_path / "p.nii.gz"
    assert main(["predict", "--model", str(folder), "--case", str(case_folder), "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "Fake" and set(report["metrics"]) == {"tc", "wt", "et"}
    assert main(["import-model", "--onnx", str(folder / "model.onnx"), "--out", str(tmp_path / "In")]) == 0
    assert "field 'inputs'" in json.loads(capsys.readouterr().out)["validation"]["error"]


@pytest.mark.slow
def test_deepmedic_export_round_trip_equals_native(tmp_path):
    native = ROOT / "models" / "BraTS"
    folder = export_deepmedic(native, tmp_path / "BraTS-onnx")
    case = read_case(ROOT / "data_samples" / "SYN_H1_0008")
    a = predict_volume(load_model(native), case, ("t2",))
    b = predict_volume(load_any_model(folder), case, ("t2",))
    assert b.missing == a.missing
    assert np.array_equal(a.labels, b.labels)
    z = int(np.argmax((a.labels > 0).sum((0, 1))))
    np.testing.assert_array_equal(predict_slice(load_any_model(folder), case, z, ("t2",)), a.labels[:, :, z])


# --------------------------------------------------------------------------- sweeps and uploads


def test_sweep_stores_cannot_run_combinations_as_not_applicable(tmp_path, phantom_cohort):
    from core.stats import applicable_rows, not_applicable_count
    from core.store import ResultStore
    from core.sweep import SweepConfig, run_sweep

    only = fake_folder(tmp_path / "only", net=Linear(2, 4), inputs=["t1c", "flair"], missing={"policy": "cannot-run"})
    config = SweepConfig([only], phantom_cohort, "simulated", splits=("train",), workers=1, keep_predictions=False)
    with ResultStore(tmp_path / "r.sqlite") as store:
        summary = run_sweep(store, config)
        table = store.table()
        again = run_sweep(store, config)
    assert not summary.errors and summary.not_applicable == 2 * 4  # 2 cases x the 4 combinations without FLAIR
    skipped = table[table["applicable"] == 0]
    assert set(skipped["missing"]) == {"flair", "t1+flair", "t2+flair", "t1+t2+flair"}
    assert skipped["dice"].isna().all() and skipped["seconds"].isna().all()  # no metrics, never Dice 0
    assert not_applicable_count(table) == 8 and len(applicable_rows(table)) == len(table) - len(skipped)
    ran = table[table["applicable"] == 1]
    assert ran["runtime"].str.startswith("onnxruntime").all() and ran["dice"].notna().any()
    assert again.units == 0 and again.skipped_done == 16  # not-applicable rows are done too


def test_an_uploaded_model_folder_is_checked_before_it_is_kept(tmp_path):
    import io
    import zipfile

    from core.convert import install_model

    source = fake_folder(tmp_path / "src")
    files = {name: (source / name).read_bytes() for name in ("model.onnx", "card.json")}
    dest = tmp_path / "user_models"
    saved = install_model(files, dest, "mine", 2**20)
    assert saved["ok"] and saved["inputs"] == ["t1", "t1c", "t2", "flair"] and (dest / "mine" / "card.json").is_file()
    assert load_any_model(dest / "mine").spec.name == "Fake"
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        for name, data in files.items():
            archive.writestr(f"folder/{name}", data)
        archive.writestr("__MACOSX/folder/._card.json", b"junk")
    assert install_model({"m.zip": packed.getvalue()}, dest, "zipped", 2**20)["ok"]
    bad = json.loads(files["card.json"])
    bad["missing"] = {"policy": "skip"}
    rejected = install_model(files | {"card.json": json.dumps(bad).encode()}, dest, "bad", 2**20)
    assert not rejected["ok"] and rejected["error"].startswith("card.json: field 'missing.policy': 'skip' is unknown")
    assert not (dest / "bad").exists() and sorted(p.name for p in dest.iterdir()) == ["mine", "zipped"]
    bad["missing"] = {"policy": "zeros"}
    bad["weights_sha256"] = "0" * 64
    assert "field 'weights_sha256'" in install_model(files | {"card.json": json.dumps(bad).encode()}, dest, "b",
                                                     2**20)["error"]  # fmt: skip
    assert "no card.json in the upload (model.onnx)" in install_model({"model.onnx": files["model.onnx"]}, dest, "c",
                                                                      2**20)["error"]  # fmt: skip
    assert "more than 0 MB" in install_model({"m.zip": packed.getvalue()}, dest, "d", 10)["error"]
    assert "not a zip file" in install_model({"m.zip": b"nope"}, dest, "e", 2**20)["error"]
    assert "use letters" in install_model(files, dest, "../up", 2**20)["error"]
