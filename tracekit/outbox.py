"""The transactional outbox: side effects as rows written in the intent's own transaction.

``enqueue`` is called inside the caller's transaction; :class:`OutboxPublisher` later sends the
unpublished rows in id order through a ``publish`` callable (a Kafka topic today; the
dispatcher's ``QueueDriver`` plugs in the same way) and marks them published only after the
sends were confirmed. A crash between the two re-sends those rows: consumers dedupe by the
idempotency key every payload carries. ``NOTIFY trace_outbox`` wakes the publisher at once;
a periodic sweep covers a missed notification. The SQL is in ``tracekit/db/outbox.sql``.

Several publishers share the table, each owning the destinations that start with its
``prefix`` (``queue:`` rows go to the dispatcher's ``QueueDriver``, the rest to Kafka). A row with
a future ``available_at`` (a retry's delayed wake-up) waits until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg

from tracekit.db.queries import load_queries

log = logging.getLogger("trace.outbox")

CHANNEL = "trace_outbox"  # the NOTIFY / LISTEN channel of outbox.sql
_SQL = load_queries("tracekit.db", "outbox.sql")


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    destination: str
    key: bytes | None
    payload: bytes
    headers: dict[str, str]


Publish = Callable[[Sequence[OutboxRow]], Awaitable[None]]


async def enqueue(
    cur: psycopg.AsyncCursor[Any],
    destination: str,
    payload: bytes,
    *,
    key: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    delay_s: float = 0.0,
) -> None:
    """Add a side effect to the caller's open transaction (it happens iff that commits).

    ``delay_s`` holds it back that long after the commit (a retry's backoff)."""
    await enqueue_many(cur, [(destination, key, payload, headers or {})], delays=[delay_s])


async def enqueue_many(
    cur: psycopg.AsyncCursor[Any],
    rows: Sequence[tuple[str, bytes | None, bytes, Mapping[str, str]]],
    *,
    delays: Sequence[float] | None = None,
) -> None:
    """Add many ``(destination, key, payload, headers)`` side effects in one statement.

    ``delays`` (one per row, seconds) holds each back that long after the commit; none by default."""
    if not rows:
        return
    if delays is not None and len(delays) != len(rows):
        raise ValueError(f"{len(delays)} delays for {len(rows)} outbox rows")
    await cur.execute(
        _SQL.sql("insert"),
        ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
         [orjson.dumps(dict(r[3])).decode() for r in rows],
         list(delays) if delays is not None else [0.0] * len(rows)),
    )
    await cur.execute(_SQL.sql("notify"))


class OutboxPublisher:
    def __init__(self, url: str, publish: Publish, *, prefix: str = "", exclude_prefix: str | None = None,
                 batch: int = 500, sweep_every: float = 0.5) -> None:
        self.url = url
        self.publish = publish
        self.prefix = prefix
        self.exclude_prefix = exclude_prefix
        self.batch = batch
        self.sweep_every = sweep_every
        self.wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        listener = asyncio.create_task(self._listen(stop))
        try:
            async with await psycopg.AsyncConnection.connect(self.url) as conn:
                while not stop.is_set():
                    while await self.publish_once(conn):
                        pass
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), self.sweep_every)
                    self.wake.clear()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener

    async def publish_once(self, conn: psycopg.AsyncConnection[Any]) -> int:
        """Publish one batch of unpublished rows; returns how many."""
        async with conn.transaction(), conn.cursor() as cur:
            await cur.execute(
                _SQL.sql("take_unpublished"),
                (self.prefix, self.exclude_prefix, self.exclude_prefix, self.batch),
            )
            rows = [
                OutboxRow(int(i), str(d), None if k is None else bytes(k), bytes(p), dict(h))
                for i, d, k, p, h in await cur.fetchall()
            ]
            if not rows:
                return 0
            await self.publish(rows)
            await cur.execute(
                _SQL.sql("mark_published"),
                ([r.id for r in rows],),
            )
        return len(rows)

    async def _listen(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    await conn.execute(_SQL.sql("listen"))
                    async for _ in conn.notifies():
                        self.wake.set()
            except psycopg.OperationalError as exc:
                log.warning("outbox LISTEN lost (%s); sweeping every %.1fs", exc, self.sweep_every)
                await asyncio.sleep(1.0)
