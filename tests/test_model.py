"""DeepMedic: shapes, receptive field, parameter counts, safe model folders."""

from __future__ import annotations

import json

import pytest
import torch

from core.model import ModelError, build_model, count_parameters, load_model, save_model


def expected_parameters(in_channels, feature_maps, fc, classes):
    """Counted by hand: conv weights + biases, batch norm (2 per map), PReLU (1 per map)."""
    total, cin = 0, in_channels
    for cout in feature_maps:
        total += cin * cout * 27 + cout + 3 * cout
        cin = cout
    total *= 2  # two pathways
    cin = 2 * feature_maps[-1]
    for cout in fc:
        total += cin * cout + cout + 3 * cout
        cin = cout
    return total + cin * classes + classes


def test_parameter_counts():
    paper = build_model("deepmedic")
    assert count_parameters(paper) == expected_parameters(4, (30, 30, 40, 40, 40, 40, 50, 50), (150, 150), 4)
    assert count_parameters(paper) == 663_944  # the paper: about 663k
    lite = build_model("deepmedic-lite", in_channels=4, num_classes=2)
    assert count_parameters(lite) == expected_parameters(4, (15, 15, 20, 20, 20, 20, 25, 25), (75, 75), 2)
    assert count_parameters(build_model("deepmedic", residual=True)) == 663_944  # residuals add no weights


@pytest.mark.parametrize(("size", "out"), [((57, 57, 57), (9, 9, 9)), ((75, 63, 57), (27, 15, 9))])
def test_output_shapes(size, out):
    model = build_model("deepmedic-lite").eval()
    with torch.no_grad():
        y = model(torch.zeros(2, 4, *size))
    assert tuple(y.shape) == (2, 4, *out)


def test_bad_sizes_give_clear_errors():
    model = build_model("deepmedic-lite")
    with pytest.raises(ValueError, match="input size 58 is not output \\+ 48"):
        model(torch.zeros(1, 4, 58, 57, 57))
    with pytest.raises(ValueError, match=r"expected input \(B, 4, X, Y, Z\)"):
        model(torch.zeros(1, 3, 57, 57, 57))
    with pytest.raises(ValueError, match="unknown model preset"):
        build_model("unet")


@pytest.mark.parametrize("residual", [False, True])
def test_receptive_field(residual):
    torch.manual_seed(0)
    model = build_model("deepmedic-lite", residual=residual).double().eval()
    x = torch.randn(1, 4, 57, 57, 57, dtype=torch.float64)
    with torch.no_grad():
        base = model(x)[0, :, 4, 4, 4]  # centre output voxel <-> input voxel 28

    def changed(position):
        y = x.clone()
        y[(0, 0, *position)] += 10.0
        with torch.no_grad():
            return not torch.allclose(model(y)[0, :, 4, 4, 4], base, atol=1e-12, rtol=0)

    # Outside the 51^3 field (28 +- 25): no effect.
    assert not changed((2, 28, 28)) and not changed((28, 54, 28)) and not changed((28, 28, 56))
    # Inside the 17^3 normal field (28 +- 8): effect.
    assert changed((20, 28, 28)) and changed((36, 36, 36))
    # In the 51^3 field on the subsampled grid (3k + 1), outside the normal field: effect.
    assert changed((4, 28, 28)) and changed((52, 28, 28))


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(1)
    model = build_model("deepmedic-lite").eval()
    save_model(model, tmp_path / "m", {"name": "BraTS"})
    loaded = load_model(tmp_path / "m")
    x = torch.randn(1, 4, 57, 57, 57)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert loaded.card["name"] == "BraTS" and len(loaded.card["weights_sha256"]) == 64
    header = (tmp_path / "m" / "weights.safetensors").read_bytes()[8:9]
    assert header == b"{"  # safetensors: a JSON header, no pickle


def test_load_model_says_what_is_wrong(tmp_path):
    with pytest.raises(ModelError, match="model folder not found"):
        load_model(tmp_path / "absent")
    folder = tmp_path / "m"
    save_model(build_model("deepmedic-lite"), folder)
    weights = folder / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match the card"):
        load_model(folder)
    # A card that claims another architecture than the weights hold.
    save_model(build_model("deepmedic-lite"), folder)
    card = json.loads((folder / "card.json").read_text())
    card["architecture"]["feature_maps"] = [30, 30, 40, 40, 40, 40, 50, 50]
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="does not fit the card's architecture: .*wrong shape"):
        load_model(folder)
    (folder / "card.json").write_text("{not json")
    with pytest.raises(ModelError, match="card.json: not valid JSON"):
        load_model(folder)
    (folder / "card.json").unlink()
    with pytest.raises(ModelError, match="no card.json"):
        load_model(folder)
