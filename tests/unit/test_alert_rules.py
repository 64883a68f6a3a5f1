"""The alert rule language: parsing, normalisation, digest, JSON round trip, FILE:LINE errors."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from streams.alerts.rules import Rule, RuleError, RuleSet, Window, load_rule_files, parse_rules
from tracekit.errors import TraceError

A = "0x" + "ab" * 20
B = "0x" + "cd" * 20
TOKEN = "0xdAC17F958D2ee523a2206206994597C13D831ec7"

FULL = f"""\
# every kind of rule
rules:
  - id: whale-out
    description: big transfers out of a known whale
    severity: high
    tier: finalized
    when:
      event: transfer
      action: [transfer, burn]
      token: {TOKEN}
      from: ["{A}"]
      to: "{B}"
      label: whale
      from_label: [exchange, whale]
      to_label: cold
      min_amount: "1000"
      max_amount: 1_000_000
      min_usd: 2500.50
  - id: either-side
    when: {{event: transfer, address: [{A}, {B}]}}
  - id: busy-sender
    when:
      event: transfer
      window: {{blocks: 10, count_over: 5, group_by: from}}
  - id: token-volume
    when:
      event: stake_change
      action: delegate
      window: {{blocks: 100, sum_over: "1000000000000000000000000", group_by: token}}
  - id: deep-reorg
    severity: critical
    when: {{event: reorg, min_depth: 3}}
  - id: any-reorg
    when: {{event: reorg}}
  - id: lagging
    when: {{event: lag, min_blocks: 20, min_seconds: 30}}
"""


def test_full_file_parses_into_normalised_rules() -> None:
    rules = {r.id: r for r in parse_rules(FULL, "rules/all.yaml")}
    big = rules["whale-out"]
    assert big == Rule(
        id="whale-out",
        event="transfer",
        description="big transfers out of a known whale",
        severity="high",
        tier="finalized",
        actions=frozenset({"transfer", "burn"}),
        tokens=frozenset({TOKEN.lower()}),
        from_addresses=frozenset({A}),
        to_addresses=frozenset({B}),
        labels=frozenset({"whale"}),
        from_labels=frozenset({"exchange", "whale"}),
        to_labels=frozenset({"cold"}),
        min_amount=1000,
        max_amount=1_000_000,
        min_usd=Decimal("2500.50"),
        source="rules/all.yaml",
        line=3,
    )
    assert rules["either-side"].addresses == frozenset({A, B})
    assert rules["either-side"].tier == "instant" and rules["either-side"].severity == "info"
    assert rules["busy-sender"].window == Window(blocks=10, count_over=5, group_by="from")
    assert rules["token-volume"].window == Window(blocks=100, sum_over=10**24, group_by="token")
    assert rules["deep-reorg"].min_depth == 3
    assert rules["any-reorg"].min_depth == 1
    assert (rules["lagging"].min_lag_blocks, rules["lagging"].min_lag_seconds) == (20, 30.0)
    assert [r.line for r in rules.values()] == [3, 19, 21, 25, 30, 33, 35]


def test_json_round_trip_and_digest() -> None:
    ruleset = RuleSet(tuple(parse_rules(FULL, "rules/all.yaml")))
    text = ruleset.to_json()
    assert RuleSet.from_json(text) == ruleset
    assert RuleSet.from_json(json.loads(text)) == ruleset
    assert RuleSet.from_json(text).digest == ruleset.digest
    assert RuleSet.from_json({"rules": []}) == RuleSet()
    with pytest.raises(RuleError):
        RuleSet.from_json({"format": 99, "rules": []})


def test_digest_ignores_presentation_but_not_meaning() -> None:
    one = f"rules:\n  - id: a\n    when: {{event: transfer, from: [{A}, {B}], min_amount: 5}}\n"
    same = (
        "# comment\nrules:\n\n  - when:\n      min_amount: '5'\n"
        f"      from: [{B.upper().replace('0X', '0x')}, {A}]\n      event: transfer\n    id: a\n"
    )
    other = f"rules:\n  - id: a\n    when: {{event: transfer, from: [{A}, {B}], min_amount: 6}}\n"
    digest = RuleSet(tuple(parse_rules(one, "x.yaml"))).digest
    assert RuleSet(tuple(parse_rules(same, "y.yaml"))).digest == digest
    assert RuleSet(tuple(parse_rules(other, "x.yaml"))).digest != digest
    assert len(digest) == 64


def test_load_rule_files_keeps_file_order(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("rules:\n  - id: one\n    when: {event: reorg}\n")
    (tmp_path / "b.yaml").write_text("rules:\n  - id: two\n    when: {event: lag, min_blocks: 5}\n")
    ruleset = load_rule_files([tmp_path / "b.yaml", tmp_path / "a.yaml"])
    assert [r.id for r in ruleset] == ["two", "one"]
    assert ruleset.rules[1].source == str(tmp_path / "a.yaml")
    assert parse_rules("rules: []\n", "empty-list.yaml") == []


def test_duplicate_id_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("rules:\n  - id: big\n    when: {event: reorg}\n")
    (tmp_path / "b.yaml").write_text(
        "rules:\n  - id: other\n    when: {event: reorg}\n"
        "  - id: big\n    when: {event: lag, min_blocks: 1}\n"
    )
    with pytest.raises(RuleError) as info:
        load_rule_files([tmp_path / "a.yaml", tmp_path / "b.yaml"])
    assert str(info.value) == (
        f"{tmp_path / 'b.yaml'}:4: duplicate rule id 'big' (first defined at {tmp_path / 'a.yaml'}:2)"
    )


def test_unreadable_file_is_a_rule_error(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match=r"missing\.yaml:1: cannot read"):
        load_rule_files([tmp_path / "missing.yaml"])


def _rule(when: str, extra: str = "") -> str:
    """A one-rule file: the rule starts on line 2, its 'when' body on line 5."""
    return f"rules:\n  - id: r\n{extra}    when:\n      event: transfer\n{when}"


BAD = [
    pytest.param("rules:\n  - id: a\n    when: {event: transfer\n", 4, "invalid YAML", id="yaml-syntax"),
    pytest.param("rules:\n  - id: a\n   bad: [\n", 3, "invalid YAML", id="yaml-indent"),
    pytest.param(
        _rule("      min_amont: 5\n"),
        5,
        "rule 'r' has unknown key 'min_amont' (did you mean 'min_amount'?)",
        id="unknown-key-suggestion",
    ),
    pytest.param(_rule("      from: 0x1234\n"), 5, "bad address in 'from': '0x1234'", id="bad-address"),
    pytest.param(
        _rule(f"      to:\n        - {A}\n        - 0x{'g' * 40}\n"),
        7,
        "bad address in 'to'",
        id="bad-address-item",
    ),
    pytest.param(_rule("      min_amount: -5\n"), 5, "'min_amount' must be >= 0", id="negative-amount"),
    pytest.param(_rule("      max_amount: '-5'\n"), 5, "'max_amount' must be >= 0", id="negative-amount-str"),
    pytest.param(
        "rules:\n  - id: r\n    when:\n      event: transfers\n",
        4,
        "invalid event 'transfers': expected one of transfer, stake_change, reorg, lag"
        " (did you mean 'transfer'?)",
        id="unknown-event",
    ),
    pytest.param(
        _rule("      window:\n        count_over: 3\n"),
        6,
        "has a window without 'blocks'",
        id="window-no-blocks",
    ),
    pytest.param(
        _rule("      window: {blocks: 5, count_over: 3, sum_over: 10}\n"),
        5,
        "both 'count_over' and 'sum_over'",
        id="window-count-and-sum",
    ),
    pytest.param(
        _rule("      window: {blocks: 5}\n"), 5, "without 'count_over' or 'sum_over'", id="window-no-measure"
    ),
    pytest.param(
        _rule("      window: {blocks: 0, count_over: 3}\n"),
        5,
        "'blocks' must be >= 1",
        id="window-zero-blocks",
    ),
    pytest.param(
        _rule("      window: {blocks: 5, count_over: 3, group_by: sender}\n"),
        5,
        "invalid group_by 'sender'",
        id="window-bad-group-by",
    ),
    pytest.param(
        _rule("", "    tier: finalised\n"),
        3,
        "rule 'r' has invalid tier 'finalised': expected one of instant, finalized"
        " (did you mean 'finalized'?)",
        id="tier-typo",
    ),
    pytest.param(_rule("", "    severity: urgent\n"), 3, "invalid severity 'urgent'", id="severity"),
    pytest.param(
        _rule("      min_depth: 3\n"),
        5,
        "rule 'r' has 'min_depth', which applies to reorg rules, not transfer",
        id="min-depth-on-transfer",
    ),
    pytest.param(
        "rules:\n  - id: r\n    when:\n      event: reorg\n      window: {blocks: 5, count_over: 1}\n",
        5,
        "'window', which applies to stake_change and transfer rules, not reorg",
        id="window-on-reorg",
    ),
    pytest.param(
        "rules:\n  - id: r\n    when:\n      event: lag\n",
        4,
        "lag rule without 'min_blocks' or 'min_seconds'",
        id="lag-without-threshold",
    ),
    pytest.param(
        "rules:\n  - id: r\n    when:\n      event: stake_change\n      action: mint\n",
        5,
        "invalid action 'mint': expected one of delegate, undelegate",
        id="action-for-other-event",
    ),
    pytest.param(
        _rule("      min_amount: 10\n      max_amount: 5\n"),
        6,
        "'max_amount' below 'min_amount'",
        id="max-below-min",
    ),
    pytest.param(_rule("      min_usd: lots\n"), 5, "'min_usd' must be a number", id="min-usd-nan"),
    pytest.param(_rule("      min_amount: 1.5\n"), 5, "'min_amount' must be an integer", id="float-amount"),
    pytest.param(_rule("      label: []\n"), 5, "'label' is an empty list", id="empty-list"),
    pytest.param("", 1, "empty rule file", id="empty-file"),
    pytest.param("# nothing but a comment\n", 1, "empty rule file", id="comment-only-file"),
    pytest.param("rules:\n  id: a\n", 2, "'rules' must be a list, not mapping", id="rules-not-a-list"),
    pytest.param("- id: a\n", 1, "must be a mapping with a 'rules' list", id="top-level-list"),
    pytest.param(
        "rule: []\n", 1, "unknown top-level key 'rule' (did you mean 'rules'?)", id="top-level-typo"
    ),
    pytest.param("rules:\n  - just-a-string\n", 2, "each rule must be a mapping", id="rule-not-mapping"),
    pytest.param("rules:\n  - id: r\n", 2, "rule 'r' has no 'when'", id="no-when"),
    pytest.param("rules:\n  - when: {event: reorg}\n", 2, "rule without 'id'", id="no-id"),
    pytest.param("rules:\n  - id: 'a b'\n    when: {event: reorg}\n", 2, "bad rule id 'a b'", id="bad-id"),
    pytest.param(
        "rules:\n  - id: r\n    when: {event: reorg}\n  - id: r\n    when: {event: reorg}\n",
        4,
        "duplicate rule id 'r' (first defined at f.yaml:2)",
        id="duplicate-id-in-file",
    ),
    pytest.param(
        _rule("      token: " + A + "\n      token: " + B + "\n"), 6, "duplicate key 'token'", id="dup-key"
    ),
]


@pytest.mark.parametrize(("text", "line", "reason"), BAD)
def test_bad_rules_report_file_and_line(text: str, line: int, reason: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_rules(text, "f.yaml")
    message = str(info.value)
    assert message.startswith(f"f.yaml:{line}: "), message
    assert reason in message, message
    assert isinstance(info.value, TraceError)


def test_unquoted_hex_address_is_an_address_not_an_integer() -> None:
    (rule,) = parse_rules(f"rules:\n  - id: r\n    when: {{event: transfer, token: {TOKEN}}}\n", "f.yaml")
    assert rule.tokens == frozenset({TOKEN.lower()})
