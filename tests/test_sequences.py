"""Sequence constants and the names of missing combinations."""

import pytest

from core.sequences import (
    EXTENDED_COMBINATIONS,
    PAPER_COMBINATIONS,
    availability,
    combination_name,
    display_name,
    parse_combination,
)


def test_paper_has_8_combinations_of_secondaries_and_extended_15():
    assert len(PAPER_COMBINATIONS) == 8 and len(set(PAPER_COMBINATIONS)) == 8
    assert all("t1c" not in m for m in PAPER_COMBINATIONS)
    assert len(EXTENDED_COMBINATIONS) == 15  # 2^4 subsets minus "all four missing"
    assert frozenset({"t1", "t1c", "t2", "flair"}) not in EXTENDED_COMBINATIONS
    assert set(PAPER_COMBINATIONS) < set(EXTENDED_COMBINATIONS)


def test_names_round_trip_in_channel_order():
    assert [combination_name(m) for m in PAPER_COMBINATIONS] == [
        "none", "t1", "t2", "flair", "t1+t2", "t1+flair", "t2+flair", "t1+t2+flair",
    ]  # fmt: skip
    for missing in EXTENDED_COMBINATIONS:
        assert parse_combination(combination_name(missing)) == missing
    assert parse_combination("flair,t2") == frozenset({"t2", "flair"})
    assert combination_name({"flair", "t1"}) == "t1+flair"


def test_display_names_and_availability():
    assert display_name(frozenset()) == "complete"
    assert display_name(frozenset({"flair"})) == "missing FLAIR"
    assert display_name(frozenset({"flair", "t1"})) == "missing T1 + FLAIR"
    assert availability(frozenset({"t2"})) == (True, True, False, True)


def test_unknown_sequence_is_named():
    with pytest.raises(ValueError, match=r"\['dwi'\]"):
        parse_combination("t1+dwi")


def test_sparsified_dropout_frequencies_and_independence():
    import numpy as np

    from core.sequences import Sparsifier

    rng = np.random.default_rng(0)
    draws = [Sparsifier(0.2).draw(rng) for _ in range(20_000)]
    rate = {s: np.mean([s in d for d in draws]) for s in ("t1", "t1c", "t2", "flair")}
    assert rate["t1c"] == 0
    for sequence in ("t1", "t2", "flair"):
        assert abs(rate[sequence] - 0.2) < 0.01
    # Independence: the joint rate is the product of the marginals.
    assert abs(np.mean([{"t1", "t2"} <= d for d in draws]) - 0.04) < 0.006
    assert abs(np.mean([len(d) == 3 for d in draws]) - 0.008) < 0.003


def test_dropout_never_drops_everything_and_respects_availability():
    import numpy as np

    from core.sequences import Sparsifier

    rng = np.random.default_rng(1)
    extended = Sparsifier({"t1": 0.9, "t1c": 0.9, "t2": 0.9, "flair": 0.9}, drop_t1c=True)
    draws = [extended.draw(rng) for _ in range(2000)]
    assert all(len(d) < 4 for d in draws) and any("t1c" in d for d in draws)
    only_t1c_and_t2 = (False, True, True, False)
    assert all(d <= {"t1c", "t2"} and len(d) < 2 for d in (extended.draw(rng, only_t1c_and_t2) for _ in range(200)))
    with pytest.raises(ValueError, match="T1c is never dropped"):
        Sparsifier({"t1c": 0.2})
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Sparsifier(1.0)


def test_scorable_regions_follow_the_reference_and_the_model():
    from core.sequences import scorable_regions

    assert scorable_regions("brats2020") == ("tc", "wt", "et")
    assert scorable_regions("brats2023", 4) == ("tc", "wt", "et")
    assert scorable_regions(None) == ("tc", "wt", "et")  # scheme unknown: all three
    assert scorable_regions("tc") == ("tc",)  # a binary tumour-core reference
    assert scorable_regions("brats2020", num_classes=2) == ("tc",)  # a background / tumour-core model
    assert scorable_regions("brats2020", 4, wanted=("et", "tc")) == ("et", "tc")  # wanted's order
    assert scorable_regions("tc", 4, wanted=("wt", "et")) == ()


def test_combinations_are_ordered_complete_first_then_unknown_names():
    from core.sequences import combination_label, order_combinations

    names = ["t2+flair", "weird", "none", "flair", "t1c", "t1", "flair", "abc"]
    assert order_combinations(names) == ["none", "t1", "t1c", "flair", "t2+flair", "abc", "weird"]
    assert combination_label("t1+flair") == "missing T1 + FLAIR" and combination_label("none") == "complete"


def test_missing_set_names_unknown_sequences_for_native_and_onnx_models_alike():
    import pytest

    from core.sequences import missing_set

    assert missing_set(None) == frozenset() and missing_set(["flair", "t2", "flair"]) == {"t2", "flair"}
    with pytest.raises(ValueError, match=r"unknown sequence\(s\) \['dwi'\] in missing"):
        missing_set(("dwi", "t1"))
