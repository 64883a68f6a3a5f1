"""Pure planning of reorg-correct hot-table writes from decoded records (no I/O).

A topic of one chain carries its records (blocks; or transfers / stake changes, each block's
closed by a ``trace.enrich.BlockEnd``) and the chain's ``trace.chain.Reorg`` events, in chain
order. A batch becomes an ordered list of operations: runs of records written together, with each
reorg as a barrier between runs. Within a run each height holds the records of one block: a record
with another block hash at that height means the height was replaced (the earlier block's records
leave the run), and a record seen twice at the same place in its block keeps the last copy.
Applied in order, any number of times, the operations leave the tables equal to the chain the
records describe: the writer deletes stored rows at a run's heights whose hash differs (so every
block must put a record on the topic, rows or not: that is what ``BlockEnd`` is for), and a
reorg's orphaned rows by hash.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tracekit.names import REORG

Record = dict[str, Any]
Row = tuple[Any, ...]
Named = tuple[str, Record]  # (record full name, datum)


class InvalidEvent(ValueError):
    """A decoded record that cannot be applied (wrong type or chain, inconsistent content)."""


@dataclass(frozen=True, slots=True)
class HotTable:
    """A table in schema ``hot`` keyed by ``(chain_id, block_number, ...)`` with a ``block_hash``."""

    name: str
    columns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TableSet:
    """The hot tables one sink writes, and how one of its records becomes rows of them.

    ``rows(name, record)`` gives one sequence of rows per table, in the order of ``tables`` (none
    for a record that only names its block). ``item(name, record)`` is the record's place within
    its block: of two records of a block with the same place, the later one is written.
    """

    tables: tuple[HotTable, ...]
    rows: Callable[[str, Record], Sequence[Sequence[Row]]]
    item: Callable[[str, Record], Hashable]


def one_row(record_name: str, columns: tuple[str, ...]) -> Callable[[str, Record], Sequence[Sequence[Row]]]:
    """``rows`` of a one-table set: a ``record_name`` record is one row of its fields of the
    columns' names; any other record (a block's end) is none."""

    def rows(name: str, record: Record) -> tuple[list[Row]]:
        return ([tuple(record[c] for c in columns)] if name == record_name else [],)

    return rows


@dataclass(frozen=True, slots=True)
class WriteRun:
    """Records written together (with their names): per height, those of one block."""

    records: tuple[Named, ...]


@dataclass(frozen=True, slots=True)
class ApplyReorg:
    reorg: Record


Op = WriteRun | ApplyReorg


def check_record(chain_id: int, name: str, datum: Record, *, expected: tuple[str, ...], topic: str) -> None:
    """Reject a record that is not ``expected`` nor a reorg, or of another chain, naming why."""
    if name not in (*expected, REORG):
        raise InvalidEvent(f"unexpected record type {name} on the {topic} topic")
    if datum.get("chain_id") != chain_id:
        raise InvalidEvent(f"event for chain {datum.get('chain_id')} on chain {chain_id}'s topic")
    if name == REORG and len(datum["orphaned_numbers"]) != len(datum["orphaned_hashes"]):
        raise InvalidEvent("reorg lists a different number of orphaned heights and hashes")


def plan(events: Iterable[Named], item: Callable[[str, Record], Hashable]) -> list[Op]:
    """Runs of records between reorg barriers (see the module docstring)."""
    ops: list[Op] = []
    run: dict[int, tuple[str, dict[Hashable, Named]]] = {}

    def close_run() -> None:
        if run:
            ops.append(WriteRun(tuple(r for _, records in run.values() for r in records.values())))
            run.clear()

    for name, datum in events:
        if name == REORG:
            close_run()
            ops.append(ApplyReorg(datum))
            continue
        number, block_hash = int(datum["block_number"]), str(datum["block_hash"])
        held = run.pop(number, None)  # re-inserted last: heights keep their latest arrival order
        records = held[1] if held is not None and held[0] == block_hash else {}
        key = item(name, datum)
        records.pop(key, None)
        records[key] = (name, datum)
        run[number] = (block_hash, records)
    close_run()
    return ops


def staged_rows(tables: TableSet, records: Iterable[Named]) -> list[list[Row]]:
    """The rows of ``records``, one list per table of ``tables``."""
    staged: list[list[Row]] = [[] for _ in tables.tables]
    for name, record in records:
        for rows, table_rows in zip(staged, tables.rows(name, record), strict=True):
            rows.extend(table_rows)
    return staged


def run_heights(records: Iterable[Named]) -> list[tuple[int, int, str]]:
    """``(chain_id, block_number, block_hash)`` of the blocks a run writes, each once."""
    return list(dict.fromkeys(
        (int(r["chain_id"]), int(r["block_number"]), str(r["block_hash"])) for _, r in records
    ))


def reorg_targets(reorg: Record) -> tuple[int, Sequence[int], Sequence[str]]:
    return int(reorg["chain_id"]), list(reorg["orphaned_numbers"]), list(reorg["orphaned_hashes"])
