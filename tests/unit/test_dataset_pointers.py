"""Pointer-set rules (dispatcher/datasets/pointers.py) on generated histories of cutovers and
rollbacks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.datasets.pointers import (
    EMPTY,
    Candidate,
    CutoverRefused,
    PointerSet,
    RollbackRefused,
    VersionState,
    plan_cutover,
    plan_rollback,
    rolled_back_dags,
)

DATASETS = ("blocks", "logs", "transactions", "daily_volume")
asks = st.dictionaries(st.sampled_from(DATASETS), st.integers(1, 6), min_size=1, max_size=4)
states = st.sampled_from(list(VersionState))


def _ready(asked: dict[str, int]) -> dict[tuple[str, int], Candidate]:
    return {(d, v): Candidate(d, v, VersionState.READY) for d, v in asked.items()}


def _apply(newest: PointerSet, change: object) -> PointerSet:
    from dispatcher.datasets.pointers import Change

    assert isinstance(change, Change)
    return PointerSet(newest.seq + 1, change.pointers, change.watermarks, change.dag_versions)


@given(st.lists(st.tuples(asks, st.integers(1, 3)), min_size=1, max_size=8))
def test_cutovers_move_exactly_the_asked_pointers_and_rollback_restores_the_set_before(
        history: list[tuple[dict[str, int], int]]) -> None:
    sets = [EMPTY]
    for asked, dag_version in history:
        newest = sets[-1]
        change = plan_cutover(newest, asked, _ready(asked), {"etl": dag_version})
        assert dict(change.pointers) == {**newest.pointers, **asked}
        assert change.changed == tuple(sorted(d for d, v in asked.items() if newest.pointers.get(d) != v))
        sets.append(_apply(newest, change))
    newest = sets[-1]
    back = plan_rollback(newest, sets[-2], to_seq=None)
    assert dict(back.pointers) == dict(sets[-2].pointers)
    assert dict(back.dag_versions) == dict(sets[-2].dag_versions)
    assert back.restores == newest.seq - 1
    moved = {d for d in {*newest.pointers, *sets[-2].pointers}
             if newest.pointers.get(d) != sets[-2].pointers.get(d)}
    assert set(back.changed) == moved
    for seq, target in enumerate(sets[:-1]):  # any earlier set, by number
        assert dict(plan_rollback(newest, target, to_seq=seq).pointers) == dict(target.pointers)


@given(asks, st.dictionaries(st.sampled_from(DATASETS), states, min_size=1))
def test_a_cutover_naming_a_version_that_is_not_ready_changes_nothing_and_names_it(
        asked: dict[str, int], state_of: dict[str, VersionState]) -> None:
    found = {(d, v): Candidate(d, v, state_of.get(d, VersionState.READY), failure="gap at 7")
             for d, v in asked.items() if d != "daily_volume"}  # daily_volume's versions: none
    bad = sorted(d for d in asked if d == "daily_volume" or state_of.get(d, VersionState.READY)
                 is not VersionState.READY)
    if not bad:
        assert plan_cutover(EMPTY, asked, found, {}).pointers == asked
        return
    with pytest.raises(CutoverRefused) as refused:
        plan_cutover(EMPTY, asked, found, {})
    for dataset in bad:
        assert f"{dataset}: " in str(refused.value)
    if any(state_of.get(d) is VersionState.FAILED for d in bad if d != "daily_volume"):
        assert "gap at 7" in str(refused.value)


def test_a_cutover_keeps_the_cold_watermark_of_the_version() -> None:
    found = {("blocks", 2): Candidate("blocks", 2, VersionState.READY, cold_watermark=19_999)}
    change = plan_cutover(PointerSet(1, {"blocks": 1}, {"blocks": 9_999}), {"blocks": 2}, found, {})
    assert dict(change.watermarks) == {"blocks": 19_999}


def test_rollback_refusals_name_the_problem() -> None:
    with pytest.raises(RollbackRefused, match="no cutover was made yet"):
        plan_rollback(EMPTY, None, to_seq=None)
    newest = PointerSet(3, {"blocks": 3})
    with pytest.raises(RollbackRefused, match="no pointer set 7 to roll back to"):
        plan_rollback(newest, None, to_seq=7)
    with pytest.raises(RollbackRefused, match="no pointer set 3 to roll back to"):
        plan_rollback(newest, newest, to_seq=3)
    with pytest.raises(RollbackRefused, match="pointer set 2 does not exist"):
        plan_rollback(newest, None, to_seq=None)


def test_rolled_back_dags_are_those_whose_active_version_changes() -> None:
    newest = PointerSet(2, {"blocks": 2}, dag_versions={"etl": 5, "backfill": 1, "new": 1})
    change = plan_rollback(newest, PointerSet(1, {"blocks": 1}, dag_versions={"etl": 4, "backfill": 1}),
                           to_seq=None)
    assert rolled_back_dags(newest, change) == {"etl": 5, "new": 1}


def test_an_empty_cutover_is_refused() -> None:
    with pytest.raises(CutoverRefused, match="at least one"):
        plan_cutover(EMPTY, {}, {}, {})
