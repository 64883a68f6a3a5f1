"""The transfer sink's pure planning against a simulated chain and an at-least-once topic.

A chain grows, reorgs (announced by a Reorg record) and is replaced silently (a follower that
crashed after the broker took a block re-emits the new block at that height with no Reorg). The
enrichment topic carries each block's transfers and its BlockEnd, and the reorgs; its producer
may replay a suffix after a restart, and the consumer restarts from any committed batch. A table
applying the planned operations with the writer's rules (delete a run's heights with another
hash, insert if absent, delete a reorg's orphans by hash) must end equal to the canonical chain's
transfers, and replaying the whole topic again must change nothing.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.hot_tables.plan import (
    ApplyReorg,
    InvalidEvent,
    Op,
    TableSet,
    WriteRun,
    plan,
    run_heights,
    staged_rows,
)
from streams.transfer_sink.plan import (
    STAKE_CHANGE_COLUMNS,
    STAKE_CHANGES,
    TRANSFER_COLUMNS,
    TRANSFERS,
    check_stake_change,
    check_transfer,
)
from tracekit.names import BLOCK_END, REORG, STAKE_CHANGE, TRANSFER

CHAIN = 7
CONTRACTS = Path(__file__).resolve().parents[2] / "schemas" / "avro"
Event = tuple[str, dict[str, Any]]


def transfer(number: int, block_hash: str, log_index: int) -> dict[str, Any]:
    return {
        "chain_id": CHAIN, "block_number": number, "block_hash": block_hash, "timestamp": number,
        "log_index": log_index, "transaction_hash": f"0xt{number}{block_hash}", "token": "0xtoken",
        "from_address": "0xa", "to_address": "0xb", "amount": str(10**20 + log_index),
        "action": "transfer", "decimals": 18, "usd_value": "1.5", "from_labels": [],
        "to_labels": ["exchange"], "idempotency_key": f"{CHAIN}:transfer:{number}:{block_hash}:{log_index}",
    }


def block_end(number: int, block_hash: str, count: int) -> dict[str, Any]:
    return {
        "chain_id": CHAIN, "block_number": number, "block_hash": block_hash, "parent_hash": "0xp",
        "timestamp": number, "record_count": count,
        "idempotency_key": f"{CHAIN}:block_end:{number}:{block_hash}",
    }


def reorg(orphaned: list[tuple[int, str, tuple[int, ...]]]) -> dict[str, Any]:
    return {
        "chain_id": CHAIN, "common_ancestor_number": orphaned[0][0] - 1, "common_ancestor_hash": "0xa",
        "depth": len(orphaned), "orphaned_numbers": [n for n, _, _ in orphaned],
        "orphaned_hashes": [h for _, h, _ in orphaned], "replacement_hashes": [], "detected_at_ms": 0,
        "idempotency_key": f"{CHAIN}:reorg:{orphaned[0][0] - 1}:{orphaned[0][1]}",
    }


class Chain:
    """Canonical blocks ``(number, hash, log indices of their transfers)`` and the topic so far,
    with the offsets where a block's or a reorg's records start (where a producer restarts)."""

    def __init__(self) -> None:
        self.blocks: list[tuple[int, str, tuple[int, ...]]] = []
        self.topic: list[Event] = []
        self.boundaries: list[int] = [0]
        self._hashes = itertools.count()

    def _emit(self, events: list[Event]) -> None:
        self.topic.extend(events)
        self.boundaries.append(len(self.topic))

    def mine(self, logs: tuple[int, ...]) -> None:
        number, block_hash = len(self.blocks), f"0x{next(self._hashes):x}"
        self.blocks.append((number, block_hash, logs))
        records: list[Event] = [(TRANSFER, transfer(number, block_hash, i)) for i in logs]
        self._emit([*records, (BLOCK_END, block_end(number, block_hash, len(logs)))])

    def reorg(self, depth: int, replacements: list[tuple[int, ...]], *, announced: bool) -> None:
        depth = min(depth, len(self.blocks))
        if depth == 0:
            return
        orphaned = self.blocks[-depth:]
        del self.blocks[-depth:]
        if announced:
            self._emit([(REORG, reorg(orphaned))])
        else:  # a silent replacement: the new branch reaches at least as high as the old one
            replacements = replacements + [()] * (depth - len(replacements))
        for logs in replacements:
            self.mine(logs)

    def replay_from(self, index: int) -> None:
        """The producer restarted: the topic again from boundary ``index`` on."""
        start = self.boundaries[index]
        for event in self.topic[start:]:
            self.topic.append(event)
        self.boundaries.append(len(self.topic))

    def expected(self) -> dict[tuple[int, int, int], tuple[Any, ...]]:
        records = [(TRANSFER, transfer(n, h, i)) for n, h, logs in self.blocks for i in logs]
        rows = staged_rows(TRANSFERS, records)
        return {(r[0], r[1], r[4]): r for r in rows[0]}


class Table:
    """hot.transfers as the writer changes it (see streams/hot_tables/writer.py)."""

    def __init__(self, tables: TableSet) -> None:
        self.tables = tables
        self.rows: dict[tuple[int, int, int], tuple[Any, ...]] = {}
        columns = tables.tables[0].columns
        self._key = (columns.index("chain_id"), columns.index("block_number"), columns.index("log_index"))
        self._hash = columns.index("block_hash")

    def apply(self, ops: list[Op]) -> None:
        for op in ops:
            if isinstance(op, WriteRun):
                for chain_id, number, block_hash in run_heights(op.records):
                    self._delete({(chain_id, number)}, lambda h, keep=block_hash: h != keep)
                for row in staged_rows(self.tables, op.records)[0]:
                    self.rows.setdefault(tuple(row[i] for i in self._key), row)  # ON CONFLICT DO NOTHING
            else:
                orphans = set(op.reorg["orphaned_hashes"])
                heights = {(op.reorg["chain_id"], n) for n in op.reorg["orphaned_numbers"]}
                self._delete(heights, orphans.__contains__)

    def _delete(self, heights: set[tuple[int, int]], doomed: Any) -> None:
        """Delete the rows at ``heights`` whose block hash is ``doomed``."""
        for key in [k for k, r in self.rows.items() if k[:2] in heights and doomed(r[self._hash])]:
            del self.rows[key]


logs = st.lists(st.integers(0, 5), max_size=3, unique=True).map(lambda xs: tuple(sorted(xs)))
actions = st.one_of(
    st.tuples(st.just("mine"), logs),
    st.tuples(st.just("reorg"), st.integers(1, 4), st.lists(logs, max_size=5), st.booleans()),
    st.tuples(st.just("replay"), st.integers(0, 10_000)),
)


# a consumer's batches: (size, then 0 = commit, 1 = crash and resume from the last commit, 2 = go on)
schedules = st.lists(st.tuples(st.integers(1, 6), st.integers(0, 2)), min_size=1, max_size=12)


def consume(topic: list[Event], table: Table, schedule: list[tuple[int, int]]) -> None:
    """At-least-once: batches as ``schedule`` says (cycled); a crash replays the uncommitted ones."""
    committed, position, crashes = 0, 0, len(schedule)
    for size, then in itertools.cycle(schedule):
        if position >= len(topic):
            return
        batch = topic[position : position + size]
        table.apply(plan(batch, table.tables.item))
        position += len(batch)
        if then == 0:
            committed = position
        elif then == 1 and crashes > 0:
            crashes -= 1
            position = committed


@settings(max_examples=300, deadline=None)
@given(history=st.lists(actions, min_size=1, max_size=25), schedule=schedules)
def test_any_interleaving_of_records_reorgs_and_replays_converges_to_the_canonical_chain(
    history: list[tuple[Any, ...]], schedule: list[tuple[int, int]]
) -> None:
    chain = Chain()
    for action in history:
        if action[0] == "mine":
            chain.mine(action[1])
        elif action[0] == "reorg":
            chain.reorg(action[1], action[2], announced=action[3])
        else:
            chain.replay_from(action[1] % len(chain.boundaries))
    table = Table(TRANSFERS)
    consume(chain.topic, table, schedule)
    assert table.rows == chain.expected()

    table.apply(plan(chain.topic, TRANSFERS.item))  # the whole topic again, in one batch
    assert table.rows == chain.expected()


def test_a_reorg_whose_replacement_has_no_transfers_empties_the_height() -> None:
    chain = Chain()
    chain.mine((0, 1))
    chain.mine((3,))
    chain.reorg(1, [()], announced=True)
    table = Table(TRANSFERS)
    for event in chain.topic:
        table.apply(plan([event], TRANSFERS.item))
    assert sorted(table.rows) == [(CHAIN, 0, 0), (CHAIN, 0, 1)]


def test_a_silent_replacement_is_dropped_by_the_new_blocks_end() -> None:
    chain = Chain()
    chain.mine((0,))
    chain.mine((2, 4))
    chain.reorg(1, [], announced=False)  # the follower never saw block 1 orphaned
    table = Table(TRANSFERS)
    table.apply(plan(chain.topic, TRANSFERS.item))
    assert sorted(table.rows) == [(CHAIN, 0, 0)]


def test_runs_keep_one_block_per_height_and_the_last_copy_of_a_record() -> None:
    a, b = transfer(5, "0xa", 0), transfer(5, "0xb", 1)
    r = reorg([(6, "0xc", ())])
    ops = plan([(TRANSFER, a), (TRANSFER, {**a, "usd_value": "2"}), (BLOCK_END, block_end(5, "0xa", 1)),
                (TRANSFER, b), (REORG, r), (TRANSFER, transfer(6, "0xd", 0))], TRANSFERS.item)
    assert ops == [
        WriteRun(((TRANSFER, b),)),  # block 0xb replaced 0xa at height 5 within the run
        ApplyReorg(r),
        WriteRun(((TRANSFER, transfer(6, "0xd", 0)),)),
    ]
    ops = plan([(TRANSFER, a), (TRANSFER, {**a, "usd_value": "2"}), (BLOCK_END, block_end(5, "0xa", 1))],
               TRANSFERS.item)
    assert ops == [WriteRun(((TRANSFER, {**a, "usd_value": "2"}), (BLOCK_END, block_end(5, "0xa", 1))))]
    assert staged_rows(TRANSFERS, ops[0].records)[0] == [  # type: ignore[union-attr]
        tuple({**a, "usd_value": "2"}[c] for c in TRANSFER_COLUMNS)
    ]


@pytest.mark.parametrize(("columns", "contract"), [(TRANSFER_COLUMNS, "transfer.avsc"),
                                                    (STAKE_CHANGE_COLUMNS, "stake_change.avsc")])
def test_columns_are_the_record_fields(columns: tuple[str, ...], contract: str) -> None:
    fields = [f["name"] for f in json.loads((CONTRACTS / contract).read_text())["fields"]]
    assert list(columns) == fields


@pytest.mark.parametrize(
    ("check", "name", "datum", "message"),
    [
        (check_transfer, STAKE_CHANGE, transfer(1, "0x1", 0),
         "unexpected record type trace.enrich.StakeChange on the transfers topic"),
        (check_stake_change, TRANSFER, transfer(1, "0x1", 0), "on the stake_changes topic"),
        (check_transfer, TRANSFER, {**transfer(1, "0x1", 0), "chain_id": 8}, "event for chain 8 on chain 7"),
        (check_transfer, TRANSFER, {**transfer(1, "0x1", 0), "amount": "-5"}, "amount '-5' is not a uint256"),
        (check_transfer, TRANSFER, {**transfer(1, "0x1", 0), "amount": "1" * 79}, "is not a uint256"),
        (check_transfer, TRANSFER, {**transfer(1, "0x1", 0), "usd_value": "lots"}, "usd_value 'lots'"),
        (check_transfer, TRANSFER, {**transfer(1, "0x1", 0), "usd_value": "NaN"}, "usd_value 'NaN'"),
        (check_transfer, REORG, {**reorg([(2, "0x2", ())]), "orphaned_hashes": []}, "different number"),
    ],
)
def test_invalid_records_are_named(check: Any, name: str, datum: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        check(CHAIN, name, datum)


def test_valid_records_pass() -> None:
    check_transfer(CHAIN, TRANSFER, transfer(1, "0x1", 0))
    check_transfer(CHAIN, TRANSFER, {**transfer(1, "0x1", 0), "usd_value": None})
    check_transfer(CHAIN, BLOCK_END, block_end(1, "0x1", 0))
    check_stake_change(CHAIN, REORG, reorg([(2, "0x2", ())]))
    assert STAKE_CHANGES.rows(BLOCK_END, block_end(1, "0x1", 0)) == ([],)
