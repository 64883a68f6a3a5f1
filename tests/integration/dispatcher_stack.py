"""A real dispatcher (API + outbox publisher + reaper, uvicorn on a free port) and in-process
workers, for the dispatcher's integration tests. Each stack serves its own org, so tests sharing
the session's database never see each other's tasks; its workers write to the org's part of the
given object store (S3 or a directory). With a ``warehouse`` the dispatcher also runs its
committer: succeeded runs become dataset versions in Iceberg tables there (the org's namespace,
``<org>_chain``; the catalog in the database), checked against the stack's node."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from devstack.process import free_port
from dispatcher.api.deps import ApiConfig
from dispatcher.queue import QueueDriver, open_queue
from dispatcher.service import serve_dispatcher
from dispatcher.worker import OPERATORS, DispatcherClient, Worker, WorkerEnv
from dispatcher.worker.context import Operator
from operators.cryo_ingest import chain_name
from tests.integration.object_stores import TestStore
from tracekit.iceberg import open_catalog
from tracekit.objects import S3Config

CHAIN_ID = 10143
API_TOKEN = "api-test-token"
WORKER_TOKEN = "worker-test-token"


@dataclass
class DispatcherStack:
    config: ApiConfig
    base_url: str
    pg_url: str
    objects: TestStore  # where this stack's workers stage files
    rpc_url: str
    warehouse: str | None = None  # the committer's Iceberg warehouse (None: runs are not committed)
    s3: S3Config | None = None  # how to reach the warehouse on S3
    workers: list[tuple[Worker, asyncio.Task[None], QueueDriver]] = field(default_factory=list)

    def api(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=30,
                                 headers={"Authorization": f"Bearer {API_TOKEN}"})

    async def submit(self, start: int, end: int, *, chunk_size: int, engine: str = "rpc",
                     datasets: tuple[str, ...] = ("blocks", "transactions", "logs")) -> str:
        async with self.api() as api:
            r = await api.post("/v1/backfills", json={
                "chain_id": CHAIN_ID, "datasets": list(datasets), "start_block": start, "end_block": end,
                "chunk_size": chunk_size, "engine": engine})
            assert r.status_code == 201, r.text
            return str(r.json()["run_id"])

    async def run(self, run_id: str) -> dict[str, Any]:
        async with self.api() as api:
            r = await api.get(f"/v1/runs/{run_id}")
            assert r.status_code == 200, r.text
            return dict(r.json())

    async def wait_run(self, run_id: str, states: tuple[str, ...] = ("succeeded", "failed", "canceled"),
                       timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = await self.run(run_id)
            if run["state"] in states:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {run['state']} after {timeout}s: {run['progress']}")
            await asyncio.sleep(0.1)

    async def commit_of(self, run_id: str) -> dict[str, Any] | None:
        """The run's row in ``state.run_commits`` (state, attempts, last_error, versions), if any."""
        async with await psycopg.AsyncConnection.connect(self.pg_url) as conn:
            cur = await conn.execute("SELECT state, attempts, last_error, versions FROM state.run_commits"
                                     " WHERE run_id = %s", (run_id,))
            row = await cur.fetchone()
        if row is None:
            return None
        return dict(zip(("state", "attempts", "last_error", "versions"), row, strict=True))

    async def wait_commit(self, run_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the committer is done with the run (``done`` or ``failed``); its row."""
        deadline = time.monotonic() + timeout
        while True:
            commit = await self.commit_of(run_id)
            if commit is not None and commit["state"] != "pending":
                return commit
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} not committed after {timeout}s: {commit}")
            await asyncio.sleep(0.1)

    async def start_worker(self, *, slots: int = 4, operators: Mapping[str, Operator] | None = None,
                           rpc_url: str | None = None, name: str | None = None,
                           idle_poll_s: float = 1.0) -> Worker:
        queue = await open_queue("pg", database_url=self.pg_url, visibility_s=5.0)
        client = DispatcherClient(self.base_url, WORKER_TOKEN)
        warehouse, s3, pg_url = self.warehouse, self.s3, self.pg_url
        catalog = None if warehouse is None else lambda: open_catalog(pg_url, warehouse, s3)
        env = WorkerEnv(store=self.objects.store, store_url=self.objects.url,
                        rpc_urls={CHAIN_ID: rpc_url or self.rpc_url}, confirmations=0, wait_confirmed_s=5.0,
                        open_catalog=catalog)
        worker = Worker(name or f"w{len(self.workers)}-{uuid.uuid4().hex[:6]}", client, queue,
                        {**OPERATORS, **(operators or {})}, env, slots=slots, idle_poll_s=idle_poll_s)
        self.workers.append((worker, asyncio.create_task(worker.run()), queue))
        return worker

    async def stop_workers(self) -> None:
        for worker, task, queue in self.workers:
            worker.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 30)
            await worker.client.aclose()
            await queue.close()
        self.workers.clear()


@contextlib.asynccontextmanager
async def running_dispatcher(pg_url: str, objects: TestStore | Path, rpc_url: str, *, lease_s: float = 2.0,
                             warehouse: str | None = None, s3: S3Config | None = None, **config: Any
                             ) -> AsyncIterator[DispatcherStack]:
    """``objects``: a store (the org's files go under ``ORG/`` in it) or a directory (``DIR/ORG``).
    ``warehouse`` (``s3://BUCKET/PREFIX`` with ``s3``, or a ``file://`` directory): the dispatcher
    runs its committer, which keeps its Iceberg tables there (their catalog in ``pg_url``)."""
    org = f"t{uuid.uuid4().hex[:10]}"
    if isinstance(objects, Path):
        (objects / org).mkdir(parents=True, exist_ok=True)
        store = TestStore.open((objects / org).as_uri(), None)
    else:
        store = objects.child(org)
    port = free_port()
    config = ApiConfig(api_token=API_TOKEN, worker_token=WORKER_TOKEN, task_secret=b"k" * 32,
                       database_url=pg_url, org_id=org, chains={CHAIN_ID: chain_name(CHAIN_ID)},
                       lease_s=lease_s, warehouse=warehouse, s3=s3, rpc_urls={CHAIN_ID: rpc_url}, **config)
    queue = await open_queue("pg", database_url=pg_url)
    stop = asyncio.Event()
    serving = asyncio.create_task(serve_dispatcher(config, queue, host="127.0.0.1", port=port,
                                                   reap_every_s=0.2, stop=stop))
    base = f"http://127.0.0.1:{port}"
    stack = DispatcherStack(config, base, pg_url, store, rpc_url, warehouse, s3)
    try:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            while True:
                if serving.done():
                    serving.result()  # raises what stopped it
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/openapi.json")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise AssertionError("the dispatcher did not start within 30 s")
                await asyncio.sleep(0.05)
        yield stack
    finally:
        await stack.stop_workers()
        stop.set()
        await asyncio.wait_for(serving, 30)
