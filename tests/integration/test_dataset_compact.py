"""Compaction end to end, on SeaweedFS S3 and on a directory: a backfill in chunks of 10 blocks
leaves several files in partition 0 of ``blocks``, ``transactions`` and ``logs`` (version 1); the
real dispatcher (API, committer, integrity check against the node) and a worker running the real
``parquet_compact`` make version 2 of a dataset whose partition holds ONE file with the same rows,
started through the API and through ``trace datasets compact``. Asking twice makes one run; the
previous version stays readable at its snapshot; a rollback restores it. Bad input (an unknown
dataset, a partition not aligned or without rows, a derived dataset) is one line and changes
nothing; nothing to compact is a line and exit 0."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psycopg
import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table
from typer.testing import CliRunner

from dispatcher.cli import warehouse_of
from dispatcher.datasets.cli import app as datasets_cli
from dispatcher.datasets.commit import chain_namespace, follow_pointers
from dispatcher.datasets.store import DatasetStore
from dispatcher.queue import open_queue
from dispatcher.worker import OPERATORS, DispatcherClient, Worker, WorkerEnv
from operators.cryo_ingest import chain_name
from operators.cryo_ingest.devhistory import History, build_history
from tests.integration.dispatcher_stack import CHAIN_ID, WORKER_TOKEN, DispatcherStack, running_dispatcher
from tests.integration.object_stores import TestStore
from tracekit.datasets import contract
from tracekit.iceberg import catalog_uri, open_catalog, s3_properties, warehouse_uri
from tracekit.jsonrpc import RpcClient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

DATASETS = ("blocks", "transactions", "logs")
CHUNK = 10


@pytest.fixture(scope="module")
def chain_url(on_demand_anvil: str) -> str:
    return on_demand_anvil


@pytest.fixture(scope="module")
async def history(chain_url: str) -> History:
    async with RpcClient(chain_url, timeout=60) as rpc:
        mined = await build_history(rpc, blocks=24, tx_per_block=3, seed=5)
        await rpc.call("anvil_mine", 2)
        return mined


@pytest.fixture(scope="module")
async def stack(pg_url: str, object_store: TestStore, chain_url: str,
                history: History) -> AsyncIterator[DispatcherStack]:
    warehouse = warehouse_of(object_store.url)  # as `trace dispatcher run` and `trace datasets` have it
    async with running_dispatcher(pg_url, object_store, chain_url, warehouse=warehouse,
                                  s3=object_store.s3) as running:
        yield running


@pytest.fixture(autouse=True)
async def _workers_stop(stack: DispatcherStack) -> AsyncIterator[None]:
    yield
    await stack.stop_workers()


async def _start_worker(stack: DispatcherStack) -> None:
    """A worker that can open the warehouse's catalog, as `trace worker run` builds it."""
    assert stack.warehouse is not None
    url, warehouse, s3 = stack.pg_url, stack.warehouse, stack.s3
    queue = await open_queue("pg", database_url=url, visibility_s=5.0)
    env = WorkerEnv(store=stack.objects.store, store_url=stack.objects.url,
                    rpc_urls={CHAIN_ID: stack.rpc_url}, confirmations=0, wait_confirmed_s=5.0,
                    database_url=url, open_catalog=lambda: open_catalog(url, warehouse, s3))
    worker = Worker(f"compact-{uuid.uuid4().hex[:6]}", DispatcherClient(stack.base_url, WORKER_TOKEN), queue,
                    dict(OPERATORS), env, slots=4, idle_poll_s=0.5)
    stack.workers.append((worker, asyncio.create_task(worker.run()), queue))


@pytest.fixture(scope="module")
async def backfilled(stack: DispatcherStack, history: History) -> int:
    """Blocks 0..last of the history in chunks of 10: version 1 of each dataset, several files in
    partition 0. Returns the last block."""
    last = history.last_block
    await _start_worker(stack)
    try:
        run = await stack.submit(0, last, chunk_size=CHUNK)
        assert (await stack.wait_run(run))["state"] == "succeeded"
        commit = await stack.wait_commit(run)
        assert (commit["state"], commit["versions"]) == ("done", dict.fromkeys(DATASETS, 1)), commit
    finally:
        await stack.stop_workers()
    return last


@pytest.fixture
def store(stack: DispatcherStack) -> Iterator[DatasetStore]:
    """The org's dataset store (what `trace datasets` reads)."""
    with DatasetStore(stack.pg_url, stack.config.org_id) as opened:
        yield opened


# -- readers (pyiceberg's own catalog: no Trace code reads the rows) ----------------------------------


@contextlib.contextmanager
def _tables(stack: DispatcherStack) -> Iterator[dict[str, Table]]:
    assert stack.warehouse is not None
    properties = {"uri": catalog_uri(stack.pg_url), "warehouse": warehouse_uri(stack.warehouse)}
    if stack.s3 is not None:
        properties |= s3_properties(stack.s3)
    catalog = SqlCatalog("trace", **properties)
    try:
        namespace = chain_namespace(stack.config.org_id)
        yield {d: catalog.load_table((namespace, d)) for d in DATASETS}
    finally:
        catalog.close()


def _files(table: Table, snapshot_id: int) -> list[str]:
    return sorted(task.file.file_path for task in table.scan(snapshot_id=snapshot_id).plan_files())


def _rows(table: Table, snapshot_id: int | None, dataset: str) -> list[dict[str, Any]]:
    """The snapshot's rows (None: main's), sorted by the contract's sort keys."""
    scan = table.scan(snapshot_id=snapshot_id) if snapshot_id else table.scan()
    read: pa.Table = scan.to_arrow()
    keys = contract(dataset).sort_keys
    rows: list[dict[str, Any]] = read.sort_by([(k, "ascending") for k in keys]).to_pylist()
    return rows


def _snapshot(store: DatasetStore, dataset: str, version: int) -> int:
    return store.snapshots({dataset: version})[dataset]


async def _compact(stack: DispatcherStack, dataset: str, body: dict[str, Any] | None = None
                   ) -> tuple[int, Any]:
    async with stack.api() as api:
        r = await api.post(f"/v1/datasets/{dataset}/compact", json=body)
        return r.status_code, r.json()


async def _compact_runs(stack: DispatcherStack) -> int:
    async with await psycopg.AsyncConnection.connect(stack.pg_url) as conn:
        cur = await conn.execute("SELECT count(*) FROM state.runs WHERE org_id = %s AND dag = 'compact'",
                                 (stack.config.org_id,))
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


def _cli(stack: DispatcherStack, object_store: TestStore, monkeypatch: pytest.MonkeyPatch,
         *args: str) -> Any:
    """``trace datasets ARGS`` as a user runs it, against the stack's database and warehouse."""
    for key, value in {**object_store.env(), "TRACE_DATABASE_URL": stack.pg_url,
                       "TRACE_CHAIN_ID": str(CHAIN_ID)}.items():
        monkeypatch.setenv(key, value)
    return CliRunner().invoke(datasets_cli, [*args, "--org", stack.config.org_id])


# -- compaction --------------------------------------------------------------------------------------


async def test_compaction_makes_a_version_with_one_file_per_partition_and_the_same_rows(
        stack: DispatcherStack, object_store: TestStore, backfilled: int, store: DatasetStore,
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert dict(store.pin().pointers) == dict.fromkeys(DATASETS, 1)
    v1 = {d: _snapshot(store, d, 1) for d in DATASETS}
    with _tables(stack) as tables:
        before = {d: _rows(tables[d], v1[d], d) for d in DATASETS}
        files_before = {d: _files(tables[d], v1[d]) for d in DATASETS}
    assert all(len(files_before[d]) >= 3 for d in DATASETS), files_before  # chunks of 10 blocks
    assert before["logs"] and before["transactions"]

    # through the API; asked twice before any worker runs: one run
    status, first = await _compact(stack, "logs")
    assert status == 201, first
    assert (first["version"], first["created"], first["remaining"]) == (1, True, [])
    part = first["partition"]
    log_blocks = [r["block_number"] for r in before["logs"]]  # the blocks the files cover
    low, high = min(log_blocks), max(log_blocks)
    assert (part["start"], part["end"], part["first_block"], part["last_block"]) == (0, 9_999, low, high)
    assert (part["files"], part["rows"]) == (len(files_before["logs"]), len(before["logs"]))
    status, again = await _compact(stack, "logs", {"min_files": 2})
    assert status == 200 and again["run_id"] == first["run_id"] and again["created"] is False, again
    run = await stack.run(first["run_id"])
    assert run["params"] == {
        "dataset": "logs", "start_block": low, "end_block": high, "chain_id": CHAIN_ID,
        "chain": chain_name(CHAIN_ID),
        "inputs": {"logs": {"version": 1, "table": f"{chain_namespace(stack.config.org_id)}.logs",
                            "snapshot_id": v1["logs"]}}}

    await _start_worker(stack)
    assert (await stack.wait_run(first["run_id"]))["state"] == "succeeded"
    commit = await stack.wait_commit(first["run_id"])
    assert (commit["state"], commit["versions"]) == ("done", {"logs": 2}), commit
    assert await _compact_runs(stack) == 1

    # through the CLI (in a thread: the dispatcher and the worker run on this event loop)
    result = await asyncio.to_thread(_cli, stack, object_store, monkeypatch, "compact", "blocks")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"blocks partition 0..9999 (blocks 0..{backfilled}) of version 1: "
                               f"{len(files_before['blocks'])} files, {len(before['blocks'])} rows -> run "
                               ), lines
    assert lines[1:] == ["  committed: blocks version 2",
                         "compacted 1 partition(s) of blocks: version 2 is current"]

    pointers = dict(store.pin().pointers)
    assert pointers == {"blocks": 2, "transactions": 1, "logs": 2}
    with _tables(stack) as tables:
        for dataset in ("blocks", "logs"):
            v2 = _snapshot(store, dataset, 2)
            table = tables[dataset]
            current = table.current_snapshot()
            assert current is not None and current.snapshot_id == v2  # main follows the cutover
            (only,) = _files(table, v2)  # partition 0 now holds exactly one file
            first_block, last_block = (0, backfilled) if dataset == "blocks" else (low, high)
            assert only.endswith(f"__{dataset}__{first_block:08d}_to_{last_block:08d}.parquet"), only
            assert _rows(table, None, dataset) == before[dataset]  # the same rows
            assert _files(table, v1[dataset]) == files_before[dataset]  # the previous version stays readable
            assert _rows(table, v1[dataset], dataset) == before[dataset]
            written = table.scan(snapshot_id=v2).to_arrow()  # in the contract's sort order
            keys = contract(dataset).sort_keys
            assert written.select(list(keys)).equals(written.sort_by([(k, "ascending") for k in keys])
                                                     .select(list(keys)))
        (version,) = [v for v in store.versions("logs") if v["version"] == 2]
        assert (version["state"], version["file_count"]) == ("ready", 1)
        assert version["row_count"] == len(before["logs"])
        assert (version["block_start"], version["block_end"]) == (low, high)

    # nothing left to compact: a line, exit 0, no run
    result = await asyncio.to_thread(_cli, stack, object_store, monkeypatch, "compact", "logs")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == ("nothing to compact: no partition of logs version 2 has 2 files or more "
                                     "(1 partition(s), at most 1 file(s) each)")
    status, body = await _compact(stack, "logs")
    assert status == 200 and body["run_id"] is None and body["detail"].startswith("nothing to compact"), body
    assert await _compact_runs(stack) == 2

    # a rollback restores the version before blocks' compaction: its files and rows
    async with stack.api() as api:
        r = await api.post("/v1/datasets/rollback", json={"reason": "test"})
        assert r.status_code == 200, r.text
    assert dict(store.pin().pointers) == {"blocks": 1, "transactions": 1, "logs": 2}
    with contextlib.closing(open_catalog(stack.pg_url, stack.warehouse or "", stack.s3)) as catalog:
        follow_pointers(store, catalog, namespace=chain_namespace(stack.config.org_id))
    with _tables(stack) as tables:
        current = tables["blocks"].current_snapshot()
        assert current is not None and current.snapshot_id == v1["blocks"]
        assert _files(tables["blocks"], current.snapshot_id) == files_before["blocks"]
        assert _rows(tables["blocks"], None, "blocks") == before["blocks"]


async def test_bad_input_is_one_line_and_changes_nothing(
        stack: DispatcherStack, object_store: TestStore, backfilled: int, store: DatasetStore,
        monkeypatch: pytest.MonkeyPatch) -> None:
    store.ensure_dataset("daily_volume", table_name="derived.daily_volume", kind="derived")
    pinned, runs = store.pin(), await _compact_runs(stack)
    cases = [
        (("nope",), 404, "dataset_not_found", f"no dataset 'nope' in org '{stack.config.org_id}'"),
        (("blocks", "--partition", "5"), 422, "compact_refused",
         "block 5 is not the first block of a partition: partitions are 10000 blocks wide"),
        (("blocks", "--partition", "10000"), 422, "compact_refused",
         "partition 10000..19999 of blocks version"),
        (("daily_volume",), 422, "compact_refused",
         "daily_volume is a derived dataset; only the chain datasets"),
    ]
    for args, status, error, message in cases:
        body = {"partition": int(args[2])} if len(args) > 1 else None
        got, answer = await _compact(stack, args[0], body)
        assert (got, answer["error"]) == (status, error), answer
        assert message in answer["detail"], answer
        result = await asyncio.to_thread(_cli, stack, object_store, monkeypatch, "compact", *args)
        assert result.exit_code == 1 and isinstance(result.exception, Exception), result.output
        text = str(result.exception)
        assert message in text and "\n" not in text, text
    # not compacting a partition with fewer files than asked for is no error
    result = await asyncio.to_thread(_cli, stack, object_store, monkeypatch, "compact", "transactions",
                                     "--partition", "0", "--min-files", "1000")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("nothing to compact: partition 0..9999 of transactions version 1 "
                                    "has "), result.output
    assert result.output.strip().endswith("file(s), fewer than --min-files 1000")
    assert store.pin() == pinned and await _compact_runs(stack) == runs

    # authorised and audited like every endpoint
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        r = await http.post("/v1/datasets/blocks/compact", json={})
        assert r.status_code == 401, r.text
    audited = "SELECT actor, status FROM state.audit_log WHERE org_id = %s AND method = 'POST' AND path = %s"
    async with await psycopg.AsyncConnection.connect(stack.pg_url) as conn:
        cur = await conn.execute(audited, (stack.config.org_id, "/v1/datasets/nope/compact"))
        assert await cur.fetchall() == [("api-token", 404)]
        cur = await conn.execute(audited, (stack.config.org_id, "/v1/datasets/blocks/compact"))
        assert ("anonymous", 401) in await cur.fetchall()
