"""Five-field cron expressions (minute hour day-of-month month day-of-week), parsed and checked.

Fields take ``*``, numbers, ranges ``a-b``, steps ``*/n`` / ``a-b/n`` / ``a/n`` and comma lists;
months and weekdays also take names (``jan``..``dec``, ``sun``..``sat``, any case); weekday 7 is
Sunday like 0. As in Vixie cron, when both day-of-month and day-of-week are restricted a time
matches if either does. Pure; no I/O.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    names_from: int = 0


FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS, 1),
    _Field("day of week", 0, 7, _WEEKDAYS, 0),
)


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """The sets of values each field allows (weekdays 0-6, Sunday 0)."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    days_restricted: bool
    weekdays_restricted: bool

    def matches(self, when: dt.datetime) -> bool:
        """Whether the minute containing ``when`` is one the schedule fires at."""
        if when.minute not in self.minutes or when.hour not in self.hours or when.month not in self.months:
            return False
        day_ok = when.day in self.days
        weekday_ok = (when.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return day_ok or weekday_ok
        return day_ok and weekday_ok


def _number(text: str, field: _Field) -> int:
    lowered = text.lower()
    if field.names and lowered in field.names:
        return field.names.index(lowered) + field.names_from
    if not text.isdigit():
        names = f" or a name ({field.names[0]}..{field.names[-1]})" if field.names else ""
        raise ValueError(f"{field.name} field: {text!r} is not a number{names}")
    value = int(text)
    if not field.low <= value <= field.high:
        raise ValueError(f"{field.name} field: {value} is outside {field.low}-{field.high}")
    return value


def _parse_field(text: str, field: _Field) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise ValueError(f"{field.name} field: empty item in {text!r}")
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{field.name} field: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            low, high = field.low, field.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _number(first, field), _number(last, field)
            if low > high:
                raise ValueError(f"{field.name} field: range {base!r} runs backwards")
        else:
            low = _number(base, field)
            high = field.high if slash else low
        values.update(range(low, high + 1, step))
    return values


def parse_cron(expression: str) -> CronSchedule:
    """Parse and check a five-field expression; raises ValueError naming the bad field."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron {expression!r} has {len(fields)} field(s); it needs 5: minute hour day-of-month "
            "month day-of-week (like '*/5 * * * *')"
        )
    minutes, hours, days, months, weekdays = (
        _parse_field(text, field) for text, field in zip(fields, FIELDS, strict=True)
    )
    if 7 in weekdays:
        weekdays = (weekdays - {7}) | {0}
    return CronSchedule(
        expression=" ".join(fields),
        minutes=frozenset(minutes),
        hours=frozenset(hours),
        days=frozenset(days),
        months=frozenset(months),
        weekdays=frozenset(weekdays),
        days_restricted=not fields[2].startswith("*"),
        weekdays_restricted=not fields[4].startswith("*"),
    )


def normalize_cron(expression: str) -> str:
    """The expression with single spaces between its fields, after checking it."""
    return parse_cron(expression).expression
