"""Explain why a datum does not fit a schema, naming the offending field path.

Only used after fastavro's writer has rejected a datum (the hot path never validates twice), to
turn messages such as ``must be string on field v on field txs on field txs`` into
``trace.chain.Block.transactions[3].value: expected string, got int (5)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tracekit.avro.names import PRIMITIVES, collect_named, definition_name, resolve, type_label

_INT_RANGE = (-(2**31), 2**31 - 1)
_LONG_RANGE = (-(2**63), 2**63 - 1)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Explainer:
    def __init__(self, schema: Any) -> None:
        self.named = collect_named(schema)

    def problem(self, schema: Any, datum: Any, path: str, namespace: str) -> str | None:
        schema, namespace = resolve(schema, namespace, self.named)
        if isinstance(schema, list):
            for branch in schema:
                if self.problem(branch, datum, path, namespace) is None:
                    return None
            return f"{path}: {_short(datum)} matches no branch of union {type_label(schema)}"
        kind = schema.get("type") if isinstance(schema, dict) else schema
        if kind in PRIMITIVES:
            return self._primitive(kind, datum, path)
        if kind in ("record", "error"):
            return self._record(schema, datum, path, namespace)
        if kind == "enum":
            if datum not in schema.get("symbols", []):
                return f"{path}: {_short(datum)} is not a symbol of enum {schema.get('name')}"
            return None
        if kind == "fixed":
            size = schema.get("size")
            if not isinstance(datum, bytes | bytearray) or len(datum) != size:
                return f"{path}: expected {size} bytes (fixed {schema.get('name')}), got {_short(datum)}"
            return None
        if kind == "array":
            if not isinstance(datum, Sequence) or isinstance(datum, str | bytes):
                return f"{path}: expected an array, got {type(datum).__name__}"
            for i, item in enumerate(datum):
                found = self.problem(schema.get("items"), item, f"{path}[{i}]", namespace)
                if found:
                    return found
            return None
        if kind == "map":
            if not isinstance(datum, Mapping):
                return f"{path}: expected a map, got {type(datum).__name__}"
            for key, item in datum.items():
                if not isinstance(key, str):
                    return f"{path}: map key {_short(key)} is not a string"
                found = self.problem(schema.get("values"), item, f"{path}[{key!r}]", namespace)
                if found:
                    return found
            return None
        return f"{path}: unsupported schema {type_label(schema)}"

    @staticmethod
    def _primitive(kind: str, datum: Any, path: str) -> str | None:
        ok: bool
        if kind == "null":
            ok = datum is None
        elif kind == "boolean":
            ok = isinstance(datum, bool)
        elif kind in ("int", "long"):
            ok = isinstance(datum, int) and not isinstance(datum, bool)
            low, high = _INT_RANGE if kind == "int" else _LONG_RANGE
            if ok and not low <= datum <= high:
                return f"{path}: {datum} is out of range for {kind}"
        elif kind in ("float", "double"):
            ok = isinstance(datum, int | float) and not isinstance(datum, bool)
        elif kind == "bytes":
            ok = isinstance(datum, bytes | bytearray | memoryview)
        else:
            ok = isinstance(datum, str)
        if ok:
            return None
        what = "null" if datum is None else type(datum).__name__
        return f"{path}: expected {kind}, got {what} ({_short(datum)})"

    def _record(self, schema: dict[str, Any], datum: Any, path: str, namespace: str) -> str | None:
        if not isinstance(datum, Mapping):
            name = type_label(schema, namespace)
            return f"{path}: expected a {name} record (a mapping), got {type(datum).__name__}"
        names: set[str] = set()
        for fld in schema.get("fields", []):
            names.add(fld["name"])
            field_path = f"{path}.{fld['name']}"
            if fld["name"] not in datum:
                if "default" in fld:
                    continue
                return f"{field_path}: required field is missing"
            found = self.problem(fld["type"], datum[fld["name"]], field_path, namespace)
            if found:
                return found
        extra = sorted(str(key) for key in datum if key not in names)
        if extra:
            return f"{path}: unexpected field(s) {', '.join(extra)} not in the schema"
        return None


def explain(schema: dict[str, Any], datum: Any, path: str | None = None) -> str | None:
    """The first reason ``datum`` does not fit the expanded record ``schema``, or None if it fits."""
    root = path or definition_name(schema, "")
    return _Explainer(schema).problem(schema, datum, root, "")
