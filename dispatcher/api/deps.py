"""What the API's routes share: its config, the store, auth dependencies and error mapping."""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Request

from dispatcher import tokens
from dispatcher.catalog import JobCatalog
from dispatcher.datasets.finalize import FinalizeConfig
from dispatcher.store import TaskStore
from dispatcher.views import Views
from tracekit.names import ALERTS_TOPIC
from tracekit.objects import S3Config


@dataclass(frozen=True)
class ApiConfig:
    """Explicit configuration of the API (the CLI builds it from ``TRACE_*``)."""

    api_token: str
    worker_token: str
    task_secret: bytes
    database_url: str | None = None
    kafka_bootstrap: str | None = None
    alerts_topic: str = ALERTS_TOPIC
    org_id: str = "default"
    chains: Mapping[int, str] = field(default_factory=dict)  # chain id -> name
    token_ttl_s: float = 900.0
    lease_s: float = 30.0
    warehouse: str | None = None  # Iceberg tables (s3://BUCKET/warehouse or a file:// URL): None, no commits
    s3: S3Config | None = None  # how to reach the warehouse when it is on S3
    object_store: str | None = None  # where tasks stage files (gc deletes there): None, no gc
    dataset_versions_kept: int = 5  # retention: the versions the newest N pointer sets name
    staging_retention_h: float = 24.0  # gc: orphaned staging files of runs ended this long ago
    gc_every_s: float = 3600.0
    rpc_urls: Mapping[int, str] = field(default_factory=dict)  # chain id -> JSON-RPC URL (integrity check)
    integrity_samples: int = 5  # heights of a committed range compared with the node
    finalize: FinalizeConfig | None = None  # hot -> cold finalization (with a warehouse); None: none
    query_concurrency: int = 4  # queries of the org running at once (POST /v1/query); more wait, then 429
    query_timeout_s: float = 30.0  # the most a synchronous query may run (a request may ask for less)
    query_rows: int = 10_000  # the most rows a synchronous query returns (a request may ask for fewer)


@dataclass
class Deps:
    config: ApiConfig
    store: TaskStore
    views: Views
    catalog: JobCatalog
    query: Any = None  # the query engine (dispatcher.query.QueryService), made at start


def deps(request: Request) -> Deps:
    found = getattr(request.app.state, "deps", None)
    if found is None:
        raise HTTPException(503, detail="the dispatcher is not connected to its database")
    if not isinstance(found, Deps):
        raise TypeError("app.state.deps is not Deps")
    return found


def _bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def _config(request: Request) -> ApiConfig:
    config = request.app.state.config
    if not isinstance(config, ApiConfig):
        raise TypeError("app.state.config is not ApiConfig")
    return config


def public(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """A user with the API's bearer token; returns the actor name written to the audit log."""
    token = _bearer(authorization)
    if not token or not hmac.compare_digest(token.encode(), _config(request).api_token.encode()):
        raise _unauthorized("missing or invalid bearer token")
    request.state.actor = "api-token"
    return "api-token"


def worker(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """A platform worker (the credential of the worker wrapper, not of operator code)."""
    token = _bearer(authorization)
    if not token or not hmac.compare_digest(token.encode(), _config(request).worker_token.encode()):
        raise _unauthorized("missing or invalid worker token")
    request.state.actor = "worker"
    return "worker"


def task_token(request: Request, authorization: Annotated[str | None, Header()] = None) -> tokens.TaskClaims:
    """The per-task token a worker got with the task; names one attempt of one task."""
    token = _bearer(authorization)
    if not token:
        raise _unauthorized("missing task token")
    try:
        claims = tokens.verify(_config(request).task_secret, token, now=time.time())
    except tokens.InvalidToken as exc:
        raise _unauthorized(str(exc)) from exc
    request.state.actor = f"task:{claims.task_id}/{claims.attempt}"
    return claims


Public = Annotated[str, Depends(public)]
Worker = Annotated[str, Depends(worker)]
TaskToken = Annotated[tokens.TaskClaims, Depends(task_token)]
D = Annotated[Deps, Depends(deps)]


def problem(status: int, error: str, detail: Any) -> HTTPException:
    return HTTPException(status, detail={"error": error, "detail": detail})
