"""Backfills end to end into versioned datasets: the dispatcher with its committer (a warehouse
beside the workers' store, on SeaweedFS S3 and in a directory), workers running the real
``cryo_ingest`` against an anvil with a mined history, the Iceberg catalog in the session's
Postgres (each stack's org has its own namespace, ``<org>_chain``).

Shown here: a backfill submitted through the API ends as version 1 of ``blocks``,
``transactions`` and ``logs``, cut over together, and pyiceberg's own catalog (no Trace code
reads the rows) sees the node's chain: every block hash and parent hash, every block's
transactions and logs; the same range again is version 2 with the same rows, none twice; a run
that fails changes nothing readers see; a worker killed (-9) after staging its files never has
one of them in any snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

from dispatcher.cli import warehouse_of
from dispatcher.dag.loader import load_builtin_dag
from dispatcher.dag.spec import DagSpec
from dispatcher.dag.store import deploy, rollback_to
from dispatcher.datasets.commit import chain_namespace
from dispatcher.datasets.store import DatasetStore
from dispatcher.protocol import OutputIn
from dispatcher.worker import OPERATORS, TaskContext
from operators.cryo_ingest import IngestPayload
from operators.cryo_ingest.devhistory import History, build_history
from tests.integration.dispatcher_stack import DispatcherStack, running_dispatcher
from tests.integration.object_stores import TestStore
from tests.integration.test_backfill import _completions_held, _worker_process
from tracekit.iceberg import catalog_uri, s3_properties, warehouse_uri
from tracekit.jsonrpc import RpcClient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

DATASETS = ("blocks", "transactions", "logs")
CHUNK = 10


@pytest.fixture(scope="module")
def chain_url(on_demand_anvil: str) -> str:
    return on_demand_anvil


@pytest.fixture(scope="module")
async def history(chain_url: str) -> History:
    async with RpcClient(chain_url, timeout=60) as rpc:
        mined = await build_history(rpc, blocks=24, tx_per_block=4, seed=11)
        await rpc.call("anvil_mine", 5)  # a `trace worker run` waits for 10 confirmations
        return mined


@pytest.fixture(scope="module")
async def stack(pg_url: str, object_store: TestStore, chain_url: str,
                history: History) -> AsyncIterator[DispatcherStack]:
    warehouse = warehouse_of(object_store.url)  # beside the staged files, as `trace dispatcher run` has it
    async with running_dispatcher(pg_url, object_store, chain_url, warehouse=warehouse,
                                  s3=object_store.s3) as running:
        yield running


@pytest.fixture(autouse=True)
async def _workers_stop(stack: DispatcherStack) -> AsyncIterator[None]:
    yield
    await stack.stop_workers()


# -- readers ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _catalog(stack: DispatcherStack) -> Iterator[SqlCatalog]:
    """pyiceberg's own SQL catalog over the stack's database and warehouse: what any Iceberg
    reader configures (the properties are built with Trace's helpers; the reading is pyiceberg's)."""
    assert stack.warehouse is not None
    properties = {"uri": catalog_uri(stack.pg_url), "warehouse": warehouse_uri(stack.warehouse)}
    if stack.s3 is not None:
        properties |= s3_properties(stack.s3)
    catalog = SqlCatalog("trace", **properties)  # the catalog name the tables are registered under
    try:
        yield catalog
    finally:
        catalog.close()


def _tables(stack: DispatcherStack) -> dict[str, Table]:
    namespace = chain_namespace(stack.config.org_id)  # the org's chain datasets: <org>_chain
    with _catalog(stack) as catalog:
        return {dataset: catalog.load_table((namespace, dataset)) for dataset in DATASETS}


def _read(stack: DispatcherStack) -> dict[str, pa.Table]:
    """What a reader sees now: each table's main, scanned by pyiceberg."""
    return {dataset: table.scan().to_arrow() for dataset, table in _tables(stack).items()}


def _mains(stack: DispatcherStack) -> dict[str, int | None]:
    mains: dict[str, int | None] = {}
    for dataset, table in _tables(stack).items():
        current = table.current_snapshot()
        mains[dataset] = None if current is None else current.snapshot_id
    return mains


def _sorted(table: pa.Table, *keys: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = table.sort_by([(k, "ascending") for k in keys]).to_pylist()
    return rows


async def _node(chain_url: str, first: int, last: int) -> tuple[list[Any], list[Any]]:
    async with RpcClient(chain_url, timeout=60) as rpc:
        blocks = await rpc.batch([("eth_getBlockByNumber", (hex(n), False)) for n in range(first, last + 1)])
        receipts = await rpc.batch([("eth_getBlockReceipts", (hex(n),)) for n in range(first, last + 1)])
    return blocks, receipts


def _assert_the_nodes(read: dict[str, pa.Table], blocks: list[Any], receipts: list[Any]) -> None:
    """The tables hold exactly these blocks, their transactions and their logs."""
    numbers = [int(b["number"], 16) for b in blocks]
    rows = _sorted(read["blocks"], "block_number")
    assert [r["block_number"] for r in rows] == numbers  # every height once
    assert ["0x" + r["block_hash"].hex() for r in rows] == [b["hash"] for b in blocks]
    assert ["0x" + r["parent_hash"].hex() for r in rows] == [b["parentHash"] for b in blocks]
    assert [r["n_transactions"] for r in rows] == [len(b["transactions"]) for b in blocks]
    per_block = dict.fromkeys(numbers, 0)
    for n in read["transactions"].column("block_number").to_pylist():
        per_block[n] += 1
    assert per_block == {n: len(b["transactions"]) for n, b in zip(numbers, blocks, strict=True)}
    assert sorted(read["transactions"].column("transaction_hash").to_pylist()) == sorted(
        bytes.fromhex(h[2:]) for b in blocks for h in b["transactions"])
    logs = [lg for rs in receipts for r in rs for lg in r["logs"]]
    assert read["logs"].num_rows == len(logs) > 0
    assert sorted(zip(read["logs"].column("block_number").to_pylist(),
                      read["logs"].column("log_index").to_pylist(), strict=True)) == sorted(
        (int(lg["blockNumber"], 16), int(lg["logIndex"], 16)) for lg in logs)


# -- a backfill becomes versions -------------------------------------------------------------------


async def test_backfills_become_versions_that_pyiceberg_reads_as_the_nodes_chain(
        stack: DispatcherStack, history: History, chain_url: str) -> None:
    # from genesis: the deploy blocks, the traffic, then a chunk of empty blocks (empty
    # transactions and logs files: a chunk without rows commits too)
    start, end = 0, -(-history.last_block // CHUNK) * CHUNK + 1
    assert end - history.last_block <= 5  # the history fixture mined 5 empty blocks after its last
    await stack.start_worker(slots=4)
    first = await stack.submit(start, end, chunk_size=CHUNK)
    assert (await stack.wait_run(first))["state"] == "succeeded"
    commit = await stack.wait_commit(first)
    assert (commit["state"], commit["versions"]) == ("done", dict.fromkeys(DATASETS, 1)), commit

    empty = {o["dataset_id"] for o in await _outputs(stack, first) if o["rows"] == 0}
    assert empty == {"transactions", "logs"}  # the last chunk's: files without a row

    store = DatasetStore(stack.pg_url, stack.config.org_id)  # what `trace datasets list` shows
    pinned = store.pin()
    assert dict(pinned.pointers) == dict.fromkeys(DATASETS, 1)
    for dataset in DATASETS:
        (version,) = store.versions(dataset)
        assert (version["state"], version["block_start"], version["block_end"]) == ("ready", start, end)
    blocks, receipts = await _node(chain_url, start, end)
    read = _read(stack)
    _assert_the_nodes(read, blocks, receipts)
    assert {d: version["row_count"] for d in DATASETS for version in store.versions(d)} == {
        d: read[d].num_rows for d in DATASETS}

    # the same range again: version 2 of each, the same rows, none twice
    again = await stack.submit(start, end, chunk_size=CHUNK)
    assert (await stack.wait_run(again))["state"] == "succeeded"
    commit = await stack.wait_commit(again)
    assert (commit["state"], commit["versions"]) == ("done", dict.fromkeys(DATASETS, 2)), commit
    assert dict(store.pin().pointers) == dict.fromkeys(DATASETS, 2)
    reread = _read(stack)
    _assert_the_nodes(reread, blocks, receipts)
    keys = {"blocks": ("block_number",), "transactions": ("block_number", "transaction_index"),
            "logs": ("block_number", "log_index")}
    for dataset in DATASETS:
        assert _sorted(reread[dataset], *keys[dataset]) == _sorted(read[dataset], *keys[dataset]), dataset


def _failing_after_staging(block: int) -> Any:
    """The real ingest, except that the chunk holding ``block`` fails once its files are staged."""
    real = OPERATORS["cryo_ingest"]

    async def ingest(ctx: TaskContext) -> Sequence[OutputIn]:
        outputs = await real(ctx)
        chunk = IngestPayload.parse(ctx.payload).chunk
        if chunk.start <= block <= chunk.end:
            raise RuntimeError(f"chunk {chunk} fails after staging its files")
        return outputs

    return ingest


@contextlib.contextmanager
def _one_attempt_per_task(stack: DispatcherStack) -> Iterator[None]:
    """The org's backfill DAG with one attempt per ingest task (a failure fails the run at once
    instead of after four retries), then its version before again."""
    org = stack.config.org_id
    loaded = load_builtin_dag("backfill", org)
    data = loaded.spec.to_json()
    for job in data["jobs"]:
        if job["name"] == "ingest":
            job["retry"]["max_attempts"] = 1
    deployed = deploy(stack.pg_url, DagSpec.model_validate(data), loaded.source, "test")
    assert deployed.created and deployed.previous_version is not None
    try:
        yield
    finally:
        rollback_to(stack.pg_url, org, "backfill", deployed.previous_version)


async def test_a_run_that_fails_changes_nothing_readers_see(stack: DispatcherStack, history: History) -> None:
    start, end = history.first_block, history.last_block
    await stack.start_worker(slots=4)
    committed = await stack.submit(start, start + CHUNK - 1, chunk_size=CHUNK)
    assert (await stack.wait_run(committed))["state"] == "succeeded"
    assert (await stack.wait_commit(committed))["state"] == "done"
    store = DatasetStore(stack.pg_url, stack.config.org_id)
    before, mains, rows = store.pin(), _mains(stack), _read(stack)

    await stack.stop_workers()
    with _one_attempt_per_task(stack):
        await stack.start_worker(slots=4, operators={"cryo_ingest": _failing_after_staging(end)})
        failing = await stack.submit(start, end, chunk_size=CHUNK)  # more blocks than readers see now
        run = await stack.wait_run(failing)
    assert run["state"] == "failed", run
    assert run["progress"]["files"] > 0  # its other chunks staged (and reported) their files
    assert await stack.commit_of(failing) is None  # never queued for the committer
    assert store.pin() == before
    assert _mains(stack) == mains
    after = _read(stack)
    for dataset in DATASETS:
        assert after[dataset].equals(rows[dataset]), dataset


# -- a worker killed after staging -------------------------------------------------------------------


async def test_a_worker_killed_after_staging_has_no_file_in_any_snapshot(
        stack: DispatcherStack, history: History, chain_url: str, tmp_path: Path) -> None:
    """The worker stages its files, then dies (-9) before its completion lands; the next attempt's
    files are committed, the dead attempt's are in no snapshot of any table."""
    start = -(-history.first_block // CHUNK) * CHUNK  # one whole chunk of traffic, 10 blocks deep
    name = f"staged-{uuid.uuid4().hex[:6]}"
    with _completions_held(stack.base_url) as (proxy_url, held):
        proc = _worker_process(stack, name, tmp_path, rpc_url=chain_url, dispatcher_url=proxy_url)
        try:
            run_id = await stack.submit(start, start + CHUNK - 1, chunk_size=CHUNK)
            deadline = time.monotonic() + 60
            while not held.is_set():
                assert proc.poll() is None, (tmp_path / "worker.log").read_text()
                assert time.monotonic() < deadline, "the worker never completed its chunk"
                await asyncio.sleep(0.05)
            staged = stack.objects.keys(f"_staging/{run_id}/")
            os.kill(proc.pid, signal.SIGKILL)  # its files are staged, its completion is in flight
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert len(staged) == 3 and all(".1/" in key for key in staged)  # attempt 1: one file per dataset
    await stack.start_worker(slots=2)
    assert (await stack.wait_run(run_id, timeout=60))["state"] == "succeeded"
    commit = await stack.wait_commit(run_id)
    assert commit["state"] == "done", commit

    dead = {stack.objects.uri_of(key) for key in staged}
    live = {o["uri"] for o in await _outputs(stack, run_id)}
    assert len(live) == 3 and not dead & live
    in_any: set[str] = set()
    for table in _tables(stack).values():
        for snapshot in table.snapshots():
            in_any |= _files(table, snapshot.snapshot_id)
        current = table.current_snapshot()
        assert current is not None
        assert live & _files(table, current.snapshot_id)  # the live attempt's file of this dataset is read
    assert not dead & in_any
    assert set(stack.objects.keys(f"_staging/{run_id}/")) >= set(staged)  # left where no reader looks


def _files(table: Table, snapshot_id: int) -> set[str]:
    """The data files of a snapshot, as pyiceberg plans a scan of it."""
    return {task.file.file_path for task in table.scan(snapshot_id=snapshot_id).plan_files()}


async def _outputs(stack: DispatcherStack, run_id: str) -> list[dict[str, Any]]:
    async with stack.api() as api:
        r = await api.get(f"/v1/runs/{run_id}/outputs")
        assert r.status_code == 200, r.text
        return list(r.json())
