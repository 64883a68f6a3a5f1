"""Contracts of derived datasets (tracekit.datasets.derived_contract): Arrow types -> contract
types, partitioned by block range with a block_number column and unpartitioned without, a type no
column holds named; their Iceberg schema, partition spec and sort order; conform."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC
from pyiceberg.transforms import TruncateTransform

from tracekit.datasets import Column, DatasetContract, check_compatible, conform, derived_contract
from tracekit.errors import ContractError, SchemaChangeError


@pytest.mark.parametrize(("arrow_type", "column_type"), [
    (pa.int8(), "int"), (pa.int16(), "int"), (pa.int32(), "int"), (pa.uint8(), "int"), (pa.uint16(), "int"),
    (pa.int64(), "long"), (pa.uint32(), "long"), (pa.uint64(), "long"),
    (pa.float32(), "float"), (pa.float64(), "double"),
    (pa.string(), "string"), (pa.large_string(), "string"), (pa.string_view(), "string"),
    (pa.decimal128(38, 0), "string"), (pa.decimal128(10, 2), "string"),
    (pa.binary(), "binary"), (pa.large_binary(), "binary"), (pa.binary(20), "binary"),
    (pa.bool_(), "boolean"), (pa.dictionary(pa.int32(), pa.string()), "string"),
])
def test_arrow_types_map_to_contract_types(arrow_type: pa.DataType, column_type: str) -> None:
    made = derived_contract("x", pa.schema([("value", arrow_type)]))
    assert made.columns == (Column("value", column_type, False),)


@pytest.mark.parametrize("arrow_type", [pa.date32(), pa.timestamp("us"), pa.list_(pa.int64()), pa.null(),
                                        pa.struct([("a", pa.int64())]), pa.duration("s")])
def test_a_type_no_column_holds_is_named_with_its_column(arrow_type: pa.DataType) -> None:
    with pytest.raises(ContractError) as caught:
        derived_contract("daily", pa.schema([("ok", pa.int64()), ("day", arrow_type)]))
    assert str(caught.value).startswith(
        f"dataset daily: column 'day' has type {arrow_type}, which no dataset column type holds (cast it to "
        "BIGINT, DOUBLE, VARCHAR, BLOB or BOOLEAN)")


def test_with_block_numbers_it_is_partitioned_by_block_range() -> None:
    schema = pa.schema([("block_number", pa.int32()), ("token", pa.binary()), ("volume", pa.float64())])
    made = derived_contract("token_volume", schema, unique_key=["block_number", "token"])
    assert made.partitioned
    assert made.columns == (Column("block_number", "long", True), Column("token", "binary", True),
                            Column("volume", "double", False))
    assert made.sort_keys == ("block_number",) and made.unique_key == ("block_number", "token")
    (partition,) = made.partition_spec().fields
    assert partition.transform == TruncateTransform(10_000)
    iceberg = made.iceberg_schema()
    assert iceberg.find_column_name(partition.source_id) == "block_number"
    assert iceberg.identifier_field_names() == {"block_number", "token"}
    with pytest.raises(ContractError, match="column 'block_number' has type string, but the partition key "
                                            "must be an integer"):
        derived_contract("x", pa.schema([("block_number", pa.string())]))
    with pytest.raises(ContractError, match="sort must start with 'block_number'"):
        derived_contract("x", schema, sort=["token"])


def test_without_block_numbers_it_is_unpartitioned_and_may_have_no_keys() -> None:
    made = derived_contract("daily", pa.schema([("day", pa.int64()), ("volume", pa.decimal128(38, 0))]))
    assert not made.partitioned
    assert made.partition_spec() == UNPARTITIONED_PARTITION_SPEC
    assert made.sort_keys == () and made.unique_key == () and made.sort_order().is_unsorted
    assert made.iceberg_schema().identifier_field_names() == set()
    sorted_made = derived_contract("daily", pa.schema([("day", pa.int64())]), sort=["day"],
                                   unique_key=["day"])
    assert [f.source_id for f in sorted_made.sort_order().fields] == [1]
    assert sorted_made.column("day").required


def test_names_and_keys_follow_the_contract_rules() -> None:
    with pytest.raises(ContractError, match="column name 'sum\\(x\\)' is not snake_case"):
        derived_contract("x", pa.schema([("sum(x)", pa.int64())]))
    with pytest.raises(ContractError, match="unique_key names 'nope', which is not a column"):
        derived_contract("x", pa.schema([("a", pa.int64())]), unique_key=["nope"])
    with pytest.raises(ContractError, match="name 'Daily' is not snake_case"):
        derived_contract("Daily", pa.schema([("a", pa.int64())]))


def test_a_chain_contract_still_needs_its_block_number_and_keys() -> None:
    columns = (Column("block_number", "long", True), Column("x", "string"))
    assert DatasetContract("t", "d", columns).partitioned
    with pytest.raises(ContractError, match="needs a required long column 'block_number'"):
        DatasetContract("t", "d", (Column("x", "string"),), sort_keys=(), unique_key=())
    assert not DatasetContract("t", "d", (Column("x", "string"),), sort_keys=(), unique_key=(),
                               partitioned=False).partitioned


def test_rows_conform_to_a_derived_contract() -> None:
    rows = pa.table({"block_number": pa.array([3, 1], pa.int32()),
                     "volume": pa.array([10**30, None], pa.decimal128(38, 0)),
                     "n": pa.array([1, 2], pa.uint32())})
    made = derived_contract("x", rows.schema)
    conformed = conform(rows, made)
    assert conformed.schema == made.arrow_schema()
    assert conformed.to_pylist() == [{"block_number": 3, "volume": str(10**30), "n": 1},
                                     {"block_number": 1, "volume": None, "n": 2}]


def test_a_later_schema_change_is_checked_as_for_chain_datasets() -> None:
    before = derived_contract("x", pa.schema([("day", pa.int64()), ("n", pa.int32())]))
    after = derived_contract("x", pa.schema([("day", pa.int64()), ("n", pa.int64()), ("m", pa.float64())]))
    change = check_compatible(before.columns, after.columns, dataset="x")
    assert change.widened == (Column("n", "long"),) and change.added == (Column("m", "double"),)
    with pytest.raises(SchemaChangeError, match="column 'n' is gone"):
        check_compatible(after.columns, derived_contract("x", pa.schema([("day", pa.int64())])).columns,
                         dataset="x")
