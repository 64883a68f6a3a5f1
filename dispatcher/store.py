"""The task store: runs, tasks, leases, events and completion in Postgres (the truth).

Every method is one transaction. Every state change a worker makes names the attempt it holds
and is fenced (:func:`dispatcher.lease.fence`) against the row it locks, so a stale attempt can
never heartbeat, emit or commit. Every wake-up is an outbox row (``queue:<name>``, payload = task
id) written in the transaction that made the task claimable; the publisher sends it later.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from dispatcher.catalog import JobCatalog, JobPolicy
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
from dispatcher.protocol import OUTCOMES, TASK_QUEUE, ClaimedTask
from dispatcher.scheduler import Firing, TriggerBook, active_versions
from dispatcher.triggers import Signal
from tracekit.errors import TraceError


class NotFound(TraceError):
    """No such run or task."""


class NotAllowed(TraceError):
    """The task's token does not allow this dataset."""


@dataclass(frozen=True, slots=True)
class NewTask:
    """A task to create: the job it runs and the incoming event that triggers it."""

    job: JobPolicy
    event_id: str
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    """An event a task emits: new data (a partition) of one of its output datasets."""

    dataset_id: str
    partition_key: str
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Output:
    """A file a task staged; it becomes visible to readers only if the attempt commits."""

    dataset_id: str
    uri: str
    rows: int
    bytes: int
    block_start: int | None = None
    block_end: int | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    task_id: uuid.UUID
    attempt: int
    outcome: str  # succeeded | failed | canceled | released
    error: str | None = None
    traceback: str | None = None
    outputs: Sequence[Output] = ()
    logs: Sequence[tuple[str, str]] = ()


@dataclass(frozen=True, slots=True)
class EmitResult:
    fence: Fence
    accepted: int = 0  # events new to the store (the rest were already there)
    tasks_created: int = 0


@dataclass(slots=True)
class Submitted:
    run_id: uuid.UUID
    created: bool  # False when the idempotency key named an existing run
    tasks: list[uuid.UUID] = field(default_factory=list)


_LOCK_TASKS = """
SELECT task_id, state, attempt, lease_expires_at, cancel_requested, failures, max_attempts,
       backoff_initial_ms, backoff_max_ms, backoff_multiplier, run_id, org_id, dag, dag_version,
       job, writes, clock_timestamp() AS now
FROM state.tasks WHERE task_id = ANY(%b::uuid[]) ORDER BY task_id FOR UPDATE
"""


# Candidates for a claim. Two statements rather than one ORDER BY (task_id = ANY(prefer)): that
# sort key cannot use the tasks_ready index, so every claim sorted all queued tasks.
_CLAIM_PREFERRED = """
SELECT task_id, concurrency_key, max_concurrency FROM state.tasks
WHERE state = 'queued' AND not_before <= clock_timestamp() AND task_id = ANY(%(prefer)s::uuid[])
  AND (concurrency_key IS NULL OR concurrency_key <> ALL(%(full)s::text[]))
  AND (%(ops)s::text[] IS NULL OR operator = ANY(%(ops)s::text[]))
  AND (%(org)s::text IS NULL OR org_id = %(org)s::text)
ORDER BY not_before, created_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
"""
_CLAIM_READY = """
SELECT task_id, concurrency_key, max_concurrency FROM state.tasks
WHERE state = 'queued' AND not_before <= clock_timestamp()
  AND (%(ops)s::text[] IS NULL OR operator = ANY(%(ops)s::text[]))
  AND (%(org)s::text IS NULL OR org_id = %(org)s::text)
  AND task_id <> ALL(%(taken)s::uuid[])  -- locked by this transaction: SKIP LOCKED keeps them
  AND (concurrency_key IS NULL OR concurrency_key <> ALL(%(full)s::text[]))
ORDER BY not_before, created_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
"""
# Jobs at their max_concurrency now: their queued tasks are not candidates (else a long backfill at
# its cap would fill every claim with tasks that cannot run and starve the other jobs).
_SATURATED = """
SELECT concurrency_key FROM state.tasks WHERE state = 'leased' AND concurrency_key IS NOT NULL
GROUP BY concurrency_key HAVING count(*) >= min(max_concurrency)
"""
_READY_PASSES = 3  # candidate rounds when some candidates fell to a job's concurrency cap


def _first(row: Any) -> Any:
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def _view(row: Mapping[str, Any]) -> LeaseView:
    return LeaseView(TaskState(row["state"]), row["attempt"], row["lease_expires_at"],
                     row["cancel_requested"])


def _policy(row: Mapping[str, Any]) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=row["max_attempts"],
        initial=timedelta(milliseconds=row["backoff_initial_ms"]),
        maximum=timedelta(milliseconds=row["backoff_max_ms"]),
        multiplier=row["backoff_multiplier"],
    )


def _wakeups(task_ids: Iterable[uuid.UUID], delay_s: float = 0.0) -> list[tuple[str, bytes, float]]:
    return [(f"queue:{TASK_QUEUE}", str(t).encode(), delay_s) for t in task_ids]


async def _enqueue(cur: psycopg.AsyncCursor[Any], wakeups: Sequence[tuple[str, bytes, float]]) -> None:
    if not wakeups:
        return
    await cur.execute(
        "INSERT INTO state.outbox (destination, payload, available_at)"
        " SELECT d, p, clock_timestamp() + make_interval(secs => s)"
        " FROM unnest(%s::text[], %s::bytea[], %s::float8[]) AS w(d, p, s)",
        ([w[0] for w in wakeups], [w[1] for w in wakeups], [w[2] for w in wakeups]),
    )
    await cur.execute("NOTIFY trace_outbox")


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
            return await self._insert_run(cur, org_id, kind, dag, dag_version, params, submitted_by, tasks,
                                          idempotency_key)

    async def create_run_in(self, cur: psycopg.AsyncCursor[Any], *, org_id: str, kind: str, dag: str,
                            dag_version: int, params: Mapping[str, Any], submitted_by: str,
                            firings: Sequence[Firing], payload: Mapping[str, Any],
                            idempotency_key: str | None = None) -> Submitted:
        """A run with one task per firing, in the caller's transaction (triggers, the API)."""
        tasks = [NewTask(f.job, f.event_id, {**payload, "config": dict(f.job.config)}) for f in firings]
        return await self._insert_run(cur, org_id, kind, dag, dag_version, params, submitted_by, tasks,
                                      idempotency_key)

    async def _insert_run(self, cur: psycopg.AsyncCursor[Any], org_id: str, kind: str, dag: str,
                          dag_version: int, params: Mapping[str, Any], submitted_by: str,
                          tasks: Sequence[NewTask], idempotency_key: str | None) -> Submitted:
        if idempotency_key is not None:
            await cur.execute("SELECT run_id FROM state.runs WHERE org_id = %s AND idempotency_key = %s",
                              (org_id, idempotency_key))
            found = await cur.fetchone()
            if found is not None:
                return Submitted(_first(found), created=False)
        await cur.execute(
            "INSERT INTO state.runs"
            " (org_id, kind, dag, dag_version, params, submitted_by, idempotency_key)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (org_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
            " RETURNING run_id",
            (org_id, kind, dag, dag_version, Jsonb(dict(params)), submitted_by, idempotency_key),
        )
        row = await cur.fetchone()
        if row is None:  # a concurrent submission with the same key won
            await cur.execute("SELECT run_id FROM state.runs WHERE org_id = %s AND idempotency_key = %s",
                              (org_id, idempotency_key))
            again = await cur.fetchone()
            if again is None:
                raise NotFound(f"run with idempotency key {idempotency_key!r} vanished")
            return Submitted(_first(again), created=False)
        run_id = _first(row)
        created = await self._create_tasks(cur, org_id, run_id, dag, dag_version, tasks)
        return Submitted(run_id, created=True, tasks=created)

    async def _create_tasks(self, cur: psycopg.AsyncCursor[Any], org_id: str, run_id: uuid.UUID, dag: str,
                            dag_version: int, tasks: Sequence[NewTask]) -> list[uuid.UUID]:
        if not tasks:
            return []
        cols: dict[str, list[Any]] = {k: [] for k in (
            "job", "operator", "event_id", "payload", "reads", "writes", "max_attempts", "b_init", "b_max",
            "b_mult", "ckey", "cmax")}
        for t in tasks:
            j = t.job
            cols["job"].append(j.job)
            cols["operator"].append(j.operator)
            cols["event_id"].append(t.event_id)
            cols["payload"].append(orjson.dumps(dict(t.payload)).decode())
            cols["reads"].append(orjson.dumps(list(j.reads)).decode())
            cols["writes"].append(orjson.dumps(list(j.writes)).decode())
            cols["max_attempts"].append(j.retry.max_attempts)
            cols["b_init"].append(int(j.retry.initial.total_seconds() * 1000))
            cols["b_max"].append(int(j.retry.maximum.total_seconds() * 1000))
            cols["b_mult"].append(j.retry.multiplier)
            cols["ckey"].append(f"{org_id}/{dag}/{j.job}" if j.max_concurrency else None)
            cols["cmax"].append(j.max_concurrency)
        await cur.execute(
            """
            INSERT INTO state.tasks (org_id, run_id, dag, dag_version, job, operator, event_id, payload,
                reads, writes, max_attempts, backoff_initial_ms, backoff_max_ms, backoff_multiplier,
                concurrency_key, max_concurrency)
            SELECT %s, %s, %s, %s, job, operator, event_id, payload,
                   ARRAY(SELECT jsonb_array_elements_text(reads)),
                   ARRAY(SELECT jsonb_array_elements_text(writes)),
                   max_attempts, b_init, b_max, b_mult, ckey, cmax
            FROM unnest(%s::text[], %s::text[], %s::text[], %s::jsonb[], %s::jsonb[], %s::jsonb[], %s::int[],
                        %s::int[], %s::int[], %s::float8[], %s::text[], %s::int[])
                 AS t(job, operator, event_id, payload, reads, writes, max_attempts, b_init, b_max, b_mult,
                      ckey, cmax)
            ON CONFLICT (org_id, dag, job, event_id) DO NOTHING
            RETURNING task_id
            """,
            (org_id, run_id, dag, dag_version, *cols.values()),
        )
        created = [_first(r) for r in await cur.fetchall()]
        await _enqueue(cur, _wakeups(created))
        return created

    # -- claiming -----------------------------------------------------------------------------

    async def claim(self, worker: str, *, limit: int, operators: Sequence[str] | None = None,
                    prefer: Sequence[uuid.UUID] = (), org_id: str | None = None) -> list[ClaimedTask]:
        """Lease up to ``limit`` ready tasks (the woken ones in ``prefer`` first; only ``org_id``'s
        when given) in one transaction; each gets attempt + 1. A job's ``max_concurrency`` is
        never exceeded."""
        if limit <= 0:
            return []
        async with self._tx() as cur:
            await cur.execute(_SATURATED)
            full = {r["concurrency_key"] for r in await cur.fetchall()}
            params: dict[str, Any] = {"ops": list(operators) if operators is not None else None,
                                      "org": org_id, "prefer": list(prefer)}
            chosen: list[uuid.UUID] = []
            seen: list[uuid.UUID] = []  # locked by this transaction already
            room: dict[str, int] = {}
            rounds = ([_CLAIM_PREFERRED] if prefer else []) + [_CLAIM_READY] * _READY_PASSES
            for query in rounds:  # the woken ones first, then the oldest ready ones
                want = limit - len(chosen)
                if want <= 0:
                    break
                params.update(limit=want, taken=seen, full=sorted(full))
                await cur.execute(query, params)
                candidates = await cur.fetchall()
                seen += [c["task_id"] for c in candidates]
                picked = await self._within_concurrency(cur, candidates, room)
                chosen += picked
                full |= {k for k, left in room.items() if left <= 0}
                if query is _CLAIM_READY and len(picked) == len(candidates):
                    break  # all taken: either enough, or nothing more is ready
            if not chosen:
                return []
            await cur.execute(
                """
                WITH leased AS (
                    UPDATE state.tasks SET state = 'leased', attempt = attempt + 1, lease_owner = %(worker)s,
                        lease_expires_at = clock_timestamp() + %(lease)s, heartbeat_at = clock_timestamp(),
                        started_at = coalesce(started_at, clock_timestamp())
                    WHERE task_id = ANY(%(ids)b::uuid[])
                    RETURNING task_id, org_id, run_id, dag, job, operator, attempt, payload, reads, writes,
                              lease_expires_at
                ), attempts AS (
                    INSERT INTO state.task_attempts (task_id, attempt, worker)
                    SELECT task_id, attempt, %(worker)s FROM leased
                )
                SELECT * FROM leased
                """,
                {"worker": worker, "lease": self.lease, "ids": chosen},
            )
            rows = await cur.fetchall()
        return [ClaimedTask.model_validate(r) for r in rows]

    async def _within_concurrency(self, cur: psycopg.AsyncCursor[Any],
                                  candidates: Sequence[Mapping[str, Any]],
                                  room: dict[str, int]) -> list[uuid.UUID]:
        """The candidates that fit their job's ``max_concurrency``; ``room`` (key -> free slots)
        carries over between the rounds of one claim."""
        limits = {c["concurrency_key"]: c["max_concurrency"] for c in candidates
                  if c["concurrency_key"] is not None and c["concurrency_key"] not in room}
        for key in sorted(limits):  # one claimer per key at a time; sorted, so no deadlock
            await cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))
            await cur.execute(
                "SELECT count(*) AS n FROM state.tasks WHERE concurrency_key = %s AND state = 'leased'",
                (key,),
            )
            row = await cur.fetchone()
            room[key] = limits[key] - int(row["n"] if row else 0)
        chosen = []
        for c in candidates:
            key = c["concurrency_key"]
            if key is None:
                chosen.append(c["task_id"])
            elif room[key] > 0:
                room[key] -= 1
                chosen.append(c["task_id"])
        return chosen

    # -- while running ------------------------------------------------------------------------

    async def heartbeat(self, task_id: uuid.UUID, attempt: int,
                        logs: Sequence[tuple[str, str]] = ()) -> tuple[Fence, datetime | None]:
        """Extend the lease of a live attempt; returns the fence and the new expiry. A canceled
        task answers ``CANCELED`` (its lease is kept so the worker can report it)."""
        async with self._tx() as cur:
            row = await self._lock_one(cur, task_id)
            verdict = fence(_view(row), attempt, row["now"])
            if verdict not in (Fence.OK, Fence.CANCELED):
                return verdict, None
            await cur.execute(
                "UPDATE state.tasks SET heartbeat_at = clock_timestamp(),"
                " lease_expires_at = clock_timestamp() + %s WHERE task_id = %s RETURNING lease_expires_at",
                (self.lease, task_id),
            )
            expires = await cur.fetchone()
            await self._logs(cur, task_id, attempt, logs)
            return verdict, expires["lease_expires_at"] if expires else None

    async def emit_events(self, task_id: uuid.UUID, attempt: int, events: Sequence[Event]) -> EmitResult:
        """Accept events of a live attempt and create the tasks they trigger (one per event and
        triggered job), idempotently: an event already accepted is skipped."""
        async with self._tx() as cur:
            row = await self._lock_one(cur, task_id)
            verdict = fence(_view(row), attempt, row["now"])
            if verdict is not Fence.OK:
                return EmitResult(verdict)
            undeclared = sorted({e.dataset_id for e in events} - set(row["writes"]))
            if undeclared:
                raise NotAllowed(f"task {task_id} may not emit events for {', '.join(undeclared)}")
            ids = [f"{task_id}/{e.dataset_id}/{e.partition_key}" for e in events]
            await cur.execute(
                """
                INSERT INTO state.task_events (event_id, org_id, run_id, producer_task_id, attempt,
                                               dataset_id, partition_key, payload)
                SELECT id, %s, %s, %s, %s, ds, pk, p
                FROM unnest(%s::text[], %s::text[], %s::text[], %s::jsonb[]) AS e(id, ds, pk, p)
                ON CONFLICT (event_id) DO NOTHING RETURNING event_id
                """,
                (row["org_id"], row["run_id"], task_id, attempt, ids, [e.dataset_id for e in events],
                 [e.partition_key for e in events], [orjson.dumps(dict(e.payload)).decode() for e in events]),
            )
            fresh = {r["event_id"] for r in await cur.fetchall()}
            accepted = [(i, e) for i, e in zip(ids, events, strict=True) if i in fresh]
            # this DAG's jobs join the run; another DAG's jobs reading the dataset get a run of their own
            mine = await self._data_tasks(cur, row, row["dag"], row["dag_version"], accepted)
            count = len(await self._create_tasks(cur, row["org_id"], row["run_id"], row["dag"],
                                                 row["dag_version"], mine))
            others = await active_versions(cur, row["org_id"]) if accepted else {}
            for dag, version in others.items():
                tasks = await self._data_tasks(cur, row, dag, version, accepted) if dag != row["dag"] else []
                if tasks:
                    run = await self._insert_run(
                        cur, row["org_id"], "data", dag, version,
                        {"producer": {"dag": row["dag"], "task_id": str(task_id), "events": len(accepted)}},
                        "dispatcher", tasks, f"data:{dag}:{accepted[0][0]}")
                    count += len(run.tasks)
            return EmitResult(Fence.OK, accepted=len(fresh), tasks_created=count)

    async def _data_tasks(self, cur: psycopg.AsyncCursor[Any], producer: Mapping[str, Any], dag: str,
                          version: int, accepted: Sequence[tuple[str, Event]]) -> list[NewTask]:
        """The tasks that new data starts in ``dag`` (one per event and triggered job)."""
        new_tasks: list[NewTask] = []
        for event_id, event in accepted:
            for firing in await self.triggers.fire(cur, producer["org_id"], dag, version,
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
        (graceful shutdown; not counted as a failure). Fenced per task, in one transaction."""
        for c in completions:
            if c.outcome not in OUTCOMES:
                raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, not {c.outcome!r}")
        verdicts: list[Fence] = []
        async with self._tx() as cur:
            await cur.execute(_LOCK_TASKS, ([c.task_id for c in completions],))
            rows = {r["task_id"]: r for r in await cur.fetchall()}
            # (task, attempt, new state or outcome, error, traceback)
            done: list[tuple[uuid.UUID, int, str, str | None, str | None]] = []
            retry: list[tuple[uuid.UUID, float, str | None, str | None]] = []
            outputs: list[tuple[Mapping[str, Any], Completion, Output]] = []
            released: list[uuid.UUID] = []
            attempts: list[tuple[uuid.UUID, int, str, str | None, str | None]] = []
            runs: set[uuid.UUID] = set()
            for c in completions:
                row = rows.get(c.task_id)
                if row is None:
                    raise NotFound(f"no task {c.task_id}")
                verdict = fence(_view(row), c.attempt, row["now"])
                if verdict is Fence.CANCELED:
                    # a live attempt of a canceled task: whatever it reports, nothing commits
                    verdicts.append(Fence.OK if c.outcome == "canceled" else Fence.CANCELED)
                    runs.add(row["run_id"])
                    attempts.append((c.task_id, c.attempt, "canceled", c.error, c.traceback))
                    done.append((c.task_id, c.attempt, "canceled", c.error, c.traceback))
                    continue
                verdicts.append(verdict)
                if verdict is not Fence.OK:
                    continue
                runs.add(row["run_id"])
                attempts.append((c.task_id, c.attempt, c.outcome, c.error, c.traceback))
                if c.outcome == "succeeded":
                    undeclared = sorted({o.dataset_id for o in c.outputs} - set(row["writes"]))
                    if undeclared:
                        raise NotAllowed(f"task {c.task_id} may not write {', '.join(undeclared)}")
                    done.append((c.task_id, c.attempt, "succeeded", None, None))
                    outputs.extend((row, c, o) for o in c.outputs)
                elif c.outcome == "canceled":
                    done.append((c.task_id, c.attempt, "canceled", c.error, c.traceback))
                elif c.outcome == "released":
                    released.append(c.task_id)
                else:
                    failures = row["failures"] + 1
                    policy = _policy(row)
                    if after_failure(policy, failures) is AfterFailure.DEAD:
                        done.append((c.task_id, c.attempt, "dead", c.error, c.traceback))
                    else:
                        delay = backoff(policy, failures).total_seconds()
                        retry.append((c.task_id, delay, c.error, c.traceback))
            await self._finish(cur, done)
            await self._retry(cur, retry)
            if released:
                await cur.execute(
                    "UPDATE state.tasks SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL,"
                    " not_before = clock_timestamp() WHERE task_id = ANY(%s)", (released,))
                await _enqueue(cur, _wakeups(released))
            if outputs:
                await cur.execute(
                    """
                    INSERT INTO state.task_outputs (task_id, org_id, run_id, attempt, dataset_id, uri, rows,
                                                    bytes, block_start, block_end)
                    SELECT * FROM unnest(%s::uuid[], %s::text[], %s::uuid[], %s::int[], %s::text[],
                                         %s::text[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])
                    ON CONFLICT DO NOTHING
                    """,
                    ([c.task_id for _, c, _ in outputs], [r["org_id"] for r, _, _ in outputs],
                     [r["run_id"] for r, _, _ in outputs], [c.attempt for _, c, _ in outputs],
                     [o.dataset_id for _, _, o in outputs], [o.uri for _, _, o in outputs],
                     [o.rows for _, _, o in outputs], [o.bytes for _, _, o in outputs],
                     [o.block_start for _, _, o in outputs], [o.block_end for _, _, o in outputs]),
                )
            if attempts:
                await cur.execute(
                    """
                    UPDATE state.task_attempts a SET finished_at = clock_timestamp(), outcome = x.outcome,
                        error = x.error, traceback = x.tb
                    FROM unnest(%b::uuid[], %b::int[], %b::text[], %b::text[], %b::text[])
                         AS x(task_id, attempt, outcome, error, tb)
                    WHERE a.task_id = x.task_id AND a.attempt = x.attempt
                    """,
                    tuple(list(col) for col in zip(*attempts, strict=True)),
                )
            accepted = {(a[0], a[1]) for a in attempts}
            for c in completions:
                if c.logs and (c.task_id, c.attempt) in accepted:
                    await self._logs(cur, c.task_id, c.attempt, c.logs)
            await self._downstream(cur, [(rows[d[0]], d[2]) for d in done])
            await self._settle_runs(cur, runs)
        return verdicts

    async def _downstream(self, cur: psycopg.AsyncCursor[Any],
                          finished: Sequence[tuple[Mapping[str, Any], str]]) -> None:
        """Tasks of the jobs that ``upstream`` triggers start when these tasks finished (in the same
        run, before it settles). A canceled run starts nothing more."""
        for row, outcome in finished:
            if outcome not in ("succeeded", "dead") or row["cancel_requested"]:
                continue
            task_id = row["task_id"]
            firings = await self.triggers.fire(cur, row["org_id"], row["dag"], row["dag_version"],
                                               Signal("upstream", row["job"], outcome), f"upstream:{task_id}")
            if firings:
                upstream = {"task_id": str(task_id), "job": row["job"], "outcome": outcome}
                await self._create_tasks(cur, row["org_id"], row["run_id"], row["dag"], row["dag_version"], [
                    NewTask(f.job, f.event_id, {"upstream": upstream, "config": dict(f.job.config)})
                    for f in firings])

    async def _finish(self, cur: psycopg.AsyncCursor[Any],
                      done: Sequence[tuple[uuid.UUID, int, str, str | None, str | None]]) -> None:
        if not done:
            return
        await cur.execute(
            """
            UPDATE state.tasks t SET state = x.state, finished_at = clock_timestamp(), lease_owner = NULL,
                lease_expires_at = NULL, failures = t.failures + (x.state = 'dead')::int,
                last_error = coalesce(x.error, t.last_error),
                last_traceback = coalesce(x.tb, t.last_traceback)
            FROM unnest(%b::uuid[], %b::text[], %b::text[], %b::text[]) AS x(task_id, state, error, tb)
            WHERE t.task_id = x.task_id
            """,
            ([d[0] for d in done], [d[2] for d in done], [d[3] for d in done], [d[4] for d in done]),
        )

    async def _retry(self, cur: psycopg.AsyncCursor[Any],
                     retry: Sequence[tuple[uuid.UUID, float, str | None, str | None]]) -> None:
        if not retry:
            return
        await cur.execute(
            """
            UPDATE state.tasks t SET state = 'queued', failures = t.failures + 1, lease_owner = NULL,
                lease_expires_at = NULL, not_before = clock_timestamp() + make_interval(secs => x.delay),
                last_error = x.error, last_traceback = x.tb
            FROM unnest(%b::uuid[], %b::float8[], %b::text[], %b::text[]) AS x(task_id, delay, error, tb)
            WHERE t.task_id = x.task_id
            """,
            ([r[0] for r in retry], [r[1] for r in retry], [r[2] for r in retry], [r[3] for r in retry]),
        )
        await _enqueue(cur, [w for r in retry for w in _wakeups([r[0]], r[1])])

    async def _settle_runs(self, cur: psycopg.AsyncCursor[Any], runs: Iterable[uuid.UUID]) -> None:
        """A run whose tasks are all terminal ends: canceled if cancel was asked, failed if a
        task is dead, else succeeded.

        The run rows are locked here (after the task rows, as everywhere): two attempts of one
        run finishing at once are serialized here, so the second sees the first's task state
        (each statement of READ COMMITTED sees what committed before it began) and the run
        cannot stay "running" with every task finished."""
        ids = sorted(set(runs))
        if not ids:
            return
        # NO KEY UPDATE, not UPDATE: the outputs inserted above hold KEY SHARE locks on their run
        # (foreign key), which UPDATE would wait on -- two completions of one run would deadlock
        await cur.execute("SELECT run_id FROM state.runs WHERE run_id = ANY(%s::uuid[]) ORDER BY run_id"
                          " FOR NO KEY UPDATE", (ids,))
        await cur.execute(
            """
            UPDATE state.runs r SET finished_at = clock_timestamp(),
                state = CASE WHEN r.state = 'canceling' THEN 'canceled'
                             WHEN EXISTS (SELECT 1 FROM state.tasks t
                                          WHERE t.run_id = r.run_id AND t.state = 'dead') THEN 'failed'
                             ELSE 'succeeded' END
            WHERE r.run_id = ANY(%s::uuid[]) AND r.state IN ('running', 'canceling')
              AND NOT EXISTS (SELECT 1 FROM state.tasks t WHERE t.run_id = r.run_id
                              AND t.state IN ('queued', 'leased'))
            """,
            (ids,),
        )

    # -- reaping and canceling ----------------------------------------------------------------

    async def reap(self, *, limit: int = 1000) -> int:
        """Take back expired leases: the attempt counts as failed (retry after a backoff or
        dead-letter). Returns how many leases were taken back."""
        async with self._tx() as cur:
            await cur.execute(
                "SELECT task_id FROM state.tasks"
                " WHERE state = 'leased' AND lease_expires_at <= clock_timestamp()"
                " ORDER BY lease_expires_at LIMIT %s FOR UPDATE SKIP LOCKED", (limit,))
            expired = [r["task_id"] for r in await cur.fetchall()]
            if not expired:
                return 0
            await cur.execute(_LOCK_TASKS, (expired,))
            done, retry, runs = [], [], set()
            attempts = []
            for row in await cur.fetchall():
                runs.add(row["run_id"])
                expired_at = row["lease_expires_at"].isoformat()
                error = f"lease expired at {expired_at}: the worker stopped heartbeating"
                attempts.append((row["task_id"], row["attempt"], "lease_expired", error))
                failures = row["failures"] + 1
                policy = _policy(row)
                if row["cancel_requested"]:
                    done.append((row["task_id"], row["attempt"], "canceled", error, None))
                elif after_failure(policy, failures) is AfterFailure.DEAD:
                    done.append((row["task_id"], row["attempt"], "dead", error, None))
                else:
                    retry.append((row["task_id"], backoff(policy, failures).total_seconds(), error, None))
            await self._finish(cur, done)
            await self._retry(cur, retry)
            await cur.execute(
                """
                UPDATE state.task_attempts a
                SET finished_at = clock_timestamp(), outcome = x.outcome, error = x.error
                FROM unnest(%s::uuid[], %s::int[], %s::text[], %s::text[])
                     AS x(task_id, attempt, outcome, error)
                WHERE a.task_id = x.task_id AND a.attempt = x.attempt
                """,
                tuple(list(col) for col in zip(*attempts, strict=True)),
            )
            await self._settle_runs(cur, runs)
            return len(expired)

    async def cancel_run(self, org_id: str, run_id: uuid.UUID) -> str:
        """Cancel a run: queued tasks end now; leased ones are told at their next heartbeat.
        Returns the run's state afterwards. Canceling a finished run changes nothing."""
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            # tasks before the run, in task order, as completion and the reaper lock them
            await cur.execute("SELECT task_id FROM state.tasks WHERE run_id = %s AND org_id = %s"
                              " AND state IN ('queued', 'leased') ORDER BY task_id FOR UPDATE",
                              (run_id, org_id))
            await cur.execute("SELECT state FROM state.runs WHERE org_id = %s AND run_id = %s"
                              " FOR NO KEY UPDATE", (org_id, run_id))
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"no run {run_id}")
            if row[0] not in ("running", "canceling"):
                return str(row[0])
            await cur.execute("UPDATE state.runs SET state = 'canceling' WHERE run_id = %s", (run_id,))
            await cur.execute(
                "UPDATE state.tasks SET state = 'canceled', finished_at = clock_timestamp(),"
                " cancel_requested = true WHERE run_id = %s AND state = 'queued'", (run_id,))
            await cur.execute(
                "UPDATE state.tasks SET cancel_requested = true WHERE run_id = %s AND state = 'leased'",
                (run_id,))
            await self._settle_runs(cur, [run_id])
            await cur.execute("SELECT state FROM state.runs WHERE run_id = %s", (run_id,))
            after = await cur.fetchone()
            return str(after[0]) if after else "canceled"

    # -- helpers ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[psycopg.AsyncCursor[dict[str, Any]]]:
        async with self.pool.connection() as conn, conn.transaction():
            async with conn.cursor(row_factory=dict_row) as cur:
                yield cur

    async def _lock_one(self, cur: psycopg.AsyncCursor[Any], task_id: uuid.UUID) -> dict[str, Any]:
        await cur.execute(_LOCK_TASKS, ([task_id],))
        row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no task {task_id}")
        return dict(row)

    async def _logs(self, cur: psycopg.AsyncCursor[Any], task_id: uuid.UUID, attempt: int,
                    logs: Sequence[tuple[str, str]]) -> None:
        if not logs:
            return
        await cur.execute(
            "INSERT INTO state.task_logs (task_id, attempt, level, message)"
            " SELECT %s, %s, unnest(%s::text[]), unnest(%s::text[])",
            (task_id, attempt, [lv for lv, _ in logs], [m[:10_000] for _, m in logs]),
        )
