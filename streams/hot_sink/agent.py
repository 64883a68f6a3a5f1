"""The Faust hot-table sink: the chain's block/reorg events -> reorg-correct Postgres tables.

Events are taken in batches (``take_events``), decoded, checked, planned (pure, ``plan.py``) and
applied in one transaction (``writer.py``); Faust commits the offsets after the agent moved past
them, so a crash replays at most the last batches, which the idempotent writes absorb.
Undecodable or invalid messages go to the dead-letter topic with the reason. A database outage
is waited out (the batch is retried); a batch the database rejects for its content is applied
event by event so only the offending event is dead-lettered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import faust
import psycopg
from prometheus_client import Counter, Histogram

from streams.chain_app import chain_app, decode_batch
from streams.config import SinkConfig
from streams.deadletter import send_to_dead_letter
from streams.hot_sink.plan import Op, plan
from streams.hot_sink.writer import HotTableWriter
from tracekit.names import REORG
from tracekit.retry import Backoff, retry

log = logging.getLogger("trace.sink")

APPLIED = Counter("trace_sink_events_total", "Events applied to the hot tables", ["chain_id", "type"])
BATCH_SECONDS = Histogram("trace_sink_batch_seconds", "Time to apply one batch", ["chain_id"])


@dataclass(slots=True)
class SinkResources:
    """The sink's database writer: opened on first use, and again after its connection was lost."""

    database_url: str
    writer: HotTableWriter | None = None

    async def get(self) -> HotTableWriter:
        if self.writer is None:
            self.writer = await HotTableWriter.connect(self.database_url)
        return self.writer

    async def close(self) -> None:
        """Close and forget the writer (its connection broke); the next :meth:`get` opens a new one."""
        stale, self.writer = self.writer, None
        if stale is not None:
            await stale.close()


def make_app(config: SinkConfig) -> faust.App:
    """The Faust app of one chain's hot-table sink, tuned for the embedded broker too."""
    ca = chain_app("hot-sink", config, commit_every=config.batch_max)
    app = ca.app
    dlq = ca.dlq
    chain = str(config.chain_id)
    resources = SinkResources(config.database_url.get_secret_value())

    async def apply_with_retry(ops: list[Op]) -> None:
        async def apply() -> None:
            await (await resources.get()).apply(ops)

        async def lost(exc: psycopg.OperationalError, delay: float) -> None:
            log.warning("database unavailable, retrying in %.1fs: %s", delay, exc)
            await resources.close()

        await retry(apply, on=psycopg.OperationalError, backoff=Backoff(0.2, 5.0), on_error=lost)

    @app.agent(ca.source, name="hot-sink")
    async def hot_sink(stream: Any) -> None:
        async for batch in stream.take_events(config.batch_max, within=config.batch_within):
            decoded = await decode_batch(ca, batch, stage="decode", dead_letter=True)
            if not decoded:
                continue
            with BATCH_SECONDS.labels(chain).time():
                try:
                    await apply_with_retry(plan((n, d) for _, n, d in decoded))
                except (psycopg.errors.DataError, psycopg.errors.IntegrityError):
                    for message, name, datum in decoded:  # isolate the offending event
                        try:
                            await apply_with_retry(plan([(name, datum)]))
                        except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
                            await send_to_dead_letter(dlq, message, "apply", f"{type(exc).__name__}: {exc}")
            for _, name, _ in decoded:
                APPLIED.labels(chain, "reorg" if name == REORG else "block").inc()

    return app
