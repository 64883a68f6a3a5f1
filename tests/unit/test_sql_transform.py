"""sql_transform without services: the SQL gate (one SELECT / WITH ... SELECT, decided on the parse
tree; every other statement refused and named), which tables and columns a query reads, the
locked-down DuckDB run, the result cut into Parquet files per partition, and the payload."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from operators.sql_transform import (
    SqlFailed,
    SqlRefused,
    TransformPayload,
    check_sql,
    contract_name,
    result_files,
    run_sql,
)
from tracekit.errors import ConfigError, ContractError

# -- the gate ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("sql", [
    "SELECT 1",
    "SELECT block_number FROM blocks WHERE block_number > 5;",
    "WITH per_day AS (SELECT timestamp // 86400 AS day FROM blocks) SELECT day, count(*) AS n FROM per_day "
    "GROUP BY day",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT n FROM r",
    "SELECT block_number FROM blocks UNION ALL SELECT block_number FROM transactions",
    "(SELECT 1 AS x)",
    "FROM blocks",
    'SELECT t.token, sum(t.value_f64) AS volume FROM "monad.transfers" AS t GROUP BY ALL',
    'SELECT * FROM "chain-a.blocks" b JOIN "chain-a.logs" l USING (block_number)',
    "SELECT a FROM blocks QUALIFY row_number() OVER (ORDER BY block_number) = 1",
    "SELECT 1 -- a comment; COPY blocks TO 'x'",
    "SELECT 'COPY blocks TO ''x''; ATTACH ''y''' AS text",
])
def test_one_select_or_with_passes(sql: str) -> None:
    assert check_sql(sql).sql == sql


@pytest.mark.parametrize(("sql", "named"), [
    ("COPY blocks TO '/tmp/x.csv'", "not COPY"),
    ("ATTACH '/tmp/x.db' AS x", "not ATTACH"),
    ("DETACH x", "not DETACH"),
    ("INSTALL httpfs", "not INSTALL"),
    ("LOAD httpfs", "not LOAD"),
    ("PRAGMA version", "not PRAGMA"),
    ("SET memory_limit = '100GB'", "not SET"),
    ("RESET memory_limit", "not RESET"),
    ("CREATE TABLE t AS SELECT 1", "not CREATE"),
    ("CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 's')", "not CREATE"),
    ("INSERT INTO blocks SELECT * FROM blocks", "not INSERT"),
    ("UPDATE blocks SET gas_used = 0", "not UPDATE"),
    ("DELETE FROM blocks", "not DELETE"),
    ("DROP TABLE blocks", "not DROP"),
    ("ALTER TABLE blocks ADD COLUMN x INT", "not ALTER"),
    ("DESCRIBE blocks", "not DESCRIBE"),
    ("SHOW TABLES", "not SHOW"),
    ("SUMMARIZE blocks", "not SUMMARIZE"),
    ("EXPLAIN SELECT 1", "not EXPLAIN"),
    ("CALL pragma_version()", "not CALL"),
    ("USE memory", "not USE"),
    ("CHECKPOINT", "not CHECKPOINT"),
    ("WITH x AS (SELECT 1) INSERT INTO blocks SELECT * FROM x", "not INSERT"),
])
def test_every_other_statement_is_refused_and_named(sql: str, named: str) -> None:
    with pytest.raises(SqlRefused) as caught:
        check_sql(sql)
    message = str(caught.value)
    assert message.startswith("sql_transform: only a SELECT (or WITH ... SELECT) is allowed, ")
    assert named in message and "\n" not in message
    assert isinstance(caught.value, ConfigError)  # permanent: the same SQL fails the same way


@pytest.mark.parametrize(("sql", "message"), [
    ("SELECT 1; SELECT 2", "the SQL holds 2 statements (SELECT, SELECT); give one SELECT"),
    ("SELECT 1; COPY blocks TO 'x'", "the SQL holds 2 statements (SELECT, COPY); give one SELECT"),
    ("", "the SQL holds no statement; give one SELECT"),
    ("-- only a comment", "the SQL holds no statement; give one SELECT"),
    ("SELEC 1", "the SQL does not parse: "),
    ("SELECT * FROM read_parquet('/etc/x.parquet')", "table function READ_PARQUET('/etc/x.parquet') is not "
                                                     "allowed"),
    ("SELECT * FROM read_csv('/etc/passwd')", "table function "),
    ("SELECT * FROM range(10)", "table function "),
    ("SELECT * FROM monad.blocks", 'table monad.blocks is qualified by a schema; a dataset id with dots is '
                                   'quoted: "monad.blocks"'),
])
def test_bad_sql_is_one_line_naming_the_problem(sql: str, message: str) -> None:
    with pytest.raises(SqlRefused) as caught:
        check_sql(sql)
    assert str(caught.value).startswith(f"sql_transform: {message}")
    assert "\n" not in str(caught.value)


def test_the_gate_says_which_tables_and_columns_are_read() -> None:
    gated = check_sql('WITH big AS (SELECT block_number, gas_used FROM "monad.blocks" WHERE gas_used > 0) '
                      "SELECT b.block_number, count(*) AS n FROM big b JOIN logs USING (block_number) "
                      "GROUP BY 1")
    assert sorted(gated.tables) == ["logs", "monad.blocks"]  # the CTE is not an input
    assert not gated.every_column
    columns = ["block_number", "block_hash", "gas_used", "timestamp"]
    assert gated.columns(columns) == ["block_number", "gas_used"]
    assert check_sql("SELECT count(*) AS n FROM blocks").columns(columns) == ["block_number"]  # one, for rows
    for sql in ("SELECT * FROM blocks", "SELECT b.* FROM blocks b", "SELECT COLUMNS('gas_.*') FROM blocks",
                "SELECT x FROM blocks NATURAL JOIN logs", "SELECT b FROM blocks b",
                "SELECT * EXCLUDE (timestamp) FROM blocks"):
        assert check_sql(sql).columns(columns) == columns, sql


def test_an_input_the_task_does_not_pin_is_named() -> None:
    gated = check_sql('SELECT count(*) AS n FROM "monad.blocks" JOIN Logs USING (block_number)')
    assert gated.pinned({"monad.blocks", "logs"}) == {"monad.blocks": "monad.blocks", "Logs": "logs"}
    with pytest.raises(SqlRefused) as caught:
        gated.pinned({"monad.blocks"})
    assert str(caught.value) == ("sql_transform: the SQL reads 'Logs', which the task does not pin (pinned "
                                 "inputs: monad.blocks); list it in the job's inputs")


# -- the DuckDB run ---------------------------------------------------------------------------------


def blocks(first: int, last: int) -> pa.Table:
    numbers = list(range(first, last + 1))
    return pa.table({"block_number": pa.array(numbers, pa.int64()),
                     "gas_used": pa.array([n * 10 for n in numbers], pa.int64()),
                     "n_transactions": pa.array([n % 3 for n in numbers], pa.int32()),
                     "block_hash": pa.array([n.to_bytes(32, "big") for n in numbers], pa.large_binary())})


def test_the_sql_runs_over_the_inputs_by_their_dataset_ids() -> None:
    gated = check_sql('SELECT count(*) AS n, sum(gas_used) AS gas, avg(n_transactions) AS mean '
                      'FROM "monad.blocks" WHERE block_number >= 5')
    result = run_sql(gated, {"monad.blocks": blocks(0, 9)})
    assert result.to_pylist() == [{"n": 5, "gas": 350, "mean": (2 + 0 + 1 + 2 + 0) / 5}]


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM 'x.parquet'",
])
def test_duckdb_has_no_file_access_whatever_gets_past_the_gate(sql: str) -> None:
    """Run around the gate on purpose: DuckDB itself refuses to touch files."""
    from operators.sql_transform.gate import GatedSql

    with pytest.raises(SqlFailed) as caught:
        run_sql(GatedSql(sql, (), frozenset(), True), {})
    assert str(caught.value).startswith("sql_transform: DuckDB: ")
    assert "\n" not in str(caught.value)


def test_duckdb_refuses_what_its_own_parser_reads_as_another_statement() -> None:
    from operators.sql_transform.gate import GatedSql

    with pytest.raises(SqlRefused, match="DuckDB reads the SQL as statement"):
        run_sql(GatedSql("SELECT 1; PRAGMA version", (), frozenset(), True), {})


def test_a_duckdb_error_is_one_line_with_duckdbs_message() -> None:
    with pytest.raises(SqlFailed) as caught:
        run_sql(check_sql("SELECT no_such_column FROM blocks"), {"blocks": blocks(0, 1)})
    assert str(caught.value).startswith('sql_transform: DuckDB: Binder Error: Referenced column '
                                        '"no_such_column" not found')
    assert "\n" not in str(caught.value) and isinstance(caught.value, ConfigError)


# -- the result as files ----------------------------------------------------------------------------


def _read(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data))


def test_a_result_with_block_numbers_is_one_file_per_partition() -> None:
    result = run_sql(check_sql("SELECT block_number, gas_used * 2 AS gas2, block_hash FROM blocks "
                               "WHERE block_number % 2 = 0"), {"blocks": blocks(9_990, 20_003)})
    files = result_files("monad.block_gas", result)
    assert [(f.name, f.block_start, f.block_end) for f in files] == [
        ("monad.block_gas__00000000_to_00009999.parquet", 9_990, 9_998),
        ("monad.block_gas__00010000_to_00019999.parquet", 10_000, 19_998),
        ("monad.block_gas__00020000_to_00029999.parquet", 20_000, 20_002)]
    assert sum(f.rows for f in files) == result.num_rows
    first = _read(files[0].data)
    assert first.column("block_number").to_pylist() == [9_990, 9_992, 9_994, 9_996, 9_998]
    assert first.column("gas2").to_pylist() == [n * 20 for n in range(9_990, 9_999, 2)]
    block_field = first.schema.field("block_number")
    assert block_field.type == pa.int64() and not block_field.nullable
    assert first.schema.field("block_hash").type == pa.binary()
    assert pq.ParquetFile(io.BytesIO(files[0].data)).metadata.row_group(0).column(0).compression == "ZSTD"


def test_a_result_without_block_numbers_is_one_file_without_a_block_range() -> None:
    result = run_sql(check_sql("SELECT n_transactions AS kind, count(*) AS blocks, sum(gas_used) AS gas "
                               "FROM blocks GROUP BY 1"), {"blocks": blocks(0, 29)})
    (only,) = result_files("daily", result, sort=["kind"])
    assert (only.name, only.block_start, only.block_end, only.rows) == ("daily.parquet", None, None, 3)
    table = _read(only.data)
    assert table.column("kind").to_pylist() == [0, 1, 2]  # sorted
    # DuckDB's SUM of integers is a HUGEINT (a decimal in Arrow): kept exact, as text
    assert table.schema.field("gas").type == pa.string()
    assert table.column("gas").to_pylist() == [str(sum(n * 10 for n in range(k, 30, 3))) for k in range(3)]


def test_an_empty_result_is_one_empty_file() -> None:
    result = run_sql(check_sql("SELECT block_number FROM blocks WHERE false"), {"blocks": blocks(0, 3)})
    (only,) = result_files("x", result)
    assert (only.rows, only.block_start, only.block_end) == (0, None, None)
    assert _read(only.data).num_rows == 0


def test_a_result_a_dataset_cannot_hold_is_named() -> None:
    with pytest.raises(ContractError, match=r"column 'day' has type date32\[day\], which no dataset column "):
        result_files("x", run_sql(check_sql("SELECT DATE '2024-01-01' AS day"), {}))
    with pytest.raises(ContractError, match="column name 'count_star\\(\\)' is not snake_case"):
        result_files("x", run_sql(check_sql("SELECT count(*) FROM blocks"), {"blocks": blocks(0, 1)}))
    with pytest.raises(ConfigError, match="sort names 'nope', which the SQL's result does not have"):
        result_files("x", run_sql(check_sql("SELECT 1 AS a"), {}), sort=["nope"])
    with pytest.raises(ContractError, match="sort must start with 'block_number'"):
        result_files("x", run_sql(check_sql("SELECT 1::BIGINT AS block_number, 2 AS a"), {}), sort=["a"])


def test_contract_names_of_dataset_ids() -> None:
    assert contract_name("monad.daily_volume") == "daily_volume"
    assert contract_name("Daily-Volume") == "daily_volume"
    assert contract_name("7days") == "d_7days"


# -- the payload ------------------------------------------------------------------------------------


def test_the_payload_carries_the_config_and_the_pinned_inputs() -> None:
    payload = TransformPayload.parse({
        "config": {"sql": "SELECT 1", "sort": ["a"]},
        "params": {"inputs": {"monad.blocks": {"version": 3, "table": "chain.blocks", "snapshot_id": 42}},
                   "other": 1},
        "event": {"x": 1},
    })
    pin = payload.params.inputs["monad.blocks"]
    assert (pin.version, pin.identifier, pin.snapshot_id) == (3, ("chain", "blocks"), 42)
    assert payload.config.sort == ("a",)
    with pytest.raises(ConfigError, match=r"^sql_transform: bad task payload at config.sql"):
        TransformPayload.parse({"config": {"sql": ""}})
    with pytest.raises(ConfigError, match=r"^sql_transform: bad task payload at config.engine"):
        TransformPayload.parse({"config": {"sql": "SELECT 1", "engine": "x"}})
    with pytest.raises(ConfigError, match=r"^sql_transform: bad task payload at params.inputs.b.table"):
        TransformPayload.parse({"config": {"sql": "SELECT 1"}, "params": {
            "inputs": {"b": {"version": 1, "table": "blocks", "snapshot_id": 1}}}})
