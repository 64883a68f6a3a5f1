"""One database transaction with a dict-row cursor, and the one error every store maps the same way.

:func:`transaction` is what the components' stores (``DatasetStore``, the DAG store, ...) run each
logical change in: on its own connection (a URL) or on one the caller keeps open and reuses
(fewer connects: a commit of a run makes about ten changes). A table that does not exist means
the migrations were not applied: a :class:`~tracekit.errors.ConfigError` saying so.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row

from tracekit.db import connect
from tracekit.errors import ConfigError

DictCursor = psycopg.Cursor[dict[str, Any]]


@contextmanager
def transaction(db: str | psycopg.Connection[Any], *, tables: str) -> Iterator[DictCursor]:
    """A cursor (rows as dicts) in one transaction, committed when the block ends, rolled back
    when it raises. ``db``: a URL (a connection of its own, closed afterwards) or an open
    connection (left open, outside any transaction). An undefined table raises
    ``ConfigError("<tables> do not exist; run `trace db migrate`")``."""
    try:
        if isinstance(db, str):
            with connect(db) as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                yield cur
        else:
            with db.transaction(), db.cursor(row_factory=dict_row) as cur:
                yield cur
    except pg_errors.UndefinedTable as exc:
        raise ConfigError(f"{tables} do not exist; run `trace db migrate`") from exc
