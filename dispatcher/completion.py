"""What ending attempts changes, decided without I/O: :func:`plan_completions` (what workers
report) and :func:`plan_reap` (leases that ran out).

The store locks the task rows (each a :class:`LockedTask`), asks for a :class:`Plan` and applies it
in the same transaction. The rules:

- every completion is fenced (:func:`dispatcher.lease.fence`) and gets exactly one verdict; a
  stale, expired or finished attempt changes nothing;
- a live attempt of a canceled task commits nothing, whatever it reports: the task ends canceled;
- ``succeeded`` commits the outputs (a dataset the task does not write is :class:`NotAllowed`);
  ``failed`` retries after :func:`~dispatcher.lease.backoff` or, past ``max_attempts``, is dead;
  ``canceled`` ends the task; ``released`` hands it back without counting a failure;
- a lease that ran out counts as a failed attempt (``lease_expired``), or ends a canceled task.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from dispatcher.errors import NotAllowed, NotFound
from dispatcher.lease import (
    AfterFailure,
    Fence,
    LeaseView,
    RetryPolicy,
    TaskState,
    after_failure,
    backoff,
    fence,
)
from dispatcher.protocol import OUTCOMES


@dataclass(frozen=True, slots=True)
class Output:
    """A file a task staged; it becomes visible to readers only if the attempt commits."""

    dataset_id: str
    uri: str
    rows: int
    bytes: int
    block_start: int | None = None
    block_end: int | None = None
    sha256: str | None = None  # of the file's bytes, hex
    metadata: Mapping[str, Any] | None = None  # the operator's own, kept in the version's manifest


@dataclass(frozen=True, slots=True)
class Completion:
    """What a worker reports at the end of an attempt."""

    task_id: uuid.UUID
    attempt: int
    outcome: str  # succeeded | failed | canceled | released
    error: str | None = None
    traceback: str | None = None
    outputs: Sequence[Output] = ()
    logs: Sequence[tuple[str, str]] = ()


@dataclass(frozen=True, slots=True)
class LockedTask:
    """What the decisions need of a task row locked in this transaction."""

    task_id: uuid.UUID
    run_id: uuid.UUID
    org_id: str
    dag: str
    dag_version: int
    job: str
    lease: LeaseView
    failures: int  # failed attempts so far
    writes: tuple[str, ...]
    max_attempts: int
    backoff_initial_ms: int
    backoff_max_ms: int
    backoff_multiplier: float

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts,
            initial=timedelta(milliseconds=self.backoff_initial_ms),
            maximum=timedelta(milliseconds=self.backoff_max_ms),
            multiplier=self.backoff_multiplier,
        )


@dataclass(frozen=True, slots=True)
class Finish:
    """A task reaching a terminal state (``succeeded``, ``dead`` or ``canceled``)."""

    task_id: uuid.UUID
    attempt: int
    state: TaskState
    error: str | None = None
    traceback: str | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """A failed task, queued again after ``delay`` (its wake-up waits as long)."""

    task_id: uuid.UUID
    delay: timedelta
    error: str | None = None
    traceback: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """How an attempt ended (its ``state.task_attempts`` row)."""

    task_id: uuid.UUID
    attempt: int
    outcome: str  # succeeded | failed | canceled | released | lease_expired
    error: str | None = None
    traceback: str | None = None


@dataclass(frozen=True, slots=True)
class Commit:
    """An output of a committed attempt: a file readers see from now on."""

    task: LockedTask
    attempt: int
    output: Output


@dataclass(frozen=True, slots=True)
class Plan:
    """What to write, in this order: finished tasks, retries, releases, outputs, attempts, logs;
    then the tasks ``upstream`` triggers start, then the runs to settle."""

    verdicts: tuple[Fence, ...] = ()  # one per completion, in order (none for the reaper)
    finish: tuple[Finish, ...] = ()
    retry: tuple[Retry, ...] = ()
    release: tuple[uuid.UUID, ...] = ()
    outputs: tuple[Commit, ...] = ()
    attempts: tuple[AttemptEnd, ...] = ()
    logs: tuple[tuple[uuid.UUID, int, Sequence[tuple[str, str]]], ...] = ()
    # finished tasks whose downstream jobs may start: succeeded or dead, their run not canceled
    upstream: tuple[tuple[LockedTask, TaskState], ...] = ()
    runs: tuple[uuid.UUID, ...] = ()  # runs that may have ended, sorted


def check_outcomes(completions: Iterable[Completion]) -> None:
    for c in completions:
        if c.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, not {c.outcome!r}")


def after_failed_attempt(task: LockedTask, attempt: int, error: str | None, traceback: str | None, *,
                         jitter: float | None = None) -> Finish | Retry:
    """A failed attempt (or a lost lease): dead once the task failed ``max_attempts`` times, else
    a retry after the backoff of its failure count. ``jitter`` fixes the backoff's draw (tests)."""
    failures = task.failures + 1
    policy = task.policy
    if after_failure(policy, failures) is AfterFailure.DEAD:
        return Finish(task.task_id, attempt, TaskState.DEAD, error, traceback)
    return Retry(task.task_id, backoff(policy, failures, jitter=jitter), error, traceback)


def plan_completions(tasks: Mapping[uuid.UUID, LockedTask], completions: Sequence[Completion], now: datetime,
                     *, jitter: float | None = None) -> Plan:
    """The plan of ``completions`` against their locked ``tasks`` at ``now``. Raises
    :class:`NotFound` for a task not among them, :class:`NotAllowed` for outputs of a dataset
    the task does not write (nothing is to be written then)."""
    check_outcomes(completions)
    verdicts: list[Fence] = []
    finish: list[Finish] = []
    retry: list[Retry] = []
    release: list[uuid.UUID] = []
    outputs: list[Commit] = []
    attempts: list[AttemptEnd] = []
    runs: set[uuid.UUID] = set()
    for c in completions:
        task = tasks.get(c.task_id)
        if task is None:
            raise NotFound(f"no task {c.task_id}")
        verdict = fence(task.lease, c.attempt, now)
        if verdict is Fence.CANCELED:
            # a live attempt of a canceled task: whatever it reports, nothing commits
            verdicts.append(Fence.OK if c.outcome == "canceled" else Fence.CANCELED)
            runs.add(task.run_id)
            attempts.append(AttemptEnd(c.task_id, c.attempt, "canceled", c.error, c.traceback))
            finish.append(Finish(c.task_id, c.attempt, TaskState.CANCELED, c.error, c.traceback))
            continue
        verdicts.append(verdict)
        if verdict is not Fence.OK:
            continue
        runs.add(task.run_id)
        attempts.append(AttemptEnd(c.task_id, c.attempt, c.outcome, c.error, c.traceback))
        if c.outcome == "succeeded":
            undeclared = sorted({o.dataset_id for o in c.outputs} - set(task.writes))
            if undeclared:
                raise NotAllowed(f"task {c.task_id} may not write {', '.join(undeclared)}")
            finish.append(Finish(c.task_id, c.attempt, TaskState.SUCCEEDED))
            outputs.extend(Commit(task, c.attempt, o) for o in c.outputs)
        elif c.outcome == "canceled":
            finish.append(Finish(c.task_id, c.attempt, TaskState.CANCELED, c.error, c.traceback))
        elif c.outcome == "released":
            release.append(c.task_id)
        else:
            step = after_failed_attempt(task, c.attempt, c.error, c.traceback, jitter=jitter)
            if isinstance(step, Finish):
                finish.append(step)
            else:
                retry.append(step)
    accepted = {(a.task_id, a.attempt) for a in attempts}
    return Plan(
        verdicts=tuple(verdicts), finish=tuple(finish), retry=tuple(retry), release=tuple(release),
        outputs=tuple(outputs), attempts=tuple(attempts),
        logs=tuple((c.task_id, c.attempt, c.logs) for c in completions
                   if c.logs and (c.task_id, c.attempt) in accepted),
        upstream=_upstream(tasks, finish), runs=tuple(sorted(runs)),
    )


def plan_reap(tasks: Sequence[LockedTask], *, jitter: float | None = None) -> Plan:
    """The plan of taking back the expired leases of ``tasks``: the attempt counts as failed
    (retry or dead), or ends the task if it was canceled."""
    finish: list[Finish] = []
    retry: list[Retry] = []
    attempts: list[AttemptEnd] = []
    for task in tasks:
        at = task.lease.lease_expires_at
        when = at.isoformat() if at else "an unknown time"
        error = f"lease expired at {when}: the worker stopped heartbeating"
        attempt = task.lease.attempt
        attempts.append(AttemptEnd(task.task_id, attempt, "lease_expired", error))
        if task.lease.cancel_requested:
            finish.append(Finish(task.task_id, attempt, TaskState.CANCELED, error))
            continue
        step = after_failed_attempt(task, attempt, error, None, jitter=jitter)
        if isinstance(step, Finish):
            finish.append(step)
        else:
            retry.append(step)
    return Plan(finish=tuple(finish), retry=tuple(retry), attempts=tuple(attempts),
                runs=tuple(sorted({t.run_id for t in tasks})))


def _upstream(tasks: Mapping[uuid.UUID, LockedTask],
              finish: Iterable[Finish]) -> tuple[tuple[LockedTask, TaskState], ...]:
    """Finished tasks that fire ``upstream`` triggers: succeeded or dead, in a run not canceled."""
    return tuple((tasks[f.task_id], f.state) for f in finish
                 if f.state in (TaskState.SUCCEEDED, TaskState.DEAD)
                 and not tasks[f.task_id].lease.cancel_requested)
