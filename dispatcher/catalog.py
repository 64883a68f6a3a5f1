"""Which DAG versions are active, and which jobs a deployed DAG version has (what their tasks
need: operator, datasets, retry policy, concurrency, config, triggers).

A DAG version is immutable once deployed, so its jobs are cached per (org, dag, version). Which
of them a signal starts is :mod:`dispatcher.triggers` (the rules) and :mod:`dispatcher.trigger_book`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from dispatcher.lease import RetryPolicy
from tracekit.db.queries import load_queries
from tracekit.errors import ConfigError

_SQL = load_queries("dispatcher.sql", "dags.sql")


@dataclass(frozen=True, slots=True)
class JobPolicy:
    """What the dispatcher needs of a job to create and lease its tasks."""

    job: str
    operator: str
    reads: Sequence[str] = ()
    writes: Sequence[str] = ()
    max_concurrency: int | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    config: Mapping[str, Any] = field(default_factory=dict)
    triggers: Sequence[Mapping[str, Any]] = ()


def policy_from_row(row: Mapping[str, Any]) -> JobPolicy:
    spec = row["spec"] or {}
    outputs = spec.get("outputs") or []
    return JobPolicy(
        job=row["job"],
        operator=row["operator"],
        reads=tuple(spec.get("inputs") or ()),
        writes=tuple(o["dataset"] if isinstance(o, Mapping) else str(o) for o in outputs),
        max_concurrency=row["max_concurrency"],
        retry=RetryPolicy(
            max_attempts=row["max_attempts"],
            initial=timedelta(milliseconds=row["backoff_initial_ms"]),
            maximum=timedelta(milliseconds=row["backoff_max_ms"]),
            multiplier=float(row["backoff_multiplier"]),
        ),
        config=dict(spec.get("config") or {}),
        triggers=tuple(spec.get("triggers") or ()),
    )


async def active_versions(cur: psycopg.AsyncCursor[Any], org_id: str) -> dict[str, int]:
    """The org's DAGs and their active version (in the caller's transaction), by name."""
    async with cur.connection.cursor() as c:
        await c.execute(_SQL.sql("active_versions"), (org_id,))
        return {r[0]: r[1] for r in await c.fetchall()}


class JobCatalog(Protocol):
    async def jobs(self, org_id: str, dag: str, version: int) -> Mapping[str, JobPolicy]: ...


class PgJobCatalog:
    """Reads ``state.dag_jobs`` (written by ``trace dag deploy``)."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool
        self._cache: dict[tuple[str, str, int], dict[str, JobPolicy]] = {}

    async def jobs(self, org_id: str, dag: str, version: int) -> Mapping[str, JobPolicy]:
        key = (org_id, dag, version)
        if key not in self._cache:
            async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(_SQL.sql("jobs"), key)
                rows = await cur.fetchall()
            if not rows:
                raise ConfigError(f"DAG {dag!r} version {version} of org {org_id!r} is not deployed")
            self._cache[key] = {r["job"]: policy_from_row(r) for r in rows}
        return self._cache[key]


@dataclass
class StaticJobCatalog:
    """A fixed set of jobs for every DAG version (tests and benchmarks)."""

    policies: Mapping[str, JobPolicy]

    async def jobs(self, org_id: str, dag: str, version: int) -> Mapping[str, JobPolicy]:
        return self.policies
