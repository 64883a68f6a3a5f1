"""Integrity checks that gate a cutover: pure rules over the rows of a candidate's block range.

:func:`check_range` takes the rows a run's new versions hold in its block range ``first..last``
(``blocks``, and when the run wrote them ``transactions``, ``logs`` and others) and the blocks
just outside it (``first - 1`` and ``last + 1``, as the version it continues holds them), and
names every problem it finds:

- ``blocks``: every block number of the range once: no gap (``gap``), and each block's
  ``parent_hash`` is the hash of the block before it, inside the range and to its neighbours
  (``parent hash``);
- every dataset: no two rows share the contract's unique key (``duplicate key``);
- ``transactions``: as many rows per block as its header's ``n_transactions`` (``transaction
  count``); ``logs``: no log of a transaction the block does not have (``log transaction``).

:func:`check_node` compares the rows at a few heights (:func:`sample_heights`, the same for a
rerun of the same version) with what the node says (``node``): block hash, parent hash,
transaction count and the number of logs its receipts hold. The caller fetches the node's
blocks (:mod:`dispatcher.datasets.node`) and reads the rows; this module does no I/O.

A problem names the dataset, the check and where: ``blocks: gap: blocks 120..129 missing``. Each
check lists at most :data:`LISTED` instances per dataset and counts the rest, so a reason stays
short whatever the range.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

BLOCK: Final = "block_number"
LISTED: Final = 10  # instances of one check listed per dataset; the rest are counted
DEFAULT_SAMPLES: Final = 5
_NEEDS: Final[Mapping[str, tuple[str, ...]]] = {
    "blocks": ("block_hash", "parent_hash", "n_transactions"),
    "logs": ("transaction_index",),
}


@dataclass(frozen=True, slots=True)
class Problem:
    """What a check found wrong, and where."""

    dataset: str
    check: str  # gap, parent hash, duplicate key, transaction count, log transaction, node
    where: str

    def __str__(self) -> str:
        return f"{self.dataset}: {self.check}: {self.where}"


@dataclass(frozen=True, slots=True)
class IntegrityConfig:
    """How much to check: ``samples`` heights compared with the node of the run's chain, when
    ``rpc_urls`` (chain id -> JSON-RPC URL) has one."""

    samples: int = DEFAULT_SAMPLES
    rpc_urls: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NodeBlock:
    """A block as the node has it; ``n_logs`` when its logs were asked for."""

    number: int
    block_hash: bytes
    parent_hash: bytes
    n_transactions: int
    n_logs: int | None = None


def reason(problems: Sequence[Problem]) -> str:
    """The problems as one line."""
    return "; ".join(str(p) for p in problems)


def columns_needed(dataset: str, unique_key: Sequence[str]) -> list[str]:
    """The columns the checks read of ``dataset``."""
    return list(dict.fromkeys((BLOCK, *unique_key, *_NEEDS.get(dataset, ()))))


def check_range(first: int, last: int, rows: Mapping[str, pa.Table], unique_keys: Mapping[str, Sequence[str]],
                *, neighbours: pa.Table | None = None) -> list[Problem]:
    """The problems of ``rows`` (dataset -> its rows in blocks ``first..last``, at least the
    :func:`columns_needed`); ``neighbours``: the blocks at ``first - 1`` and ``last + 1`` the
    range continues, if any. ``unique_keys``: each dataset's contract unique key."""
    problems: list[Problem] = []
    blocks = rows.get("blocks")
    if blocks is not None:
        problems += _gaps(blocks, first, last)
        problems += _links(blocks, first, last, neighbours)
    for dataset in sorted(rows, key=lambda d: (d != "blocks", d != "transactions", d != "logs", d)):
        problems += _duplicates(dataset, rows[dataset], unique_keys[dataset])
        if blocks is not None and dataset == "transactions":
            problems += _transaction_counts(blocks, rows[dataset])
        if blocks is not None and dataset == "logs":
            problems += _log_transactions(blocks, rows[dataset])
    return problems


def sample_heights(first: int, last: int, n: int, *, seed: int) -> list[int]:
    """``n`` distinct heights of ``first..last`` (all of them if fewer), the same for a seed."""
    size = last - first + 1
    if n <= 0 or size <= 0:
        return []
    chooser = random.Random(seed)  # a reproducible sample, not a secret
    return sorted(chooser.sample(range(first, last + 1), min(n, size)))


def check_node(rows: Mapping[str, pa.Table], node: Mapping[int, NodeBlock | None]) -> list[Problem]:
    """The disagreements of ``rows`` with the node's blocks at the heights of ``node`` (None: the
    node has no such block). A height without a row is the gap check's to report."""
    heights = sorted(node)
    problems: list[Problem] = []
    blocks = rows.get("blocks")
    if blocks is not None:
        ours = {r[BLOCK]: r for r in _at(blocks, heights).to_pylist()}
        for h in heights:
            differs = _differs(h, ours.get(h), node[h])
            if differs is not None:
                problems.append(Problem("blocks", "node", differs))
    logs = rows.get("logs")
    if logs is not None:
        counts = {r[BLOCK]: r["count_all"] for r in
                  _at(logs, heights).group_by(BLOCK).aggregate([([], "count_all")]).to_pylist()}
        for h in heights:
            theirs = node[h]
            if theirs is not None and theirs.n_logs is not None and counts.get(h, 0) != theirs.n_logs:
                problems.append(Problem("logs", "node", f"block {h} has {counts.get(h, 0)} rows, the node's "
                                                        f"receipts have {theirs.n_logs} logs"))
    return problems


def _differs(h: int, row: Mapping[str, Any] | None, theirs: NodeBlock | None) -> str | None:
    if theirs is None:
        return f"the node has no block {h}"
    if row is None:
        return None
    if row["block_hash"] != theirs.block_hash:
        return f"block {h}'s hash is {_hex(row['block_hash'])}, the node's is {_hex(theirs.block_hash)}"
    if row["parent_hash"] != theirs.parent_hash:
        return (f"block {h}'s parent hash is {_hex(row['parent_hash'])}, "
                f"the node's is {_hex(theirs.parent_hash)}")
    if row["n_transactions"] != theirs.n_transactions:
        return f"block {h} has n_transactions={row['n_transactions']}, the node's has {theirs.n_transactions}"
    return None


# ------------------------------------------------------------------------------- the checks


def _gaps(blocks: pa.Table, first: int, last: int) -> list[Problem]:
    present = blocks[BLOCK].cast(pa.int64())  # chunks as read: combining them copies for nothing
    if len(present) and not _within(present, first, last):
        present = present.filter(pc.and_(pc.greater_equal(present, first), pc.less_equal(present, last)))
    if not _ascending(present):
        present = present.take(pc.sort_indices(present))
    # a number present twice is a step of 0: only steps > 1 are gaps, so no need to deduplicate
    numbers = pa.chunked_array([pa.array([first - 1], pa.int64()), *present.chunks,
                                pa.array([last + 1], pa.int64())], pa.int64())
    steps = pc.subtract(numbers.slice(1), numbers.slice(0, len(numbers) - 1))
    found = pc.indices_nonzero(pc.greater(steps, 1)).to_pylist()
    listed = [Problem("blocks", "gap", _missing(numbers[i].as_py() + 1, numbers[i + 1].as_py() - 1))
              for i in found[:LISTED]]
    return _counted(listed, len(found), "blocks", "gap")


def _links(blocks: pa.Table, first: int, last: int, neighbours: pa.Table | None) -> list[Problem]:
    columns = [BLOCK, "block_hash", "parent_hash"]
    chain = blocks.select(columns)
    outside = chain.slice(0, 0)
    if neighbours is not None:
        outside = neighbours.select(columns).cast(chain.schema)
        outside = outside.filter(pc.is_in(outside[BLOCK], pa.array([first - 1, last + 1], pa.int64())))
    chain = _in_block_order(chain, outside, first, last)
    if chain.num_rows < 2:
        return []
    numbers, hashes, parents = (chain[c] for c in columns)
    n = chain.num_rows
    adjacent = pc.equal(pc.subtract(numbers.slice(1), numbers.slice(0, n - 1)), 1)
    broken = pc.and_(adjacent, pc.not_equal(parents.slice(1), hashes.slice(0, n - 1)))
    found = pc.indices_nonzero(broken).to_pylist()

    def named(i: int) -> str:
        number = numbers[i].as_py()
        return f"block {number}" + ("" if first <= number <= last else " (current version)")

    listed = [Problem("blocks", "parent hash", f"{named(i + 1)} has parent {_hex(parents[i + 1].as_py())}, "
                                               f"but {named(i)}'s hash is {_hex(hashes[i].as_py())}")
              for i in found[:LISTED]]
    return _counted(listed, len(found), "blocks", "parent hash")


def _duplicates(dataset: str, rows: pa.Table, key: Sequence[str]) -> list[Problem]:
    if rows.num_rows == 0 or _strictly_ascending(rows, key):  # keys in ascending order: none twice
        return []
    counted = rows.select(list(key)).group_by(list(key)).aggregate([([], "count_all")])
    twice = counted.filter(pc.greater(counted["count_all"], 1)).sort_by([(k, "ascending") for k in key])
    listed = [Problem(dataset, "duplicate key", ", ".join(f"{k}={_text(r[k])}" for k in key)
                      + f" ({r['count_all']} rows)") for r in twice.slice(0, LISTED).to_pylist()]
    return _counted(listed, twice.num_rows, dataset, "duplicate key")


def _transaction_counts(blocks: pa.Table, transactions: pa.Table) -> list[Problem]:
    joined = _with_counts(_headers(blocks), _per_block(transactions))
    rows = pc.fill_null(joined["count_all"], 0)
    wrong = joined.filter(pc.not_equal(rows, pc.cast(joined["n_transactions"], pa.int64()))).sort_by(BLOCK)
    listed = [Problem("transactions", "transaction count",
                      f"block {r[BLOCK]} has {r['count_all'] or 0} rows, its header says "
                      f"n_transactions={r['n_transactions']}") for r in wrong.slice(0, LISTED).to_pylist()]
    return _counted(listed, wrong.num_rows, "transactions", "transaction count")


def _log_transactions(blocks: pa.Table, logs: pa.Table) -> list[Problem]:
    highest = logs.group_by(BLOCK).aggregate([("transaction_index", "max")])
    joined = _headers(blocks).join(highest, BLOCK, join_type="inner")
    wrong = joined.filter(pc.greater_equal(pc.cast(joined["transaction_index_max"], pa.int64()),
                                           pc.cast(joined["n_transactions"], pa.int64()))).sort_by(BLOCK)
    listed = [Problem("logs", "log transaction",
                      f"block {r[BLOCK]} has a log of transaction {r['transaction_index_max']}, "
                      f"its header says n_transactions={r['n_transactions']}")
              for r in wrong.slice(0, LISTED).to_pylist()]
    return _counted(listed, wrong.num_rows, "logs", "log transaction")


# ------------------------------------------------------------------------------- helpers


def _within(numbers: pa.Array | pa.ChunkedArray, first: int, last: int) -> bool:
    """Whether every number (none null) is in ``first..last``."""
    if numbers.null_count:
        return False
    span = pc.min_max(numbers)
    return bool(first <= span["min"].as_py() and span["max"].as_py() <= last)


def _ascending(numbers: pa.Array | pa.ChunkedArray) -> bool:
    """Whether ``numbers`` (none null) never decrease: a stable sort would change nothing."""
    n = len(numbers)
    if numbers.null_count:
        return False
    return n < 2 or bool(pc.all(pc.greater_equal(numbers.slice(1), numbers.slice(0, n - 1))).as_py())


def _in_block_order(chain: pa.Table, outside: pa.Table, first: int, last: int) -> pa.Table:
    """``chain`` then ``outside`` (only blocks ``first - 1`` and ``last + 1``) stably sorted by block
    number. When ``chain`` is in order already and within ``first..last``, that is block
    ``first - 1``, ``chain``, block ``last + 1``: no sort needed."""
    numbers = chain[BLOCK].cast(pa.int64())
    if _ascending(numbers) and (len(numbers) == 0 or _within(numbers, first, last)):
        before = outside.filter(pc.equal(outside[BLOCK], first - 1))
        after = outside.filter(pc.equal(outside[BLOCK], last + 1))
        return pa.concat_tables([before, chain, after])
    return pa.concat_tables([chain, outside]).sort_by(BLOCK)


def _strictly_ascending(rows: pa.Table, key: Sequence[str]) -> bool:
    """Whether each row's ``key`` is greater than the row's before it (the columns compared in
    order, none null): then no two rows share a key. Only for integer and byte-string keys."""
    n = rows.num_rows
    if n < 2:
        return True
    columns = [rows[k] for k in key]
    if any(c.null_count or not (pa.types.is_integer(c.type) or pa.types.is_binary(c.type)
                                or pa.types.is_large_binary(c.type) or pa.types.is_string(c.type)
                                or pa.types.is_large_string(c.type)) for c in columns):
        return False
    greater: pa.Array | None = None
    for column in reversed(columns):
        now, before = column.slice(1), column.slice(0, n - 1)
        step = pc.greater(now, before)
        greater = step if greater is None else pc.or_(step, pc.and_(pc.equal(now, before), greater))
    return greater is not None and bool(pc.all(greater).as_py())


def _headers(blocks: pa.Table) -> pa.Table:
    """``block_number, n_transactions`` once per distinct pair (a duplicated block counts once)."""
    headers = blocks.select([BLOCK, "n_transactions"])
    if _strictly_ascending(headers, [BLOCK]):  # every pair once already, in the group-by's order
        return headers
    return headers.group_by([BLOCK, "n_transactions"]).aggregate([])


def _with_counts(headers: pa.Table, counts: pa.Table) -> pa.Table:
    """``headers`` left outer joined with ``counts`` (one row per block): each header's count
    looked up by its block number (null: none, nor for a null number, as a join matches them)."""
    if headers.schema.field(BLOCK).type != counts.schema.field(BLOCK).type:
        return headers.join(counts, BLOCK, join_type="left outer")
    if headers[BLOCK].null_count == 0 and headers[BLOCK].equals(counts[BLOCK]):  # row for row
        return headers.append_column("count_all", counts["count_all"])
    at = pc.index_in(headers[BLOCK], value_set=counts[BLOCK].combine_chunks(), skip_nulls=True)
    return headers.append_column("count_all", counts["count_all"].take(at))


def _per_block(rows: pa.Table) -> pa.Table:
    """``block_number, count_all``: the rows of each block, as ``group_by(block_number)`` counts
    them; counted by runs when the block numbers are in order (the same table, faster)."""
    numbers = rows[BLOCK]
    n = len(numbers)
    if n == 0 or not _ascending(numbers):
        return rows.group_by(BLOCK).aggregate([([], "count_all")])
    firsts = pc.not_equal(numbers.slice(1), numbers.slice(0, n - 1))  # row i + 1 starts a block
    firsts = pa.chunked_array([pa.array([True]), *firsts.chunks], pa.bool_())
    starts = pc.indices_nonzero(firsts).cast(pa.int64())
    ends = pa.concat_arrays([starts.slice(1), pa.array([n], pa.int64())])
    return pa.table({BLOCK: numbers.filter(firsts).combine_chunks(), "count_all": pc.subtract(ends, starts)})


def _at(rows: pa.Table, heights: Sequence[int]) -> pa.Table:
    return rows.filter(pc.is_in(rows[BLOCK], pa.array(heights, rows.schema.field(BLOCK).type)))


def _counted(listed: list[Problem], total: int, dataset: str, check: str) -> list[Problem]:
    if total > len(listed):
        listed.append(Problem(dataset, check, f"and {total - len(listed)} more"))
    return listed


def _missing(a: int, b: int) -> str:
    return f"block {a} missing" if a == b else f"blocks {a}..{b} missing"


def _hex(value: bytes | None) -> str:
    return "none" if value is None else "0x" + value.hex()


def _text(value: Any) -> str:
    return _hex(value) if isinstance(value, bytes) else str(value)
