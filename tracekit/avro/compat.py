"""BACKWARD compatibility of Avro schemas, by the Avro specification's schema resolution rules.

``backward_problems(reader, writer)`` lists why a consumer holding the NEW schema (``reader``)
could fail to read data written with the OLD one (``writer``); an empty list means compatible.
Both schemas are plain JSON values; named types may be defined once and referenced later.

Rules (Avro 1.11 "Schema Resolution"):

* records match by full name (or a reader alias); each reader field must be in the writer (by
  name or reader field alias) or have a default; fields only in the writer are skipped;
* primitives must be equal or promotable: int -> long/float/double, long -> float/double,
  float -> double, string <-> bytes;
* a writer union: every branch must be readable (by some reader branch if the reader is a
  union, else by the reader itself); a writer non-union read by a reader union resolves against
  the first matching reader branch;
* enums match by full name; every writer symbol must be a reader symbol unless the reader has
  a default; fixed types match by full name and size; arrays and maps recurse.

Problems name the field path: ``trace.chain.Block.transactions[].value: type changed from string
to int`` (``[]`` is an array's items, ``{}`` a map's values).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tracekit.avro.names import (
    NAMED_KINDS,
    PRIMITIVES,
    collect_named,
    definition_name,
    full_name,
    namespace_of,
    resolve,
    type_label,
)

PROMOTIONS = frozenset(
    {
        ("int", "long"),
        ("int", "float"),
        ("int", "double"),
        ("long", "float"),
        ("long", "double"),
        ("float", "double"),
        ("string", "bytes"),
        ("bytes", "string"),
    }
)


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return str(schema.get("type"))
    return str(schema)


class _Checker:
    def __init__(self, reader: Any, writer: Any) -> None:
        self.reader_named = collect_named(reader)
        self.writer_named = collect_named(writer)
        self.problems: list[str] = []
        self.active: set[tuple[str, str]] = set()

    # -- matching ---------------------------------------------------------------------------

    def _name(self, schema: dict[str, Any], namespace: str) -> str:
        return definition_name(schema, namespace)

    def _names_match(self, r: dict[str, Any], rns: str, w: dict[str, Any], wns: str) -> bool:
        reader_name = self._name(r, rns)
        writer_name = self._name(w, wns)
        if reader_name == writer_name:
            return True
        aliases = {full_name(alias, namespace_of(reader_name)) for alias in r.get("aliases", [])}
        return writer_name in aliases

    def _matches(self, r: Any, rns: str, w: Any, wns: str, *, exact: bool) -> bool:
        """Shallow match used to pick a reader union branch (Avro's "the schemas match")."""
        rk, wk = _kind(r), _kind(w)
        if rk != wk:
            return not exact and (wk, rk) in PROMOTIONS
        if rk in NAMED_KINDS:
            return self._names_match(r, rns, w, wns)
        return rk != "union"

    def _pick_branch(self, branches: list[Any], rns: str, w: Any, wns: str) -> tuple[Any, str] | None:
        resolved = [resolve(branch, rns, self.reader_named) for branch in branches]
        for exact in (True, False):
            for branch, bns in resolved:
                if self._matches(branch, bns, w, wns, exact=exact):
                    return branch, bns
        return None

    # -- checking ---------------------------------------------------------------------------

    def check(self, reader: Any, rns: str, writer: Any, wns: str, path: str) -> None:
        r, rns = resolve(reader, rns, self.reader_named)
        w, wns = resolve(writer, wns, self.writer_named)
        if isinstance(w, list):
            for branch in w:
                wb, bns = resolve(branch, wns, self.writer_named)
                if isinstance(r, list):
                    picked = self._pick_branch(r, rns, wb, bns)
                    if picked is None:
                        self.problems.append(
                            f"{path}: writer union branch {type_label(wb, bns)} cannot be read by any "
                            f"branch of the reader's {type_label(r, rns)}"
                        )
                    else:
                        self.check(picked[0], picked[1], wb, bns, path)
                elif self._matches(r, rns, wb, bns, exact=False):
                    self.check(r, rns, wb, bns, path)
                else:
                    self.problems.append(
                        f"{path}: type changed from {type_label(w, wns)} to {type_label(r, rns)} "
                        f"(writer union branch {type_label(wb, bns)} cannot be read)"
                    )
            return
        if isinstance(r, list):
            picked = self._pick_branch(r, rns, w, wns)
            if picked is None:
                self.problems.append(
                    f"{path}: type changed from {type_label(w, wns)} to {type_label(r, rns)} "
                    f"(no branch of the reader's union can read {type_label(w, wns)})"
                )
            else:
                self.check(picked[0], picked[1], w, wns, path)
            return
        self._check_concrete(r, rns, w, wns, path)

    def _check_concrete(self, r: Any, rns: str, w: Any, wns: str, path: str) -> None:
        rk, wk = _kind(r), _kind(w)
        if rk != wk:
            if (wk, rk) not in PROMOTIONS:
                self.problems.append(
                    f"{path}: type changed from {type_label(w, wns)} to {type_label(r, rns)}"
                )
            return
        if rk in PRIMITIVES:
            return
        if rk == "array":
            self.check(r.get("items"), rns, w.get("items"), wns, f"{path}[]")
            return
        if rk == "map":
            self.check(r.get("values"), rns, w.get("values"), wns, f"{path}{{}}")
            return
        if rk not in NAMED_KINDS:
            self.problems.append(f"{path}: unknown type {type_label(r, rns)} in the reader schema")
            return
        if not self._names_match(r, rns, w, wns):
            self.problems.append(
                f"{path}: {rk} name changed from {self._name(w, wns)} to {self._name(r, rns)}"
            )
            return
        if rk in ("record", "error"):
            self._check_record(r, rns, w, wns, path)
        elif rk == "enum":
            self._check_enum(r, w, path)
        elif r.get("size") != w.get("size"):
            self.problems.append(
                f"{path}: fixed {self._name(r, rns)} size changed from {w.get('size')} to {r.get('size')}"
            )

    def _check_record(self, r: dict[str, Any], rns: str, w: dict[str, Any], wns: str, path: str) -> None:
        pair = (self._name(r, rns), self._name(w, wns))
        if pair in self.active:
            return  # a recursive type: this pair is already being checked further up
        self.active.add(pair)
        try:
            writer_fields: Mapping[str, Any] = {fld["name"]: fld for fld in w.get("fields", [])}
            for fld in r.get("fields", []):
                field_path = f"{path}.{fld['name']}"
                candidates = [fld["name"], *fld.get("aliases", [])]
                match = next((writer_fields[c] for c in candidates if c in writer_fields), None)
                if match is None:
                    if "default" not in fld:
                        self.problems.append(
                            f"{field_path}: field is missing from the writer schema and has no default"
                        )
                    continue
                self.check(fld.get("type"), rns, match.get("type"), wns, field_path)
        finally:
            self.active.discard(pair)

    def _check_enum(self, r: dict[str, Any], w: dict[str, Any], path: str) -> None:
        reader_symbols = set(r.get("symbols", []))
        removed = [s for s in w.get("symbols", []) if s not in reader_symbols]
        if removed and "default" not in r:
            self.problems.append(
                f"{path}: enum symbol(s) {', '.join(removed)} removed and the reader enum has no default"
            )


def backward_problems(reader: Any, writer: Any) -> list[str]:
    """Why data written with ``writer`` (old) may not be readable with ``reader`` (new); [] if none."""
    checker = _Checker(reader, writer)
    r, rns = resolve(reader, "", checker.reader_named)
    root = definition_name(r, rns) if isinstance(r, dict) and r.get("type") in NAMED_KINDS else "<root>"
    checker.check(reader, "", writer, "", root)
    return checker.problems


def is_backward_compatible(reader: Any, writer: Any) -> bool:
    """True when a reader holding ``reader`` can read everything written with ``writer``."""
    return not backward_problems(reader, writer)
