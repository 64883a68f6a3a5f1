"""The follower's durable state in Postgres: cursor, canonical window and emitted reorgs.

Written only after the broker confirmed the events of a step, in one transaction, so a crash at
any point leaves the cursor at or behind what consumers can read: the restarted follower
re-emits at most a step's worth of events, with the same idempotency keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from operators.block_follower.reorg import BlockRef, Event, NewBlock, Reorg
from operators.block_follower.transform import reorg_key


class CursorStore:
    def __init__(self, conn: psycopg.AsyncConnection[Any], chain_id: int, window_size: int) -> None:
        self.conn = conn
        self.chain_id = chain_id
        self.window_size = window_size

    @classmethod
    async def connect(cls, url: str, chain_id: int, window_size: int) -> CursorStore:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=False)
        return cls(conn, chain_id, window_size)

    async def close(self) -> None:
        await self.conn.close()

    async def load_window(self) -> list[BlockRef]:
        async with self.conn.cursor() as cur:
            await cur.execute(
                "SELECT block_number, block_hash, parent_hash FROM state.follower_window"
                " WHERE chain_id = %s ORDER BY block_number DESC LIMIT %s",
                (self.chain_id, self.window_size),
            )
            rows = await cur.fetchall()
        await self.conn.commit()
        refs = [BlockRef(int(n), str(h), str(p)) for n, h, p in reversed(rows)]
        # keep only the linked suffix (a window is always a chain)
        linked: list[BlockRef] = []
        for ref in refs:
            if linked and (ref.number != linked[-1].number + 1 or ref.parent_hash != linked[-1].hash):
                linked = []
            linked.append(ref)
        return linked

    async def commit(self, events: Sequence[Event[Any]], head: BlockRef | None) -> None:
        """Record delivered ``events`` (in order) and advance the cursor to the last block."""
        tip: BlockRef | None = None
        async with self.conn.transaction(), self.conn.cursor() as cur:
            for event in events:
                if isinstance(event, Reorg):
                    await cur.execute(
                        "DELETE FROM state.follower_window WHERE chain_id = %s AND block_number > %s",
                        (self.chain_id, event.ancestor.number),
                    )
                    await cur.execute(
                        "INSERT INTO state.reorgs (chain_id, idempotency_key, common_ancestor_number,"
                        " common_ancestor_hash, depth, orphaned_hashes, replacement_hashes)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                        (self.chain_id, reorg_key(self.chain_id, event), event.ancestor.number,
                         event.ancestor.hash, event.depth, [r.hash for r in event.orphaned],
                         list(event.replacement_hashes)),
                    )
                    tip = event.ancestor
                elif isinstance(event, NewBlock):
                    tip = event.block.ref
            blocks = [e.block.ref for e in events if isinstance(e, NewBlock)]
            if blocks:
                await cur.executemany(
                    "INSERT INTO state.follower_window (chain_id, block_number, block_hash, parent_hash)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (chain_id, block_number)"
                    " DO UPDATE SET block_hash = excluded.block_hash, parent_hash = excluded.parent_hash",
                    [(self.chain_id, r.number, r.hash, r.parent_hash) for r in blocks],
                )
            if tip is not None:
                await cur.execute(
                    "DELETE FROM state.follower_window WHERE chain_id = %s AND block_number <= %s",
                    (self.chain_id, tip.number - self.window_size),
                )
                await cur.execute(
                    "INSERT INTO state.follower_cursor AS c (chain_id, block_number, block_hash,"
                    " head_number, head_hash, head_seen_at, updated_at)"
                    " VALUES (%s, %s, %s, %s, %s, now(), now())"
                    " ON CONFLICT (chain_id) DO UPDATE SET block_number = excluded.block_number,"
                    " block_hash = excluded.block_hash, head_number = excluded.head_number,"
                    " head_hash = excluded.head_hash, head_seen_at = excluded.head_seen_at,"
                    " updated_at = excluded.updated_at",
                    (self.chain_id, tip.number, tip.hash,
                     head.number if head else None, head.hash if head else None),
                )
