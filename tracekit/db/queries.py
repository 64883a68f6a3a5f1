"""Named SQL queries kept in ``.sql`` files beside the code that runs them.

A file holds any number of queries, each started by a ``-- name: <identifier>`` line (the
procrastinate / aiosql convention)::

    -- name: claim_ready
    SELECT ... FROM state.tasks WHERE ...

:func:`load_queries` reads a package's file once (``importlib.resources``, so it works from a
wheel too) and returns the queries by name; a duplicate or missing name is an error at load time,
not at the first call.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from types import MappingProxyType

_NAME = re.compile(r"^-- name: (\w+)[ \t]*$", flags=re.MULTILINE)


class Queries(Mapping[str, str]):
    """The named queries of one file: ``queries["claim_ready"]`` is the SQL text;
    ``queries.sql("claim_ready")`` the bytes psycopg takes as a query."""

    def __init__(self, source: str, text: str) -> None:
        parts = _NAME.split(text)
        found: dict[str, str] = {}
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in found:
                raise ValueError(f"{source}: query {name!r} is defined twice")
            if not body.strip():
                raise ValueError(f"{source}: query {name!r} is empty")
            found[name] = body.strip()
        self.source = source
        self._queries = MappingProxyType(found)

    def __getitem__(self, name: str) -> str:
        try:
            return self._queries[name]
        except KeyError:
            raise KeyError(f"{self.source} has no query {name!r}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._queries)

    def __len__(self) -> int:
        return len(self._queries)

    def sql(self, name: str) -> bytes:
        return self[name].encode()


@cache
def load_queries(package: str, filename: str) -> Queries:
    """The named queries of ``filename`` in ``package`` (read once per process)."""
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    return Queries(f"{package}/{filename}", text)
