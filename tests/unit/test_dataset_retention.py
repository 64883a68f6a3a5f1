"""Retention rules (dispatcher/datasets/retention.py) on generated versions, pointer-set histories
and staging listings."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.datasets.pointers import (
    EMPTY,
    Candidate,
    Change,
    PointerSet,
    RollbackRefused,
    VersionState,
    plan_cutover,
    plan_rollback,
)
from dispatcher.datasets.retention import (
    Kept,
    Left,
    StagingRun,
    Version,
    plan_retention,
    plan_staging,
    retained_sets,
    staging_run,
)

DATASET = "blocks"
NOW = datetime(2025, 1, 10, tzinfo=UTC)
states = st.sampled_from(list(VersionState))


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Version], list[PointerSet]]:
    """Versions 1..n of one dataset (random states, snapshot 100 + n) and pointer sets naming
    some of them (another dataset's pointer moves in some sets)."""
    n = draw(st.integers(0, 12))
    versions = [Version(i, draw(states), draw(st.sampled_from([None, 100 + i]))) for i in range(1, n + 1)]
    nameable = [v.number for v in versions if v.state is not VersionState.BUILDING]
    sets = []
    for seq in range(1, draw(st.integers(0, 10)) + 1):
        pointers = {"logs": draw(st.integers(1, 3))}
        if draw(st.booleans()) and nameable:
            pointers[DATASET] = draw(st.sampled_from(nameable))
        sets.append(PointerSet(seq, pointers))
    return versions, draw(st.permutations(sets))


@given(histories(), st.integers(1, 6))
def test_no_version_a_kept_pointer_set_names_nor_a_building_one_is_expired(
        history: tuple[list[Version], list[PointerSet]], kept: int) -> None:
    versions, sets = history
    plan = plan_retention(DATASET, versions, sets, kept=kept)
    named = {s.pointers[DATASET] for s in retained_sets(sets, kept) if DATASET in s.pointers}
    newest = max(sets, key=lambda s: s.seq).pointers.get(DATASET) if sets else None
    by_number = {v.number: v for v in versions}
    # every version has exactly one fate
    assert sorted([*plan.kept, *plan.expire, *plan.expired]) == sorted(by_number)
    assert set(plan.expired) == {v.number for v in versions if v.state is VersionState.EXPIRED}
    for number in plan.expire:
        assert number not in named and number != newest
        assert by_number[number].state not in (VersionState.BUILDING, VersionState.EXPIRED)
    # and no more is kept than the rules say
    ever = [s.pointers[DATASET] for s in sets if DATASET in s.pointers]
    for number, why in plan.kept.items():
        if why is Kept.CURRENT:
            assert number == newest
        elif why is Kept.ROLLBACK:
            assert number in named
        elif why is Kept.BUILDING:
            assert by_number[number].state is VersionState.BUILDING
        else:
            assert not ever or number > max(ever)
    assert plan.keep_snapshots == {by_number[n].snapshot_id for n in plan.kept} - {None}
    assert set(plan.gone_snapshots.values()) <= {*plan.expire, *plan.expired}


@given(histories(), st.integers(1, 6))
def test_retention_is_idempotent_and_keeping_more_expires_less(
        history: tuple[list[Version], list[PointerSet]], kept: int) -> None:
    versions, sets = history
    plan = plan_retention(DATASET, versions, sets, kept=kept)
    after = [Version(v.number, VersionState.EXPIRED if v.number in plan.expire else v.state, v.snapshot_id)
             for v in versions]
    again = plan_retention(DATASET, after, sets, kept=kept)
    assert again.expire == () and dict(again.kept) == dict(plan.kept)
    more = plan_retention(DATASET, versions, sets, kept=kept + 1)
    assert set(more.expire) <= set(plan.expire)


def test_retention_keeps_at_least_the_newest_set() -> None:
    with pytest.raises(ValueError, match="dataset_versions_kept >= 1"):
        plan_retention(DATASET, [], [], kept=0)
    plan = plan_retention(DATASET, [Version(1, VersionState.READY, 7)], [], kept=1)
    assert dict(plan.kept) == {1: Kept.NEWER}  # no cutover yet: nothing is older than the current one


@given(st.lists(st.one_of(st.just("commit"), st.just("fail"), st.just("rollback"), st.just("gc")),
                max_size=30), st.integers(1, 4))
def test_a_rollback_to_any_retained_set_is_never_refused_for_an_expired_version(
        ops: list[str], kept: int) -> None:
    """Commits (a new ready version cut over), failures (a failed version), rollbacks and gc
    passes in any order: every rollback to one of the newest ``kept`` sets works; an older one
    naming an expired version is refused."""
    versions: dict[int, VersionState] = {}
    sets = [EMPTY]

    def apply(change: Change) -> None:
        sets.append(PointerSet(sets[-1].seq + 1, change.pointers, change.watermarks, change.dag_versions))

    def expired() -> set[tuple[str, int]]:
        return {(DATASET, n) for n, state in versions.items() if state is VersionState.EXPIRED}

    for op in ops:
        if op in ("commit", "fail"):
            number = len(versions) + 1
            versions[number] = VersionState.READY if op == "commit" else VersionState.FAILED
            if op == "commit":
                apply(plan_cutover(sets[-1], {DATASET: number},
                                   {(DATASET, number): Candidate(DATASET, number, VersionState.READY)}, {}))
        elif op == "rollback" and sets[-1].seq >= 2:
            newest = sets[-1]
            window = retained_sets(sets[1:], kept)
            for target in window[:-1]:
                plan_rollback(newest, target, to_seq=target.seq, expired=expired())  # never refused
            if len(window) >= 2:
                apply(plan_rollback(newest, sets[-2], to_seq=None, expired=expired()))
        elif op == "gc":
            plan = plan_retention(DATASET, [Version(n, s) for n, s in versions.items()], sets[1:], kept=kept)
            for number in plan.expire:
                versions[number] = VersionState.EXPIRED
    current = sets[-1].pointers.get(DATASET)
    assert current is None or versions[current] is VersionState.READY
    for target in sets[1:]:
        named = target.pointers.get(DATASET)
        if named is not None and versions[named] is VersionState.EXPIRED and target.seq < sets[-1].seq:
            with pytest.raises(RollbackRefused, match=f"{DATASET} version {named} expired"):
                plan_rollback(sets[-1], target, to_seq=target.seq, expired=expired())


# ------------------------------------------------------------------------------- staging

RUNS = [uuid.UUID(int=i) for i in range(1, 6)]


@st.composite
def listings(draw: st.DrawFn) -> tuple[list[tuple[str, int]], dict[uuid.UUID, StagingRun], set[str]]:
    keys = []
    for i in range(draw(st.integers(0, 25))):
        run = draw(st.sampled_from([*RUNS, "not-a-run"]))
        keys.append((f"_staging/{run}/{uuid.UUID(int=99)}.{draw(st.integers(1, 3))}/f{i}.parquet",
                     draw(st.integers(0, 10**6))))
    runs = {}
    for run in RUNS:
        if draw(st.booleans()):
            ended = draw(st.none() | st.integers(0, 96).map(lambda h: NOW - timedelta(hours=h)))
            runs[run] = StagingRun(draw(st.sampled_from(["a", "b"])), ended)
    referenced = {key for key, _ in keys if draw(st.booleans())}
    return keys, runs, referenced


@given(listings(), st.integers(1, 72))
def test_staging_deletes_only_unreferenced_keys_of_the_orgs_ended_runs_older_than_the_retention(
        listing: tuple[list[tuple[str, int]], dict[uuid.UUID, StagingRun], set[str]], hours: int) -> None:
    keys, runs, referenced = listing
    retention = timedelta(hours=hours)
    plan = plan_staging(keys, runs, referenced, org_id="a", now=NOW, retention=retention)
    assert len(plan.delete) + sum(plan.left.values()) == len(keys)
    for orphan in plan.delete:
        run = runs[orphan.run_id]
        assert orphan.key not in referenced and run.org_id == "a" and run.ended_at is not None
        assert orphan.age == NOW - run.ended_at > retention
        assert staging_run(orphan.key) == orphan.run_id
    deleted = {o.key for o in plan.delete}
    for key, _ in keys:  # every key it leaves has a reason
        run_id = staging_run(key)
        owner = runs.get(run_id) if run_id is not None else None
        if key not in deleted and owner is not None and owner.org_id == "a" and owner.ended_at is not None \
                and key not in referenced:
            assert NOW - owner.ended_at <= retention
    longer = plan_staging(keys, runs, referenced, org_id="a", now=NOW, retention=retention * 2)
    assert {o.key for o in longer.delete} <= deleted


def test_staging_keys_are_of_a_run_or_left_alone() -> None:
    run = uuid.uuid4()
    assert staging_run(f"_staging/{run}/t.1/x.parquet") == run
    for key in (f"_staging/{run}", f"_staging/{run}/", "_staging/x/t.1/a", f"other/{run}/t.1/a",
                f"_staging/{str(run).upper()}/a"):
        assert staging_run(key) is None
    plan = plan_staging([(f"_staging/{run}/t.1/a", 5), ("_staging/readme", 1)],
                        {run: StagingRun("a", NOW - timedelta(hours=25))}, set(), org_id="a", now=NOW,
                        retention=timedelta(hours=24))
    assert [(o.key, o.size) for o in plan.delete] == [(f"_staging/{run}/t.1/a", 5)] and plan.bytes == 5
    assert dict(plan.left) == {Left.UNKNOWN: 1}
