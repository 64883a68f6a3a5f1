"""``POST /v1/query`` on a running dispatcher: answers within its limits, refuses with the rule,
interrupts at the time limit while answering others, caps the org's concurrent queries (429),
and writes every query to state.query_log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from dispatcher.cli import warehouse_of
from tests.integration.dispatcher_stack import CHAIN_ID, DispatcherStack, running_dispatcher
from tests.integration.object_stores import TestStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FIRST = 900_000_000  # far above any other test's blocks of this chain
HEAVY = ("select count(*) from blocks a, blocks b, blocks c, blocks d, blocks e, blocks f, blocks g "
         f"where a.block_number >= {FIRST}")


@pytest.fixture(scope="module")
async def stack(pg_url: str, object_store: TestStore, on_demand_anvil: str) -> AsyncIterator[DispatcherStack]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM hot.blocks WHERE chain_id = %s AND block_number >= %s", (CHAIN_ID, FIRST))
        rows = [(CHAIN_ID, n, "0x" + f"{n:064x}", "0x" + f"{n - 1:064x}", n, 21_000, n % 4)
                for n in range(FIRST, FIRST + 40)]
        conn.cursor().executemany(
            "INSERT INTO hot.blocks (chain_id, block_number, block_hash, parent_hash, \"timestamp\","
            " gas_used, tx_count, log_count) VALUES (%s, %s, %s, %s, %s, %s, %s, 0)", rows)
    warehouse = warehouse_of(object_store.url)
    async with running_dispatcher(pg_url, object_store, on_demand_anvil, warehouse=warehouse,
                                  s3=object_store.s3, query_concurrency=1, query_timeout_s=20.0) as running:
        yield running
    with psycopg.connect(pg_url, autocommit=True) as conn:  # the session's chain is other tests' too
        conn.execute("DELETE FROM hot.blocks WHERE chain_id = %s AND block_number >= %s", (CHAIN_ID, FIRST))


async def test_queries_answer_refuse_time_out_queue_and_are_logged(stack: DispatcherStack) -> None:
    async with stack.api() as api:
        sql = f"select count(*) as n, sum(n_transactions) as txs from blocks where block_number >= {FIRST}"
        r = await api.post("/v1/query", json={"sql": sql})
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["rows"] == [{"n": 40, "txs": sum(n % 4 for n in range(FIRST, FIRST + 40))}]
        assert [c["name"] for c in answer["columns"]] == ["n", "txs"] and not answer["truncated"]
        sql = f"select block_hash from blocks where block_number >= {FIRST} order by block_number"
        r = await api.post("/v1/query", json={"sql": sql, "limit": 3})
        assert r.json()["truncated"] and r.json()["rows"][0] == {"block_hash": "0x" + f"{FIRST:064x}"}

        r = await api.post("/v1/query", json={"sql": "select * from read_csv('/etc/passwd')"})
        assert r.status_code == 422 and r.json()["error"] == "query_refused", r.text
        r = await api.post("/v1/query", json={"sql": "select nope from blocks"})
        assert r.status_code == 422 and r.json()["error"] == "query_failed" and "nope" in r.json()["detail"]
        assert (await api.post("/v1/query", json={"sql": ""})).status_code == 422

        # one slot: a long query holds it; the next waits, then gets 429; the long one is interrupted
        long = asyncio.create_task(api.post("/v1/query", json={"sql": HEAVY, "timeout_s": 4}))
        await asyncio.sleep(0.5)  # the long query is running (it takes the slot at once)
        r = await api.post("/v1/query", json={"sql": "select 1 as one"})
        assert r.status_code == 429 and r.json()["error"] == "too_many_queries", r.text
        r = await long
        assert r.status_code == 408 and r.json()["error"] == "query_timeout", r.text
        r = await api.post("/v1/query", json={"sql": "select 1 as one"})
        assert r.status_code == 200 and r.json()["rows"] == [{"one": 1}]  # still answering

    with psycopg.connect(stack.pg_url) as conn:
        rows = conn.execute("SELECT actor, door, status, rows, datasets FROM state.query_log"
                            " WHERE org_id = %s ORDER BY id", (stack.config.org_id,)).fetchall()
    statuses = [r[2] for r in rows]
    assert statuses == ["ok", "ok", "refused", "failed", "timeout", "ok"], rows
    assert rows[0] == ("api-token", "api", "ok", 1, ["blocks"])


async def test_the_catalog_describes_every_view_and_searches(stack: DispatcherStack) -> None:
    with psycopg.connect(stack.pg_url, autocommit=True) as conn:
        before = conn.execute("SELECT block_number, block_hash, head_number FROM state.follower_cursor"
                              " WHERE chain_id = %s", (CHAIN_ID,)).fetchone()
        conn.execute("INSERT INTO state.follower_cursor (chain_id, block_number, block_hash, head_number)"
                     " VALUES (%s, %s, 'x', %s) ON CONFLICT (chain_id) DO UPDATE SET head_number = %s,"
                     " block_number = %s", (CHAIN_ID, FIRST + 39, FIRST + 45, FIRST + 45, FIRST + 39))
    try:
        await _catalog_checks(stack)
    finally:  # the cursor of the session's chain as it was
        with psycopg.connect(stack.pg_url, autocommit=True) as conn:
            conn.execute("DELETE FROM state.follower_cursor WHERE chain_id = %s", (CHAIN_ID,))
            if before is not None:
                conn.execute("INSERT INTO state.follower_cursor (chain_id, block_number, block_hash,"
                             " head_number) VALUES (%s, %s, %s, %s)", (CHAIN_ID, *before))


async def _catalog_checks(stack: DispatcherStack) -> None:
    async with stack.api() as api:
        r = await api.get("/v1/catalog")
        assert r.status_code == 200, r.text
        views = {e["name"]: e for e in r.json()}
        assert set(views) >= {"blocks", "transactions", "logs", "traces", "transfers", "stake_changes",
                              "prices", "labels", "alerts"}
        blocks = views["blocks"]
        assert blocks["kind"] == "chain" and blocks["current_version"] is None  # hot only in this org
        assert {"name": "block_number", "type": "long", "description": "Block number"} in blocks["columns"]
        assert blocks["block_range"][1] == FIRST + 39 and blocks["blocks_behind_head"] == 6
        assert blocks["rows"] >= 40 and views["labels"]["kind"] == "state"
        r = await api.get("/v1/catalog", params={"q": "erc20"})
        assert [e["name"] for e in r.json()] == ["transfers"]  # a column's name
        assert (await api.get("/v1/catalog", headers={"Authorization": "Bearer wrong"})).status_code == 401
