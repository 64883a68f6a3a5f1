"""A fast, pure evaluator of a :class:`RuleSet` over enriched chain events (no I/O at all).

Rules are indexed by event type and then by their most selective filter (``from`` address,
``to`` address, either address, labels, token, action; the rest are visited for every event of
their type), so an event only visits the rules that can match it. Each candidate then checks all
of its filters.

Windowed rules keep, per group key, the matching events of the last ``blocks`` blocks as
``(block_number, block_hash, amount, event key)`` entries (plus ``reorg_horizon`` more blocks of
aged-out entries, so that a window can re-extend over them when a reorg sends the chain back).
A window *fires once per crossing*: the event that takes the window from at-or-below the
threshold to above it fires (its key is the alert's key); events while it stays above do not;
once it has dropped back to or below the threshold (entries aged out, or removed by a reorg), the
next crossing fires again. :meth:`Evaluator.on_reorg` removes the entries of orphaned blocks
from every window, so afterwards the windows are as if those events never happened (exact for
reorgs up to ``reorg_horizon`` blocks deep). Memory is bounded by the events of the last
``blocks + reorg_horizon`` blocks per windowed rule.

The evaluator never decides delivery: it reports matches with their rule's tier; the caller
holds ``finalized`` matches until finality and retracts ``instant`` ones whose block a reorg
orphaned. Each call to :meth:`Evaluator.evaluate` should be made once per event in chain order;
evaluating an event again (a replayed batch) does not count it twice in any window, and
reports the same window decision it got the first time while its window entries are retained.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from streams.alerts.ids import alert_id
from streams.alerts.rules import CHAIN_EVENTS, LAG, REORG, Rule, RuleSet, Window
from streams.enrich.model import ChainEvent, LagReading, ReorgEvent

DEFAULT_REORG_HORIZON = 64


@dataclass(frozen=True, slots=True)
class Match:
    """A rule matched an event: the caller turns it into an Alert (or holds it, by tier)."""

    rule: Rule
    rule_version: int
    tier: str  # "instant" | "finalized" (the rule's)
    event: ChainEvent | ReorgEvent | LagReading
    alert_id: str
    summary: str
    details: dict[str, Any] = field(compare=False)

    @property
    def event_type(self) -> str:
        """``transfer``, ``stake_change``, ``reorg`` or ``lag``."""
        event = self.event
        if isinstance(event, ChainEvent):
            return event.event_type
        return REORG if isinstance(event, ReorgEvent) else LAG


# --------------------------------------------------------------------------- windows

_Entry = tuple[int, str, int, str, int]  # block_number, block_hash, amount, event key, seq
_GroupKey = tuple[int, str]  # chain id, group value


class _Group:
    __slots__ = ("active", "count", "retired", "total")

    def __init__(self) -> None:
        self.active: deque[_Entry] = deque()  # in the window, by block
        self.retired: deque[_Entry] = deque()  # aged out, kept for reorg_horizon blocks
        self.count = 0  # of active
        self.total = 0  # sum of active amounts

    def slide(self, low: int, cut: int, keys: dict[str, tuple[_GroupKey, _Entry]]) -> None:
        """Make ``active`` hold exactly the entries with ``block > low``; drop retired ones <= cut."""
        active, retired = self.active, self.retired
        while retired and retired[-1][0] > low:  # the chain went back (reorg): re-extend
            entry = retired.pop()
            active.appendleft(entry)
            self.count += 1
            self.total += entry[2]
        while active and active[0][0] <= low:
            entry = active.popleft()
            retired.append(entry)
            self.count -= 1
            self.total -= entry[2]
        while retired and retired[0][0] <= cut:
            keys.pop(retired.popleft()[3], None)

    def recount(self) -> None:
        self.count = len(self.active)
        self.total = sum(entry[2] for entry in self.active)


class _WindowState:
    """The groups of one windowed rule."""

    __slots__ = ("blocks", "by_count", "expiry", "group_by", "groups", "horizon", "keys", "seq", "threshold")

    def __init__(self, window: Window, horizon: int) -> None:
        self.blocks = window.blocks
        self.by_count = window.counts
        self.threshold = window.threshold
        self.group_by = window.group_by
        self.horizon = horizon
        self.groups: dict[_GroupKey, _Group] = {}
        self.keys: dict[str, tuple[_GroupKey, _Entry]] = {}
        self.expiry: deque[tuple[int, _GroupKey]] = deque()
        self.seq = 0

    def group_value(self, event: ChainEvent, frm: str, to: str, token: str) -> str:
        group_by = self.group_by
        if group_by is None:
            return ""
        return frm if group_by == "from" else to if group_by == "to" else token

    def observe(self, event: ChainEvent, value: str) -> tuple[bool, int, int]:
        """Add a matching event; returns (fires, count, sum) of its window including it."""
        number = event.block_number
        low = number - self.blocks
        cut = low - self.horizon
        gkey = (event.chain_id, value)
        group = self.groups.get(gkey)
        if group is None:
            group = self.groups[gkey] = _Group()
        group.slide(low, cut, self.keys)
        known = self.keys.get(event.key)
        if known is not None:
            return self._replay(known, low)
        before = group.count if self.by_count else group.total
        self.seq += 1
        entry: _Entry = (number, event.block_hash, event.amount, event.key, self.seq)
        group.active.append(entry)
        group.count += 1
        group.total += event.amount
        self.keys[event.key] = (gkey, entry)
        self.expiry.append((number, gkey))
        self._expire(cut)
        after = group.count if self.by_count else group.total
        return before <= self.threshold < after, group.count, group.total

    def _replay(self, known: tuple[_GroupKey, _Entry], low: int) -> tuple[bool, int, int]:
        """The decision for an event already in the window, as when it was first evaluated."""
        gkey, entry = known
        group = self.groups[gkey]
        seq = entry[4]
        earlier = [e for e in (*group.retired, *group.active) if e[4] < seq and e[0] > low]
        count, total = len(earlier), sum(e[2] for e in earlier)
        before = count if self.by_count else total
        after = before + (1 if self.by_count else entry[2])
        return before <= self.threshold < after, count + 1, total + entry[2]

    def _expire(self, cut: int) -> None:
        """Forget entries at or below ``cut`` of groups that have gone quiet."""
        expiry, groups = self.expiry, self.groups
        while expiry and expiry[0][0] <= cut:
            _, gkey = expiry.popleft()
            group = groups.get(gkey)
            if group is None:
                continue
            for entries, active in ((group.retired, False), (group.active, True)):
                while entries and entries[0][0] <= cut:
                    entry = entries.popleft()
                    self.keys.pop(entry[3], None)
                    if active:
                        group.count -= 1
                        group.total -= entry[2]
            if not group.active and not group.retired:
                del groups[gkey]

    def forget(self, hashes: frozenset[str]) -> None:
        """Remove the entries of orphaned blocks."""
        for gkey in list(self.groups):
            group = self.groups[gkey]
            for name in ("active", "retired"):
                entries: deque[_Entry] = getattr(group, name)
                if any(e[1] in hashes for e in entries):
                    kept = deque(e for e in entries if e[1] not in hashes)
                    for e in entries:
                        if e[1] in hashes:
                            self.keys.pop(e[3], None)
                    setattr(group, name, kept)
            group.recount()
            if not group.active and not group.retired:
                del self.groups[gkey]

    def size(self) -> int:
        return len(self.keys)


# --------------------------------------------------------------------------- compiled rules


class _Compiled:
    """A chain-event rule with its filters as plain attributes, checked in a cheap-first order."""

    __slots__ = (
        "actions",
        "addrs",
        "event",
        "from_labels",
        "froms",
        "labels",
        "max_amount",
        "min_amount",
        "min_usd",
        "order",
        "rule",
        "to_labels",
        "tokens",
        "tos",
        "window",
    )

    def __init__(self, rule: Rule, order: int, horizon: int) -> None:
        self.rule = rule
        self.order = order
        self.event = rule.event
        self.actions = rule.actions
        self.tokens = rule.tokens
        self.froms = rule.from_addresses
        self.tos = rule.to_addresses
        self.addrs = rule.addresses
        self.labels = rule.labels
        self.from_labels = rule.from_labels
        self.to_labels = rule.to_labels
        self.min_amount = rule.min_amount
        self.max_amount = rule.max_amount
        self.min_usd = rule.min_usd
        self.window = _WindowState(rule.window, horizon) if rule.window is not None else None

    def matches(self, event: ChainEvent, frm: str, to: str, token: str) -> bool:
        if event.event_type != self.event:
            return False
        if self.actions is not None and event.action not in self.actions:
            return False
        if self.tokens is not None and token not in self.tokens:
            return False
        if self.froms is not None and frm not in self.froms:
            return False
        if self.tos is not None and to not in self.tos:
            return False
        if self.addrs is not None and frm not in self.addrs and to not in self.addrs:
            return False
        if self.min_amount is not None and event.amount < self.min_amount:
            return False
        if self.max_amount is not None and event.amount > self.max_amount:
            return False
        if self.min_usd is not None and (event.usd_value is None or event.usd_value < self.min_usd):
            return False
        if self.from_labels is not None and self.from_labels.isdisjoint(event.from_labels):
            return False
        if self.to_labels is not None and self.to_labels.isdisjoint(event.to_labels):
            return False
        return not (
            self.labels is not None
            and self.labels.isdisjoint(event.from_labels)
            and self.labels.isdisjoint(event.to_labels)
        )


_Bucket = dict[str, list[_Compiled]]


class _TypeIndex:
    """The rules of one chain event type, each filed under its most selective filter."""

    __slots__ = ("action", "addr", "from_", "from_label", "label", "to", "to_label", "token", "unindexed")

    def __init__(self) -> None:
        self.unindexed: list[_Compiled] = []
        self.from_: _Bucket = {}
        self.to: _Bucket = {}
        self.addr: _Bucket = {}
        self.from_label: _Bucket = {}
        self.to_label: _Bucket = {}
        self.label: _Bucket = {}
        self.token: _Bucket = {}
        self.action: _Bucket = {}

    def add(self, c: _Compiled) -> None:
        for bucket, values in (
            (self.from_, c.froms),
            (self.to, c.tos),
            (self.addr, c.addrs),
            (self.from_label, c.from_labels),
            (self.to_label, c.to_labels),
            (self.label, c.labels),
            (self.token, c.tokens),
            (self.action, c.actions),
        ):
            if values is not None:
                for value in values:
                    bucket.setdefault(value, []).append(c)
                return
        self.unindexed.append(c)

    def candidates(self, event: ChainEvent, frm: str, to: str, token: str) -> list[_Compiled]:
        out = list(self.unindexed)
        if self.from_ and (hit := self.from_.get(frm)):
            out += hit
        if self.to and (hit := self.to.get(to)):
            out += hit
        if self.addr:
            if hit := self.addr.get(frm):
                out += hit
            if to != frm and (hit := self.addr.get(to)):
                out += hit
        if self.from_label and event.from_labels:
            for name in event.from_labels:
                if hit := self.from_label.get(name):
                    out += hit
        if self.to_label and event.to_labels:
            for name in event.to_labels:
                if hit := self.to_label.get(name):
                    out += hit
        if self.label and (event.from_labels or event.to_labels):
            for name in event.from_labels | event.to_labels:
                if hit := self.label.get(name):
                    out += hit
        if self.token and (hit := self.token.get(token)):
            out += hit
        if self.action and (hit := self.action.get(event.action)):
            out += hit
        if len(out) > 1:
            out = sorted(set(out), key=_order)
        return out


def _order(c: _Compiled) -> int:
    return c.order


# --------------------------------------------------------------------------- the evaluator


class Evaluator:
    """Evaluates one rule set (of version ``version``) over chain events, reorgs and lag readings.

    ``reorg_horizon``: how many blocks beyond a window aged-out entries are kept so that windows
    stay exact after reorgs up to that depth. ``use_index=False`` visits every rule for every
    event (the naive reference, for tests and benchmarks).
    """

    def __init__(
        self,
        rules: RuleSet,
        version: int,
        *,
        reorg_horizon: int = DEFAULT_REORG_HORIZON,
        use_index: bool = True,
    ) -> None:
        if reorg_horizon < 0:
            raise ValueError("reorg_horizon must be >= 0")
        self.rules = rules
        self.version = version
        self._chain: list[_Compiled] = []
        self._index: dict[str, _TypeIndex] = {}
        self._reorg_rules: list[Rule] = []
        self._lag_rules: list[Rule] = []
        self._lag_above: dict[tuple[str, int], bool] = {}
        self._use_index = use_index
        for order, rule in enumerate(rules.rules):
            if rule.event in CHAIN_EVENTS:
                compiled = _Compiled(rule, order, reorg_horizon)
                self._chain.append(compiled)
                self._index.setdefault(rule.event, _TypeIndex()).add(compiled)
            elif rule.event == REORG:
                self._reorg_rules.append(rule)
            elif rule.event == LAG:
                self._lag_rules.append(rule)
        self._windows = [c.window for c in self._chain if c.window is not None]

    # -- chain events

    def evaluate(self, event: ChainEvent) -> list[Match]:
        """The matches of one transfer / stake_change event, in rule order."""
        frm = event.from_address.lower()
        to = event.to_address.lower()
        token = event.token.lower()
        if self._use_index:
            index = self._index.get(event.event_type)
            if index is None:
                return []
            candidates = index.candidates(event, frm, to, token)
        else:
            candidates = self._chain
        matches: list[Match] = []
        for c in candidates:
            if not c.matches(event, frm, to, token):
                continue
            state = c.window
            if state is None:
                matches.append(self._chain_match(c.rule, event, None))
                continue
            value = state.group_value(event, frm, to, token)
            fires, count, total = state.observe(event, value)
            if fires:
                figures = {
                    "blocks": state.blocks,
                    "from_block": event.block_number - state.blocks + 1,
                    "to_block": event.block_number,
                    "group_by": state.group_by,
                    "group_key": value,
                    "measure": "count" if state.by_count else "sum",
                    "threshold": str(state.threshold),
                    "count": count,
                    "sum": str(total),
                }
                matches.append(self._chain_match(c.rule, event, figures))
        return matches

    def _chain_match(self, rule: Rule, event: ChainEvent, window: dict[str, Any] | None) -> Match:
        details = chain_event_details(event)
        summary = chain_event_summary(event)
        if window is not None:
            details["window"] = window
            summary += "; " + _window_summary(event, window)
        return Match(
            rule=rule,
            rule_version=self.version,
            tier=rule.tier,
            event=event,
            alert_id=alert_id(rule.id, self.version, event.key),
            summary=summary,
            details=details,
        )

    # -- reorgs

    def on_reorg(self, reorg: ReorgEvent) -> list[Match]:
        """Forget orphaned events in every window, then evaluate the reorg rules."""
        hashes = frozenset(reorg.orphaned_hashes)
        if hashes:
            for state in self._windows:
                state.forget(hashes)
        matches: list[Match] = []
        for rule in self._reorg_rules:
            if reorg.depth >= (rule.min_depth or 1):
                summary = (
                    f"reorg of depth {reorg.depth} on chain {reorg.chain_id}: back to block "
                    f"{reorg.common_ancestor_number}, {len(reorg.orphaned_hashes)} block(s) orphaned"
                )
                details: dict[str, Any] = {
                    "event_type": REORG,
                    "key": reorg.key,
                    "chain_id": reorg.chain_id,
                    "common_ancestor_number": reorg.common_ancestor_number,
                    "depth": reorg.depth,
                    "orphaned_hashes": list(reorg.orphaned_hashes),
                    "detected_at_ms": reorg.detected_at_ms,
                }
                matches.append(self._match(rule, reorg, summary, details))
        return matches

    # -- lag

    def on_lag(self, reading: LagReading) -> list[Match]:
        """Lag rules fire when a reading crosses their threshold (not again while above it)."""
        matches: list[Match] = []
        for rule in self._lag_rules:
            above = (rule.min_lag_blocks is None or reading.lag_blocks >= rule.min_lag_blocks) and (
                rule.min_lag_seconds is None or reading.lag_seconds >= rule.min_lag_seconds
            )
            state_key = (rule.id, reading.chain_id)
            was_above = self._lag_above.get(state_key, False)
            self._lag_above[state_key] = above
            if above and not was_above:
                summary = (
                    f"follower lag {reading.lag_blocks} blocks / {reading.lag_seconds:.1f} s"
                    f" at head {reading.head_number} on chain {reading.chain_id}"
                )
                details: dict[str, Any] = {
                    "event_type": LAG,
                    "key": reading.key,
                    "chain_id": reading.chain_id,
                    "head_number": reading.head_number,
                    "lag_blocks": reading.lag_blocks,
                    "lag_seconds": reading.lag_seconds,
                }
                matches.append(self._match(rule, reading, summary, details))
        return matches

    def _match(
        self, rule: Rule, event: ReorgEvent | LagReading, summary: str, details: dict[str, Any]
    ) -> Match:
        return Match(
            rule=rule,
            rule_version=self.version,
            tier=rule.tier,
            event=event,
            alert_id=alert_id(rule.id, self.version, event.key),
            summary=summary,
            details=details,
        )

    # -- introspection

    def window_entries(self) -> int:
        """How many window entries are held in all (memory is bounded by window sizes)."""
        return sum(state.size() for state in self._windows)

    def window_figures(self, rule_id: str, chain_id: int, group: str, block_number: int) -> tuple[int, int]:
        """(count, sum) of a window group as seen at ``block_number`` (tests and debugging)."""
        for c in self._chain:
            if c.rule.id == rule_id and c.window is not None:
                state = c.window
                grp = state.groups.get((chain_id, group))
                if grp is None:
                    return 0, 0
                low = block_number - state.blocks
                inside = [e for e in (*grp.retired, *grp.active) if low < e[0] <= block_number]
                return len(inside), sum(e[2] for e in inside)
        raise KeyError(rule_id)


# --------------------------------------------------------------------------- rendering


def _short(address: str) -> str:
    return f"{address[:4]}..{address[-2:]}" if len(address) > 8 else address


def _labelled(address: str, labels: Iterable[str]) -> str:
    names = sorted(labels)
    return f"{_short(address)} ({', '.join(names)})" if names else _short(address)


def _amount(event: ChainEvent) -> str:
    if event.decimals is None or event.decimals <= 0:
        return str(event.amount)
    human = Decimal(event.amount).scaleb(-event.decimals)
    text = f"{human:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def chain_event_summary(event: ChainEvent) -> str:
    """One human line, e.g. ``transfer of 1500000 0xab..12 from 0xab..12 (whale) to ... at block 812``."""
    usd = f" (${event.usd_value:,.2f})" if event.usd_value is not None else ""
    return (
        f"{event.action} of {_amount(event)} {_short(event.token)}{usd}"
        f" from {_labelled(event.from_address, event.from_labels)}"
        f" to {_labelled(event.to_address, event.to_labels)} at block {event.block_number}"
    )


def _window_summary(event: ChainEvent, window: dict[str, Any]) -> str:
    group = window["group_by"]
    scope = f" with {group} {_short(window['group_key'])}" if group else ""
    figure = f"{window['count']} events" if window["measure"] == "count" else f"sum {window['sum']}"
    return (
        f"{figure}{scope} in blocks {window['from_block']}-{window['to_block']} (over {window['threshold']})"
    )


def chain_event_details(event: ChainEvent) -> dict[str, Any]:
    """The event as a JSON-able dict (amount and usd_value as strings: no precision loss)."""
    return {
        "event_type": event.event_type,
        "key": event.key,
        "chain_id": event.chain_id,
        "block_number": event.block_number,
        "block_hash": event.block_hash,
        "timestamp": event.timestamp,
        "log_index": event.log_index,
        "transaction_hash": event.transaction_hash,
        "token": event.token,
        "from_address": event.from_address,
        "to_address": event.to_address,
        "amount": str(event.amount),
        "action": event.action,
        "decimals": event.decimals,
        "usd_value": None if event.usd_value is None else str(event.usd_value),
        "from_labels": sorted(event.from_labels),
        "to_labels": sorted(event.to_labels),
        "observed_at_ms": event.observed_at_ms,
    }
