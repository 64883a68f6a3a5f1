"""The Faust transfer sink: a chain's transfers and stake-changes topics -> hot.transfers and
hot.stake_changes, reorg-correct.

One app (consumer group ``trace-transfer-sink-<chain>``) with one agent per topic, each with its
own database connection; the batch loop, dead letters (``<topic>.dlq``) and database retries are
:mod:`streams.hot_tables.agent`, the tables and checks :mod:`streams.transfer_sink.plan`.
"""

from __future__ import annotations

import faust
from prometheus_client import Counter, Histogram

from streams.chain_app import Check, chain_app
from streams.config import SinkConfig
from streams.hot_tables.agent import add_sink_agent
from streams.hot_tables.plan import TableSet
from streams.transfer_sink.plan import STAKE_CHANGES, TRANSFERS, check_stake_change, check_transfer
from tracekit.names import BLOCK_END, REORG, STAKE_CHANGE, TRANSFER, stake_changes_topic, transfers_topic

APPLIED = Counter(
    "trace_transfer_sink_records_total", "Records applied to hot.transfers / hot.stake_changes",
    ["chain_id", "type"],
)
BATCH_SECONDS = Histogram(
    "trace_transfer_sink_batch_seconds", "Time to apply one batch", ["chain_id", "table"]
)
_TYPES = {TRANSFER: "transfer", STAKE_CHANGE: "stake_change", BLOCK_END: "block_end", REORG: "reorg"}


def make_app(config: SinkConfig) -> faust.App:
    """The Faust app of one chain's transfer sink, tuned for the embedded broker too."""
    chain = str(config.chain_id)
    topics: list[tuple[str, Check, TableSet]] = [
        (transfers_topic(config.chain_id), check_transfer, TRANSFERS),
        (stake_changes_topic(config.chain_id), check_stake_change, STAKE_CHANGES),
    ]
    ca = chain_app("transfer-sink", config, topic=topics[0][0], check=topics[0][1],
                   commit_every=config.batch_max)

    def applied(record: str) -> None:
        APPLIED.labels(chain, _TYPES.get(record, record)).inc()

    for topic, check, tables in topics:
        table = tables.tables[0].name
        add_sink_agent(
            ca.on(topic, check), f"transfer-sink-{table}", tables,
            database_url=config.database_url.get_secret_value(),
            batch_max=config.batch_max, batch_within=config.batch_within,
            applied=applied, batch_seconds=BATCH_SECONDS.labels(chain, table),
        )
    return ca.app
