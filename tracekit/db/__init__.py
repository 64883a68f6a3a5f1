"""Postgres plumbing: numbered SQL migrations, applied idempotently (``trace db migrate``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from tracekit.errors import ConfigError, RetryableError

_MIGRATION = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x7472616365  # "trace": one migrator at a time


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def bundled_migrations() -> list[Migration]:
    """The bundled migrations, in version order."""
    found = []
    for entry in resources.files("tracekit.db.migrations").iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    return found


def connect(url: str, **kwargs: object) -> psycopg.Connection[tuple[object, ...]]:
    """Open a connection, mapping "cannot connect" to one clear, retryable error."""
    try:
        return psycopg.connect(url, **kwargs)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        raise RetryableError(f"cannot connect to Postgres: {str(exc).strip().splitlines()[0]}") from exc
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"invalid Postgres URL: {exc}") from exc


def migrate(url: str) -> list[Migration]:
    """Apply every migration not yet applied; returns those applied now. Safe to run concurrently."""
    applied_now = []
    with connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute("CREATE SCHEMA IF NOT EXISTS state")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS state.schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM state.schema_migrations")}
            for migration in bundled_migrations():
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO state.schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                applied_now.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
