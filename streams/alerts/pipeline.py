"""Alert evaluation over one chain's ordered block/reorg events, one transaction per batch.

For each block: decode + enrich its logs into :class:`ChainEvent` s, evaluate the active rules;
an ``instant`` match fires at once, a ``finalized`` one is held until its block is
``finality_depth`` blocks deep. For each reorg: held matches of orphaned blocks are dropped,
instant alerts that fired on them are retracted (same alert id, kind RETRACTION), window state
forgets the orphaned events, and reorg rules are evaluated. Replaying a batch changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import psycopg

from streams.alerts.evaluate import Evaluator, Match
from streams.alerts.store import AlertStore, BatchOutcome
from streams.enrich.model import ChainEvent, LagReading, ReorgEvent
from tracekit.names import BLOCK, REORG

Enrich = Callable[[dict[str, Any]], list[ChainEvent]]


def alert_record(match: Match, kind: str = "ALERT", *, fired_at_ms: int, chain_id: int) -> dict[str, Any]:
    """The ``trace.alerts.Alert`` record of a match."""
    event = match.event
    return {
        "alert_id": match.alert_id,
        "kind": kind,
        "rule_id": match.rule.id,
        "rule_version": match.rule_version,
        "tier": match.tier.upper(),
        "severity": match.rule.severity,
        "chain_id": chain_id,
        "block_number": getattr(event, "block_number", getattr(event, "common_ancestor_number", 0)),
        "block_hash": getattr(event, "block_hash", ""),
        "event_key": event.key,
        "event_type": match.event_type,
        "summary": match.summary,
        "details_json": orjson.dumps(match.details, default=str).decode(),
        "fired_at_ms": fired_at_ms,
        "observed_at_ms": int(getattr(event, "observed_at_ms", 0) or 0),
    }


class AlertPipeline:
    def __init__(
        self,
        chain_id: int,
        store: AlertStore,
        evaluator: Evaluator,
        enrich: Enrich,
        *,
        finality_depth: int,
    ) -> None:
        self.chain_id = chain_id
        self.store = store
        self.evaluator = evaluator
        self.enrich = enrich
        self.finality_depth = finality_depth

    async def _route(
        self,
        cur: psycopg.AsyncCursor[Any],
        matches: Sequence[Match],
        out: BatchOutcome,
        instant: list[dict[str, Any]],
    ) -> None:
        """Hold finalized-tier matches; queue instant ones in ``instant`` (written in bulk)."""
        now = int(time.time() * 1000)
        for match in matches:
            record = alert_record(match, fired_at_ms=now, chain_id=self.chain_id)
            if match.tier == "finalized" and not isinstance(match.event, ReorgEvent | LagReading):
                await self.store.hold(cur, record, out)
            else:
                instant.append(record)

    async def apply(self, events: Sequence[tuple[str, dict[str, Any]]]) -> BatchOutcome:
        """Apply decoded ``(record name, datum)`` events of the blocks topic, in order."""
        out = BatchOutcome()
        tip: tuple[int, str] | None = None
        instant: list[dict[str, Any]] = []
        async with self.store.conn.transaction(), self.store.conn.cursor() as cur:
            for name, datum in events:
                if name == REORG:
                    reorg = ReorgEvent(
                        key=datum["idempotency_key"],
                        chain_id=datum["chain_id"],
                        common_ancestor_number=datum["common_ancestor_number"],
                        depth=datum["depth"],
                        orphaned_hashes=tuple(datum["orphaned_hashes"]),
                        detected_at_ms=datum["detected_at_ms"],
                    )
                    await self.store.fire_many(cur, instant, out)  # before they can be retracted
                    instant = []
                    now = int(time.time() * 1000)
                    await self.store.retract(cur, self.chain_id, reorg.orphaned_hashes, now, out)
                    await self._route(cur, self.evaluator.on_reorg(reorg), out, instant)
                    tip = (reorg.common_ancestor_number, datum["common_ancestor_hash"])
                elif name == BLOCK:
                    matches: list[Match] = []
                    for event in self.enrich(datum):
                        matches.extend(self.evaluator.evaluate(event))
                    await self._route(cur, matches, out, instant)
                    tip = (datum["block_number"], datum["block_hash"])
            await self.store.fire_many(cur, instant, out)
            if tip is not None:
                # held matches of blocks now final; a reorg above already dropped orphaned ones
                final = tip[0] - self.finality_depth
                await self.store.finalize(cur, self.chain_id, final, int(time.time() * 1000), out)
                await self.store.advance(cur, self.chain_id, *tip)
        return out

    async def apply_lag(self, reading: LagReading) -> BatchOutcome:
        out = BatchOutcome()
        matches = self.evaluator.on_lag(reading)
        if matches:
            instant: list[dict[str, Any]] = []
            async with self.store.conn.transaction(), self.store.conn.cursor() as cur:
                await self._route(cur, matches, out, instant)
                await self.store.fire_many(cur, instant, out)
        return out
