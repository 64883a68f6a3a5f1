"""sql_transform: a DAG job's derived dataset from one DuckDB SELECT over its input datasets.

- the gate is the kernel's :mod:`tracekit.sqlgate` (pure): the SQL is one read-only SELECT (or
  WITH ... SELECT), decided on sqlglot's parse tree; which datasets and columns it reads.
- :mod:`.payload`: the job's config (``sql``, ``sort``) and the run's pinned inputs
  (``params.inputs``: dataset id -> version, Iceberg table, snapshot id).
- :mod:`.transform` (no I/O): the SQL over Arrow tables in a locked-down in-memory DuckDB; the
  result conformed to its derived contract and cut into zstd Parquet files per partition.
- :mod:`.read` (I/O): each input read at its pinned snapshot, only the columns the SQL uses.

The worker runs it as the ``sql_transform`` operator (``dispatcher/worker/operators.py``); see
"Derived datasets" in docs/dags.md.
"""

from operators.sql_transform.payload import PinnedInput, TransformConfig, TransformParams, TransformPayload
from operators.sql_transform.read import read_input, read_inputs, transform
from operators.sql_transform.transform import (
    ResultFile,
    SqlFailed,
    contract_name,
    result_contract,
    result_files,
    run_sql,
)

__all__ = [
    "PinnedInput",
    "ResultFile",
    "SqlFailed",
    "TransformConfig",
    "TransformParams",
    "TransformPayload",
    "contract_name",
    "read_input",
    "read_inputs",
    "result_contract",
    "result_files",
    "run_sql",
    "transform",
]
