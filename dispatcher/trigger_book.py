"""The state of stateful triggers in Postgres, stepped under row locks (:class:`TriggerBook`).

The rules are :mod:`dispatcher.triggers` (pure); this module keeps their state in
``state.trigger_state``: inside the store's transactions, a signal (new data of a dataset, a task
of a job finishing, an external event) steps the stateful triggers that listen to it, their rows
locked, and returns the :class:`Firing` s, the tasks to create in that same transaction. The
clock's ticks are :mod:`dispatcher.scheduler`.

A firing's task has a deterministic event id, ``v<version>:t<trigger>:<n>`` (the n-th firing), so
a redone transaction never makes a second task.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import TypeAdapter

from dispatcher.catalog import JobCatalog, JobPolicy
from dispatcher.dag.job_spec import AnyTriggerModel, ManualTrigger, Trigger
from dispatcher.triggers import Signal, due, fires_directly, initial, listens, stateful, step
from tracekit.db.queries import load_queries

log = logging.getLogger(__name__)
_SQL = load_queries("dispatcher.sql", "triggers.sql")
_TRIGGER: TypeAdapter[Any] = TypeAdapter(Trigger)


@dataclass(frozen=True, slots=True)
class Firing:
    """A job whose trigger fired: make one task with this event id."""

    job: JobPolicy
    event_id: str
    trigger_index: int | None  # None: a stateless trigger


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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
            await save_state(cur, org_id, dag, version, name, index, state, count, due(trigger, state))
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
            _SQL.sql("insert_states"),
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
            _SQL.sql("lock_states"),
            (org_id, dag, version, [k[0] for k in keys], [k[1] for k in keys]),
        )
        return {(r["job"], r["trigger_index"]): r for r in await c.fetchall()}


async def save_state(cur: psycopg.AsyncCursor[Any], org_id: str, dag: str, version: int, job: str, index: int,
                state: Mapping[str, Any], fired: int, due_at: dt.datetime | None) -> None:
    """Write back a trigger's stepped state, how often it fired, and when a tick is next due."""
    await cur.execute(
        _SQL.sql("save_state"),
        (Jsonb(dict(state)), fired, due_at, org_id, dag, version, job, index),
    )
