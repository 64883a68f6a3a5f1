"""The dispatcher's metrics: gauges read from Postgres, events counted where they happen, served
by Prometheus' exposition on /metrics."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest
from prometheus_client import REGISTRY, start_http_server
from psycopg_pool import AsyncConnectionPool

import dispatcher.datasets.commit  # noqa: F401 (registers the integrity failures counter)
from devstack.process import free_port
from dispatcher.catalog import JobPolicy, StaticJobCatalog
from dispatcher.datasets.pointers import VersionState
from dispatcher.datasets.store import DatasetStore
from dispatcher.metrics import refresh
from dispatcher.runs import NewTask
from dispatcher.store import TaskStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

JOB = JobPolicy("job", "noop")


def _value(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_gauges_follow_postgres_and_the_endpoint_serves_them(pg_url: str) -> None:
    org = f"m-{uuid.uuid4().hex[:8]}"
    async with AsyncConnectionPool(pg_url, min_size=1, max_size=2, open=False) as pool:
        tasks = TaskStore(pool, StaticJobCatalog({"job": JOB}), lease=timedelta(seconds=30))
        await tasks.submit_run(org_id=org, kind="test", dag="d", dag_version=1, params={}, submitted_by="t",
                               tasks=[NewTask(JOB, f"e{i}", {}) for i in range(3)])
        await tasks.claim("w", limit=1, org_id=org)
        await refresh(pool, org)
    assert _value("trace_dispatcher_tasks", state="queued") == 2
    assert _value("trace_dispatcher_tasks", state="leased") == 1
    assert _value("trace_dispatcher_outbox_backlog") >= 3  # the wake-ups (no publisher runs here)

    store = DatasetStore(pg_url, org)
    store.ensure_dataset("blocks", table_name="chain.blocks", kind="chain")
    version = store.begin_version("blocks")
    store.finish_version("blocks", version, state=VersionState.READY)
    before = _value("trace_dataset_cutover_seconds_count", action="cutover")
    store.cutover({"blocks": version}, actor="t")
    assert _value("trace_dataset_cutover_seconds_count", action="cutover") == before + 1

    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1")
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    for name in ("trace_dispatcher_tasks", "trace_dispatcher_queue_depth", "trace_dispatcher_outbox_backlog",
                 "trace_dispatcher_lease_expiries_total", "trace_dataset_commit_seconds",
                 "trace_dataset_cutover_seconds", "trace_dataset_integrity_failures_total"):
        assert name in text, name
