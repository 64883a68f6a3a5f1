"""The Aggregator's read of the hot tables on a real Postgres (``aggregate_batch``): one batch in
one snapshot, only the canonical block's rows (an orphaned block's rows a sink has not deleted yet
stay hot), values in the contracts, text that CSV must quote read back as written, and the
refusals: a batch not yet final, a gap, blocks that do not link, rows missing. Each test works on
a chain id of its own, removed at the end."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg import sql

from operators.aggregator import Batch, HotGap, HotInconsistent, NotYetFinal, aggregate_batch
from tracekit.datasets import contract

TABLES = ("blocks", "transactions", "logs", "transfers", "stake_changes")
TRANSFER = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
ODD_ACTION = 'mint, "quoted"\nsecond line \\ tab\t'  # every character CSV must quote or escape


def _h(*parts: object) -> str:
    return "0x" + "".join(f"{p:x}" if isinstance(p, int) else str(p) for p in parts).rjust(64, "0")


def _a(n: int) -> str:
    return "0x" + f"{n:x}".rjust(40, "0")


@pytest.fixture
def chain(pg_url: str) -> Iterator[int]:
    chain_id = random.randrange(10**6, 10**9)
    yield chain_id
    with psycopg.connect(pg_url) as conn:
        for table in TABLES:
            conn.execute(f"DELETE FROM hot.{table} WHERE chain_id = %s", (chain_id,))


def _insert(cur: psycopg.Cursor[tuple[object, ...]], table: str, **row: object) -> None:
    cur.execute(sql.SQL("INSERT INTO hot.{} ({}) VALUES ({})").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(sql.Placeholder() * len(row))), list(row.values()))


def _fill(url: str, chain_id: int, blocks: int) -> None:
    """Blocks 0..blocks-1, each with 2 transactions and 3 logs (one a Transfer with its
    hot.transfers row), one stake change; block 7 also holds rows of an orphaned block 7."""
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        for n in range(blocks):
            orphan = [_h(n, "0bad")] if n == 7 else []
            _insert(cur, "blocks", chain_id=chain_id, block_number=n, block_hash=_h(n),
                    parent_hash=_h(n - 1) if n else _h(0, "ff"), timestamp=1_700_000_000 + n, author=_a(n),
                    gas_used=42_000 + n, gas_limit=30_000_000, base_fee_per_gas=None if n % 2 else 7,
                    extra_data="0x" if n % 3 else "0xDEADbeef", tx_count=2, log_count=3)
            for i, hash_ in enumerate([_h(n), _h(n), *orphan]):
                _insert(cur, "transactions", chain_id=chain_id, block_number=n, transaction_index=i,
                        transaction_hash=_h(n, "1", i), block_hash=hash_, nonce=i, from_address=_a(i),
                        to_address=None if i else _a(9), value=Decimal(2**255 + n) if i else Decimal(0),
                        input="0x00ff00" if i else "0x", gas_limit=21_000, gas_price=1, gas_used=21_000,
                        success=i == 0, transaction_type=2)
            for i, hash_ in enumerate([_h(n)] * 3 + orphan):
                _insert(cur, "logs", chain_id=chain_id, block_number=n, log_index=i, transaction_index=i % 2,
                        transaction_hash=_h(n, "1", i % 2), block_hash=hash_, address=_a(5),
                        topic0=TRANSFER if i == 0 else None, topic1=_h(1) if i == 0 else None,
                        topic2=_h(2) if i == 0 else None, topic3=None, data="0x" + "00" * i)
            for i, hash_ in enumerate([_h(n), *orphan]):
                _insert(cur, "transfers", chain_id=chain_id, block_number=n, block_hash=hash_,
                        timestamp=1_700_000_000 + n, log_index=i * 5, transaction_hash=_h(n, "1", 0),
                        token=_a(5), from_address=_a(1), to_address=_a(2), amount=Decimal(10**30 + n),
                        action=ODD_ACTION if n == 3 else "transfer", decimals=18,
                        usd_value=Decimal("1.25") if n % 2 else None, idempotency_key=f"{n}:{i}")
                _insert(cur, "stake_changes", chain_id=chain_id, block_number=n, block_hash=hash_,
                        timestamp=1_700_000_000 + n, log_index=1 + i * 5, transaction_hash=_h(n, "1", 1),
                        staking_contract=_a(6), delegator=_a(1), validator=_a(3), amount=Decimal(n),
                        action="delegate", idempotency_key=f"s{n}:{i}")


def _tables(url: str, chain_id: int, batch: Batch, depth: int = 5) -> dict[str, pa.Table]:
    files = aggregate_batch(url, chain_id, "test", batch, finality_depth=depth)
    assert [f.dataset for f in files] == list(TABLES)
    return {f.dataset: pq.read_table(io.BytesIO(f.data)) for f in files}


def test_a_batch_holds_only_the_canonical_rows_in_the_contracts(pg_url: str, chain: int) -> None:
    _fill(pg_url, chain, 30)
    tables = _tables(pg_url, chain, Batch(0, 19))
    for dataset, table in tables.items():
        assert table.schema.equals(contract(dataset).arrow_schema()), dataset
    assert tables["blocks"]["block_number"].to_pylist() == list(range(20))
    assert tables["transactions"].num_rows == 40 and tables["logs"].num_rows == 60  # not block 7's orphans
    assert tables["transfers"].num_rows == 20 and tables["stake_changes"].num_rows == 20
    block = tables["blocks"].to_pylist()[3]
    assert block["extra_data"] == bytes.fromhex("deadbeef") and block["base_fee_per_gas"] is None
    assert block["parent_hash"] == bytes.fromhex(_h(2)[2:]) and block["author"] == bytes.fromhex(_a(3)[2:])
    tx = tables["transactions"].to_pylist()[15]
    assert (tx["block_number"], tx["transaction_index"]) == (7, 1) and tx["to_address"] is None
    assert tx["value_binary"] == (2**255 + 7).to_bytes(32, "big") and tx["value_string"] == str(2**255 + 7)
    assert (tx["input"], tx["n_input_zero_bytes"], tx["n_input_nonzero_bytes"]) == (b"\x00\xff\x00", 2, 1)
    assert tx["success"] is False
    log = tables["logs"].to_pylist()[22]
    assert (log["block_number"], log["log_index"], log["data"], log["topic0"]) == (7, 1, b"\x00", None)
    transfers = tables["transfers"].to_pylist()
    assert transfers[3]["action"] == ODD_ACTION and transfers[4]["action"] == "transfer"
    assert transfers[3]["usd_value"] == 1.25 and transfers[4]["usd_value"] is None
    assert transfers[7]["value_string"] == str(10**30 + 7) and transfers[7]["log_index"] == 0


def test_a_batch_is_refused_until_it_is_final_whole_and_linked(pg_url: str, chain: int) -> None:
    _fill(pg_url, chain, 30)
    with pytest.raises(NotYetFinal, match="not final"):
        _tables(pg_url, chain, Batch(20, 29))
    with psycopg.connect(pg_url) as conn:
        conn.execute("DELETE FROM hot.logs WHERE chain_id = %s AND block_number = 12 AND log_index = 2",
                     (chain,))
    with pytest.raises(HotInconsistent, match=r"hot.logs of chain \d+ lacks rows of blocks 12 \(2 of 3\)"):
        _tables(pg_url, chain, Batch(10, 19))
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE hot.blocks SET parent_hash = %s WHERE chain_id = %s AND block_number = 15",
                     (_h(99), chain))
    with pytest.raises(HotInconsistent, match="blocks 15 of the batch"):
        _tables(pg_url, chain, Batch(10, 19))
    with psycopg.connect(pg_url) as conn:
        conn.execute("DELETE FROM hot.blocks WHERE chain_id = %s AND block_number = 14", (chain,))
    with pytest.raises(HotGap, match=r"misses blocks 14 of the batch blocks 10\.\.19"):
        _tables(pg_url, chain, Batch(10, 19))
    assert _tables(pg_url, chain, Batch(0, 9))["logs"].num_rows == 30  # the batch before is whole
