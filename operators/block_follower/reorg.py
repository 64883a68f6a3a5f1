"""The follower's decision logic as a pure, synchronous state machine (no I/O).

:class:`ChainWindow` is the follower's view of the canonical chain it has already emitted: the
last ``size`` blocks, each linked to its parent by hash. :func:`advance` is a generator in the
sans-I/O style (psycopg's ``generators.py``): it *yields* a :class:`Fetch` of the heights it
needs and is *sent* what the node returned (``None`` for a height the node does not have); it
*returns* the events to emit, in order. Heights wanted only to find a common ancestor are asked
for as headers (``Fetch.full`` false). The I/O shell (``follower.py``) drives it against real
JSON-RPC; the property tests drive it against a simulated chain.

Reorgs are detected two ways, as the node shows them:
* the next block's ``parent_hash`` is not the hash we hold at the tip (the chain grew on a
  different branch), and
* the head is at or below our tip but its hash differs from ours at that height (same-height
  replacement, as ``anvil_reorg`` does).
Either way we walk back height by height, comparing the node's hash with ours, to the common
ancestor; then we emit one :class:`Reorg` (orphaned heights and hashes, and the replacements
known so far) followed by the new canonical blocks.

A head *below* our tip whose hash matches ours is a lagging node, not a reorg: we wait.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from tracekit.errors import TraceError


class ReorgTooDeep(TraceError):
    """The reorg goes deeper than the follower's window; the common ancestor is unknown."""


@dataclass(frozen=True, slots=True)
class BlockRef:
    number: int
    hash: str
    parent_hash: str


class HasRef(Protocol):
    @property
    def ref(self) -> BlockRef: ...


B = TypeVar("B", bound=HasRef)


@dataclass(frozen=True, slots=True)
class NewBlock(Generic[B]):
    """A block that extends the canonical chain; emit it."""

    block: B


@dataclass(frozen=True, slots=True)
class Reorg:
    """The chain above ``ancestor`` was replaced. Orphaned blocks are listed lowest first."""

    ancestor: BlockRef
    orphaned: tuple[BlockRef, ...]
    replacement_hashes: tuple[str, ...]

    @property
    def depth(self) -> int:
        return len(self.orphaned)


Event = NewBlock[B] | Reorg


@dataclass
class ChainWindow:
    """The last ``size`` canonical blocks the follower emitted, lowest first."""

    size: int
    blocks: deque[BlockRef] = field(default_factory=deque)

    @classmethod
    def of(cls, refs: Iterable[BlockRef], size: int) -> ChainWindow:
        window = cls(size)
        for ref in sorted(refs, key=lambda r: r.number):
            window.push(ref)
        return window

    @property
    def tip(self) -> BlockRef | None:
        return self.blocks[-1] if self.blocks else None

    @property
    def floor(self) -> int | None:
        return self.blocks[0].number if self.blocks else None

    def hash_at(self, number: int) -> str | None:
        if not self.blocks or number < self.blocks[0].number or number > self.blocks[-1].number:
            return None
        ref = self.blocks[number - self.blocks[0].number]
        return ref.hash

    def push(self, ref: BlockRef) -> None:
        tip = self.tip
        if tip is not None and (ref.number != tip.number + 1 or ref.parent_hash != tip.hash):
            raise ValueError(f"block {ref.number} {ref.hash} does not extend tip {tip.number} {tip.hash}")
        self.blocks.append(ref)
        while len(self.blocks) > self.size:
            self.blocks.popleft()

    def truncate_above(self, number: int) -> tuple[BlockRef, ...]:
        """Drop and return the blocks above ``number``, lowest first."""
        dropped: list[BlockRef] = []
        while self.blocks and self.blocks[-1].number > number:
            dropped.append(self.blocks.pop())
        return tuple(reversed(dropped))


@dataclass(frozen=True, slots=True)
class Fetch:
    """A request to the I/O shell: these heights, full blocks or headers only (``full=False``)."""

    numbers: tuple[int, ...]
    full: bool = True


Got = Sequence[B | None]


def advance(
    window: ChainWindow, head: BlockRef, *, max_blocks: int, start: int | None = None
) -> Generator[Fetch, Got[B], list[Event[B]]]:
    """Bring ``window`` up to (at most ``max_blocks`` towards) ``head``; return events to emit.

    ``start`` is the first height to emit when the window is empty (defaults to the head).
    The window is updated in place as events are produced, so the caller must persist it only
    after the events are delivered (and reload it after a crash).
    """
    events: list[Event[B]] = []
    tip = window.tip
    if tip is None:
        first = head.number if start is None else start
        if first > head.number:
            return events
        wanted = list(range(first, min(head.number, first + max_blocks - 1) + 1))
    else:
        if head.number <= tip.number:
            ours = window.hash_at(head.number)
            if ours is None or ours == head.hash:
                return events  # caught up, or a lagging node
            reorg: Reorg = yield from _walk_back(window, tip, head.number)
            events.append(reorg)
            tip = reorg.ancestor  # then fetch the replacing branch up to the head
        start_at = tip.number + 1
        wanted = list(range(start_at, min(head.number, start_at + max_blocks - 1) + 1))
    if not wanted:
        return events

    got = yield Fetch(tuple(wanted))
    for number, block in zip(wanted, got, strict=True):
        if block is None:
            break  # the node lost it meanwhile (reorg to a shorter chain); next round sees it
        ref = block.ref
        if ref.number != number:
            raise ValueError(f"asked for block {number}, node returned {ref.number}")
        tip = window.tip
        if tip is None or ref.parent_hash == tip.hash:
            window.push(ref)
            events.append(NewBlock(block))
            continue
        events.append((yield from _walk_back(window, tip, tip.number)))
        break  # the next round fetches the new branch from the ancestor
    return events


_WALK_CHUNK = 8


def _walk_back(window: ChainWindow, tip: BlockRef, from_number: int) -> Generator[Fetch, Got[B], Reorg]:
    """Find the highest height at or below ``from_number`` where the node agrees with us."""
    floor = tip.number - len(window.blocks) + 1
    node_hashes: dict[int, str | None] = {}
    height = min(from_number, tip.number)
    while True:
        if height < floor:
            raise ReorgTooDeep(
                f"reorg deeper than the follower window ({window.size} blocks): no common ancestor "
                f"at or above block {floor}"
            )
        chunk = list(range(height, max(floor, height - _WALK_CHUNK + 1) - 1, -1))
        got = yield Fetch(tuple(chunk), full=False)
        for number, block in zip(chunk, got, strict=True):
            node_hash = block.ref.hash if block is not None else None
            node_hashes[number] = node_hash
            if node_hash is not None and node_hash == window.hash_at(number):
                ancestor_ref = window.blocks[number - floor]
                orphaned = window.truncate_above(number)
                replacements = []
                for ref in orphaned:
                    replacement = node_hashes.get(ref.number)
                    if replacement is None:
                        break
                    replacements.append(replacement)
                return Reorg(ancestor_ref, orphaned, tuple(replacements))
        height = chunk[-1] - 1
