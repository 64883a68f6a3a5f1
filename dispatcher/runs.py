"""Runs and their tasks in Postgres, inside the caller's transaction.

A run is created with its first tasks, and every task with its wake-up (an outbox row
``queue:tasks`` whose payload is the task id, sent by the publisher after the commit). A run
settles when its last task ends; a cancel ends its queued tasks and tells its leased ones. The
SQL is in ``dispatcher/sql/runs.sql`` and ``tasks.sql``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from dispatcher.catalog import JobPolicy
from dispatcher.errors import NotFound
from dispatcher.protocol import TASK_QUEUE
from dispatcher.trigger_book import Firing
from tracekit.db.queries import load_queries
from tracekit.outbox import enqueue_many

_RUNS = load_queries("dispatcher.sql", "runs.sql")
_TASKS = load_queries("dispatcher.sql", "tasks.sql")


@dataclass(frozen=True, slots=True)
class NewTask:
    """A task to create: the job it runs and the incoming event that triggers it."""

    job: JobPolicy
    event_id: str
    payload: Mapping[str, Any]


@dataclass(slots=True)
class Submitted:
    run_id: uuid.UUID
    created: bool  # False when the idempotency key named an existing run
    tasks: list[uuid.UUID] = field(default_factory=list)


def first(row: Any) -> Any:
    """The first column of a row (a tuple or a dict row)."""
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def tasks_of(firings: Iterable[Firing], payload: Mapping[str, Any]) -> list[NewTask]:
    """One task per firing, with ``payload`` and the job's config."""
    return [NewTask(f.job, f.event_id, {**payload, "config": dict(f.job.config)}) for f in firings]


async def insert_run(cur: psycopg.AsyncCursor[Any], *, org_id: str, kind: str, dag: str, dag_version: int,
                     params: Mapping[str, Any], submitted_by: str, tasks: Sequence[NewTask],
                     idempotency_key: str | None) -> Submitted:
    """A run and its first tasks. With an ``idempotency_key`` already used by this org, that run
    instead (nothing is created)."""
    if idempotency_key is not None:
        await cur.execute(_RUNS.sql("run_by_key"), (org_id, idempotency_key))
        found = await cur.fetchone()
        if found is not None:
            return Submitted(first(found), created=False)
    await cur.execute(
        _RUNS.sql("insert_run"),
        (org_id, kind, dag, dag_version, Jsonb(dict(params)), submitted_by, idempotency_key),
    )
    row = await cur.fetchone()
    if row is None:  # a concurrent submission with the same key won
        await cur.execute(_RUNS.sql("run_by_key"), (org_id, idempotency_key))
        again = await cur.fetchone()
        if again is None:
            raise NotFound(f"run with idempotency key {idempotency_key!r} vanished")
        return Submitted(first(again), created=False)
    run_id = first(row)
    created = await create_tasks(cur, org_id, run_id, dag, dag_version, tasks)
    return Submitted(run_id, created=True, tasks=created)


async def pin_inputs(cur: psycopg.AsyncCursor[Any], org_id: str, datasets: Sequence[str]) -> dict[str, Any]:
    """The current version of each of ``datasets`` that has one, as a run reads it:
    ``{dataset: {"version", "snapshot_id", "table"}}`` (datasets Trace does not version are left out)."""
    await cur.execute(_RUNS.sql("pin_inputs"), {"org": org_id, "datasets": list(datasets)})
    rows = await cur.fetchall()
    return {r[0]: {"version": int(r[1]), "snapshot_id": r[2], "table": r[3]} for r in
            (tuple(row.values()) if isinstance(row, dict) else row for row in rows)}


async def create_tasks(cur: psycopg.AsyncCursor[Any], org_id: str, run_id: uuid.UUID, dag: str,
                       dag_version: int, tasks: Sequence[NewTask]) -> list[uuid.UUID]:
    """The tasks of ``run_id`` (one already made for its job and event is skipped) and their
    wake-ups; returns the ids of those created."""
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
    await cur.execute(_TASKS.sql("insert_tasks"), (org_id, run_id, dag, dag_version, *cols.values()))
    created = [first(r) for r in await cur.fetchall()]
    await wake(cur, created)
    return created


async def wake(cur: psycopg.AsyncCursor[Any], task_ids: Sequence[uuid.UUID],
               delays: Sequence[float] | None = None) -> None:
    """A wake-up per task (held back ``delays`` seconds each, when given) when this commits."""
    await enqueue_many(cur, [(f"queue:{TASK_QUEUE}", None, str(t).encode(), {}) for t in task_ids],
                       delays=delays)


async def settle(cur: psycopg.AsyncCursor[Any], runs: Iterable[uuid.UUID]) -> None:
    """A run whose tasks are all terminal ends: canceled if cancel was asked, failed if a
    task is dead, else succeeded.

    The run rows are locked here (after the task rows, as everywhere): two attempts of one
    run finishing at once are serialized here, so the second sees the first's task state
    (each statement of READ COMMITTED sees what committed before it began) and the run
    cannot stay "running" with every task finished. A run that succeeded with staged outputs
    is queued for the committer (``state.run_commits``) in the same transaction."""
    ids = sorted(set(runs))
    if not ids:
        return
    await cur.execute(_RUNS.sql("lock_runs"), (ids,))
    await cur.execute(_RUNS.sql("settle_runs"), (ids,))
    await cur.execute(_RUNS.sql("queue_commits"), (ids,))
    row = await cur.fetchone()
    if row is not None and first(row):
        await cur.execute(_RUNS.sql("notify_commits"))


async def cancel(cur: psycopg.AsyncCursor[Any], org_id: str, run_id: uuid.UUID) -> str:
    """Cancel a run: queued tasks end now; leased ones are told at their next heartbeat.
    Returns the run's state afterwards. Canceling a finished run changes nothing."""
    await cur.execute(_RUNS.sql("lock_live_tasks"), (run_id, org_id))
    await cur.execute(_RUNS.sql("lock_run"), (org_id, run_id))
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no run {run_id}")
    if first(row) not in ("running", "canceling"):
        return str(first(row))
    await cur.execute(_RUNS.sql("mark_canceling"), (run_id,))
    await cur.execute(_RUNS.sql("cancel_queued_tasks"), (run_id,))
    await cur.execute(_RUNS.sql("cancel_leased_tasks"), (run_id,))
    await settle(cur, [run_id])
    await cur.execute(_RUNS.sql("run_state"), (run_id,))
    after = await cur.fetchone()
    return str(first(after)) if after else "canceled"


async def params_of(cur: psycopg.AsyncCursor[Any], run_id: uuid.UUID) -> Any:
    """The parameters ``run_id`` was submitted with (None: no such run)."""
    await cur.execute(_RUNS.sql("run_params"), (run_id,))
    row = await cur.fetchone()
    return None if row is None else first(row)
