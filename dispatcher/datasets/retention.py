"""Retention as pure rules (no I/O): which versions of a dataset to keep, which to expire, and
which staging files are orphans old enough to delete.

**Versions.** The pointer sets that still matter are the newest ``kept`` ones (setting
``dataset_versions_kept``): the newest is what readers see, the others are what ``trace datasets
rollback [--to N]`` can restore. A version is kept when one of those sets names it, when it is
still ``building``, or when it is newer than every version any pointer set ever named (made and
not cut over yet: the committer may be about to). Every other version is expired: its snapshot
goes, and the files only expired snapshots used are deleted (``dispatcher/datasets/gc.py``). An
expired version stays expired; a pointer set naming one can no longer be rolled back to.

**Staging.** Every key under ``_staging/<run>/`` belongs to a run. It is an orphan when its run
is of this org and ended (succeeded, failed or canceled: a running run may still complete any
attempt), no version's manifest, no Iceberg snapshot and no output of a run not yet committed
references it, and its run ended more than ``retention`` (setting ``staging_retention_hours``)
before ``now``. Keys of runs Postgres does not know, or of another org, are left alone.

:func:`plan_retention` and :func:`plan_staging` decide; ``gc.py`` reads their inputs and acts.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from dispatcher.datasets.pointers import PointerSet, VersionState

STAGING = "_staging/"  # where tasks stage their files: _staging/<run>/<task>.<attempt>/...


class Kept(StrEnum):
    """Why a version is kept."""

    CURRENT = "current"
    ROLLBACK = "named by a pointer set a rollback can restore"
    BUILDING = "building"
    NEWER = "newer than every version cut over"


@dataclass(frozen=True, slots=True)
class Version:
    """A version of a dataset as retention sees it."""

    number: int
    state: VersionState
    snapshot_id: int | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Retention:
    """One dataset's decision: ``kept`` (version -> why), ``expire`` (to expire now) and
    ``expired`` (expired before)."""

    dataset_id: str
    kept: Mapping[int, Kept]
    expire: tuple[int, ...]
    expired: tuple[int, ...]
    keep_snapshots: frozenset[int]  # the Iceberg snapshots of the kept versions
    gone_snapshots: Mapping[int, int]  # snapshot -> version, of the versions expired now or before


def retained_sets(sets: Iterable[PointerSet], kept: int) -> list[PointerSet]:
    """The newest ``kept`` pointer sets (oldest first): the newest one and those a rollback may
    restore."""
    if kept < 1:
        raise ValueError("retention keeps at least the newest pointer set (dataset_versions_kept >= 1)")
    ordered = sorted(sets, key=lambda s: s.seq)
    return ordered[-kept:]


def plan_retention(dataset_id: str, versions: Iterable[Version], sets: Sequence[PointerSet], *,
                   kept: int) -> Retention:
    """Which of ``dataset_id``'s ``versions`` to keep and which to expire, given every pointer
    set of its org (``sets``, any order) and the number of newest sets to keep (``kept`` >= 1)."""
    retained = retained_sets(sets, kept)
    current = retained[-1].pointers.get(dataset_id) if retained else None
    named = {s.pointers[dataset_id] for s in retained if dataset_id in s.pointers}
    ever = [s.pointers[dataset_id] for s in sets if dataset_id in s.pointers]
    newest_named = max(ever) if ever else None
    keep: dict[int, Kept] = {}
    expire: list[int] = []
    expired: list[int] = []
    snapshots: set[int] = set()
    gone: dict[int, int] = {}
    for version in sorted(versions, key=lambda v: v.number):
        why: Kept | None = None
        if version.state is VersionState.EXPIRED:
            expired.append(version.number)
            if version.snapshot_id is not None:
                gone[version.snapshot_id] = version.number
            continue
        if version.number == current:
            why = Kept.CURRENT
        elif version.number in named:
            why = Kept.ROLLBACK
        elif version.state is VersionState.BUILDING:
            why = Kept.BUILDING
        elif newest_named is None or version.number > newest_named:
            why = Kept.NEWER
        if why is None:
            expire.append(version.number)
            if version.snapshot_id is not None:
                gone[version.snapshot_id] = version.number
            continue
        keep[version.number] = why
        if version.snapshot_id is not None:
            snapshots.add(version.snapshot_id)
    return Retention(dataset_id, keep, tuple(expire), tuple(expired), frozenset(snapshots), gone)


# ------------------------------------------------------------------------------- staging


class Left(StrEnum):
    """Why a staging key is not deleted."""

    REFERENCED = "referenced"  # by a version's manifest, a snapshot, or a run not yet committed
    YOUNG = "younger than the retention"
    LIVE = "its run is still going"
    OTHER_ORG = "another org's run"
    UNKNOWN = "a run Postgres does not know"


@dataclass(frozen=True, slots=True)
class StagingRun:
    """A run owning staging keys: its org and when it ended (None: still going)."""

    org_id: str
    ended_at: datetime | None


@dataclass(frozen=True, slots=True)
class Orphan:
    """A staging key to delete: no one references it and its run ended long enough ago."""

    key: str
    size: int
    run_id: uuid.UUID
    age: timedelta


@dataclass(frozen=True, slots=True)
class StagingPlan:
    delete: tuple[Orphan, ...] = ()
    left: Mapping[Left, int] = field(default_factory=dict)  # keys left alone, by reason

    @property
    def bytes(self) -> int:
        return sum(o.size for o in self.delete)


def staging_run(key: str) -> uuid.UUID | None:
    """The run of a staging key ``_staging/<run>/<rest>`` (None: not such a key)."""
    if not key.startswith(STAGING):
        return None
    run, slash, rest = key[len(STAGING):].partition("/")
    if not slash or not rest:
        return None
    try:
        parsed = uuid.UUID(run)
    except ValueError:
        return None
    return parsed if str(parsed) == run else None  # as workers write it: canonical, lowercase


def plan_staging(keys: Iterable[tuple[str, int]], runs: Mapping[uuid.UUID, StagingRun],
                 referenced: Collection[str], *, org_id: str, now: datetime,
                 retention: timedelta) -> StagingPlan:
    """The orphans among ``keys`` (``(key, size)`` under ``_staging/``): keys of ``org_id``'s
    ended ``runs``, not in ``referenced``, whose run ended more than ``retention`` before
    ``now``. Everything else is counted in ``left`` by the first reason that holds."""
    delete: list[Orphan] = []
    left: dict[Left, int] = {}
    for key, size in keys:
        run_id = staging_run(key)
        run = runs.get(run_id) if run_id is not None else None
        reason: Left
        if run_id is None or run is None:
            reason = Left.UNKNOWN
        elif run.org_id != org_id:
            reason = Left.OTHER_ORG
        elif run.ended_at is None:
            reason = Left.LIVE
        elif key in referenced:
            reason = Left.REFERENCED
        elif now - run.ended_at <= retention:
            reason = Left.YOUNG
        else:
            delete.append(Orphan(key, size, run_id, now - run.ended_at))
            continue
        left[reason] = left.get(reason, 0) + 1
    return StagingPlan(tuple(delete), left)
