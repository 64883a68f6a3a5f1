"""Read a task's pinned inputs from the Iceberg catalog, and run the whole transformation.

Each input is read at exactly its pinned snapshot (never ``main``: a version cut over, or one
staged, while the run goes on does not change what it reads), with only the columns the SQL may
use (:meth:`tracekit.sqlgate.GatedSql.columns`).
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
from pyiceberg.catalog import Catalog

from operators.sql_transform.payload import PinnedInput, TransformPayload
from operators.sql_transform.transform import OPERATOR, ResultFile, result_files, run_sql
from tracekit.errors import CatalogError, ObjectNotFound, ObjectStoreError, ObjectStoreUnavailable
from tracekit.iceberg import DatasetTable
from tracekit.sqlgate import GatedSql, SqlRefused, check_sql

_OUTAGE_WORDS = ("NETWORK_CONNECTION", "curlCode", "Connection refused", "timed out", "SERVICE_UNAVAILABLE",
                 "SLOW_DOWN", "INTERNAL_FAILURE")


def read_input(catalog: Catalog, dataset_id: str, pin: PinnedInput, gated: GatedSql) -> pa.Table:
    """The rows of ``pin``'s snapshot, with the columns ``gated`` may use."""
    where = (f"{OPERATOR}: input {dataset_id!r} ({pin.table} version {pin.version}, "
             f"snapshot {pin.snapshot_id})")
    table = DatasetTable(catalog, pin.identifier).table()  # a missing table: one CatalogError line
    if table.snapshot_by_id(pin.snapshot_id) is None:
        raise CatalogError(f"{where}: the table has no such snapshot (expired, or the pin is wrong)")
    columns = gated.columns([field.name for field in table.schema().fields])
    try:
        return table.scan(snapshot_id=pin.snapshot_id, selected_fields=tuple(columns)).to_arrow()
    except FileNotFoundError as exc:
        raise ObjectNotFound(f"{where}: no object {exc.filename or exc}") from exc
    except OSError as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        error = ObjectStoreUnavailable if any(word in text for word in _OUTAGE_WORDS) else ObjectStoreError
        raise error(f"{where}: object store: {text}") from exc


def read_inputs(catalog: Catalog, gated: GatedSql, pins: Mapping[str, PinnedInput]) -> dict[str, pa.Table]:
    """Each table the SQL reads (as it spells it) -> its pinned rows; a table no pin names is an
    ``unknown-table`` :class:`~tracekit.sqlgate.SqlRefused` naming it."""
    try:
        named = gated.resolve(pins, among="the task's pinned inputs", hint="list it in the job's inputs")
    except SqlRefused as exc:
        raise exc.about(OPERATOR) from exc
    return {table: read_input(catalog, dataset_id, pins[dataset_id], gated)
            for table, dataset_id in named.items()}


def transform(catalog: Catalog, payload: TransformPayload, output: str) -> list[ResultFile]:
    """The task: gate the SQL, read its pinned inputs, run it, cut the result into ``output``'s
    files. Errors are one line: :class:`~tracekit.sqlgate.SqlRefused` (the rule the SQL broke, and
    where) and :class:`~operators.sql_transform.transform.SqlFailed` (permanent
    :class:`~tracekit.errors.ConfigError`), catalog and object-store errors."""
    try:
        gated = check_sql(payload.config.sql)
    except SqlRefused as exc:
        raise exc.about(OPERATOR) from exc
    inputs = read_inputs(catalog, gated, payload.params.inputs)
    result = run_sql(gated, inputs)
    return result_files(output, result, payload.config.sort)
