"""Durations as DAG files write them: ``500ms``, ``30s``, ``5m``, ``1h``, ``1d``, or sums (``1h30m``).

A :class:`Duration` is a whole number of milliseconds. It prints in one canonical form (largest
units first: ``90s`` prints as ``1m30s``), so two spellings of the same span compare, serialize
and hash (the spec digest) equal. Pure; no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

UNITS_MS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}
_ORDER = ("d", "h", "m", "s", "ms")
_TERM = re.compile(r"(\d+)(ms|d|h|m|s)")
PATTERN = r"^(\d+(ms|d|h|m|s))+$"


@dataclass(frozen=True, order=True, slots=True)
class Duration:
    """A positive span of time, in milliseconds."""

    ms: int

    def __post_init__(self) -> None:
        if isinstance(self.ms, bool) or not isinstance(self.ms, int) or self.ms <= 0:
            raise ValueError(f"a duration must be a positive number of milliseconds, not {self.ms!r}")

    @classmethod
    def parse(cls, text: str) -> Duration:
        """``"1h30m"`` -> ``Duration(5_400_000)``; raises ValueError saying what is wrong."""
        spelled = text.strip()
        if not spelled:
            raise ValueError("must be a duration like 500ms, 30s, 5m, 1h or 1d, not an empty string")
        if spelled.isdigit():
            raise ValueError(f"{spelled!r} needs a unit: 500ms, 30s, 5m, 1h or 1d")
        position, total, last_rank = 0, 0, -1
        for match in _TERM.finditer(spelled):
            if match.start() != position:
                break
            rank = _ORDER.index(match[2])
            if rank <= last_rank:
                raise ValueError(f"{spelled!r}: write units once, largest first (like 1h30m)")
            last_rank = rank
            total += int(match[1]) * UNITS_MS[match[2]]
            position = match.end()
        if position != len(spelled) or position == 0:
            raise ValueError(f"{spelled!r} is not a duration like 500ms, 30s, 5m, 1h, 1d or 1h30m")
        if total == 0:
            raise ValueError(f"{spelled!r}: a duration must be longer than zero")
        return cls(total)

    @property
    def seconds(self) -> float:
        return self.ms / 1000

    def __str__(self) -> str:
        parts, rest = [], self.ms
        for unit in _ORDER:
            count, rest = divmod(rest, UNITS_MS[unit])
            if count:
                parts.append(f"{count}{unit}")
        return "".join(parts)

    def __repr__(self) -> str:
        return f"Duration({str(self)!r})"

    # -- pydantic: validated from the string form, serialized back to the canonical string ------

    @classmethod
    def _validate(cls, value: Any) -> Duration:
        if isinstance(value, Duration):
            return value
        if isinstance(value, str):
            try:
                return cls.parse(value)
            except ValueError as exc:
                raise PydanticCustomError("duration", str(exc)) from None
        if isinstance(value, int) and not isinstance(value, bool):
            raise PydanticCustomError("duration", "{value} needs a unit: 500ms, 30s, 5m, 1h or 1d",
                                      {"value": value})
        raise PydanticCustomError("duration", "must be a duration like 500ms, 30s, 5m, 1h or 1d")

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate, serialization=core_schema.plain_serializer_function_ser_schema(str)
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "pattern": PATTERN, "examples": ["500ms", "30s", "5m", "1h30m"]}
