"""The committer: runs queued in ``state.run_commits`` become current dataset versions.

A run that succeeded with staged outputs is queued in the transaction that settled it
(:func:`dispatcher.runs.settle`). The committer takes one queued run at a time (``FOR UPDATE SKIP
LOCKED``: several dispatchers share the work), commits it (:func:`~dispatcher.datasets.commit.
commit_run`: versions on branches, one cutover, Iceberg ``main`` follows) and marks it done in
the same transaction that held it. A crash leaves the row pending and the next try finishes the
idempotent commit. A run whose files cannot make a version, or whose versions fail the integrity
check, is marked failed with the reason (never tried again); an outage (database, object store,
catalog, the node) is retried with a growing delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pyiceberg.catalog import Catalog

from dispatcher.datasets.commit import CHAIN_NAMESPACE, CommitRefused, commit_run, follow_pointers
from dispatcher.datasets.finalize import after_commit
from dispatcher.datasets.integrity import IntegrityConfig
from dispatcher.datasets.store import DatasetStore
from dispatcher.metrics import COMMIT_SECONDS
from tracekit.db import connect
from tracekit.db.queries import load_queries
from tracekit.errors import ConfigError, RetryableError

log = logging.getLogger("trace.dispatcher.committer")

_SQL = load_queries("dispatcher.sql", "datasets.sql")
MAX_DELAY_S = 60.0
# an error that is no outage (a bug, data pyiceberg refuses) fails the commit after this many tries
MAX_UNEXPECTED_ATTEMPTS = 8


class Committer:
    def __init__(self, database_url: str, org_id: str, open_catalog: Callable[[], Catalog], *,
                 namespace: str = CHAIN_NAMESPACE, integrity: IntegrityConfig | None = None,
                 prune_overlap: int | None = None) -> None:
        self.url = database_url
        self.org = org_id
        self.store = DatasetStore(database_url, org_id)
        self.namespace = namespace
        self.integrity = integrity or IntegrityConfig()
        self.prune_overlap = prune_overlap  # a finalize run's commit prunes the hot rows it made cold
        self._open_catalog = open_catalog
        self._catalog: Catalog | None = None

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = self._open_catalog()
        return self._catalog

    def commit_one(self) -> uuid.UUID | None:
        """Commit the next due run; returns its id (None: nothing was due)."""
        committed_run = None
        with connect(self.url) as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(_SQL.sql("take_commit"), {"org": self.org})
            row: dict[str, Any] | None = cur.fetchone()
            if row is None:
                return None
            run_id, attempts = row["run_id"], int(row["attempts"])
            try:
                with COMMIT_SECONDS.time():
                    committed = commit_run(self.store, self.catalog, run_id, namespace=self.namespace,
                                           integrity=self.integrity)
            except (CommitRefused, ConfigError) as exc:
                log.error("run %s cannot be committed: %s", run_id, exc)
                cur.execute(_SQL.sql("commit_failed"), {"run": run_id, "state": "failed", "error": str(exc),
                                                        "delay": 0})
            except Exception as exc:  # an outage (retried for as long as it lasts), or a bug
                outage = isinstance(exc, RetryableError | psycopg.OperationalError)
                error = f"{type(exc).__name__}: {exc}"[:2000]
                if not outage and attempts + 1 >= MAX_UNEXPECTED_ATTEMPTS:
                    log.error("run %s: commit failed %d times, given up: %s", run_id, attempts + 1, error)
                    cur.execute(_SQL.sql("commit_failed"), {"run": run_id, "state": "failed",
                                                            "error": error, "delay": 0})
                    return uuid.UUID(str(run_id))
                delay = min(MAX_DELAY_S, 0.5 * 2 ** attempts)
                log.warning("run %s: commit failed (%s); again in %.1fs", run_id, error, delay)
                cur.execute(_SQL.sql("commit_failed"), {"run": run_id, "state": "pending", "error": error,
                                                        "delay": delay})
                self._catalog = None  # reopen: the catalog's connections may be the broken part
            else:
                versions = dict(committed.versions)
                log.info("run %s committed: %s (pointer set %d)", run_id,
                         ", ".join(f"{d}={v}" for d, v in sorted(versions.items())), committed.applied.seq)
                cur.execute(_SQL.sql("commit_done"), {"run": run_id, "versions": Jsonb(versions)})
                committed_run = run_id
        if committed_run is not None and self.prune_overlap is not None:  # after the cutover, never before
            self._prune(committed_run, self.prune_overlap)
        return uuid.UUID(str(run_id))

    def _prune(self, run_id: uuid.UUID, overlap: int) -> None:
        """After a finalize run's cutover, its chain's hot rows below the new cold watermark minus
        ``overlap`` (a failure only delays it: the finalizer prunes on its next look)."""
        try:
            after_commit(self.store, run_id, overlap)
        except Exception as exc:
            log.warning("run %s: pruning the hot tables failed (%s); the finalizer tries again", run_id, exc)

    def follow(self) -> None:
        """Make every table's ``main`` match the current pointer set (after a crash between a
        cutover and its follow-up, or a rollback made elsewhere)."""
        follow_pointers(self.store, self.catalog, namespace=self.namespace)

    async def run(self, stop: asyncio.Event, *, every_s: float = 0.5) -> None:
        """Until ``stop``: commit due runs, then look again every ``every_s``."""
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.follow)
        while not stop.is_set():
            try:
                while not stop.is_set() and await asyncio.to_thread(self.commit_one) is not None:
                    pass
            except Exception as exc:  # the database is down: wait it out
                log.warning("committer: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)
        if self._catalog is not None:
            with contextlib.suppress(Exception):
                self._catalog.close()
