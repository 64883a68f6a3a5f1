"""Prometheus metrics of the block follower."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HEAD = Gauge("trace_follower_head_block", "Latest block number seen at the node", ["chain_id"])
CURSOR = Gauge("trace_follower_cursor_block", "Last block whose event the broker confirmed", ["chain_id"])
LAG_BLOCKS = Gauge("trace_follower_lag_blocks", "Head minus cursor, in blocks", ["chain_id"])
LAG_SECONDS = Gauge(
    "trace_follower_lag_seconds", "Head block timestamp minus cursor block timestamp", ["chain_id"]
)
REORGS = Counter("trace_follower_reorgs_total", "Reorgs detected, by depth", ["chain_id", "depth"])
REORG_DEPTH = Histogram(
    "trace_follower_reorg_depth", "Depth of detected reorgs", ["chain_id"], buckets=(1, 2, 3, 4, 6, 8, 16, 64)
)
EVENTS = Counter("trace_follower_events_total", "Events confirmed by the broker", ["chain_id", "type"])
RPC_ERRORS = Counter("trace_follower_rpc_errors_total", "Retryable JSON-RPC failures", ["chain_id"])
