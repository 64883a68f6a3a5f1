"""The lease rules: who may act on a task (fencing), when a failed task runs again (backoff) and
when it is dead; every answer is checked against the rule, over generated tasks and policies."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

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

NOW = datetime(2025, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)

offsets = st.timedeltas(min_value=timedelta(hours=-1), max_value=timedelta(hours=1))
attempts = st.integers(min_value=0, max_value=50)


@st.composite
def views(draw: st.DrawFn) -> LeaseView:
    expires = draw(st.none() | offsets.map(lambda d: NOW + d))
    return LeaseView(draw(st.sampled_from(TaskState)), draw(attempts), expires, draw(st.booleans()))


@st.composite
def policies(draw: st.DrawFn) -> RetryPolicy:
    initial = draw(st.timedeltas(min_value=US, max_value=timedelta(days=1)))
    maximum = initial + draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=30)))
    multiplier = draw(st.floats(min_value=1.0, max_value=1e12, allow_nan=False, allow_infinity=False))
    return RetryPolicy(draw(st.integers(min_value=1, max_value=100)), initial, maximum, multiplier)


failures = st.integers(min_value=1, max_value=10_000)
jitters = st.floats(min_value=0.0, max_value=1.0)


# -- fencing --------------------------------------------------------------------------------------


@given(views(), attempts)
def test_only_the_current_attempt_of_a_live_lease_may_act(task: LeaseView, attempt: int) -> None:
    live = (task.state is TaskState.LEASED and task.lease_expires_at is not None
            and task.lease_expires_at > NOW)
    verdict = fence(task, attempt, NOW)
    assert (verdict is Fence.OK) == (live and attempt == task.attempt and not task.cancel_requested)
    assert (verdict in (Fence.OK, Fence.CANCELED)) == (live and attempt == task.attempt)


@given(views(), attempts)
def test_another_attempt_is_always_stale(task: LeaseView, attempt: int) -> None:
    assume(attempt != task.attempt)
    assert fence(task, attempt, NOW) is Fence.STALE


@given(views())
def test_a_finished_task_tells_its_last_attempt_so(task: LeaseView) -> None:
    assert (fence(task, task.attempt, NOW) is Fence.FINISHED) == task.state.terminal


@given(attempts, st.booleans(), st.none() | offsets.map(lambda d: NOW + d))
def test_a_requeued_task_is_stale_for_the_attempt_that_lost_it(
    attempt: int, cancel: bool, expires: datetime | None
) -> None:
    assert fence(LeaseView(TaskState.QUEUED, attempt, expires, cancel), attempt, NOW) is Fence.STALE


@given(attempts, st.booleans(), st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=1)))
def test_an_expired_lease_cannot_act_even_before_the_reaper_sees_it(
    attempt: int, cancel: bool, ago: timedelta
) -> None:
    task = LeaseView(TaskState.LEASED, attempt, NOW - ago, cancel)  # ago = 0: expires exactly now
    assert fence(task, attempt, NOW) is Fence.EXPIRED
    assert fence(LeaseView(TaskState.LEASED, attempt, None, cancel), attempt, NOW) is Fence.EXPIRED


@given(attempts, st.timedeltas(min_value=US, max_value=timedelta(hours=1)))
def test_a_live_lease_of_a_canceled_run_is_told_to_stop(attempt: int, left: timedelta) -> None:
    assert fence(LeaseView(TaskState.LEASED, attempt, NOW + left, True), attempt, NOW) is Fence.CANCELED
    assert fence(LeaseView(TaskState.LEASED, attempt, NOW + left, False), attempt, NOW) is Fence.OK


def test_the_lease_runs_out_at_its_expiry_not_after() -> None:
    task = LeaseView(TaskState.LEASED, 3, NOW, False)
    assert fence(task, 3, NOW - US) is Fence.OK
    assert fence(task, 3, NOW) is Fence.EXPIRED


# -- backoff --------------------------------------------------------------------------------------


def _full(policy: RetryPolicy, n: int) -> float:
    """The un-jittered delay in microseconds, by the definition (big floats: no overflow)."""
    if math.log(policy.multiplier) * min(n - 1, 64) > 700:
        return policy.maximum / US
    return min(policy.initial / US * policy.multiplier ** min(n - 1, 64), policy.maximum / US)


@given(policies(), failures, jitters)
def test_backoff_lies_within_equal_jitter_bounds_and_the_cap(p: RetryPolicy, n: int, jitter: float) -> None:
    delay = backoff(p, n, jitter=jitter)
    full = _full(p, n)
    assert timedelta(0) <= delay <= p.maximum
    # [d/2, d], to the microsecond a timedelta can hold (and a float's relative precision)
    slack = 1 + full * 1e-12
    assert full / 2 - slack <= delay / US <= full + slack
    assert abs(delay / US - (full / 2 + full / 2 * jitter)) <= slack


@given(policies(), failures, failures, jitters)
def test_backoff_never_shrinks_as_failures_grow(p: RetryPolicy, a: int, b: int, jitter: float) -> None:
    lo, hi = sorted((a, b))
    assert backoff(p, lo, jitter=jitter) <= backoff(p, hi, jitter=jitter)


@given(policies(), failures)
def test_backoff_grows_to_the_maximum_and_stays_there(p: RetryPolicy, n: int) -> None:
    assume(p.multiplier >= 2.0)
    # initial * 2**64 >= 1 us * 1.8e19 exceeds any maximum here: after 65 failures d = maximum
    assert backoff(p, 65 + n, jitter=1.0) == p.maximum
    assert backoff(p, 65 + n, jitter=0.0) in (p.maximum // 2, p.maximum // 2 + US)


@given(policies(), failures)
def test_random_backoff_spreads_within_the_same_bounds(p: RetryPolicy, n: int) -> None:
    lo, hi = backoff(p, n, jitter=0.0), backoff(p, n, jitter=1.0)
    assert lo <= backoff(p, n) <= hi


def test_backoff_doubles_from_initial_with_the_default_policy() -> None:
    p = RetryPolicy()
    assert [backoff(p, n, jitter=1.0).total_seconds() for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert [backoff(p, n, jitter=0.0).total_seconds() for n in (1, 2, 7)] == [0.5, 1, 30]


def test_backoff_survives_huge_multipliers_and_maximums() -> None:
    huge = RetryPolicy(multiplier=1e300, maximum=timedelta(days=1))
    assert backoff(huge, 10_000, jitter=1.0) == timedelta(days=1)
    widest = RetryPolicy(initial=timedelta(days=1), maximum=timedelta.max)
    assert backoff(widest, 10_000, jitter=1.0) == timedelta.max
    jump = RetryPolicy(multiplier=math.inf)  # a DAG may say so: initial, then the maximum
    assert [backoff(jump, n, jitter=1.0) for n in (1, 2, 50)] == [jump.initial, jump.maximum, jump.maximum]


@pytest.mark.parametrize("jitter", [-0.1, 1.5, math.nan])
def test_backoff_rejects_a_jitter_outside_0_1(jitter: float) -> None:
    with pytest.raises(ValueError, match="jitter"):
        backoff(RetryPolicy(), 1, jitter=jitter)


@pytest.mark.parametrize("n", [0, -1])
def test_failures_are_counted_from_one(n: int) -> None:
    with pytest.raises(ValueError, match="1-based"):
        backoff(RetryPolicy(), n)


# -- after a failure and the policy ---------------------------------------------------------------


@given(st.integers(min_value=1, max_value=100), st.integers(min_value=0, max_value=200))
def test_a_task_is_dead_exactly_when_its_failures_reach_max_attempts(max_attempts: int, n: int) -> None:
    expected = AfterFailure.DEAD if n >= max_attempts else AfterFailure.RETRY
    assert after_failure(RetryPolicy(max_attempts=max_attempts), n) is expected


def test_max_attempts_one_means_no_retry() -> None:
    assert after_failure(RetryPolicy(max_attempts=1), 1) is AfterFailure.DEAD


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"initial": timedelta(0)}, "initial"),
        ({"initial": timedelta(seconds=-1)}, "initial"),
        ({"initial": timedelta(seconds=2), "maximum": timedelta(seconds=1)}, "initial <= maximum"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"multiplier": math.nan}, "multiplier"),
    ],
)
def test_retry_policy_rejects_impossible_settings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@given(policies())
def test_every_valid_policy_gives_a_backoff_for_its_first_failure(p: RetryPolicy) -> None:
    assert backoff(p, 1, jitter=1.0) == min(p.initial, p.maximum)


def test_terminal_states_are_exactly_succeeded_dead_canceled() -> None:
    assert {s for s in TaskState if s.terminal} == {TaskState.SUCCEEDED, TaskState.DEAD, TaskState.CANCELED}
