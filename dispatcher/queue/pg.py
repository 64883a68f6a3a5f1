"""``PgQueueDriver``: a queue table plus LISTEN/NOTIFY (Trace Lite; SQS's semantics).

A received message becomes invisible for ``visibility_s``; unless acknowledged (deleted) it is
delivered again. A message received ``max_receives`` times without an ack, or nacked on its last
receive, moves to ``state.queue_dead`` with the last error: a poison message never loops.
``NOTIFY trace_queue`` wakes waiting receivers at once; they also poll every ``poll_s``. The SQL is
in ``dispatcher/sql/queue.sql``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from dispatcher.queue.driver import Delivery
from tracekit.db.queries import load_queries
from tracekit.errors import RetryableError

log = logging.getLogger("trace.queue.pg")

CHANNEL = "trace_queue"  # LISTEN'ed as named in queue.sql

_SQL = load_queries("dispatcher.sql", "queue.sql")


class PgQueueDriver:
    def __init__(self, pool: AsyncConnectionPool[Any], url: str, *, max_receives: int = 5,
                 visibility_s: float = 30.0, poll_s: float = 1.0) -> None:
        self.pool = pool
        self.url = url
        self.max_receives = max_receives
        self.visibility_s = visibility_s
        self.poll_s = poll_s
        self._wake = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None

    async def publish(self, queue: str, bodies: Sequence[bytes]) -> None:
        if not bodies:
            return
        try:
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute(_SQL.sql("publish"), (queue, list(bodies)))
                await conn.execute(_SQL.sql("notify"), (CHANNEL, queue))
        except psycopg.OperationalError as exc:
            raise RetryableError(f"queue {queue}: publish failed: {exc}") from exc

    async def receive(self, queue: str, *, max_messages: int, wait_s: float) -> list[Delivery]:
        self._ensure_listener()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            wake = self._wake  # taken before looking: a NOTIFY from now on sets it
            got = await self._receive_now(queue, max_messages)
            remaining = deadline - loop.time()
            if got or remaining <= 0:
                return got
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), min(remaining, self.poll_s))

    async def _receive_now(self, queue: str, n: int) -> list[Delivery]:
        params = {"queue": queue, "max": self.max_receives, "n": n, "visibility": self.visibility_s}
        try:
            async with self.pool.connection() as conn, conn.transaction():
                buried = await conn.execute(_SQL.sql("bury"), params)
                if buried.rowcount:
                    log.warning("queue %s: %d poison message(s) moved to state.queue_dead",
                                queue, buried.rowcount)
                rows = await (await conn.execute(_SQL.sql("receive"), params)).fetchall()
        except psycopg.OperationalError as exc:
            raise RetryableError(f"queue {queue}: receive failed: {exc}") from exc
        rows.sort(key=lambda r: r[0])
        return [Delivery(queue, bytes(body), int(receives), int(id_)) for id_, body, receives in rows]

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        async with self.pool.connection() as conn:
            await conn.execute(_SQL.sql("ack"), ([d.receipt for d in deliveries],))

    async def nack(self, delivery: Delivery, error: str) -> None:
        """Fenced by the receive count: a receipt from before a later receive (the visibility
        timeout ran out and someone else holds the message now) changes nothing."""
        async with self.pool.connection() as conn, conn.transaction():
            if delivery.receives >= self.max_receives:
                await conn.execute(_SQL.sql("nack_dead"), (delivery.receipt, delivery.receives, error))
            else:
                await conn.execute(_SQL.sql("nack_again"), (error, delivery.receipt, delivery.receives))
                await conn.execute(_SQL.sql("notify"), (CHANNEL, delivery.queue))

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None

    def _notify(self) -> None:
        """Wake every receiver waiting now; later ones wait on a fresh event."""
        self._wake.set()
        self._wake = asyncio.Event()

    def _ensure_listener(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="pg-queue-listen")

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    await conn.execute(_SQL.sql("listen"))
                    # a NOTIFY sent before the LISTEN took effect (a fresh driver, a lost
                    # connection) was not heard: every waiter looks at the table again
                    self._notify()
                    async for _ in conn.notifies():
                        self._notify()
            except psycopg.OperationalError as exc:
                log.warning("queue LISTEN lost (%s); polling every %.1fs", exc, self.poll_s)
                await asyncio.sleep(1.0)
