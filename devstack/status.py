"""``trace status``: health of every service and, per chain, head, cursor, lag, reorgs, hot rows.

:func:`collect_status` probes; :func:`assemble_status` and :func:`chain_entry` are pure. Nothing here
raises for an unreachable service: its fields become false / null instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

from devstack.anvil import rpc_chain_id, rpc_request
from devstack.objects import objects_healthy
from devstack.postgres import postgres_healthy
from devstack.runfiles import StackPaths, effective_settings, live_pid, mask_url, read_json
from devstack.seaweedfs import s3_healthy
from devstack.supervision import probe_ready
from devstack.tansu import kafka_healthy
from tracekit.config import Settings
from tracekit.errors import ConfigError, ObjectStoreError, RpcUnavailable
from tracekit.objects import S3Config, local_object_dir
from tracekit.objects_open import open_object_store


def service_entry(url: str | None, pid: int | None, healthy: bool | None, restarts: int = 0,
                  **extra: Any) -> dict[str, Any]:
    return {"url": url, "pid": pid, "healthy": healthy, "restarts": restarts, **extra}


def chain_entry(*, head: int | None, cursor: int | None, head_timestamp: int | None,
                cursor_timestamp: int | None, reorgs: int, max_reorg_depth: int | None,
                hot_rows: Mapping[str, int | None]) -> dict[str, Any]:
    """One chain's entry; lags are null when either end is unknown."""
    return {
        "head": head,
        "cursor": cursor,
        "lag_blocks": head - cursor if head is not None and cursor is not None else None,
        "lag_seconds": (float(head_timestamp - cursor_timestamp)
                        if head_timestamp is not None and cursor_timestamp is not None else None),
        "reorgs": reorgs,
        "max_reorg_depth": max_reorg_depth or 0,
        "hot_rows": dict(hot_rows),
    }


def assemble_status(services: dict[str, dict[str, Any]], chains: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The ``status --json`` document: ``{"services": {...}, "chains": {"<id>": {...}}}``."""
    return {"services": services, "chains": {str(chain_id): entry for chain_id, entry in chains.items()}}


def supervised_entries(paths: StackPaths) -> dict[str, dict[str, Any]]:
    """The supervisor and its services, from ``supervisor.json`` checked against live pids."""
    config = read_json(paths.services_file) or {}
    ready = {str(s["name"]): s.get("ready_url") for s in config.get("services", []) if isinstance(s, dict)}
    supervisor_pid = live_pid(paths.pid_file("supervisor"))
    state = read_json(paths.supervisor_file) if supervisor_pid is not None else None
    services: dict[str, Any] = state.get("services", {}) if state else {}
    entries = {"supervisor": service_entry(None, supervisor_pid, supervisor_pid is not None)}
    for name in [*ready, *(n for n in services if n not in ready)]:
        entry = services.get(name, {})
        pid = live_pid(paths.pid_file(name)) if supervisor_pid is not None else None
        url = ready.get(name)
        running = pid is not None and entry.get("state") == "running"
        healthy = running and (url is None or probe_ready(url))
        entries[name] = service_entry(url, pid, healthy, int(entry.get("restarts", 0)),
                                      state=entry.get("state", "stopped"))
    return entries


def _block_timestamp(rpc_url: str, number: int) -> int | None:
    try:
        block = rpc_request(rpc_url, "eth_getBlockByNumber", hex(number), False)
        return int(block["timestamp"], 16)
    except (RpcUnavailable, TypeError, KeyError, ValueError):
        return None


def _chain_rows(database_url: str, chain_id: int) -> dict[str, Any]:
    found: dict[str, Any] = {"cursor": None, "reorgs": 0, "max_depth": None,
                             "hot_rows": {"blocks": None, "transactions": None, "logs": None}}
    try:
        with psycopg.connect(database_url, connect_timeout=3, autocommit=True) as conn:
            row = conn.execute("SELECT block_number FROM state.follower_cursor WHERE chain_id = %s",
                               (chain_id,)).fetchone()
            found["cursor"] = int(row[0]) if row else None
            count, depth = conn.execute(
                "SELECT count(*), max(depth) FROM state.reorgs WHERE chain_id = %s", (chain_id,)
            ).fetchone() or (0, None)
            found["reorgs"], found["max_depth"] = int(count), depth
            for table in ("blocks", "transactions", "logs"):
                query = f"SELECT count(*) FROM hot.{table} WHERE chain_id = %s"  # noqa: S608 - fixed names
                result = conn.execute(query.encode(), (chain_id,)).fetchone()
                found["hot_rows"][table] = int(result[0]) if result else 0
    except psycopg.Error:
        pass
    return found


def chain_status(rpc_url: str, database_url: str, chain_id: int) -> dict[str, Any]:
    try:
        head: int | None = int(rpc_request(rpc_url, "eth_blockNumber"), 16)
    except (RpcUnavailable, TypeError, ValueError):
        head = None
    rows = _chain_rows(database_url, chain_id)
    cursor = rows["cursor"]
    return chain_entry(
        head=head, cursor=cursor,
        head_timestamp=_block_timestamp(rpc_url, head) if head is not None and cursor is not None else None,
        cursor_timestamp=_block_timestamp(rpc_url, cursor) if cursor is not None else None,
        reorgs=rows["reorgs"], max_reorg_depth=rows["max_depth"], hot_rows=rows["hot_rows"],
    )


def objects_entry(store: str, s3: S3Config | None) -> dict[str, Any]:
    """The object store: a directory is healthy when writable; an ``s3://`` store when
    :meth:`~tracekit.objects.ObjectStore.check` passes (the reason goes to ``error`` otherwise)."""
    directory = local_object_dir(store)
    if directory is not None:
        return service_entry(store, None, objects_healthy(directory))
    if s3 is None:
        return service_entry(store, None, False, error="no S3 settings")
    try:
        open_object_store(store, s3).check()
    except (ObjectStoreError, ConfigError) as exc:
        return service_entry(store, None, False, error=str(exc))
    return service_entry(store, None, True)


def _s3_config(settings: Settings) -> S3Config | None:
    try:
        return settings.s3_config(create_secrets=False)
    except (ConfigError, ValueError):
        return None


def collect_status(settings: Settings) -> dict[str, Any]:
    """Probe the stack of ``settings.home`` (with the settings of its last ``up``)."""
    settings = effective_settings(settings)
    paths = StackPaths.at(settings.home)
    db_url, bootstrap, rpc_url = (settings.resolved_database_url, settings.resolved_kafka_bootstrap,
                                  settings.resolved_rpc_url)

    def embedded_pid(name: str, external: object) -> int | None:
        return live_pid(paths.pid_file(name)) if external is None else None

    s3 = _s3_config(settings)
    external_s3 = settings.s3_endpoint is not None
    services = {
        "postgres": service_entry(mask_url(db_url), embedded_pid("postgres", settings.database_url),
                                  postgres_healthy(db_url)),
        "kafka": service_entry(bootstrap, embedded_pid("tansu", settings.kafka_bootstrap),
                               kafka_healthy(bootstrap)),
        "rpc": service_entry(mask_url(rpc_url), embedded_pid("anvil", settings.rpc_url),
                             rpc_chain_id(rpc_url) == settings.chain_id, chain_id=settings.chain_id),
        "s3": service_entry(settings.resolved_s3_endpoint, embedded_pid("seaweedfs", settings.s3_endpoint),
                            None if external_s3 else s3 is not None and s3_healthy(s3)),
        "objects": objects_entry(settings.resolved_object_store, s3),
        **supervised_entries(paths),
    }
    chains = {settings.chain_id: chain_status(rpc_url, db_url, settings.chain_id)}
    return assemble_status(services, chains)
