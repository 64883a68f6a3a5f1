"""``POST /v1/query``: one SELECT over the views, answered synchronously within the row and time
limits (the engine: :mod:`dispatcher.query.engine`). At most ``query_concurrency`` queries of the
org run at once; one more waits a moment, then gets 429. Every query is in ``state.query_log``."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from dispatcher.api.deps import D, Public, problem
from dispatcher.api.models import Problem
from dispatcher.protocol import RequestBody
from dispatcher.query.describe import describe, search
from dispatcher.query.engine import Limits, QueryEngine, QueryFailed, QueryRefused, QueryTimeout
from dispatcher.query.output import json_rows

router = APIRouter(prefix="/v1/query", tags=["query"],
                   responses={401: {"model": Problem}, 422: {"model": Problem}, 429: {"model": Problem}})
WAIT_FOR_A_SLOT_S = 2.0


class QueryRequest(RequestBody):
    sql: Annotated[str, Field(min_length=1, max_length=100_000, pattern=r"^[^\x00]*$",
                              description="One SELECT (or WITH ... SELECT) over the views")]
    at: int | None = Field(None, ge=1, le=2**53,
                           description="An older pointer set (its committed versions only)")
    limit: int | None = Field(None, ge=1, le=1_000_000, description="At most this many rows (capped)")
    timeout_s: float | None = Field(None, gt=0, le=3600,
                                    description="Seconds before it is interrupted (capped)")


class Column(BaseModel):
    name: str
    type: str


class QueryAnswer(BaseModel):
    columns: list[Column]
    rows: list[dict[str, Any]]
    truncated: bool
    pointer_set: int
    versions: dict[str, int]
    boundaries: dict[str, int | None]
    seconds: float


class QueryService:
    """The org's engine and its concurrency cap."""

    def __init__(self, engine: QueryEngine, concurrency: int) -> None:
        self.engine = engine
        self.slots = asyncio.Semaphore(concurrency)


@router.post("", response_model=QueryAnswer, summary="Run one SELECT over hot and cold data as one",
             responses={408: {"model": Problem}, 503: {"model": Problem}})
async def run_query(body: QueryRequest, d: D, actor: Public) -> QueryAnswer:
    service: QueryService | None = d.query
    if service is None:
        raise problem(503, "unavailable", "the query service is not running here")
    limits = Limits(rows=min(body.limit or d.config.query_rows, d.config.query_rows),
                    timeout_s=min(body.timeout_s or d.config.query_timeout_s, d.config.query_timeout_s))
    try:
        await asyncio.wait_for(service.slots.acquire(), WAIT_FOR_A_SLOT_S)
    except TimeoutError as exc:
        raise problem(429, "too_many_queries", f"{d.config.query_concurrency} queries of this org are "
                                               "running; try again shortly") from exc
    try:
        result = await asyncio.to_thread(service.engine.run, body.sql, at=body.at, limits=limits, actor=actor,
                                         door="api")
    except QueryRefused as exc:
        raise problem(422, "query_refused", str(exc)) from exc
    except QueryFailed as exc:
        raise problem(422, "query_failed", str(exc)) from exc
    except QueryTimeout as exc:
        raise problem(408, "query_timeout", str(exc)) from exc
    finally:
        service.slots.release()
    return QueryAnswer(
        columns=[Column(name=f.name, type=str(f.type)) for f in result.table.schema],
        rows=json_rows(result.table),
        truncated=result.truncated, pointer_set=result.pointer_set, versions=dict(result.versions),
        boundaries=dict(result.boundaries), seconds=round(result.seconds, 4))


catalog_router = APIRouter(prefix="/v1/catalog", tags=["query"], responses={401: {"model": Problem}})


class CatalogColumn(BaseModel):
    name: str
    type: str
    description: str


class CatalogEntry(BaseModel):
    name: str
    kind: str
    description: str
    columns: list[CatalogColumn]
    current_version: int | None
    pointer_set: int
    rows: int
    block_range: list[int] | None
    cold_watermark: int | None
    chain_head: int | None
    blocks_behind_head: int | None


@catalog_router.get("", response_model=list[CatalogEntry],
                    summary="What the org can query: each view's columns, version, rows, freshness")
async def catalog(d: D, _: Public,
                  q: Annotated[str | None, Query(max_length=200)] = None) -> list[CatalogEntry]:
    service: QueryService | None = d.query
    if service is None:
        raise problem(503, "unavailable", "the query service is not running here")
    entries = await asyncio.to_thread(describe, service.engine)
    return [CatalogEntry(**e) for e in (search(entries, q) if q else entries)]
