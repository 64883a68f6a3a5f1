"""Historical evaluation: the same rules over a past block range, as a separate labelled run.

Blocks and logs are read from the hot tables in order and go through the same decode, enrich
and evaluate steps as the live path. Matches land in ``state.historical_alerts`` under the run;
nothing is written to ``state.alerts`` or the outbox, so a historical run never triggers a
delivery. Every match counts, whatever its tier: history is past finality by definition.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg

from streams.alerts.evaluate import Evaluator
from streams.alerts.rules import RuleSet
from streams.alerts.store import active_rule_set
from streams.enrich.decode import decode_block
from streams.enrich.enrich import enrich
from streams.enrich.labels import LabelCache
from streams.enrich.prices import PriceBook
from tracekit.errors import ConfigError

CHUNK = 500


@dataclass(frozen=True)
class HistoryRun:
    run_id: str
    label: str
    rule_version: int
    blocks: int
    alerts: int


async def _blocks(
    conn: psycopg.AsyncConnection[Any], chain_id: int, first: int, last: int
) -> AsyncIterator[dict[str, Any]]:
    """Block records (with their logs) of [first, last] from the hot tables, in order."""
    for low in range(first, last + 1, CHUNK):
        high = min(last, low + CHUNK - 1)
        async with conn.cursor() as cur:
            await cur.execute(
                'SELECT block_number, block_hash, "timestamp" FROM hot.blocks'
                " WHERE chain_id = %s AND block_number BETWEEN %s AND %s ORDER BY block_number",
                (chain_id, low, high),
            )
            blocks = {
                n: {
                    "chain_id": chain_id,
                    "block_number": n,
                    "block_hash": h,
                    "timestamp": ts,
                    "observed_at_ms": 0,
                    "logs": [],
                }
                for n, h, ts in await cur.fetchall()
            }
            await cur.execute(
                "SELECT block_number, log_index, transaction_index, transaction_hash, address,"
                " topic0, topic1, topic2, topic3, data FROM hot.logs"
                " WHERE chain_id = %s AND block_number BETWEEN %s AND %s ORDER BY block_number, log_index",
                (chain_id, low, high),
            )
            for n, li, ti, th, address, t0, t1, t2, t3, data in await cur.fetchall():
                block = blocks.get(n)
                if block is not None:
                    block["logs"].append(
                        {
                            "block_number": n,
                            "log_index": li,
                            "transaction_index": ti,
                            "transaction_hash": th,
                            "address": address,
                            "topic0": t0,
                            "topic1": t1,
                            "topic2": t2,
                            "topic3": t3,
                            "data": data,
                        }
                    )
        for number in sorted(blocks):
            yield blocks[number]


async def run_history(
    url: str,
    chain_id: int,
    first: int,
    last: int,
    label: str,
    *,
    staking_contracts: frozenset[str] = frozenset(),
    token_decimals: Mapping[str, int] | None = None,
) -> HistoryRun:
    if first > last:
        raise ConfigError(f"empty range: --from {first} is after --to {last}")
    run_id = uuid.uuid4().hex
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        active = await active_rule_set(conn)
        if active is None:
            raise ConfigError("no active rules: apply some with `trace alerts apply FILES`")
        version, rules_json = active
        evaluator = Evaluator(RuleSet.from_json(rules_json), version)
        await conn.execute(
            "INSERT INTO state.alert_runs (run_id, label, chain_id, from_block, to_block, rule_version)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (run_id, label, chain_id, first, last, version),
        )
        labels = LabelCache(url)
        await labels.start()
        try:
            prices = await PriceBook.load(url)
            blocks = alerts = 0
            async for block in _blocks(conn, chain_id, first, last):
                blocks += 1
                events = enrich(
                    decode_block(block, staking_contracts=staking_contracts),
                    labels,
                    prices,
                    token_decimals or {},
                )
                rows = []
                for event in events:
                    for m in evaluator.evaluate(event):
                        rows.append(
                            (
                                run_id,
                                m.alert_id,
                                m.rule.id,
                                m.tier,
                                event.block_number,
                                event.block_hash,
                                event.key,
                                m.summary,
                                orjson.dumps(m.details, default=str).decode(),
                            )
                        )
                if rows:
                    async with conn.cursor() as cur:
                        await cur.executemany(
                            "INSERT INTO state.historical_alerts (run_id, alert_id, rule_id, tier,"
                            " block_number, block_hash, event_key, summary, details)"
                            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                            rows,
                        )
                    alerts += len(rows)
        finally:
            await labels.stop()
        await conn.execute(
            "UPDATE state.alert_runs SET finished_at = now(), alerts = %s WHERE run_id = %s", (alerts, run_id)
        )
    return HistoryRun(run_id, label, version, blocks, alerts)
