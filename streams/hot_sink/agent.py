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
from typing import Any

import faust
import psycopg
from prometheus_client import Counter, Histogram

from streams.chain_app import chain_app, decode_batch
from streams.config import SinkConfig
from streams.deadletter import send_to_dead_letter
from streams.hot_sink.plan import plan
from streams.hot_sink.writer import HotTableWriter
from tracekit.names import REORG
from tracekit.retry import Backoff, retry

log = logging.getLogger("trace.sink")

APPLIED = Counter("trace_sink_events_total", "Events applied to the hot tables", ["chain_id", "type"])
BATCH_SECONDS = Histogram("trace_sink_batch_seconds", "Time to apply one batch", ["chain_id"])


def make_app(config: SinkConfig) -> faust.App:
    """The Faust app of one chain's hot-table sink, tuned for the embedded broker too."""
    ca = chain_app("hot-sink", config, commit_every=config.batch_max)
    app = ca.app
    dlq = ca.dlq
    chain = str(config.chain_id)
    state: dict[str, HotTableWriter] = {}

    async def writer() -> HotTableWriter:
        if "writer" not in state:
            state["writer"] = await HotTableWriter.connect(config.database_url.get_secret_value())
        return state["writer"]

    async def apply_with_retry(ops: list[Any]) -> None:
        async def apply() -> None:
            await (await writer()).apply(ops)

        async def lost(exc: psycopg.OperationalError, delay: float) -> None:
            log.warning("database unavailable, retrying in %.1fs: %s", delay, exc)
            stale = state.pop("writer", None)
            if stale is not None:
                await stale.close()

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
