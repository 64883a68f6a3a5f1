"""Backfills end to end on real parts: the dispatcher (API, outbox publisher, reaper) on the
session's Postgres, the Postgres wake-up queue, workers, and an anvil with a mined history; every
test runs twice, with the workers' object store on S3 (SeaweedFS) and in a directory.

Shown here: files equal to the node's chain (read back through the store, each with the sha256 it
was reported with) and identical between the ``rpc`` and ``cryo`` engines; ``traces`` only when
asked for; duplicate wake-ups never run a task twice at once; a worker killed (-9) mid-task, or
after staging its files, loses its lease and the task completes once on another, whose files
alone are reported; cancel stops a running backfill; a graceful stop hands leases back; a poison
wake-up ends in the dead table.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from dispatcher.protocol import TASK_QUEUE, OutputIn
from dispatcher.queue import open_queue
from dispatcher.worker import TaskContext
from operators.cryo_ingest import chain_name
from operators.cryo_ingest.devhistory import History, build_history
from tests.integration.dispatcher_stack import (
    CHAIN_ID,
    WORKER_TOKEN,
    DispatcherStack,
    running_dispatcher,
)
from tests.integration.object_stores import TestStore
from tracekit.jsonrpc import RpcClient, hex_to_int

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def chain_url(on_demand_anvil: str) -> str:
    return on_demand_anvil  # mines on demand: a fixed history


@pytest.fixture(scope="module")
async def history(chain_url: str) -> History:
    async with RpcClient(chain_url, timeout=60) as rpc:
        mined = await build_history(rpc, blocks=120, tx_per_block=6, seed=3)
        await rpc.call("anvil_mine", 2)
        return mined


@pytest.fixture(scope="module")
async def stack(pg_url: str, object_store: TestStore, chain_url: str,
                history: History) -> AsyncIterator[DispatcherStack]:
    async with running_dispatcher(pg_url, object_store, chain_url) as running:
        yield running


@pytest.fixture(autouse=True)
async def _workers_stop(stack: DispatcherStack) -> AsyncIterator[None]:
    """Each test starts its own workers; what it leaves running is stopped and canceled."""
    yield
    await stack.stop_workers()
    async with stack.api() as api:
        for run in (await api.get("/v1/runs", params={"state": "running"})).json()["runs"]:
            await api.post(f"/v1/runs/{run['run_id']}/cancel")


def _aligned(history: History, size: int = 10) -> int:
    """The first block of the history that starts a chunk (so ranges split into whole chunks)."""
    return -(-history.first_block // size) * size


async def _rows(pg_url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        return list(await (await conn.execute(sql, args)).fetchall())


async def _outputs(stack: DispatcherStack, run_id: str) -> list[dict[str, Any]]:
    async with stack.api() as api:
        r = await api.get(f"/v1/runs/{run_id}/outputs")
        assert r.status_code == 200, r.text
        return list(r.json())


def _table(stack: DispatcherStack, outputs: Sequence[dict[str, Any]], dataset: str) -> pa.Table:
    """The dataset's committed files, read through the store; each file's bytes must have the
    sha256 its output was reported with."""
    files = sorted((o for o in outputs if o["dataset_id"] == dataset), key=lambda o: o["block_start"])
    tables = []
    for o in files:
        table, sha256 = stack.objects.read(o["uri"])
        assert sha256 == o["sha256"], o
        tables.append(table)
    return pa.concat_tables(tables)


def _staged_prefix(stack: DispatcherStack, run_id: str) -> str:
    """What every committed file's URI starts with: the store's URL of ``_staging/<run>/``."""
    return stack.objects.uri_of(f"_staging/{run_id}/x").removesuffix("x")


# -- the files are the chain's -------------------------------------------------------------------


async def test_a_backfill_writes_the_nodes_rows_and_both_engines_agree(
        stack: DispatcherStack, history: History, chain_url: str) -> None:
    start, end = history.first_block, history.first_block + 99
    await stack.start_worker(slots=4)
    await stack.start_worker(slots=4)
    rpc_run = await stack.submit(start, end, chunk_size=25, engine="rpc")
    cryo_run = await stack.submit(start, end, chunk_size=25, engine="cryo")
    for run_id in (rpc_run, cryo_run):
        run = await stack.wait_run(run_id)
        assert run["state"] == "succeeded", run
        p = run["progress"]
        # aligned chunks: [start..end] in buckets of 25 blocks
        chunks = len(range(start // 25, end // 25 + 1))
        assert (p["chunks_total"], p["chunks_done"], p["blocks_done"]) == (chunks, chunks, 100)
        assert p["tasks"] == {"succeeded": chunks + 1} and p["files"] == 3 * chunks

    rpc_out, cryo_out = await _outputs(stack, rpc_run), await _outputs(stack, cryo_run)
    assert {o["dataset_id"] for o in rpc_out} == {"blocks", "transactions", "logs"}  # no traces unasked
    for o in rpc_out:  # file names follow cryo's: {chain}__{dataset}__{start:08d}_to_{end:08d}.parquet
        bounds = f"{o['block_start']:08d}_to_{o['block_end']:08d}"
        assert o["uri"].rpartition("/")[2] == f"{chain_name(CHAIN_ID)}__{o['dataset_id']}__{bounds}.parquet"
        assert o["uri"].startswith(_staged_prefix(stack, rpc_run))  # s3://datasets/... or file:///...
        assert o["uri"].startswith("s3://datasets/" if stack.objects.kind == "s3" else "file:///")
    for dataset in ("blocks", "transactions", "logs"):
        assert _table(stack, rpc_out, dataset).equals(_table(stack, cryo_out, dataset)), dataset

    blocks, txs, logs = (_table(stack, rpc_out, d) for d in ("blocks", "transactions", "logs"))
    async with RpcClient(chain_url, timeout=60) as rpc:
        node = await rpc.batch([("eth_getBlockByNumber", (hex(n), False)) for n in range(start, end + 1)])
        receipts = await rpc.batch([("eth_getBlockReceipts", (hex(n),)) for n in range(start, end + 1)])
    assert blocks.column("block_number").to_pylist() == list(range(start, end + 1))
    assert [b.hex() for b in blocks.column("block_hash").to_pylist()] == [b["hash"][2:] for b in node]
    assert blocks.column("timestamp").to_pylist() == [hex_to_int(b["timestamp"], "t") for b in node]
    tx_per_block = {n: 0 for n in range(start, end + 1)}
    for n in txs.column("block_number").to_pylist():
        tx_per_block[n] += 1
    assert tx_per_block == {hex_to_int(b["number"], "n"): len(b["transactions"]) for b in node}
    assert sum(tx_per_block.values()) > 300
    assert sorted(t.hex() for t in txs.column("transaction_hash").to_pylist()) == sorted(
        h[2:] for b in node for h in b["transactions"])
    assert logs.num_rows == sum(len(r["logs"]) for rs in receipts for r in rs) > 0


async def test_traces_are_written_when_a_backfill_asks_for_them(
        stack: DispatcherStack, history: History, chain_url: str) -> None:
    start = _aligned(history)
    await stack.start_worker(slots=4)
    run_id = await stack.submit(start, start + 19, chunk_size=10, datasets=("blocks", "traces"))
    run = await stack.wait_run(run_id)
    assert run["state"] == "succeeded", run
    assert run["progress"]["files"] == 4  # 2 chunks x 2 datasets
    outputs = await _outputs(stack, run_id)
    traces = _table(stack, outputs, "traces")
    async with RpcClient(chain_url, timeout=60) as rpc:
        node = await rpc.batch([("trace_block", (hex(n),)) for n in range(start, start + 20)])
    assert traces.num_rows == sum(len(t) for t in node) == run["progress"]["rows"]["traces"] > 0
    assert traces.column("transaction_hash").to_pylist() == [
        bytes.fromhex(t["transactionHash"][2:]) for ts in node for t in ts]


# -- leases --------------------------------------------------------------------------------------


def _recording(log: list[tuple[str, int, float, float]], seconds: float) -> Any:
    async def ingest(ctx: TaskContext) -> Sequence[OutputIn]:
        began = time.monotonic()
        await ctx.sleep(seconds)
        log.append((str(ctx.task_id), ctx.task.attempt, began, time.monotonic()))
        return []

    return ingest


async def test_duplicate_wakeups_never_run_a_task_twice_at_once(stack: DispatcherStack,
                                                               history: History) -> None:
    ran: list[tuple[str, int, float, float]] = []
    run_id = await stack.submit(_aligned(history), _aligned(history) + 79, chunk_size=10)
    queue = await open_queue("pg", database_url=stack.pg_url)
    try:
        for _ in range(3):  # every task of the run woken four times over, while workers compete
            await stack.start_worker(slots=3, operators={"cryo_ingest": _recording(ran, 0.3)})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            tasks = await _rows(stack.pg_url, "SELECT task_id::text FROM state.tasks WHERE run_id = %s",
                                run_id)
            await queue.publish(TASK_QUEUE, [t[0].encode() for t in tasks] * 4)
            if (await stack.run(run_id))["state"] != "running":
                break
            await asyncio.sleep(0.1)
    finally:
        await queue.close()
    run = await stack.wait_run(run_id)
    assert run["state"] == "succeeded" and run["progress"]["chunks_done"] == 8
    ours = [r for r in ran if r[0] in {t[0] for t in tasks}]
    assert sorted(r[0] for r in ours) == sorted({r[0] for r in ours}) and len(ours) == 8  # each ran once
    attempts = await _rows(stack.pg_url, "SELECT count(*) FROM state.task_attempts a JOIN state.tasks t"
                                         " USING (task_id) WHERE t.run_id = %s", run_id)
    assert attempts == [(9,)]  # 1 split + 8 chunks, one attempt each
    assert sum(w.stats.claimed for w, _, _ in stack.workers) == 9


def _worker_process(stack: DispatcherStack, name: str, tmp_path: Path, *, rpc_url: str,
                    dispatcher_url: str | None = None) -> subprocess.Popen[bytes]:
    """`trace worker run` with one slot, writing to the stack's store (S3 or the directory)."""
    env = {**os.environ, "TRACE_DISPATCHER_URL": dispatcher_url or stack.base_url,
           "TRACE_WORKER_TOKEN": WORKER_TOKEN, "TRACE_API_TOKEN": "unused",
           "TRACE_DISPATCHER_SECRET": "unused", "TRACE_QUEUE": "pg", "TRACE_DATABASE_URL": stack.pg_url,
           "TRACE_RPC_URL": rpc_url,
           "TRACE_CHAIN_ID": str(CHAIN_ID), "TRACE_HOME": str(tmp_path / "home"), **stack.objects.env()}
    argv = [sys.executable, "-m", "tracecli", "worker", "run", "--slots", "1", "--id", name]
    with (tmp_path / "worker.log").open("wb") as worker_log:
        return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=worker_log)


def _stalled_rpc() -> tuple[socket.socket, str]:
    """An endpoint that accepts connections and never answers (a hung provider)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


async def test_a_worker_killed_mid_task_loses_its_lease_and_the_task_completes_once(
        stack: DispatcherStack, history: History, tmp_path: Path) -> None:
    hung, hung_url = _stalled_rpc()
    name = f"doomed-{uuid.uuid4().hex[:6]}"
    proc = _worker_process(stack, name, tmp_path, rpc_url=hung_url)
    try:
        run_id = await stack.submit(_aligned(history), _aligned(history) + 9, chunk_size=10)
        deadline = time.monotonic() + 60
        while not await _rows(stack.pg_url, "SELECT 1 FROM state.tasks WHERE run_id = %s AND job = 'ingest'"
                                            " AND state = 'leased' AND lease_owner = %s", run_id, name):
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, "the worker never leased the chunk"
            await asyncio.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)  # mid-task: its RPC call hangs
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        hung.close()
    await stack.start_worker(slots=2)  # a healthy worker, with the real node
    run = await stack.wait_run(run_id, timeout=60)
    assert run["state"] == "succeeded", run
    (task_id,) = [r[0] for r in await _rows(
        stack.pg_url, "SELECT task_id FROM state.tasks WHERE run_id = %s AND job = 'ingest'", run_id)]
    attempts = await _rows(stack.pg_url, "SELECT attempt, worker, outcome FROM state.task_attempts"
                                         " WHERE task_id = %s ORDER BY attempt", task_id)
    assert [(a, w == name, o) for a, w, o in attempts] == [(1, True, "lease_expired"),
                                                            (2, False, "succeeded")]
    outputs = await _outputs(stack, run_id)
    assert sorted(o["dataset_id"] for o in outputs) == ["blocks", "logs", "transactions"]
    assert {o["attempt"] for o in outputs} == {2}  # only the live attempt's files were committed
    async with stack.api() as api:
        detail = (await api.get(f"/v1/tasks/{task_id}")).json()
    assert detail["state"] == "succeeded" and detail["failures"] == 1


@contextlib.contextmanager
def _completions_held(upstream: str) -> Iterator[tuple[str, threading.Event]]:
    """A proxy in front of the dispatcher that forwards everything but completions with outputs:
    those it holds unanswered (the worker waits on them). Yields its URL and an event set once
    it holds one."""
    held, stop = threading.Event(), threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"] or 0))
            if self.path == "/internal/task-complete" and json.loads(body).get("outputs"):
                held.set()
                stop.wait(60)  # never answered while the test runs
                return
            request = urllib.request.Request(upstream + self.path, data=body, method="POST", headers={
                k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")})
            try:
                with urllib.request.urlopen(request, timeout=30) as reply:
                    status, data = reply.status, reply.read()
            except urllib.error.HTTPError as exc:
                status, data = exc.code, exc.read()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", held
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_a_worker_killed_after_staging_its_files_never_has_them_reported(
        stack: DispatcherStack, history: History, chain_url: str, tmp_path: Path) -> None:
    """The worker stages its files, then dies (-9) before its completion lands: the files stay in
    the store under its attempt's prefix, and the run reports only the next attempt's."""
    name = f"staged-{uuid.uuid4().hex[:6]}"
    with _completions_held(stack.base_url) as (proxy_url, held):
        proc = _worker_process(stack, name, tmp_path, rpc_url=chain_url, dispatcher_url=proxy_url)
        try:
            run_id = await stack.submit(_aligned(history) + 10, _aligned(history) + 19, chunk_size=10)
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
    (task_id,) = [r[0] for r in await _rows(
        stack.pg_url, "SELECT task_id FROM state.tasks WHERE run_id = %s AND job = 'ingest'", run_id)]
    assert [k.rpartition("/")[0] for k in staged] == [f"_staging/{run_id}/{task_id}.1"] * 3
    await stack.start_worker(slots=2)
    run = await stack.wait_run(run_id, timeout=60)
    assert run["state"] == "succeeded", run
    attempts = await _rows(stack.pg_url, "SELECT attempt, worker, outcome FROM state.task_attempts"
                                         " WHERE task_id = %s ORDER BY attempt", task_id)
    assert [(a, w == name, o) for a, w, o in attempts] == [(1, True, "lease_expired"),
                                                            (2, False, "succeeded")]
    outputs = await _outputs(stack, run_id)
    assert sorted(o["dataset_id"] for o in outputs) == ["blocks", "logs", "transactions"]
    assert {o["attempt"] for o in outputs} == {2}
    assert not {o["uri"] for o in outputs} & {stack.objects.uri_of(k) for k in staged}
    assert all(f"/_staging/{run_id}/{task_id}.2/" in o["uri"] for o in outputs)
    assert set(stack.objects.keys(f"_staging/{run_id}/{task_id}.1/")) == set(staged)  # left, unreported
    for dataset in ("blocks", "transactions", "logs"):  # the dead attempt wrote the same bytes
        (dead,) = [k for k in staged if f"__{dataset}__" in k]
        (live,) = [o for o in outputs if o["dataset_id"] == dataset]
        assert stack.objects.read(stack.objects.uri_of(dead))[1] == live["sha256"]


# -- cancel, shutdown, poison --------------------------------------------------------------------


def _forever(started: list[str]) -> Any:
    """An operator that stages two files (one from memory, one from a local file), then runs until
    it is stopped."""

    async def ingest(ctx: TaskContext) -> Sequence[OutputIn]:
        data = f"{ctx.task_id}".encode() * 100
        first = await ctx.stage_bytes("part-0.bin", data)
        assert (first.key, first.bytes, first.sha256) == (
            f"{ctx.staging_prefix}part-0.bin", len(data), hashlib.sha256(data).hexdigest())
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "local.bin").write_bytes(data * 3)
            second = await ctx.stage_file("sub/part-1.bin", Path(tmp) / "local.bin")
        assert second.uri == ctx.uri(f"{ctx.staging_prefix}sub/part-1.bin") and second.bytes == 3 * len(data)
        started.append(str(ctx.task_id))
        while True:
            await ctx.sleep(0.05)

    return ingest


async def test_cancel_stops_a_running_backfill(stack: DispatcherStack, history: History) -> None:
    started: list[str] = []
    worker = await stack.start_worker(slots=8, operators={"cryo_ingest": _forever(started)})
    run_id = await stack.submit(_aligned(history), _aligned(history) + 59, chunk_size=10)
    deadline = time.monotonic() + 30
    while len(started) < 4:  # the job's max_concurrency is 4: two chunks stay queued
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert len(stack.objects.keys(f"_staging/{run_id}/")) == 8  # two files of each running task
    async with stack.api() as api:
        r = await api.post(f"/v1/runs/{run_id}/cancel")
        assert r.status_code == 200 and r.json()["state"] in ("canceling", "canceled")
    run = await stack.wait_run(run_id, timeout=20)
    assert run["state"] == "canceled"
    assert run["progress"]["tasks"] == {"succeeded": 1, "canceled": 6}
    assert len(started) == 4 and worker.stats.canceled == 4 and worker.running == 0
    assert await _outputs(stack, run_id) == []
    assert stack.objects.keys(f"_staging/{run_id}/") == []  # canceled attempts delete what they staged


async def test_a_stopping_worker_hands_its_tasks_back(stack: DispatcherStack, history: History) -> None:
    started: list[str] = []
    first = await stack.start_worker(slots=4, operators={"cryo_ingest": _forever(started)})
    run_id = await stack.submit(_aligned(history), _aligned(history) + 19, chunk_size=10)
    deadline = time.monotonic() + 30
    while len(started) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await stack.stop_workers()  # SIGTERM: release, not fail
    assert first.stats.released == 2
    assert stack.objects.keys(f"_staging/{run_id}/") == []  # released attempts delete their files
    rows = await _rows(stack.pg_url, "SELECT state, failures FROM state.tasks"
                                     " WHERE run_id = %s AND job = 'ingest'", run_id)
    assert rows == [("queued", 0), ("queued", 0)]
    await stack.start_worker(slots=4)  # the real operator finishes them at once, without a backoff
    run = await stack.wait_run(run_id, timeout=30)
    assert run["state"] == "succeeded" and run["progress"]["files"] == 6


async def test_a_poison_wakeup_ends_in_the_dead_table(stack: DispatcherStack) -> None:
    body = f"not-a-task-{uuid.uuid4().hex}".encode()
    queue = await open_queue("pg", database_url=stack.pg_url)
    try:
        await queue.publish(TASK_QUEUE, [body])
    finally:
        await queue.close()
    worker = await stack.start_worker(slots=2, idle_poll_s=0.2)
    deadline = time.monotonic() + 30
    while not (dead := await _rows(stack.pg_url, "SELECT receives, last_error FROM state.queue_dead"
                                                 " WHERE body = %s", body)):
        assert time.monotonic() < deadline, "the poison message never reached the dead table"
        await asyncio.sleep(0.1)
    assert dead[0][0] >= 5 and "not a task id" in dead[0][1]
    assert worker.stats.poison >= 5
    assert not await _rows(stack.pg_url, "SELECT 1 FROM state.queue_messages WHERE body = %s", body)
