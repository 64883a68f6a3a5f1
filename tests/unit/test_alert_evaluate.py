"""The evaluator: conditions, windows (once per crossing, reorg-correct), lag/reorg rules, ids."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.alerts.evaluate import Evaluator, Match
from streams.alerts.ids import alert_id
from streams.alerts.rules import RuleSet, parse_rules
from streams.enrich.model import ChainEvent, LagReading, ReorgEvent

A = "0x" + "aa" * 20
B = "0x" + "bb" * 20
C = "0x" + "cc" * 20
T1 = "0x" + "11" * 20
T2 = "0x" + "22" * 20
ZERO = "0x" + "00" * 20


def event(
    number: int = 100,
    log_index: int = 0,
    *,
    fork: int = 0,
    event_type: str = "transfer",
    **fields: Any,
) -> ChainEvent:
    base: dict[str, Any] = {
        "event_type": event_type,
        "key": f"1:{event_type}:{number}:{log_index}",
        "chain_id": 1,
        "block_number": number,
        "block_hash": f"0x{number:08x}{fork:056x}",
        "timestamp": 1_700_000_000 + number,
        "log_index": log_index,
        "transaction_hash": "0x" + "ee" * 32,
        "token": T1,
        "from_address": A,
        "to_address": B,
        "amount": 1000,
        "action": "transfer" if event_type == "transfer" else "delegate",
    }
    base.update(fields)
    return ChainEvent(**base)


def ruleset(yaml_rules: str) -> RuleSet:
    return RuleSet(tuple(parse_rules("rules:\n" + yaml_rules, "test.yaml")))


def one_rule(when: str, **rule: str) -> RuleSet:
    extra = "".join(f"    {k}: {v}\n" for k, v in rule.items())
    return ruleset(f"  - id: r\n{extra}    when: {when}\n")


# --------------------------------------------------------------------------- conditions

CONDITIONS = [
    # (when, event fields, matches?)
    ("{event: transfer}", {}, True),
    ("{event: transfer}", {"event_type": "stake_change"}, False),
    ("{event: stake_change}", {"event_type": "stake_change"}, True),
    ("{event: transfer, action: mint}", {"action": "mint", "from_address": ZERO}, True),
    ("{event: transfer, action: mint}", {}, False),
    ("{event: transfer, action: [mint, burn]}", {"action": "burn", "to_address": ZERO}, True),
    (
        "{event: stake_change, action: undelegate}",
        {"event_type": "stake_change", "action": "undelegate"},
        True,
    ),
    ("{event: stake_change, action: undelegate}", {"event_type": "stake_change"}, False),
    (f"{{event: transfer, token: {T1}}}", {}, True),
    (f"{{event: transfer, token: {T1}}}", {"token": T2}, False),
    (f"{{event: transfer, token: [{T2}, {T1}]}}", {"token": T1.upper().replace("0X", "0x")}, True),
    (f"{{event: transfer, from: {A}}}", {}, True),
    (f"{{event: transfer, from: {A}}}", {"from_address": C}, False),
    (f"{{event: transfer, to: {B}}}", {}, True),
    (f"{{event: transfer, to: {B}}}", {"to_address": C}, False),
    (f"{{event: transfer, from: {A}, to: {C}}}", {}, False),
    (f"{{event: transfer, address: {B}}}", {}, True),
    (f"{{event: transfer, address: {A}}}", {}, True),
    (f"{{event: transfer, address: [{C}]}}", {}, False),
    ("{event: transfer, label: whale}", {"to_labels": frozenset({"whale"})}, True),
    ("{event: transfer, label: whale}", {"from_labels": frozenset({"whale", "cex"})}, True),
    ("{event: transfer, label: whale}", {"from_labels": frozenset({"cex"})}, False),
    ("{event: transfer, from_label: [cex, whale]}", {"from_labels": frozenset({"cex"})}, True),
    ("{event: transfer, from_label: whale}", {"to_labels": frozenset({"whale"})}, False),
    ("{event: transfer, to_label: whale}", {"to_labels": frozenset({"whale"})}, True),
    ("{event: transfer, to_label: whale}", {"from_labels": frozenset({"whale"})}, False),
    ("{event: transfer, min_amount: 1000}", {}, True),
    ("{event: transfer, min_amount: 1001}", {}, False),
    ("{event: transfer, max_amount: 1000}", {}, True),
    ("{event: transfer, max_amount: '999'}", {}, False),
    ("{event: transfer, min_amount: 10, max_amount: 20}", {"amount": 15}, True),
    ("{event: transfer, min_usd: 100.5}", {"usd_value": Decimal("100.5")}, True),
    ("{event: transfer, min_usd: 100.5}", {"usd_value": Decimal("100.49")}, False),
    ("{event: transfer, min_usd: 0}", {"usd_value": None}, False),
    (
        f"{{event: transfer, action: transfer, token: {T1}, from: {A}, to_label: cex, min_amount: 5}}",
        {"to_labels": frozenset({"cex"}), "amount": 5},
        True,
    ),
    (
        f"{{event: transfer, action: transfer, token: {T1}, from: {A}, to_label: cex, min_amount: 5}}",
        {"to_labels": frozenset({"cex"}), "amount": 4},
        False,
    ),
]


@pytest.mark.parametrize(("when", "fields", "expected"), CONDITIONS)
@pytest.mark.parametrize("use_index", [True, False])
def test_condition(when: str, fields: dict[str, Any], expected: bool, use_index: bool) -> None:
    evaluator = Evaluator(one_rule(when), 3, use_index=use_index)
    matches = evaluator.evaluate(event(**fields))
    assert [m.rule.id for m in matches] == (["r"] if expected else [])


def test_match_fields_summary_and_details() -> None:
    ev = event(
        812,
        4,
        amount=1_500_000 * 10**6,
        decimals=6,
        usd_value=Decimal("1500000.00"),
        from_labels=frozenset({"whale"}),
    )
    (match,) = Evaluator(one_rule("{event: transfer}", tier="finalized", severity="high"), 7).evaluate(ev)
    assert match.tier == "finalized" and match.rule.severity == "high" and match.rule_version == 7
    assert match.event is ev and match.event_type == "transfer"
    assert match.alert_id == alert_id("r", 7, ev.key)
    assert (
        match.summary
        == "transfer of 1500000 0x11..11 ($1,500,000.00) from 0xaa..aa (whale) to 0xbb..bb at block 812"
    )
    assert match.details["amount"] == str(1_500_000 * 10**6)
    assert match.details["from_labels"] == ["whale"]
    assert json.loads(json.dumps(match.details)) == match.details


def test_matches_come_in_rule_order_once_each() -> None:
    rules = ruleset(
        f"  - id: by-token\n    when: {{event: transfer, token: {T1}}}\n"
        f"  - id: by-address\n    when: {{event: transfer, address: [{A}, {B}]}}\n"
        "  - id: by-label\n    when: {event: transfer, label: [x, y]}\n"
        "  - id: any\n    when: {event: transfer}\n"
    )
    ev = event(from_labels=frozenset({"x", "y"}), to_labels=frozenset({"x"}))
    assert [m.rule.id for m in Evaluator(rules, 1).evaluate(ev)] == [
        "by-token",
        "by-address",
        "by-label",
        "any",
    ]


# --------------------------------------------------------------------------- windows


def fired(evaluator: Evaluator, events: list[ChainEvent]) -> list[str]:
    return [m.event.key for e in events for m in evaluator.evaluate(e) if isinstance(m.event, ChainEvent)]


def test_count_window_fires_once_per_crossing() -> None:
    rules = one_rule("{event: transfer, window: {blocks: 5, count_over: 2, group_by: from}}")
    ev = Evaluator(rules, 1)
    stream = [event(1, 0), event(1, 1), event(2, 0), event(3, 0), event(4, 0, from_address=C)]
    assert fired(ev, stream) == ["1:transfer:2:0"]  # third event of A within 5 blocks
    assert fired(ev, [event(5, 0)]) == []  # window (blocks 1-5) holds 4: stays above, no new alert
    # at block 7 blocks 1-2 aged out: the window (3-7) held {3:0, 5:0} = 2 <= 2, so 7:0 crosses again
    assert fired(ev, [event(7, 0), event(7, 1)]) == ["1:transfer:7:0"]
    # at block 20 everything aged out: a new crossing fires.
    assert fired(ev, [event(20, 0), event(20, 1), event(21, 0), event(22, 0)]) == ["1:transfer:21:0"]


def test_sum_window_with_details() -> None:
    rules = one_rule(
        f"{{event: transfer, token: {T1}, window: {{blocks: 3, sum_over: 2500, group_by: token}}}}"
    )
    ev = Evaluator(rules, 1)
    assert fired(ev, [event(10, 0), event(10, 1), event(11, 0, token=T2)]) == []
    (match,) = ev.evaluate(event(12, 0, amount=600))
    assert match.details["window"] == {
        "blocks": 3,
        "from_block": 10,
        "to_block": 12,
        "group_by": "token",
        "group_key": T1,
        "measure": "sum",
        "threshold": "2500",
        "count": 3,
        "sum": "2600",
    }
    assert match.summary.endswith("; sum 2600 with token 0x11..11 in blocks 10-12 (over 2500)")
    assert fired(ev, [event(13, 0, amount=1)]) == []  # block 10 aged out: 601 <= 2500
    assert fired(ev, [event(13, 1, amount=1899)]) == []  # exactly 2500: not over
    assert fired(ev, [event(13, 2, amount=1)]) == ["1:transfer:13:2"]  # 2501 > 2500: crosses again


def test_reorg_removes_window_contributions() -> None:
    rules = one_rule("{event: transfer, window: {blocks: 10, count_over: 2, group_by: from}}")
    ev = Evaluator(rules, 1)
    assert fired(ev, [event(1, 0), event(2, 0, fork=0)]) == []
    assert fired(ev, [event(3, 0, fork=0)]) == ["1:transfer:3:0"]
    orphaned = (event(2, fork=0).block_hash, event(3, fork=0).block_hash)
    assert ev.on_reorg(ReorgEvent("r1", 1, 1, 2, orphaned, 0)) == []
    assert ev.window_figures("r", 1, A, 3) == (1, 1000)
    # the new branch: the window counts only block 1's event -> the crossing fires on the new branch
    assert fired(ev, [event(2, 0, fork=1)]) == []
    assert fired(ev, [event(3, 0, fork=1)]) == ["1:transfer:3:0"]
    assert ev.window_figures("r", 1, A, 3) == (3, 3000)


def test_window_re_extends_over_aged_out_entries_after_a_reorg() -> None:
    rules = one_rule("{event: transfer, window: {blocks: 2, count_over: 1, group_by: from}}")
    ev = Evaluator(rules, 1)
    assert fired(ev, [event(1, 0), event(2, 0), event(3, 0)]) == ["1:transfer:2:0", "1:transfer:3:0"]
    orphaned = (event(2).block_hash, event(3).block_hash)
    ev.on_reorg(ReorgEvent("r1", 1, 1, 2, orphaned, 0))
    # the new block 2's window (blocks 1-2) holds block 1's event again, which had aged out at 3
    assert fired(ev, [event(2, 0, fork=1)]) == ["1:transfer:2:0"]
    assert ev.window_figures("r", 1, A, 2) == (2, 2000)


def test_replayed_event_is_not_counted_twice() -> None:
    rules = one_rule("{event: transfer, window: {blocks: 10, count_over: 1}}")
    ev = Evaluator(rules, 1)
    stream = [event(1, 0), event(1, 1), event(2, 0)]
    assert fired(ev, stream) == ["1:transfer:1:1"]
    assert fired(ev, stream) == ["1:transfer:1:1"]  # the same decisions, no double counting
    assert ev.window_figures("r", 1, "", 2) == (3, 3000)


def test_window_memory_is_bounded() -> None:
    rules = one_rule("{event: transfer, window: {blocks: 10, count_over: 100, group_by: from}}")
    ev = Evaluator(rules, 1, reorg_horizon=5)
    for n in range(1, 2001):
        for i in range(5):
            ev.evaluate(event(n, i, from_address=f"0x{n * 5 + i:040x}"))
    assert ev.window_entries() <= 5 * (10 + 5 + 1)


# ---- property: random streams with random reorgs vs a brute-force reference


@dataclass
class _Ref:
    """Brute force: the canonical events so far; a window is recomputed from scratch."""

    blocks: int
    by_count: bool
    threshold: int
    canonical: list[ChainEvent] = dataclasses.field(default_factory=list)

    def figures(self, group: str, number: int) -> tuple[int, int]:
        inside = [
            e
            for e in self.canonical
            if e.from_address == group and number - self.blocks < e.block_number <= number
        ]
        return len(inside), sum(e.amount for e in inside)

    def add(self, e: ChainEvent) -> bool:
        count, total = self.figures(e.from_address, e.block_number)
        before = count if self.by_count else total
        after = before + (1 if self.by_count else e.amount)
        self.canonical.append(e)
        return before <= self.threshold < after

    def reorg(self, ancestor: int) -> None:
        self.canonical = [e for e in self.canonical if e.block_number <= ancestor]


_block = st.tuples(
    st.just("block"), st.lists(st.tuples(st.sampled_from([A, B]), st.integers(0, 9)), min_size=1, max_size=4)
)
steps = st.lists(
    st.one_of(
        _block,
        _block,
        st.tuples(st.just("block"), st.just([])),
        st.tuples(st.just("skip"), st.integers(1, 4)),
        st.tuples(st.just("reorg"), st.integers(1, 5)),
    ),
    max_size=50,
)


@settings(max_examples=300, deadline=None)
@given(
    blocks=st.integers(1, 6),
    by_count=st.booleans(),
    threshold=st.integers(0, 12),
    steps=steps,
)
def test_windows_match_brute_force_through_reorgs(
    blocks: int, by_count: bool, threshold: int, steps: list[tuple[str, Any]]
) -> None:
    measure = f"count_over: {threshold}" if by_count else f"sum_over: {threshold}"
    rules = one_rule(f"{{event: transfer, window: {{blocks: {blocks}, {measure}, group_by: from}}}}")
    ev = Evaluator(rules, 1, reorg_horizon=8)
    ref = _Ref(blocks, by_count, threshold)
    head, fork, forks = 0, 0, {0: 0}  # forks: block number -> fork id of its canonical block
    for kind, arg in steps:
        if kind == "skip":
            head += arg
            continue
        if kind == "reorg":
            depth = min(arg, head)
            if depth == 0:
                continue
            ancestor = head - depth
            orphaned = tuple(event(n, fork=forks.get(n, 0)).block_hash for n in range(ancestor + 1, head + 1))
            ev.on_reorg(ReorgEvent(f"reorg-{fork}", 1, ancestor, depth, orphaned, 0))
            ref.reorg(ancestor)
            head, fork = ancestor, fork + 1
            continue
        head += 1
        forks[head] = fork
        for i, (sender, amount) in enumerate(arg):
            e = event(head, i, fork=fork, from_address=sender, amount=amount)
            expected = ref.add(e)
            got = [m for m in ev.evaluate(e) if m.rule.id == "r"]
            assert bool(got) == expected, (e.key, ref.figures(sender, head))
            if got:
                window = got[0].details["window"]
                count, total = ref.figures(sender, head)
                assert (window["count"], window["sum"]) == (count, str(total))
        for sender in (A, B):
            assert ev.window_figures("r", 1, sender, head) == ref.figures(sender, head)


# ---- property: the index never changes the result


CONDITION_POOL = [
    f"from: {A}",
    f"to: {B}",
    f"address: [{A}, {C}]",
    f"token: {T2}",
    "action: [mint, burn]",
    "label: whale",
    "from_label: cex",
    "to_label: [whale, cex]",
    "min_amount: 5",
    "max_amount: 7",
    "min_usd: 3",
    "window: {blocks: 3, count_over: 2, group_by: to}",
    "window: {blocks: 4, sum_over: 10, group_by: token}",
]


@settings(max_examples=100, deadline=None)
@given(
    rule_conditions=st.lists(st.lists(st.sampled_from(CONDITION_POOL), unique=True, max_size=3), max_size=12),
    events=st.lists(
        st.tuples(
            st.sampled_from([A, B, C]),
            st.sampled_from([A, B, C]),
            st.sampled_from([T1, T2]),
            st.sampled_from(["transfer", "mint", "burn"]),
            st.integers(0, 10),
            st.sets(st.sampled_from(["whale", "cex"])),
            st.sets(st.sampled_from(["whale", "cex"])),
            st.one_of(st.none(), st.integers(0, 6)),
        ),
        max_size=40,
    ),
)
def test_index_gives_the_same_matches_as_naive(
    rule_conditions: list[list[str]], events: list[tuple[Any, ...]]
) -> None:
    text = ""
    for i, conditions in enumerate(rule_conditions):
        if sum(c.startswith("window") for c in conditions) > 1:
            conditions = [c for c in conditions if not c.startswith("window")]
        text += f"  - id: r{i}\n    when: {{event: transfer{''.join(', ' + c for c in conditions)}}}\n"
    rules = ruleset(text) if text else RuleSet()
    fast, naive = Evaluator(rules, 2), Evaluator(rules, 2, use_index=False)
    for n, (frm, to, token, action, amount, fl, tl, usd) in enumerate(events):
        e = event(
            n // 3,
            n % 3,
            from_address=frm,
            to_address=to,
            token=token,
            action=action,
            amount=amount,
            from_labels=frozenset(fl),
            to_labels=frozenset(tl),
            usd_value=None if usd is None else Decimal(usd),
        )
        assert [m.alert_id for m in fast.evaluate(e)] == [m.alert_id for m in naive.evaluate(e)]


# --------------------------------------------------------------------------- reorg and lag rules


def test_reorg_rules_by_depth() -> None:
    rules = ruleset(
        "  - id: any\n    when: {event: reorg}\n"
        "  - id: deep\n    tier: finalized\n    when: {event: reorg, min_depth: 3}\n"
        "  - id: t\n    when: {event: transfer}\n"
    )
    ev = Evaluator(rules, 5)
    shallow = ReorgEvent("1:reorg:100:a", 1, 98, 2, ("0x1", "0x2"), 0)
    deep = ReorgEvent("1:reorg:100:b", 1, 97, 3, ("0x1", "0x2", "0x3"), 0)
    assert [m.rule.id for m in ev.on_reorg(shallow)] == ["any"]
    matches = ev.on_reorg(deep)
    assert [(m.rule.id, m.tier, m.event_type) for m in matches] == [
        ("any", "instant", "reorg"),
        ("deep", "finalized", "reorg"),
    ]
    assert matches[1].alert_id == alert_id("deep", 5, deep.key)
    assert "reorg of depth 3" in matches[1].summary
    assert json.loads(json.dumps(matches[1].details)) == matches[1].details


def test_lag_rules_fire_on_crossing_only() -> None:
    rules = ruleset(
        "  - id: blocks\n    when: {event: lag, min_blocks: 10}\n"
        "  - id: both\n    when: {event: lag, min_blocks: 10, min_seconds: 30}\n"
    )
    ev = Evaluator(rules, 1)

    def lag(head: int, blocks: int, seconds: float) -> list[tuple[str, str]]:
        return [
            (m.rule.id, m.event.key) for m in ev.on_lag(LagReading(f"1:lag:{head}", 1, head, blocks, seconds))
        ]

    assert lag(1, 5, 60.0) == []
    assert lag(2, 10, 5.0) == [("blocks", "1:lag:2")]
    assert lag(3, 12, 35.0) == [("both", "1:lag:3")]
    assert lag(4, 20, 50.0) == []  # still above: nothing
    assert lag(5, 3, 50.0) == []  # dropped back
    assert lag(6, 11, 31.0) == [("blocks", "1:lag:6"), ("both", "1:lag:6")]


def test_no_rules_no_matches() -> None:
    ev = Evaluator(RuleSet(), 0)
    assert ev.evaluate(event()) == []
    assert ev.on_reorg(ReorgEvent("k", 1, 1, 1, ("0x1",), 0)) == []
    assert ev.on_lag(LagReading("k", 1, 1, 100, 100.0)) == []


# --------------------------------------------------------------------------- alert ids


def test_alert_ids_are_deterministic_and_distinct() -> None:
    a = alert_id("big", 3, "1:transfer:812:4")
    assert a == alert_id("big", 3, "1:transfer:812:4")
    assert len(a) == 64 and int(a, 16) >= 0
    others = {
        alert_id("big", 4, "1:transfer:812:4"),
        alert_id("bigger", 3, "1:transfer:812:4"),
        alert_id("big", 3, "1:transfer:812:5"),
        alert_id("big:3", 3, "1:transfer:812:4"),
    }
    assert a not in others and len(others) == 4
    assert alert_id("a:b", 1, "c") != alert_id("a", 1, "b:c")
    assert alert_id("a", 11, "c") != alert_id("a", 1, "1c")
    with pytest.raises(TypeError):
        alert_id("a", True, "c")


@given(
    st.lists(st.tuples(st.text(max_size=8), st.integers(0, 3), st.text(max_size=8)), unique=True, max_size=30)
)
def test_alert_ids_distinct_per_triple(triples: list[tuple[str, int, str]]) -> None:
    assert len({alert_id(*t) for t in triples}) == len(triples)


def test_match_is_frozen() -> None:
    (match,) = Evaluator(one_rule("{event: transfer}"), 1).evaluate(event())
    assert isinstance(match, Match)
    with pytest.raises(dataclasses.FrozenInstanceError):
        match.alert_id = "x"  # type: ignore[misc]
