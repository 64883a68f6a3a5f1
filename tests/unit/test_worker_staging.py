"""The worker's staging in an object store (the in-memory one): each attempt writes under its own
prefix; a committed attempt reports its files with URL, size and sha256; an attempt that fails
leaves nothing staged, and touches no other attempt's files. The dispatcher is a mock transport."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from dispatcher.protocol import OutputIn
from dispatcher.queue.memory import MemoryQueueDriver
from dispatcher.worker import DispatcherClient, TaskContext, Worker, WorkerEnv
from dispatcher.worker.context import Operator, store_uri
from tracekit.objects import S3Config
from tracekit.objects_local import LocalObjectStore
from tracekit.objects_memory import MemoryObjectStore
from tracekit.objects_s3 import S3ObjectStore

RUN = uuid.uuid4()


def _task(attempt: int = 1) -> dict[str, Any]:
    return {"task_id": str(uuid.uuid4()), "run_id": str(RUN), "org_id": "o", "dag": "d", "job": "j",
            "operator": "op", "attempt": attempt, "payload": {}, "reads": [], "writes": ["blocks"],
            "lease_expires_at": (datetime.now(UTC) + timedelta(seconds=60)).isoformat(), "token": "t"}


async def _run(operator: Operator, store: MemoryObjectStore, task: dict[str, Any]) -> dict[str, Any]:
    """Run ``operator`` on ``task`` in a worker whose dispatcher is a mock; the completion it sent."""
    pending, completions = [task], []

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path == "/internal/task-fetch":
            handed, pending[:] = list(pending), []
            return httpx.Response(200, json={"tasks": handed})
        if request.url.path == "/internal/task-complete":
            completions.append(body)
            return httpx.Response(200, json={"status": "ok"})
        return httpx.Response(200, json={"status": "ok", "lease_expires_at": None, "token": "t"})

    client = DispatcherClient("http://dispatcher", "w", transport=httpx.MockTransport(handle))
    env = WorkerEnv(store=store, store_url="memory://test")
    worker = Worker("w1", client, MemoryQueueDriver(), {"op": operator}, env, slots=1, idle_poll_s=0.05)
    running = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(10):
            while not completions:
                await asyncio.sleep(0.01)
    finally:
        worker.stop()
        await running
        await client.aclose()
    return dict(completions[0])


async def _stage(ctx: TaskContext) -> list[OutputIn]:
    data = b"parquet bytes"
    staged = await ctx.stage_bytes("blocks.parquet", data)
    assert staged.key == f"_staging/{RUN}/{ctx.task_id}.{ctx.task.attempt}/blocks.parquet"
    assert staged.key.startswith(ctx.staging_prefix) and ctx.staging_prefix.endswith("/")
    assert (staged.bytes, staged.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    return [OutputIn(dataset_id="blocks", uri=staged.uri, rows=1, bytes=staged.bytes, sha256=staged.sha256)]


async def test_a_committed_attempt_reports_its_files_with_their_checksums() -> None:
    store = MemoryObjectStore()
    task = _task()
    completion = await _run(_stage, store, task)
    key = f"_staging/{RUN}/{task['task_id']}.1/blocks.parquet"
    assert completion["outcome"] == "succeeded"
    assert [(o["uri"], o["bytes"], o["sha256"]) for o in completion["outputs"]] == [
        (f"memory://memory/{key}", 13, hashlib.sha256(b"parquet bytes").hexdigest())]
    assert [k for k, _ in store.list()] == [key]


async def test_a_failed_attempt_deletes_what_it_staged_and_nothing_else() -> None:
    store = MemoryObjectStore()
    task = _task(attempt=2)
    earlier = f"_staging/{RUN}/{task['task_id']}.1/blocks.parquet"  # a dead attempt's file
    store.put(earlier, b"old")

    async def stage_then_fail(ctx: TaskContext) -> Sequence[OutputIn]:
        await _stage(ctx)
        await ctx.stage_bytes("sub/more.bin", b"x")
        raise RuntimeError("boom")

    completion = await _run(stage_then_fail, store, task)
    assert (completion["outcome"], completion["outputs"]) == ("failed", [])
    assert "RuntimeError: boom" in completion["error"]
    assert [k for k, _ in store.list()] == [earlier]


def test_output_uris_are_what_readers_open(tmp_path: Path) -> None:
    assert store_uri(LocalObjectStore(tmp_path / "o b"), "_staging/r/t.1/f.parquet") == (
        (tmp_path / "o b" / "_staging/r/t.1/f.parquet").as_uri())  # file:///.../o%20b/...
    s3 = S3ObjectStore("datasets", "pre/", S3Config(endpoint="http://127.0.0.1:1"))
    assert store_uri(s3, "_staging/r/t.1/f.parquet") == "s3://datasets/pre/_staging/r/t.1/f.parquet"
