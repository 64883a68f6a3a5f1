"""The task store on real Postgres: claims, fencing, retries, dead letters, reaping, cancel, events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from dispatcher.catalog import JobPolicy, StaticJobCatalog
from dispatcher.completion import Completion, Output
from dispatcher.lease import Fence, RetryPolicy
from dispatcher.runs import NewTask
from dispatcher.store import Event, TaskStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FAST = RetryPolicy(max_attempts=3, initial=timedelta(milliseconds=10), maximum=timedelta(milliseconds=20))
SPLIT = JobPolicy("split", "range_splitter", writes=("chunks",), retry=FAST)
INGEST = JobPolicy("ingest", "cryo_ingest", reads=("chunks",), writes=("blocks",), max_concurrency=2,
                   retry=FAST, triggers=({"dataset": "chunks"},), config={"engine": "rpc"})


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[TaskStore]:
    async with AsyncConnectionPool(pg_url, min_size=1, max_size=8, open=False) as pool:
        yield TaskStore(pool, StaticJobCatalog({"split": SPLIT, "ingest": INGEST}),
                        lease=timedelta(seconds=5))


@pytest.fixture
def org() -> str:
    """Each test's own org: claims see only its tasks, whatever other tests left in the database."""
    return f"org-{uuid.uuid4().hex[:8]}"


async def _run(store: TaskStore, *, org: str, n: int = 1,
               job: JobPolicy = SPLIT) -> tuple[uuid.UUID, list[uuid.UUID]]:
    tag = uuid.uuid4().hex
    submitted = await store.submit_run(
        org_id=org, kind="test", dag=f"dag_{tag}", dag_version=1, params={"n": n}, submitted_by="t",
        tasks=[NewTask(job, f"e{i}", {"i": i}) for i in range(n)],
    )
    return submitted.run_id, submitted.tasks


async def _one(pg_url: str, sql: str, *args: Any) -> Any:
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        row = await (await conn.execute(sql, args)).fetchone()
        return None if row is None else (row[0] if len(row) == 1 else row)


async def test_a_task_is_leased_once_however_many_wakeups_and_claimers(
    store: TaskStore, pg_url: str, org: str
) -> None:
    _, (task,) = await _run(store, org=org)
    claims = await asyncio.gather(*(store.claim(f"w{i}", limit=5, prefer=[task], org_id=org)
                                    for i in range(8)))
    winners = [c for batch in claims for c in batch if c.task_id == task]
    assert len(winners) == 1
    assert winners[0].attempt == 1
    assert await _one(pg_url, "SELECT count(*) FROM state.outbox WHERE payload = %s", str(task).encode()) == 1


async def test_stale_attempt_cannot_heartbeat_emit_or_complete(
    store: TaskStore, pg_url: str, org: str
) -> None:
    _, (task,) = await _run(store, org=org)
    (first,) = await store.claim("w1", limit=1, prefer=[task], org_id=org)
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:  # the lease runs out
        await conn.execute("UPDATE state.tasks SET lease_expires_at = now() - interval '1s'"
                           " WHERE task_id = %s", (task,))
    assert (await store.heartbeat(task, first.attempt))[0] is Fence.EXPIRED
    assert await store.reap() >= 1
    await asyncio.sleep(0.05)  # backoff
    (second,) = await store.claim("w2", limit=1, prefer=[task], org_id=org)
    assert second.attempt == first.attempt + 1
    assert (await store.heartbeat(task, first.attempt))[0] is Fence.STALE
    emitted = await store.emit_events(task, first.attempt, [Event("chunks", "0", {"start": 0})])
    assert emitted.fence is Fence.STALE
    assert await store.complete(Completion(task, first.attempt, "succeeded",
                                           outputs=[Output("chunks", "file:///stale", 1, 1)])) is Fence.STALE
    assert await _one(pg_url, "SELECT count(*) FROM state.task_outputs WHERE task_id = %s", task) == 0
    assert await _one(pg_url, "SELECT count(*) FROM state.task_events WHERE producer_task_id = %s", task) == 0
    assert await store.complete(Completion(task, second.attempt, "succeeded")) is Fence.OK
    assert await _one(pg_url, "SELECT state FROM state.tasks WHERE task_id = %s", task) == "succeeded"


async def test_failures_retry_with_backoff_then_dead_letter_with_error(
    store: TaskStore, pg_url: str, org: str
) -> None:
    run_id, (task,) = await _run(store, org=org)
    for attempt in range(1, 4):
        claimed: list[Any] = []
        for _ in range(100):
            claimed = await store.claim("w", limit=1, prefer=[task], org_id=org)
            if claimed:
                break
            await asyncio.sleep(0.01)
        assert claimed and claimed[0].attempt == attempt
        assert await store.complete(Completion(task, attempt, "failed", error=f"boom {attempt}",
                                               traceback="Traceback ...")) is Fence.OK
    state, failures, error = await _one(pg_url, "SELECT state, failures, last_error FROM state.tasks"
                                                " WHERE task_id = %s", task)
    assert (state, failures, error) == ("dead", 3, "boom 3")
    assert await _one(pg_url, "SELECT state FROM state.runs WHERE run_id = %s", run_id) == "failed"
    assert await _one(pg_url, "SELECT count(*) FROM state.task_attempts WHERE task_id = %s"
                              " AND outcome = 'failed'", task) == 3


async def test_events_create_one_task_each_idempotently_and_concurrency_is_capped(
    store: TaskStore, pg_url: str, org: str) -> None:
    run_id, (task,) = await _run(store, org=org)
    (split,) = await store.claim("w", limit=1, prefer=[task], org_id=org)
    events = [Event("chunks", f"{i:08d}", {"start": i * 10, "end": i * 10 + 9}) for i in range(5)]
    first = await store.emit_events(task, split.attempt, events)
    again = await store.emit_events(task, split.attempt, events)
    assert (first.accepted, first.tasks_created) == (5, 5)
    assert (again.accepted, again.tasks_created) == (0, 0)
    assert await store.complete(Completion(task, split.attempt, "succeeded")) is Fence.OK
    assert await _one(pg_url, "SELECT state FROM state.runs WHERE run_id = %s", run_id) == "running"
    claimed = await store.claim("w", limit=10, operators=["cryo_ingest"], org_id=org)
    assert len(claimed) == 2  # max_concurrency
    assert {c.payload["config"]["engine"] for c in claimed} == {"rpc"}
    for c in claimed:
        await store.complete(Completion(c.task_id, c.attempt, "succeeded",
                                        outputs=[Output("blocks", f"file:///{c.task_id}", 10, 100, 0, 9)]))
    done = 2
    while done < 5:
        batch = await store.claim("w", limit=10, operators=["cryo_ingest"], org_id=org)
        assert 0 < len(batch) <= 2
        for c in batch:
            await store.complete(Completion(c.task_id, c.attempt, "succeeded"))
        done += len(batch)
    assert await _one(pg_url, "SELECT state FROM state.runs WHERE run_id = %s", run_id) == "succeeded"


async def test_a_job_at_its_concurrency_cap_does_not_starve_other_jobs(store: TaskStore, org: str) -> None:
    _, capped = await _run(store, n=6, job=INGEST, org=org)  # older, and capped at 2 running
    first = await store.claim("w", limit=2, org_id=org)
    assert {c.task_id for c in first} == set(capped[:2])
    _, (other,) = await _run(store, org=org)
    # the four older queued ingest tasks cannot run; the claim must reach past them
    assert [c.task_id for c in await store.claim("w", limit=2, org_id=org)] == [other]
    assert await store.claim("w", limit=4, org_id=org) == []
    await store.complete(Completion(first[0].task_id, first[0].attempt, "succeeded"))
    assert [c.task_id for c in await store.claim("w", limit=4, org_id=org)] == [capped[2]]


async def test_tasks_of_one_run_completing_at_once_with_outputs_never_deadlock(
    store: TaskStore, pg_url: str, org: str
) -> None:
    job = JobPolicy("write", "noop", writes=("blocks",), retry=FAST)
    for _ in range(5):
        run_id, _ = await _run(store, n=6, job=job, org=org)
        claimed = await store.claim("w", limit=6, org_id=org)
        assert len(claimed) == 6
        verdicts = await asyncio.gather(*(
            store.complete(Completion(c.task_id, c.attempt, "succeeded",
                                      outputs=[Output("blocks", f"file:///{c.task_id}", 10, 100, 0, 9)]))
            for c in claimed))
        assert verdicts == [Fence.OK] * 6
        assert await _one(pg_url, "SELECT state FROM state.runs WHERE run_id = %s", run_id) == "succeeded"
        assert await _one(pg_url, "SELECT count(*) FROM state.task_outputs WHERE run_id = %s", run_id) == 6


async def test_cancel_ends_queued_tasks_and_tells_running_ones(
    store: TaskStore, pg_url: str, org: str
) -> None:
    run_id, tasks = await _run(store, n=3, org=org)
    (running,) = await store.claim("w", limit=1, prefer=[tasks[0]], org_id=org)
    assert await store.cancel_run(org, run_id) == "canceling"
    assert await store.claim("w", limit=10, prefer=tasks[1:], org_id=org) == []
    assert (await store.heartbeat(running.task_id, running.attempt))[0] is Fence.CANCELED
    verdict = await store.complete(Completion(running.task_id, running.attempt, "succeeded",
                                              outputs=[Output("chunks", "file:///x", 1, 1)]))
    assert verdict is Fence.CANCELED
    assert await _one(pg_url, "SELECT count(*) FROM state.task_outputs WHERE run_id = %s", run_id) == 0
    assert await _one(pg_url, "SELECT state FROM state.runs WHERE run_id = %s", run_id) == "canceled"


async def test_release_hands_the_task_back_without_counting_a_failure(
    store: TaskStore, pg_url: str, org: str
) -> None:
    _, (task,) = await _run(store, org=org)
    (c,) = await store.claim("w", limit=1, prefer=[task], org_id=org)
    assert await store.complete(Completion(task, c.attempt, "released")) is Fence.OK
    (again,) = await store.claim("w2", limit=1, prefer=[task], org_id=org)
    assert again.attempt == c.attempt + 1
    assert await _one(pg_url, "SELECT failures FROM state.tasks WHERE task_id = %s", task) == 0


async def test_idempotency_key_returns_the_same_run(store: TaskStore) -> None:
    key = uuid.uuid4().hex
    kwargs: dict[str, Any] = {"org_id": "default", "kind": "t", "dag": "d", "dag_version": 1, "params": {},
                              "submitted_by": "t", "tasks": [NewTask(SPLIT, f"k{key}", {})],
                              "idempotency_key": key}
    a, b = await asyncio.gather(store.submit_run(**kwargs), store.submit_run(**kwargs))
    assert a.run_id == b.run_id
    assert sorted([a.created, b.created]) == [False, True]
