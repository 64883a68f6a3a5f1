"""The kernel's SQL gate (tracekit/sqlgate.py, docs/sql-gate.md): one read-only query over the
allowed tables, decided on sqlglot's parse tree. Hostile statements are refused naming the rule and
where, nested, quoted, commented and case-mixed forms included; ordinary analytics is accepted,
and DuckDB's own parser reads whatever the gate accepts as one SELECT. No I/O."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracekit.errors import ConfigError
from tracekit.sqlgate import RULES, GatedSql, SqlRefused, check_sql

_DUCKDB = duckdb.connect()  # only its parser is used (extract_statements, json_serialize_sql)

VIEWS = ("blocks", "transactions", "logs", "traces", "transfers", "stake_changes", "prices", "labels",
         "alerts", "monad.daily_volume")


@pytest.fixture(autouse=True)
def _quiet_sqlglot() -> Iterator[None]:
    """sqlglot logs a warning for each statement it falls back to a Command for."""
    logger = logging.getLogger("sqlglot")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def _refusal(sql: str, allowed: tuple[str, ...] | None = None) -> SqlRefused:
    with pytest.raises(SqlRefused) as caught:
        check_sql(sql, allowed)
    return caught.value


# -- refused ----------------------------------------------------------------------------------------

HOSTILE: list[tuple[str, str, tuple[int, int] | None]] = [
    # files and URLs as table functions, also joined, lateral, nested, case-mixed and quoted
    ("SELECT * FROM read_parquet('/etc/x.parquet')", "table-function", (1, 15)),
    ("SELECT * FROM read_csv('/etc/passwd')", "table-function", (1, 15)),
    ("SELECT * FROM read_csv_auto('x.csv')", "table-function", (1, 15)),
    ("SELECT * FROM parquet_scan('s3://bucket/x.parquet')", "table-function", (1, 15)),
    ("SELECT * FROM read_json_auto('x.json')", "table-function", (1, 15)),
    ("SELECT * FROM read_text('/etc/hostname')", "table-function", (1, 15)),
    ("SELECT * FROM read_blob('/etc/hostname')", "table-function", (1, 15)),
    ("SELECT * FROM glob('/etc/*')", "table-function", (1, 15)),
    ("SELECT * FROM iceberg_scan('s3://b/t')", "table-function", (1, 15)),
    ("SELECT * FROM delta_scan('s3://b/t')", "table-function", (1, 15)),
    ("SELECT * FROM sqlite_scan('x.db', 't')", "table-function", (1, 15)),
    ("SELECT * FROM postgres_scan('host=db', 'public', 't')", "table-function", (1, 15)),
    ("SELECT * FROM query('SELECT * FROM secrets')", "table-function", (1, 15)),
    ("SELECT * FROM query_table('blocks')", "table-function", (1, 15)),
    ("SELECT * FROM duckdb_secrets()", "table-function", (1, 15)),
    ("SELECT * FROM duckdb_settings()", "table-function", (1, 15)),
    ("SELECT * FROM duckdb_databases()", "table-function", (1, 15)),
    ("SELECT * FROM blocks JOIN LATERAL read_csv('x') ON true", "table-function", (1, 35)),
    ("SELECT * FROM blocks CROSS JOIN glob('*')", "table-function", (1, 33)),
    ("SELECT * FROM ROWS FROM (read_csv('x'))", "table-function", (1, 26)),
    ("SELECT * FROM TABLE(read_csv('x'))", "table-function", (1, 15)),
    ("sElEcT * fRoM ReAd_PaRqUeT('x')", "table-function", (1, 15)),
    ("SELECT * FROM \"read_parquet\"('x')", "table-function", (1, 15)),
    ("SELECT * FROM blocks WHERE block_number IN (SELECT x FROM read_csv('y'))", "table-function", (1, 59)),
    ("SELECT (SELECT count(*) FROM read_parquet('x')) AS n", "table-function", (1, 30)),
    ("WITH c AS (SELECT * FROM glob('*')) SELECT * FROM c", "table-function", (1, 26)),
    ("SELECT 1 UNION ALL SELECT * FROM read_csv('x')", "table-function", (1, 34)),
    ("SELECT * FROM blocks, LATERAL (SELECT * FROM read_csv('x'))", "table-function", (1, 46)),
    ("SELECT *\nFROM blocks\n  WHERE EXISTS (FROM\n    read_csv('x'))", "table-function", (4, 5)),
    # a string, or a path-like quoted name, as a table
    ("SELECT * FROM 'x.parquet'", "file-as-table", (1, 15)),
    ("SELECT * FROM 'blocks'", "file-as-table", (1, 15)),
    ('SELECT * FROM "s3://bucket/x.parquet"', "file-as-table", (1, 15)),
    ('SELECT * FROM "/etc/passwd"', "file-as-table", (1, 15)),
    ('SELECT * FROM "data.csv"', "file-as-table", (1, 15)),
    ('SELECT * FROM "~/x"', "file-as-table", (1, 15)),
    ("SELECT * FROM blocks WHERE EXISTS (FROM 'x.csv')", "file-as-table", (1, 41)),
    ("SELECT * FROM blocks/**/,/**/'x.csv'", "file-as-table", (1, 30)),
    ('WITH "x.csv" AS (SELECT 1) SELECT * FROM "x.csv"', "file-as-table", (1, 42)),
    # qualified names and DuckDB's catalog
    ("SELECT * FROM information_schema.tables", "qualified-name", (1, 15)),
    ("SELECT * FROM pg_catalog.pg_tables", "qualified-name", (1, 15)),
    ("SELECT * FROM main.blocks", "qualified-name", (1, 15)),
    ("SELECT * FROM memory.main.blocks", "qualified-name", (1, 15)),
    ('SELECT * FROM "main"."blocks"', "qualified-name", (1, 15)),
    ("SELECT * FROM main.main.main.blocks", "qualified-name", (1, 15)),
    ("SELECT * FROM blocks WHERE x IN (SELECT 1 FROM main.logs)", "qualified-name", (1, 48)),
    ("SELECT * FROM duckdb_tables", "system-catalog", (1, 15)),
    ("SELECT * FROM pg_settings", "system-catalog", (1, 15)),
    ("SELECT * FROM sqlite_master", "system-catalog", (1, 15)),
    ("SELECT * FROM (SELECT * FROM Duckdb_Views) v", "system-catalog", (1, 30)),
    # scalar functions that read the environment, settings, catalog, or sleep
    ("SELECT getenv('HOME')", "forbidden-function", (1, 8)),
    ("SELECT current_setting('s3_secret_access_key')", "forbidden-function", (1, 8)),
    ("SELECT getvariable('x')", "forbidden-function", (1, 8)),
    ("SELECT version()", "forbidden-function", (1, 8)),
    ("SELECT pg_get_viewdef('labels')", "forbidden-function", (1, 8)),
    ("SELECT json_serialize_plan('SELECT * FROM secrets')", "forbidden-function", (1, 8)),
    ("SELECT nextval('s')", "forbidden-function", (1, 8)),
    ("SELECT pg_sleep(1000)", "forbidden-function", (1, 8)),
    ("SELECT current_database()", "forbidden-function", (1, 8)),
    ("SELECT current_user", "forbidden-function", None),
    ("SELECT * FROM (VALUES (getenv('HOME'))) v(x)", "forbidden-function", (1, 24)),
    ("SELECT list_transform([1], x -> getenv('HOME'))", "forbidden-function", (1, 33)),
    ("SELECT 1 FROM blocks WHERE x = (SELECT current_setting('threads'))", "forbidden-function", (1, 40)),
    ("SELECT GETENV('HOME')", "forbidden-function", (1, 8)),
    ("SELECT main.getenv('HOME')", "forbidden-function", (1, 13)),
    # every other statement, at the top
    ("COPY blocks TO '/tmp/x.csv'", "read-only", (1, 1)),
    ("ATTACH '/tmp/x.db' AS x", "read-only", (1, 1)),
    ("DETACH x", "read-only", (1, 1)),
    ("INSTALL httpfs", "read-only", (1, 1)),
    ("LOAD httpfs", "read-only", (1, 1)),
    ("PRAGMA version", "read-only", (1, 1)),
    ("SET memory_limit = '100GB'", "read-only", (1, 1)),
    ("RESET memory_limit", "read-only", (1, 1)),
    ("CALL duckdb_secrets()", "read-only", (1, 1)),
    ("CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 's')", "read-only", (1, 1)),
    ("DROP SECRET s", "read-only", (1, 1)),
    ("CREATE TABLE t AS SELECT 1", "read-only", (1, 1)),
    ("ALTER TABLE blocks ADD COLUMN x INT", "read-only", (1, 1)),
    ("DROP TABLE blocks", "read-only", (1, 1)),
    ("INSERT INTO blocks SELECT * FROM blocks", "read-only", (1, 1)),
    ("UPDATE blocks SET gas_used = 0", "read-only", (1, 1)),
    ("DELETE FROM blocks", "read-only", (1, 1)),
    ("MERGE INTO blocks USING logs ON true WHEN MATCHED THEN DELETE", "read-only", (1, 1)),
    ("TRUNCATE blocks", "read-only", (1, 1)),
    ("EXPORT DATABASE '/tmp/x'", "read-only", (1, 1)),
    ("IMPORT DATABASE '/tmp/x'", "read-only", (1, 1)),
    ("USE memory", "read-only", (1, 1)),
    ("CHECKPOINT", "read-only", (1, 1)),
    ("VACUUM", "read-only", (1, 1)),
    ("BEGIN TRANSACTION", "read-only", (1, 1)),
    ("  /* hi */ CoPy blocks TO 'x'", "read-only", (1, 12)),
    ("WITH x AS (SELECT 1) INSERT INTO blocks SELECT * FROM x", "read-only", (1, 1)),
    ("SELECT * INTO t FROM blocks", "read-only", (1, 15)),
    ("SELECT * FROM blocks FOR UPDATE", "read-only", None),
    ("DESCRIBE blocks", "select-only", (1, 1)),
    ("SHOW TABLES", "select-only", (1, 1)),
    ("SUMMARIZE blocks", "select-only", (1, 1)),
    ("EXPLAIN ANALYZE SELECT 1", "select-only", (1, 1)),
    ("PIVOT blocks ON x USING sum(y)", "select-only", (1, 1)),
    ("VALUES (1), (2)", "select-only", (1, 1)),
    # statements hidden inside a query, where sqlglot would read a name and DuckDB runs them
    ("SELECT * FROM (SHOW TABLES)", "select-only", (1, 16)),
    ("SELECT (SHOW TABLES)", "select-only", (1, 9)),
    ("SELECT * FROM (DESC blocks)", "select-only", (1, 16)),
    ("SELECT * FROM (DESCRIBE blocks)", "select-only", (1, 25)),
    ("SELECT * FROM (SUMMARIZE blocks)", "select-only", (1, 26)),
    ("SELECT * FROM (PIVOT blocks ON x USING sum(y))", "select-only", (1, 22)),
    # more than one statement, also after comments and strings holding semicolons
    ("SELECT 1; SELECT 2", "one-statement", (1, 11)),
    ("SELECT 1; COPY blocks TO 'x'", "one-statement", (1, 11)),
    ("SELECT 1 /* ; */ ; ATTACH 'x'", "one-statement", (1, 20)),
    ("SELECT 1 -- x\n; DROP TABLE blocks", "one-statement", (2, 3)),
    ("SELECT 'a;b'; DROP TABLE blocks", "one-statement", (1, 15)),
    ("SELECT 1;;SELECT 2", "one-statement", (1, 11)),
    ("select 1;\t\n\tCoPy blocks TO 'x'", "one-statement", (2, 2)),
    ("SELECT 'a\\'; SELECT 2; --'", "one-statement", (1, 14)),
    # Unicode spaces between words: sqlglot reads them as spaces, DuckDB not always (a name's letters)
    ("FROM \u2028 blocks SELECT x", "unicode-space", (1, 6)),
    ("SELECT\u00a0block_number\u3000FROM\tblocks", "unicode-space", (1, 7)),
    ("SELECT 1\u00a0;\u3000SELECT 2", "unicode-space", (1, 9)),
    ("SELECT 1 /* a\u2009b */", "unicode-space", (1, 14)),
    # VALUES without parentheses: DuckDB reads a table named VALUES
    ("FROM VALUES blocks SELECT x", "parse-error", (1, 13)),
    # nothing, or not SQL
    ("", "no-statement", None),
    ("-- only a comment", "no-statement", None),
    (" ;; /* */ ", "no-statement", None),
    ("SELEC 1", "parse-error", (1, 7)),
    ("SELECT 'unterminated", "parse-error", None),
    ("SELECT :name", "parse-error", (1, 1)),  # DuckDB's parameters are $name and ?
]


@pytest.mark.parametrize(("sql", "rule", "position"), HOSTILE)
def test_hostile_sql_is_refused_naming_the_rule_and_where(sql: str, rule: str,
                                                           position: tuple[int, int] | None) -> None:
    refused = _refusal(sql)
    assert (refused.rule, refused.position) == (rule, position), str(refused)
    assert rule in RULES
    where = f" at {refused.where}" if refused.where else ""
    assert str(refused) == f"refused ({rule}){where}: {refused.reason}"
    assert "\n" not in str(refused)
    assert isinstance(refused, ConfigError)  # permanent: the same SQL fails the same way


def test_the_table_is_long_and_covers_every_rule() -> None:
    assert len(HOSTILE) >= 40
    assert {rule for _, rule, _ in HOSTILE} | {"unknown-table"} == set(RULES)
    assert len({sql for sql, _, _ in HOSTILE}) == len(HOSTILE)


def test_the_message_names_the_rule_the_place_and_what_to_do() -> None:
    assert str(_refusal("SELECT * FROM read_parquet('x.parquet')")) == (
        "refused (table-function) at 1:15: read_parquet reads files; query the views instead")
    assert str(_refusal("SELECT 1 FROM blocks\nWHERE getenv('HOME') = ''")) == (
        "refused (forbidden-function) at 2:7: getenv reads the environment or the settings; it is not "
        "allowed")
    refused = _refusal("SELECT * FROM blocks FOR UPDATE")
    assert (refused.position, refused.fragment, refused.where) == (None, "FOR UPDATE", "'FOR UPDATE'")
    assert str(refused) == "refused (read-only) at 'FOR UPDATE': FOR UPDATE / FOR SHARE locks rows"
    assert str(refused.about("query")).startswith("query: refused (read-only) at 'FOR UPDATE': ")
    assert str(_refusal("SELECT 1; COPY blocks TO 'x'")) == (
        "refused (one-statement) at 1:11: the SQL holds 2 statements (SELECT, COPY); give one SELECT")


def test_the_first_problem_in_the_text_is_named() -> None:
    refused = _refusal("SELECT getenv('a') FROM read_csv('x') JOIN main.t ON true")
    assert (refused.rule, refused.position) == ("forbidden-function", (1, 8))
    refused = _refusal("SELECT 1 FROM blocks, main.t, read_csv('x')")
    assert (refused.rule, refused.position) == ("qualified-name", (1, 23))


# -- the allowed tables -----------------------------------------------------------------------------


@pytest.mark.parametrize(("sql", "position"), [
    ("SELECT * FROM secrets", (1, 15)),
    ("SELECT * FROM blocks JOIN other_org_blocks USING (block_number)", (1, 27)),
    ("SELECT (SELECT max(x) FROM hidden) FROM blocks", (1, 28)),
    ("SELECT * FROM blocks UNION ALL SELECT * FROM nope", (1, 46)),
    # a CTE binds only after it is defined, and only in its scope: these read real tables
    ("WITH a AS (SELECT * FROM b), b AS (SELECT 1 AS x) SELECT * FROM a", (1, 26)),
    ("WITH b AS (SELECT * FROM b) SELECT * FROM b", (1, 26)),
    ("SELECT * FROM (WITH s AS (SELECT 1) SELECT * FROM s) t, s", (1, 57)),
    ("SELECT * FROM pg_tables", (1, 15)),  # refused as a catalog view first
])
def test_with_allowed_tables_any_other_table_is_refused(sql: str, position: tuple[int, int]) -> None:
    refused = _refusal(sql, VIEWS)
    assert refused.rule in {"unknown-table", "system-catalog"} and refused.position == position, str(refused)


def test_unknown_table_names_the_tables_there_are() -> None:
    assert str(_refusal("SELECT * FROM secrets", ("blocks", "logs"))) == (
        "refused (unknown-table) at 1:15: secrets is not a table here; tables: blocks, logs")


def test_allowed_tables_ctes_and_case() -> None:
    sql = ('WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3), '
           'b AS (SELECT * FROM Blocks) SELECT * FROM r, b, "monad.daily_volume" d, "LOGS"')
    gated = check_sql(sql, VIEWS)
    assert gated.tables == ("Blocks", "monad.daily_volume", "LOGS")  # as spelled; CTEs are not tables
    assert check_sql("SELECT 1", ()).tables == ()
    # a name the caller allows is a view even if it looks like a catalog view or a file
    assert check_sql('SELECT * FROM pg_stats, "x.csv"', ("pg_stats", "x.csv")).tables == ("pg_stats", "x.csv")


# -- accepted ---------------------------------------------------------------------------------------

ACCEPTED = [
    "SELECT 1",
    "SELECT block_number FROM blocks WHERE block_number > 5;",
    "SELECT b.block_number, count(t.transaction_hash) AS n FROM blocks b LEFT JOIN transactions t "
    "ON t.block_number = b.block_number GROUP BY ALL ORDER BY n DESC LIMIT 10",
    "WITH per_day AS (SELECT timestamp // 86400 AS day FROM blocks) SELECT day, count(*) AS n FROM per_day "
    "GROUP BY day",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT n FROM r",
    "SELECT block_number, sum(gas_used) OVER (ORDER BY block_number ROWS BETWEEN 9 PRECEDING AND CURRENT "
    "ROW) AS gas_10, row_number() OVER (PARTITION BY miner ORDER BY block_number) AS k FROM blocks",
    "SELECT a FROM blocks QUALIFY row_number() OVER (ORDER BY block_number) = 1",
    "SELECT block_number FROM blocks UNION ALL SELECT block_number FROM transactions",
    "SELECT block_number FROM blocks INTERSECT SELECT block_number FROM logs EXCEPT SELECT 0",
    "(SELECT 1 AS x)",
    "FROM blocks",
    "FROM blocks SELECT count(*)",
    "TABLE blocks",
    'SELECT t.token, sum(t.value_f64) AS volume FROM "monad.daily_volume" AS t GROUP BY ALL',
    "SELECT * FROM range(10) r(i)",
    "SELECT * FROM generate_series(1, 10, 2)",
    "SELECT x FROM blocks, unnest([1, 2, 3]) AS u(x)",
    "SELECT unnest([1, 2]) AS x",
    "SELECT * FROM (VALUES (1, 'a'), (2, 'b')) v(n, s)",
    "SELECT * FROM blocks, LATERAL (SELECT count(*) AS n FROM logs WHERE logs.block_number = "
    "blocks.block_number)",
    "SELECT (SELECT max(block_number) FROM blocks) AS head",
    "SELECT * FROM transfers WHERE erc20 IN (SELECT address FROM labels WHERE label = 'usdc')",
    "SELECT * FROM alerts a WHERE EXISTS (SELECT 1 FROM prices p WHERE p.token = a.token)",
    "SELECT * FROM blocks ASOF JOIN prices ON blocks.timestamp >= prices.timestamp",
    "SELECT * FROM blocks WHERE block_number BETWEEN $start AND $end",
    "SELECT * FROM blocks WHERE block_number = ? OR miner = $1",
    "SELECT * FROM stake_changes PIVOT (sum(amount) FOR action IN ('delegate', 'undelegate'))",
    "SELECT COLUMNS('gas_.*') FROM blocks",
    "SELECT * EXCLUDE (timestamp) FROM blocks",
    "SELECT list_transform([1, 2], x -> x + 1) AS l, {'a': 1}.a AS s, 'x'::VARCHAR AS v, "
    "CAST(1 AS DOUBLE) AS d",
    "SELECT now() AS t, current_date AS d, today() AS day, epoch_ms(0) AS e",
    "SELECT CASE WHEN gas_used > 0 THEN 'busy' ELSE 'idle' END AS kind, count(*) AS n FROM blocks GROUP BY 1",
    "SELECT regexp_matches(label, '^0x') AS hex, lower(label) AS l, hash(label) AS h FROM labels",
    "SELECT 1 -- a comment; COPY blocks TO 'x'",
    "SELECT 1 /* ; DROP TABLE blocks; */ AS one",
    "SELECT 1 /* nested /* ; ATTACH 'x' */ still a comment */ AS one",
    "SELECT 'COPY blocks TO ''x''; ATTACH ''y''' AS text",
    "SELECT $$ ; DROP TABLE blocks $$ AS text",
    "sElEcT BlOcK_nUmBeR fRoM BlOcKs wHeRe 1 = 1",
    "SELECT '\u00a0\u2028' AS s, \"a\u3000b\" FROM blocks\x0b\x0c\r\n",  # in strings and names
    'SELECT "show", "desc" FROM blocks',
    "SELECT * FROM blocks b JOIN logs l USING (block_number) NATURAL JOIN transactions",
    "SELECT typeof(1) AS t, stats(1) AS s",
]


@pytest.mark.parametrize("sql", ACCEPTED)
def test_ordinary_queries_are_accepted_and_duckdb_reads_one_select(sql: str) -> None:
    gated = check_sql(sql, VIEWS)
    assert gated.sql == sql and {table.lower() for table in gated.tables} <= set(VIEWS)
    assert [statement.type for statement in _DUCKDB.extract_statements(sql)] == [
        duckdb.StatementType.SELECT]


def test_the_gate_says_which_tables_and_columns_are_read() -> None:
    gated = check_sql('WITH big AS (SELECT block_number, gas_used FROM "monad.blocks" WHERE gas_used > 0) '
                      "SELECT b.block_number, count(*) AS n FROM big b JOIN logs USING (block_number) "
                      "GROUP BY 1")
    assert sorted(gated.tables) == ["logs", "monad.blocks"]  # the CTE is not an input
    assert gated.tables == ("monad.blocks", "logs") and gated.positions == ((1, 49), (1, 137))
    assert not gated.every_column
    columns = ["block_number", "block_hash", "gas_used", "timestamp"]
    assert gated.columns(columns) == ["block_number", "gas_used"]
    assert check_sql("SELECT count(*) AS n FROM blocks").columns(columns) == ["block_number"]  # one, for rows
    for sql in ("SELECT * FROM blocks", "SELECT b.* FROM blocks b", "SELECT COLUMNS('gas_.*') FROM blocks",
                "SELECT x FROM blocks NATURAL JOIN logs", "SELECT b FROM blocks b",
                "SELECT * EXCLUDE (timestamp) FROM blocks"):
        assert check_sql(sql).columns(columns) == columns, sql


def test_resolve_maps_the_tables_read_to_the_names_given() -> None:
    gated = check_sql('SELECT count(*) AS n FROM "monad.blocks" JOIN Logs USING (block_number)')
    assert gated.resolve({"monad.blocks", "logs"}) == {"monad.blocks": "monad.blocks", "Logs": "logs"}
    with pytest.raises(SqlRefused) as caught:
        gated.resolve({"monad.blocks"}, among="the inputs", hint="add it")
    assert str(caught.value) == ("refused (unknown-table) at 1:47: the SQL reads 'Logs', which is not among "
                                 "the inputs (monad.blocks); add it")
    with pytest.raises(SqlRefused, match="not among the allowed tables"):
        gated.resolve({"monad.blocks", "LOGS", "logs"})  # two names equal but for case: which one?


# -- against DuckDB's own lists ---------------------------------------------------------------------


def _duckdb_names(sql: str) -> list[str]:
    return sorted({str(row[0]) for row in duckdb.connect().sql(sql).fetchall()})


def test_every_duckdb_table_function_but_range_generate_series_unnest_is_refused() -> None:
    functions = _duckdb_names("SELECT function_name FROM duckdb_functions() "
                              "WHERE function_type IN ('table', 'table_macro')")
    assert {"read_parquet", "duckdb_secrets", "query", "range", "unnest"} <= set(functions)
    for name in functions:
        if name in {"range", "generate_series", "unnest"}:
            continue
        for sql in (f"SELECT * FROM {name}()", f'SELECT * FROM "{name}"(1)',
                    f"SELECT * FROM {name}('x') AS t"):
            # sqlglot knows some by their arguments (read_csv() without a file does not parse)
            assert _refusal(sql).rule in {"table-function", "parse-error"}, sql


def test_every_duckdb_catalog_view_is_refused() -> None:
    """Those DuckDB finds without a schema (duckdb_*, pg_*, sqlite_*) by their names; the
    information_schema ones need their schema, which is refused."""
    connection = duckdb.connect()
    views = connection.sql("SELECT schema_name, view_name FROM duckdb_views() WHERE internal").fetchall()
    unqualified = 0
    for schema, name in views:
        assert _refusal(f"SELECT * FROM {schema}.{name}").rule == "qualified-name"
        try:
            connection.sql(f"SELECT * FROM {name} LIMIT 0").fetchall()
        except duckdb.Error:
            assert _refusal(f"SELECT * FROM {name}", VIEWS).rule == "unknown-table"
            continue
        unqualified += 1
        assert _refusal(f"SELECT * FROM {name}").rule == "system-catalog", name
        assert _refusal(f'SELECT * FROM "{name.upper()}"', VIEWS).rule == "system-catalog", name
    assert unqualified >= 30  # duckdb_tables, pg_tables, sqlite_master, ...


# -- random SQL -------------------------------------------------------------------------------------

_COLUMNS = ("block_number", "gas_used", "miner", "timestamp", "value")
# (not unicode spaces: after a $parameter DuckDB reads them as part of a name, and fails to parse)
_SPACES = st.sampled_from([" ", "  ", "\n", "\t", " /* ; DROP TABLE blocks */ ", " -- ; COPY\n", "\r\n"])


def _case(word: str, data: st.DataObject) -> str:
    flips = data.draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.upper() if flip else c.lower() for c, flip in zip(word, flips, strict=True))


@st.composite
def accepted_selects(draw: st.DrawFn) -> str:
    data = draw(st.data())
    gap = draw(_SPACES)

    def kw(word: str) -> str:
        return _case(word, data)

    table = draw(st.sampled_from(VIEWS))
    quoted = f'"{table}"' if "." in table or draw(st.booleans()) else table
    columns = draw(st.lists(st.sampled_from(_COLUMNS), min_size=1, max_size=3, unique=True))
    aggregate = draw(st.booleans())
    select = ", ".join(f"{kw('sum')}({c}) AS s_{c}" if aggregate else c for c in columns)
    sql = f"{kw('SELECT')}{gap}{select}{gap}{kw('FROM')}{gap}{quoted}"
    if draw(st.booleans()):
        value = draw(st.sampled_from(["$n", "?", "$1", "10", "'x'", f"({kw('SELECT')} 1)"]))
        sql += f"{gap}{kw('WHERE')}{gap}{columns[0]} {draw(st.sampled_from(['=', '>', '<>']))} {value}"
    if aggregate and draw(st.booleans()):
        sql += f"{gap}{kw('GROUP BY ALL')}"
    shape = draw(st.sampled_from(["plain", "cte", "subquery", "union", "parens"]))
    if shape == "cte":
        sql = f"{kw('WITH')} q AS ({sql}){gap}{kw('SELECT')} * {kw('FROM')} q"
    elif shape == "subquery":
        sql = f"{kw('SELECT')} * {kw('FROM')} ({sql}) AS sub"
    elif shape == "union":
        sql = f"{sql}{gap}{kw('UNION ALL')}{gap}{sql}"
    elif shape == "parens":
        sql = f"({sql})"
    return sql + draw(st.sampled_from(["", ";", " ; ", "; -- done"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(accepted_selects())
def test_random_ordinary_selects_stay_accepted(sql: str) -> None:
    gated = check_sql(sql, VIEWS)
    assert {table.lower() for table in gated.tables} <= set(VIEWS)
    assert [s.type for s in _DUCKDB.extract_statements(sql)] == [duckdb.StatementType.SELECT]


_WORDS = ["SELECT", "FROM", "WHERE", "WITH", "AS", "(", ")", ",", ";", "*", "blocks", "logs", "x", "1", "'a'",
          "'x.csv'", '"y"', '"s3://b"', "read_csv('x')", "getenv('x')", "range(3)", "COPY", "ATTACH", "SHOW",
          "DESCRIBE", "PRAGMA", "SET", "UNION", "ALL", "JOIN", "ON", "LATERAL", "VALUES", "--", "\n", "/*",
          "*/", "$$", "$x", "?", ".", "main", "=", "TABLES", "INTO", "TABLE", "CALL", "PIVOT", "USING",
          "e'\\'", "\u00a0"]


def _gate_or_refuse(sql: str) -> GatedSql | None:
    try:
        return check_sql(sql, VIEWS)
    except SqlRefused as refused:
        assert refused.rule in RULES
        return None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_WORDS), max_size=14).map(" ".join))
def test_random_statements_are_refused_or_are_one_select_to_duckdb(sql: str) -> None:
    if _gate_or_refuse(sql) is None:
        return
    try:
        kinds = [s.type for s in _DUCKDB.extract_statements(sql)]
    except duckdb.Error:
        return  # DuckDB cannot parse it either: it never runs
    assert kinds == [duckdb.StatementType.SELECT], sql


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_is_gated_or_refused_never_a_crash(sql: str) -> None:
    _gate_or_refuse(sql)


def test_absurd_nesting_is_refused_not_a_crash() -> None:
    assert _refusal("SELECT " + "(" * 5000 + "1" + ")" * 5000).rule == "parse-error"


# -- whatever the gate accepts, DuckDB's own parser reads as the gate did ----------------------------

_BASES = [
    "SELECT x , y FROM blocks WHERE x = 1",
    "SELECT * FROM blocks b JOIN logs l ON b.x = l.x",
    "WITH c AS ( SELECT x FROM blocks ) SELECT * FROM c",
    "SELECT ( SELECT max ( x ) FROM logs ) AS m FROM blocks",
    "SELECT x FROM blocks UNION ALL SELECT x FROM logs",
    "SELECT * FROM ( SELECT x FROM blocks ) t , LATERAL ( SELECT 1 ) u",
    'SELECT * FROM "monad.daily_volume" WHERE x IN ( SELECT x FROM logs )',
    "FROM blocks SELECT x",
    "SELECT * FROM range ( 3 ) r",
]
_INSERTS = [
    "SELECT", "FROM", "WITH", "AS", "(", ")", ",", ";", "*", "blocks", "x", "1", "'a'", "'", '"', "e'",
    "'x.csv'", '"y.csv"', "read_csv('x')", "read_csv", "getenv", "getenv('x')", "SHOW", "DESCRIBE", "DESC",
    "SUMMARIZE", "PIVOT", "UNPIVOT", "UNION", "JOIN", "LATERAL", "VALUES", "--", "\n", "/*", "*/", "$$", "$x",
    "$a$", "$", "?", ".", "TABLES", "TABLE", "main", "main.", "\\", "\u00a0", "\u2028", "U&", "::", "->",
    "AT", "(VERSION => 1)", "ROWS", "current_setting('x')", "query", "sqlite_master", "duckdb_tables",
    "pg_tables", "CALL", "PRAGMA", "COPY", "INTO", "t", "-- x\n", "/* ; */", "'a''b'", '"a""b"', "$$;$$",
    "$t$;$t$", "glob", "system", "memory", "TEMP"]
_VALUE_FUNCTIONS = {"range", "generate_series", "unnest"}
_FORBIDDEN = ("getenv", "current_setting", "read_", "glob", "query", "duckdb_", "pg_", "sqlite_")


def _duckdb_reads(sql: str) -> list[str] | None:
    """What DuckDB's parser finds wrong in ``sql`` by the gate's rules (None: it cannot parse it)."""
    tree = json.loads(_DUCKDB.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0])
    if tree.get("error"):
        return None
    problems = [f"{len(tree['statements'])} statements"] if len(tree["statements"]) != 1 else []
    ctes: set[str] = set()
    tables: list[dict[str, Any]] = []
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        kind = node.get("type")
        if kind == "BASE_TABLE":
            tables.append(node)
        elif kind == "TABLE_FUNCTION" and node["function"]["function_name"] not in _VALUE_FUNCTIONS:
            problems.append(f"table function {node['function']['function_name']}")
        elif kind == "SHOW_REF":
            problems.append("SHOW")
        if node.get("class") == "FUNCTION" and str(node.get("function_name")).lower().startswith(_FORBIDDEN):
            problems.append(f"function {node['function_name']}")
        ctes.update(str(entry.get("key")).lower() for entry in node.get("cte_map", {}).get("map", []))
        stack.extend(node.values())
    for table in tables:
        if table["catalog_name"] or table["schema_name"]:
            problems.append(f"qualified {table['schema_name']}.{table['table_name']}")
        elif table["table_name"].lower() not in {*VIEWS, *ctes}:
            problems.append(f"table {table['table_name']!r}")
    return problems


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_BASES), st.lists(st.tuples(st.integers(0, 40), st.sampled_from(_INSERTS)), min_size=1,
                                         max_size=3), st.sampled_from([" ", "\n", ""]), st.booleans())
def test_what_the_gate_accepts_duckdb_reads_as_one_select_over_the_views(
        base: str, edits: list[tuple[int, str]], separator: str, replace: bool) -> None:
    """Valid queries with hostile words put in or swapped in: either the gate refuses them, or
    DuckDB cannot parse them, or DuckDB's own parse tree holds one SELECT reading only the views,
    no table function but range/generate_series/unnest and no forbidden function."""
    words = base.split(" ")
    for at, word in edits:
        index = at % (len(words) + 1)
        if replace and index < len(words):
            words[index] = word
        else:
            words.insert(index, word)
    sql = separator.join(words)
    if _gate_or_refuse(sql) is None:
        return
    assert _duckdb_reads(sql) in (None, []), sql


def test_the_duckdb_oracle_sees_what_the_gate_refuses() -> None:
    found = _duckdb_reads("SELECT getenv('a') FROM (SHOW TABLES), read_csv('x'), main.b, 'x.csv'")
    assert sorted(found or []) == ["SHOW", "function getenv", "function read_csv", "qualified main.b",
                                   "table 'x.csv'", "table function read_csv"]
    assert _duckdb_reads("FROM \u2028 blocks SELECT 1") == ["table '\\u2028'"]  # the gate refuses it
    assert _duckdb_reads("SELECT ((") is None
