"""The gate of a job's SQL: exactly one ``SELECT`` (or ``WITH ... SELECT``, set operations of
them) over the job's inputs, decided on sqlglot's parse tree (DuckDB dialect), never on the text.

Refused, each with one line naming what: anything that does not parse, no statement or more than
one, any statement that is not a query (``COPY``, ``ATTACH``, ``INSTALL``, ``LOAD``, ``PRAGMA``,
``SET``, ``CREATE``, ``INSERT``, ``DESCRIBE``, ``EXPLAIN``, ...), such a statement nested inside
a query, a table function in ``FROM`` (``read_parquet(...)``, ``range(...)``), and a table name
qualified by a schema (``monad.blocks`` unquoted; a dataset id with dots is quoted:
``"monad.blocks"``). The runner asks DuckDB's own parser the same question before it runs the SQL
(:func:`operators.sql_transform.transform.run_sql`), and DuckDB runs without file access.

:class:`GatedSql` also says which datasets the SQL reads (table names that are not CTEs) and which
columns it may use (every identifier it spells; all columns after a ``*``, ``COLUMNS(...)``, a
``NATURAL`` join or a whole-row reference), so that inputs are read with only those columns. Pure.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from tracekit.errors import ConfigError

OPERATOR: Final = "sql_transform"
DIALECT: Final = "duckdb"

# statements that may not appear anywhere in the tree (sqlglot's Command: what it cannot parse)
_STATEMENTS: Final[tuple[type[exp.Expr], ...]] = tuple(
    kind for kind in (getattr(exp, name, None) for name in (
        "DDL", "DML", "Command", "Copy", "Set", "Pragma", "Attach", "Detach", "Install", "Use",
        "Create", "Drop", "Alter", "Insert", "Update", "Delete", "Merge", "Describe", "Show",
        "Summarize", "Transaction", "Commit", "Rollback", "Analyze", "Grant", "Revoke", "Comment",
        "TruncateTable", "Refresh", "Cache", "Uncache", "LoadData", "Kill", "Export"))
    if isinstance(kind, type) and issubclass(kind, exp.Expr))


class SqlRefused(ConfigError):
    """The job's SQL is not one SELECT over its inputs."""


@dataclass(frozen=True)
class GatedSql:
    """A job's SQL that passed the gate, and what it reads."""

    sql: str
    tables: tuple[str, ...]  # the table names it reads (not CTEs), as spelled, each once
    identifiers: frozenset[str]  # every identifier it spells, lower-cased
    every_column: bool  # a star, COLUMNS(...), a NATURAL join or a whole-row reference

    def columns(self, available: Sequence[str]) -> list[str]:
        """The columns of an input (of ``available``, in its order) the SQL may use; at least one,
        so that a ``count(*)`` still sees every row."""
        if self.every_column:
            return list(available)
        used = [name for name in available if name.lower() in self.identifiers]
        return used or list(available[:1])

    def pinned(self, pins: Collection[str]) -> dict[str, str]:
        """Each table the SQL reads -> the dataset id of ``pins`` it names (DuckDB's names are
        case-insensitive); a :class:`SqlRefused` naming a table no pin matches."""
        by_lower: dict[str, list[str]] = {}
        for dataset in pins:
            by_lower.setdefault(dataset.lower(), []).append(dataset)
        found: dict[str, str] = {}
        for table in self.tables:
            exact = table if table in pins else None
            candidates = by_lower.get(table.lower(), [])
            if exact is None and len(candidates) != 1:
                known = ", ".join(sorted(pins)) or "none"
                raise SqlRefused(f"{OPERATOR}: the SQL reads {table!r}, which the task does not pin "
                                 f"(pinned inputs: {known}); list it in the job's inputs")
            found[table] = exact or candidates[0]
        return found


def _kind(statement: exp.Expr) -> str:
    """What a statement is, as its keyword (``COPY``, ``LOAD``, ``CHECKPOINT``)."""
    if isinstance(statement, exp.Command):
        return str(statement.this).upper()
    if isinstance(statement, _STATEMENTS):
        return statement.key.upper()
    words = statement.sql(dialect=DIALECT).split()
    return words[0].upper() if words else type(statement).__name__.upper()


def _refuse(what: str) -> SqlRefused:
    return SqlRefused(f"{OPERATOR}: {what}")


def _one_line(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if errors:
        first = errors[0]
        where = f" (line {first.get('line')}, column {first.get('col')})" if first.get("line") else ""
        return f"{first.get('description') or exc}{where}"
    lines = str(exc).strip().splitlines()
    return " ".join(lines[0].split()) if lines else type(exc).__name__


def check_sql(sql: str) -> GatedSql:
    """``sql`` when it is one query (see the module doc), with what it reads; else a
    :class:`SqlRefused` (a permanent :class:`~tracekit.errors.ConfigError`) naming the problem."""
    try:
        parsed = sqlglot.parse(sql, read=DIALECT)
    except (ParseError, TokenError) as exc:
        raise _refuse(f"the SQL does not parse: {_one_line(exc)}") from exc
    statements = [statement for statement in parsed if statement is not None]
    if not statements:
        raise _refuse("the SQL holds no statement; give one SELECT")
    if len(statements) > 1:
        raise _refuse(f"the SQL holds {len(statements)} statements ({', '.join(map(_kind, statements))}); "
                      "give one SELECT")
    (tree,) = statements
    if not isinstance(tree, (exp.Select, exp.SetOperation, exp.Subquery)):
        raise _refuse(f"only a SELECT (or WITH ... SELECT) is allowed, not {_kind(tree)}")
    for node in tree.walk():
        if isinstance(node, _STATEMENTS):
            raise _refuse(f"only a SELECT (or WITH ... SELECT) is allowed; it holds {_kind(node)}")
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    tables: list[str] = []
    aliases: set[str] = set()
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            function = (table.this or table).sql(dialect=DIALECT)
            raise _refuse(f"table function {function} is not allowed: read the job's inputs by their "
                          "dataset ids")
        if table.args.get("db") is not None or table.args.get("catalog") is not None:
            dotted = ".".join(part.name for part in table.parts)
            raise _refuse(f"table {table.sql(dialect=DIALECT)} is qualified by a schema; a dataset id "
                          f'with dots is quoted: "{dotted}"')
        aliases.update({table.name.lower(), table.alias_or_name.lower()})
        if table.name.lower() not in ctes and table.name not in tables:
            tables.append(table.name)
    identifiers = frozenset(node.name.lower() for node in tree.find_all(exp.Identifier))
    every_column = any(
        (isinstance(node, exp.Star) and not isinstance(node.parent, exp.Count))
        or isinstance(node, exp.Columns)
        or (isinstance(node, exp.Join) and str(node.args.get("method") or "").upper() == "NATURAL")
        or (isinstance(node, exp.Column) and not node.table and node.name.lower() in aliases)
        for node in tree.walk())
    return GatedSql(sql, tuple(tables), identifiers, every_column)

