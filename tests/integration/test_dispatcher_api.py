"""The dispatcher's HTTP API over the wire: the real dispatcher (uvicorn, Postgres, reaper) and
no worker -- the tests play the worker through ``/internal/*`` themselves.

Shown here: every endpoint refuses missing or wrong credentials (401, JSON); bad requests are
4xx naming the problem; every call lands in ``state.audit_log``; a stale attempt is fenced (409)
while the live one commits; a cancel reaches a running task at its heartbeat; the read
endpoints' shapes; and schemathesis, fuzzing every operation of the live OpenAPI, finds no 5xx.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from dispatcher import tokens
from tests.integration.dispatcher_stack import (
    API_TOKEN,
    CHAIN_ID,
    WORKER_TOKEN,
    DispatcherStack,
    running_dispatcher,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

NO_RPC = "http://127.0.0.1:9"  # no worker runs: nothing ever calls it
BACKFILL = {"chain_id": CHAIN_ID, "datasets": ["blocks"], "start_block": 0, "end_block": 99,
            "chunk_size": 50}
V1_ENDPOINTS = {("POST", "/v1/backfills"), ("GET", "/v1/runs"), ("GET", "/v1/runs/{run_id}"),
                ("POST", "/v1/runs/{run_id}/cancel"), ("GET", "/v1/runs/{run_id}/tasks"),
                ("GET", "/v1/runs/{run_id}/outputs"), ("GET", "/v1/tasks/{task_id}"),
                ("POST", "/v1/dags/{dag}/runs"), ("POST", "/v1/events"), ("GET", "/v1/datasets"),
                ("GET", "/v1/datasets/pointers"), ("GET", "/v1/datasets/{dataset_id}/versions"),
                ("POST", "/v1/datasets/cutover"), ("POST", "/v1/datasets/rollback"),
                ("GET", "/v1/datasets/{dataset_id}/versions/{version}"),
                ("GET", "/v1/datasets/{dataset_id}/lineage"),
                ("POST", "/v1/datasets/{dataset_id}/compact"), ("POST", "/v1/query"), ("GET", "/v1/catalog")}


@pytest.fixture(scope="module")
async def stack(pg_url: str, object_dir: Path) -> AsyncIterator[DispatcherStack]:
    # long leases: only the tests expire them (in SQL)
    async with running_dispatcher(pg_url, object_dir, NO_RPC, lease_s=30.0) as running:
        yield running


@pytest.fixture(autouse=True)
async def _cancel_leftovers(stack: DispatcherStack) -> AsyncIterator[None]:
    """What a test leaves queued is canceled, so the next test's task-fetch sees only its own."""
    yield
    async with stack.api() as api:
        for run in (await api.get("/v1/runs", params={"state": "running", "limit": 500})).json()["runs"]:
            await api.post(f"/v1/runs/{run['run_id']}/cancel")


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _client(stack: DispatcherStack, token: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.base_url, timeout=30, headers=_auth(token) if token else None)


async def _rows(pg_url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        return list(await (await conn.execute(sql, args)).fetchall())


async def _split_task_id(stack: DispatcherStack, run_id: str) -> str:
    async with stack.api() as api:
        r = await api.get(f"/v1/runs/{run_id}/tasks")
    assert r.status_code == 200, r.text
    (task,) = r.json()["tasks"]
    assert task["job"] == "split"
    return str(task["task_id"])


async def _fetch(stack: DispatcherStack, task_ids: Sequence[str], *, limit: int = 1,
                 worker_id: str = "api-test-worker") -> list[dict[str, Any]]:
    async with _client(stack, WORKER_TOKEN) as http:
        r = await http.post("/internal/task-fetch", json={
            "worker_id": worker_id, "task_ids": list(task_ids), "operators": ["range_splitter"],
            "limit": limit})
    assert r.status_code == 200, r.text
    return list(r.json()["tasks"])


async def _leased_split(stack: DispatcherStack) -> tuple[str, dict[str, Any]]:
    """Submit a backfill and lease its split task, as a worker would: (run id, leased task)."""
    run_id = await stack.submit(0, 99, chunk_size=50, datasets=("blocks",))
    task_id = await _split_task_id(stack, run_id)
    (leased,) = await _fetch(stack, [task_id])
    assert (leased["task_id"], leased["run_id"], leased["attempt"]) == (task_id, run_id, 1)
    return run_id, leased


def _problem(r: httpx.Response, status: int, error: str) -> Any:
    """The response is ``status`` with a JSON problem ``error``; returns its detail."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error", "detail"} and body["error"] == error, body
    return body["detail"]


def _only_error(detail: Any, loc: list[Any]) -> str:
    """A validation detail naming exactly one problem, at ``loc``; returns its message."""
    assert isinstance(detail, list) and len(detail) == 1, detail
    assert detail[0]["loc"] == loc, detail
    return str(detail[0]["msg"])


# -- auth ----------------------------------------------------------------------------------------


async def test_every_public_endpoint_needs_the_api_token(stack: DispatcherStack) -> None:
    async with _client(stack) as http:
        published = (await http.get("/openapi.json")).json()["paths"]
        endpoints = {(m.upper(), p) for p, ops in published.items() if p.startswith("/v1/") for m in ops}
        assert endpoints == V1_ENDPOINTS
        missing = uuid.uuid4()
        for method, path in sorted(endpoints):
            url = path.format(run_id=missing, task_id=missing, dag="nothing_deployed", dataset_id="nothing",
                              version=1)
            body = {"/v1/backfills": BACKFILL, "/v1/events": {"name": "nobody.listens"},
                    "/v1/datasets/cutover": {"versions": {"nothing": 1}},
                    "/v1/datasets/rollback": {"to": 99}, "/v1/query": {"sql": "select 1 as one"}}.get(path)
            for headers in ({}, _auth("wrong"), _auth(WORKER_TOKEN), {"Authorization": API_TOKEN},
                            {"Authorization": f"Basic {API_TOKEN}"}):
                r = await http.request(method, url, json=body, headers=headers)
                assert _problem(r, 401, "unauthorized") == "missing or invalid bearer token", (url, headers)
                assert r.headers["www-authenticate"] == "Bearer"
            r = await http.request(method, url, json=body, headers=_auth(API_TOKEN))
            assert r.status_code in (200, 201, 202, 404), (url, r.text)  # let in: missing ids are 404


async def test_task_fetch_needs_the_worker_token(stack: DispatcherStack) -> None:
    body = {"worker_id": "w", "limit": 1, "operators": ["nothing-runs-this"]}
    async with _client(stack) as http:
        for headers in ({}, _auth(API_TOKEN), _auth("wrong"), {"Authorization": WORKER_TOKEN}):
            r = await http.post("/internal/task-fetch", json=body, headers=headers)
            assert _problem(r, 401, "unauthorized") == "missing or invalid worker token", headers
        r = await http.post("/internal/task-fetch", json=body, headers=_auth(WORKER_TOKEN))
        assert r.status_code == 200 and r.json() == {"tasks": []}


async def test_task_endpoints_need_the_token_of_that_task_and_attempt(stack: DispatcherStack) -> None:
    runs = [await stack.submit(0, 99, chunk_size=50, datasets=("blocks",)) for _ in range(2)]
    ids = [await _split_task_id(stack, run) for run in runs]
    leased = {t["task_id"]: t for t in await _fetch(stack, ids, limit=2)}
    assert sorted(leased) == sorted(ids)
    a, b = leased[ids[0]], leased[ids[1]]
    secret = stack.config.task_secret
    expired = tokens.issue(secret, task_id=uuid.UUID(a["task_id"]), attempt=1, org_id=stack.config.org_id,
                           reads=[], writes=a["writes"], now=time.time() - 3600, ttl=60)
    forged = tokens.issue(b"x" * 32, task_id=uuid.UUID(a["task_id"]), attempt=1, org_id=stack.config.org_id,
                          reads=[], writes=a["writes"], now=time.time(), ttl=60)
    bodies = {
        "/internal/heartbeat": {"task_id": a["task_id"], "attempt": 1},
        "/internal/events": {"task_id": a["task_id"], "attempt": 1, "events": [
            {"dataset_id": "backfill.chunks", "partition_key": "p0", "payload": {}}]},
        "/internal/task-complete": {"task_id": a["task_id"], "attempt": 1, "outcome": "failed",
                                    "error": "must never be recorded"},
    }
    async with _client(stack) as http:
        for path, body in bodies.items():
            for headers, detail in (({}, "missing task token"),
                                    (_auth("garbage"), "task token is malformed"),
                                    (_auth(API_TOKEN), "task token is malformed"),
                                    (_auth(WORKER_TOKEN), "task token is malformed"),
                                    (_auth(forged), "task token signature does not match"),
                                    (_auth(expired), "task token has expired")):
                r = await http.post(path, json=body, headers=headers)
                assert _problem(r, 401, "unauthorized") == detail, (path, headers)
            mismatch = "the task token names another task or attempt"
            r = await http.post(path, json=body, headers=_auth(b["token"]))  # another task's token
            assert _problem(r, 403, "token_mismatch") == mismatch, path
            r = await http.post(path, json={**body, "attempt": 2},  # another attempt
                                headers=_auth(a["token"]))
            assert _problem(r, 403, "token_mismatch") == mismatch, path
        # none of that touched the tasks: both are still leased, attempt 1, no failure, no event
        for task in (a, b):
            r = await http.get(f"/v1/tasks/{task['task_id']}", headers=_auth(API_TOKEN))
            detail = r.json()
            assert (detail["state"], detail["attempt"], detail["failures"], detail["last_error"]) == (
                "leased", 1, 0, None)
            assert [(x["attempt"], x["outcome"]) for x in detail["attempts"]] == [(1, None)]
        # while the right token works
        r = await http.post("/internal/heartbeat", json=bodies["/internal/heartbeat"],
                            headers=_auth(a["token"]))
        assert r.status_code == 200 and r.json()["status"] == "ok", r.text
    events = "SELECT count(*) FROM state.task_events WHERE producer_task_id = ANY(%s)"
    assert await _rows(stack.pg_url, events, [uuid.UUID(i) for i in ids]) == [(0,)]


# -- bad requests --------------------------------------------------------------------------------


async def test_bad_submissions_are_4xx_naming_the_problem(stack: DispatcherStack) -> None:
    async with stack.api() as api:
        async def submit(**change: Any) -> httpx.Response:
            return await api.post("/v1/backfills", json={**BACKFILL, **change})

        def invalid(r: httpx.Response, loc: list[Any]) -> str:
            return _only_error(_problem(r, 422, "invalid_request"), loc)

        msg = invalid(await submit(start_block=10, end_block=5), ["body"])
        assert msg == "Value error, end_block 5 is before start_block 10"
        msg = invalid(await submit(datasets=["blocks", "receipts"]), ["body", "datasets", 1])
        assert msg == "Input should be 'blocks', 'transactions', 'logs' or 'traces'"
        msg = invalid(await submit(chunk_size=0), ["body", "chunk_size"])
        assert msg == "Input should be greater than or equal to 1"
        msg = invalid(await submit(colour="blue"), ["body", "colour"])
        assert msg == "Extra inputs are not permitted"
        msg = invalid(await submit(datasets=[]), ["body", "datasets"])
        assert msg == "List should have at least 1 item after validation, not 0"

        assert _problem(await submit(chain_id=1), 422, "backfill_refused") == (
            f"chain 1 is not served here (chains: {CHAIN_ID})")
        detail = _problem(await submit(start_block=0, end_block=1_000_000, chunk_size=1), 422,
                          "backfill_refused")
        assert detail == ("blocks 0..1000000 in chunks of 1 make 1000001 chunks, more than the limit of"
                          " 100000: use a larger chunk_size (at least 11)")

        as_json = {"Content-Type": "application/json"}
        r = await api.post("/v1/backfills", content=b"{not json", headers=as_json)
        detail = _problem(r, 422, "invalid_request")
        assert [(d["loc"][0], d["msg"]) for d in detail] == [("body", "JSON decode error")], detail
        r = await api.post("/v1/backfills", content=b"chain_id=1", headers={"Content-Type": "text/plain"})
        assert _problem(r, 422, "invalid_request")[0]["loc"] == ["body"]

        for path in ("/v1/runs/not-a-uuid", "/v1/runs/not-a-uuid/tasks", "/v1/runs/not-a-uuid/outputs"):
            msg = invalid(await api.get(path), ["path", "run_id"])
            assert msg.startswith("Input should be a valid UUID"), msg
        msg = invalid(await api.post("/v1/runs/42/cancel"), ["path", "run_id"])
        assert msg.startswith("Input should be a valid UUID"), msg
        msg = invalid(await api.get("/v1/tasks/42"), ["path", "task_id"])
        assert msg.startswith("Input should be a valid UUID"), msg

        unknown = uuid.uuid4()
        for method, path in (("GET", f"/v1/runs/{unknown}"), ("POST", f"/v1/runs/{unknown}/cancel"),
                             ("GET", f"/v1/runs/{unknown}/tasks"), ("GET", f"/v1/runs/{unknown}/outputs")):
            assert _problem(await api.request(method, path), 404, "not_found") == f"no run {unknown}", path
        assert _problem(await api.get(f"/v1/tasks/{unknown}"), 404, "not_found") == f"no task {unknown}"
        msg = invalid(await api.get("/v1/runs", params={"limit": 0}), ["query", "limit"])
        assert msg == "Input should be greater than or equal to 1"
        msg = invalid(await api.get("/v1/runs", params={"state": "sleeping"}), ["query", "state"])
        assert msg == "Input should be 'running', 'succeeded', 'failed', 'canceling' or 'canceled'"


async def test_bodies_that_cannot_be_read_and_unknown_routes_are_problems_too(stack: DispatcherStack) -> None:
    async with stack.api() as api:
        huge = b'{"chain_id": 10143, "datasets": ["blocks"], "start_block": 0, "end_block": 1' + b"0" * 5000
        huge += b"}"  # an integer of 5001 digits: Python's json refuses to read it
        r = await api.post("/v1/backfills", content=huge, headers={"Content-Type": "application/json"})
        assert _problem(r, 400, "bad_request") == "There was an error parsing the body"
        assert _problem(await api.get("/v1/nothing-here"), 404, "not_found") == "Not Found"
        assert _problem(await api.delete("/v1/runs"), 405, "method_not_allowed") == "Method Not Allowed"


async def test_event_payloads_nest_at_most_64_levels(stack: DispatcherStack) -> None:
    def nested(levels: int) -> dict[str, Any]:
        value: dict[str, Any] = {}
        for _ in range(levels - 1):
            value = {"a": value}
        return value

    _, leased = await _leased_split(stack)
    body = {"task_id": leased["task_id"], "attempt": 1}
    async with _client(stack, leased["token"]) as http:
        for levels in (65, 255, 600):  # were 500s: orjson's recursion limit, then Python's
            event = {"dataset_id": "backfill.chunks", "partition_key": f"deep{levels}",
                     "payload": nested(levels)}
            r = await http.post("/internal/events", json={**body, "events": [event]})
            msg = _only_error(_problem(r, 422, "invalid_request"), ["body", "events", 0, "payload"])
            assert msg == "Value error, must not nest deeper than 64 levels", levels
        r = await http.post("/internal/events", json={**body, "events": [
            {"dataset_id": "backfill.chunks", "partition_key": "deep64", "payload": nested(64)}]})
        assert r.status_code == 200 and r.json() == {"accepted": 1, "tasks_created": 1}, r.text
    async with stack.api() as api:
        r = await api.get(f"/v1/runs/{leased['run_id']}/tasks", params={"state": "queued"})
        tasks = r.json()["tasks"]
        (ingest,) = [t for t in tasks if t["partition"] == "deep64"]
        r = await api.get(f"/v1/tasks/{ingest['task_id']}")
    assert r.status_code == 200 and r.json()["payload"]["event"] == nested(64)


async def test_refused_submissions_make_no_run(stack: DispatcherStack) -> None:
    count = "SELECT count(*) FROM state.runs WHERE org_id = %s"
    before = await _rows(stack.pg_url, count, stack.config.org_id)
    async with stack.api() as api:
        for change in ({"end_block": -1}, {"chain_id": 1}, {"chunk_size": 1, "end_block": 10**6}):
            r = await api.post("/v1/backfills", json={**BACKFILL, **change}, headers={"Idempotency-Key": "x"})
            assert r.status_code == 422, r.text
    assert await _rows(stack.pg_url, count, stack.config.org_id) == before


async def test_idempotency_key(stack: DispatcherStack) -> None:
    key = f"key-{uuid.uuid4().hex}"
    async with stack.api() as api:
        first = await api.post("/v1/backfills", json=BACKFILL, headers={"Idempotency-Key": key})
        assert first.status_code == 201, first.text
        run_id = first.json()["run_id"]
        assert first.json() == {"run_id": run_id, "created": True, "status_url": f"/v1/runs/{run_id}"}
        again = await api.post("/v1/backfills", json=BACKFILL, headers={"Idempotency-Key": key})
        assert again.status_code == 200, again.text
        assert again.json() == {"run_id": run_id, "created": False, "status_url": f"/v1/runs/{run_id}"}
        other = await api.post("/v1/backfills", json={**BACKFILL, "end_block": 149},
                               headers={"Idempotency-Key": key})
        assert _problem(other, 422, "backfill_refused") == (
            f"Idempotency-Key {key!r} was used for another request (run {run_id}); use a new key")
        fresh = await api.post("/v1/backfills", json=BACKFILL, headers={"Idempotency-Key": f"{key}-2"})
        assert fresh.status_code == 201 and fresh.json()["run_id"] != run_id
        bad = await api.post("/v1/backfills", json=BACKFILL, headers={"Idempotency-Key": "has space"})
        assert _only_error(_problem(bad, 422, "invalid_request"), ["header", "idempotency-key"]).startswith(
            "String should match pattern")
    assert await _rows(stack.pg_url, "SELECT count(*) FROM state.runs WHERE org_id = %s AND idempotency_key"
                                     " = %s", stack.config.org_id, key) == [(1,)]
    assert await _rows(stack.pg_url, "SELECT count(*) FROM state.tasks WHERE run_id = %s",
                       uuid.UUID(run_id)) == [(1,)]


# -- audit ---------------------------------------------------------------------------------------


async def test_every_call_is_audited_with_its_actor(stack: DispatcherStack) -> None:
    tag = uuid.uuid4().hex[:12]
    run_id, leased = await _leased_split(stack)
    unknown = uuid.uuid4()
    calls: list[tuple[str, str, dict[str, str], Any, str, int]] = [
        ("GET", "/v1/runs", {}, None, "anonymous", 401),
        ("GET", "/v1/runs", _auth("wrong"), None, "anonymous", 401),
        ("GET", f"/v1/runs/{run_id}", _auth(API_TOKEN), None, "api-token", 200),
        ("GET", f"/v1/runs/{unknown}", _auth(API_TOKEN), None, "api-token", 404),
        ("POST", "/v1/backfills", _auth(API_TOKEN), {**BACKFILL, "chunk_size": 0}, "api-token", 422),
        ("POST", "/internal/task-fetch", _auth(API_TOKEN), {"worker_id": "w"}, "anonymous", 401),
        ("POST", "/internal/task-fetch", _auth(WORKER_TOKEN), {"worker_id": "w", "operators": []}, "worker",
         200),
        ("POST", "/internal/heartbeat", _auth("garbage"), {"task_id": leased["task_id"], "attempt": 1},
         "anonymous", 401),
        ("POST", "/internal/heartbeat", _auth(leased["token"]), {"task_id": leased["task_id"], "attempt": 1},
         f"task:{leased['task_id']}/1", 200),
        ("POST", "/internal/heartbeat", _auth(leased["token"]), {"task_id": leased["task_id"], "attempt": 2},
         f"task:{leased['task_id']}/1", 403),
    ]
    async with _client(stack) as http:
        for i, (method, path, headers, body, _, status) in enumerate(calls):
            r = await http.request(method, path, json=body, params={"q": tag} if method == "GET" else None,
                                   headers={**headers, "X-Request-Id": f"{tag}-{i}"})
            assert r.status_code == status, (path, r.text)
            assert r.headers["x-request-id"] == f"{tag}-{i}"
    rows = await _rows(stack.pg_url, "SELECT request_id, method, path, query, status, actor, client,"
                                     " duration_ms FROM state.audit_log WHERE org_id = %s"
                                     " AND request_id LIKE %s ORDER BY request_id",
                       stack.config.org_id, f"{tag}-%")
    assert [r[:6] for r in rows] == sorted(
        (f"{tag}-{i}", method, path, f"q={tag}" if method == "GET" else "", status, actor)
        for i, (method, path, _, _, actor, status) in enumerate(calls))
    assert all(r[6] == "127.0.0.1" and r[7] >= 0 for r in rows)


# -- fencing -------------------------------------------------------------------------------------


async def test_a_stale_attempt_is_fenced_and_the_live_one_commits(stack: DispatcherStack) -> None:
    run_id, first = await _leased_split(stack)
    task_id = first["task_id"]
    assert first["writes"] == ["backfill.chunks"] and first["token"].startswith("tt1.")
    await _rows(stack.pg_url, "UPDATE state.tasks SET lease_expires_at = now() - interval '1s'"
                              " WHERE task_id = %s RETURNING task_id", uuid.UUID(task_id))
    deadline = time.monotonic() + 15
    while not (handed := await _fetch(stack, [task_id], worker_id="second-worker")):
        assert time.monotonic() < deadline, "attempt 2 was never handed out"
        await asyncio.sleep(0.1)
    (second,) = handed
    assert (second["task_id"], second["attempt"]) == (task_id, 2) and second["token"] != first["token"]

    beat1 = {"task_id": task_id, "attempt": 1}
    beat2 = {"task_id": task_id, "attempt": 2}
    event = {"dataset_id": "backfill.chunks", "partition_key": "p0", "payload": {"start": 0, "end": 49}}
    async with _client(stack) as http:
        old, new = _auth(first["token"]), _auth(second["token"])
        r = await http.post("/internal/heartbeat", json={**beat1, "logs": [{"message": "stale"}]},
                            headers=old)
        assert _problem(r, 409, "stale_attempt") == (
            "another attempt holds this task: stop without committing anything")
        r = await http.post("/internal/events", json={**beat1, "events": [event]}, headers=old)
        _problem(r, 409, "stale_attempt")
        output = {"dataset_id": "backfill.chunks", "uri": "file:///stale", "rows": 1, "bytes": 1}
        r = await http.post("/internal/task-complete",
                            json={**beat1, "outcome": "succeeded", "outputs": [output]}, headers=old)
        _problem(r, 409, "stale_attempt")

        r = await http.post("/internal/heartbeat", json={**beat2, "logs": [{"message": "alive"}]},
                            headers=new)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "ok" and r.json()["token"].startswith("tt1.")
        r = await http.post("/internal/events", json={**beat2, "events": [
            {"dataset_id": "blocks", "partition_key": "p0", "payload": {}}]}, headers=new)
        assert _problem(r, 403, "dataset_not_allowed") == "this task may not write blocks"
        r = await http.post("/internal/task-complete", json={**beat2, "outcome": "succeeded"}, headers=new)
        assert r.status_code == 200 and r.json() == {"status": "ok"}, r.text
        # finished: even the live attempt's token is refused now
        r = await http.post("/internal/heartbeat", json=beat2, headers=new)
        assert _problem(r, 409, "task_finished") == "the task has already finished"

        r = await http.get(f"/v1/tasks/{task_id}", headers=_auth(API_TOKEN))
        assert r.status_code == 200, r.text
        detail = r.json()
    assert (detail["state"], detail["attempt"], detail["failures"]) == ("succeeded", 2, 1)
    assert [(a["attempt"], a["worker"], a["outcome"]) for a in detail["attempts"]] == [
        (1, "api-test-worker", "lease_expired"), (2, "second-worker", "succeeded")]
    assert detail["attempts"][0]["error"].startswith("lease expired at ")
    assert [(log["attempt"], log["message"]) for log in detail["logs"]] == [(2, "alive")]  # not the stale one
    assert detail["outputs"] == []
    assert await _rows(stack.pg_url, "SELECT count(*) FROM state.task_events WHERE producer_task_id = %s",
                       uuid.UUID(task_id)) == [(0,)]
    run = await stack.wait_run(run_id, timeout=10)
    assert run["state"] == "succeeded" and run["progress"]["tasks"] == {"succeeded": 1}


async def test_a_cancel_reaches_the_task_at_its_heartbeat(stack: DispatcherStack) -> None:
    run_id, leased = await _leased_split(stack)
    beat = {"task_id": leased["task_id"], "attempt": 1}
    async with _client(stack) as http:
        token = _auth(leased["token"])
        r = await http.post("/internal/heartbeat", json=beat, headers=token)
        assert r.status_code == 200 and r.json()["status"] == "ok", r.text
        r = await http.post(f"/v1/runs/{run_id}/cancel", headers=_auth(API_TOKEN))
        assert r.status_code == 200 and r.json() == {"run_id": run_id, "state": "canceling"}, r.text
        r = await http.post("/internal/heartbeat", json=beat, headers=token)
        assert r.status_code == 200 and r.json()["status"] == "canceled", r.text
        assert (await stack.run(run_id))["state"] == "canceling"
        r = await http.post("/internal/task-complete", json={**beat, "outcome": "canceled"}, headers=token)
        assert r.status_code == 200 and r.json() == {"status": "ok"}, r.text
        r = await http.post(f"/v1/runs/{run_id}/cancel", headers=_auth(API_TOKEN))  # again: nothing changes
        assert r.status_code == 200 and r.json() == {"run_id": run_id, "state": "canceled"}, r.text
        detail = (await http.get(f"/v1/tasks/{leased['task_id']}", headers=_auth(API_TOKEN))).json()
    run = await stack.run(run_id)
    assert run["state"] == "canceled" and run["finished_at"] is not None
    assert run["progress"]["tasks"] == {"canceled": 1}
    assert (detail["state"], detail["cancel_requested"], detail["lease_owner"]) == ("canceled", True, None)
    assert [(a["attempt"], a["outcome"]) for a in detail["attempts"]] == [(1, "canceled")]


# -- read endpoints and the schema ---------------------------------------------------------------


RUN_KEYS = {"run_id", "org_id", "kind", "dag", "dag_version", "state", "params", "submitted_by",
            "created_at", "finished_at", "progress", "errors"}
TASK_KEYS = {"task_id", "run_id", "job", "operator", "state", "attempt", "failures", "partition",
             "last_error", "created_at", "finished_at"}
DETAIL_KEYS = TASK_KEYS | {"payload", "reads", "writes", "max_attempts", "lease_owner", "lease_expires_at",
                           "cancel_requested", "last_traceback", "attempts", "logs", "outputs"}


async def test_runs_tasks_and_their_shapes(stack: DispatcherStack) -> None:
    made = [await stack.submit(0, 99 + 50 * i, chunk_size=50, datasets=("blocks",)) for i in range(3)]
    async with stack.api() as api:
        r = await api.get("/v1/runs", params={"limit": 500})
        assert r.status_code == 200 and set(r.json()) == {"runs"}
        runs = r.json()["runs"]
        assert [run["run_id"] for run in runs if run["run_id"] in made] == made[::-1]  # newest first
        created = [run["created_at"] for run in runs]
        assert created == sorted(created, reverse=True)
        assert [run["run_id"] for run in (await api.get("/v1/runs", params={"limit": 2})).json()["runs"]] == (
            made[:0:-1])
        newest = runs[0]
        assert set(newest) == RUN_KEYS
        assert (newest["org_id"], newest["kind"], newest["dag"], newest["state"], newest["submitted_by"],
                newest["finished_at"], newest["errors"]) == (
                    stack.config.org_id, "backfill", "backfill", "running", "api-token", None, [])
        assert newest["params"] == {"chain_id": CHAIN_ID, "chain": newest["params"]["chain"],
                                    "datasets": ["blocks"], "start_block": 0, "end_block": 199,
                                    "chunk_size": 50, "engine": "rpc", "chunks": 4,
                                    "partition_width": 10_000}
        assert newest["progress"] == {"tasks": {"queued": 1}, "chunks_total": 4, "chunks_done": 0,
                                      "blocks_total": 200, "blocks_done": 0, "rows": {}, "files": 0,
                                      "fraction": 0.0}
        r = await api.get(f"/v1/runs/{made[2]}")
        assert r.status_code == 200 and r.json() == newest
        r = await api.get(f"/v1/runs/{made[2]}/outputs")
        assert r.status_code == 200 and r.json() == []

        r = await api.get(f"/v1/runs/{made[2]}/tasks")
        assert r.status_code == 200 and set(r.json()) == {"tasks"}
        (task,) = r.json()["tasks"]
        assert set(task) == TASK_KEYS
        assert {k: task[k] for k in TASK_KEYS - {"task_id", "created_at"}} == {
            "run_id": made[2], "job": "split", "operator": "range_splitter", "state": "queued", "attempt": 0,
            "failures": 0, "partition": None, "last_error": None, "finished_at": None}
        for params in ({"state": "leased"}, {"offset": 1}):
            r = await api.get(f"/v1/runs/{made[2]}/tasks", params=params)
            assert r.status_code == 200 and r.json() == {"tasks": []}, params

        r = await api.get(f"/v1/tasks/{task['task_id']}")
        assert r.status_code == 200, r.text
        detail = r.json()
        assert set(detail) == DETAIL_KEYS and {k: detail[k] for k in TASK_KEYS} == task
        assert (detail["reads"], detail["writes"], detail["max_attempts"], detail["lease_owner"],
                detail["lease_expires_at"], detail["cancel_requested"], detail["attempts"], detail["logs"],
                detail["outputs"]) == ([], ["backfill.chunks"], 3, None, None, False, [], [], [])
        assert detail["payload"]["event"] == newest["params"]


async def test_the_openapi_schema_is_published(stack: DispatcherStack) -> None:
    async with _client(stack) as http:
        r = await http.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    schema = r.json()
    assert schema["openapi"].startswith("3.") and schema["info"]["title"] == "Trace API"
    paths = schema["paths"]
    for path, method in (("/v1/backfills", "post"), ("/v1/runs", "get"), ("/v1/runs/{run_id}", "get"),
                         ("/v1/runs/{run_id}/cancel", "post"), ("/v1/runs/{run_id}/tasks", "get"),
                         ("/v1/tasks/{task_id}", "get"), ("/internal/task-fetch", "post"),
                         ("/internal/heartbeat", "post"), ("/internal/events", "post"),
                         ("/internal/task-complete", "post")):
        assert method in paths.get(path, {}), (path, method)
    assert "401" in paths["/v1/backfills"]["post"]["responses"]
    assert "409" in paths["/internal/heartbeat"]["post"]["responses"]


# -- fuzzing ---------------------------------------------------------------------------------------


def _aim(case: schemathesis.Case[Any], task_id: str, attempt: int) -> None:
    """Point a task endpoint's body at the live task, and its events and outputs at the dataset
    that task may write, so the case gets past the token and dataset checks into the store."""
    if not isinstance(case.body, dict):
        return
    body: dict[str, Any] = {**case.body, "task_id": task_id, "attempt": attempt}
    for key in ("events", "outputs"):
        if isinstance(body.get(key), list):
            body[key] = [{**item, "dataset_id": "backfill.chunks"} if isinstance(item, dict) else item
                         for item in body[key]]
    case.body = body


def _fuzz_operation(operation: schemathesis.APIOperation[Any, Any, Any, Any], base_url: str, token: str,
                    live: tuple[str, int] | None, max_examples: int) -> int:
    """Positive and negative cases of one operation; raises on the first 5xx. Returns the count."""
    sent = 0
    strategy = st.one_of(operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
                         operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))

    @hypothesis.settings(max_examples=max_examples, deadline=None, database=None,
                         phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @hypothesis.given(case=strategy)
    def check(case: schemathesis.Case[Any]) -> None:
        nonlocal sent
        if live is not None:
            _aim(case, *live)
        case.call_and_validate(base_url=base_url, headers=_auth(token), checks=[not_a_server_error],
                               timeout=30)
        sent += 1

    check()
    return sent


def _fuzz(base_url: str, task_tokens: dict[str, tuple[str, int, str]], max_examples: int) -> dict[str, int]:
    """schemathesis against the live schema: every operation, each case sent with the credential
    it needs (the task endpoints get a live task's token, and their bodies that task's id and
    attempt, so the cases reach the store). Returns cases sent per operation."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    sent: dict[str, int] = {}
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        live = task_tokens.get(operation.path)
        token = live[2] if live else WORKER_TOKEN if operation.path == "/internal/task-fetch" else API_TOKEN
        sent[operation.label] = _fuzz_operation(operation, base_url, token, live[:2] if live else None,
                                                max_examples)
    return sent


async def test_schemathesis_finds_no_server_error(pg_url: str, object_dir: Path) -> None:
    # a stack of its own: the fuzzer's runs and claims never meet the other tests'
    async with running_dispatcher(pg_url, object_dir, NO_RPC, lease_s=120.0) as fuzzed:
        live: dict[str, tuple[str, int, str]] = {}
        for path in ("/internal/heartbeat", "/internal/events", "/internal/task-complete"):
            _, leased = await _leased_split(fuzzed)
            live[path] = (leased["task_id"], leased["attempt"], leased["token"])
        sent = await asyncio.to_thread(_fuzz, fuzzed.base_url, live, 30)
        assert set(sent) >= {"POST /v1/backfills", "GET /v1/runs", "GET /v1/runs/{run_id}",
                             "POST /v1/runs/{run_id}/cancel", "GET /v1/runs/{run_id}/tasks",
                             "GET /v1/runs/{run_id}/outputs", "GET /v1/tasks/{task_id}",
                             "POST /internal/task-fetch", "POST /internal/heartbeat", "POST /internal/events",
                             "POST /internal/task-complete"}, sent
        assert all(n >= 10 for n in sent.values()), sent
        failed = await _rows(pg_url, "SELECT method, path, count(*) FROM state.audit_log WHERE org_id = %s"
                                     " AND status >= 500 GROUP BY 1, 2", fuzzed.config.org_id)
        assert failed == []
