"""The integrity checks that gate a cutover, on generated chains: a valid range passes; each
injected fault (a block removed, a row duplicated, a parent hash corrupted, a transaction dropped)
is found and named, and nothing else is reported."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.datasets.integrity import (
    LISTED,
    NodeBlock,
    Problem,
    check_node,
    check_range,
    columns_needed,
    reason,
    sample_heights,
)
from tracekit.datasets import contract

KEYS = {name: contract(name).unique_key for name in ("blocks", "transactions", "logs")}


@dataclass
class Chain:
    """Blocks ``first..last`` with their transactions and logs, and the neighbours either side."""

    first: int
    last: int
    blocks: list[dict[str, Any]]
    transactions: list[dict[str, Any]]
    logs: list[dict[str, Any]]
    neighbours: list[dict[str, Any]]

    def rows(self) -> dict[str, pa.Table]:
        return {"blocks": _blocks(self.blocks),
                "transactions": pa.Table.from_pylist(self.transactions, schema=TRANSACTIONS),
                "logs": pa.Table.from_pylist(self.logs, schema=LOGS)}

    def check(self) -> list[Problem]:
        return check_range(self.first, self.last, self.rows(), KEYS, neighbours=_blocks(self.neighbours))


BLOCKS = pa.schema([("block_number", pa.int64()), ("block_hash", pa.binary()), ("parent_hash", pa.binary()),
                    ("n_transactions", pa.int32())])
TRANSACTIONS = pa.schema([("block_number", pa.int64()), ("transaction_index", pa.int32())])
LOGS = pa.schema([("block_number", pa.int64()), ("log_index", pa.int32()), ("transaction_index", pa.int32())])


def _blocks(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=BLOCKS)


def _hash(seed: int, number: int) -> bytes:
    return hashlib.sha256(f"{seed}:{number}".encode()).digest()


@st.composite
def chains(draw: st.DrawFn) -> Chain:
    first = draw(st.integers(0, 1_000))
    last = first + draw(st.integers(0, 25))
    seed = draw(st.integers(0, 2**32))
    below, above = draw(st.booleans()), draw(st.booleans())
    blocks, transactions, logs, neighbours = [], [], [], []
    for number in range(max(first - 1, 0), last + 2):
        n_tx = draw(st.integers(0, 3))
        block = {"block_number": number, "block_hash": _hash(seed, number),
                 "parent_hash": _hash(seed, number - 1), "n_transactions": n_tx}
        if number < first or number > last:
            if (number < first and below) or (number > last and above):
                neighbours.append(block)
            continue
        blocks.append(block)
        log_index = 0
        for tx in range(n_tx):
            transactions.append({"block_number": number, "transaction_index": tx})
            for _ in range(draw(st.integers(0, 2))):
                logs.append({"block_number": number, "log_index": log_index, "transaction_index": tx})
                log_index += 1
    return Chain(first, last, blocks, transactions, logs, neighbours)


@settings(max_examples=200, deadline=None)
@given(chains())
def test_a_valid_chain_passes(chain: Chain) -> None:
    assert chain.check() == []


@settings(max_examples=200, deadline=None)
@given(chains(), st.data())
def test_a_removed_block_is_a_named_gap(chain: Chain, data: st.DataObject) -> None:
    removed = chain.blocks.pop(data.draw(st.integers(0, len(chain.blocks) - 1)))
    assert chain.check() == [Problem("blocks", "gap", f"block {removed['block_number']} missing")]


@settings(max_examples=200, deadline=None)
@given(chains(), st.data())
def test_a_duplicated_row_is_a_named_duplicate_key(chain: Chain, data: st.DataObject) -> None:
    dataset = data.draw(st.sampled_from([d for d in ("blocks", "transactions", "logs") if getattr(chain, d)]))
    rows: list[dict[str, Any]] = getattr(chain, dataset)
    row = rows[data.draw(st.integers(0, len(rows) - 1))]
    rows.append(dict(row))
    key = ", ".join(f"{k}={row[k]}" for k in KEYS[dataset])
    found = chain.check()
    assert Problem(dataset, "duplicate key", f"{key} (2 rows)") in found
    if dataset == "transactions":  # one row too many for its header, too
        n = row["block_number"]
        count = sum(1 for t in chain.transactions if t["block_number"] == n)
        assert found == [Problem(dataset, "duplicate key", f"{key} (2 rows)"),
                         Problem(dataset, "transaction count",
                                 f"block {n} has {count} rows, its header says n_transactions={count - 1}")]
    else:
        assert len(found) == 1


@settings(max_examples=200, deadline=None)
@given(chains(), st.data())
def test_a_corrupt_parent_hash_is_named_with_both_hashes(chain: Chain, data: st.DataObject) -> None:
    below = [b["block_number"] for b in chain.neighbours if b["block_number"] < chain.first]
    linked = [b for b in chain.blocks if b["block_number"] > chain.first or below]  # has a block before it
    if not linked:
        return
    block = data.draw(st.sampled_from(linked))
    number, previous = block["block_number"], _hash_of(chain, int(block["block_number"]) - 1)
    block["parent_hash"] = b"\xee" * 32
    before = f"block {number - 1}" + (" (current version)" if number == chain.first else "")
    assert chain.check() == [Problem("blocks", "parent hash", f"block {number} has parent 0x{'ee' * 32}, "
                                                              f"but {before}'s hash is 0x{previous.hex()}")]


def _hash_of(chain: Chain, number: int) -> bytes:
    (found,) = [b["block_hash"] for b in chain.blocks + chain.neighbours if b["block_number"] == number]
    assert isinstance(found, bytes)
    return found


@settings(max_examples=200, deadline=None)
@given(chains(), st.data())
def test_a_dropped_transaction_is_a_named_count(chain: Chain, data: st.DataObject) -> None:
    if not chain.transactions:
        return
    dropped = chain.transactions.pop(data.draw(st.integers(0, len(chain.transactions) - 1)))
    n = dropped["block_number"]
    (header,) = [b["n_transactions"] for b in chain.blocks if b["block_number"] == n]
    assert isinstance(header, int)
    assert chain.check() == [Problem("transactions", "transaction count",
                                     f"block {n} has {header - 1} rows, its header says "
                                     f"n_transactions={header}")]


def test_the_last_block_must_be_the_parent_of_the_block_above() -> None:
    blocks = [{"block_number": n, "block_hash": bytes([n]) * 32, "parent_hash": bytes([n - 1]) * 32,
               "n_transactions": 0} for n in range(1, 6)]
    above = [{"block_number": 5, "block_hash": b"\x05" * 32, "parent_hash": b"\xab" * 32,
              "n_transactions": 0}]
    (problem,) = check_range(1, 4, {"blocks": _blocks(blocks[:4])}, KEYS, neighbours=_blocks(above))
    assert str(problem) == (f"blocks: parent hash: block 5 (current version) has parent 0x{'ab' * 32}, "
                            f"but block 4's hash is 0x{'04' * 32}")


def test_problems_read_as_one_line_each_check_listing_at_most_its_limit() -> None:
    present = list(range(0, 100, 2))  # 49 single gaps and a run of 2 missing at the end
    blocks = [{"block_number": n, "block_hash": bytes([n]), "parent_hash": bytes([n - 1 if n else 0]),
               "n_transactions": 0} for n in present]
    found = check_range(0, 100, {"blocks": _blocks(blocks)}, KEYS)
    assert [str(p) for p in found[:2]] == ["blocks: gap: block 1 missing", "blocks: gap: block 3 missing"]
    assert len(found) == LISTED + 1 and str(found[-1]) == f"blocks: gap: and {50 - LISTED} more"
    empty = check_range(5, 9, {"blocks": _blocks([])}, KEYS)
    assert empty == [Problem("blocks", "gap", "blocks 5..9 missing")]
    assert reason(found[:2]) == "blocks: gap: block 1 missing; blocks: gap: block 3 missing"


def test_a_log_of_a_transaction_the_block_does_not_have() -> None:
    blocks = _blocks([{"block_number": 7, "block_hash": b"h", "parent_hash": b"p", "n_transactions": 3}])
    logs = pa.Table.from_pylist([{"block_number": 7, "log_index": 0, "transaction_index": 5}], schema=LOGS)
    assert [str(p) for p in check_range(7, 7, {"blocks": blocks, "logs": logs}, KEYS)] == [
        "logs: log transaction: block 7 has a log of transaction 5, its header says n_transactions=3"]


def test_duplicate_keys_of_binary_and_string_columns_are_named() -> None:
    key = ("block_number", "tag")
    rows = pa.table({"block_number": pa.array([5, 5], pa.int64()), "tag": pa.array([b"\x01", b"\x01"])})
    assert [str(p) for p in check_range(5, 5, {"x": rows}, {"x": key})] == [
        "x: duplicate key: block_number=5, tag=0x01 (2 rows)"]


def test_columns_needed() -> None:
    assert columns_needed("blocks", KEYS["blocks"]) == ["block_number", "block_hash", "parent_hash",
                                                        "n_transactions"]
    assert columns_needed("logs", KEYS["logs"]) == ["block_number", "log_index", "transaction_index"]


@given(st.integers(0, 10**9), st.integers(0, 500), st.integers(0, 8), st.integers(0, 10**6))
def test_sampled_heights_are_distinct_within_the_range_and_the_same_for_a_seed(
        first: int, size: int, n: int, seed: int) -> None:
    last = first + size
    heights = sample_heights(first, last, n, seed=seed)
    assert heights == sorted(set(heights)) and len(heights) == min(n, size + 1)
    assert all(first <= h <= last for h in heights)
    assert heights == sample_heights(first, last, n, seed=seed)


def test_node_disagreements_name_the_height() -> None:
    rows = {"blocks": _blocks([{"block_number": n, "block_hash": bytes([n]), "parent_hash": bytes([n - 1]),
                                "n_transactions": 1} for n in range(1, 6)]),
            "logs": pa.Table.from_pylist([{"block_number": 2, "log_index": 0, "transaction_index": 0}],
                                         schema=LOGS)}
    node = {1: NodeBlock(1, b"\x01", b"\x00", 1, 0), 2: NodeBlock(2, b"\x02", b"\x01", 1, 2),
            3: NodeBlock(3, b"\x33", b"\x02", 1), 4: NodeBlock(4, b"\x04", b"\x44", 1),
            5: NodeBlock(5, b"\x05", b"\x04", 2), 6: None}
    assert [str(p) for p in check_node(rows, node)] == [
        "blocks: node: block 3's hash is 0x03, the node's is 0x33",
        "blocks: node: block 4's parent hash is 0x03, the node's is 0x44",
        "blocks: node: block 5 has n_transactions=1, the node's has 2",
        "blocks: node: the node has no block 6",
        "logs: node: block 2 has 1 rows, the node's receipts have 2 logs",
    ]
    agreeing = {h: NodeBlock(h, bytes([h]), bytes([h - 1]), 1) for h in range(1, 6)}
    assert check_node(rows, agreeing) == []


@pytest.mark.parametrize("n", [0, -1])
def test_no_samples_no_heights(n: int) -> None:
    assert sample_heights(0, 100, n, seed=1) == []
