"""The model zoo: the paper's names, only the needed cases rendered, resumable."""

import os

import pytest
import torch

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


def test_capped_case_sets_keep_each_hospitals_share():
    from core.sampling import planned_cases, spread
    from core.synth.cohort import plan_cohort
    from core.train import TrainConfig
    from core.zoo import H26

    assert spread(list(range(10)), 0) == list(range(10))
    assert spread(list(range(10)), 4) == [0, 3, 6, 9]  # round(linspace(0, 9, 4)) = 0, 3, 6, 9
    plans = plan_cohort("paper", 1.0, 0)
    config = TrainConfig(cohort="", hospitals=H26, max_cases=40, max_val_cases=5)
    chosen = planned_cases(plans, config)
    train = [p for p in chosen if p.split == "train"]
    assert len(train) == 40 and sum(p.split == "val" for p in chosen) == 5
    eligible = [p for p in plans if p.hospital in H26 and p.split == "train"]
    for hospital in H26:  # each hospital's share of the 40 is its share of all training cases, to one case
        share = sum(p.hospital == hospital for p in eligible) / len(eligible)
        assert abs(sum(p.hospital == hospital for p in train) - 40 * share) <= 1.5
    complete = planned_cases(plans, TrainConfig(cohort="", hospitals=H26, complete_only=True, max_cases=40))
    assert all(not p.missing for p in complete)


@pytest.mark.slow
def test_zoo_trains_models_in_parallel_processes_like_one_by_one(tmp_path):
    kwargs = dict(scale=0.03, iterations=3, batch_size=2, output_size=3, max_cases=2)
    # As many threads as each parallel job takes (core.zoo._train_job): sums over another number of
    # threads round otherwise, and this test then passed only after another had set one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 4))
    try:
        one = train_zoo(tmp_path / "cohort", tmp_path / "serial", ["BraTS", "BraTSst"], jobs=1, **kwargs)
    finally:
        torch.set_num_threads(threads)
    two = train_zoo(tmp_path / "cohort", tmp_path / "parallel", ["BraTS", "BraTSst"], jobs=2, **kwargs)
    for a, b in zip(one, two):  # same seeds, same data: the same weights on a CPU
        assert (a / "weights.safetensors").read_bytes() == (b / "weights.safetensors").read_bytes()


@pytest.mark.slow
def test_each_model_trains_on_its_planned_cases_whatever_else_is_rendered(tmp_path):
    import json

    from core.sampling import planned_cases
    from core.synth.cohort import plan_cohort
    from core.train import TrainConfig
    from core.zoo import H26

    folders = train_zoo(tmp_path / "cohort", tmp_path / "models", ["BraTS", "H2-6BraTSst"], scale=0.1, iterations=1,
                        batch_size=2, output_size=3, max_cases=3, max_val_cases=1)  # fmt: skip
    plans = plan_cohort("paper", 0.1, 0)
    for folder, hospitals in zip(folders, (("public",), H26)):
        planned = [p for p in planned_cases(plans, TrainConfig(cohort="", hospitals=hospitals, max_cases=3))
                   if p.split == "train"]  # fmt: skip
        card = json.loads((folder / "card.json").read_text())
        assert card["training"]["train_cases"] == [p.patient_id for p in planned]
        assert card["training"]["synthetic"] == {"preset": "paper", "scale": 0.1, "seed": 0}
        assert "synthetic `paper` cohort (scale 0.1, seed 0" in (folder / "MODEL_CARD.md").read_text()
    # The H2-6 model's share of hospital cases is its plan's, though BraTS rendered more public cases.
    assert sum(not p.startswith("SYN_PUB") for p in card["training"]["train_cases"]) >= 2
