"""The alert rule language: YAML rule files parsed into frozen, validated :class:`Rule` s.

A rule file is ``rules: [ {id, description?, severity?, tier?, when: {...}} ]``; the language is
described, with examples, in ``docs/alert-rules.md``. Parsing keeps line numbers
(:mod:`tracekit.yamlfile`, with YAML 1.1 scalars except that ``0x...`` stays a string) so that
every problem is reported as a :class:`RuleError` whose message is ``FILE:LINE: reason``.
Nothing here does I/O except :func:`load_rule_files`, which reads the files it is given.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from tracekit.errors import TraceError
from tracekit.yamlfile import Loc, YamlDoc, YamlError, load_yaml

TRANSFER = "transfer"
STAKE_CHANGE = "stake_change"
REORG = "reorg"
LAG = "lag"
CHAIN_EVENTS = (TRANSFER, STAKE_CHANGE)
EVENT_TYPES = (TRANSFER, STAKE_CHANGE, REORG, LAG)

SEVERITIES = ("info", "low", "medium", "high", "critical")
TIERS = ("instant", "finalized")
ACTIONS: Mapping[str, tuple[str, ...]] = {
    TRANSFER: ("transfer", "mint", "burn"),
    STAKE_CHANGE: ("delegate", "undelegate"),
}
GROUP_BY = ("from", "to", "token")

_RULE_KEYS = ("id", "description", "severity", "tier", "when")
_CHAIN_KEYS = (
    "action",
    "token",
    "from",
    "to",
    "address",
    "label",
    "from_label",
    "to_label",
    "min_amount",
    "max_amount",
    "min_usd",
    "window",
)
_WHEN_KEYS: Mapping[str, tuple[str, ...]] = {
    TRANSFER: _CHAIN_KEYS,
    STAKE_CHANGE: _CHAIN_KEYS,
    REORG: ("min_depth",),
    LAG: ("min_blocks", "min_seconds"),
}
_ALL_WHEN_KEYS = ("event", *_CHAIN_KEYS, "min_depth", "min_blocks", "min_seconds")
_WINDOW_KEYS = ("blocks", "count_over", "sum_over", "group_by")

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_DIGITS = re.compile(r"[0-9]+")
_FORMAT = 1


class RuleError(TraceError):
    """An alert rule file is invalid."""


# --------------------------------------------------------------------------- the data model


@dataclass(frozen=True, slots=True)
class Window:
    """A sliding window over the last ``blocks`` blocks (``block_number > current - blocks``).

    Exactly one of ``count_over`` (fires when more than N matching events share the group key)
    and ``sum_over`` (fires when their raw amounts sum to more than X) is set. ``group_by`` is
    ``from``, ``to``, ``token`` or None (one group for the whole rule).
    """

    blocks: int
    count_over: int | None = None
    sum_over: int | None = None
    group_by: str | None = None

    @property
    def threshold(self) -> int:
        return self.count_over if self.count_over is not None else (self.sum_over or 0)

    @property
    def counts(self) -> bool:
        """True for a ``count_over`` window, False for a ``sum_over`` one."""
        return self.count_over is not None


@dataclass(frozen=True, slots=True)
class Rule:
    """One validated rule. Unset filters are None; set ones are AND-ed.

    Addresses are lower-case ``0x`` + 40 hex. ``source``/``line`` say where the rule was defined
    (they are not part of :attr:`RuleSet.digest`).
    """

    id: str
    event: str
    description: str = ""
    severity: str = "info"
    tier: str = "instant"
    actions: frozenset[str] | None = None
    tokens: frozenset[str] | None = None
    from_addresses: frozenset[str] | None = None
    to_addresses: frozenset[str] | None = None
    addresses: frozenset[str] | None = None
    labels: frozenset[str] | None = None
    from_labels: frozenset[str] | None = None
    to_labels: frozenset[str] | None = None
    min_amount: int | None = None
    max_amount: int | None = None
    min_usd: Decimal | None = None
    window: Window | None = None
    min_depth: int | None = None
    min_lag_blocks: int | None = None
    min_lag_seconds: float | None = None
    source: str = ""
    line: int = 0

    def to_dict(self, *, positions: bool = True) -> dict[str, Any]:
        """JSON-able form (YAML key names; big integers and decimals as strings)."""
        when: dict[str, Any] = {"event": self.event}
        for key, names in (
            ("action", self.actions),
            ("token", self.tokens),
            ("from", self.from_addresses),
            ("to", self.to_addresses),
            ("address", self.addresses),
            ("label", self.labels),
            ("from_label", self.from_labels),
            ("to_label", self.to_labels),
        ):
            if names is not None:
                when[key] = sorted(names)
        if self.min_amount is not None:
            when["min_amount"] = str(self.min_amount)
        if self.max_amount is not None:
            when["max_amount"] = str(self.max_amount)
        if self.min_usd is not None:
            when["min_usd"] = str(self.min_usd)
        if self.window is not None:
            w: dict[str, Any] = {"blocks": self.window.blocks}
            if self.window.count_over is not None:
                w["count_over"] = self.window.count_over
            if self.window.sum_over is not None:
                w["sum_over"] = str(self.window.sum_over)
            if self.window.group_by is not None:
                w["group_by"] = self.window.group_by
            when["window"] = w
        if self.min_depth is not None:
            when["min_depth"] = self.min_depth
        if self.min_lag_blocks is not None:
            when["min_blocks"] = self.min_lag_blocks
        if self.min_lag_seconds is not None:
            when["min_seconds"] = self.min_lag_seconds
        out: dict[str, Any] = {
            "id": self.id,
            "description": self.description,
            "severity": self.severity,
            "tier": self.tier,
            "when": when,
        }
        if positions:
            out["source"] = self.source
            out["line"] = self.line
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rule:
        """Inverse of :meth:`to_dict` (trusted input: the store's own JSON)."""
        when: Mapping[str, Any] = data["when"]

        def names(key: str) -> frozenset[str] | None:
            value = when.get(key)
            return None if value is None else frozenset(str(v) for v in value)

        def big(key: str) -> int | None:
            value = when.get(key)
            return None if value is None else int(value)

        window = None
        if (w := when.get("window")) is not None:
            window = Window(
                blocks=int(w["blocks"]),
                count_over=None if w.get("count_over") is None else int(w["count_over"]),
                sum_over=None if w.get("sum_over") is None else int(w["sum_over"]),
                group_by=w.get("group_by"),
            )
        return cls(
            id=str(data["id"]),
            event=str(when["event"]),
            description=str(data.get("description", "")),
            severity=str(data.get("severity", "info")),
            tier=str(data.get("tier", "instant")),
            actions=names("action"),
            tokens=names("token"),
            from_addresses=names("from"),
            to_addresses=names("to"),
            addresses=names("address"),
            labels=names("label"),
            from_labels=names("from_label"),
            to_labels=names("to_label"),
            min_amount=big("min_amount"),
            max_amount=big("max_amount"),
            min_usd=None if when.get("min_usd") is None else Decimal(str(when["min_usd"])),
            window=window,
            min_depth=big("min_depth"),
            min_lag_blocks=big("min_blocks"),
            min_lag_seconds=None if when.get("min_seconds") is None else float(when["min_seconds"]),
            source=str(data.get("source", "")),
            line=int(data.get("line", 0)),
        )


@dataclass(frozen=True, slots=True)
class RuleSet:
    """An ordered, id-unique collection of rules (evaluation reports matches in this order)."""

    rules: tuple[Rule, ...] = ()

    def __len__(self) -> int:
        return len(self.rules)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    @property
    def digest(self) -> str:
        """sha256 hex of the normalised rules: sorted by id, without file positions.

        Equal for rule sets that mean the same (comments, key order, list order, address case,
        whitespace, moving a rule between files do not change it), so an unchanged apply is
        detectable.
        """
        normal = sorted((r.to_dict(positions=False) for r in self.rules), key=lambda d: str(d["id"]))
        text = json.dumps(normal, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode("ascii")).hexdigest()

    def to_json(self) -> str:
        """The rule set as a JSON document (``{"format": 1, "rules": [...]}``)."""
        doc = {"format": _FORMAT, "rules": [r.to_dict() for r in self.rules]}
        return json.dumps(doc, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any] | list[Any]) -> RuleSet:
        """Inverse of :meth:`to_json`; also accepts the decoded document (jsonb) or its rules list."""
        doc: Any = json.loads(data) if isinstance(data, str | bytes) else data
        if isinstance(doc, list):  # a bare list of rules
            doc = {"rules": doc}
        if not isinstance(doc, Mapping) or doc.get("format", _FORMAT) != _FORMAT or "rules" not in doc:
            raise RuleError("not a rule set JSON document of format 1")
        return cls(tuple(Rule.from_dict(r) for r in doc["rules"]))


# --------------------------------------------------------------------------- validation


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "mapping", list: "list", bool: "boolean", str: "string", int: "integer"}.get(
        type(value), type(value).__name__
    )


def _suggest(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _value(data: Any, loc: Loc) -> Any:
    for part in loc:
        data = data[part]
    return data


class _Checker:
    """Validation of one rule of a file; every error names the file and line.

    Mappings are named by their location in the file (``("rules", 0, "when")``); ``line`` is where
    a value starts, :meth:`YamlDoc.line` where its key is.
    """

    def __init__(self, doc: YamlDoc, rule_id: str) -> None:
        self.doc = doc
        self.rule_id = rule_id

    def fail(self, line: int, reason: str) -> RuleError:
        return RuleError(f"{self.doc.source}:{line}: rule {self.rule_id!r} {reason}")

    def value(self, loc: Loc) -> Any:
        return _value(self.doc.data, loc)

    def line(self, loc: Loc) -> int:
        return self.doc.value_line(loc)

    def known_keys(self, at: Loc, known: Sequence[str], where: str) -> None:
        for key in self.value(at):
            if key not in known:
                line = self.doc.line((*at, key))
                raise self.fail(line, f"has unknown key {key!r}{where}{_suggest(key, known)}")

    def string(self, at: Loc, key: str) -> str:
        value = self.value((*at, key))
        if not isinstance(value, str):
            raise self.fail(self.line((*at, key)), f"{key!r} must be a string, not {_type_name(value)}")
        return value

    def choice(self, at: Loc, key: str, allowed: Sequence[str]) -> str:
        value = self.string(at, key)
        if value not in allowed:
            raise self.fail(
                self.line((*at, key)),
                f"has invalid {key} {value!r}: expected one of {', '.join(allowed)}"
                f"{_suggest(value, allowed)}",
            )
        return value

    def integer(self, at: Loc, key: str, *, minimum: int = 0, strings: bool = False) -> int:
        """A non-negative (or >= minimum) integer; ``strings`` also accepts a string of digits."""
        value = self.value((*at, key))
        line = self.line((*at, key))
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise self.fail(line, f"{key!r} must be an integer, not {_type_name(value)}")
        if isinstance(value, str):
            text = value.strip().replace("_", "")
            negative = text.startswith("-") and _DIGITS.fullmatch(text[1:]) is not None
            if not strings or not (_DIGITS.fullmatch(text) or negative):
                raise self.fail(line, f"{key!r} must be an integer, not {value!r}")
            value = int(text)
        if value < minimum:
            raise self.fail(line, f"{key!r} must be >= {minimum}, not {value}")
        return value

    def number(self, at: Loc, key: str) -> Decimal:
        """A finite, non-negative decimal (YAML int, float, or a numeric string)."""
        value = self.value((*at, key))
        line = self.line((*at, key))
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self.fail(line, f"{key!r} must be a number, not {_type_name(value)}")
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise self.fail(line, f"{key!r} must be a number, not {value!r}") from None
        if not number.is_finite():
            raise self.fail(line, f"{key!r} must be a finite number, not {value!r}")
        if number < 0:
            raise self.fail(line, f"{key!r} must be >= 0, not {value}")
        return number

    def items(self, at: Loc, key: str) -> list[tuple[Any, int]]:
        """A scalar or a non-empty list, as (item, line) pairs."""
        loc = (*at, key)
        value = self.value(loc)
        if isinstance(value, list):
            if not value:
                raise self.fail(self.line(loc), f"{key!r} is an empty list")
            return [(item, self.doc.line((*loc, index))) for index, item in enumerate(value)]
        return [(value, self.line(loc))]

    def addresses(self, at: Loc, key: str) -> frozenset[str]:
        out = set()
        for item, line in self.items(at, key):
            if not isinstance(item, str) or not _ADDRESS.fullmatch(item):
                raise self.fail(line, f"has a bad address in {key!r}: {item!r} (expected 0x + 40 hex digits)")
            out.add(item.lower())
        return frozenset(out)

    def names(self, at: Loc, key: str, allowed: Sequence[str] | None = None) -> frozenset[str]:
        out = set()
        for item, line in self.items(at, key):
            if not isinstance(item, str) or not item:
                raise self.fail(line, f"{key!r} items must be non-empty strings, not {item!r}")
            if allowed is not None and item not in allowed:
                raise self.fail(
                    line,
                    f"has invalid {key} {item!r}: expected one of {', '.join(allowed)}"
                    f"{_suggest(item, allowed)}",
                )
            out.add(item)
        return frozenset(out)


def _parse_window(c: _Checker, when: Loc) -> Window:
    at = (*when, "window")
    value = c.value(at)
    line = c.line(at)
    if not isinstance(value, dict):
        raise c.fail(line, f"'window' must be a mapping, not {_type_name(value)}")
    c.known_keys(at, _WINDOW_KEYS, " in 'window'")
    if "blocks" not in value:
        raise c.fail(line, "has a window without 'blocks'")
    blocks = c.integer(at, "blocks", minimum=1)
    has_count, has_sum = "count_over" in value, "sum_over" in value
    if has_count and has_sum:
        raise c.fail(line, "has a window with both 'count_over' and 'sum_over' (choose one)")
    if not (has_count or has_sum):
        raise c.fail(line, "has a window without 'count_over' or 'sum_over'")
    count_over = c.integer(at, "count_over") if has_count else None
    sum_over = c.integer(at, "sum_over", strings=True) if has_sum else None
    group_by = c.choice(at, "group_by", GROUP_BY) if "group_by" in value else None
    return Window(blocks=blocks, count_over=count_over, sum_over=sum_over, group_by=group_by)


def _parse_rule(doc: YamlDoc, index: int) -> Rule:
    source = doc.source
    at: Loc = ("rules", index)
    item = _value(doc.data, at)
    line = doc.line(at)
    if not isinstance(item, dict):
        raise RuleError(f"{source}:{line}: each rule must be a mapping, not {_type_name(item)}")
    raw_id = item.get("id")
    if "id" not in item:
        raise RuleError(f"{source}:{line}: rule without 'id'")
    if not isinstance(raw_id, str) or not _RULE_ID.fullmatch(raw_id):
        raise RuleError(
            f"{source}:{doc.value_line((*at, 'id'))}: bad rule id {raw_id!r}"
            " (letters, digits, '_', '.', ':', '-'; at most 128 characters)"
        )
    c = _Checker(doc, raw_id)
    c.known_keys(at, _RULE_KEYS, "")
    description = c.string(at, "description") if "description" in item else ""
    severity = c.choice(at, "severity", SEVERITIES) if "severity" in item else "info"
    tier = c.choice(at, "tier", TIERS) if "tier" in item else "instant"
    if "when" not in item:
        raise c.fail(line, "has no 'when'")
    at_when = (*at, "when")
    when = item["when"]
    if not isinstance(when, dict):
        raise c.fail(c.line(at_when), f"'when' must be a mapping, not {_type_name(when)}")
    if "event" not in when:
        raise c.fail(c.line(at_when), "has no 'event' in 'when'")
    event = c.choice(at_when, "event", EVENT_TYPES)
    allowed = _WHEN_KEYS[event]
    for key in when:
        if key == "event" or key in allowed:
            continue
        key_line = doc.line((*at_when, key))
        if key in _ALL_WHEN_KEYS:
            owners = sorted({e for e, keys in _WHEN_KEYS.items() if key in keys})
            raise c.fail(key_line, f"has {key!r}, which applies to {' and '.join(owners)} rules, not {event}")
        raise c.fail(key_line, f"has unknown key {key!r}{_suggest(key, ('event', *allowed))}")
    fields: dict[str, Any] = {}
    if event in CHAIN_EVENTS:
        if "action" in when:
            fields["actions"] = c.names(at_when, "action", ACTIONS[event])
        for key, name in (("token", "tokens"), ("from", "from_addresses"), ("to", "to_addresses")):
            if key in when:
                fields[name] = c.addresses(at_when, key)
        if "address" in when:
            fields["addresses"] = c.addresses(at_when, "address")
        for key, name in (("label", "labels"), ("from_label", "from_labels"), ("to_label", "to_labels")):
            if key in when:
                fields[name] = c.names(at_when, key)
        if "min_amount" in when:
            fields["min_amount"] = c.integer(at_when, "min_amount", strings=True)
        if "max_amount" in when:
            fields["max_amount"] = c.integer(at_when, "max_amount", strings=True)
        low, high = fields.get("min_amount"), fields.get("max_amount")
        if low is not None and high is not None and high < low:
            raise c.fail(c.line((*at_when, "max_amount")), "has 'max_amount' below 'min_amount'")
        if "min_usd" in when:
            fields["min_usd"] = c.number(at_when, "min_usd")
        if "window" in when:
            fields["window"] = _parse_window(c, at_when)
    elif event == REORG:
        fields["min_depth"] = c.integer(at_when, "min_depth", minimum=1) if "min_depth" in when else 1
    else:
        if "min_blocks" not in when and "min_seconds" not in when:
            raise c.fail(c.line(at_when), "is a lag rule without 'min_blocks' or 'min_seconds'")
        if "min_blocks" in when:
            fields["min_lag_blocks"] = c.integer(at_when, "min_blocks", minimum=1)
        if "min_seconds" in when:
            seconds = c.number(at_when, "min_seconds")
            if seconds <= 0:
                raise c.fail(c.line((*at_when, "min_seconds")), "'min_seconds' must be > 0")
            fields["min_lag_seconds"] = float(seconds)
    return Rule(
        id=raw_id,
        event=event,
        description=description,
        severity=severity,
        tier=tier,
        source=source,
        line=line,
        **fields,
    )


def parse_rules(text: str, source: str) -> list[Rule]:
    """Parse and validate one rule file's text; ``source`` names it in errors (``FILE:LINE``)."""
    try:
        doc = load_yaml(text, source, scalars="yaml1.1")
    except YamlError as exc:
        raise RuleError(str(exc)) from exc
    if doc.issues:
        issue = doc.issues[0]
        raise RuleError(f"{source}:{issue.line}: {issue.message}")
    data = doc.data
    if data is None:
        raise RuleError(f"{source}:1: empty rule file (expected a mapping with a 'rules' list)")
    if not isinstance(data, dict):
        raise RuleError(
            f"{source}:1: a rule file must be a mapping with a 'rules' list, not {_type_name(data)}"
        )
    for key in data:
        if key != "rules":
            line = doc.line((key,))
            raise RuleError(f"{source}:{line}: unknown top-level key {key!r}{_suggest(key, ['rules'])}")
    if "rules" not in data:
        raise RuleError(f"{source}:{doc.value_line(())}: no 'rules' list")
    items = data["rules"]
    if not isinstance(items, list):
        line = doc.value_line(("rules",))
        raise RuleError(f"{source}:{line}: 'rules' must be a list, not {_type_name(items)}")
    rules: list[Rule] = []
    seen: dict[str, Rule] = {}
    for index in range(len(items)):
        rule = _parse_rule(doc, index)
        if (first := seen.get(rule.id)) is not None:
            raise RuleError(
                f"{source}:{rule.line}: duplicate rule id {rule.id!r}"
                f" (first defined at {source}:{first.line})"
            )
        seen[rule.id] = rule
        rules.append(rule)
    return rules


def load_rule_files(paths: Sequence[Path]) -> RuleSet:
    """Read, parse and validate rule files (in the given order) into one id-unique RuleSet."""
    rules: list[Rule] = []
    seen: dict[str, Rule] = {}
    for path in paths:
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RuleError(f"{source}:1: cannot read rule file: {exc}") from exc
        for rule in parse_rules(text, source):
            if (first := seen.get(rule.id)) is not None:
                raise RuleError(
                    f"{source}:{rule.line}: duplicate rule id {rule.id!r}"
                    f" (first defined at {first.source}:{first.line})"
                )
            seen[rule.id] = rule
            rules.append(rule)
    return RuleSet(tuple(rules))
