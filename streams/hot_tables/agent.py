"""The Faust batch loop of a hot-table sink: records of one topic -> its reorg-correct hot tables.

Records are taken in batches (``take_events``), decoded and checked (the topic's check), planned
(pure, ``plan.py``) and applied in one transaction (``writer.py``); Faust commits the offsets after
the agent moved past them, so a crash replays at most the last batches, which the idempotent
writes absorb. Undecodable or invalid messages go to the topic's dead-letter topic with the
reason. A database outage is waited out (the batch is retried on a new connection); a batch the
database rejects for its content is applied record by record so only the offending record is
dead-lettered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg

from streams.chain_app import ChainApp, decode_batch
from streams.deadletter import send_to_dead_letter
from streams.hot_tables.plan import Op, TableSet, plan
from streams.hot_tables.writer import HotTableWriter
from tracekit.retry import Backoff, retry

log = logging.getLogger("trace.sink")

REJECTED = (psycopg.errors.DataError, psycopg.errors.IntegrityError)  # the content, not the database


class Timer(Protocol):
    def time(self) -> Any: ...  # a context manager (a labelled prometheus Histogram)


@dataclass(slots=True)
class SinkResources:
    """A sink agent's database writer: opened on first use, and again after its connection was lost."""

    database_url: str
    tables: TableSet
    writer: HotTableWriter | None = None

    async def get(self) -> HotTableWriter:
        if self.writer is None:
            self.writer = await HotTableWriter.connect(self.database_url, self.tables)
        return self.writer

    async def close(self) -> None:
        """Close and forget the writer (its connection broke); the next :meth:`get` opens a new one."""
        stale, self.writer = self.writer, None
        if stale is not None:
            await stale.close()

    async def apply(self, ops: list[Op]) -> None:
        """Apply ``ops`` in one transaction, waiting out a database outage."""

        async def apply() -> None:
            await (await self.get()).apply(ops)

        async def lost(exc: psycopg.OperationalError, delay: float) -> None:
            log.warning("database unavailable, retrying in %.1fs: %s", delay, exc)
            await self.close()

        await retry(apply, on=psycopg.OperationalError, backoff=Backoff(0.2, 5.0), on_error=lost)


def add_sink_agent(
    ca: ChainApp,
    name: str,
    tables: TableSet,
    *,
    database_url: str,
    batch_max: int,
    batch_within: float,
    applied: Callable[[str], None],
    batch_seconds: Timer,
) -> None:
    """Register agent ``name`` on ``ca.source`` keeping ``tables`` equal to what the topic says.

    ``applied(record name)`` is called once per record applied; ``batch_seconds`` times each batch.
    """
    resources = SinkResources(database_url, tables)

    async def sink(stream: Any) -> None:
        async for batch in stream.take_events(batch_max, within=batch_within):
            decoded = await decode_batch(ca, batch, stage="decode", dead_letter=True)
            if not decoded:
                continue
            with batch_seconds.time():
                try:
                    await resources.apply(plan(((n, d) for _, n, d in decoded), tables.item))
                except REJECTED:
                    for message, record, datum in decoded:  # isolate the offending record
                        try:
                            await resources.apply(plan([(record, datum)], tables.item))
                        except REJECTED as exc:
                            reason = f"{type(exc).__name__}: {exc}"
                            await send_to_dead_letter(ca.dlq, message, "apply", reason)
            for _, record, _ in decoded:
                applied(record)

    ca.app.agent(ca.source, name=name)(sink)
