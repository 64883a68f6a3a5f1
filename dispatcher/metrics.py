"""The dispatcher's Prometheus metrics (``TRACE_DISPATCHER_METRICS_PORT``, path ``/metrics``).

Gauges of what Postgres holds (tasks by state, queue depth, outbox backlog, run commits by
state) are refreshed every few seconds by :func:`refresh_forever`; the events are counted where
they happen: lease expiries by the reaper, commit and cutover durations by the committer and the
dataset store, integrity failures by the commit protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from tracekit.db.queries import load_queries

log = logging.getLogger("trace.dispatcher.metrics")
_SQL = load_queries("dispatcher.sql", "metrics.sql")

TASKS = Gauge("trace_dispatcher_tasks", "Tasks by state", ["state"])
QUEUE_DEPTH = Gauge("trace_dispatcher_queue_depth", "Wake-ups waiting in the Postgres queue", ["queue"])
OUTBOX_BACKLOG = Gauge("trace_dispatcher_outbox_backlog", "Outbox rows not yet published")
OUTBOX_OLDEST = Gauge("trace_dispatcher_outbox_oldest_seconds", "Age of the oldest unpublished outbox row")
RUN_COMMITS = Gauge("trace_dispatcher_run_commits", "Runs queued for the committer, by state", ["state"])
LEASE_EXPIRIES = Counter("trace_dispatcher_lease_expiries_total", "Leases taken back by the reaper")
COMMIT_SECONDS = Histogram("trace_dataset_commit_seconds", "Commit of one run's files, cutover included",
                           buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
CUTOVER_SECONDS = Histogram("trace_dataset_cutover_seconds", "One cutover or rollback transaction",
                            ["action"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1))

TASK_STATES = ("queued", "leased", "succeeded", "dead", "canceled")
COMMIT_STATES = ("pending", "done", "failed")


async def refresh(pool: AsyncConnectionPool[Any], org_id: str) -> None:
    """Set the gauges from Postgres, in one read-only transaction."""
    async with pool.connection() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SQL.sql("task_states"), {"org": org_id})
        found = {r["state"]: r["n"] for r in await cur.fetchall()}
        for state in {*TASK_STATES, *found}:
            TASKS.labels(state).set(found.get(state, 0))
        await cur.execute(_SQL.sql("queue_depth"))
        for row in await cur.fetchall():
            QUEUE_DEPTH.labels(row["queue"]).set(row["n"])
        await cur.execute(_SQL.sql("outbox_backlog"))
        backlog = await cur.fetchone()
        if backlog is not None:
            OUTBOX_BACKLOG.set(backlog["n"])
            OUTBOX_OLDEST.set(float(backlog["oldest_s"]))
        await cur.execute(_SQL.sql("run_commits"), {"org": org_id})
        commits = {r["state"]: r["n"] for r in await cur.fetchall()}
        for state in COMMIT_STATES:
            RUN_COMMITS.labels(state).set(commits.get(state, 0))


async def refresh_forever(pool: AsyncConnectionPool[Any], org_id: str, stop: asyncio.Event,
                          every_s: float = 5.0) -> None:
    while not stop.is_set():
        try:
            await refresh(pool, org_id)
        except Exception as exc:  # the database is away: the gauges keep their last values
            log.warning("metrics refresh: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
