"""Walking Avro schema trees: full names, named-type tables, reference expansion, labels.

Shared by the contract loader (:mod:`tracekit.avro.schemas`), the compatibility checker and the
encode-error explainer. Schemas here are plain JSON values (``str``, ``list`` or ``dict``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tracekit.errors import SchemaError

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED_KINDS = frozenset({"record", "error", "enum", "fixed"})
CONTAINERS = NAMED_KINDS | {"array", "map"}


def full_name(name: str, namespace: str | None) -> str:
    """Resolve a (possibly short) Avro name against the enclosing namespace."""
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def namespace_of(name: str) -> str:
    return name.rpartition(".")[0]


def definition_name(schema: Mapping[str, Any], namespace: str) -> str:
    name = schema.get("name")
    if not isinstance(name, str) or not name:
        raise SchemaError(f"a {schema.get('type')} type has no name")
    return full_name(name, schema.get("namespace", namespace))


def collect_named(schema: Any, namespace: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every named type (record, enum, fixed) defined anywhere in ``schema``, by full name."""
    found: dict[str, Any] = {} if out is None else out
    if isinstance(schema, list):
        for branch in schema:
            collect_named(branch, namespace, found)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in NAMED_KINDS:
            name = definition_name(schema, namespace)
            if name in found and found[name] is not schema:
                raise SchemaError(f"named type {name} is defined twice")
            found[name] = schema
            if kind in ("record", "error"):
                for fld in schema.get("fields", []):
                    collect_named(fld.get("type"), namespace_of(name), found)
        elif kind == "array":
            collect_named(schema.get("items"), namespace, found)
        elif kind == "map":
            collect_named(schema.get("values"), namespace, found)
        elif isinstance(kind, dict | list):
            collect_named(kind, namespace, found)
    return found


def expand(
    schema: Any, named: Mapping[str, Any], namespace: str = "", defined: set[str] | None = None
) -> Any:
    """Return ``schema`` with each named type's definition inlined at its first use.

    ``named`` maps full names to definitions (as found by :func:`collect_named`, possibly across
    several files). Later uses stay references by full name, as Avro requires.
    """
    seen: set[str] = set() if defined is None else defined
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return schema
        name = full_name(schema, namespace)
        if name in seen:
            return name
        if name not in named:
            raise SchemaError(f"unknown type {schema!r} (resolved as {name})")
        definition = dict(named[name])
        if "namespace" not in definition and "." not in definition["name"]:
            definition["name"] = name
        return expand(definition, named, namespace_of(name), seen)
    if isinstance(schema, list):
        return [expand(branch, named, namespace, seen) for branch in schema]
    if not isinstance(schema, dict):
        raise SchemaError(f"not an Avro schema: {schema!r}")
    kind = schema.get("type")
    out = dict(schema)
    if kind in NAMED_KINDS:
        name = definition_name(schema, namespace)
        seen.add(name)
        if kind in ("record", "error"):
            inner = namespace_of(name)
            out["fields"] = [
                {**fld, "type": expand(fld.get("type"), named, inner, seen)}
                for fld in schema.get("fields", [])
            ]
    elif kind == "array":
        out["items"] = expand(schema.get("items"), named, namespace, seen)
    elif kind == "map":
        out["values"] = expand(schema.get("values"), named, namespace, seen)
    elif isinstance(kind, dict | list) or (isinstance(kind, str) and kind not in PRIMITIVES):
        return expand(kind, named, namespace, seen)
    return out


def resolve(schema: Any, namespace: str, named: Mapping[str, Any]) -> tuple[Any, str]:
    """Follow name references and ``{"type": ...}`` wrappers down to a concrete schema.

    Returns the concrete schema (a primitive name, a union list, or a named/array/map dict; an
    unknown name is returned as is) and the namespace names inside it resolve against.
    """
    while True:
        if isinstance(schema, str) and schema not in PRIMITIVES:
            name = full_name(schema, namespace)
            if name not in named:
                return schema, namespace
            schema, namespace = named[name], namespace_of(name)
        elif isinstance(schema, dict) and schema.get("type") not in CONTAINERS:
            schema = schema.get("type")
        elif isinstance(schema, dict) and schema.get("type") in NAMED_KINDS:
            return schema, namespace_of(definition_name(schema, namespace))
        else:
            return schema, namespace


def type_label(schema: Any, namespace: str = "") -> str:
    """A short human label: ``string``, ``trace.chain.Log``, ``array<long>``, ``[null, string]``."""
    if isinstance(schema, str):
        return schema if schema in PRIMITIVES else full_name(schema, namespace)
    if isinstance(schema, list):
        return "[" + ", ".join(type_label(b, namespace) for b in schema) + "]"
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind in NAMED_KINDS:
            return definition_name(schema, namespace)
        if kind == "array":
            return f"array<{type_label(schema.get('items'), namespace)}>"
        if kind == "map":
            return f"map<{type_label(schema.get('values'), namespace)}>"
        return type_label(kind, namespace)
    return repr(schema)
