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
