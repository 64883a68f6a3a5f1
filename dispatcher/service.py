"""The dispatcher process (``trace dispatcher run``): the HTTP API, the outbox -> queue publisher
and the lease reaper, in one event loop. Several may run against one database: claims, the
publisher (``SKIP LOCKED``) and the reaper are all safe to run concurrently.

The worker process (``trace worker run``) is :func:`run_worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import uvicorn
from psycopg_pool import AsyncConnectionPool

from dispatcher.api.app import create_app
from dispatcher.api.deps import ApiConfig
from dispatcher.catalog import PgJobCatalog
from dispatcher.datasets.commit import chain_namespace
from dispatcher.datasets.committer import Committer
from dispatcher.datasets.finalize import Finalizer
from dispatcher.datasets.gc import GcConfig, GcReport, collect_garbage
from dispatcher.datasets.integrity import IntegrityConfig
from dispatcher.datasets.rematerialize import Rematerializer
from dispatcher.metrics import LEASE_EXPIRIES, refresh_forever
from dispatcher.publisher import queue_publisher
from dispatcher.queue import QueueDriver
from dispatcher.scheduler import Scheduler
from dispatcher.store import TaskStore
from dispatcher.worker import OPERATORS, DispatcherClient, Worker, WorkerEnv
from tracekit.iceberg import open_catalog
from tracekit.objects_open import open_object_store

log = logging.getLogger("trace.dispatcher")


async def reap_forever(store: TaskStore, stop: asyncio.Event, every_s: float = 1.0) -> None:
    """Expired leases -> retried (or dead) tasks, every ``every_s``."""
    while not stop.is_set():
        try:
            reaped = await store.reap()
            LEASE_EXPIRIES.inc(reaped)
            if reaped:
                log.info("reaper: %d expired lease(s) given back", reaped)
        except Exception as exc:
            log.warning("reaper: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


def committer_of(config: ApiConfig) -> Committer:
    """The committer of ``config``'s org: succeeded runs -> current dataset versions."""
    database_url, warehouse, s3 = config.database_url, config.warehouse, config.s3
    if database_url is None or warehouse is None:
        raise ValueError("the committer needs a database and a warehouse")
    return Committer(database_url, config.org_id, lambda: open_catalog(database_url, warehouse, s3),
                     namespace=chain_namespace(config.org_id),
                     integrity=IntegrityConfig(config.integrity_samples, config.rpc_urls),
                     prune_overlap=None if config.finalize is None else config.finalize.overlap_blocks)


def gc_of(config: ApiConfig) -> Callable[[], GcReport] | None:
    """One gc pass over ``config``'s org (retention, then orphaned staging files); None without a
    database, a warehouse and an object store (nothing to collect)."""
    database_url, warehouse, s3 = config.database_url, config.warehouse, config.s3
    objects = config.object_store
    if database_url is None or warehouse is None or objects is None:
        return None
    gc = GcConfig(database_url, config.org_id, config.dataset_versions_kept,
                  timedelta(hours=config.staging_retention_h))

    def collect() -> GcReport:
        catalog = open_catalog(database_url, warehouse, s3)
        try:
            return collect_garbage(gc, catalog, open_object_store(objects, s3))
        finally:
            with contextlib.suppress(Exception):
                catalog.close()

    return collect


async def gc_forever(collect: Callable[[], object], stop: asyncio.Event, every_s: float) -> None:
    """A gc pass (in a thread) every ``every_s``, the first one ``every_s`` after start, until
    ``stop``; a failed pass is logged and tried again at the next."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        if stop.is_set():
            return
        try:
            await asyncio.to_thread(collect)
        except Exception as exc:
            log.warning("gc: %s", exc)

async def serve_dispatcher(config: ApiConfig, queue: QueueDriver, *, host: str, port: int,
                           reap_every_s: float = 1.0, stop: asyncio.Event | None = None) -> None:
    """Until SIGINT/SIGTERM (or ``stop``): API on ``host:port``, publisher, reaper, trigger clock,
    and (with a warehouse) the committer of succeeded runs' files, the rematerializer of deploys
    and the periodic gc."""
    if config.database_url is None:
        raise ValueError("the dispatcher needs a database")
    stop = stop or asyncio.Event()
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(config.database_url, min_size=2, max_size=12,
                                                         open=False)
    await pool.open(wait=True, timeout=30)
    try:
        store = TaskStore(pool, PgJobCatalog(pool), lease=timedelta(seconds=config.lease_s))
        server = uvicorn.Server(uvicorn.Config(create_app(config, pool=pool), host=host, port=port,
                                               log_level="warning", lifespan="on"))
        publisher = queue_publisher(config.database_url, queue)
        async def exit_on_stop() -> None:
            await stop.wait()
            server.should_exit = True

        scheduler = Scheduler(pool, store, config.org_id)
        background = [asyncio.create_task(publisher.run(stop), name="outbox-publisher"),
                      asyncio.create_task(reap_forever(store, stop, reap_every_s), name="reaper"),
                      asyncio.create_task(scheduler.run(stop), name="trigger-scheduler"),
                      asyncio.create_task(refresh_forever(pool, config.org_id, stop), name="metrics"),
                      asyncio.create_task(exit_on_stop(), name="exit-on-stop")]
        if config.warehouse is not None:
            background.append(asyncio.create_task(committer_of(config).run(stop), name="committer"))
            database_url, warehouse, s3 = config.database_url, config.warehouse, config.s3
            rematerializer = Rematerializer(pool, store, config.org_id, database_url,
                                            lambda: open_catalog(database_url, warehouse, s3),
                                            namespace=chain_namespace(config.org_id))
            background.append(asyncio.create_task(rematerializer.run(stop), name="rematerializer"))
            if config.finalize is not None:
                finalizer = Finalizer(pool, store, config.org_id, config.database_url, config.finalize)
                background.append(asyncio.create_task(finalizer.run(stop), name="finalizer"))
            collect = gc_of(config)
            if collect is not None:
                background.append(asyncio.create_task(gc_forever(collect, stop, config.gc_every_s),
                                                      name="gc"))
        try:
            await server.serve()  # returns on SIGINT/SIGTERM (uvicorn's handlers)
        finally:
            stop.set()
            await asyncio.gather(*background, return_exceptions=True)
    finally:
        await queue.close()
        await pool.close()


async def run_worker(*, dispatcher_url: str, worker_token: str, queue: QueueDriver, env: WorkerEnv,
                     slots: int, worker_id: str | None = None, idle_poll_s: float = 2.0,
                     operators: Mapping[str, Any] | None = None) -> None:
    """Until SIGINT/SIGTERM, then hand running tasks back (``released``)."""
    worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
    async with DispatcherClient(dispatcher_url, worker_token) as client:
        worker = Worker(worker_id, client, queue, operators or OPERATORS, env, slots=slots,
                        idle_poll_s=idle_poll_s)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, worker.stop)
        log.info("worker %s: %d slots, operators %s, dispatcher %s", worker_id, slots,
                 ", ".join(sorted(worker.operators)), dispatcher_url)
        try:
            await worker.run()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await queue.close()
            log.info("worker %s stopped: %s", worker_id, worker.stats)
