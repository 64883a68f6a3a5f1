"""Durations and cron expressions of DAG triggers: parsing, canonical forms, ranges (properties)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.dag.cron import parse_cron
from dispatcher.dag.duration import UNITS_MS, Duration

# ---------------------------------------------------------------------------------- durations


@pytest.mark.parametrize(("text", "ms"), [
    ("500ms", 500), ("30s", 30_000), ("5m", 300_000), ("1h", 3_600_000), ("1d", 86_400_000),
    ("1h30m", 5_400_000), ("1d2h3m4s5ms", 93_784_005), (" 90s ", 90_000),
])
def test_duration_spellings(text: str, ms: int) -> None:
    assert Duration.parse(text).ms == ms


@pytest.mark.parametrize(("text", "reason"), [
    ("30", "needs a unit"), ("", "not an empty string"), ("0s", "longer than zero"),
    ("5 m", "is not a duration"),
    ("1.5s", "is not a duration"), ("-1s", "is not a duration"), ("30m1h", "largest first"),
    ("1m1m", "largest first"), ("5mins", "is not a duration"), ("m", "is not a duration"),
])
def test_bad_durations_say_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Duration.parse(text)


@given(st.integers(min_value=1, max_value=10**13))
def test_a_duration_prints_canonically_and_parses_back(ms: int) -> None:
    duration = Duration(ms)
    assert Duration.parse(str(duration)) == duration
    assert str(Duration.parse(str(duration))) == str(duration)


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from(sorted(UNITS_MS)))
def test_one_term_is_count_times_unit(count: int, unit: str) -> None:
    assert Duration.parse(f"{count}{unit}").ms == count * UNITS_MS[unit]


@given(st.lists(st.integers(min_value=0, max_value=999), min_size=5, max_size=5).filter(any))
def test_a_sum_of_terms_is_their_total(counts: list[int]) -> None:
    units = ("d", "h", "m", "s", "ms")
    text = "".join(f"{c}{u}" for c, u in zip(counts, units, strict=True) if c)
    assert Duration.parse(text).ms == sum(c * UNITS_MS[u] for c, u in zip(counts, units, strict=True))


def test_same_span_same_form() -> None:
    assert Duration.parse("90s") == Duration.parse("1m30s")
    assert str(Duration.parse("3600s")) == "1h"
    assert Duration.parse("1s") < Duration.parse("1m")


# --------------------------------------------------------------------------------------- cron

RANGES = {"minute": (0, 59), "hour": (0, 23), "day": (1, 31), "month": (1, 12), "weekday": (0, 7)}


@st.composite
def cron_field(draw: st.DrawFn, low: int, high: int) -> tuple[str, set[int]]:
    """A valid field and the set of values it means."""
    kind = draw(st.sampled_from(["star", "number", "range", "step", "range_step", "list"]))
    if kind == "star":
        return "*", set(range(low, high + 1))
    if kind == "number":
        value = draw(st.integers(low, high))
        return str(value), {value}
    if kind in ("range", "range_step"):
        a = draw(st.integers(low, high))
        b = draw(st.integers(a, high))
        step = draw(st.integers(1, 10)) if kind == "range_step" else 1
        text = f"{a}-{b}" + (f"/{step}" if kind == "range_step" else "")
        return text, set(range(a, b + 1, step))
    if kind == "step":
        step = draw(st.integers(1, high - low + 2))
        return f"*/{step}", set(range(low, high + 1, step))
    values = draw(st.lists(st.integers(low, high), min_size=1, max_size=4))
    return ",".join(map(str, values)), set(values)


@given(st.tuples(*(cron_field(*RANGES[name]) for name in RANGES)))
def test_valid_cron_fields_mean_what_they_say(fields: tuple[tuple[str, set[int]], ...]) -> None:
    schedule = parse_cron(" ".join(text for text, _ in fields))
    minutes, hours, days, months, weekdays = (values for _, values in fields)
    assert schedule.minutes == minutes
    assert schedule.hours == hours
    assert schedule.days == days
    assert schedule.months == months
    assert schedule.weekdays == {0 if day == 7 else day for day in weekdays}


@given(st.sampled_from(list(RANGES)), st.integers(-5, 100))
def test_out_of_range_numbers_are_rejected(field: str, value: int) -> None:
    low, high = RANGES[field]
    fields = ["*"] * 5
    fields[list(RANGES).index(field)] = str(value)
    if low <= value <= high:
        parse_cron(" ".join(fields))
    else:
        with pytest.raises(ValueError, match=r"outside|not a number"):
            parse_cron(" ".join(fields))


@pytest.mark.parametrize(("expression", "reason"), [
    ("* * * *", "has 4 field"), ("* * * * * *", "has 6 field"), ("60 * * * *", "minute field: 60 is outside"),
    ("* * 0 * *", "day of month field: 0 is outside 1-31"), ("* * * 13 *", "month field: 13 is outside"),
    ("*/0 * * * *", "step '0' must be a positive number"), ("5-1 * * * *", "runs backwards"),
    ("1,,2 * * * *", "empty item"), ("x * * * *", "'x' is not a number"),
    ("* * * foo *", "'foo' is not a number or a name"),
])
def test_bad_cron_expressions_say_which_field(expression: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_cron(expression)


def test_names_and_vixie_day_rule() -> None:
    schedule = parse_cron("30 9 1 jan-mar MON-fri")
    assert schedule.months == {1, 2, 3} and schedule.weekdays == {1, 2, 3, 4, 5}
    # day 1 OR a weekday, in Jan-Mar at 09:30
    assert schedule.matches(dt.datetime(2025, 2, 1, 9, 30))  # a Saturday, but the 1st
    assert schedule.matches(dt.datetime(2025, 2, 3, 9, 30))  # a Monday
    assert not schedule.matches(dt.datetime(2025, 2, 8, 9, 30))  # a Saturday, not the 1st
    assert not schedule.matches(dt.datetime(2025, 4, 1, 9, 30))
    every_five = parse_cron("*/5 * * * *")
    assert every_five.matches(dt.datetime(2025, 1, 1, 0, 55)) and not every_five.matches(
        dt.datetime(2025, 1, 1, 0, 56))
    sundays = parse_cron("0 0 * * 7")
    assert sundays.weekdays == {0} and sundays.matches(dt.datetime(2025, 1, 5))
