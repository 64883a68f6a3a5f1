"""Rows read from a dataset version -> the rows of its compacted file, pure (no I/O).

:func:`sorted_rows` conforms a group of rows to the dataset's contract
(:func:`tracekit.datasets.conform`: its column order and types), checks that every row lies in
the range being compacted, and sorts them by the contract's sort order (``block_number``, then the
in-block index). :func:`check_counts` is the last word before a file is staged: the rows written
equal the rows read, which equal what the version's manifests say its files hold.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from tracekit.datasets import PARTITION_COLUMN, DatasetContract, conform
from tracekit.errors import TraceError


class CompactMismatch(TraceError):
    """The rows read or written are not the rows of the files being compacted."""


def sorted_rows(rows: pa.Table, contract: DatasetContract, first: int, last: int) -> pa.Table:
    """``rows`` conformed to ``contract`` and sorted by its sort keys (ascending, nulls first, as
    the table's sort order says); a row outside blocks ``first..last`` is a :class:`CompactMismatch`."""
    table = conform(rows, contract)
    if table.num_rows:
        blocks = table[PARTITION_COLUMN]
        low, high = pc.min_max(blocks).values()
        if low.as_py() < first or high.as_py() > last:
            raise CompactMismatch(f"{contract.name}: rows of blocks {low.as_py()}..{high.as_py()} were read "
                                  f"for the range {first}..{last}")
    return table.sort_by([(key, "ascending", "at_start") for key in contract.sort_keys])


def check_counts(dataset: str, *, expected: int, read: int, written: int) -> None:
    """The rows written equal the rows read, which equal the rows the files hold (``expected``)."""
    if read != expected:
        raise CompactMismatch(f"{dataset}: {read} rows were read, the version's files hold {expected}")
    if written != read:
        raise CompactMismatch(f"{dataset}: {written} rows were written, {read} were read")
