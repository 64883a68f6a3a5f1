"""What ending attempts changes (dispatcher/completion.py): every plan is checked against the rules,
over generated locked tasks and completions, without a database."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from dispatcher.completion import (
    AttemptEnd,
    Completion,
    Finish,
    LockedTask,
    Output,
    Plan,
    Retry,
    plan_completions,
    plan_reap,
)
from dispatcher.errors import NotAllowed, NotFound
from dispatcher.lease import AfterFailure, Fence, LeaseView, TaskState, after_failure, backoff, fence

NOW = datetime(2025, 1, 1, tzinfo=UTC)
DATASETS = ("blocks", "logs", "transactions")
OUTCOMES = ("succeeded", "failed", "canceled", "released")

RUNS = [uuid.UUID(int=i) for i in range(1, 4)]
uuids = st.uuids(version=4)
spans = st.timedeltas(min_value=timedelta(0), max_value=timedelta(minutes=5))
ahead = spans.filter(bool).map(lambda d: NOW + d)
past = spans.map(lambda d: NOW - d)
expiries = ahead | past | st.none()  # live, run out (at NOW too), never leased
jitters = st.floats(min_value=0.0, max_value=1.0)


@st.composite
def locked_tasks(draw: st.DrawFn, *, leased: bool = False) -> LockedTask:
    # mostly live leases (the interesting case); every other state too
    state = TaskState.LEASED if leased else draw(st.just(TaskState.LEASED) | st.sampled_from(TaskState))
    expires = draw(ahead | past) if leased else draw(expiries)
    max_attempts = draw(st.integers(min_value=1, max_value=6))
    initial = draw(st.integers(min_value=1, max_value=60_000))
    return LockedTask(
        task_id=draw(uuids), run_id=draw(st.sampled_from(RUNS)), org_id="o", dag="d", dag_version=1,
        job=draw(st.sampled_from(("split", "ingest"))),
        lease=LeaseView(state, draw(st.integers(min_value=0, max_value=9)), expires, draw(st.booleans())),
        failures=draw(st.integers(min_value=0, max_value=max_attempts - 1)),
        writes=tuple(draw(st.sets(st.sampled_from(DATASETS)).map(sorted))), max_attempts=max_attempts,
        backoff_initial_ms=initial,
        backoff_max_ms=initial + draw(st.integers(min_value=0, max_value=600_000)),
        backoff_multiplier=draw(st.floats(min_value=1.0, max_value=10.0)),
    )


@st.composite
def completion_of(draw: st.DrawFn, task: LockedTask) -> Completion:
    mine = task.lease.attempt
    attempt = draw(st.just(mine) | st.sampled_from((mine + 1, max(mine - 1, 0))))  # its own, or stale
    # outputs of the datasets the task writes (the undeclared case has its own test)
    outputs = draw(st.lists(st.sampled_from(task.writes).map(lambda d: Output(d, f"file:///{d}", 1, 1)),
                            max_size=3)) if task.writes else []
    return Completion(task.task_id, attempt, draw(st.sampled_from(OUTCOMES)),
                      error=draw(st.none() | st.just("boom")), traceback=draw(st.none() | st.just("tb")),
                      outputs=outputs, logs=draw(st.lists(st.just(("info", "line")), max_size=2)))


@st.composite
def batches(draw: st.DrawFn) -> tuple[dict[uuid.UUID, LockedTask], list[Completion]]:
    tasks = draw(st.lists(locked_tasks(), min_size=1, max_size=6, unique_by=lambda t: t.task_id))
    completions = [draw(completion_of(t)) for t in tasks]
    return {t.task_id: t for t in tasks}, draw(st.permutations(completions))


def _touched(plan: Plan) -> set[uuid.UUID]:
    """Tasks the plan changes anything of."""
    return ({f.task_id for f in plan.finish} | {r.task_id for r in plan.retry} | set(plan.release)
            | {c.task.task_id for c in plan.outputs} | {a.task_id for a in plan.attempts}
            | {task_id for task_id, _, _ in plan.logs})


# -- verdicts ------------------------------------------------------------------------------------


@given(batches(), jitters)
def test_every_completion_gets_exactly_one_verdict_the_fence_s(
    batch: tuple[dict[uuid.UUID, LockedTask], list[Completion]], jitter: float
) -> None:
    tasks, completions = batch
    plan = plan_completions(tasks, completions, NOW, jitter=jitter)
    assert len(plan.verdicts) == len(completions)
    for c, verdict in zip(completions, plan.verdicts, strict=True):
        fenced = fence(tasks[c.task_id].lease, c.attempt, NOW)
        if fenced is Fence.CANCELED:  # a canceled task's report of "canceled" is the expected answer
            assert verdict is (Fence.OK if c.outcome == "canceled" else Fence.CANCELED)
        else:
            assert verdict is fenced


@given(batches(), jitters)
def test_a_stale_expired_or_finished_attempt_changes_nothing(
    batch: tuple[dict[uuid.UUID, LockedTask], list[Completion]], jitter: float
) -> None:
    tasks, completions = batch
    plan = plan_completions(tasks, completions, NOW, jitter=jitter)
    live = {c.task_id for c in completions
            if fence(tasks[c.task_id].lease, c.attempt, NOW) in (Fence.OK, Fence.CANCELED)}
    assert _touched(plan) <= live
    assert set(plan.runs) == {tasks[t].run_id for t in live}
    assert list(plan.runs) == sorted(plan.runs)


@given(batches(), jitters)
def test_each_live_attempt_ends_once_in_one_way(
    batch: tuple[dict[uuid.UUID, LockedTask], list[Completion]], jitter: float
) -> None:
    tasks, completions = batch
    plan = plan_completions(tasks, completions, NOW, jitter=jitter)
    ends = [f.task_id for f in plan.finish] + [r.task_id for r in plan.retry] + list(plan.release)
    assert sorted(ends) == sorted(a.task_id for a in plan.attempts)  # one end per closed attempt
    assert len(set(ends)) == len(ends)
    for a in plan.attempts:
        assert a.attempt == tasks[a.task_id].lease.attempt


# -- outcomes ------------------------------------------------------------------------------------


@given(batches(), jitters)
def test_a_canceled_task_never_commits_outputs_and_ends_canceled(
    batch: tuple[dict[uuid.UUID, LockedTask], list[Completion]], jitter: float
) -> None:
    tasks, completions = batch
    plan = plan_completions(tasks, completions, NOW, jitter=jitter)
    committed = {c.task.task_id for c in plan.outputs}
    for c in completions:
        if fence(tasks[c.task_id].lease, c.attempt, NOW) is Fence.CANCELED:
            assert c.task_id not in committed
            assert Finish(c.task_id, c.attempt, TaskState.CANCELED, c.error, c.traceback) in plan.finish
            assert AttemptEnd(c.task_id, c.attempt, "canceled", c.error, c.traceback) in plan.attempts


@given(batches(), jitters)
def test_live_attempts_end_as_they_report(
    batch: tuple[dict[uuid.UUID, LockedTask], list[Completion]], jitter: float
) -> None:
    tasks, completions = batch
    plan = plan_completions(tasks, completions, NOW, jitter=jitter)
    for c in completions:
        task = tasks[c.task_id]
        if fence(task.lease, c.attempt, NOW) is not Fence.OK:
            continue
        assert AttemptEnd(c.task_id, c.attempt, c.outcome, c.error, c.traceback) in plan.attempts
        outputs = [x.output for x in plan.outputs if x.task.task_id == c.task_id]
        assert outputs == (list(c.outputs) if c.outcome == "succeeded" else [])
        if c.outcome == "succeeded":
            assert Finish(c.task_id, c.attempt, TaskState.SUCCEEDED) in plan.finish
        elif c.outcome == "canceled":
            assert Finish(c.task_id, c.attempt, TaskState.CANCELED, c.error, c.traceback) in plan.finish
        elif c.outcome == "released":  # handed back: no failure counted, nothing finished
            assert c.task_id in plan.release
            assert c.task_id not in {f.task_id for f in plan.finish} | {r.task_id for r in plan.retry}
        else:
            _check_failure(task, c, plan, jitter)


def _check_failure(task: LockedTask, c: Completion, plan: Plan, jitter: float) -> None:
    failures = task.failures + 1
    if after_failure(task.policy, failures) is AfterFailure.DEAD:
        assert failures >= task.max_attempts
        assert Finish(c.task_id, c.attempt, TaskState.DEAD, c.error, c.traceback) in plan.finish
    else:
        assert failures < task.max_attempts
        delay = backoff(task.policy, failures, jitter=jitter)
        assert Retry(c.task_id, delay, c.error, c.traceback) in plan.retry


@given(batches(), jitters)
def test_logs_are_kept_of_accepted_attempts_only(
    batch: tuple[dict[uuid.UUID, LockedTask], list[Completion]], jitter: float
) -> None:
    tasks, completions = batch
    plan = plan_completions(tasks, completions, NOW, jitter=jitter)
    accepted = {(a.task_id, a.attempt) for a in plan.attempts}
    assert [(t, a) for t, a, _ in plan.logs] == [(c.task_id, c.attempt) for c in completions
                                                 if c.logs and (c.task_id, c.attempt) in accepted]


@given(batches(), jitters)
def test_downstream_jobs_start_on_success_or_death_outside_canceled_runs(
    batch: tuple[dict[uuid.UUID, LockedTask], list[Completion]], jitter: float
) -> None:
    tasks, completions = batch
    plan = plan_completions(tasks, completions, NOW, jitter=jitter)
    assert [(t.task_id, s) for t, s in plan.upstream] == [
        (f.task_id, f.state) for f in plan.finish
        if f.state in (TaskState.SUCCEEDED, TaskState.DEAD) and not tasks[f.task_id].lease.cancel_requested]


# -- refusals ------------------------------------------------------------------------------------


@given(locked_tasks(leased=True), st.sampled_from(DATASETS))
def test_outputs_of_an_undeclared_dataset_are_refused(task: LockedTask, dataset: str) -> None:
    # a live attempt of a task that does not declare `dataset` (built, not filtered: filtering
    # threw away most draws and failed hypothesis's health check)
    task = replace(task, lease=replace(task.lease, lease_expires_at=NOW + timedelta(seconds=5),
                                       cancel_requested=False),
                   writes=tuple(d for d in task.writes if d != dataset))
    done = Completion(task.task_id, task.lease.attempt, "succeeded",
                      outputs=[Output(dataset, "file:///x", 1, 1)])
    with pytest.raises(NotAllowed, match=f"may not write {dataset}"):
        plan_completions({task.task_id: task}, [done], NOW)


@given(locked_tasks(), uuids)
def test_a_completion_of_an_unknown_task_is_not_found(task: LockedTask, other: uuid.UUID) -> None:
    assume(other != task.task_id)
    with pytest.raises(NotFound, match=str(other)):
        plan_completions({task.task_id: task}, [Completion(other, 1, "succeeded")], NOW)


def test_an_unknown_outcome_is_refused() -> None:
    with pytest.raises(ValueError, match="outcome must be one of succeeded, failed, canceled, released"):
        plan_completions({}, [Completion(uuid.uuid4(), 1, "finished")], NOW)


# -- the reaper ----------------------------------------------------------------------------------


@given(st.lists(locked_tasks(leased=True), max_size=6, unique_by=lambda t: t.task_id), jitters)
def test_a_lost_lease_is_a_failed_attempt_or_ends_a_canceled_task(tasks: list[LockedTask],
                                                                  jitter: float) -> None:
    plan = plan_reap(tasks, jitter=jitter)
    assert plan.verdicts == () and plan.outputs == () and plan.release == () and plan.logs == ()
    assert set(plan.runs) == {t.run_id for t in tasks}
    for task in tasks:
        at = task.lease.lease_expires_at
        assert at is not None
        error = f"lease expired at {at.isoformat()}: the worker stopped heartbeating"
        attempt = task.lease.attempt
        assert AttemptEnd(task.task_id, attempt, "lease_expired", error) in plan.attempts
        if task.lease.cancel_requested:
            assert Finish(task.task_id, attempt, TaskState.CANCELED, error) in plan.finish
        else:
            _check_failure(task, Completion(task.task_id, attempt, "failed", error), plan, jitter)
    assert len(plan.finish) + len(plan.retry) == len(tasks)
