"""Pointer sets: which version of each dataset readers see, as pure rules (no I/O).

A *pointer set* is one immutable row per change: ``{dataset_id: version}`` for every dataset of an
org that has a current version, the cold watermark of each chain dataset, and the active version
of each DAG at that moment. Readers pin the newest set in one read, so a query never sees half of
a cutover. A **cutover** makes a new set from the newest one with some pointers moved to versions
that are built and checked (``ready``); a **rollback** makes a new set equal to an earlier one
(by default the one before the newest), pointers, watermarks and DAG versions alike. Nothing is
ever updated in place, so every earlier set stays available to roll back to.

:func:`plan_cutover` and :func:`plan_rollback` decide; ``dispatcher/datasets/store.py`` reads
their inputs and writes their result in one transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from tracekit.errors import ConfigError


class VersionState(StrEnum):
    BUILDING = "building"  # files are being committed to the version's branch
    READY = "ready"  # built and checked: may become current
    FAILED = "failed"  # a check refused it (the reason is stored): never current
    ABANDONED = "abandoned"  # its run ended without finishing it
    EXPIRED = "expired"  # retention removed its snapshot (dispatcher/datasets/retention.py)


class CutoverRefused(ConfigError):
    """The cutover cannot be made as asked (unknown dataset or version, version not ready)."""


class VersionNotFound(CutoverRefused):
    """A cutover names a version (or dataset) that does not exist."""


class RollbackRefused(ConfigError):
    """The rollback cannot be made as asked (no earlier pointer set, or no such set)."""


class PointerSetNotFound(RollbackRefused):
    """A rollback names a pointer set that does not exist."""


def _frozen(mapping: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(sorted(mapping.items())))


@dataclass(frozen=True, slots=True)
class PointerSet:
    """What readers see from ``seq`` on. ``seq`` 0 is the empty set before any cutover."""

    seq: int
    pointers: Mapping[str, int] = field(default_factory=dict)  # dataset -> version
    watermarks: Mapping[str, int] = field(default_factory=dict)  # chain dataset -> last cold block
    dag_versions: Mapping[str, int] = field(default_factory=dict)  # dag -> active version

    def __post_init__(self) -> None:
        object.__setattr__(self, "pointers", _frozen(self.pointers))
        object.__setattr__(self, "watermarks", _frozen(self.watermarks))
        object.__setattr__(self, "dag_versions", _frozen(self.dag_versions))


EMPTY = PointerSet(0)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A version a cutover names, as the store found it."""

    dataset_id: str
    version: int
    state: VersionState
    failure: str | None = None
    cold_watermark: int | None = None  # for a chain dataset: its last cold block


@dataclass(frozen=True, slots=True)
class Change:
    """A new pointer set to write and what it changed."""

    pointers: Mapping[str, int]
    watermarks: Mapping[str, int]
    dag_versions: Mapping[str, int]
    changed: tuple[str, ...]  # datasets whose pointer moved (sorted)
    restores: int | None = None  # rollback: the seq whose set this is


def plan_cutover(newest: PointerSet, asked: Mapping[str, int], found: Mapping[tuple[str, int], Candidate],
                 dag_versions: Mapping[str, int]) -> Change:
    """The set after moving each pointer of ``asked`` (dataset -> version) from ``newest``.

    ``found`` holds the asked versions the store has; ``dag_versions`` are the DAGs' active
    versions now (recorded with the set, so a rollback can restore them). Every asked version
    must exist and be ``ready``; otherwise nothing changes and :class:`CutoverRefused` names
    each problem. A version that is current already is no change (a retried cutover is a no-op).
    """
    if not asked:
        raise CutoverRefused("a cutover needs at least one dataset=version")
    problems = []
    for dataset, version in sorted(asked.items()):
        candidate = found.get((dataset, version))
        if candidate is None:
            problems.append(f"{dataset}: no version {version}")
        elif candidate.state is VersionState.FAILED:
            reason = candidate.failure or "no reason given"
            problems.append(f"{dataset}: version {version} failed its checks ({reason})")
        elif candidate.state is not VersionState.READY:
            problems.append(f"{dataset}: version {version} is {candidate.state.value}, not ready")
    if problems:
        missing = any((d, v) not in found for d, v in asked.items())
        raise (VersionNotFound if missing else CutoverRefused)("cutover refused: " + "; ".join(problems))
    pointers = {**newest.pointers, **asked}
    watermarks = dict(newest.watermarks)
    for dataset, version in asked.items():
        mark = found[(dataset, version)].cold_watermark
        if mark is not None:
            watermarks[dataset] = mark
    changed = tuple(sorted(d for d, v in asked.items() if newest.pointers.get(d) != v))
    return Change(pointers, watermarks, dict(dag_versions), changed)


def plan_rollback(newest: PointerSet, target: PointerSet | None, *, to_seq: int | None,
                  expired: Collection[tuple[str, int]] = ()) -> Change:
    """The set that restores ``target``: by default (``to_seq`` None) the set before ``newest``.

    ``target`` is the set the store found for the asked ``seq`` (None: no such set). Rolling back
    restores pointers, watermarks and the DAGs' active versions of ``target`` exactly. A target
    naming a version retention expired (``expired``: its ``(dataset, version)`` pairs) is refused:
    its rows are gone.
    """
    wanted = newest.seq - 1 if to_seq is None else to_seq
    if to_seq is not None and not 0 <= to_seq < newest.seq:
        known = (f"earlier sets are 0..{newest.seq - 1}, the current one is {newest.seq}" if newest.seq
                 else "no cutover was made yet")
        raise PointerSetNotFound(f"no pointer set {to_seq} to roll back to: {known}"
                                 " (see `trace datasets history`)")
    if newest.seq == 0:  # and no set was named
        raise RollbackRefused("nothing to roll back: no cutover was made yet")
    if target is None or target.seq != wanted:
        raise PointerSetNotFound(f"pointer set {wanted} does not exist")
    expired = set(expired)
    gone = sorted(f"{d} version {v}" for d, v in target.pointers.items() if (d, v) in expired)
    if gone:
        raise RollbackRefused(f"pointer set {wanted} cannot be restored: {', '.join(gone)} expired "
                              "(retention keeps the versions of the newest pointer sets; see "
                              "`trace datasets history`)")
    changed = sorted({*newest.pointers, *target.pointers}
                     - {d for d in newest.pointers if target.pointers.get(d) == newest.pointers[d]})
    return Change(dict(target.pointers), dict(target.watermarks), dict(target.dag_versions), tuple(changed),
                  restores=target.seq)


def rolled_back_dags(newest: PointerSet, change: Change) -> dict[str, int]:
    """The DAG versions a rollback deactivates: ``{dag: version active now}`` for every DAG whose
    active version the restored set differs from (their queued tasks are canceled, their running
    ones told to stop)."""
    return {dag: version for dag, version in newest.dag_versions.items()
            if change.dag_versions.get(dag) != version}
