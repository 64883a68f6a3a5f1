"""Trace's HTTP API (FastAPI; OpenAPI at ``/openapi.json``, docs at ``/docs``).

Public endpoints (``/v1/*``) need ``Authorization: Bearer <TRACE_API_TOKEN>``; worker endpoints
(``/internal/*``) need the worker credential or a per-task token. Every call is written to
``state.audit_log``. Errors are 4xx with a JSON body ``{"error": code, "detail": what is wrong}``.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Annotated, Any

import orjson
import psycopg
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from psycopg.errors import TransactionRollback
from psycopg_pool import AsyncConnectionPool
from starlette.exceptions import HTTPException as StarletteHTTPException

from dispatcher.api import datasets, internal, public, query
from dispatcher.api.deps import ApiConfig, Deps
from dispatcher.api.deps import public as public_auth
from dispatcher.backfill import ensure_backfill_dag
from dispatcher.catalog import PgJobCatalog
from dispatcher.datasets.compact import ensure_compact_dag
from dispatcher.datasets.finalize import ensure_finalize_dag
from dispatcher.errors import NotAllowed, NotFound
from dispatcher.query.engine import Limits, engine_of
from dispatcher.store import TaskStore
from dispatcher.views import Views
from streams.alerts.subscribe import alert_stream
from tracekit.db.queries import load_queries
from tracekit.errors import ConfigError, RetryableError

log = logging.getLogger("trace.api")
_AUDIT = load_queries("dispatcher.sql", "audit.sql")

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 422: "invalid_request", 503: "unavailable"}


def _problem(status: int, error: str, detail: Any, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status,
                        headers=dict(headers) if headers else None)


def _clean(text: str) -> str:
    return text.replace("\x00", "\\x00")[:2000]


def query_service(config: ApiConfig, database_url: str) -> query.QueryService:
    """The org's query engine over the hot tables of its chain and its warehouse (if any)."""
    chain_id = config.finalize.chain_id if config.finalize is not None else next(iter(config.chains), 0)
    limits = Limits(rows=config.query_rows, timeout_s=config.query_timeout_s)
    engine = engine_of(database_url, config.org_id, chain_id, config.warehouse, config.s3,
                       config.object_store, limits=limits)
    return query.QueryService(engine, config.query_concurrency)


def create_app(config: ApiConfig, *, pool: AsyncConnectionPool[Any] | None = None) -> FastAPI:
    """The API. With ``config.database_url`` it opens its own pool (or uses ``pool``)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = pool is None and config.database_url is not None
        active = pool
        if own and config.database_url is not None:
            active = AsyncConnectionPool(config.database_url, min_size=1, max_size=10, open=False)
            await active.open(wait=True, timeout=30)
        try:
            if active is not None:
                url = config.database_url or str(active.conninfo)
                await ensure_backfill_dag(url, config.org_id)
                if config.finalize is not None:
                    await ensure_finalize_dag(url, config.org_id)
                if config.warehouse is not None:  # compaction makes versions: only with a warehouse
                    await ensure_compact_dag(url, config.org_id)
                catalog = PgJobCatalog(active)
                store = TaskStore(active, catalog, lease=timedelta(seconds=config.lease_s))
                app.state.deps = Deps(config, store, Views(active), catalog, query_service(config, url))
                app.state.audit_pool = active
            yield
        finally:
            deps_made = getattr(app.state, "deps", None)
            if isinstance(deps_made, Deps) and deps_made.query is not None:
                deps_made.query.engine.close()
            if own and active is not None:
                await active.close()

    app = FastAPI(title="Trace API", version="0.2.0", lifespan=lifespan,
                  description="Backfills, runs and tasks of the Trace dispatcher; live alerts.")
    app.state.config = config
    app.state.deps = None
    app.state.audit_pool = None
    app.include_router(public.router)
    app.include_router(datasets.router)
    app.include_router(query.router)
    app.include_router(query.catalog_router)
    app.include_router(internal.router)

    @app.exception_handler(StarletteHTTPException)  # also Starlette's own: unknown route, unparsable body
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        if isinstance(detail, dict) and "error" in detail:
            return _problem(exc.status_code, str(detail["error"]), detail.get("detail"), exc.headers)
        return _problem(exc.status_code, _CODES.get(exc.status_code, "error"), detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return _problem(422, "invalid_request", errors)

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return _problem(404, "not_found", str(exc))

    @app.exception_handler(NotAllowed)
    async def not_allowed(_: Request, exc: NotAllowed) -> JSONResponse:
        return _problem(403, "dataset_not_allowed", str(exc))

    @app.exception_handler(ConfigError)
    async def config_error(_: Request, exc: ConfigError) -> JSONResponse:
        return _problem(422, "invalid_request", str(exc))

    @app.exception_handler(RetryableError)
    async def unavailable(_: Request, exc: RetryableError) -> JSONResponse:
        return _problem(503, "unavailable", str(exc), {"Retry-After": "1"})

    @app.exception_handler(TransactionRollback)
    async def conflict(_: Request, exc: TransactionRollback) -> JSONResponse:
        return _problem(503, "unavailable", f"a concurrent transaction conflicted, retry: {exc.sqlstate}",
                        {"Retry-After": "1"})

    @app.exception_handler(psycopg.OperationalError)
    async def db_down(_: Request, exc: psycopg.OperationalError) -> JSONResponse:
        return _problem(503, "unavailable", "the state database is unreachable", {"Retry-After": "1"})

    @app.middleware("http")
    async def audit(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        request.state.actor = "anonymous"
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            response.headers["X-Request-Id"] = _clean(request_id)[:200]
            return response
        finally:
            audit_pool = request.app.state.audit_pool
            if audit_pool is not None:
                try:
                    async with audit_pool.connection() as conn:
                        await conn.execute(
                            _AUDIT.sql("insert"),
                            (config.org_id, _clean(str(request.state.actor)), request.method,
                             _clean(request.url.path), _clean(request.url.query), status,
                             request.client.host if request.client else None, _clean(request_id)[:200],
                             (time.perf_counter() - started) * 1000),
                        )
                except psycopg.Error as exc:
                    log.error("audit log write failed: %s", exc)

    if config.kafka_bootstrap is not None:
        bootstrap = config.kafka_bootstrap

        @app.get("/v1/alerts/stream", dependencies=[Depends(public_auth)], tags=["alerts"],
                 summary="Alerts and retractions as they are published (Server-Sent Events)")
        async def stream_alerts(
            rule: Annotated[str | None, Query(description="Only this rule id", max_length=200)] = None,
            from_beginning: Annotated[bool, Query(description="Replay the topic from its start")] = False,
        ) -> StreamingResponse:
            async def events() -> AsyncIterator[bytes]:
                yield b": subscribed\n\n"
                async for alert in alert_stream(bootstrap, topic=config.alerts_topic, rule=rule,
                                                from_beginning=from_beginning):
                    kind = "retraction" if alert["kind"] == "RETRACTION" else "alert"
                    yield b"event: " + kind.encode() + b"\nid: " + alert["alert_id"].encode() + b"\ndata: "
                    yield orjson.dumps(alert) + b"\n\n"

            return StreamingResponse(events(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})

    return app
