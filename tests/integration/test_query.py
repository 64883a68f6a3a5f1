"""The query engine on real services (Postgres, the Iceberg catalog, SeaweedFS S3 and a directory):
views that span the cold versions and the hot rows above them as one table, pinned once per
query; limits; refusals; org scoping. (Finalization running under queries, with the follower and
reorgs: tests/integration/test_finalize.py.)"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from dispatcher.datasets.commit import commit_run
from dispatcher.datasets.store import DatasetStore
from dispatcher.query.engine import Limits, QueryEngine, QueryFailed, QueryRefused, QueryResult, QueryTimeout
from tests.integration.test_dataset_commit import _run
from tests.integration.test_iceberg import Place, blocks
from tests.integration.test_iceberg import place as place
from tracekit.datasets import conform, contract

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _hot_blocks(pg_url: str, chain_id: int, first: int, last: int, tag: str) -> None:
    """Blocks ``first..last`` in hot.blocks (hashes tagged ``tag``: not the cold ones)."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.cursor().executemany(
            "INSERT INTO hot.blocks (chain_id, block_number, block_hash, parent_hash, \"timestamp\", author,"
            " gas_used, gas_limit, base_fee_per_gas, extra_data, tx_count, log_count)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 0)",
            [(chain_id, n, "0x" + tag + f"{n:062x}", "0x" + tag + f"{n - 1:062x}", 1_700_000_000 + n,
              "0x" + "22" * 20, 1000 + n, 30_000_000, 7, "0x", n % 3) for n in range(first, last + 1)])


@pytest.fixture
def world(place: Place, pg_url: str) -> Iterator[tuple[QueryEngine, DatasetStore, str, int]]:
    """An org whose blocks version 1 holds 0..19 (cold), and hot blocks 15..29 of its chain (15..19
    overlap the cold version: the view takes those from cold)."""
    org = f"q-{uuid.uuid4().hex[:8]}"
    chain_id = random.randint(1_000_000, 2**40)
    store = DatasetStore(pg_url, org)
    engine = QueryEngine(pg_url, org, chain_id, lambda: place.catalog,
                         (lambda: place.store.pyarrow_filesystem()) if place.s3 is not None else None)
    yield engine, store, org, chain_id
    store.close()


async def _cold(place: Place, pg_url: str, store: DatasetStore, org: str,
                parts: dict[tuple[int, int], pa.Table]) -> None:
    run = await _run(pg_url, org, place, parts)
    commit_run(store, place.catalog, run, namespace=place.namespace)


def _rows(result: QueryResult) -> list[dict[str, Any]]:
    return result.table.to_pylist()


async def test_views_span_cold_and_hot_without_gap_or_double_count(
        world: tuple[QueryEngine, DatasetStore, str, int], place: Place, pg_url: str, tmp_path: Path) -> None:
    engine, store, org, chain_id = world
    await _cold(place, pg_url, store, org, {(0, 9): blocks(0, 9), (10, 19): blocks(10, 19)})
    _hot_blocks(pg_url, chain_id, 15, 29, "bb")

    result = engine.run("select count(*) as n, min(block_number) as lo, max(block_number) as hi,"
                        " count(distinct block_number) as distinct_blocks from blocks")
    assert _rows(result) == [{"n": 30, "lo": 0, "hi": 29, "distinct_blocks": 30}]
    assert (result.pointer_set, dict(result.versions)) == (1, {"blocks": 1})
    assert dict(result.boundaries) == {"blocks": 19}  # no watermark: the highest cold block
    assert result.hot_rows == {"blocks": 10}
    # 17 is cold (the version's hash), 25 hot
    cold = engine.run("select block_hash from blocks where block_number = 17")
    assert _rows(cold) == [{"block_hash": b"a" + (17).to_bytes(8, "big")}]
    hot = engine.run("select block_hash, n_transactions from blocks where block_number = 25")
    assert _rows(hot) == [{"block_hash": bytes.fromhex("bb" + f"{25:062x}"), "n_transactions": 1}]
    assert hot.hot_rows == {"blocks": 1}  # the bound was pushed down: one hot row read

    # the same aggregate over one Parquet file of the same rows, DuckDB alone
    everything = engine.run("select * from blocks order by block_number", limits=Limits(rows=1000)).table
    assert everything.num_rows == 30
    single = tmp_path / "blocks.parquet"
    pq.write_table(conform(everything, contract("blocks")), single)
    sql = "select sum(gas_used) as gas, sum(n_transactions) as txs, count(*) as n from {}"
    with duckdb.connect() as con:
        baseline = con.sql(sql.format(f"read_parquet('{single}')")).to_arrow_table().to_pylist()
    assert _rows(engine.run(sql.format("blocks"))) == baseline


async def test_a_query_keeps_the_versions_it_pinned_through_a_cutover(
        world: tuple[QueryEngine, DatasetStore, str, int], place: Place, pg_url: str) -> None:
    engine, store, org, _ = world
    await _cold(place, pg_url, store, org, {(0, 9): blocks(0, 9)})
    sql = "select min(block_hash) as h from blocks"
    before = _rows(engine.run(sql))

    class CutoverMidQuery(QueryEngine):
        """Cuts a new version over after the query pinned and before it runs."""

    replaced: list[int] = []
    real = QueryEngine._execute

    def execute(self: QueryEngine, *args: Any, **kwargs: Any) -> Any:
        if not replaced:
            import asyncio
            import threading

            def commit() -> None:
                asyncio.run(_cold(place, pg_url, store, org, {(0, 9): blocks(0, 9, tag=b"z")}))

            thread = threading.Thread(target=commit)
            thread.start()
            thread.join()
            replaced.append(store.pin().seq)
        return real(self, *args, **kwargs)

    CutoverMidQuery._execute = execute  # type: ignore[method-assign]
    mid = CutoverMidQuery(engine.url, org, engine.chain_id, lambda: place.catalog,
                          (lambda: place.store.pyarrow_filesystem()) if place.s3 is not None else None)
    during = mid.run(sql)
    assert replaced == [2] and during.pointer_set == 1 and _rows(during) == before  # the old set, whole
    after = engine.run(sql)
    assert after.pointer_set == 2 and _rows(after) == [{"h": b"z" + (0).to_bytes(8, "big")}]
    assert _rows(engine.run(sql, at=1)) == before  # an older set, on request
    with pytest.raises(QueryRefused, match="no pointer set 9"):
        engine.run(sql, at=9)


async def test_limits_refusals_and_org_scoping(
        world: tuple[QueryEngine, DatasetStore, str, int], place: Place, pg_url: str) -> None:
    engine, store, org, chain_id = world
    await _cold(place, pg_url, store, org, {(0, 9): blocks(0, 9)})
    many = engine.run("select block_number from blocks order by 1", limits=Limits(rows=4))
    assert many.truncated and [r["block_number"] for r in _rows(many)] == [0, 1, 2, 3]
    assert not engine.run("select 1 as one", limits=Limits(rows=4)).truncated

    with pytest.raises(QueryTimeout, match="time limit"):
        engine.run("select count(*) from blocks a, blocks b, blocks c, blocks d, blocks e, blocks f,"
                   " blocks g, blocks h, blocks i", limits=Limits(timeout_s=1.0))
    assert _rows(engine.run("select count(*) as n from blocks")) == [{"n": 10}]  # still answering

    for sql, match in [("select * from nope", "unknown-table.*nope is not a table here"),
                       ("copy blocks to '/tmp/x.csv'", "COPY"),
                       ("select 1; select 2", "one-statement"),
                       ("select missing_column from blocks", "missing_column")]:
        with pytest.raises((QueryRefused, QueryFailed), match=match):
            engine.run(sql)

    other = f"q-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for owner, label in ((org, "mine"), (other, "theirs")):
            conn.execute("INSERT INTO state.address_labels (org_id, address, label) VALUES (%s, %s, %s)",
                         (owner, "0x" + "ab" * 20, label))
    assert _rows(engine.run("select label from labels")) == [{"label": "mine"}]
    theirs = QueryEngine(pg_url, other, chain_id, lambda: place.catalog)
    assert _rows(theirs.run("select label from labels")) == [{"label": "theirs"}]
    assert _rows(theirs.run("select count(*) as n from blocks")) == [{"n": 0}]  # no version of theirs


async def test_the_cli_prints_a_table_and_writes_json_csv_parquet_that_load_back(
        world: tuple[QueryEngine, DatasetStore, str, int], place: Place, pg_url: str, tmp_path: Path) -> None:
    if place.s3 is not None:
        pytest.skip("the CLI reads the same engine; its object store settings are tested with the directory")
    _, store, org, chain_id = world
    await _cold(place, pg_url, store, org, {(0, 9): blocks(0, 9)})
    _hot_blocks(pg_url, chain_id, 10, 12, "cc")
    env = {**os.environ, "TRACE_DATABASE_URL": pg_url, "TRACE_ORG_ID": org, "TRACE_CHAIN_ID": str(chain_id),
           "TRACE_OBJECT_STORE": str(tmp_path / "objects")}
    sql = "select block_number, block_hash from blocks where block_number >= 8 order by block_number"

    def trace(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tracecli", "query", *args], env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    shown = trace(sql)
    assert shown.returncode == 0, shown.stderr
    assert "block_number" in shown.stdout and "0x" + "cc" + f"{12:062x}" in shown.stdout
    assert "5 row(s)" in shown.stderr and "pointer set 1, blocks v1" in shown.stderr
    expected = [8, 9, 10, 11, 12]
    as_json = trace(sql, "--format", "json")
    assert [r["block_number"] for r in json.loads(as_json.stdout)] == expected
    assert json.loads(as_json.stdout)[-1]["block_hash"] == "0x" + "cc" + f"{12:062x}"
    for fmt in ("csv", "parquet"):
        out = tmp_path / f"rows.{fmt}"
        done = trace(sql, "--format", fmt, "--output", str(out))
        assert done.returncode == 0, done.stderr
        loaded = pacsv.read_csv(out) if fmt == "csv" else pq.read_table(out)
        assert loaded.column("block_number").to_pylist() == expected
    refused = trace("select * from read_parquet('/etc/passwd')")
    assert refused.returncode != 0 and "error:" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert trace(sql, "--format", "parquet").returncode != 0  # a file format needs --output
    search = [sys.executable, "-m", "tracecli", "datasets", "search", "hash", "--org", org, "--json"]
    found = subprocess.run(search, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert found.returncode == 0, found.stderr
    by_name = {e["name"]: e for e in json.loads(found.stdout)}
    assert "blocks" in by_name and by_name["blocks"]["current_version"] == 1
    assert by_name["blocks"]["rows"] == 13 and by_name["blocks"]["block_range"] == [0, 12]


README_QUERIES = [  # README.md's "Query" section, as a newcomer pastes them
    "select block_number, n_transactions, gas_used from blocks order by block_number desc limit 10",
    "select erc20, count(*) as transfers, sum(value_f64) as volume from transfers where block_number >= 1000"
    " group by erc20 order by transfers desc limit 5",
    "with minted as (select block_number, sum(case action when 'mint' then value_f64"
    " when 'burn' then -value_f64 else 0 end) as net from transfers group by 1)"
    " select block_number, sum(net) over (order by block_number) as supply from minted order by block_number",
]


@pytest.mark.parametrize("sql", README_QUERIES)
async def test_the_readme_queries_run(sql: str, world: tuple[QueryEngine, DatasetStore, str, int],
                                      place: Place, pg_url: str) -> None:
    engine, store, org, _ = world
    await _cold(place, pg_url, store, org, {(0, 9): blocks(0, 9)})
    result = engine.run(sql)
    assert result.table.num_columns >= 2
