"""The task store: runs, tasks, leases, events and completion in Postgres (the truth).

Every method is one transaction. Every state change a worker makes names the attempt it holds
and is fenced (:func:`dispatcher.lease.fence`) against the row it locks, so a stale attempt can
never heartbeat, emit or commit. Every wake-up is an outbox row (``queue:<name>``, payload = task
id) written in the transaction that made the task claimable; the publisher sends it later.

The steps live by concept: runs and task creation in :mod:`dispatcher.runs`, claims and leases in
:mod:`dispatcher.claims`, what completing (and reaping) changes in :mod:`dispatcher.completion`
(pure: this module locks the rows, asks for the plan and writes it).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from dispatcher import claims, runs
from dispatcher.catalog import JobCatalog, active_versions
from dispatcher.completion import Completion, LockedTask, Plan, check_outcomes, plan_completions, plan_reap
from dispatcher.errors import NotAllowed, NotFound
from dispatcher.lease import Fence, LeaseView, TaskState, fence
from dispatcher.protocol import ClaimedTask
from dispatcher.runs import NewTask, Submitted
from dispatcher.trigger_book import Firing, TriggerBook
from dispatcher.triggers import Signal
from tracekit.db.queries import load_queries

_TASKS = load_queries("dispatcher.sql", "tasks.sql")
_EVENTS = load_queries("dispatcher.sql", "events.sql")

Cursor = psycopg.AsyncCursor[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Event:
    """An event a task emits: new data (a partition) of one of its output datasets."""

    dataset_id: str
    partition_key: str
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class EmitResult:
    fence: Fence
    accepted: int = 0  # events new to the store (the rest were already there)
    tasks_created: int = 0


class TaskStore:
    def __init__(self, pool: AsyncConnectionPool[Any], catalog: JobCatalog, *,
                 lease: timedelta = timedelta(seconds=30)) -> None:
        self.pool = pool
        self.catalog = catalog
        self.lease = lease
        self.triggers = TriggerBook(catalog)

    # -- submission ---------------------------------------------------------------------------

    async def submit_run(self, *, org_id: str, kind: str, dag: str, dag_version: int,
                         params: Mapping[str, Any], submitted_by: str, tasks: Sequence[NewTask],
                         idempotency_key: str | None = None) -> Submitted:
        """Create a run and its first tasks (and their wake-ups) atomically. With an
        ``idempotency_key`` already used by this org, returns that run instead."""
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            return await runs.insert_run(cur, org_id=org_id, kind=kind, dag=dag, dag_version=dag_version,
                                         params=params, submitted_by=submitted_by, tasks=tasks,
                                         idempotency_key=idempotency_key)

    async def create_run_in(self, cur: psycopg.AsyncCursor[Any], *, org_id: str, kind: str, dag: str,
                            dag_version: int, params: Mapping[str, Any], submitted_by: str,
                            firings: Sequence[Firing], payload: Mapping[str, Any],
                            idempotency_key: str | None = None) -> Submitted:
        """A run with one task per firing, in the caller's transaction (triggers, the API). The
        versioned datasets its jobs read are pinned at their current versions (``params.inputs``,
        also in a payload carrying the params) unless the caller pinned them."""
        reads = sorted({dataset for firing in firings for dataset in firing.job.reads})
        if reads and "inputs" not in params:
            pinned = await runs.pin_inputs(cur, org_id, reads)
            if pinned:
                params = {**params, "inputs": pinned}
                if "params" in payload:
                    payload = {**payload, "params": params}
        return await runs.insert_run(cur, org_id=org_id, kind=kind, dag=dag, dag_version=dag_version,
                                     params=params, submitted_by=submitted_by,
                                     tasks=runs.tasks_of(firings, payload), idempotency_key=idempotency_key)

    async def active_versions(self, org_id: str) -> dict[str, int]:
        """The org's DAGs and their active version, by name."""
        async with self.pool.connection() as conn, conn.cursor() as cur:
            return await active_versions(cur, org_id)

    async def run_params(self, run_id: uuid.UUID) -> Any:
        """The parameters a run was submitted with (None: no such run)."""
        async with self.pool.connection() as conn, conn.cursor() as cur:
            return await runs.params_of(cur, run_id)

    # -- claiming and running -----------------------------------------------------------------

    async def claim(self, worker: str, *, limit: int, operators: Sequence[str] | None = None,
                    prefer: Sequence[uuid.UUID] = (), org_id: str | None = None) -> list[ClaimedTask]:
        """Lease up to ``limit`` ready tasks (the woken ones in ``prefer`` first; only ``org_id``'s
        when given) in one transaction; each gets attempt + 1. A job's ``max_concurrency`` is
        never exceeded."""
        if limit <= 0:
            return []
        async with self._tx() as cur:
            return await claims.claim(cur, worker, self.lease, limit=limit, operators=operators,
                                      prefer=prefer, org_id=org_id)

    async def heartbeat(self, task_id: uuid.UUID, attempt: int,
                        logs: Sequence[tuple[str, str]] = ()) -> tuple[Fence, datetime | None]:
        """Extend the lease of a live attempt; returns the fence and the new expiry. A canceled
        task answers ``CANCELED`` (its lease is kept so the worker can report it)."""
        async with self._tx() as cur:
            task, now = await self._lock_one(cur, task_id)
            verdict = fence(task.lease, attempt, now)
            if verdict not in (Fence.OK, Fence.CANCELED):
                return verdict, None
            expires = await claims.renew(cur, task_id, self.lease)
            await _logs(cur, task_id, attempt, logs)
            return verdict, expires

    async def emit_events(self, task_id: uuid.UUID, attempt: int, events: Sequence[Event]) -> EmitResult:
        """Accept events of a live attempt and create the tasks they trigger (one per event and
        triggered job), idempotently: an event already accepted is skipped."""
        async with self._tx() as cur:
            task, now = await self._lock_one(cur, task_id)
            verdict = fence(task.lease, attempt, now)
            if verdict is not Fence.OK:
                return EmitResult(verdict)
            undeclared = sorted({e.dataset_id for e in events} - set(task.writes))
            if undeclared:
                raise NotAllowed(f"task {task_id} may not emit events for {', '.join(undeclared)}")
            ids = [f"{task_id}/{e.dataset_id}/{e.partition_key}" for e in events]
            await cur.execute(
                _EVENTS.sql("insert_task_events"),
                (task.org_id, task.run_id, task_id, attempt, ids, [e.dataset_id for e in events],
                 [e.partition_key for e in events], [orjson.dumps(dict(e.payload)).decode() for e in events]),
            )
            fresh = {r["event_id"] for r in await cur.fetchall()}
            accepted = [(i, e) for i, e in zip(ids, events, strict=True) if i in fresh]
            # this DAG's jobs join the run; another DAG's jobs reading the dataset get a run of their own
            org, dag, version = task.org_id, task.dag, task.dag_version
            mine = await self._data_tasks(cur, org, dag, version, accepted)
            count = len(await runs.create_tasks(cur, org, task.run_id, dag, version, mine))
            others = await active_versions(cur, org) if accepted else {}
            producer = {"dag": dag, "task_id": str(task_id), "events": len(accepted)}
            for other, other_version in others.items():
                if other == dag:
                    continue
                tasks = await self._data_tasks(cur, org, other, other_version, accepted)
                if tasks:
                    run = await runs.insert_run(
                        cur, org_id=org, kind="data", dag=other, dag_version=other_version,
                        params={"producer": producer}, submitted_by="dispatcher", tasks=tasks,
                        idempotency_key=f"data:{other}:{accepted[0][0]}")
                    count += len(run.tasks)
            return EmitResult(Fence.OK, accepted=len(fresh), tasks_created=count)

    async def _data_tasks(self, cur: Cursor, org_id: str, dag: str, version: int,
                          accepted: Sequence[tuple[str, Event]]) -> list[NewTask]:
        """The tasks that new data starts in ``dag`` (one per event and triggered job)."""
        new_tasks: list[NewTask] = []
        for event_id, event in accepted:
            for firing in await self.triggers.fire(cur, org_id, dag, version,
                                                   Signal("dataset", event.dataset_id), event_id):
                payload = {"event": dict(event.payload), "dataset_id": event.dataset_id,
                           "partition_key": event.partition_key, "config": dict(firing.job.config)}
                new_tasks.append(NewTask(firing.job, firing.event_id, payload))
        return new_tasks

    # -- completion ---------------------------------------------------------------------------

    async def complete(self, completion: Completion) -> Fence:
        return (await self.complete_many([completion]))[0]

    async def complete_many(self, completions: Sequence[Completion]) -> list[Fence]:
        """End attempts: ``succeeded`` commits the outputs, ``failed`` retries after a backoff or
        dead-letters, ``canceled`` acknowledges a cancel, ``released`` hands the task back
        (graceful shutdown; not counted as a failure). Fenced per task, in one transaction
        (the rules: :mod:`dispatcher.completion`)."""
        check_outcomes(completions)
        async with self._tx() as cur:
            tasks, now = await self._lock(cur, [c.task_id for c in completions])
            # no row locked: none of the tasks exists, and the plan says so (the time is not read)
            plan = plan_completions(tasks, completions, now or datetime.now(UTC))
            await self._write(cur, plan)
            await self._downstream(cur, plan.upstream)
            await runs.settle(cur, plan.runs)
        return list(plan.verdicts)

    async def reap(self, *, limit: int = 1000) -> int:
        """Take back expired leases: the attempt counts as failed (retry after a backoff or
        dead-letter). Returns how many leases were taken back."""
        async with self._tx() as cur:
            await cur.execute(_TASKS.sql("expired_leases"), (limit,))
            expired = [r["task_id"] for r in await cur.fetchall()]
            if not expired:
                return 0
            tasks, _ = await self._lock(cur, expired)
            plan = plan_reap(list(tasks.values()))
            await self._write(cur, plan)
            await runs.settle(cur, plan.runs)
            return len(expired)

    async def _write(self, cur: Cursor, plan: Plan) -> None:
        """The plan's changes of tasks, attempts, outputs and logs (and the wake-ups of the tasks
        queued again)."""
        if plan.finish:
            await cur.execute(_TASKS.sql("finish"), (
                [f.task_id for f in plan.finish], [f.state.value for f in plan.finish],
                [f.error for f in plan.finish], [f.traceback for f in plan.finish]))
        if plan.retry:
            await cur.execute(_TASKS.sql("retry"), (
                [r.task_id for r in plan.retry], [r.delay.total_seconds() for r in plan.retry],
                [r.error for r in plan.retry], [r.traceback for r in plan.retry]))
            await runs.wake(cur, [r.task_id for r in plan.retry],
                            [r.delay.total_seconds() for r in plan.retry])
        if plan.release:
            await cur.execute(_TASKS.sql("release"), (list(plan.release),))
            await runs.wake(cur, plan.release)
        if plan.outputs:
            o = plan.outputs
            await cur.execute(_TASKS.sql("insert_outputs"), (
                [c.task.task_id for c in o], [c.task.org_id for c in o], [c.task.run_id for c in o],
                [c.attempt for c in o], [c.output.dataset_id for c in o], [c.output.uri for c in o],
                [c.output.rows for c in o], [c.output.bytes for c in o], [c.output.block_start for c in o],
                [c.output.block_end for c in o], [c.output.sha256 for c in o],
                [None if c.output.metadata is None else Jsonb(dict(c.output.metadata)) for c in o]))
        if plan.attempts:
            a = plan.attempts
            await cur.execute(_TASKS.sql("close_attempts"), (
                [x.task_id for x in a], [x.attempt for x in a], [x.outcome for x in a], [x.error for x in a],
                [x.traceback for x in a]))
        for task_id, attempt, logs in plan.logs:
            await _logs(cur, task_id, attempt, logs)

    async def _downstream(self, cur: Cursor, finished: Sequence[tuple[LockedTask, TaskState]]) -> None:
        """Tasks of the jobs that ``upstream`` triggers start when these tasks finished (in the same
        run, before it settles)."""
        for task, state in finished:
            outcome = state.value
            firings = await self.triggers.fire(cur, task.org_id, task.dag, task.dag_version,
                                               Signal("upstream", task.job, outcome),
                                               f"upstream:{task.task_id}")
            if firings:
                upstream = {"task_id": str(task.task_id), "job": task.job, "outcome": outcome}
                await runs.create_tasks(cur, task.org_id, task.run_id, task.dag, task.dag_version, [
                    NewTask(f.job, f.event_id, {"upstream": upstream, "config": dict(f.job.config)})
                    for f in firings])

    # -- canceling ----------------------------------------------------------------------------

    async def cancel_run(self, org_id: str, run_id: uuid.UUID) -> str:
        """Cancel a run: queued tasks end now; leased ones are told at their next heartbeat.
        Returns the run's state afterwards. Canceling a finished run changes nothing."""
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            return await runs.cancel(cur, org_id, run_id)

    # -- helpers ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[Cursor]:
        async with self.pool.connection() as conn, conn.transaction():
            async with conn.cursor(row_factory=dict_row) as cur:
                yield cur

    async def _lock(self, cur: Cursor, task_ids: Sequence[uuid.UUID]
                    ) -> tuple[dict[uuid.UUID, LockedTask], datetime | None]:
        """Lock the tasks (in task order); returns them and the time of the lock."""
        await cur.execute(_TASKS.sql("lock_tasks"), (list(task_ids),))
        rows = await cur.fetchall()
        return {r["task_id"]: _locked(r) for r in rows}, max((r["now"] for r in rows), default=None)

    async def _lock_one(self, cur: Cursor, task_id: uuid.UUID) -> tuple[LockedTask, datetime]:
        tasks, now = await self._lock(cur, [task_id])
        if task_id not in tasks or now is None:
            raise NotFound(f"no task {task_id}")
        return tasks[task_id], now


def _locked(row: Mapping[str, Any]) -> LockedTask:
    return LockedTask(
        task_id=row["task_id"], run_id=row["run_id"], org_id=row["org_id"], dag=row["dag"],
        dag_version=row["dag_version"], job=row["job"],
        lease=LeaseView(TaskState(row["state"]), row["attempt"], row["lease_expires_at"],
                        row["cancel_requested"]),
        failures=row["failures"], writes=tuple(row["writes"]), max_attempts=row["max_attempts"],
        backoff_initial_ms=row["backoff_initial_ms"], backoff_max_ms=row["backoff_max_ms"],
        backoff_multiplier=row["backoff_multiplier"],
    )


async def _logs(cur: Cursor, task_id: uuid.UUID, attempt: int, logs: Sequence[tuple[str, str]]) -> None:
    if not logs:
        return
    await cur.execute(_TASKS.sql("insert_logs"),
                      (task_id, attempt, [lv for lv, _ in logs], [m[:10_000] for _, m in logs]))
