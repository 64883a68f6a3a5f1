"""Runs a user starts: a manual run of a deployed DAG, and an external event (webhook, API call)
that event triggers and composites listen to. Each is one transaction per DAG: the triggers'
state, the run and its tasks (with their wake-ups) commit together or not at all."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from dispatcher.catalog import active_versions
from dispatcher.errors import NotFound
from dispatcher.runs import Submitted
from dispatcher.store import TaskStore
from dispatcher.trigger_book import Firing
from dispatcher.triggers import Signal
from tracekit.db.queries import load_queries
from tracekit.errors import ConfigError

_SQL = load_queries("dispatcher.sql", "events.sql")


class NothingToRun(ConfigError):
    """The DAG has no job with a manual trigger."""


class PinnedByDispatcher(ConfigError):
    """A run's parameters named the input versions, which only the dispatcher pins."""


async def start_manual_run(store: TaskStore, org_id: str, dag: str, params: Mapping[str, Any], *,
                           submitted_by: str, idempotency_key: str | None = None) -> Submitted:
    """One task of each job of ``dag``'s active version that has a ``manual`` trigger (the
    datasets they read pinned at their current versions by the dispatcher: a caller cannot name
    the versions or tables a run reads)."""
    if "inputs" in params:
        raise PinnedByDispatcher("params.inputs is set by the dispatcher (the current versions of the "
                                 "datasets the jobs read); leave it out")
    version = (await store.active_versions(org_id)).get(dag)
    if version is None:
        raise NotFound(f"no DAG {dag!r} is deployed (trace dag deploy)")
    jobs = await store.triggers.manual_jobs(org_id, dag, version)
    if not jobs:
        raise NothingToRun(f"DAG {dag!r} version {version} has no job with a manual trigger")
    key = idempotency_key or uuid.uuid4().hex
    async with store.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        return await store.create_run_in(
            cur, org_id=org_id, kind="manual", dag=dag, dag_version=version, params=dict(params),
            submitted_by=submitted_by, idempotency_key=f"manual:{dag}:{key}" if idempotency_key else None,
            firings=[Firing(j, f"manual:{key}", None) for j in jobs], payload={"params": dict(params)},
        )


async def send_event(store: TaskStore, org_id: str, name: str, key: str | None,
                     payload: Mapping[str, Any], *, submitted_by: str) -> tuple[bool, str, list[Submitted]]:
    """Deliver an external event to every active DAG of the org: (accepted, key, runs started).
    An event whose name and key were received before changes nothing."""
    key = key or uuid.uuid4().hex
    signal = Signal("event", name)
    about = {"name": name, "key": key, "payload": dict(payload)}
    runs = []
    async with store.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:  # all or nothing
        await cur.execute(_SQL.sql("insert_external_event"),
                          (org_id, name, key, orjson.dumps(about["payload"]).decode(), submitted_by))
        if await cur.fetchone() is None:
            return False, key, []
        for dag, version in (await active_versions(cur, org_id)).items():
            firings = await store.triggers.fire(cur, org_id, dag, version, signal, f"event:{name}:{key}")
            if firings:
                runs.append(await store.create_run_in(
                    cur, org_id=org_id, kind="event", dag=dag, dag_version=version, params={"event": about},
                    submitted_by=submitted_by, idempotency_key=f"event:{dag}:{name}:{key}", firings=firings,
                    payload={"event": about}))
    return True, key, runs
