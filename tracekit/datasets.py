"""Dataset contracts: what each chain dataset's table holds, kept as files in ``schemas/datasets``.

A contract (:class:`DatasetContract`) names a dataset's columns (cryo's names), their Iceberg
types and nullability, the partition width (Iceberg ``truncate[W](block_number)``: one partition
per ``W`` blocks), the sort order and the unique key. It gives the same table three ways:
:meth:`~DatasetContract.arrow_schema` (what writers produce), :meth:`~DatasetContract.iceberg_schema`
with :meth:`~DatasetContract.partition_spec` and :meth:`~DatasetContract.sort_order` (what the
catalog holds).

:func:`conform` casts a writer's Arrow table (cryo's ``uint32``/``uint64``/``large_binary``...) to
the contract, refusing a value that does not fit, a null in a required column, or a missing or
extra column, naming it. :func:`check_compatible` tells a schema change the table can take in
place (a new optional column, ``int`` -> ``long``, ``float`` -> ``double``, required -> optional)
from one it cannot (a dropped, renamed or narrowed column).

:func:`derived_contract` makes the contract of a derived dataset (what a DAG job's SQL produces)
from its Arrow schema: partitioned like the chain datasets when it has a ``block_number`` column,
else one unpartitioned table.

The files are read from ``<repo>/schemas/datasets`` in a source checkout and from
``tracekit/_schemas/datasets`` inside an installed wheel (see ``pyproject.toml``).
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Final, Literal, get_args

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table.sorting import UNSORTED_SORT_ORDER, NullOrder, SortDirection, SortField, SortOrder
from pyiceberg.transforms import IdentityTransform, TruncateTransform
from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DoubleType,
    FloatType,
    IcebergType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
)

from tracekit.errors import ConformError, ContractError, SchemaChangeError
from tracekit.yamlfile import YamlDoc, load_yaml, read_yaml

ColumnType = Literal["boolean", "int", "long", "float", "double", "string", "binary"]
COLUMN_TYPES: Final[tuple[ColumnType, ...]] = get_args(ColumnType)
PARTITION_COLUMN: Final = "block_number"
DEFAULT_PARTITION_WIDTH: Final = 10_000
PARTITION_FIELD_ID: Final = 1000  # Iceberg numbers partition fields from 1000
WIDENINGS: Final = frozenset({("int", "long"), ("float", "double")})  # Iceberg's type promotions

_ARROW: Final[dict[str, pa.DataType]] = {
    "boolean": pa.bool_(), "int": pa.int32(), "long": pa.int64(), "float": pa.float32(),
    "double": pa.float64(), "string": pa.string(), "binary": pa.binary(),
}
_ICEBERG: Final[dict[str, IcebergType]] = {
    "boolean": BooleanType(), "int": IntegerType(), "long": LongType(), "float": FloatType(),
    "double": DoubleType(), "string": StringType(), "binary": BinaryType(),
}
_INT_RANGE: Final = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Column:
    """One column: cryo's name, an Iceberg type name, whether it may be null, what it holds."""

    name: str
    type: str  # one of COLUMN_TYPES; a table read from the catalog may hold others
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class DatasetContract:
    """A dataset's table: columns, partition width on ``block_number``, sort keys, unique key.

    ``partitioned=False`` (a derived dataset without ``block_number``): one unpartitioned table,
    ``partition_width`` unused. A contract made in code may have no sort keys or unique key (a
    derived dataset); a contract file names both."""

    name: str
    description: str
    columns: tuple[Column, ...]
    partition_width: int = DEFAULT_PARTITION_WIDTH
    sort_keys: tuple[str, ...] = (PARTITION_COLUMN,)
    unique_key: tuple[str, ...] = (PARTITION_COLUMN,)
    partitioned: bool = True

    def __post_init__(self) -> None:
        problem = _contract_problem(self.name, self.columns, self.partition_width, self.sort_keys,
                                    self.unique_key, partitioned=self.partitioned, keyed=False)
        if problem is not None:
            raise ContractError(f"dataset {self.name}: {problem[1]}")

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    def arrow_schema(self) -> pa.Schema:
        """What a writer's Parquet file holds: ``int64``, ``int32``, ``binary``, ``string``..., a
        required column not nullable."""
        return pa.schema([pa.field(c.name, _ARROW[c.type], nullable=not c.required) for c in self.columns])

    def iceberg_schema(self) -> Schema:
        """The Iceberg schema: field ids 1.. in column order, the unique key as identifier fields."""
        fields = [NestedField(field_id=i, name=c.name, field_type=_ICEBERG[c.type], required=c.required,
                              doc=c.description or None)
                  for i, c in enumerate(self.columns, start=1)]
        ids = self._field_ids()
        return Schema(*fields, identifier_field_ids=[ids[name] for name in self.unique_key])

    def partition_spec(self) -> PartitionSpec:
        """``truncate[partition_width](block_number)``: a partition is a fixed block range (none
        when not :attr:`partitioned`)."""
        if not self.partitioned:
            return UNPARTITIONED_PARTITION_SPEC
        return PartitionSpec(PartitionField(
            source_id=self._field_ids()[PARTITION_COLUMN], field_id=PARTITION_FIELD_ID,
            transform=TruncateTransform(self.partition_width), name=partition_field_name()))

    def sort_order(self) -> SortOrder:
        """Ascending on the sort keys (``block_number``, then the in-block index); unsorted
        without sort keys."""
        if not self.sort_keys:
            return UNSORTED_SORT_ORDER
        ids = self._field_ids()
        return SortOrder(*[SortField(source_id=ids[name], transform=IdentityTransform(),
                                     direction=SortDirection.ASC, null_order=NullOrder.NULLS_FIRST)
                           for name in self.sort_keys])

    def _field_ids(self) -> dict[str, int]:
        return {c.name: i for i, c in enumerate(self.columns, start=1)}


def partition_field_name() -> str:
    return f"{PARTITION_COLUMN}_trunc"


def _contract_problem(name: str, columns: Sequence[Column], width: int, sort_keys: Sequence[str],
                      unique_key: Sequence[str], *, partitioned: bool = True,
                      keyed: bool = True) -> tuple[tuple[str | int, ...], str] | None:
    """The first rule a contract breaks, as ``(location in its file, reason)``, or None. A
    partitioned contract needs ``block_number`` (required long) and sorts by it first; ``keyed``
    (contract files): sort and unique key are not empty."""
    if not _NAME.fullmatch(name):
        return ("name",), f"name {name!r} is not snake_case (a-z, 0-9, _)"
    if not columns:
        return ("columns",), "no columns"
    seen: dict[str, int] = {}
    for i, column in enumerate(columns):
        if not _NAME.fullmatch(column.name):
            return ("columns", i, "name"), f"column name {column.name!r} is not snake_case (a-z, 0-9, _)"
        if column.name in seen:
            return ("columns", i, "name"), f"column {column.name!r} is listed twice"
        if column.type not in COLUMN_TYPES:
            return ("columns", i, "type"), f"column {column.name!r} has an unknown type {column.type!r}"
        seen[column.name] = i
    by_name = {c.name: c for c in columns}
    key = by_name.get(PARTITION_COLUMN)
    if partitioned and (key is None or key.type != "long" or not key.required):
        return ("columns",), f"needs a required long column {PARTITION_COLUMN!r} (the partition key)"
    if width < 1:
        return ("partition_width",), f"partition_width must be at least 1, not {width}"
    for field, names in (("sort", sort_keys), ("unique_key", unique_key)):
        if keyed and not names:
            return (field,), f"{field} is empty"
        for i, column_name in enumerate(names):
            if column_name not in by_name:
                return (field, i), f"{field} names {column_name!r}, which is not a column"
            if column_name in names[:i]:
                return (field, i), f"{field} names {column_name!r} twice"
    if partitioned and sort_keys and sort_keys[0] != PARTITION_COLUMN:
        return ("sort", 0), f"sort must start with {PARTITION_COLUMN!r}"
    for i, column_name in enumerate(unique_key):
        if not by_name[column_name].required:
            return ("unique_key", i), f"unique_key column {column_name!r} must be required"
    return None


# ---------------------------------------------------------------------------- contract files


class _ColumnFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str
    type: ColumnType
    required: bool = False
    description: str = ""


class _ContractFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str
    description: str = Field(min_length=1)
    partition_width: int = DEFAULT_PARTITION_WIDTH
    sort: list[str]
    unique_key: list[str]
    columns: list[_ColumnFile] = Field(min_length=1)


def _where(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_contract(doc: YamlDoc, expected_name: str | None = None) -> DatasetContract:
    """The contract in ``doc``; one ``FILE:LINE: where: reason`` :class:`ContractError` if bad."""

    def fail(loc: Sequence[str | int], message: str) -> ContractError:
        return ContractError(f"{doc.source}:{doc.line(loc)}: {_where(loc)}: {message}")

    if doc.issues:
        issue = doc.issues[0]
        raise ContractError(f"{doc.source}:{issue.line}: {_where(issue.loc)}: {issue.message}")
    if not isinstance(doc.data, dict):
        raise ContractError(f"{doc.source}:1: a dataset contract is a mapping with name, description, "
                            "partition_width, sort, unique_key and columns")
    try:
        parsed = _ContractFile.model_validate(doc.data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise fail(tuple(first["loc"]), first["msg"]) from exc
    if expected_name is not None and parsed.name != expected_name:
        raise fail(("name",), f"name {parsed.name!r} differs from the file name {expected_name!r}")
    columns = tuple(Column(c.name, c.type, c.required, c.description) for c in parsed.columns)
    problem = _contract_problem(parsed.name, columns, parsed.partition_width, parsed.sort, parsed.unique_key)
    if problem is not None:
        raise fail(*problem)
    return DatasetContract(parsed.name, " ".join(parsed.description.split()), columns,
                           parsed.partition_width, tuple(parsed.sort), tuple(parsed.unique_key))


def contract_dir() -> Traversable:
    """``<repo>/schemas/datasets`` in a checkout, else ``tracekit/_schemas/datasets`` from the wheel."""
    source = Path(__file__).resolve().parents[1] / "schemas" / "datasets"
    if source.is_dir():
        return source
    return importlib.resources.files("tracekit") / "_schemas" / "datasets"


def load_contracts(directory: Traversable | None = None) -> Mapping[str, DatasetContract]:
    """Every ``<dataset>.yaml`` of ``directory`` (default: the bundled contracts, loaded once)."""
    if directory is None:
        return _default_contracts()
    return _load(directory)


@functools.cache
def _default_contracts() -> Mapping[str, DatasetContract]:
    return _load(contract_dir())


def _load(directory: Traversable) -> Mapping[str, DatasetContract]:
    if not directory.is_dir():
        raise ContractError(f"dataset contract directory {directory} does not exist")
    contracts: dict[str, DatasetContract] = {}
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        if isinstance(entry, Path):
            doc = read_yaml(entry)
        else:
            doc = load_yaml(entry.read_text(encoding="utf-8"), str(entry))
        loaded = parse_contract(doc, expected_name=entry.name.removesuffix(".yaml"))
        contracts[loaded.name] = loaded
    if not contracts:
        raise ContractError(f"no dataset contracts (*.yaml) in {directory}")
    return contracts


def contract(name: str) -> DatasetContract:
    """The bundled contract of dataset ``name``; :class:`ContractError` naming the known ones."""
    contracts = load_contracts()
    try:
        return contracts[name]
    except KeyError:
        raise ContractError(f"unknown dataset {name!r} (known: {', '.join(sorted(contracts))})") from None


# --------------------------------------------------------------------------- derived datasets


def _derived_type(data_type: pa.DataType) -> ColumnType | None:
    """The contract type of an Arrow type a derived dataset's rows may have, None if none fits."""
    if pa.types.is_dictionary(data_type):
        return _derived_type(data_type.value_type)
    if pa.types.is_int8(data_type) or pa.types.is_int16(data_type) or pa.types.is_int32(data_type) \
            or pa.types.is_uint8(data_type) or pa.types.is_uint16(data_type):
        return "int"
    if pa.types.is_int64(data_type) or pa.types.is_uint32(data_type) or pa.types.is_uint64(data_type):
        return "long"  # a uint64 value above the long range is refused by conform, naming the row
    if pa.types.is_float32(data_type):
        return "float"
    if pa.types.is_float64(data_type):
        return "double"
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type) \
            or pa.types.is_string_view(data_type) or pa.types.is_decimal(data_type):
        return "string"  # a decimal as its exact text: no contract type holds it losslessly
    if pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type) \
            or pa.types.is_fixed_size_binary(data_type) or pa.types.is_binary_view(data_type):
        return "binary"
    if pa.types.is_boolean(data_type):
        return "boolean"
    return None


def derived_contract(name: str, arrow_schema: pa.Schema, *, unique_key: Sequence[str] = (),
                     sort: Sequence[str] = (), description: str = "") -> DatasetContract:
    """The contract of a derived dataset whose rows have ``arrow_schema`` (what a job's SQL gave).

    Types: int8/16/32 and uint8/16 -> ``int``; int64, uint32 and uint64 -> ``long``; float32 ->
    ``float``; float64 -> ``double``; (large) string -> ``string``; (large, fixed-size) binary ->
    ``binary``; bool -> ``boolean``; a decimal (DuckDB's ``SUM`` of integers, a ``1.5`` literal)
    -> ``string``, its exact text (cast it to ``BIGINT`` or ``DOUBLE`` in the SQL for a number);
    dictionaries as their values. Any other type (dates, timestamps, lists, structs, null) is a
    :class:`ContractError` naming the column and the type.

    With a ``block_number`` column (of any integer type; it becomes a required ``long``) the table
    is partitioned by ``truncate[10000](block_number)`` and sorted by ``block_number`` first (the
    default sort); without one it is unpartitioned. ``unique_key`` columns are required, the others
    optional. Rules as for every contract (snake_case names, keys naming columns)."""
    columns: list[Column] = []
    partitioned = PARTITION_COLUMN in arrow_schema.names
    for arrow_field in arrow_schema:
        column_type = _derived_type(arrow_field.type)
        if arrow_field.name == PARTITION_COLUMN and column_type is not None:
            column_type = "long" if column_type in ("int", "long") else None
        if column_type is None:
            what = "but the partition key must be an integer" if arrow_field.name == PARTITION_COLUMN else \
                "which no dataset column type holds (cast it to BIGINT, DOUBLE, VARCHAR, BLOB or BOOLEAN)"
            raise ContractError(f"dataset {name}: column {arrow_field.name!r} has type {arrow_field.type}, "
                                f"{what}")
        required = arrow_field.name in unique_key or (partitioned and arrow_field.name == PARTITION_COLUMN)
        columns.append(Column(arrow_field.name, column_type, required))
    sort_keys = tuple(sort) or ((PARTITION_COLUMN,) if partitioned else ())
    return DatasetContract(name, description or f"Derived dataset {name}.", tuple(columns),
                           sort_keys=sort_keys, unique_key=tuple(unique_key), partitioned=partitioned)


# ----------------------------------------------------------------------------- conform rows


def _kind_fits(source: pa.DataType, target: str) -> bool:
    if pa.types.is_null(source):
        return True
    if target in ("int", "long"):
        return bool(pa.types.is_integer(source))
    if target in ("float", "double"):
        return bool(pa.types.is_floating(source))
    if target == "string":  # a decimal as its exact text (derived datasets)
        return bool(pa.types.is_string(source) or pa.types.is_large_string(source)
                    or pa.types.is_string_view(source) or pa.types.is_decimal(source))
    if target == "binary":
        return bool(pa.types.is_binary(source) or pa.types.is_large_binary(source)
                    or pa.types.is_fixed_size_binary(source) or pa.types.is_binary_view(source))
    return target == "boolean" and bool(pa.types.is_boolean(source))


def _conform_column(data: pa.ChunkedArray, column: Column, dataset: str) -> pa.ChunkedArray:
    where = f"{dataset}: column {column.name!r}"
    if pa.types.is_dictionary(data.type):
        data = data.cast(data.type.value_type)
    if not _kind_fits(data.type, column.type):
        raise ConformError(f"{where} is {data.type}, which cannot become {column.type}")
    if column.type in _INT_RANGE and not pa.types.is_null(data.type):
        low, high = _INT_RANGE[column.type]
        extremes = pc.min_max(data)
        for bad in (extremes["min"].as_py(), extremes["max"].as_py()):
            if bad is not None and not low <= bad <= high:
                row = pc.index(data, pa.scalar(bad, data.type)).as_py()
                raise ConformError(f"{where}: row {row} holds {bad}, which does not fit {column.type} "
                                   f"({low}..{high})")
    try:
        cast = data.cast(_ARROW[column.type], safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ConformError(f"{where}: cannot cast {data.type} to {column.type}: {exc}") from exc
    if column.required and cast.null_count:
        row = pc.index(cast.is_null(), True).as_py()
        raise ConformError(f"{where} is required, but row {row} is null")
    return cast


def conform(table: pa.Table, contract: DatasetContract) -> pa.Table:
    """``table`` with exactly the contract's columns, in its order and types (:meth:`arrow_schema`).

    Integers of any width and sign become ``int``/``long`` when every value fits; ``large_binary``
    and ``large_string`` become ``binary``/``string``; an all-null column takes the contract's type.
    A missing or extra column, a value that does not fit, or a null in a required column is a
    :class:`ConformError` naming the column (and the row)."""
    names = table.column_names
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConformError(f"{contract.name}: column {twice[0]!r} appears twice")
    wanted = [c.name for c in contract.columns]
    missing = [n for n in wanted if n not in names]
    extra = [n for n in names if n not in wanted]
    if missing or extra:
        parts = ([f"missing column(s) {', '.join(missing)}"] if missing else []) + \
                ([f"column(s) {', '.join(extra)} not in the contract"] if extra else [])
        raise ConformError(f"{contract.name}: {'; '.join(parts)}")
    arrays = [_conform_column(table.column(c.name), c, contract.name) for c in contract.columns]
    return pa.Table.from_arrays(arrays, schema=contract.arrow_schema())


# ------------------------------------------------------------------------- schema evolution


@dataclass(frozen=True)
class SchemaChange:
    """What a compatible change does to the table: new optional columns, widened types, columns
    that become optional. Empty when the schemas agree."""

    added: tuple[Column, ...] = ()
    widened: tuple[Column, ...] = ()  # with their new type
    relaxed: tuple[Column, ...] = ()  # now optional

    @property
    def empty(self) -> bool:
        return not (self.added or self.widened or self.relaxed)


def check_compatible(old: Sequence[Column], new: Sequence[Column], *,
                     dataset: str = "dataset") -> SchemaChange:
    """The change from ``old`` to ``new`` when existing rows and files stay readable under ``new``;
    else a :class:`SchemaChangeError` naming every column at fault (dropped or renamed, narrowed
    or otherwise retyped, made required, or added as required). Column order does not matter."""
    by_name = {c.name: c for c in new}
    problems: list[str] = []
    widened: list[Column] = []
    relaxed: list[Column] = []
    for before in old:
        after = by_name.get(before.name)
        if after is None:
            problems.append(f"column {before.name!r} is gone (dropped or renamed)")
            continue
        if after.type != before.type:
            if (before.type, after.type) in WIDENINGS:
                widened.append(after)
            else:
                problems.append(f"column {before.name!r} changes type {before.type} -> {after.type} "
                                "(only int -> long and float -> double are allowed)")
        if after.required and not before.required:
            problems.append(f"column {before.name!r} becomes required (existing rows may be null)")
        elif before.required and not after.required:
            relaxed.append(after)
    known = {c.name for c in old}
    added = tuple(c for c in new if c.name not in known)
    problems += [f"new column {c.name!r} is required (existing rows have no value; add it as optional)"
                 for c in added if c.required]
    if problems:
        raise SchemaChangeError(f"{dataset}: incompatible schema change: {'; '.join(problems)}")
    return SchemaChange(added, tuple(widened), tuple(relaxed))


def columns_of(schema: Schema) -> tuple[Column, ...]:
    """The top-level columns of an Iceberg schema (type names as Iceberg prints them)."""
    return tuple(Column(f.name, str(f.field_type), f.required, f.doc or "") for f in schema.fields)


def iceberg_type(name: str) -> IcebergType:
    """The Iceberg type of a contract type name."""
    return _ICEBERG[name]
