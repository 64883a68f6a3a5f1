"""``trace demo``: the realtime slice end to end on the embedded stack, with a report.

Brings the stack up (traffic with injected reorgs), watches it for a while printing a line every
few seconds, then prints what happened: blocks followed, reorgs and their depths, lag, hot-table
row counts, and a check of the hot tables against the node below the reorg horizon. Then the
batch half: a backfill of the confirmed blocks through the dispatcher's API, run by the worker,
its Parquet files read back through the object-store port (S3 by default, or a directory) and
checked against the node, and their bytes against the sha256 each output carries; then the
dispatcher's commit of the run: the datasets' current versions (``/v1/datasets``) with their row
counts, and the rows each Iceberg table's main holds, read by pyiceberg. The stack is stopped
again unless it was already running before the demo or ``--keep`` is given.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
from rich.console import Console
from rich.table import Table

from devstack import stack
from devstack.anvil import rpc_request
from devstack.status import collect_status
from tracekit.config import Settings
from tracekit.objects import ObjectStore, parse_store_url
from tracekit.objects_open import open_object_store


def hot_table_check(settings: Settings, below: int) -> tuple[int, list[int]]:
    """Compare hot.blocks with the node at every height ``<= below``: (heights checked, mismatches)."""
    with psycopg.connect(settings.resolved_database_url, autocommit=True) as conn:
        rows: dict[int, str] = dict(conn.execute(
            "SELECT block_number, block_hash FROM hot.blocks WHERE chain_id = %s AND block_number <= %s",
            (settings.chain_id, below)).fetchall())
    if not rows:
        return 0, []
    bad = []
    for number, block_hash in sorted(rows.items()):
        node = rpc_request(settings.resolved_rpc_url, "eth_getBlockByNumber", hex(number), False)
        if not isinstance(node, dict) or node.get("hash") != block_hash:
            bad.append(number)
    first = min(rows)
    missing = [n for n in range(first, below + 1) if n not in rows]
    return len(rows), bad + missing


def object_store(settings: Settings) -> ObjectStore:
    """The store the stack's worker writes to (``TRACE_OBJECT_STORE``, default ``s3://datasets``)."""
    url = settings.resolved_object_store
    s3 = settings.s3_config(create_secrets=False) if parse_store_url(url).bucket is not None else None
    return open_object_store(url, s3)


def reader_path(uri: str) -> str:
    """An output's URI as a path of the store's pyarrow filesystem: ``bucket/key`` or a file path."""
    if uri.startswith("s3://"):
        return uri.removeprefix("s3://")
    return unquote(urlsplit(uri).path) if uri.startswith("file://") else uri


def read_output(store: ObjectStore, uri: str, columns: list[str] | None = None) -> tuple[Any, str]:
    """The Parquet table at ``uri`` (read through the port's pyarrow filesystem) and its sha256."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with store.pyarrow_filesystem().open_input_file(reader_path(uri)) as handle:
        data = handle.read()
    return pq.read_table(pa.BufferReader(data), columns=columns), hashlib.sha256(data).hexdigest()


def wait_commit(settings: Settings, run_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """The run's row in ``state.run_commits`` once the committer is done with it (or the last seen)."""
    deadline = time.monotonic() + timeout
    row: tuple[Any, ...] | None = None
    with psycopg.connect(settings.resolved_database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT state, last_error, versions FROM state.run_commits WHERE run_id = %s",
                               (run_id,)).fetchone()
            if row is not None and row[0] != "pending":
                break
            time.sleep(0.5)
    if row is None:
        return {"state": "not queued"}
    return {"state": row[0], "error": row[1], "versions": row[2]}


def iceberg_rows(settings: Settings, datasets: list[str]) -> dict[str, int]:
    """How many rows each dataset's Iceberg table's main holds, read by pyiceberg."""
    from dispatcher.cli import warehouse_of
    from dispatcher.datasets.commit import chain_namespace
    from tracekit.iceberg import open_catalog

    store = settings.resolved_object_store
    s3 = settings.s3_config(create_secrets=False) if parse_store_url(store).bucket is not None else None
    catalog = open_catalog(settings.resolved_database_url, warehouse_of(store), s3)
    try:
        namespace = chain_namespace(settings.org_id)
        return {d: catalog.load_table((namespace, d)).scan().to_arrow().num_rows for d in datasets}
    finally:
        catalog.close()


def committed_versions(settings: Settings, run_id: str, say: Callable[[str], None]) -> dict[str, Any]:
    """Wait for the run's commit, then each dataset it made: its current version, rows, files and
    blocks (``/v1/datasets``), and the rows its Iceberg table's main holds."""
    import httpx

    say(f"waiting for the dispatcher to commit run {run_id} ...")
    commit = wait_commit(settings, run_id)
    versions: dict[str, dict[str, Any]] = {}
    token = settings.credentials().api_token
    with httpx.Client(base_url=settings.resolved_dispatcher_url, timeout=30,
                      headers={"Authorization": f"Bearer {token}"}) as api:
        listed = api.get("/v1/datasets").json()
        for row in listed["datasets"]:
            current = row["current_version"]
            if current is None or row["dataset_id"] not in (commit.get("versions") or {}):
                continue
            found = api.get(f"/v1/datasets/{row['dataset_id']}/versions").json()["versions"]
            made = next(v for v in found if v["version"] == current)
            versions[row["dataset_id"]] = {
                "version": current, "table": row["table_name"], "rows": made["row_count"],
                "files": made["file_count"], "blocks": f"{made['block_start']}..{made['block_end']}"}
    if versions:
        for dataset, read in iceberg_rows(settings, sorted(versions)).items():
            versions[dataset]["rows_in_iceberg_main"] = read
    return {"commit": commit["state"], "commit_error": commit.get("error"),
            "pointer_set": listed["pointer_set"], "datasets": versions}


def backfill_check(settings: Settings, end: int, say: Callable[[str], None],
                   timeout: float = 120.0) -> dict[str, Any]:
    """Backfill blocks ``0..end`` through the API; compare the committed block files with the node
    and every file's bytes with the sha256 the worker reported."""
    import httpx

    token = settings.credentials().api_token
    began = time.monotonic()
    with httpx.Client(base_url=settings.resolved_dispatcher_url, timeout=30,
                      headers={"Authorization": f"Bearer {token}"}) as api:
        answer = api.post("/v1/backfills", json={
            "chain_id": settings.chain_id, "datasets": ["blocks", "transactions", "logs"],
            "start_block": 0, "end_block": end, "chunk_size": 20, "engine": "rpc"})
        answer.raise_for_status()
        run_id = answer.json()["run_id"]
        say(f"backfill {run_id}: blocks 0..{end} in chunks of 20 ...")
        while True:
            run = api.get(f"/v1/runs/{run_id}").json()
            if run["state"] in ("succeeded", "failed", "canceled") or time.monotonic() - began > timeout:
                break
            time.sleep(0.5)
        outputs = api.get(f"/v1/runs/{run_id}/outputs").json()
    seconds = time.monotonic() - began
    store = object_store(settings)
    hashes: dict[int, str] = {}
    bad_files = []
    for o in outputs:
        table, sha256 = read_output(store, o["uri"])
        if sha256 != o.get("sha256"):
            bad_files.append(o["uri"])
        if o["dataset_id"] == "blocks":
            for n, h in zip(table.column("block_number").to_pylist(), table.column("block_hash").to_pylist(),
                            strict=True):
                hashes[n] = "0x" + h.hex()
    bad = []
    for n in range(end + 1):
        node = rpc_request(settings.resolved_rpc_url, "eth_getBlockByNumber", hex(n), False)
        if not isinstance(node, dict) or node.get("hash") != hashes.get(n):
            bad.append(n)
    progress = run["progress"]
    return {"run_id": run_id, "state": run["state"],
            "chunks": f"{progress['chunks_done']}/{progress['chunks_total']}",
            "rows": progress["rows"], "files": progress["files"], "seconds": round(seconds, 1),
            "store": settings.resolved_object_store, "checksum_mismatches": bad_files[:5],
            "mismatches_vs_node": bad[:20]}


def run_demo(settings: Settings, *, seconds: float, keep: bool, say: Callable[[str], None]) -> dict[str, Any]:
    if settings.reorg_every <= 0:
        reorgs = {"reorg_every": 4.0, "reorg_min_depth": 1, "reorg_max_depth": 6}
        settings = settings.model_copy(update=reorgs)
    say(f"starting the embedded stack in {settings.home} ...")
    report = stack.up(settings, say=say)
    say(f"stack up in {report.seconds:.1f}s: started {', '.join(report.started) or 'nothing'}"
        + (f"; already running {', '.join(report.reused)}" if report.reused else ""))
    was_running = bool(report.reused)
    chain = str(settings.chain_id)
    began = time.monotonic()
    first: dict[str, Any] | None = None
    last: dict[str, Any] = {}
    try:
        while time.monotonic() - began < seconds:
            time.sleep(5.0)
            doc = collect_status(settings)
            last = doc["chains"].get(chain, {})
            first = first or last
            rows = last.get("hot_rows", {})
            say(f"t+{time.monotonic() - began:4.0f}s head {last.get('head')} cursor {last.get('cursor')} "
                f"lag {last.get('lag_blocks')} blocks / {last.get('lag_seconds')} s, "
                f"reorgs {last.get('reorgs')} "
                f"(max depth {last.get('max_reorg_depth')}), hot rows {rows.get('blocks')} blocks "
                f"{rows.get('transactions')} txs {rows.get('logs')} logs")
        final = collect_status(settings)
        last = final["chains"].get(chain, {})
        cursor = last.get("cursor") or 0
        horizon = cursor - settings.reorg_max_depth - 2
        checked, mismatches = hot_table_check(settings, horizon)
        confirmed = max(0, cursor - settings.finality_depth - settings.reorg_max_depth)
        backfill = backfill_check(settings, confirmed, say)
        datasets = committed_versions(settings, backfill["run_id"], say)
    finally:
        if not keep and not was_running:
            stack.down(settings.home)
    summary = {
        "chain_id": settings.chain_id,
        "seconds": round(time.monotonic() - began, 1),
        "blocks_followed": (last.get("cursor") or 0) - ((first or {}).get("cursor") or 0),
        "head": last.get("head"),
        "cursor": last.get("cursor"),
        "lag_blocks": last.get("lag_blocks"),
        "lag_seconds": last.get("lag_seconds"),
        "reorgs": last.get("reorgs"),
        "max_reorg_depth": last.get("max_reorg_depth"),
        "hot_rows": last.get("hot_rows"),
        "heights_checked_against_node": checked,
        "mismatches": mismatches,
        "services": {k: v.get("healthy") for k, v in final["services"].items()},
        "backfill": backfill,
        "datasets": datasets,
    }
    table = Table("what happened", "", title="trace demo")
    for key, value in summary.items():
        if key != "datasets":
            table.add_row(key, str(value))
    console = Console()
    console.print(table)
    title = f"committed versions (commit {datasets['commit']}, pointer set {datasets['pointer_set']})"
    versions = Table("Iceberg table", "version", "blocks", "files", "rows", "rows read (pyiceberg)",
                     title=title)
    for _, made in sorted(datasets["datasets"].items()):
        versions.add_row(made["table"], str(made["version"]), made["blocks"], str(made["files"]),
                         str(made["rows"]), str(made.get("rows_in_iceberg_main")))
    console.print(versions)
    if datasets.get("commit_error"):
        say(f"the commit failed: {datasets['commit_error']}")
    say("stack left running (`trace status`, `trace down`)" if keep or was_running else "stack stopped")
    return summary
