"""The SQL gate: one read-only query over named tables, decided on sqlglot's parse tree (DuckDB
dialect), never on the text. Every caller that runs someone's SQL in DuckDB asks it first: a DAG's
``sql_transform`` jobs (when the DAG is validated and again on the worker) and the query service.

:func:`check_sql` accepts exactly one ``SELECT`` (``WITH ... SELECT``, ``FROM ...``, set operations
and parenthesized queries of them) and refuses everything else with a :class:`SqlRefused` that names
the rule it broke (:data:`RULES`, a short stable id) and where: line and column from the tokens'
positions, or the offending fragment. The rules, each also inside subqueries, CTEs, set operations,
lateral joins, scalar subqueries and ``VALUES``:

- ``parse-error``: the SQL does not tokenize or parse (also ``VALUES`` without parentheses);
  ``no-statement``: nothing but comments; ``one-statement``: more than one statement (a ``;``
  inside a comment or a string is not one).
- ``unicode-space``: a space that is not ASCII between tokens (in comments too; strings and quoted
  names may hold any): sqlglot reads it as a space, DuckDB not always (U+2028 is a letter to it).
- ``read-only``: a statement that writes or changes the session, the database or the server
  (``COPY``, ``ATTACH``, ``INSTALL``, ``LOAD``, ``PRAGMA``, ``SET``, ``CALL``, DDL, DML, secrets,
  ``EXPORT``/``IMPORT DATABASE``, ``CHECKPOINT``, ``VACUUM``, transactions, ``SELECT ... INTO``,
  ``FOR UPDATE``), at the top or nested.
- ``select-only``: a statement that reads but is not a query (``DESCRIBE``, ``SHOW``, ``SUMMARIZE``,
  ``EXPLAIN``, the ``PIVOT``/``UNPIVOT`` statement, a bare ``VALUES``), also where sqlglot would
  take it for a name (``FROM (SHOW TABLES)``: DuckDB runs it).
- ``table-function``: a function used as a table, but for ``range``, ``generate_series`` and
  ``unnest`` (they only make values): ``read_parquet``, ``glob``, ``query``, ``duckdb_tables()``...
- ``file-as-table``: a string literal as a table (``FROM 'x.parquet'``), or a quoted name that looks
  like a path, a URL, a glob or a file (``FROM "s3://b/x"``): DuckDB would read the file.
- ``qualified-name``: a table qualified by a schema or a catalog (``main.blocks``,
  ``information_schema.tables``); a dataset id with dots is quoted: ``"monad.blocks"``.
- ``system-catalog``: DuckDB's catalog views, which need no schema (``duckdb_tables``,
  ``pg_tables``, ``sqlite_master``: any ``duckdb_``, ``pg_``, ``sqlite_``, ``pragma_`` name).
- ``unknown-table``: with ``allowed_tables``, a table that is not one of them (nor a CTE in scope).
- ``forbidden-function``: a function that reads files, the environment, settings, sessions or the
  catalog, sleeps, or moves a sequence (``getenv``, ``current_setting``, ``getvariable``,
  ``version``, ``json_serialize_plan``, ``nextval``, ``pg_*``, ``current_user``...).

DuckDB's ``$name``, ``$1`` and ``?`` parameters are accepted (not ``:name``: DuckDB has none).
Names compare case-insensitively, as in DuckDB; a CTE name counts only where DuckDB binds it (after
its definition, in its scope). The refusal nearest the start of the SQL is the one raised.
:class:`GatedSql` says which tables the SQL reads (not CTEs) and which columns it may use, for
reading inputs with only those columns. Pure; docs/sql-gate.md lists the rules with examples.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError
from sqlglot.tokenizer_core import Token, TokenType

from tracekit.errors import ConfigError

DIALECT: Final = "duckdb"
_DUCKDB: Final = Dialect.get_or_raise(DIALECT)

RULES: Final[Mapping[str, str]] = {
    "parse-error": "the SQL does not tokenize or parse",
    "unicode-space": "a space that is not ASCII between the SQL's words (DuckDB may read it as a letter)",
    "no-statement": "the SQL holds no statement",
    "one-statement": "the SQL holds more than one statement",
    "read-only": "a statement that writes or changes the session, database or server",
    "select-only": "a statement that is not a query (DESCRIBE, SHOW, SUMMARIZE, EXPLAIN, PIVOT, VALUES)",
    "table-function": "a function used as a table (but range, generate_series, unnest)",
    "file-as-table": "a string, or a quoted name that looks like a path or URL, used as a table",
    "qualified-name": "a table qualified by a schema or catalog",
    "system-catalog": "one of DuckDB's catalog views",
    "unknown-table": "a table that is not one of the allowed tables",
    "forbidden-function": "a function that reads files, the environment, settings or the catalog",
}

# what a statement may start with: a query
_QUERY_STARTS: Final = frozenset({"SELECT", "WITH", "FROM", "TABLE", "("})
# statements that read but are not queries (select-only); every other start is read-only or not SQL
_READ_STATEMENTS: Final = frozenset({"DESCRIBE", "DESC", "SHOW", "SUMMARIZE", "EXPLAIN", "PIVOT", "UNPIVOT",
                                     "PIVOT_WIDER", "PIVOT_LONGER", "VALUES"})
_WRITE_STATEMENTS: Final = frozenset({
    "ABORT", "ALTER", "ANALYZE", "ATTACH", "BEGIN", "CALL", "CHECKPOINT", "COMMENT", "COMMIT", "COPY",
    "CREATE", "DEALLOCATE", "DELETE", "DETACH", "DROP", "END", "EXECUTE", "EXPORT", "FORCE", "GRANT",
    "IMPORT", "INSERT", "INSTALL", "LOAD", "MERGE", "PRAGMA", "PREPARE", "REPLACE", "RESET", "REVOKE",
    "ROLLBACK", "SET", "START", "TRUNCATE", "UNINSTALL", "UPDATE", "UPSERT", "USE", "VACUUM"})
# words DuckDB runs as a statement inside parentheses where sqlglot reads a name: (SHOW TABLES)
_STATEMENT_WORDS: Final = frozenset({"show", "describe", "desc", "summarize", "explain", "pivot", "unpivot",
                                     "pivot_wider", "pivot_longer", "pragma", "call"})


def _types(*names: str) -> tuple[type[exp.Expr], ...]:
    return tuple(kind for kind in (getattr(exp, name, None) for name in names)
                 if isinstance(kind, type) and issubclass(kind, exp.Expr))


# sqlglot's statement nodes (Command: what it cannot parse) that may not appear anywhere in a query
_WRITE_NODES: Final = _types(
    "DDL", "DML", "Command", "Copy", "Set", "Pragma", "Attach", "Detach", "Install", "Use", "Create", "Drop",
    "Alter", "Insert", "Update", "Delete", "Merge", "Transaction", "Commit", "Rollback", "Analyze", "Grant",
    "Revoke", "Comment", "TruncateTable", "Refresh", "Cache", "Uncache", "LoadData", "Kill", "Export",
    "Execute")
_READ_NODES: Final = _types("Describe", "Show", "Summarize")
_KEYWORDS: Final = {"truncatetable": "TRUNCATE", "transaction": "BEGIN", "loaddata": "LOAD DATA"}

# table functions that only make values
_VALUE_FUNCTIONS: Final = frozenset({"range", "generate_series", "unnest"})
_VALUE_NODES: Final = (exp.GenerateSeries, exp.Unnest, exp.Explode)
_FILE_FUNCTIONS: Final = frozenset({
    "glob", "read_csv", "read_csv_auto", "read_parquet", "parquet_scan", "read_json", "read_json_auto",
    "read_json_objects", "read_json_objects_auto", "read_ndjson", "read_ndjson_auto", "read_ndjson_objects",
    "read_text", "read_blob", "read_duckdb", "read_xlsx", "sniff_csv", "iceberg_scan", "iceberg_metadata",
    "iceberg_snapshots", "delta_scan", "sqlite_scan", "sqlite_attach", "postgres_scan", "postgres_query",
    "mysql_scan", "mysql_query", "st_read"})
_SQL_FUNCTIONS: Final = frozenset({"query", "query_table", "json_execute_serialized_sql"})
_FORBIDDEN_FUNCTIONS: Final = _FILE_FUNCTIONS | _SQL_FUNCTIONS | frozenset({
    "getenv", "getvariable", "current_setting", "json_serialize_plan", "version", "session_user",
    "nextval", "currval", "setval", "sleep_ms", "txid_current", "in_search_path", "col_description",
    "obj_description", "shobj_description", "which_secret", "load_aws_credentials", "sql_auto_complete",
    "arrow_scan", "pandas_scan", "seq_scan", "checkpoint", "force_checkpoint", "enable_logging",
    "disable_logging", "enable_profiling", "disable_profiling", "truncate_duckdb_logs"})
_FORBIDDEN_PREFIXES: Final = ("pg_", "duckdb_", "pragma_", "has_", "inet_", "current_", "read_", "parquet_",
                              "iceberg_", "delta_", "sqlite_", "postgres_", "mysql_", "python_", "__")
_HARMLESS_FUNCTIONS: Final = frozenset({"current_date", "current_time", "current_timestamp",
                                        "current_localtime", "current_localtimestamp"})
_SYSTEM_PREFIXES: Final = ("duckdb_", "pg_", "sqlite_", "pragma_")
# a quoted table name with one of these endings is a file to DuckDB (FROM "x.parquet")
_FILE_SUFFIXES: Final = frozenset({
    "parquet", "csv", "tsv", "tbl", "json", "jsonl", "ndjson", "txt", "text", "log", "gz", "gzip", "zst",
    "zstd", "bz2", "xz", "lz4", "snappy", "arrow", "feather", "ipc", "avro", "orc", "xlsx", "xls", "db",
    "duckdb", "ddb", "sqlite", "sqlite3", "dat", "blob", "bin"})
_PATH_CHARACTERS: Final = frozenset("/\\:*?[]{}~")
_ASCII_SPACES: Final = frozenset(" \t\n\r\x0b\x0c")
_UNKNOWN: Final = (1 << 30, 0)  # sorts a problem or table without a position last


class SqlRefused(ConfigError):
    """The SQL is not one read-only query over the allowed tables."""

    def __init__(self, rule: str, reason: str, *, position: tuple[int, int] | None = None,
                 fragment: str = "", subject: str = "") -> None:
        self.rule = rule  # one of RULES
        self.reason = reason
        self.position = position  # (line, column), both from 1, where the offending token starts
        self.fragment = fragment  # the offending part of the SQL, when no position is known
        self.subject = subject  # who refused, before the message ("sql_transform")
        where = f" at {self.where}" if self.where else ""
        super().__init__(f"{subject}: " * bool(subject) + f"refused ({rule}){where}: {reason}")

    @property
    def where(self) -> str:
        """``line:column``, else the fragment quoted, else nothing."""
        if self.position is not None:
            return f"{self.position[0]}:{self.position[1]}"
        return repr(self.fragment) if self.fragment else ""

    def about(self, subject: str) -> SqlRefused:
        """The same refusal, its message led by ``subject:``."""
        return SqlRefused(self.rule, self.reason, position=self.position, fragment=self.fragment,
                          subject=subject)


@dataclass(frozen=True)
class GatedSql:
    """SQL that passed the gate, and what it reads."""

    sql: str
    tables: tuple[str, ...]  # the table names it reads (not CTEs), as spelled, each once
    identifiers: frozenset[str]  # every identifier it spells, lower-cased
    every_column: bool  # a star, COLUMNS(...), a NATURAL join or a whole-row reference
    positions: tuple[tuple[int, int] | None, ...] = ()  # where each of ``tables`` is first read

    def columns(self, available: Sequence[str]) -> list[str]:
        """The columns of an input (of ``available``, in its order) the SQL may use; at least one,
        so that a ``count(*)`` still sees every row."""
        if self.every_column:
            return list(available)
        used = [name for name in available if name.lower() in self.identifiers]
        return used or list(available[:1])

    def resolve(self, names: Collection[str], *, among: str = "the allowed tables",
                hint: str = "") -> dict[str, str]:
        """Each table the SQL reads -> the one of ``names`` it means: the same spelling, else the only
        one equal but for case (DuckDB's names are case-insensitive); else an ``unknown-table``
        :class:`SqlRefused` naming the table, ``among`` and ``names``, and ``hint``."""
        by_lower: dict[str, list[str]] = {}
        for name in names:
            by_lower.setdefault(name.lower(), []).append(name)
        found: dict[str, str] = {}
        for index, table in enumerate(self.tables):
            exact = table if table in names else None
            candidates = by_lower.get(table.lower(), [])
            if exact is None and len(candidates) != 1:
                known = ", ".join(sorted(names)) or "none"
                position = self.positions[index] if index < len(self.positions) else None
                reason = f"the SQL reads {table!r}, which is not among {among} ({known})"
                raise SqlRefused("unknown-table", reason + f"; {hint}" * bool(hint), position=position,
                                 fragment=table)
            found[table] = exact or candidates[0]
        return found


def check_sql(sql: str, allowed_tables: Collection[str] | None = None) -> GatedSql:
    """``sql`` when it is one read-only query (see the module doc) reading only ``allowed_tables``
    (any table when None; CTEs always), with what it reads; else a :class:`SqlRefused` (a permanent
    :class:`~tracekit.errors.ConfigError`) naming the rule it broke and where."""
    try:
        tokens = _DUCKDB.tokenize(sql)
    except Exception as exc:  # whatever trips the tokenizer is refused, never raised
        raise SqlRefused("parse-error", f"the SQL does not tokenize: {_one_line(exc)}",
                         fragment=sql[:60]) from exc
    _check_spaces(sql, tokens)
    statements = _statement_tokens(tokens)
    if not statements:
        raise SqlRefused("no-statement", "the SQL holds no statement; give one SELECT")
    if len(statements) > 1:
        kinds = ", ".join(first[0].text.upper() for first in statements)
        raise SqlRefused("one-statement", f"the SQL holds {len(statements)} statements ({kinds}); give one "
                         "SELECT", position=_line_col(sql, statements[1][0].start))
    start = statements[0][0]
    keyword = start.text.upper()
    if keyword in _WRITE_STATEMENTS | _READ_STATEMENTS:  # also those sqlglot cannot parse (EXPORT DATABASE)
        rule = "read-only" if keyword in _WRITE_STATEMENTS else "select-only"
        raise SqlRefused(rule, f"only a SELECT (or WITH ... SELECT) is allowed, not {keyword}",
                         position=_line_col(sql, start.start))
    try:
        parsed = _DUCKDB.parser().parse(tokens, sql)
    except ParseError as exc:
        raise SqlRefused("parse-error", f"the SQL does not parse: {_one_line(exc)}",
                         position=_error_position(sql, tokens, exc)) from exc
    except Exception as exc:  # e.g. RecursionError on absurd nesting: refused, never raised
        raise SqlRefused("parse-error", f"the SQL does not parse: {_one_line(exc)}",
                         fragment=sql[:60]) from exc
    trees = [tree for tree in parsed if tree is not None and not isinstance(tree, exp.Semicolon)]
    if len(trees) != 1:  # the statements were counted on the same tokens; kept as a guard
        raise SqlRefused("one-statement", f"the SQL holds {len(trees)} statements; give one SELECT")
    return _Gate(sql, tokens, allowed_tables).check(trees[0], _line_col(sql, start.start))


def _check_spaces(sql: str, tokens: Sequence[Token]) -> None:
    """Between tokens (whitespace and comments) only ASCII spaces: sqlglot reads every Unicode space
    as one, DuckDB reads U+2028 or U+0085 as part of a name, and U+00A0 too after a ``$name``."""
    end = 0
    for token in [*tokens, None]:
        start = len(sql) if token is None else token.start
        for offset in range(end, start):
            char = sql[offset]
            if char.isspace() and char not in _ASCII_SPACES:
                raise SqlRefused("unicode-space", f"U+{ord(char):04X} between the SQL's words is not a space "
                                 "to DuckDB everywhere; use a plain space", position=_line_col(sql, offset))
        end = start if token is None else token.end + 1


def _statement_tokens(tokens: Sequence[Token]) -> list[list[Token]]:
    """The tokens of each statement, split at ``;`` as sqlglot's parser splits them."""
    statements: list[list[Token]] = [[]]
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            statements.append([])
        else:
            statements[-1].append(token)
    return [statement for statement in statements if statement]


def _line_col(sql: str, offset: int) -> tuple[int, int]:
    return sql.count("\n", 0, offset) + 1, offset - (sql.rfind("\n", 0, offset) + 1) + 1


def _error_position(sql: str, tokens: Sequence[Token], exc: ParseError) -> tuple[int, int] | None:
    """Where the token sqlglot stopped at starts (its error names the token's line and last column)."""
    first = exc.errors[0] if exc.errors else {}
    at = (first.get("line"), first.get("col"))
    token = next((token for token in tokens if (token.line, token.col) == at), None)
    return _line_col(sql, token.start) if token is not None else None


def _one_line(exc: BaseException) -> str:
    errors = getattr(exc, "errors", None)
    if errors and errors[0].get("description"):
        return str(errors[0]["description"])
    lines = str(exc).strip().splitlines()
    return " ".join(lines[0].split()) if lines else type(exc).__name__


class _Gate:
    """One statement's parse tree, checked node by node; the refusal nearest the start wins."""

    def __init__(self, sql: str, tokens: Sequence[Token], allowed_tables: Collection[str] | None) -> None:
        self.sql = sql
        self.tokens = {token.start: token for token in tokens}
        self.ordered = list(tokens)
        self.order = {token.start: index for index, token in enumerate(tokens)}
        self.allowed = None if allowed_tables is None else {name.lower() for name in allowed_tables}
        self.problems: list[SqlRefused] = []

    def check(self, tree: exp.Expr, start: tuple[int, int]) -> GatedSql:
        if not isinstance(tree, (exp.Select, exp.SetOperation, exp.Subquery)):
            rule = "read-only" if isinstance(tree, _WRITE_NODES) else "select-only"
            raise SqlRefused(rule, f"only a SELECT (or WITH ... SELECT) is allowed, not {self._kind(tree)}",
                             position=start)
        read: list[tuple[tuple[int, int], str]] = []  # (where, name) of each table read
        aliases: set[str] = set()
        for node in tree.walk():
            if isinstance(node, exp.Table):
                if isinstance(node.this, exp.Identifier):
                    aliases.update({node.name.lower(), node.alias_or_name.lower()})
                name = self._table(node)
                if name is not None:
                    read.append((self._position(node) or _UNKNOWN, name))
            else:
                self._node(node)
        if self.problems:
            raise min(self.problems, key=lambda problem: problem.position or _UNKNOWN)
        tables: list[str] = []
        positions: list[tuple[int, int] | None] = []
        for position, name in sorted(read):  # in the order of the text
            if name not in tables:
                tables.append(name)
                positions.append(None if position == _UNKNOWN else position)
        identifiers = frozenset(node.name.lower() for node in tree.find_all(exp.Identifier))
        every_column = any(
            (isinstance(node, exp.Star) and not isinstance(node.parent, exp.Count))
            or isinstance(node, exp.Columns)
            or (isinstance(node, exp.Join) and str(node.args.get("method") or "").upper() == "NATURAL")
            or (isinstance(node, exp.Column) and not node.table and node.name.lower() in aliases)
            for node in tree.walk())
        return GatedSql(self.sql, tuple(tables), identifiers, every_column, tuple(positions))

    # -- the rules ---------------------------------------------------------------------------------

    def _node(self, node: exp.Expr) -> None:
        if isinstance(node, _WRITE_NODES):
            self._refuse("read-only", f"a query may not hold {self._kind(node)}", node)
        elif isinstance(node, _READ_NODES) or (isinstance(node, exp.Pivot) and node.this is not None):
            hint = "; write a pivot in FROM: t PIVOT (... FOR c IN (...))" * isinstance(node, exp.Pivot)
            self._refuse("select-only", f"a query may not hold {self._kind(node)}{hint}", node)
        elif isinstance(node, exp.Into):
            self._refuse("read-only", "SELECT ... INTO writes a table", node)
        elif isinstance(node, exp.Lock):
            self._refuse("read-only", "FOR UPDATE / FOR SHARE locks rows", node)
        elif isinstance(node, exp.Identifier) and not node.quoted and node.name.lower() in _STATEMENT_WORDS:
            self._refuse("select-only", f"{node.name.upper()} is a statement to DuckDB, not a name; quote a "
                         f'column so named: "{node.name}"', node)
        elif isinstance(node, exp.Values) and not self._parenthesized(node):
            self._refuse("parse-error", "VALUES without parentheses: DuckDB reads VALUES as a table's name; "
                         "write VALUES (...), (...)", node)
        elif isinstance(node, exp.Lateral) and not isinstance(node.this, (exp.Subquery, exp.Func)):
            self._refuse("table-function", "LATERAL takes a subquery", node)
        elif isinstance(node, exp.Func):
            if isinstance(node.parent, (exp.Table, exp.Lateral, exp.From, exp.Join)):
                self._table_function(node)
            else:
                self._function(node)

    def _table(self, table: exp.Table) -> str | None:
        """The name a table reads (None: a CTE in scope, a function, or refused)."""
        qualified = table.args.get("db") is not None or table.args.get("catalog") is not None
        if not isinstance(table.this, exp.Identifier):
            if isinstance(table.this, exp.Func):
                return None  # checked as a function
            if qualified or isinstance(table.this, exp.Dot):  # a.b.c.d
                self._refuse("qualified-name", f"{table.sql(dialect=DIALECT)} is qualified by a schema; name "
                             "a view alone", table)
            else:  # ROWS FROM (...), or what sqlglot could not name
                self._refuse("table-function", "only a view's name, a subquery or range, generate_series "
                             "and unnest may be used as a table", table)
            return None
        identifier = table.this
        name = identifier.name
        if qualified:
            dotted = ".".join(part.name for part in table.parts)
            self._refuse("qualified-name", f"{table.sql(dialect=DIALECT)} is qualified by a schema; name a "
                         f'view alone (a dataset id with dots is quoted: "{dotted}")', table)
            return None
        token = self.tokens.get(identifier.meta.get("start", -1))
        if token is not None and token.token_type == TokenType.STRING:
            self._refuse("file-as-table", f"'{name}' is a string, which DuckDB reads as a file; name a view "
                         "(quoted with double quotes if need be)", table)
            return None
        lower = name.lower()
        allowed = self.allowed is not None and lower in self.allowed  # a view the caller made: DuckDB's first
        if _looks_like_file(name) and not allowed:
            self._refuse("file-as-table", f'"{name}" looks like a file or URL, which DuckDB would read; name '
                         "a view", table)
            return None
        if lower in _ctes_in_scope(table):
            return None
        if allowed:
            return name
        if lower.startswith(_SYSTEM_PREFIXES):
            self._refuse("system-catalog", f"{name} is one of DuckDB's catalog views; query the views "
                         "instead", table)
            return None
        if self.allowed is not None:
            self._refuse("unknown-table", f"{name} is not a table here; tables: "
                         f"{', '.join(sorted(self.allowed)) or 'none'}", table)
            return None
        return name

    def _table_function(self, function: exp.Func) -> None:
        names = self._names(function)
        name = self._name(function)
        if name.lower() in _VALUE_FUNCTIONS and isinstance(function, _VALUE_NODES):
            return
        if names & _SQL_FUNCTIONS:
            why = f"{name} runs SQL given as a string"
        elif names & _FILE_FUNCTIONS or any(n.startswith(("read_", "parquet_")) for n in names):
            why = f"{name} reads files"
        elif any(n.startswith(_SYSTEM_PREFIXES) for n in names) or names & _FORBIDDEN_FUNCTIONS:
            why = f"{name} reveals or changes the database, its settings or secrets"
        else:
            why = f"{name} is a table function; only range, generate_series and unnest may be"
        self._refuse("table-function", f"{why}; query the views instead", function)

    def _function(self, function: exp.Func) -> None:
        names = self._names(function)
        if names & _HARMLESS_FUNCTIONS:
            return
        if names & _FORBIDDEN_FUNCTIONS or any(n.startswith(_FORBIDDEN_PREFIXES) for n in names):
            self._refuse("forbidden-function", f"{self._name(function)} {_what_it_does(names)}; it is not "
                         "allowed", function)

    # -- helpers -----------------------------------------------------------------------------------

    def _names(self, function: exp.Func) -> set[str]:
        """What DuckDB will call: the name as spelled (the SQL runs as written), and sqlglot's names."""
        if isinstance(function, exp.Anonymous):
            names = {function.name.lower()}
        else:
            names = {name.lower() for name in type(function).sql_names()}
        token = self.tokens.get(function.meta.get("start", -1))
        if token is not None:
            names.add(token.text.lower())
        return names

    def _name(self, function: exp.Func) -> str:
        token = self.tokens.get(function.meta.get("start", -1))
        return token.text if token is not None else (function.name if isinstance(function, exp.Anonymous)
                                                     else type(function).sql_names()[0].lower())

    def _parenthesized(self, values: exp.Values) -> bool:
        """Whether each row of ``values`` opens with a ``(`` (sqlglot also takes ``FROM VALUES x``,
        where DuckDB reads a table named VALUES, for one row)."""
        for row in values.expressions:
            starts = [start for start in (n.meta.get("start") for n in row.walk()) if isinstance(start, int)]
            if starts:
                index = self.order.get(min(starts), 0)
                if index == 0 or self.ordered[index - 1].token_type != TokenType.L_PAREN:
                    return False
        return True

    def _kind(self, node: exp.Expr) -> str:
        if isinstance(node, exp.Command):
            return str(node.this).upper()
        if isinstance(node, exp.Lock):
            return "FOR UPDATE" if node.args.get("update") else "FOR SHARE"
        return _KEYWORDS.get(node.key, node.key.upper())

    def _position(self, node: exp.Expr) -> tuple[int, int] | None:
        starts = [start for start in (n.meta.get("start") for n in node.walk()) if isinstance(start, int)]
        return _line_col(self.sql, min(starts)) if starts else None

    def _refusal(self, rule: str, reason: str, node: exp.Expr) -> SqlRefused:
        position = self._position(node)
        fragment = ""
        if position is None:
            try:
                fragment = node.sql(dialect=DIALECT)[:60]
            except Exception:  # only for the message
                fragment = ""
            fragment = fragment or self._kind(node)
        return SqlRefused(rule, reason, position=position, fragment=fragment)

    def _refuse(self, rule: str, reason: str, node: exp.Expr) -> None:
        self.problems.append(self._refusal(rule, reason, node))


def _what_it_does(names: set[str]) -> str:
    if names & {"sleep_ms", "pg_sleep"}:
        return "sleeps"
    if names & {"nextval", "currval", "setval"}:
        return "moves a sequence"
    if names & {"getenv", "current_setting", "getvariable"}:
        return "reads the environment or the settings"
    if names & _SQL_FUNCTIONS or "json_serialize_plan" in names:
        return "runs or plans SQL given as a string"
    if names & _FILE_FUNCTIONS or any(name.startswith(("read_", "parquet_")) for name in names):
        return "reads files"
    return "reveals the database, its catalog or the server"


def _looks_like_file(name: str) -> bool:
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return bool(_PATH_CHARACTERS & set(name)) or name.startswith(".") or suffix in _FILE_SUFFIXES


def _ctes_in_scope(table: exp.Table) -> set[str]:
    """The CTE names a table reference at ``table`` means, as DuckDB binds them: those of every
    enclosing WITH; inside a CTE's body only the CTEs before it (and itself when RECURSIVE)."""
    names: set[str] = set()
    child: exp.Expr = table
    parent = table.parent
    through: exp.With | None = None  # the WITH we came up through (inside one of its CTEs)
    while parent is not None:
        if isinstance(parent, exp.With) and isinstance(child, exp.CTE):
            ctes = parent.expressions
            index = next(i for i, cte in enumerate(ctes) if cte is child)
            visible = ctes[: index + 1] if parent.args.get("recursive") else ctes[:index]
            names.update(cte.alias_or_name.lower() for cte in visible)
            through = parent
        else:
            with_ = parent.args.get("with_")
            if isinstance(with_, exp.With) and with_ is not through:
                names.update(cte.alias_or_name.lower() for cte in with_.expressions)
        child, parent = parent, parent.parent
    return names
