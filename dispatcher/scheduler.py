"""Triggers on Postgres: the state of stateful triggers, stepped under row locks, and the clock.

The rules are :mod:`dispatcher.triggers` (pure); this module keeps their state in
``state.trigger_state`` and turns firings into tasks:

- inside the store's transactions (:class:`TriggerBook`), a signal (new data of a dataset, a task
  of a job finishing, an external event) steps the stateful triggers that listen to it, their rows
  locked, and returns the tasks to create in that same transaction;
- :class:`Scheduler` ticks the clock: rows whose ``due_at`` has come are stepped with a tick; a
  firing creates a run of the job (kind ``schedule``) in the same transaction. Several
  dispatchers may tick at once: rows are taken ``FOR UPDATE SKIP LOCKED``.

A firing's task has a deterministic event id, ``v<version>:t<trigger>:<n>`` (the n-th firing), so
a redone transaction never makes a second task.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic import TypeAdapter

from dispatcher.catalog import JobCatalog, JobPolicy
from dispatcher.dag.job_spec import AnyTriggerModel, ManualTrigger, Trigger
from dispatcher.triggers import TICK, Signal, due, fires_directly, initial, listens, stateful, step

if TYPE_CHECKING:
    from dispatcher.store import TaskStore

log = logging.getLogger(__name__)
RETRY_BROKEN = dt.timedelta(minutes=1)  # a trigger whose step failed is tried again after this
_TRIGGER: TypeAdapter[Any] = TypeAdapter(Trigger)


@dataclass(frozen=True, slots=True)
class Firing:
    """A job whose trigger fired: make one task with this event id."""

    job: JobPolicy
    event_id: str
    trigger_index: int | None  # None: a stateless trigger


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def active_versions(cur: psycopg.AsyncCursor[Any], org_id: str) -> dict[str, int]:
    """The org's DAGs and their active version (in the caller's transaction), by name."""
    async with cur.connection.cursor() as c:
        await c.execute("SELECT dag, version FROM state.dag_versions WHERE org_id = %s AND active"
                        " ORDER BY dag", (org_id,))
        return {r[0]: r[1] for r in await c.fetchall()}


class TriggerBook:
    """The parsed triggers of each DAG version, and the stepping of their state rows."""

    def __init__(self, catalog: JobCatalog) -> None:
        self.catalog = catalog
        self._parsed: dict[tuple[str, str, int], dict[str, tuple[AnyTriggerModel, ...]]] = {}

    async def triggers(self, org_id: str, dag: str, version: int) -> dict[str, tuple[AnyTriggerModel, ...]]:
        key = (org_id, dag, version)
        if key not in self._parsed:
            jobs = await self.catalog.jobs(org_id, dag, version)
            self._parsed[key] = {name: tuple(_TRIGGER.validate_python(dict(t)) for t in job.triggers)
                                 for name, job in jobs.items()}
        return self._parsed[key]

    async def fire(self, cur: psycopg.AsyncCursor[Any], org_id: str, dag: str, version: int, signal: Signal,
                   key: str, *, now: dt.datetime | None = None) -> list[Firing]:
        """The jobs ``signal`` starts: stateless triggers (their task's event id is ``key``) and
        stateful ones, whose rows are locked, stepped and written back here."""
        parsed = await self.triggers(org_id, dag, version)
        jobs = await self.catalog.jobs(org_id, dag, version)
        firings: list[Firing] = []
        listening: list[tuple[str, int, AnyTriggerModel]] = []
        for name, triggers in parsed.items():
            for index, trigger in enumerate(triggers):
                if fires_directly(trigger, signal):
                    firings.append(Firing(jobs[name], key, None))
                elif stateful(trigger) and listens(trigger, signal):
                    listening.append((name, index, trigger))
        if listening:
            firings += await self._step_rows(cur, org_id, dag, version, listening, signal, now or now_utc())
        return _one_per_job(firings)

    async def _step_rows(self, cur: psycopg.AsyncCursor[Any], org_id: str, dag: str, version: int,
                         listening: Sequence[tuple[str, int, AnyTriggerModel]], signal: Signal,
                         now: dt.datetime) -> list[Firing]:
        await self.ensure_rows(cur, org_id, dag, version, listening, now)
        jobs = await self.catalog.jobs(org_id, dag, version)
        rows = await _lock(cur, org_id, dag, version, [(j, i) for j, i, _ in listening])
        firings = []
        for name, index, trigger in listening:
            row = rows.get((name, index))
            if row is None:
                continue
            try:
                fired, state = step(trigger, row["state"], signal, now)
            except (KeyError, TypeError, ValueError):  # a state this code did not write: start over
                log.exception("trigger %s of %s.%s (v%s): unreadable state %r, reset", index, dag, name,
                              version, row["state"])
                fired, state = False, initial(trigger, now)
            count = row["fired"] + (1 if fired else 0)
            await _save(cur, org_id, dag, version, name, index, state, count, due(trigger, state))
            if fired:
                firings.append(Firing(jobs[name], f"v{version}:t{index}:{count}", index))
        return firings

    async def ensure_rows(self, cur: psycopg.AsyncCursor[Any], org_id: str, dag: str, version: int,
                          triggers: Sequence[tuple[str, int, AnyTriggerModel]], since: dt.datetime) -> None:
        """Create the missing state rows (a trigger's clock starts at ``since``)."""
        if not triggers:
            return
        states = [initial(t, since) for _, _, t in triggers]
        await cur.execute(
            """
            INSERT INTO state.trigger_state (org_id, dag, version, job, trigger_index, state, due_at)
            SELECT %s, %s, %s, job, idx, st, due_at
            FROM unnest(%s::text[], %s::int[], %s::jsonb[], %s::timestamptz[]) AS x(job, idx, st, due_at)
            ON CONFLICT DO NOTHING
            """,
            (org_id, dag, version, [j for j, _, _ in triggers], [i for _, i, _ in triggers],
             [Jsonb(s) for s in states], [due(t, s) for (_, _, t), s in zip(triggers, states, strict=True)]),
        )

    async def manual_jobs(self, org_id: str, dag: str, version: int) -> list[JobPolicy]:
        parsed = await self.triggers(org_id, dag, version)
        jobs = await self.catalog.jobs(org_id, dag, version)
        return [jobs[name] for name, triggers in parsed.items()
                if any(isinstance(t, ManualTrigger) for t in triggers)]


def _one_per_job(firings: list[Firing]) -> list[Firing]:
    """A job fires once per signal, however many of its triggers fired (its triggers are an OR)."""
    seen: set[str] = set()
    out = []
    for f in firings:
        if f.job.job not in seen:
            seen.add(f.job.job)
            out.append(f)
    return out


async def _lock(cur: psycopg.AsyncCursor[Any], org_id: str, dag: str, version: int,
                keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], dict[str, Any]]:
    async with cur.connection.cursor(row_factory=dict_row) as c:
        await c.execute(
            """
            SELECT job, trigger_index, state, fired FROM state.trigger_state
            WHERE org_id = %s AND dag = %s AND version = %s
              AND (job, trigger_index) IN (SELECT * FROM unnest(%s::text[], %s::int[]))
            ORDER BY job, trigger_index FOR UPDATE
            """,
            (org_id, dag, version, [k[0] for k in keys], [k[1] for k in keys]),
        )
        return {(r["job"], r["trigger_index"]): r for r in await c.fetchall()}


async def _save(cur: psycopg.AsyncCursor[Any], org_id: str, dag: str, version: int, job: str, index: int,
                state: Mapping[str, Any], fired: int, due_at: dt.datetime | None) -> None:
    await cur.execute(
        "UPDATE state.trigger_state SET state = %s, fired = %s, due_at = %s, updated_at = clock_timestamp()"
        " WHERE org_id = %s AND dag = %s AND version = %s AND job = %s AND trigger_index = %s",
        (Jsonb(dict(state)), fired, due_at, org_id, dag, version, job, index),
    )


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
            await cur.execute(
                "DELETE FROM state.trigger_state t WHERE org_id = %s AND NOT EXISTS (SELECT 1 FROM"
                " state.dag_versions v WHERE v.org_id = t.org_id AND v.dag = t.dag AND v.version = t.version"
                " AND v.active)", (self.org_id,))
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
                await cur.execute(
                    """
                    SELECT t.dag, t.version, t.job, t.trigger_index, t.state, t.fired
                    FROM state.trigger_state t JOIN state.dag_versions v USING (org_id, dag, version)
                    WHERE t.org_id = %s AND v.active AND t.due_at <= %s
                    ORDER BY t.due_at LIMIT %s FOR UPDATE OF t SKIP LOCKED
                    """,
                    (self.org_id, when, limit),
                )
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
                            "UPDATE state.trigger_state SET due_at = %s WHERE org_id = %s AND dag = %s"
                            " AND version = %s AND job = %s AND trigger_index = %s",
                            (when + RETRY_BROKEN, self.org_id, row["dag"], row["version"], row["job"],
                             row["trigger_index"]))
        return fired

    async def _tick_row(self, cur: psycopg.AsyncCursor[Any], row: Mapping[str, Any],
                        when: dt.datetime) -> int:
        dag, version, job, index = row["dag"], row["version"], row["job"], row["trigger_index"]
        trigger = (await self.book.triggers(self.org_id, dag, version))[job][index]
        went_off, state = step(trigger, row["state"], TICK, when)
        count = row["fired"] + (1 if went_off else 0)
        await _save(cur, self.org_id, dag, version, job, index, state, count, due(trigger, state))
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
