"""sql_transform without services: the operator's use of the kernel's SQL gate (refusals led by
``sql_transform:``; a table the task does not pin), the locked-down DuckDB run, the result cut into
Parquet files per partition, and the payload. The gate itself: tests/unit/test_sqlgate.py."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from operators.sql_transform import (
    PinnedInput,
    SqlFailed,
    TransformPayload,
    contract_name,
    read_inputs,
    result_files,
    run_sql,
    transform,
)
from tracekit.errors import ConfigError, ContractError
from tracekit.sqlgate import GatedSql, SqlRefused, check_sql

# -- the gate, as the operator uses it --------------------------------------------------------------


def test_a_refusal_names_the_operator_the_rule_and_where() -> None:
    payload = TransformPayload.parse({"config": {"sql": "COPY blocks TO '/tmp/x.csv'"}})
    with pytest.raises(SqlRefused) as caught:
        transform(None, payload, "out")  # type: ignore[arg-type]  # refused before the catalog is used
    assert str(caught.value) == ("sql_transform: refused (read-only) at 1:1: only a SELECT (or WITH ... "
                                 "SELECT) is allowed, not COPY")
    assert (caught.value.rule, caught.value.position) == ("read-only", (1, 1))
    assert isinstance(caught.value, ConfigError)  # permanent: the same SQL fails the same way


def test_an_input_the_task_does_not_pin_is_named() -> None:
    gated = check_sql('SELECT count(*) AS n FROM "monad.blocks" JOIN Logs USING (block_number)')
    pin = PinnedInput(version=1, table="chain.blocks", snapshot_id=1)
    with pytest.raises(SqlRefused) as caught:
        read_inputs(None, gated, {"monad.blocks": pin})  # type: ignore[arg-type]  # refused before reading
    assert str(caught.value) == ("sql_transform: refused (unknown-table) at 1:47: the SQL reads 'Logs', "
                                 "which is not among the task's pinned inputs (monad.blocks); list it in the "
                                 "job's inputs")
    assert caught.value.rule == "unknown-table"


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
    with pytest.raises(SqlFailed) as caught:
        run_sql(GatedSql(sql, (), frozenset(), True), {})
    assert str(caught.value).startswith("sql_transform: DuckDB: ")
    assert "\n" not in str(caught.value)


def test_duckdb_refuses_what_its_own_parser_reads_as_another_statement() -> None:
    with pytest.raises(SqlRefused) as caught:
        run_sql(GatedSql("SELECT 1; PRAGMA version", (), frozenset(), True), {})
    assert str(caught.value) == ("sql_transform: refused (one-statement): DuckDB reads the SQL as "
                                 "statement(s) SELECT, PRAGMA, not one SELECT")


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
