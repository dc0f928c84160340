"""The model zoo: the paper's names, only the needed cases rendered, resumable."""

import pytest

from core.zoo import ZOO, train_zoo


def test_the_papers_eleven_models():
    assert list(ZOO) == ["BraTS", "BraTSst", "cH1BraTS", "H1BraTS", "H1BraTSst", "cH2-6BraTS", "H2-6BraTS",
                         "H2-6BraTSst", "cH1-6BraTS", "H1-6BraTS", "H1-6BraTSst"]  # fmt: skip
    assert ZOO["cH2-6BraTS"].complete_only and ZOO["H1-6BraTSst"].sparsify == 0.2
    with pytest.raises(ValueError, match="unknown model"):
        train_zoo("c", "m", ["UNet"])


@pytest.mark.slow
def test_zoo_trains_on_rendered_training_cases_and_resumes(tmp_path):
    folders = train_zoo(tmp_path / "cohort", tmp_path / "models", ["BraTS", "BraTSst"], scale=0.03, iterations=4,
                        batch_size=2)  # fmt: skip
    assert [f.name for f in folders] == ["BraTS", "BraTSst"]
    rendered = sorted(p.name for p in (tmp_path / "cohort").iterdir() if p.is_dir())
    assert rendered == ["SYN_PUB_0001", "SYN_PUB_0002", "SYN_PUB_0003"]  # training cases only, no test case
    weights = [(f / "weights.safetensors").stat().st_mtime_ns for f in folders]
    again = train_zoo(tmp_path / "cohort", tmp_path / "models", ["BraTS", "BraTSst"], scale=0.03, iterations=4,
                      batch_size=2)  # fmt: skip
    assert [(f / "weights.safetensors").stat().st_mtime_ns for f in again] == weights
