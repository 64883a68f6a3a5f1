"""What makes a batch of hot rows unfit to become cold, pure (no I/O): a block missing from
``hot.blocks`` (a gap), a block whose parent hash is not the hash of the block before it, or a
block whose transactions or logs are not all there. Each is retryable: the hot tables are being
written (a sink catching up, a reorg being applied), so the batch is tried again later."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from operators.aggregator.plan import Batch
from tracekit.errors import RetryableError

LISTED = 5  # instances of a problem named in a message; the rest are counted


class HotNotReady(RetryableError):
    """The hot tables do not hold the batch whole yet; it is tried again later."""


class NotYetFinal(HotNotReady):
    """The batch ends above the final head of the hot tables."""


class HotGap(HotNotReady):
    """hot.blocks misses blocks of the batch."""


class HotInconsistent(HotNotReady):
    """The batch's hot rows do not agree with each other (parent hashes, row counts)."""


def _ranges(numbers: Sequence[int]) -> list[str]:
    """``[3, 4, 5, 9]`` -> ``["3..5", "9"]``."""
    out: list[str] = []
    start = prev = None
    for n in [*numbers, None]:
        if n is not None and prev is not None and n == prev + 1:
            prev = n
            continue
        if start is not None:
            out.append(str(start) if start == prev else f"{start}..{prev}")
        start = prev = n
    return out


def _listed(items: Sequence[str]) -> str:
    more = len(items) - LISTED
    return ", ".join(items[:LISTED]) + (f" and {more} more" if more > 0 else "")


def missing_blocks(batch: Batch, numbers: Sequence[int]) -> list[int]:
    """The heights of ``batch`` that ``numbers`` (the block numbers found) lacks."""
    return sorted(set(range(batch.start, batch.end + 1)) - set(numbers))


def check_blocks(chain_id: int, batch: Batch, blocks: Sequence[tuple[int, str, str]]) -> None:
    """``blocks``: ``(number, hash, parent hash)`` of the batch's heights in ``hot.blocks``.
    Raises :class:`HotGap` or :class:`HotInconsistent` naming the blocks at fault."""
    missing = missing_blocks(batch, [b[0] for b in blocks])
    if missing:
        raise HotGap(f"hot.blocks of chain {chain_id} misses blocks {_listed(_ranges(missing))} of the batch "
                     f"{batch}: it waits until they are there")
    ordered = sorted(blocks)
    broken = [f"{b[0]}" for a, b in itertools.pairwise(ordered) if b[2].lower() != a[1].lower()]
    if broken:
        raise HotInconsistent(f"hot.blocks of chain {chain_id}: blocks {_listed(broken)} of the batch "
                              f"{batch} do not link to the block before (a reorg is being applied); "
                              "tried again later")


def check_counts(chain_id: int, dataset: str, expected: Mapping[int, int],
                 rows: Sequence[Sequence[Any]]) -> None:
    """Each block of ``expected`` (number -> its header's count) has that many ``rows`` (whose
    first column is the block number)."""
    found: dict[int, int] = {}
    for row in rows:
        found[row[0]] = found.get(row[0], 0) + 1
    check_found(chain_id, dataset, expected, found)


def check_found(chain_id: int, dataset: str, expected: Mapping[int, int], found: Mapping[int, int]) -> None:
    """Each block of ``expected`` (number -> its header's count) has that many rows: ``found``
    (number -> rows of the block found; a block without rows may be absent)."""
    wrong = [f"{n} ({found.get(n, 0)} of {want})" for n, want in sorted(expected.items())
             if found.get(n, 0) != want]
    if wrong:
        raise HotInconsistent(f"hot.{dataset} of chain {chain_id} lacks rows of blocks {_listed(wrong)}: "
                              "tried again later")
