"""The Faust hot-table sink: the chain's block/reorg events -> reorg-correct Postgres tables
(hot.blocks, hot.transactions, hot.logs).

The batch loop, dead letters and database retries are :mod:`streams.hot_tables.agent`; the tables
and how a block becomes their rows are :mod:`streams.hot_sink.plan`.
"""

from __future__ import annotations

import faust
from prometheus_client import Counter, Histogram

from streams.chain_app import chain_app
from streams.config import SinkConfig
from streams.hot_sink.plan import TABLES
from streams.hot_tables.agent import add_sink_agent
from tracekit.names import REORG

APPLIED = Counter("trace_sink_events_total", "Events applied to the hot tables", ["chain_id", "type"])
BATCH_SECONDS = Histogram("trace_sink_batch_seconds", "Time to apply one batch", ["chain_id"])


def make_app(config: SinkConfig) -> faust.App:
    """The Faust app of one chain's hot-table sink, tuned for the embedded broker too."""
    ca = chain_app("hot-sink", config, commit_every=config.batch_max)
    chain = str(config.chain_id)

    def applied(record: str) -> None:
        APPLIED.labels(chain, "reorg" if record == REORG else "block").inc()

    add_sink_agent(
        ca, "hot-sink", TABLES,
        database_url=config.database_url.get_secret_value(),
        batch_max=config.batch_max, batch_within=config.batch_within,
        applied=applied, batch_seconds=BATCH_SECONDS.labels(chain),
    )
    return ca.app
