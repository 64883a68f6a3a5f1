"""When a job's triggers fire: the rules of docs/dags.md ("Triggers") as pure functions.

A job runs when any one of its triggers fires. Two kinds of triggers:

- **stateless** (``dataset``, ``event``, ``upstream`` at top level): fire on each matching signal;
  the store turns the signal straight into a task (``manual`` fires only through the API);
- **stateful** (``cron``, ``interval``, ``all``, ``any``): keep a JSON state (one row per job and
  trigger in ``state.trigger_state``) and are stepped with every signal they listen to and with
  clock ticks; :func:`due` says when the next tick could make one fire.

Every function here is pure: the time is an argument, the state a JSON-able dict returned anew.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dispatcher.dag.cron import CronSchedule, parse_cron
from dispatcher.dag.job_spec import (
    AllTrigger,
    AnyTrigger,
    AnyTriggerModel,
    CronTrigger,
    DatasetTrigger,
    EventTrigger,
    IntervalTrigger,
    UpstreamTrigger,
)

State = dict[str, Any]
SignalKind = Literal["tick", "dataset", "event", "upstream"]
FINISHED = ("succeeded", "dead", "canceled")
_CRON_HORIZON_DAYS = 366 * 5  # a schedule that names no minute within this never fires (Feb 30)


@dataclass(frozen=True, slots=True)
class Signal:
    """Something a trigger may react to: a clock tick, new data of a dataset, a named external
    event, or a task of a job finishing (``outcome``: succeeded, dead or canceled)."""

    kind: SignalKind
    name: str = ""
    outcome: str = ""


TICK = Signal("tick")


def stateful(trigger: AnyTriggerModel) -> bool:
    return isinstance(trigger, CronTrigger | IntervalTrigger | AllTrigger | AnyTrigger)


def listens(trigger: AnyTriggerModel, signal: Signal) -> bool:
    """Whether ``signal`` can change ``trigger`` (a child of a composite included)."""
    if isinstance(trigger, AllTrigger | AnyTrigger):
        children = trigger.all if isinstance(trigger, AllTrigger) else trigger.any
        return signal.kind == "tick" or any(listens(c, signal) for c in children)
    if signal.kind == "tick":
        return isinstance(trigger, CronTrigger | IntervalTrigger)
    return _leaf_fires(trigger, signal)


def _leaf_fires(trigger: AnyTriggerModel, signal: Signal) -> bool:
    if isinstance(trigger, DatasetTrigger):
        return signal.kind == "dataset" and signal.name == trigger.dataset
    if isinstance(trigger, EventTrigger):
        return signal.kind == "event" and signal.name == trigger.event
    if isinstance(trigger, UpstreamTrigger):
        return (signal.kind == "upstream" and signal.name == trigger.upstream and signal.outcome in FINISHED
                and (trigger.on == "any" or signal.outcome == "succeeded"))
    return False


def fires_directly(trigger: AnyTriggerModel, signal: Signal) -> bool:
    """A stateless trigger firing on ``signal`` (no state involved)."""
    return not stateful(trigger) and _leaf_fires(trigger, signal)


# -- state ---------------------------------------------------------------------------------------


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat()


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _span(duration: Any) -> dt.timedelta:
    return dt.timedelta(milliseconds=duration.ms)


def _children(trigger: AllTrigger | AnyTrigger) -> Sequence[AnyTriggerModel]:
    return trigger.all if isinstance(trigger, AllTrigger) else trigger.any


def initial(trigger: AnyTriggerModel, since: dt.datetime) -> State:
    """The state of a trigger deployed at ``since`` (times count from the deploy)."""
    if isinstance(trigger, CronTrigger):
        return {"after": _iso(since)}
    if isinstance(trigger, IntervalTrigger):
        return {"anchor": _iso(since), "n": 0}
    if isinstance(trigger, AllTrigger):
        return {"got": [False] * len(trigger.all), "opened": None,
                "children": [initial(c, since) for c in trigger.all]}
    if isinstance(trigger, AnyTrigger):
        return {"last": _iso(since), "children": [initial(c, since) for c in trigger.any]}
    return {}


def step(trigger: AnyTriggerModel, state: State, signal: Signal, now: dt.datetime) -> tuple[bool, State]:
    """Feed ``signal`` at ``now`` to a trigger in ``state``: (whether it fires, its new state).

    Missed time-based firings (the dispatcher was down) are coalesced into one."""
    if isinstance(trigger, CronTrigger):
        if signal.kind != "tick":
            return False, state
        nxt = cron_next(parse_cron(trigger.cron), _at(state["after"]))
        if nxt is None or nxt > now:
            return False, state
        return True, {"after": _iso(now)}
    if isinstance(trigger, IntervalTrigger):
        if signal.kind != "tick":
            return False, state
        n = int((now - _at(state["anchor"])) / _span(trigger.interval))
        if n <= state["n"]:
            return False, state
        return True, {**state, "n": n}
    if isinstance(trigger, AllTrigger):
        return _step_all(trigger, state, signal, now)
    if isinstance(trigger, AnyTrigger):
        fired_any = False
        children = []
        for child, child_state in zip(trigger.any, state["children"], strict=True):
            fired, new = step(child, child_state, signal, now)
            fired_any |= fired
            children.append(new)
        last = _at(state["last"])
        if not fired_any and trigger.timeout is not None and now - last >= _span(trigger.timeout):
            fired_any = True  # "A OR timeout": nothing for that long
        return fired_any, {"last": _iso(now) if fired_any else state["last"], "children": children}
    return _leaf_fires(trigger, signal), state


def _step_all(trigger: AllTrigger, state: State, signal: Signal, now: dt.datetime) -> tuple[bool, State]:
    got = list(state["got"])
    children = []
    for i, (child, child_state) in enumerate(zip(trigger.all, state["children"], strict=True)):
        fired, new = step(child, child_state, signal, now)
        got[i] = got[i] or fired
        children.append(new)
    opened = state["opened"]
    if opened is None and any(got):
        opened = _iso(now)  # the first child to fire opens the window
    reset = {"got": [False] * len(got), "opened": None, "children": children}
    if all(got):
        return True, reset
    if opened is not None and trigger.timeout is not None and now - _at(opened) >= _span(trigger.timeout):
        return trigger.on_timeout == "fire", reset  # fire with what arrived, or drop the window
    return False, {"got": got, "opened": opened, "children": children}


def due(trigger: AnyTriggerModel, state: State) -> dt.datetime | None:
    """The earliest time a tick could make ``trigger`` fire (None: only a signal can)."""
    times: list[dt.datetime | None] = []
    if isinstance(trigger, CronTrigger):
        times.append(cron_next(parse_cron(trigger.cron), _at(state["after"])))
    elif isinstance(trigger, IntervalTrigger):
        times.append(_at(state["anchor"]) + _span(trigger.interval) * (state["n"] + 1))
    elif isinstance(trigger, AllTrigger | AnyTrigger):
        times += [due(c, s) for c, s in zip(_children(trigger), state["children"], strict=True)]
        if trigger.timeout is not None:
            start = state["opened"] if isinstance(trigger, AllTrigger) else state["last"]
            if start is not None:
                times.append(_at(start) + _span(trigger.timeout))
    found = [t for t in times if t is not None]
    return min(found) if found else None


def cron_next(schedule: CronSchedule, after: dt.datetime) -> dt.datetime | None:
    """The first minute strictly after ``after`` that ``schedule`` names (UTC), or None."""
    start = after.astimezone(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    day = start.replace(hour=0, minute=0)
    hours, minutes = sorted(schedule.hours), sorted(schedule.minutes)
    for _ in range(_CRON_HORIZON_DAYS):
        if day.month in schedule.months and _day_matches(schedule, day):
            for hour in hours:
                for minute in minutes:
                    candidate = day.replace(hour=hour, minute=minute)
                    if candidate >= start:
                        return candidate
        day += dt.timedelta(days=1)
    return None


def _day_matches(schedule: CronSchedule, day: dt.datetime) -> bool:
    day_ok = day.day in schedule.days
    weekday_ok = (day.isoweekday() % 7) in schedule.weekdays
    if schedule.days_restricted and schedule.weekdays_restricted:
        return day_ok or weekday_ok
    return day_ok and weekday_ok
