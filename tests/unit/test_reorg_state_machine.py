"""Property tests: the follower's state machine against a simulated node with random reorgs.

A sink that applies the emitted events (insert blocks, delete orphaned hashes) must always end
equal to the node's canonical chain up to the follower's tip, whatever the node did.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Generator
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.block_follower.reorg import (
    BlockRef,
    ChainWindow,
    Event,
    Fetch,
    NewBlock,
    Reorg,
    ReorgTooDeep,
    advance,
)

_salt = itertools.count()


@dataclass(frozen=True)
class Blk:
    ref: BlockRef


class Node:
    """A simulated chain: a list of canonical blocks that can grow, reorg or roll back."""

    def __init__(self) -> None:
        self.chain: list[BlockRef] = [BlockRef(0, "0xgenesis", "0x00")]

    def _make(self, number: int, parent: str) -> BlockRef:
        digest = hashlib.sha256(f"{number}:{parent}:{next(_salt)}".encode()).hexdigest()[:16]
        return BlockRef(number, f"0x{digest}", parent)

    def mine(self, n: int = 1) -> None:
        for _ in range(n):
            tip = self.chain[-1]
            self.chain.append(self._make(tip.number + 1, tip.hash))

    def reorg(self, depth: int, new_length: int) -> None:
        """Replace the last ``depth`` blocks with ``new_length`` new ones (anvil_reorg: same)."""
        depth = min(depth, len(self.chain) - 1)
        del self.chain[len(self.chain) - depth :]
        self.mine(new_length)

    @property
    def head(self) -> BlockRef:
        return self.chain[-1]

    def get(self, number: int) -> Blk | None:
        return Blk(self.chain[number]) if 0 <= number < len(self.chain) else None


def drive(gen: Generator[Fetch, list[Blk | None], list[Event[Blk]]], node: Node) -> list[Event[Blk]]:
    try:
        need = next(gen)
        while True:
            need = gen.send([node.get(n) for n in need.numbers])
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


class Sink:
    def __init__(self) -> None:
        self.rows: dict[int, str] = {}

    def apply(self, events: list[Event[Blk]]) -> None:
        for event in events:
            if isinstance(event, Reorg):
                orphaned = {r.hash for r in event.orphaned}
                for number in [n for n, h in self.rows.items() if h in orphaned]:
                    del self.rows[number]
            else:
                self.rows[event.block.ref.number] = event.block.ref.hash


def settle(node: Node, window: ChainWindow) -> None:
    """Let the node mine past the follower's tip, as a live chain does after a rollback."""
    tip = window.tip
    if tip is not None and node.head.number <= tip.number:
        node.mine(tip.number - node.head.number + 1)


def follow(window: ChainWindow, node: Node, sink: Sink, max_blocks: int) -> list[Event[Blk]]:
    """Run rounds until caught up with the node's head, as the follower's loop does."""
    emitted: list[Event[Blk]] = []
    for _ in range(1000):
        events = drive(advance(window, node.head, max_blocks=max_blocks, start=0), node)
        sink.apply(events)
        emitted += events
        if window.tip == node.head or not events:
            return emitted  # caught up, or waiting for a node that is behind us
    raise AssertionError("follower did not catch up")


actions = st.lists(
    st.one_of(
        st.tuples(st.just("mine"), st.integers(1, 12)),
        st.tuples(st.just("reorg"), st.integers(1, 6), st.integers(0, 8)),
        st.tuples(st.just("follow"), st.integers(1, 20)),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(actions)
def test_sink_converges_to_canonical_chain(steps: list[tuple[object, ...]]) -> None:
    node, sink, window = Node(), Sink(), ChainWindow(size=64)
    for step in steps:
        if step[0] == "mine":
            node.mine(int(step[1]))  # type: ignore[call-overload]
        elif step[0] == "reorg":
            node.reorg(int(step[1]), int(step[2]))  # type: ignore[call-overload]
        else:
            follow(window, node, sink, max_blocks=int(step[1]))  # type: ignore[call-overload]
    settle(node, window)
    follow(window, node, sink, max_blocks=50)
    canonical = {ref.number: ref.hash for ref in node.chain}
    assert sink.rows == canonical
    # the window is a linked suffix of the canonical chain
    refs = list(window.blocks)
    assert refs[-1] == node.head
    for parent, child in itertools.pairwise(refs):
        assert child.parent_hash == parent.hash
        assert canonical[child.number] == child.hash


@settings(max_examples=200, deadline=None)
@given(st.integers(5, 30), st.integers(1, 6), st.integers(0, 8))
def test_reorg_event_names_exactly_the_replaced_blocks(length: int, depth: int, new_length: int) -> None:
    node, sink, window = Node(), Sink(), ChainWindow(size=64)
    node.mine(length)
    follow(window, node, sink, max_blocks=100)
    before = list(node.chain)
    node.reorg(depth, new_length)
    settle(node, window)
    events = follow(window, node, sink, max_blocks=100)
    reorgs = [e for e in events if isinstance(e, Reorg)]
    changed = [ref for ref in before if ref.number >= len(node.chain) or node.chain[ref.number] != ref]
    if not changed:
        assert reorgs == []  # the node only grew
        return
    assert len(reorgs) == 1
    reorg = reorgs[0]
    assert reorg.orphaned == tuple(changed)
    assert reorg.depth == len(changed)
    assert reorg.ancestor == node.chain[changed[0].number - 1]
    # replacement hashes are the node's new hashes at the orphaned heights, as far as they exist
    expected = [node.chain[r.number].hash for r in changed if r.number < len(node.chain)]
    assert list(reorg.replacement_hashes) == expected[: len(reorg.replacement_hashes)]
    # the reorg comes before the replacing blocks
    first_new = next(i for i, e in enumerate(events) if isinstance(e, NewBlock))
    assert events.index(reorg) < first_new


def test_same_height_replacement_is_detected_from_the_head_hash() -> None:
    node, sink, window = Node(), Sink(), ChainWindow(size=16)
    node.mine(10)
    follow(window, node, sink, max_blocks=100)
    node.reorg(3, 3)  # head number unchanged, hashes changed
    events = drive(advance(window, node.head, max_blocks=100), node)
    assert isinstance(events[0], Reorg)
    assert events[0].depth == 3
    assert [e.block.ref for e in events[1:] if isinstance(e, NewBlock)] == node.chain[8:11]


def test_lagging_node_is_not_a_reorg() -> None:
    node, sink, window = Node(), Sink(), ChainWindow(size=16)
    node.mine(10)
    follow(window, node, sink, max_blocks=100)
    behind = node.chain[7]
    events = drive(advance(window, behind, max_blocks=100), node)
    assert events == []


def test_reorg_deeper_than_window_fails_clearly() -> None:
    node, sink, window = Node(), Sink(), ChainWindow(size=4)
    node.mine(10)
    follow(window, node, sink, max_blocks=100)
    node.reorg(6, 6)
    with pytest.raises(ReorgTooDeep, match="deeper than the follower window"):
        drive(advance(window, node.head, max_blocks=100), node)


def test_window_rejects_a_block_that_does_not_link() -> None:
    window = ChainWindow.of([BlockRef(1, "0xa", "0x0")], size=4)
    with pytest.raises(ValueError, match="does not extend tip"):
        window.push(BlockRef(2, "0xb", "0xnot-a"))
