"""A query's rows as the user asked for them: a table for the terminal, JSON, CSV or Parquet.

Binary columns (hashes, addresses) are ``0x`` hex in JSON, CSV and the table; Parquet keeps the
bytes. Integers too large for a JSON double stay exact (JSON numbers are written as text)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

Format = Literal["table", "json", "csv", "parquet"]
FORMATS: tuple[Format, ...] = ("table", "json", "csv", "parquet")


def hex_binary(table: pa.Table) -> pa.Table:
    """``table`` with its binary columns as ``0x`` hex strings."""
    columns = []
    for column, field in zip(table.columns, table.schema, strict=True):
        if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type) \
                or pa.types.is_fixed_size_binary(field.type):
            column = pa.chunked_array([_hex(chunk) for chunk in column.chunks], pa.string())
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def _hex(chunk: pa.Array) -> pa.Array:
    values = [None if v is None else "0x" + v.hex() for v in chunk.to_pylist()]
    return pa.array(values, pa.string())


def json_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The rows as JSON-ready dicts: binary as ``0x`` hex, whole decimals (DuckDB's ``SUM`` of
    integers) as exact integers (within 64 bits), other decimals as exact strings."""
    rows: list[dict[str, Any]] = hex_binary(table).to_pylist()
    decimals = [f.name for f in table.schema if pa.types.is_decimal(f.type)]
    for row in rows:
        for name in decimals:
            value = row[name]
            if value is not None:
                whole = value == value.to_integral_value() and abs(value) < 2**63
                row[name] = int(value) if whole else str(value)  # beyond 64 bits: exact text
    return rows


def encode(table: pa.Table, fmt: Format) -> bytes:
    """The rows in ``fmt`` (not ``table``)."""
    if fmt == "json":
        return orjson.dumps(json_rows(table), default=str, option=orjson.OPT_INDENT_2) + b"\n"
    if fmt == "csv":
        sink = io.BytesIO()
        pacsv.write_csv(hex_binary(table), sink)
        return sink.getvalue()
    if fmt == "parquet":
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        return sink.getvalue()
    raise ValueError(f"no encoding for {fmt!r}")


def text_rows(table: pa.Table) -> Iterator[list[str]]:
    shown = hex_binary(table)
    for row in shown.to_pylist():
        yield ["" if value is None else str(value) for value in row.values()]


