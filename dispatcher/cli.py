"""``trace dispatcher run``, ``trace worker run`` and ``trace backfill submit | status | cancel``.

Env: TRACE_DATABASE_URL, TRACE_API_PORT, TRACE_DISPATCHER_URL, TRACE_API_TOKEN, TRACE_WORKER_TOKEN,
TRACE_DISPATCHER_SECRET (the three default to HOME/secrets.json, made once), TRACE_QUEUE (pg|kafka),
TRACE_RPC_URL and TRACE_CHAIN_ID (the chain workers fetch), TRACE_OBJECT_STORE (where workers stage
files; default s3://datasets on the embedded SeaweedFS) with TRACE_S3_ENDPOINT, TRACE_S3_REGION,
TRACE_S3_ACCESS_KEY_ID, TRACE_S3_SECRET_ACCESS_KEY, TRACE_WORKER_SLOTS, and TRACE_INTEGRITY_SAMPLES
(heights of each committed range the dispatcher compares with the node at TRACE_RPC_URL).
Retention and gc: TRACE_DATASET_VERSIONS_KEPT, TRACE_STAGING_RETENTION_HOURS, TRACE_GC_EVERY_MINUTES.
Finalization (hot -> cold, with a warehouse): TRACE_FINALITY_DEPTH, TRACE_FINALIZE_BATCH_BLOCKS,
TRACE_FINALIZE_OVERLAP_BLOCKS, TRACE_FINALIZE_EVERY_SECONDS; workers read the hot tables at
TRACE_DATABASE_URL, and (parquet_compact) the Iceberg tables in the warehouse beside TRACE_OBJECT_STORE.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
import uuid
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dispatcher.api.deps import ApiConfig
from tracekit.config import Settings, load_settings
from tracekit.errors import ConfigError, TraceError
from tracekit.logs import setup_logging
from tracekit.objects import ObjectStore, S3Config

dispatcher_app = typer.Typer(help="The dispatcher: HTTP API, outbox publisher, lease reaper.",
                             no_args_is_help=True)
worker_app = typer.Typer(help="Workers: run leased tasks (backfill chunks...).", no_args_is_help=True)
backfill_app = typer.Typer(help="Backfills: a block range of a chain into Parquet, chunk by chunk.",
                           no_args_is_help=True)

log = logging.getLogger("trace.dispatcher")
FINISHED = ("succeeded", "failed", "canceled")


def _settings() -> Settings:
    return load_settings()


def _credentials(settings: Settings) -> Any:
    try:
        return settings.credentials()
    except ValueError as exc:
        raise TraceError(str(exc)) from exc


def api_config(settings: Settings) -> ApiConfig:
    from dispatcher.datasets.finalize import FinalizeConfig
    from operators.cryo_ingest import chain_name

    creds = _credentials(settings)
    warehouse, s3 = _warehouse(settings)
    return ApiConfig(
        api_token=creds.api_token, worker_token=creds.worker_token, task_secret=creds.task_secret,
        database_url=settings.resolved_database_url, kafka_bootstrap=settings.resolved_kafka_bootstrap,
        alerts_topic=settings.alerts_topic, org_id=settings.org_id,
        chains={settings.chain_id: chain_name(settings.chain_id)}, lease_s=settings.lease_seconds,
        warehouse=warehouse, s3=s3,
        object_store=settings.resolved_object_store, dataset_versions_kept=settings.dataset_versions_kept,
        staging_retention_h=settings.staging_retention_hours, gc_every_s=settings.gc_every_minutes * 60,
        rpc_urls={settings.chain_id: settings.resolved_rpc_url}, integrity_samples=settings.integrity_samples,
        finalize=FinalizeConfig(settings.chain_id, chain_name(settings.chain_id),
                                finality_depth=settings.finality_depth,
                                batch_blocks=settings.finalize_batch_blocks,
                                overlap_blocks=settings.finalize_overlap_blocks,
                                every_s=settings.finalize_every_seconds),
    )


def warehouse_of(object_store: str) -> str:
    """Where the Iceberg tables live: ``warehouse/`` beside the staging files in the object store."""
    from tracekit.objects import local_object_dir

    directory = local_object_dir(object_store)
    if directory is not None:
        return (directory.resolve() / "warehouse").as_uri()
    return object_store.rstrip("/") + "/warehouse"


def _warehouse(settings: Settings) -> tuple[str | None, S3Config | None]:
    """The warehouse and how to reach it; ``(None, None)`` when the object store is S3 without
    credentials yet: the API still serves, but nothing is committed, collected or finalized."""
    from tracekit.objects import parse_store_url

    url = settings.resolved_object_store
    if parse_store_url(url).bucket is None:
        return warehouse_of(url), None
    try:
        s3 = settings.s3_config(create_secrets=False)
    except ConfigError as exc:
        log.warning("%s: finished runs are not committed (and gc and finalization do not run)", exc)
        return None, None
    except ValueError as exc:  # an unreadable secrets file
        raise TraceError(str(exc)) from exc
    return warehouse_of(url), s3


@dispatcher_app.command("run")
def dispatcher_run() -> None:
    """Serve the API (OpenAPI at /openapi.json) on TRACE_HOST:TRACE_API_PORT, publish wake-ups from
    the outbox to the queue, give back expired leases, commit finished runs' files; Prometheus
    metrics on TRACE_DISPATCHER_METRICS_PORT (/metrics)."""
    from prometheus_client import start_http_server

    from dispatcher.queue import open_queue
    from dispatcher.service import serve_dispatcher

    setup_logging()
    settings = _settings()
    config = api_config(settings)
    if settings.dispatcher_metrics_port:
        start_http_server(settings.dispatcher_metrics_port, addr=settings.host)

    async def main() -> None:
        queue = await open_queue(settings.queue, database_url=settings.resolved_database_url,
                                 kafka_bootstrap=settings.resolved_kafka_bootstrap)
        await serve_dispatcher(config, queue, host=settings.host, port=settings.api_port)

    asyncio.run(main())


def open_store(settings: Settings) -> ObjectStore:
    """The object store ``TRACE_OBJECT_STORE`` names, checked: a malformed URL, an unreachable S3,
    a missing bucket or rejected credentials is one ObjectStoreError (a TraceError) line. A local
    directory is created when missing."""
    from tracekit.objects import local_object_dir, parse_store_url
    from tracekit.objects_open import open_object_store

    url = settings.resolved_object_store
    location = parse_store_url(url)
    directory = local_object_dir(url)
    if directory is not None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TraceError(f"object store: cannot create {directory}: {exc.strerror}") from exc
    try:
        s3 = settings.s3_config(create_secrets=False) if location.bucket is not None else None
    except ValueError as exc:  # an unreadable secrets file
        raise TraceError(str(exc)) from exc
    store = open_object_store(url, s3)
    store.check()
    return store


@worker_app.command("run")
def worker_run(
    slots: Annotated[int | None, typer.Option(help="Tasks at once (TRACE_WORKER_SLOTS)", min=1)] = None,
    worker_id: Annotated[str | None, typer.Option("--id", help="Name in leases (default host:pid)")] = None,
) -> None:
    """Take tasks from the dispatcher and run them until SIGTERM, then hand running ones back.

    Files go to TRACE_OBJECT_STORE, checked first: a bad URL, an unreachable S3, a missing bucket
    or wrong credentials stop the worker with one line."""
    from dispatcher.queue import open_queue
    from dispatcher.service import run_worker
    from dispatcher.worker import WorkerEnv
    from tracekit.iceberg import open_catalog

    setup_logging()
    settings = _settings()
    store = open_store(settings)
    creds = _credentials(settings)
    database_url = settings.resolved_database_url
    warehouse, s3 = _warehouse(settings)  # the Iceberg tables beside the store (parquet_compact reads them)
    env = WorkerEnv(store=store, store_url=settings.resolved_object_store,
                    rpc_urls={settings.chain_id: settings.resolved_rpc_url},
                    confirmations=settings.finality_depth, database_url=database_url,
                    open_catalog=None if warehouse is None else functools.partial(
                        open_catalog, database_url, warehouse, s3))

    async def main() -> None:
        queue = await open_queue(settings.queue, database_url=settings.resolved_database_url,
                                 kafka_bootstrap=settings.resolved_kafka_bootstrap)
        await run_worker(dispatcher_url=settings.resolved_dispatcher_url, worker_token=creds.worker_token,
                         queue=queue, env=env, slots=slots or settings.worker_slots, worker_id=worker_id)

    asyncio.run(main())


# -- trace backfill ------------------------------------------------------------------------------


class Api:
    """A small client of the public API for the CLI."""

    def __init__(self, settings: Settings) -> None:
        self.base = settings.resolved_dispatcher_url
        token = _credentials(settings).api_token
        self.http = httpx.Client(base_url=self.base, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"})

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise TraceError(f"the dispatcher at {self.base} is unreachable ({exc}); is `trace up` running?"
                             ) from exc
        if response.status_code >= 400:
            try:
                body = response.json()
                detail = body.get("detail")
                if isinstance(detail, list):  # validation errors: field: message
                    detail = "; ".join(f"{'.'.join(str(p) for p in d['loc'][1:])}: {d['msg']}"
                                       for d in detail)
                message = f"{body.get('error')}: {detail}"
            except (ValueError, AttributeError, KeyError, TypeError):
                message = response.text[:300]
            raise TraceError(f"{method} {path}: {response.status_code} {message}")
        return response.json()


def _console() -> Console:
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = 140
    return console


def summary_table(run: dict[str, Any]) -> Table:
    progress = run["progress"]
    params = run["params"]
    table = Table(title=f"run {run['run_id']}", show_header=True, header_style="bold")
    table.add_column("field")
    table.add_column("value", overflow="fold")
    rows = [
        ("state", run["state"]),
        ("chain", f"{params.get('chain')} ({params.get('chain_id')})"),
        ("blocks", f"{params.get('start_block')}..{params.get('end_block')}"
                   f" in chunks of {params.get('chunk_size')}"),
        ("engine", str(params.get("engine"))),
        ("chunks", f"{progress['chunks_done']}/{progress['chunks_total']}"),
        ("blocks done", f"{progress['blocks_done']}/{progress['blocks_total']}"),
        ("tasks", ", ".join(f"{k} {v}" for k, v in sorted(progress["tasks"].items())) or "-"),
        ("files", str(progress["files"])),
    ]
    rows += [(f"rows {k}", f"{v:,}") for k, v in sorted(progress["rows"].items())]
    if run.get("finished_at") and run.get("created_at"):
        rows.append(("submitted", str(run["created_at"])))
        rows.append(("finished", str(run["finished_at"])))
    for error in run.get("errors") or []:
        rows.append((f"error ({error['state']})", f"{error['job']} {error['task_id']}: {error['error']}"))
    for key, value in rows:
        table.add_row(key, value)
    return table


def watch(api: Api, run_id: str, console: Console, *, poll_s: float = 0.5) -> dict[str, Any]:
    """A progress bar until the run finishes; returns the final run."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("blocks {task.fields[blocks]}"), TimeElapsedColumn(), console=console,
                  transient=False) as bar:
        run = api.call("GET", f"/v1/runs/{run_id}")
        task = bar.add_task("chunks", total=max(run["progress"]["chunks_total"], 1), blocks="0")
        while True:
            p = run["progress"]
            bar.update(task, completed=p["chunks_done"], total=max(p["chunks_total"], 1),
                       blocks=f"{p['blocks_done']:,}/{p['blocks_total']:,}", description=run["state"])
            if run["state"] in FINISHED:
                return dict(run)
            time.sleep(poll_s)
            run = api.call("GET", f"/v1/runs/{run_id}")


@backfill_app.command("submit")
def backfill_submit(
    start: Annotated[int, typer.Option("--start", help="First block (inclusive)", min=0)],
    end: Annotated[int, typer.Option("--end", help="Last block (inclusive)", min=0)],
    datasets: Annotated[str, typer.Option(
        help="Comma-separated, of blocks,transactions,logs,traces (traces only when listed)")] =
        "blocks,transactions,logs",
    chunk_size: Annotated[int, typer.Option(help="Most blocks per chunk (task and file); chunks are also"
                                                 " cut at 10,000-block partitions", min=1)] = 1000,
    engine: Annotated[str, typer.Option(help="rpc (native JSON-RPC) or cryo")] = "rpc",
    chain_id: Annotated[int | None, typer.Option(help="Chain (default TRACE_CHAIN_ID)")] = None,
    key: Annotated[str | None, typer.Option(help="Idempotency key: a resubmit returns its run")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Show progress until the run ends")] = True,
) -> None:
    """Submit a backfill; with --wait (default) show a progress bar, then a summary table."""
    settings = _settings()
    api = Api(settings)
    body = {"chain_id": chain_id or settings.chain_id,
            "datasets": [d.strip() for d in datasets.split(",") if d.strip()], "start_block": start,
            "end_block": end, "chunk_size": chunk_size, "engine": engine}
    headers = {"Idempotency-Key": key} if key else {}
    submitted = api.call("POST", "/v1/backfills", json=body, headers=headers)
    console = _console()
    console.print(f"run {submitted['run_id']} {'submitted' if submitted['created'] else '(existing)'}")
    if not wait:
        return
    run = watch(api, submitted["run_id"], console)
    console.print(summary_table(run))
    if run["state"] != "succeeded":
        raise TraceError(f"run {run['run_id']} ended {run['state']}")


@backfill_app.command("status")
def backfill_status(
    run_id: Annotated[str | None, typer.Argument(help="A run id (default: list recent runs)")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Show progress until the run ends")] = False,
) -> None:
    """One run's progress and summary, or the recent runs."""
    api = Api(_settings())
    console = _console()
    if run_id is None:
        runs = api.call("GET", "/v1/runs", params={"limit": 20})["runs"]
        table = Table(title="recent runs", header_style="bold")
        for col in ("run", "state", "range", "chunks", "rows", "submitted"):
            table.add_column(col, overflow="fold")
        for r in runs:
            p, params = r["progress"], r["params"]
            table.add_row(str(r["run_id"]), r["state"],
                          f"{params.get('start_block')}..{params.get('end_block')}",
                          f"{p['chunks_done']}/{p['chunks_total']}", f"{sum(p['rows'].values()):,}",
                          str(r["created_at"])[:19])
        console.print(table)
        return
    _uuid(run_id)
    run = watch(api, run_id, console) if follow else api.call("GET", f"/v1/runs/{run_id}")
    console.print(summary_table(run))


@backfill_app.command("cancel")
def backfill_cancel(run_id: Annotated[str, typer.Argument(help="The run to cancel")]) -> None:
    """Cancel a run: queued chunks end at once, running ones at their next heartbeat."""
    _uuid(run_id)
    answer = Api(_settings()).call("POST", f"/v1/runs/{run_id}/cancel")
    _console().print(f"run {answer['run_id']}: {answer['state']}")


def _uuid(text: str) -> None:
    try:
        uuid.UUID(text)
    except ValueError as exc:
        raise TraceError(f"{text!r} is not a run id (a UUID)") from exc


# -- trace dag run, trace event send ---------------------------------------------------------------

event_app = typer.Typer(help="External events: start the jobs whose triggers wait for them.",
                        no_args_is_help=True)


def _params(pairs: list[str]) -> dict[str, Any]:
    """``k=v`` pairs; a value that parses as JSON is taken as JSON (``n=3`` is a number)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise TraceError(f"--param {pair!r}: write name=value")
        try:
            out[name] = orjson.loads(value)
        except orjson.JSONDecodeError:
            out[name] = value
    return out


def tasks_table(api: Api, run: dict[str, Any]) -> Table:
    tasks = api.call("GET", f"/v1/runs/{run['run_id']}/tasks")["tasks"]
    table = Table(title=f"run {run['run_id']} ({run['kind']}, {run['dag']}): {run['state']}",
                  header_style="bold")
    for col in ("job", "task", "state", "attempt", "error"):
        table.add_column(col, overflow="fold")
    for t in sorted(tasks, key=lambda t: (t["job"], str(t["task_id"]))):
        table.add_row(t["job"], str(t["task_id"]), t["state"], str(t["attempt"]), t.get("last_error") or "")
    return table


def run_dag(dag: str, params: list[str], key: str | None, wait: bool) -> None:
    """What ``trace dag run`` does: start a manual run of ``dag`` through the dispatcher."""
    api = Api(_settings())
    headers = {"Idempotency-Key": key} if key else {}
    submitted = api.call("POST", f"/v1/dags/{dag}/runs", json={"params": _params(params)}, headers=headers)
    console = _console()
    console.print(f"run {submitted['run_id']} {'started' if submitted['created'] else '(existing)'}")
    if not wait:
        return
    run = api.call("GET", f"/v1/runs/{submitted['run_id']}")
    while run["state"] not in FINISHED:
        time.sleep(0.5)
        run = api.call("GET", f"/v1/runs/{submitted['run_id']}")
    console.print(tasks_table(api, run))
    if run["state"] != "succeeded":
        raise TraceError(f"run {run['run_id']} ended {run['state']}")


@event_app.command("send")
def event_send(
    name: Annotated[str, typer.Argument(help="The event's name, as triggers name it ({event: NAME})")],
    key: Annotated[str | None, typer.Option(help="Deduplicates: sent again with this key, it is ignored")]
        = None,
    payload: Annotated[str, typer.Option(help="A JSON object passed to the tasks it starts")] = "{}",
) -> None:
    """Send an external event; prints the runs it started."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise TraceError(f"--payload is not JSON: {exc}") from exc
    answer = Api(_settings()).call("POST", "/v1/events", json={"name": name, "key": key, "payload": body})
    console = _console()
    if not answer["accepted"]:
        console.print(f"event {name} key {answer['key']}: received before, nothing done")
        return
    console.print(f"event {name} key {answer['key']}: {len(answer['runs'])} run(s) started")
    for run in answer["runs"]:
        console.print(f"  run {run['run_id']}")
