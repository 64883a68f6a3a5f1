"""The integrity check gates every cutover, on Postgres and Iceberg (SeaweedFS S3 and a directory):
a run with a gap, a parent hash that does not link to the current version, a duplicate key or a
transaction count its headers contradict leaves the pointer set and every table's main as they
were, fails all the run's versions with a reason naming the problem (``DatasetStore.versions``,
the run's commit, the metric); a valid run continues the current version. With the chain's RPC
URL, rows the node (the session's anvil) does not have fail, naming the sampled heights."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from prometheus_client import REGISTRY
from psycopg_pool import AsyncConnectionPool

from devstack.anvil import AnvilSpec
from dispatcher.catalog import JobPolicy, StaticJobCatalog
from dispatcher.completion import Completion, Output
from dispatcher.datasets.commit import IntegrityFailed, commit_run
from dispatcher.datasets.committer import Committer
from dispatcher.datasets.integrity import IntegrityConfig, sample_heights
from dispatcher.datasets.store import DatasetStore
from dispatcher.lease import Fence, RetryPolicy
from dispatcher.runs import NewTask
from dispatcher.store import TaskStore
from tests.integration.conftest import ANVIL_CHAIN_ID
from tests.integration.test_iceberg import Place, blocks, expected, sorted_rows, write
from tests.integration.test_iceberg import place as place
from tracekit.datasets import contract
from tracekit.iceberg import DatasetTable
from tracekit.jsonrpc import RpcClient, hex_to_int

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ONE_SECOND = timedelta(seconds=1)
INGEST = JobPolicy("ingest", "cryo_ingest", writes=("blocks", "transactions"),
                   retry=RetryPolicy(max_attempts=3, initial=ONE_SECOND, maximum=ONE_SECOND))
Parts = dict[tuple[int, int], dict[str, pa.Table]]


async def _run(pg_url: str, org: str, place: Place, parts: Parts, *,
               chain_id: int | None = None) -> uuid.UUID:
    """A succeeded run over the parts' whole range: one task per part stages its datasets' files."""
    start, end = min(r[0] for r in parts), max(r[1] for r in parts)
    params: dict[str, Any] = {"start_block": start, "end_block": end}
    if chain_id is not None:
        params["chain_id"] = chain_id
    tag = uuid.uuid4().hex[:8]
    async with AsyncConnectionPool(pg_url, min_size=1, max_size=4, open=False) as pool:
        tasks = TaskStore(pool, StaticJobCatalog({"ingest": INGEST}), lease=timedelta(seconds=30))
        run = await tasks.submit_run(org_id=org, kind="backfill", dag="backfill", dag_version=1,
                                     params=params, submitted_by="t",
                                     tasks=[NewTask(INGEST, f"{tag}-chunk-{a}", {}) for a, _ in parts])
        leased = await tasks.claim("w", limit=len(parts), org_id=org)
        for task, ((a, b), tables) in zip(sorted(leased, key=lambda t: t.task_id), sorted(parts.items()),
                                          strict=True):
            outputs = []
            prefix = f"_staging/{run.run_id}/{task.task_id}.{task.attempt}"
            for dataset, rows in sorted(tables.items()):
                url = write(place, f"{prefix}/{dataset}__{a:08d}_to_{b:08d}.parquet", rows, contract(dataset))
                outputs.append(Output(dataset, url, rows.num_rows, 1, a, b))
            assert await tasks.complete(Completion(task.task_id, task.attempt, "succeeded",
                                                   outputs=outputs)) is Fence.OK
    return run.run_id


def transactions(headers: pa.Table) -> pa.Table:
    """As many transactions per block as its header's ``n_transactions`` says."""
    counts = zip(headers["block_number"].to_pylist(), headers["n_transactions"].to_pylist(), strict=True)
    keys = [(n, i) for n, count in counts for i in range(count)]
    n = len(keys)
    return pa.table({
        "block_number": pa.array([k[0] for k in keys], pa.int64()),
        "transaction_index": pa.array([k[1] for k in keys], pa.int32()),
        "transaction_hash": pa.array([f"{k[0]}:{k[1]}".encode() for k in keys], pa.binary()),
        "nonce": pa.array([k[1] for k in keys], pa.int64()), "from_address": pa.array([b"\x01" * 20] * n),
        "to_address": pa.array([b"\x02" * 20] * n), "value_binary": pa.array([b"\x00" * 32] * n),
        "value_string": pa.array(["0"] * n), "value_f64": pa.array([0.0] * n), "input": pa.array([b""] * n),
        "gas_limit": pa.array([21_000] * n, pa.int64()), "gas_used": pa.array([21_000] * n, pa.int64()),
        "gas_price": pa.array([1] * n, pa.int64()), "transaction_type": pa.array([2] * n, pa.int32()),
        "max_priority_fee_per_gas": pa.array([None] * n, pa.int64()),
        "max_fee_per_gas": pa.array([None] * n, pa.int64()), "success": pa.array([True] * n),
        "n_input_bytes": pa.array([0] * n, pa.int32()), "n_input_zero_bytes": pa.array([0] * n, pa.int32()),
        "n_input_nonzero_bytes": pa.array([0] * n, pa.int32()), "chain_id": pa.array([10143] * n, pa.int64()),
    })


def _without(rows: pa.Table, number: int) -> pa.Table:
    return rows.filter(pc.not_equal(rows["block_number"], number))


def _failures(dataset: str, check: str) -> float:
    return REGISTRY.get_sample_value("trace_dataset_integrity_failures_total",
                                     {"dataset": dataset, "check": check}) or 0.0


def _commit_state(pg_url: str, run_id: uuid.UUID) -> tuple[str, str | None]:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT state, last_error FROM state.run_commits WHERE run_id = %s",
                           (run_id,)).fetchone()
    assert row is not None
    return row[0], row[1]


def _valid(first: int, last: int, tag: bytes = b"a") -> dict[str, pa.Table]:
    rows = blocks(first, last, tag)
    return {"blocks": rows, "transactions": transactions(rows)}


NINETEEN = (19).to_bytes(8, "big").hex()  # blocks() hashes: the tag, then the number in 8 bytes
FAULTS: dict[str, tuple[dict[str, pa.Table], str, str, str]] = {  # blocks 30..39 of a run over 20..39
    "gap": ({"blocks": _without(blocks(30, 39), 33),
             "transactions": transactions(_without(blocks(30, 39), 33))},
            "blocks", "gap", "blocks: gap: block 33 missing"),
    "parent hash": (_valid(30, 39, b"b"), "blocks", "parent hash",  # blocks 20..29 too: tag b, linked to a
                    f"blocks: parent hash: block 20 has parent 0x62{NINETEEN}, "
                    f"but block 19 (current version)'s hash is 0x61{NINETEEN}"),
    "duplicate key": ({"blocks": pa.concat_tables([blocks(30, 39), blocks(35, 35)]),
                       "transactions": transactions(blocks(30, 39))},
                      "blocks", "duplicate key", "blocks: duplicate key: block_number=35 (2 rows)"),
    "transaction count": ({"blocks": blocks(30, 39),
                           "transactions": _without(transactions(blocks(30, 39)), 34)},
                          "transactions", "transaction count",
                          "transactions: transaction count: block 34 has 0 rows, its header says "
                          "n_transactions=4"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_a_faulty_run_fails_its_versions_and_cuts_nothing_over(place: Place, pg_url: str,
                                                                    fault: str) -> None:
    faulty, dataset, check, text = FAULTS[fault]
    parts = {(20, 29): _valid(20, 29, b"b" if fault == "parent hash" else b"a"), (30, 39): faulty}
    org = f"i-{uuid.uuid4().hex[:8]}"
    store = DatasetStore(pg_url, org)
    committer = Committer(pg_url, org, lambda: place.catalog, namespace=place.namespace)
    good = {(0, 9): _valid(0, 9), (10, 19): _valid(10, 19)}
    first = await _run(pg_url, org, place, good)
    assert committer.commit_one() == first and _commit_state(pg_url, first) == ("done", None)
    pinned = store.pin()
    assert dict(pinned.pointers) == {"blocks": 1, "transactions": 1}
    tables = {d: DatasetTable(place.catalog, (place.namespace, d)) for d in ("blocks", "transactions")}
    mains = {d: t.main_snapshot() for d, t in tables.items()}
    failures_before = _failures(dataset, check)

    bad = await _run(pg_url, org, place, parts)
    assert committer.commit_one() == bad
    state, error = _commit_state(pg_url, bad)
    assert state == "failed" and error is not None and text in error  # not retried: failed with the reason
    assert store.pin() == pinned  # no dataset of the run was cut over
    for name, table in tables.items():
        (newest, *_) = store.versions(name)
        assert newest["version"] == 2 and newest["state"] == "failed" and text in newest["failure"]
        assert table.main_snapshot() == mains[name] and table.branches() == {}  # branch dropped
    assert sorted_rows(tables["blocks"].read()) == expected(*(p["blocks"] for p in good.values()))
    assert _failures(dataset, check) == failures_before + 1
    assert committer.commit_one() is None  # nothing left to try


async def test_a_valid_run_continues_the_current_version(place: Place, pg_url: str) -> None:
    org = f"i-{uuid.uuid4().hex[:8]}"
    store = DatasetStore(pg_url, org)
    run1 = await _run(pg_url, org, place, {(0, 9): _valid(0, 9)})
    assert dict(commit_run(store, place.catalog, run1, namespace=place.namespace).versions) == {
        "blocks": 1, "transactions": 1}
    run2 = await _run(pg_url, org, place, {(10, 19): _valid(10, 19), (20, 29): _valid(20, 29)})
    committed = commit_run(store, place.catalog, run2, namespace=place.namespace)
    assert dict(committed.versions) == {"blocks": 2, "transactions": 2}
    assert dict(store.pin().pointers) == {"blocks": 2, "transactions": 2}
    assert [v["state"] for v in store.versions("blocks")] == ["ready", "ready"]
    blocks_table = DatasetTable(place.catalog, (place.namespace, "blocks"))
    assert sorted_rows(blocks_table.read()) == expected(blocks(0, 29))


async def _node_blocks(rpc_url: str, first: int, last: int) -> pa.Table:
    """Blocks ``first..last`` as the node has them (waiting for the node to mine that far)."""
    async with RpcClient(rpc_url) as client:
        for _ in range(200):
            if hex_to_int(await client.call("eth_blockNumber"), "head") >= last:
                break
            await asyncio.sleep(0.1)
        found = await client.batch([("eth_getBlockByNumber", (hex(n), False))
                                    for n in range(first, last + 1)])
    n = len(found)
    return pa.table({
        "block_number": pa.array([hex_to_int(b["number"], "number") for b in found], pa.int64()),
        "block_hash": pa.array([bytes.fromhex(b["hash"][2:]) for b in found]),
        "parent_hash": pa.array([bytes.fromhex(b["parentHash"][2:]) for b in found]),
        "author": pa.array([bytes.fromhex(b["miner"][2:]) for b in found]),
        "gas_used": pa.array([hex_to_int(b["gasUsed"], "gasUsed") for b in found], pa.int64()),
        "extra_data": pa.array([b""] * n),
        "timestamp": pa.array([hex_to_int(b["timestamp"], "timestamp") for b in found], pa.int64()),
        "base_fee_per_gas": pa.array([None] * n, pa.int64()),
        "n_transactions": pa.array([len(b["transactions"]) for b in found], pa.int32()),
        "chain_id": pa.array([ANVIL_CHAIN_ID] * n, pa.int64()),
    })


async def test_rows_the_node_does_not_have_fail_naming_the_sampled_heights(
        place: Place, pg_url: str, anvil: AnvilSpec) -> None:
    org = f"i-{uuid.uuid4().hex[:8]}"
    store = DatasetStore(pg_url, org)
    config = IntegrityConfig(samples=3, rpc_urls={ANVIL_CHAIN_ID: anvil.rpc_url})
    real = await _node_blocks(anvil.rpc_url, 1, 16)
    run1 = await _run(pg_url, org, place, {(1, 8): {"blocks": real.slice(0, 8)}}, chain_id=ANVIL_CHAIN_ID)
    committed = commit_run(store, place.catalog, run1, namespace=place.namespace, integrity=config)
    assert dict(committed.versions) == {"blocks": 1}

    # blocks 9..16 linked to block 8 and to each other, but with hashes the node never made
    ours = real.slice(8, 8)
    fake = [bytes([0xF0 + i]) * 32 for i in range(8)]
    ours = ours.set_column(1, "block_hash", pa.array(fake)).set_column(
        2, "parent_hash", pa.array([real["block_hash"][7].as_py(), *fake[:-1]]))
    run2 = await _run(pg_url, org, place, {(9, 16): {"blocks": ours}}, chain_id=ANVIL_CHAIN_ID)
    with pytest.raises(IntegrityFailed) as caught:
        commit_run(store, place.catalog, run2, namespace=place.namespace, integrity=config)
    (failed, _) = store.versions("blocks")
    assert failed["state"] == "failed" and dict(store.pin().pointers) == {"blocks": 1}
    heights = sample_heights(9, 16, 3, seed=failed["version"])
    assert len(heights) == 3
    for h in heights:
        node_hash = real["block_hash"][h - 1].as_py().hex()
        said = f"blocks: node: block {h}'s hash is 0x{fake[h - 9].hex()}, the node's is 0x{node_hash}"
        assert said in str(caught.value) and said in failed["failure"]
    assert "gap" not in failed["failure"] and "parent hash:" not in failed["failure"]  # only the node
