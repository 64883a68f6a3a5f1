"""Trigger rules (pure): cron and interval timing, composites with and without timeouts, routing."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import TypeAdapter

from dispatcher.dag.cron import parse_cron
from dispatcher.dag.job_spec import Trigger
from dispatcher.triggers import TICK, Signal, cron_next, due, fires_directly, initial, listens, stateful, step

T0 = dt.datetime(2026, 11, 30, 12, 0, 30, tzinfo=dt.UTC)
ADAPTER: TypeAdapter[Any] = TypeAdapter(Trigger)


def trig(spec: dict[str, Any]) -> Any:
    return ADAPTER.validate_python(spec)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def run(trigger: Any, events: list[tuple[float, Signal]]) -> list[float]:
    """Feed the signals in order; the times at which the trigger fired."""
    state = initial(trigger, T0)
    fired_at = []
    for t, signal in events:
        fired, state = step(trigger, state, signal, at(t))
        if fired:
            fired_at.append(t)
    return fired_at


A, B = Signal("dataset", "a"), Signal("dataset", "b")


def test_interval_fires_once_per_elapsed_interval_counted_from_the_deploy() -> None:
    every = trig({"interval": "10s"})
    assert run(every, [(5, TICK), (10, TICK), (12, TICK), (19.9, TICK), (20.1, TICK)]) == [10, 20.1]
    state = initial(every, T0)
    assert due(every, state) == at(10)


def test_missed_firings_are_coalesced_into_one() -> None:
    assert run(trig({"interval": "10s"}), [(95, TICK), (99, TICK), (100, TICK)]) == [95, 100]
    assert run(trig({"cron": "* * * * *"}), [(600, TICK), (601, TICK)]) == [600]


def test_cron_fires_at_the_named_minutes_utc() -> None:
    every5 = trig({"cron": "*/5 * * * *"})
    # T0 is 12:00:30; the next minutes named are 12:05, 12:10
    ticks = [(t, TICK) for t in (60, 269, 270, 271, 569, 570)]
    assert run(every5, ticks) == [270, 570]
    assert due(every5, initial(every5, T0)) == dt.datetime(2026, 11, 30, 12, 5, tzinfo=dt.UTC)


@pytest.mark.parametrize(("expr", "after", "expected"), [
    ("0 0 1 1 *", "2026-11-30T12:00", "2027-01-01T00:00"),
    ("30 9 * * mon-fri", "2026-11-28T10:00", "2026-11-30T09:30"),  # Saturday -> Monday
    ("0 0 29 feb *", "2026-03-01T00:00", "2028-02-29T00:00"),
    ("0 12 13 * fri", "2026-11-30T00:00", "2026-12-04T12:00"),  # both day fields: either matches (a Friday)
    ("0 12 13 * fri", "2026-12-05T00:00", "2026-12-11T12:00"),
    ("0 12 13 * fri", "2026-12-11T12:00", "2026-12-13T12:00"),  # the 13th, a Sunday
    ("59 23 31 12 *", "2026-12-31T23:59", "2027-12-31T23:59"),
])
def test_cron_next(expr: str, after: str, expected: str) -> None:
    start = dt.datetime.fromisoformat(after).replace(tzinfo=dt.UTC)
    assert cron_next(parse_cron(expr), start) == dt.datetime.fromisoformat(expected).replace(tzinfo=dt.UTC)


def test_a_cron_that_names_no_real_day_never_fires() -> None:
    assert cron_next(parse_cron("0 0 30 feb *"), T0) is None
    never = trig({"cron": "0 0 30 feb *"})
    assert due(never, initial(never, T0)) is None and run(never, [(10**7, TICK)]) == []


def test_all_fires_once_every_child_has_fired_then_starts_over() -> None:
    both = trig({"all": [{"dataset": "a"}, {"dataset": "b"}]})
    assert run(both, [(1, A), (2, A), (3, B), (4, B), (5, TICK), (6, A)]) == [3, 6]


def test_all_with_timeout_fires_with_what_arrived_or_expires() -> None:
    fire = trig({"all": [{"dataset": "a"}, {"dataset": "b"}], "timeout": "1m"})
    assert run(fire, [(1, A), (30, TICK), (61, TICK), (62, TICK), (70, B), (80, A)]) == [61, 80]
    expire = trig({"all": [{"dataset": "a"}, {"dataset": "b"}], "timeout": "1m", "on_timeout": "expire"})
    assert run(expire, [(1, A), (61, TICK), (70, B), (100, A)]) == [100]
    state = initial(fire, T0)
    assert due(fire, state) is None  # no window open: only a signal can make it fire
    _, state = step(fire, state, A, at(5))
    assert due(fire, state) == at(65)


def test_any_fires_on_any_child_and_on_silence_for_its_timeout() -> None:
    either = trig({"any": [{"dataset": "a"}, {"event": "go"}], "timeout": "1m"})
    go = Signal("event", "go")
    assert run(either, [(10, A), (20, go), (50, TICK), (80, TICK), (81, TICK), (139, TICK), (141, TICK)]) == [
        10, 20, 80, 141]


def test_composites_nest_and_time_children_tick() -> None:
    nested = trig({"all": [{"interval": "1m"}, {"any": [{"dataset": "a"}, {"dataset": "b"}]}]})
    assert run(nested, [(10, B), (30, TICK), (60, TICK), (70, A), (120, TICK), (130, B), (180, TICK)]) == [
        60, 120, 180]


def test_upstream_success_or_any_outcome() -> None:
    ok = trig({"upstream": "load"})
    anyway = trig({"upstream": "load", "on": "any"})
    done = {o: Signal("upstream", "load", o) for o in ("succeeded", "dead", "canceled")}
    assert [fires_directly(ok, s) for s in done.values()] == [True, False, False]
    assert [fires_directly(anyway, s) for s in done.values()] == [True, True, True]
    assert not fires_directly(ok, Signal("upstream", "other", "succeeded"))


def test_routing_stateless_and_stateful() -> None:
    assert not stateful(trig({"dataset": "a"})) and fires_directly(trig({"dataset": "a"}), A)
    composite = trig({"all": [{"dataset": "a"}, {"upstream": "x"}]})
    assert stateful(composite) and not fires_directly(composite, A)
    assert listens(composite, A) and listens(composite, Signal("upstream", "x", "succeeded"))
    assert not listens(composite, B) and not listens(trig({"event": "e"}), TICK)
    assert listens(trig({"cron": "* * * * *"}), TICK)


def test_state_is_json() -> None:
    import json

    nested = trig({"all": [{"cron": "* * * * *"}, {"any": [{"interval": "5s"}, {"dataset": "a"}],
                                                    "timeout": "1h"}], "timeout": "1d"})
    state = initial(nested, T0)
    for t, s in [(1, A), (70, TICK), (80, A)]:
        _, state = step(nested, state, s, at(t))
        assert json.loads(json.dumps(state)) == state
