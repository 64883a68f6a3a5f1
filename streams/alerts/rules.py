"""The alert rule language: YAML rule files parsed into frozen, validated :class:`Rule` s.

A rule file is ``rules: [ {id, description?, severity?, tier?, when: {...}} ]``; the language is
described, with examples, in ``docs/alert-rules.md``. Parsing keeps line numbers (a SafeLoader
that records where each mapping, key and value starts) so that every problem is reported as a
:class:`RuleError` whose message is ``FILE:LINE: reason``. Nothing here does I/O except
:func:`load_rule_files`, which reads the files it is given.
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

import yaml

from tracekit.errors import TraceError

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


# --------------------------------------------------------------------------- YAML with lines


class _Map(dict[Any, Any]):
    """A YAML mapping that knows the (1-based) lines of itself, its keys and its values."""

    line: int
    key_lines: dict[Any, int]
    value_lines: dict[Any, int]


class _Seq(list[Any]):
    """A YAML sequence that knows the lines of itself and of its items."""

    line: int
    item_lines: list[int]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader recording start marks; unquoted ``0x...`` stays a string (addresses)."""

    source = "<rules>"


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> Iterator[_Map]:
    data = _Map()
    data.line = node.start_mark.line + 1
    data.key_lines = {}
    data.value_lines = {}
    yield data
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str | int | float | bool) and key is not None:
            raise RuleError(f"{loader.source}:{line}: mapping keys must be plain scalars")
        if key in data:
            raise RuleError(f"{loader.source}:{line}: duplicate key {key!r}")
        data[key] = loader.construct_object(value_node, deep=True)
        data.key_lines[key] = line
        data.value_lines[key] = value_node.start_mark.line + 1


def _construct_seq(loader: _LineLoader, node: yaml.SequenceNode) -> Iterator[_Seq]:
    data = _Seq()
    data.line = node.start_mark.line + 1
    data.item_lines = [item.start_mark.line + 1 for item in node.value]
    yield data
    data.extend(loader.construct_object(item, deep=True) for item in node.value)


def _construct_int(loader: _LineLoader, node: yaml.ScalarNode) -> int | str:
    text = str(loader.construct_scalar(node))
    if text.lstrip("+-")[:2].lower() == "0x":
        return text
    return int(loader.construct_yaml_int(node))


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)
_LineLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _load_yaml(text: str, source: str) -> Any:
    loader = _LineLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        reason = exc.problem or exc.context or "syntax error"
        raise RuleError(f"{source}:{line}: invalid YAML: {reason}") from exc
    except yaml.YAMLError as exc:
        raise RuleError(f"{source}:1: invalid YAML: {exc}") from exc
    finally:
        loader.dispose()


# --------------------------------------------------------------------------- validation


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {_Map: "mapping", _Seq: "list", bool: "boolean", str: "string", int: "integer"}.get(
        type(value), type(value).__name__
    )


def _suggest(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Checker:
    """Validation of one rule mapping; every error names the file and line."""

    def __init__(self, source: str, rule_id: str, mapping: _Map) -> None:
        self.source = source
        self.rule_id = rule_id
        self.map = mapping

    def fail(self, line: int, reason: str) -> RuleError:
        return RuleError(f"{self.source}:{line}: rule {self.rule_id!r} {reason}")

    @staticmethod
    def line_of(mapping: _Map, key: str) -> int:
        return mapping.value_lines.get(key, mapping.line)

    def known_keys(self, mapping: _Map, known: Sequence[str], where: str) -> None:
        for key in mapping:
            if key not in known:
                line = mapping.key_lines.get(key, mapping.line)
                if not isinstance(key, str):
                    raise self.fail(line, f"has a non-string key {key!r}{where}")
                raise self.fail(line, f"has unknown key {key!r}{where}{_suggest(key, known)}")

    def string(self, mapping: _Map, key: str) -> str:
        value = mapping[key]
        if not isinstance(value, str):
            raise self.fail(self.line_of(mapping, key), f"{key!r} must be a string, not {_type_name(value)}")
        return value

    def choice(self, mapping: _Map, key: str, allowed: Sequence[str]) -> str:
        value = self.string(mapping, key)
        if value not in allowed:
            raise self.fail(
                self.line_of(mapping, key),
                f"has invalid {key} {value!r}: expected one of {', '.join(allowed)}"
                f"{_suggest(value, allowed)}",
            )
        return value

    def integer(self, mapping: _Map, key: str, *, minimum: int = 0, strings: bool = False) -> int:
        """A non-negative (or >= minimum) integer; ``strings`` also accepts a string of digits."""
        value = mapping[key]
        line = self.line_of(mapping, key)
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

    def number(self, mapping: _Map, key: str) -> Decimal:
        """A finite, non-negative decimal (YAML int, float, or a numeric string)."""
        value = mapping[key]
        line = self.line_of(mapping, key)
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

    def items(self, mapping: _Map, key: str) -> list[tuple[Any, int]]:
        """A scalar or a non-empty list, as (item, line) pairs."""
        value = mapping[key]
        line = self.line_of(mapping, key)
        if isinstance(value, _Seq):
            if not value:
                raise self.fail(line, f"{key!r} is an empty list")
            return list(zip(value, value.item_lines, strict=True))
        return [(value, line)]

    def addresses(self, mapping: _Map, key: str) -> frozenset[str]:
        out = set()
        for item, line in self.items(mapping, key):
            if not isinstance(item, str) or not _ADDRESS.fullmatch(item):
                raise self.fail(line, f"has a bad address in {key!r}: {item!r} (expected 0x + 40 hex digits)")
            out.add(item.lower())
        return frozenset(out)

    def names(self, mapping: _Map, key: str, allowed: Sequence[str] | None = None) -> frozenset[str]:
        out = set()
        for item, line in self.items(mapping, key):
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


def _parse_window(c: _Checker, when: _Map) -> Window:
    value = when["window"]
    line = c.line_of(when, "window")
    if not isinstance(value, _Map):
        raise c.fail(line, f"'window' must be a mapping, not {_type_name(value)}")
    c.known_keys(value, _WINDOW_KEYS, " in 'window'")
    if "blocks" not in value:
        raise c.fail(value.line, "has a window without 'blocks'")
    blocks = c.integer(value, "blocks", minimum=1)
    has_count, has_sum = "count_over" in value, "sum_over" in value
    if has_count and has_sum:
        raise c.fail(value.line, "has a window with both 'count_over' and 'sum_over' (choose one)")
    if not (has_count or has_sum):
        raise c.fail(value.line, "has a window without 'count_over' or 'sum_over'")
    count_over = c.integer(value, "count_over") if has_count else None
    sum_over = c.integer(value, "sum_over", strings=True) if has_sum else None
    group_by = c.choice(value, "group_by", GROUP_BY) if "group_by" in value else None
    return Window(blocks=blocks, count_over=count_over, sum_over=sum_over, group_by=group_by)


def _parse_rule(source: str, item: Any, line: int) -> Rule:
    if not isinstance(item, _Map):
        raise RuleError(f"{source}:{line}: each rule must be a mapping, not {_type_name(item)}")
    raw_id = item.get("id")
    if "id" not in item:
        raise RuleError(f"{source}:{item.line}: rule without 'id'")
    if not isinstance(raw_id, str) or not _RULE_ID.fullmatch(raw_id):
        raise RuleError(
            f"{source}:{item.value_lines['id']}: bad rule id {raw_id!r}"
            " (letters, digits, '_', '.', ':', '-'; at most 128 characters)"
        )
    c = _Checker(source, raw_id, item)
    c.known_keys(item, _RULE_KEYS, "")
    description = c.string(item, "description") if "description" in item else ""
    severity = c.choice(item, "severity", SEVERITIES) if "severity" in item else "info"
    tier = c.choice(item, "tier", TIERS) if "tier" in item else "instant"
    if "when" not in item:
        raise c.fail(item.line, "has no 'when'")
    when = item["when"]
    if not isinstance(when, _Map):
        raise c.fail(c.line_of(item, "when"), f"'when' must be a mapping, not {_type_name(when)}")
    if "event" not in when:
        raise c.fail(when.line, "has no 'event' in 'when'")
    event = c.choice(when, "event", EVENT_TYPES)
    allowed = _WHEN_KEYS[event]
    for key in when:
        if key == "event" or key in allowed:
            continue
        key_line = when.key_lines.get(key, when.line)
        if isinstance(key, str) and key in _ALL_WHEN_KEYS:
            owners = sorted({e for e, keys in _WHEN_KEYS.items() if key in keys})
            raise c.fail(key_line, f"has {key!r}, which applies to {' and '.join(owners)} rules, not {event}")
        if not isinstance(key, str):
            raise c.fail(key_line, f"has a non-string key {key!r}")
        raise c.fail(key_line, f"has unknown key {key!r}{_suggest(key, ('event', *allowed))}")
    fields: dict[str, Any] = {}
    if event in CHAIN_EVENTS:
        if "action" in when:
            fields["actions"] = c.names(when, "action", ACTIONS[event])
        for key, name in (("token", "tokens"), ("from", "from_addresses"), ("to", "to_addresses")):
            if key in when:
                fields[name] = c.addresses(when, key)
        if "address" in when:
            fields["addresses"] = c.addresses(when, "address")
        for key, name in (("label", "labels"), ("from_label", "from_labels"), ("to_label", "to_labels")):
            if key in when:
                fields[name] = c.names(when, key)
        if "min_amount" in when:
            fields["min_amount"] = c.integer(when, "min_amount", strings=True)
        if "max_amount" in when:
            fields["max_amount"] = c.integer(when, "max_amount", strings=True)
        low, high = fields.get("min_amount"), fields.get("max_amount")
        if low is not None and high is not None and high < low:
            raise c.fail(c.line_of(when, "max_amount"), "has 'max_amount' below 'min_amount'")
        if "min_usd" in when:
            fields["min_usd"] = c.number(when, "min_usd")
        if "window" in when:
            fields["window"] = _parse_window(c, when)
    elif event == REORG:
        fields["min_depth"] = c.integer(when, "min_depth", minimum=1) if "min_depth" in when else 1
    else:
        if "min_blocks" not in when and "min_seconds" not in when:
            raise c.fail(when.line, "is a lag rule without 'min_blocks' or 'min_seconds'")
        if "min_blocks" in when:
            fields["min_lag_blocks"] = c.integer(when, "min_blocks", minimum=1)
        if "min_seconds" in when:
            seconds = c.number(when, "min_seconds")
            if seconds <= 0:
                raise c.fail(c.line_of(when, "min_seconds"), "'min_seconds' must be > 0")
            fields["min_lag_seconds"] = float(seconds)
    return Rule(
        id=raw_id,
        event=event,
        description=description,
        severity=severity,
        tier=tier,
        source=source,
        line=item.line,
        **fields,
    )


def parse_rules(text: str, source: str) -> list[Rule]:
    """Parse and validate one rule file's text; ``source`` names it in errors (``FILE:LINE``)."""
    doc = _load_yaml(text, source)
    if doc is None:
        raise RuleError(f"{source}:1: empty rule file (expected a mapping with a 'rules' list)")
    if not isinstance(doc, _Map):
        raise RuleError(
            f"{source}:1: a rule file must be a mapping with a 'rules' list, not {_type_name(doc)}"
        )
    for key in doc:
        if key != "rules":
            line = doc.key_lines.get(key, doc.line)
            raise RuleError(f"{source}:{line}: unknown top-level key {key!r}{_suggest(str(key), ['rules'])}")
    if "rules" not in doc:
        raise RuleError(f"{source}:{doc.line}: no 'rules' list")
    items = doc["rules"]
    if not isinstance(items, _Seq):
        line = doc.value_lines["rules"]
        raise RuleError(f"{source}:{line}: 'rules' must be a list, not {_type_name(items)}")
    rules: list[Rule] = []
    seen: dict[str, Rule] = {}
    for item, line in zip(items, items.item_lines, strict=True):
        rule = _parse_rule(source, item, line)
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
