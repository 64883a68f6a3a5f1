"""Postgres side of alert evaluation: rule-set versions, fired alerts, finality, retractions.

Everything a batch of chain events decides is written in ONE transaction together with the
outbox rows that publish it, so a crash publishes all of it or none of it, and a replay of the
same events changes nothing (alert ids are deterministic; inserts are ``ON CONFLICT DO
NOTHING``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg

from tracekit.avro.wire import AvroCodec
from tracekit.names import ALERT, ALERTS_TOPIC
from tracekit.outbox import enqueue_many


@dataclass
class BatchOutcome:
    fired: list[dict[str, Any]] = field(default_factory=list)
    retracted: list[dict[str, Any]] = field(default_factory=list)
    held: int = 0


async def active_rule_set(
    conn: psycopg.AsyncConnection[Any], org_id: str = "default"
) -> tuple[int, Any] | None:
    async with conn.cursor() as cur:
        await cur.execute(
            "SELECT version, rules FROM state.alert_rule_sets WHERE org_id = %s AND active", (org_id,)
        )
        row = await cur.fetchone()
    return None if row is None else (int(row[0]), row[1])


async def apply_rule_set(
    conn: psycopg.AsyncConnection[Any],
    digest: str,
    rules_json: Any,
    sources: Sequence[str],
    org_id: str = "default",
) -> tuple[int, bool]:
    """Make these rules the active set; returns (version, created). Unchanged rules keep theirs."""
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute("SELECT pg_advisory_xact_lock(hashtext('trace.alert_rule_sets'))")
        await cur.execute(
            "SELECT version, digest FROM state.alert_rule_sets WHERE org_id = %s AND active", (org_id,)
        )
        row = await cur.fetchone()
        if row is not None and row[1] == digest:
            return int(row[0]), False
        await cur.execute(
            "SELECT coalesce(max(version), 0) + 1 FROM state.alert_rule_sets WHERE org_id = %s", (org_id,)
        )
        version = int((await cur.fetchone())[0])  # type: ignore[index]
        await cur.execute(
            "UPDATE state.alert_rule_sets SET active = false WHERE org_id = %s AND active", (org_id,)
        )
        await cur.execute(
            "INSERT INTO state.alert_rule_sets (org_id, version, digest, rules, sources, active)"
            " VALUES (%s, %s, %s, %s, %s, true)",
            (org_id, version, digest, orjson.dumps(rules_json).decode(), list(sources)),
        )
    return version, True


class AlertStore:
    def __init__(
        self, conn: psycopg.AsyncConnection[Any], codec: AvroCodec, topic: str = ALERTS_TOPIC
    ) -> None:
        self.conn = conn
        self.codec = codec
        self.topic = topic

    def _message(self, record: dict[str, Any]) -> tuple[str, bytes, bytes, dict[str, str]]:
        """The outbox row that publishes ``record`` (keyed by alert id: an alert and its
        retraction stay in order)."""
        headers = {"trace-alert-kind": record["kind"], "trace-rule": record["rule_id"],
                   "trace-observed-at-ms": str(record["observed_at_ms"])}
        return self.topic, record["alert_id"].encode(), self.codec.encode(ALERT, record), headers

    async def _publish(self, cur: psycopg.AsyncCursor[Any], record: dict[str, Any]) -> None:
        await enqueue_many(cur, [self._message(record)])

    async def fire(self, cur: psycopg.AsyncCursor[Any], record: dict[str, Any], out: BatchOutcome) -> None:
        """Record an alert once; publish it only the first time."""
        await self.fire_many(cur, [record], out)

    async def fire_many(
        self, cur: psycopg.AsyncCursor[Any], records: Sequence[dict[str, Any]], out: BatchOutcome
    ) -> None:
        """Record alerts once each, in one statement; publish only those recorded now."""
        records = list({rec["alert_id"]: rec for rec in records}.values())  # a batch may repeat one
        if not records:
            return
        columns = (
            "alert_id",
            "rule_id",
            "rule_version",
            "tier",
            "severity",
            "chain_id",
            "block_number",
            "block_hash",
            "event_key",
            "event_type",
            "summary",
            "details_json",
            "observed_at_ms",
        )
        await cur.execute(
            "INSERT INTO state.alerts (alert_id, rule_id, rule_version, tier, severity, chain_id,"
            " block_number, block_hash, event_key, event_type, summary, details, observed_at)"
            " SELECT a, r, v, t, s, c, n, h, k, e, m, d::jsonb, to_timestamp(o / 1000.0) FROM unnest("
            "%s::text[], %s::text[], %s::int[], %s::text[], %s::text[], %s::bigint[], %s::bigint[],"
            " %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[])"
            " AS x(a, r, v, t, s, c, n, h, k, e, m, d, o)"
            " ON CONFLICT (alert_id) DO NOTHING RETURNING alert_id",
            tuple([rec[col] for rec in records] for col in columns),
        )
        new = {row[0] for row in await cur.fetchall()}
        fresh = [rec for rec in records if rec["alert_id"] in new]
        await enqueue_many(cur, [self._message(rec) for rec in fresh])
        out.fired.extend(fresh)

    async def hold(self, cur: psycopg.AsyncCursor[Any], record: dict[str, Any], out: BatchOutcome) -> None:
        """A finalized-tier match waits for finality (unless it already fired)."""
        await cur.execute(
            "INSERT INTO state.pending_alerts (alert_id, chain_id, block_number, block_hash, record)"
            " SELECT %s, %s, %s, %s, %s WHERE NOT EXISTS"
            " (SELECT 1 FROM state.alerts WHERE alert_id = %s) ON CONFLICT DO NOTHING",
            (
                record["alert_id"],
                record["chain_id"],
                record["block_number"],
                record["block_hash"],
                orjson.dumps(record).decode(),
                record["alert_id"],
            ),
        )
        out.held += cur.rowcount

    async def finalize(
        self,
        cur: psycopg.AsyncCursor[Any],
        chain_id: int,
        final_block: int,
        fired_at_ms: int,
        out: BatchOutcome,
    ) -> None:
        """Fire the held matches of blocks at or below ``final_block`` (still canonical: a reorg
        deleted the others)."""
        await cur.execute(
            "DELETE FROM state.pending_alerts WHERE chain_id = %s AND block_number <= %s RETURNING record",
            (chain_id, final_block),
        )
        for (record,) in await cur.fetchall():
            await self.fire(cur, {**record, "fired_at_ms": fired_at_ms}, out)

    async def retract(
        self,
        cur: psycopg.AsyncCursor[Any],
        chain_id: int,
        orphaned_hashes: Sequence[str],
        fired_at_ms: int,
        out: BatchOutcome,
    ) -> None:
        """Drop held matches of orphaned blocks; retract the alerts that fired on them."""
        hashes = list(orphaned_hashes)
        await cur.execute(
            "DELETE FROM state.pending_alerts WHERE chain_id = %s AND block_hash = ANY(%s)",
            (chain_id, hashes),
        )
        await cur.execute(
            "UPDATE state.alerts SET retracted_at = clock_timestamp() WHERE chain_id = %s"
            " AND block_hash = ANY(%s) AND retracted_at IS NULL"
            " RETURNING alert_id, rule_id, rule_version, tier, severity, block_number, block_hash,"
            " event_key, event_type, summary, details",
            (chain_id, hashes),
        )
        for row in await cur.fetchall():
            alert_id, rule_id, version, tier, severity, number, block_hash, key, etype, summary, details = row
            record = {
                "alert_id": alert_id,
                "kind": "RETRACTION",
                "rule_id": rule_id,
                "rule_version": version,
                "tier": tier,
                "severity": severity,
                "chain_id": chain_id,
                "block_number": number,
                "block_hash": block_hash,
                "event_key": key,
                "event_type": etype,
                "summary": f"retracted (block {number} was reorged out): {summary}",
                "details_json": orjson.dumps(details).decode(),
                "fired_at_ms": fired_at_ms,
                "observed_at_ms": 0,
            }
            await self._publish(cur, record)
            out.retracted.append(record)

    async def advance(
        self, cur: psycopg.AsyncCursor[Any], chain_id: int, number: int, block_hash: str
    ) -> None:
        await cur.execute(
            "INSERT INTO state.alert_progress AS p (chain_id, block_number, block_hash)"
            " VALUES (%s, %s, %s)"
            " ON CONFLICT (chain_id) DO UPDATE SET block_number = excluded.block_number,"
            " block_hash = excluded.block_hash, updated_at = now()",
            (chain_id, number, block_hash),
        )
