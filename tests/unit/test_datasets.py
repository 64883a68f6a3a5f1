"""Dataset contracts (schemas/datasets, tracekit/datasets.py): every bundled file loads and its Arrow
and Iceberg schemas agree; cryo's files conform; bad files, bad rows and incompatible changes are
one line naming the file and line, the column and the row. Also the catalog's connection URI."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.io.pyarrow import pyarrow_to_schema, schema_to_pyarrow
from pyiceberg.transforms import IdentityTransform, TruncateTransform
from sqlalchemy.engine import make_url

from operators.cryo_ingest import columns as cryo_columns
from tracekit.datasets import (
    DEFAULT_PARTITION_WIDTH,
    PARTITION_COLUMN,
    Column,
    DatasetContract,
    check_compatible,
    columns_of,
    conform,
    contract,
    contract_dir,
    load_contracts,
    parse_contract,
)
from tracekit.errors import ConfigError, ConformError, ContractError, SchemaChangeError
from tracekit.iceberg import catalog_uri
from tracekit.yamlfile import load_yaml

REPO = Path(__file__).resolve().parents[2]
DATASETS = ("blocks", "logs", "stake_changes", "traces", "transactions", "transfers")


# -- the bundled contracts ------------------------------------------------------------------------


def test_every_bundled_contract_loads() -> None:
    contracts = load_contracts()
    assert tuple(sorted(contracts)) == DATASETS
    for name, loaded in contracts.items():
        assert loaded.name == name and loaded.description
        assert loaded.column(PARTITION_COLUMN) == Column(PARTITION_COLUMN, "long", True, "Block number")
        assert loaded.column("chain_id").type == "long" and loaded.column("chain_id").required
        assert loaded.partition_width == DEFAULT_PARTITION_WIDTH
        assert loaded.sort_keys[0] == PARTITION_COLUMN
        assert all(loaded.column(key).required for key in loaded.unique_key)
    assert contract("logs") is contracts["logs"]


def test_unique_keys_and_sort_orders_are_the_agreed_ones() -> None:
    assert {name: c.unique_key for name, c in load_contracts().items()} == {
        "blocks": ("block_number",),
        "transactions": ("block_number", "transaction_index"),
        "logs": ("block_number", "log_index"),
        "traces": ("block_number", "transaction_index", "trace_address"),
        "transfers": ("block_number", "log_index"),
        "stake_changes": ("block_number", "log_index"),
    }
    assert all(c.sort_keys == c.unique_key for c in load_contracts().values())


def test_blocks_carry_what_integrity_checks_need() -> None:
    blocks = contract("blocks")
    assert blocks.column("parent_hash") == Column("parent_hash", "binary", True, blocks.column("parent_hash")
                                                  .description)
    assert blocks.column("n_transactions").type == "int" and blocks.column("n_transactions").required


@pytest.mark.parametrize("name", DATASETS)
def test_arrow_and_iceberg_schemas_agree(name: str) -> None:
    loaded = contract(name)
    iceberg = loaded.iceberg_schema()
    arrow = loaded.arrow_schema()
    assert arrow.names == [c.name for c in loaded.columns] == [f.name for f in iceberg.fields]
    from_arrow = pyarrow_to_schema(arrow, name_mapping=iceberg.name_mapping)
    assert [(f.name, f.field_type, f.required) for f in from_arrow.fields] == \
        [(f.name, f.field_type, f.required) for f in iceberg.fields]
    back = schema_to_pyarrow(iceberg)
    assert [(f.name, f.nullable) for f in back] == [(f.name, f.nullable) for f in arrow]
    assert iceberg.identifier_field_names() == set(loaded.unique_key)
    assert columns_of(iceberg) == loaded.columns

    (partition,) = loaded.partition_spec().fields
    assert iceberg.find_column_name(partition.source_id) == PARTITION_COLUMN
    assert partition.transform == TruncateTransform(10_000)
    order = loaded.sort_order().fields
    assert [iceberg.find_column_name(f.source_id) for f in order] == list(loaded.sort_keys)
    assert all(f.transform == IdentityTransform() for f in order)


def test_types_follow_the_iceberg_rules() -> None:
    """No unsigned types exist: block numbers and quantities are long, hashes binary, a uint256 an
    exact decimal string beside its double."""
    for loaded in load_contracts().values():
        for column in loaded.columns:
            is_bytes = column.name.endswith(("_hash", "_address")) and column.name != "trace_address"
            if is_bytes or column.name in ("address", "erc20"):
                assert column.type == "binary", (loaded.name, column.name)
            if column.name.endswith("_string"):
                assert loaded.column(column.name.removesuffix("_string") + "_f64").type == "double"
            if column.name in ("block_number", "timestamp", "gas_used", "nonce", "chain_id"):
                assert column.type == "long", (loaded.name, column.name)


def _sample(data_type: pa.DataType) -> Any:
    if pa.types.is_integer(data_type):
        return 7
    if pa.types.is_floating(data_type):
        return 1.5
    if pa.types.is_boolean(data_type):
        return True
    if pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type):
        return b"\x01" * 20
    return "1"


@pytest.mark.parametrize("name", sorted(cryo_columns.SCHEMAS))
def test_cryo_files_conform_to_their_contract(name: cryo_columns.Dataset) -> None:
    """Every column cryo writes (operators/cryo_ingest/columns.py) is in the contract, and a table
    of cryo's own types (uint32, uint64, large_binary, large_string) conforms once the columns
    cryo does not write are added."""
    loaded = contract(name)
    cryo = cryo_columns.SCHEMAS[name]
    assert set(cryo.names) <= {c.name for c in loaded.columns}
    rows = {field.name: pa.array([_sample(field.type)] * 3, field.type) for field in cryo}
    for column in loaded.columns:
        if column.name not in rows:
            rows[column.name] = pa.array([_sample(loaded.arrow_schema().field(column.name).type)] * 3,
                                         loaded.arrow_schema().field(column.name).type)
    conformed = conform(pa.table(rows), loaded)
    assert conformed.schema == loaded.arrow_schema()
    assert conformed.num_rows == 3 and conformed.column(PARTITION_COLUMN).to_pylist() == [7, 7, 7]


def test_the_wheel_ships_the_contracts_where_the_loader_looks() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    included = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert included["schemas/datasets"] == "tracekit/_schemas/datasets"
    assert contract_dir() == REPO / "schemas" / "datasets"


# -- conform ---------------------------------------------------------------------------------------


def _blocks(**overrides: pa.Array) -> pa.Table:
    n = 3
    columns: dict[str, pa.Array] = {
        "block_number": pa.array([10, 11, 12], pa.uint32()),
        "block_hash": pa.array([b"h" * 32] * n, pa.large_binary()),
        "parent_hash": pa.array([b"p" * 32] * n, pa.large_binary()),
        "author": pa.array([None] * n, pa.null()),
        "gas_used": pa.array([21_000] * n, pa.uint64()),
        "extra_data": pa.array([b""] * n, pa.large_binary()),
        "timestamp": pa.array([1_700_000_000] * n, pa.uint32()),
        "base_fee_per_gas": pa.array([7, None, 9], pa.uint64()),
        "n_transactions": pa.array([0, 1, 2], pa.uint64()),
        "chain_id": pa.array([10143] * n, pa.uint64()),
    }
    columns.update(overrides)
    return pa.table(columns)


def test_conform_casts_cryo_types_and_keeps_values() -> None:
    blocks = contract("blocks")
    conformed = conform(_blocks().select(list(reversed(_blocks().column_names))), blocks)
    assert conformed.schema == blocks.arrow_schema()
    assert conformed.column("block_number").type == pa.int64()
    assert conformed.column("n_transactions").type == pa.int32()
    assert conformed.column("block_hash").type == pa.binary()
    assert conformed.column("author").to_pylist() == [None, None, None]  # an all-null column takes the type
    assert conformed.column("base_fee_per_gas").to_pylist() == [7, None, 9]


def test_conform_takes_dictionary_encoded_strings() -> None:
    logs_like = contract("traces")
    rows = {c.name: pa.array([_sample(logs_like.arrow_schema().field(c.name).type)],
                             logs_like.arrow_schema().field(c.name).type) for c in logs_like.columns}
    rows["action_type"] = pa.array(["call"]).dictionary_encode()
    assert conform(pa.table(rows), logs_like).column("action_type").to_pylist() == ["call"]


@pytest.mark.parametrize(("column", "values", "message"), [
    ("gas_used", pa.array([1, 2**63, 3], pa.uint64()),
     "blocks: column 'gas_used': row 1 holds 9223372036854775808, which does not fit long"),
    ("n_transactions", pa.array([0, 1, 2**31], pa.uint64()),
     "blocks: column 'n_transactions': row 2 holds 2147483648, which does not fit int"),
    ("n_transactions", pa.array([0, -(2**31) - 1, 1], pa.int64()),
     "blocks: column 'n_transactions': row 1 holds -2147483649, which does not fit int"),
    ("block_hash", pa.array([b"h", None, b"h"], pa.large_binary()),
     "blocks: column 'block_hash' is required, but row 1 is null"),
    ("timestamp", pa.array(["1", "2", "3"]),
     "blocks: column 'timestamp' is string, which cannot become long"),
    ("block_hash", pa.array(["a", "b", "c"]),
     "blocks: column 'block_hash' is string, which cannot become binary"),
    ("base_fee_per_gas", pa.array([1.0, 2.0, 3.0]),
     "blocks: column 'base_fee_per_gas' is double, which cannot become long"),
])
def test_conform_refuses_what_does_not_fit_naming_column_and_row(column: str, values: pa.Array,
                                                                 message: str) -> None:
    with pytest.raises(ConformError) as caught:
        conform(_blocks(**{column: values}), contract("blocks"))
    assert str(caught.value).startswith(message)


def test_conform_refuses_missing_and_extra_columns() -> None:
    with pytest.raises(ConformError) as caught:
        conform(_blocks().drop_columns(["parent_hash", "n_transactions"]), contract("blocks"))
    assert str(caught.value) == "blocks: missing column(s) parent_hash, n_transactions"
    with pytest.raises(ConformError) as caught:
        conform(_blocks(size=pa.array([1, 2, 3])), contract("blocks"))
    assert str(caught.value) == "blocks: column(s) size not in the contract"


# -- compatibility ---------------------------------------------------------------------------------

BASE = (Column("block_number", "long", True), Column("log_index", "int", True), Column("data", "binary"),
        Column("ratio", "float"))


def _with(*changes: Column, drop: tuple[str, ...] = ()) -> list[Column]:
    by_name = {c.name: c for c in BASE if c.name not in drop}
    by_name.update({c.name: c for c in changes})
    return list(by_name.values())


def test_the_same_schema_is_no_change_whatever_the_order() -> None:
    assert check_compatible(BASE, list(reversed(BASE))).empty


def test_compatible_changes() -> None:
    change = check_compatible(BASE, _with(Column("topic", "binary"), Column("log_index", "long", True),
                                          Column("ratio", "double"), Column("block_number", "long")))
    assert change.added == (Column("topic", "binary"),)
    assert change.widened == (Column("log_index", "long", True), Column("ratio", "double"))
    assert change.relaxed == (Column("block_number", "long"),)


@pytest.mark.parametrize(("new", "message"), [
    (_with(drop=("data",)), "column 'data' is gone (dropped or renamed)"),
    (_with(Column("payload", "binary"), drop=("data",)), "column 'data' is gone (dropped or renamed)"),
    (_with(Column("block_number", "int", True)), "column 'block_number' changes type long -> int"),
    (_with(Column("data", "string")), "column 'data' changes type binary -> string"),
    (_with(Column("data", "binary", True)), "column 'data' becomes required"),
    (_with(Column("topic", "binary", True)), "new column 'topic' is required"),
])
def test_incompatible_changes_name_the_column(new: list[Column], message: str) -> None:
    with pytest.raises(SchemaChangeError) as caught:
        check_compatible(BASE, new, dataset="chain.logs")
    assert str(caught.value).startswith("chain.logs: incompatible schema change: ")
    assert message in str(caught.value)


def test_every_committed_version_of_a_contract_evolves_into_the_current_one() -> None:
    """A contract file may only change in ways the table takes in place (fails without git)."""
    for name in DATASETS:
        path = f"schemas/datasets/{name}.yaml"
        commits = subprocess.run(["git", "log", "--format=%H", "--", path], cwd=REPO, check=True,
                                 capture_output=True, text=True).stdout.split()
        current = contract(name)
        assert commits or (REPO / ".git").exists(), "no git history to check the contracts against"
        for commit in commits:
            text = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=REPO, check=True,
                                  capture_output=True, text=True).stdout
            old = parse_contract(load_yaml(text, f"{commit[:8]}:{path}"))
            check_compatible(old.columns, current.columns, dataset=name)
            assert old.partition_width == current.partition_width


# -- contract files --------------------------------------------------------------------------------

GOOD = """\
name: logs
description: Event logs.
partition_width: 1000
sort: [block_number, log_index]
unique_key: [block_number, log_index]
columns:
  - {name: block_number, type: long, required: true}
  - {name: log_index, type: int, required: true}
  - {name: data, type: binary}
"""


def _load(tmp_path: Path, text: str, file: str = "logs.yaml") -> DatasetContract:
    directory = tmp_path / "contracts"
    directory.mkdir(exist_ok=True)
    (directory / file).write_text(text, encoding="utf-8")
    return load_contracts(directory)[file.removesuffix(".yaml")]


def test_a_contract_file_in_full(tmp_path: Path) -> None:
    loaded = _load(tmp_path, GOOD)
    assert loaded == DatasetContract("logs", "Event logs.", (
        Column("block_number", "long", True), Column("log_index", "int", True), Column("data", "binary")),
        1000, ("block_number", "log_index"), ("block_number", "log_index"))


@pytest.mark.parametrize(("old", "new", "line", "reason"), [
    ("  - {name: data, type: binary}", "  - {name: data, type: bytes}", 9,
     "columns[2].type: Input should be 'boolean', 'int', 'long', 'float', 'double', 'string' or 'binary'"),
    ("  - {name: data, type: binary}", "  - {name: data, type: binary, nullable: true}", 9,
     "columns[2].nullable: Extra inputs are not permitted"),
    ("  - {name: data, type: binary}", "  - {name: data, type: binary, required: yes}", 9,
     "columns[2].required: Input should be a valid boolean"),
    ("  - {name: data, type: binary}", "  - {name: log_index, type: binary}", 9,
     "columns[2].name: column 'log_index' is listed twice"),
    ("  - {name: data, type: binary}", "  - {name: Data, type: binary}", 9,
     "columns[2].name: column name 'Data' is not snake_case (a-z, 0-9, _)"),
    ("sort: [block_number, log_index]", "sort: [block_number, topic0]", 4,
     "sort[1]: sort names 'topic0', which is not a column"),
    ("sort: [block_number, log_index]", "sort: [log_index, block_number]", 4,
     "sort[0]: sort must start with 'block_number'"),
    ("unique_key: [block_number, log_index]", "unique_key: [block_number, data]", 5,
     "unique_key[1]: unique_key column 'data' must be required"),
    ("partition_width: 1000", "partition_width: 0", 3, "partition_width: partition_width must be at least 1"),
    ("name: logs", "name: events", 1, "name: name 'events' differs from the file name 'logs'"),
    ("description: Event logs.\n", "", 1, "description: Field required"),
    ("{name: block_number, type: long", "{name: block_number, type: int",
     6, "columns: needs a required long column 'block_number' (the partition key)"),
    ("partition_width: 1000", "partition_width: 1000\nsort: [block_number]", 5,
     "sort: duplicate key 'sort' (first on line 4)"),
])
def test_a_bad_contract_file_is_one_line_with_file_and_line(tmp_path: Path, old: str, new: str, line: int,
                                                            reason: str) -> None:
    assert old in GOOD
    with pytest.raises(ContractError) as caught:
        _load(tmp_path, GOOD.replace(old, new))
    path = tmp_path / "contracts" / "logs.yaml"
    assert str(caught.value).startswith(f"{path}:{line}: {reason}")
    assert "\n" not in str(caught.value)


def test_invalid_yaml_and_empty_directories_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, "name: [logs\n")
    assert str(caught.value).startswith(f"{tmp_path / 'contracts' / 'logs.yaml'}:2: invalid YAML")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ContractError, match=r"no dataset contracts \(\*\.yaml\) in "):
        load_contracts(tmp_path / "empty")


def test_an_unknown_dataset_names_the_known_ones() -> None:
    with pytest.raises(ContractError) as caught:
        contract("balances")
    assert str(caught.value) == ("unknown dataset 'balances' (known: blocks, logs, stake_changes, traces, "
                                 "transactions, transfers)")


def test_a_contract_built_in_code_follows_the_same_rules() -> None:
    columns = (Column("block_number", "long", True), Column("x", "string"))
    assert DatasetContract("t", "d", columns).unique_key == ("block_number",)
    with pytest.raises(ContractError, match="dataset t: unique_key column 'x' must be required"):
        DatasetContract("t", "d", columns, unique_key=("block_number", "x"))
    with pytest.raises(ContractError, match="dataset t: column 'x' has an unknown type 'uint64'"):
        DatasetContract("t", "d", (columns[0], Column("x", "uint64")))


# -- the catalog's connection ----------------------------------------------------------------------


def test_the_catalog_connects_with_psycopg_and_the_iceberg_search_path() -> None:
    url = make_url(catalog_uri("postgresql://trace:p%40ss@db.internal:5433/trace?sslmode=require"
                               "&options=-cstatement_timeout%3D5s"))
    assert (url.drivername, url.username, url.password, url.host, url.port, url.database) == \
        ("postgresql+psycopg", "trace", "p@ss", "db.internal", 5433, "trace")
    assert dict(url.query) == {"sslmode": "require",
                               "options": "-cstatement_timeout=5s -csearch_path=iceberg"}
    assert make_url(catalog_uri("postgres://postgres@127.0.0.1:5432/postgres")).query == \
        {"options": "-csearch_path=iceberg"}
    with pytest.raises(ConfigError, match="not a postgresql://"):
        catalog_uri("mysql://root@localhost/db")
