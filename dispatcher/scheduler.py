"""The clock of stateful triggers: :class:`Scheduler` ticks, and a firing creates a run.

The rules are :mod:`dispatcher.triggers` (pure) and their state is :mod:`dispatcher.trigger_book`;
the scheduler steps the rows whose ``due_at`` has come with a tick, and a firing creates a run of
the job (kind ``schedule``) in the same transaction. Several dispatchers may tick at once: rows are
taken ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from dispatcher.catalog import active_versions
from dispatcher.store import TaskStore
from dispatcher.trigger_book import Firing, now_utc, save_state
from dispatcher.triggers import TICK, due, stateful, step
from tracekit.db.queries import load_queries

log = logging.getLogger(__name__)
RETRY_BROKEN = dt.timedelta(minutes=1)  # a trigger whose step failed is tried again after this
_SQL = load_queries("dispatcher.sql", "triggers.sql")


class Scheduler:
    """The clock of one org's stateful triggers: :meth:`tick` every ``every_s`` seconds."""

    def __init__(self, pool: AsyncConnectionPool[Any], store: TaskStore, org_id: str) -> None:
        self.pool = pool
        self.store = store  # it creates the runs
        self.book = store.triggers
        self.org_id = org_id
        self._active: frozenset[tuple[str, int]] = frozenset()

    async def sync(self, now: dt.datetime | None = None) -> None:
        """State rows for the stateful triggers of newly active versions; none for the others."""
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            active = frozenset((await active_versions(cur, self.org_id)).items())
            if active == self._active:
                return
            await cur.execute(_SQL.sql("delete_inactive"), (self.org_id,))
            for dag, version in sorted(active - self._active):
                parsed = await self.book.triggers(self.org_id, dag, version)
                wanted = [(job, i, t) for job, ts in parsed.items() for i, t in enumerate(ts) if stateful(t)]
                await self.book.ensure_rows(cur, self.org_id, dag, version, wanted, now or now_utc())
        self._active = active

    async def tick(self, now: dt.datetime | None = None, limit: int = 100) -> int:
        """Step the triggers whose time has come; returns how many fired."""
        when = now or now_utc()
        await self.sync(when)
        fired = 0
        async with self.pool.connection() as conn, conn.transaction():
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(_SQL.sql("take_due"), (self.org_id, when, limit))
                rows = await cur.fetchall()
                for row in rows:
                    try:
                        async with conn.transaction():  # a savepoint: a broken trigger stops no other
                            fired += await self._tick_row(cur, row, when)
                    except psycopg.OperationalError:
                        raise
                    except Exception:
                        log.exception("scheduler: trigger %s of %s.%s (v%s) failed; retried in %s",
                                      row["trigger_index"], row["dag"], row["job"], row["version"],
                                      RETRY_BROKEN)
                        await cur.execute(
                            _SQL.sql("set_aside"),
                            (when + RETRY_BROKEN, self.org_id, row["dag"], row["version"], row["job"],
                             row["trigger_index"]))
        return fired

    async def _tick_row(self, cur: psycopg.AsyncCursor[Any], row: Mapping[str, Any],
                        when: dt.datetime) -> int:
        dag, version, job, index = row["dag"], row["version"], row["job"], row["trigger_index"]
        trigger = (await self.book.triggers(self.org_id, dag, version))[job][index]
        went_off, state = step(trigger, row["state"], TICK, when)
        count = row["fired"] + (1 if went_off else 0)
        await save_state(cur, self.org_id, dag, version, job, index, state, count, due(trigger, state))
        if not went_off:
            return 0
        policy = (await self.book.catalog.jobs(self.org_id, dag, version))[job]
        firing = f"v{version}:t{index}:{count}"
        about = {"job": job, "trigger": index, "firing": count, "at": when.isoformat()}
        await self.store.create_run_in(
            cur, org_id=self.org_id, kind="schedule", dag=dag, dag_version=version, params=about,
            submitted_by="scheduler", idempotency_key=f"{dag}:{job}:{firing}",
            firings=[Firing(policy, firing, index)], payload={"trigger": about},
        )
        return 1

    async def run(self, stop: asyncio.Event, every_s: float = 0.5) -> None:
        while not stop.is_set():
            try:
                fired = await self.tick()
                if fired:
                    log.info("scheduler: %d trigger(s) fired", fired)
            except (psycopg.Error, OSError) as exc:
                log.warning("scheduler: %s", exc)
            except Exception:
                log.exception("scheduler: a tick failed")
            try:
                await asyncio.wait_for(stop.wait(), every_s)
            except TimeoutError:
                pass
