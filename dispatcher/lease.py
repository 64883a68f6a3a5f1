"""The lease and fencing rules, pure: no clock, no I/O (the store passes ``now`` in).

A claim gives a task a new *attempt* number, a lease owner and an expiry. Every later state
change (heartbeat, events, completion) names the attempt it holds; :func:`fence` decides
whether that attempt may still act. A lease that expired without a heartbeat is lost, even if the
reaper has not yet noticed: the worker that held it must not commit. Failed attempts and lost
leases count towards ``max_attempts``; a graceful release does not.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from datetime import datetime, timedelta


class TaskState(enum.StrEnum):
    QUEUED = "queued"
    LEASED = "leased"
    SUCCEEDED = "succeeded"
    DEAD = "dead"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in (TaskState.SUCCEEDED, TaskState.DEAD, TaskState.CANCELED)


class Fence(enum.StrEnum):
    """The answer to "may attempt N of this task act now?"."""

    OK = "ok"
    CANCELED = "canceled"  # the lease is held, but cancel was requested: stop and report
    STALE = "stale"  # another attempt holds (or held) the task
    EXPIRED = "expired"  # the lease ran out; the task will be retried by someone else
    FINISHED = "finished"  # the task already reached a terminal state


@dataclass(frozen=True, slots=True)
class LeaseView:
    """What the fence needs to know of a task row."""

    state: TaskState
    attempt: int
    lease_expires_at: datetime | None
    cancel_requested: bool


def fence(task: LeaseView, attempt: int, now: datetime) -> Fence:
    """Whether ``attempt`` may heartbeat, emit events or complete ``task`` at ``now``."""
    if attempt != task.attempt:
        return Fence.STALE
    if task.state.terminal:
        return Fence.FINISHED
    if task.state is not TaskState.LEASED:
        return Fence.STALE  # re-queued after its lease was reaped
    if task.lease_expires_at is None or task.lease_expires_at <= now:
        return Fence.EXPIRED
    if task.cancel_requested:
        return Fence.CANCELED
    return Fence.OK


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    initial: timedelta = timedelta(seconds=1)
    maximum: timedelta = timedelta(minutes=1)
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial <= timedelta(0) or self.maximum < self.initial:
            raise ValueError("backoff needs 0 < initial <= maximum")
        if not self.multiplier >= 1.0:  # NaN too; infinity means "the maximum from the 2nd retry on"
            raise ValueError("backoff multiplier must be at least 1")


_MICROSECOND = timedelta(microseconds=1)
# Jitter from a generator of our own, not the random module's shared one: a server thread drawing
# from the shared generator while hypothesis generates test data (the API fuzz test) is reported as
# "random used inside a strategy".
_JITTER = random.Random()


def backoff(policy: RetryPolicy, failures: int, *, jitter: float | None = None) -> timedelta:
    """Delay before the retry that follows the ``failures``-th failure (1-based).

    Exponential, capped at ``policy.maximum``, with "equal jitter": the delay is drawn from
    [d/2, d], so retries of many tasks that failed together spread out. ``jitter`` in [0, 1]
    fixes the draw (tests); by default it is random. Computed in whole microseconds, growing
    step by step up to the cap, so no multiplier or maximum can overflow.
    """
    if failures < 1:
        raise ValueError("failures is 1-based")
    draw = _JITTER.random() if jitter is None else jitter
    if not 0.0 <= draw <= 1.0:  # NaN fails too
        raise ValueError("jitter must be in [0, 1]")
    cap = policy.maximum // _MICROSECOND
    grown = float(policy.initial // _MICROSECOND)
    for _ in range(min(failures - 1, 64)):
        if grown >= cap:
            break
        grown *= policy.multiplier
    half = min(grown, cap) / 2
    return timedelta(microseconds=min(cap, round(half + half * draw)))


class AfterFailure(enum.StrEnum):
    RETRY = "retry"
    DEAD = "dead"


def after_failure(policy: RetryPolicy, failures: int) -> AfterFailure:
    """What happens to a task once it has failed ``failures`` times in all."""
    return AfterFailure.DEAD if failures >= policy.max_attempts else AfterFailure.RETRY
