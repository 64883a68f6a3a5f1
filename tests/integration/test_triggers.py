"""DAG triggers on the real dispatcher: manual runs, upstream completion, data, external events,
composites and the clock (interval on the running scheduler; cron stepped with a given time)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from dispatcher.catalog import PgJobCatalog
from dispatcher.dag.loader import parse_dag
from dispatcher.dag.store import deploy
from dispatcher.protocol import EventIn, OutputIn
from dispatcher.scheduler import Scheduler
from dispatcher.store import TaskStore
from dispatcher.worker import TaskContext
from tests.integration.dispatcher_stack import API_TOKEN, DispatcherStack, running_dispatcher

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DAG = """
dag: trig
org: {org}
jobs:
  - name: start
    operator: echo
    activation: reactive
    triggers: [{{manual: {{}}}}]
    outputs: [{{dataset: {org}.a, write: {{mode: append, unique_key: [k]}}}}]
    config: {{emit: {org}.a}}
  - name: after
    operator: echo
    activation: reactive
    triggers: [{{upstream: start}}]
  - name: on_data
    operator: echo
    activation: reactive
    triggers: [{{dataset: {org}.a}}]
    inputs: [{org}.a]
  - name: both
    operator: echo
    activation: reactive
    triggers: [{{all: [{{event: x.one}}, {{event: x.two}}]}}]
  - name: ticking
    operator: echo
    activation: reactive
    triggers: [{{interval: 1s}}]
"""

READER = """
dag: reader
org: {org}
jobs:
  - name: read
    operator: echo
    activation: reactive
    triggers: [{{dataset: {org}.a}}]
    inputs: [{org}.a]
"""


async def echo(ctx: TaskContext) -> Sequence[OutputIn]:
    """Emits one event on the dataset its config names; writes nothing."""
    target = (ctx.payload.get("config") or {}).get("emit")
    if target:
        await ctx.emit([EventIn(dataset_id=target, partition_key="p0", payload={"from": ctx.task.job})])
    return []


@pytest.fixture
async def stack(pg_url: str, object_dir: Path, anvil: Any) -> AsyncIterator[DispatcherStack]:
    async with running_dispatcher(pg_url, object_dir, anvil.rpc_url) as running:
        for name, text in (("trig.yaml", DAG), ("reader.yaml", READER)):
            loaded = parse_dag(text.format(org=running.config.org_id), name)
            await asyncio.to_thread(deploy, pg_url, loaded.spec, loaded.source, "test")
        await running.start_worker(operators={"echo": echo}, idle_poll_s=0.5)
        yield running


async def _jobs_of(stack: DispatcherStack, run_id: str) -> list[str]:
    async with stack.api() as api:
        tasks = (await api.get(f"/v1/runs/{run_id}/tasks")).json()["tasks"]
    return sorted(t["job"] for t in tasks)


async def _runs(pg_url: str, org: str, kind: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cur = await conn.execute("SELECT run_id, state, params FROM state.runs"
                                 " WHERE org_id = %s AND kind = %s ORDER BY created_at", (org, kind))
        return await cur.fetchall()


async def test_a_manual_run_starts_upstream_and_data_triggered_jobs_in_the_same_run(
    stack: DispatcherStack, pg_url: str
) -> None:
    async with stack.api() as api:
        r = await api.post("/v1/dags/trig/runs", json={"params": {"day": "2026-11-30"}},
                           headers={"Idempotency-Key": "first"})
        assert r.status_code == 201, r.text
        again = await api.post("/v1/dags/trig/runs", json={"params": {"day": "2026-11-30"}},
                               headers={"Idempotency-Key": "first"})
        assert again.status_code == 200 and again.json()["run_id"] == r.json()["run_id"]
    run_id = r.json()["run_id"]
    run = await stack.wait_run(run_id, timeout=30)
    assert run["state"] == "succeeded"
    # start (manual) -> its event on {org}.a -> on_data; start finished -> after
    assert await _jobs_of(stack, run_id) == ["after", "on_data", "start"]
    # the DAG reading {org}.a from another DAG got a run of its own, started by the same event
    (data_run,) = await _runs(pg_url, stack.config.org_id, "data")
    assert data_run[2]["producer"]["dag"] == "trig"
    assert await _jobs_of(stack, str(data_run[0])) == ["read"]
    assert (await stack.wait_run(str(data_run[0]), timeout=30))["state"] == "succeeded"


async def test_an_all_composite_fires_once_both_events_came_and_events_are_deduplicated(
    stack: DispatcherStack,
) -> None:
    async with stack.api() as api:
        one = await api.post("/v1/events", json={"name": "x.one", "key": "k1"})
        assert one.status_code == 202, one.text
        assert one.json()["accepted"] is True and one.json()["runs"] == []
        two = await api.post("/v1/events", json={"name": "x.two", "key": "k1", "payload": {"n": 1}})
        (started,) = two.json()["runs"]
        resent = await api.post("/v1/events", json={"name": "x.two", "key": "k1"})
        assert resent.json() == {"accepted": False, "key": "k1", "runs": []}
        unknown = await api.post("/v1/events", json={"name": "nobody.listens"})
        assert unknown.json()["accepted"] is True and unknown.json()["runs"] == []
    assert await _jobs_of(stack, started["run_id"]) == ["both"]
    assert (await stack.wait_run(started["run_id"], timeout=30))["state"] == "succeeded"


async def test_an_interval_trigger_runs_the_job_on_the_clock(stack: DispatcherStack, pg_url: str) -> None:
    org = stack.config.org_id
    deadline = time.monotonic() + 30
    while len(runs := await _runs(pg_url, org, "schedule")) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert len(runs) >= 3, runs
    assert [r[2]["firing"] for r in runs[:3]] == [1, 2, 3]
    assert {r[2]["job"] for r in runs} == {"ticking"}
    first = await stack.wait_run(str(runs[0][0]), timeout=30)
    assert first["state"] == "succeeded"


async def test_bad_trigger_requests_get_4xx_saying_why(stack: DispatcherStack) -> None:
    async with stack.api() as api:
        missing = await api.post("/v1/dags/nope/runs")
        assert missing.status_code == 404 and "nope" in missing.json()["detail"]
        no_manual = await api.post("/v1/dags/reader/runs")
        assert no_manual.status_code == 422
        assert "has no job with a manual trigger" in no_manual.json()["detail"]
        bad_dag = await api.post("/v1/dags/Not-A-Dag/runs")
        assert bad_dag.status_code == 422
        bad_params = await api.post("/v1/dags/trig/runs", json={"params": [1, 2]})
        assert bad_params.status_code == 422
        bad_name = await api.post("/v1/events", json={"name": "has space"})
        assert bad_name.status_code == 422 and bad_name.json()["error"] == "invalid_request"
        extra = await api.post("/v1/events", json={"name": "x.one", "when": "now"})
        assert extra.status_code == 422
        unauth = await api.post("/v1/events", json={"name": "x.one"}, headers={"Authorization": "Bearer no"})
        assert unauth.status_code == 401


CRON_DAG = """
dag: nightly
org: {org}
jobs:
  - name: report
    operator: echo
    activation: reactive
    triggers: [{{cron: "*/5 * * * *"}}, {{any: [{{event: never}}, {{event: nor}}], timeout: 1h}}]
"""


async def test_cron_and_any_timeout_fire_at_their_times_once_whoever_ticks(pg_url: str) -> None:
    org = f"c{uuid.uuid4().hex[:10]}"
    loaded = parse_dag(CRON_DAG.format(org=org), "nightly.yaml")
    await asyncio.to_thread(deploy, pg_url, loaded.spec, loaded.source, "test")
    async with AsyncConnectionPool(pg_url, min_size=1, max_size=4, open=False) as pool:
        store = TaskStore(pool, PgJobCatalog(pool))
        a, b = Scheduler(pool, store, org), Scheduler(pool, store, org)  # two dispatchers
        t0 = dt.datetime(2030, 1, 1, 0, 1, 30, tzinfo=dt.UTC)
        await a.sync(t0)
        assert await a.tick(t0) == 0
        # 00:05 comes: one firing, whichever scheduler ticks (the other finds nothing due)
        at_five = t0 + dt.timedelta(minutes=4)
        fired = await asyncio.gather(a.tick(at_five), b.tick(at_five))
        assert sorted(fired) == [0, 1]
        assert await a.tick(t0 + dt.timedelta(minutes=4, seconds=1)) == 0
        # an hour later: the cron (coalesced, once) and the any's timeout (nothing for an hour)
        assert await b.tick(t0 + dt.timedelta(hours=1, minutes=4)) == 2
        runs = await _runs(pg_url, org, "schedule")
        assert [(r[2]["trigger"], r[2]["firing"]) for r in runs] == [(0, 1), (0, 2), (1, 1)]
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM state.tasks WHERE org_id = %s AND job = 'report'",
                                     (org,))
            assert (await cur.fetchone()) == (3,)


async def test_the_cli_starts_a_run_and_sends_events(stack: DispatcherStack, tmp_path: Path) -> None:
    env = {**os.environ, "TRACE_DISPATCHER_URL": stack.base_url, "TRACE_API_TOKEN": API_TOKEN,
           "TRACE_WORKER_TOKEN": "unused", "TRACE_DISPATCHER_SECRET": "unused",
           "TRACE_DATABASE_URL": stack.pg_url, "TRACE_HOME": str(tmp_path / "home")}

    def trace(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tracecli", *args], env=env, capture_output=True,
                              text=True, timeout=60)

    ran = await asyncio.to_thread(trace, "dag", "run", "trig", "--param", "day=2026-11-30", "-p", "n=3")
    assert ran.returncode == 0, ran.stderr
    assert "succeeded" in ran.stdout and "after" in ran.stdout and "on_data" in ran.stdout
    run_id = ran.stdout.split()[1]
    async with stack.api() as api:
        tasks = (await api.get(f"/v1/runs/{run_id}/tasks")).json()["tasks"]
        start = next(t["task_id"] for t in tasks if t["job"] == "start")
        detail = (await api.get(f"/v1/tasks/{start}")).json()
    assert detail["payload"]["params"] == {"day": "2026-11-30", "n": 3}
    sent = await asyncio.to_thread(trace, "event", "send", "x.one", "--key", "cli")
    assert sent.returncode == 0 and "0 run(s) started" in sent.stdout, sent.stderr
    sent = await asyncio.to_thread(trace, "event", "send", "x.two", "--key", "cli", "--payload", '{"a": 1}')
    assert sent.returncode == 0 and "1 run(s) started" in sent.stdout, sent.stderr
    again = await asyncio.to_thread(trace, "event", "send", "x.two", "--key", "cli")
    assert "received before, nothing done" in again.stdout
    bad = await asyncio.to_thread(trace, "event", "send", "x.two", "--payload", "{not json")
    assert bad.returncode != 0 and "--payload is not JSON" in bad.stderr
    missing = await asyncio.to_thread(trace, "dag", "run", "no_such_dag")
    assert missing.returncode != 0 and "no DAG 'no_such_dag' is deployed" in missing.stderr


async def test_a_broken_trigger_state_stops_no_other_trigger(pg_url: str) -> None:
    org = f"c{uuid.uuid4().hex[:10]}"
    loaded = parse_dag(CRON_DAG.format(org=org), "nightly.yaml")
    await asyncio.to_thread(deploy, pg_url, loaded.spec, loaded.source, "test")
    async with AsyncConnectionPool(pg_url, min_size=1, max_size=4, open=False) as pool:
        scheduler = Scheduler(pool, TaskStore(pool, PgJobCatalog(pool)), org)
        t0 = dt.datetime(2030, 1, 1, 0, 1, 30, tzinfo=dt.UTC)
        await scheduler.sync(t0)
        async with pool.connection() as conn:  # the any's state loses its keys (a bad hand edit)
            await conn.execute("UPDATE state.trigger_state SET state = '{}', due_at = %s"
                               " WHERE org_id = %s AND trigger_index = 1", (t0, org))
        later = t0 + dt.timedelta(hours=1, minutes=4)
        assert await scheduler.tick(later) == 1  # the cron fired; the broken one is set aside
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT due_at FROM state.trigger_state WHERE org_id = %s"
                                     " AND trigger_index = 1", (org,))
            assert (await cur.fetchone()) == (later + dt.timedelta(minutes=1),)
        assert [(r[2]["trigger"], r[2]["firing"]) for r in await _runs(pg_url, org, "schedule")] == [(0, 1)]


async def test_an_unreadable_composite_state_is_reset_and_the_task_still_completes(
    stack: DispatcherStack, pg_url: str
) -> None:
    async with stack.api() as api:
        assert (await api.post("/v1/events", json={"name": "x.one", "key": "a"})).json()["runs"] == []
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute("UPDATE state.trigger_state SET state = %s::jsonb"
                               " WHERE org_id = %s AND job = 'both'", ('{"got": 7}', stack.config.org_id))
        # the broken window is dropped: x.two alone does not fire, then both again do
        assert (await api.post("/v1/events", json={"name": "x.two", "key": "a"})).json()["runs"] == []
        assert (await api.post("/v1/events", json={"name": "x.one", "key": "b"})).json()["runs"] == []
        (run,) = (await api.post("/v1/events", json={"name": "x.two", "key": "b"})).json()["runs"]
    assert (await stack.wait_run(run["run_id"], timeout=30))["state"] == "succeeded"
