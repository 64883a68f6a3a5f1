"""Claims and leases in Postgres, inside the caller's transaction.

A claim takes ready tasks ``FOR UPDATE SKIP LOCKED`` (the woken ones first), keeps every job
under its ``max_concurrency`` (counted under a per-job advisory lock; jobs at their cap are left
out of the candidates) and leases them: a new attempt each, an expiry, an attempt row. A
heartbeat renews the lease. The SQL is in ``dispatcher/sql/tasks.sql``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg

from dispatcher.protocol import ClaimedTask
from tracekit.db.queries import load_queries

_SQL = load_queries("dispatcher.sql", "tasks.sql")
_READY_PASSES = 3  # candidate rounds when some candidates fell to a job's concurrency cap

Cursor = psycopg.AsyncCursor[dict[str, Any]]


async def claim(cur: Cursor, worker: str, lease: timedelta, *, limit: int, operators: Sequence[str] | None,
                prefer: Sequence[uuid.UUID], org_id: str | None) -> list[ClaimedTask]:
    """Lease up to ``limit`` ready tasks to ``worker`` (the ones in ``prefer`` first; only
    ``org_id``'s when given, only of ``operators`` when given)."""
    await cur.execute(_SQL.sql("saturated_jobs"))
    full = {r["concurrency_key"] for r in await cur.fetchall()}
    params: dict[str, Any] = {"ops": list(operators) if operators is not None else None,
                              "org": org_id, "prefer": list(prefer)}
    chosen: list[uuid.UUID] = []
    seen: list[uuid.UUID] = []  # locked by this transaction already
    room: dict[str, int] = {}
    rounds = (["claim_preferred"] if prefer else []) + ["claim_ready"] * _READY_PASSES
    for query in rounds:  # the woken ones first, then the oldest ready ones
        want = limit - len(chosen)
        if want <= 0:
            break
        params.update(limit=want, taken=seen, full=sorted(full))
        await cur.execute(_SQL.sql(query), params)
        candidates = await cur.fetchall()
        seen += [c["task_id"] for c in candidates]
        picked = await _within_concurrency(cur, candidates, room)
        chosen += picked
        full |= {k for k, left in room.items() if left <= 0}
        if query == "claim_ready" and len(picked) == len(candidates):
            break  # all taken: either enough, or nothing more is ready
    if not chosen:
        return []
    await cur.execute(_SQL.sql("lease"), {"worker": worker, "lease": lease, "ids": chosen})
    return [ClaimedTask.model_validate(r) for r in await cur.fetchall()]


async def _within_concurrency(cur: Cursor, candidates: Sequence[Mapping[str, Any]],
                              room: dict[str, int]) -> list[uuid.UUID]:
    """The candidates that fit their job's ``max_concurrency``; ``room`` (key -> free slots)
    carries over between the rounds of one claim."""
    limits = {c["concurrency_key"]: c["max_concurrency"] for c in candidates
              if c["concurrency_key"] is not None and c["concurrency_key"] not in room}
    for key in sorted(limits):  # one claimer per key at a time; sorted, so no deadlock
        await cur.execute(_SQL.sql("lock_concurrency_key"), (key,))
        await cur.execute(_SQL.sql("count_leased"), (key,))
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


async def renew(cur: Cursor, task_id: uuid.UUID, lease: timedelta) -> datetime | None:
    """Extend the task's lease by ``lease`` from now; returns the new expiry."""
    await cur.execute(_SQL.sql("renew_lease"), (lease, task_id))
    row = await cur.fetchone()
    return row["lease_expires_at"] if row else None
