"""The Avro wire contracts: load ``schemas/avro/*.avsc``, expand named references, fingerprint them.

Each ``.avsc`` file holds one top-level record; a file may name a type defined in another file
(``block.avsc`` names ``trace.chain.Transaction``). Every top-level record is expanded so the
first use of each named type carries its full definition: the expanded schema is what gets
parsed by fastavro, put into Parsing Canonical Form, fingerprinted (CRC-64-AVRO, the Avro
single-object encoding's fingerprint) and registered in a schema registry.

The files are read from ``<repo>/schemas/avro`` in a source checkout and from
``tracekit/_schemas/avro`` inside an installed wheel (see ``pyproject.toml``).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import fastavro
import fastavro.schema

from tracekit.avro.names import collect_named, definition_name, expand
from tracekit.errors import SchemaError

SINGLE_OBJECT_MAGIC = b"\xc3\x01"

_CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return tuple(table)


_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """The Avro spec's 64-bit Rabin fingerprint (CRC-64-AVRO) of ``data``, as an unsigned int."""
    fp = _CRC64_EMPTY
    table = _CRC64_TABLE
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def canonical_form(schema: Any) -> str:
    """The Parsing Canonical Form of a (fully expanded) schema."""
    try:
        return str(fastavro.schema.to_parsing_canonical_form(schema))
    except Exception as exc:
        raise SchemaError(f"cannot put schema into canonical form: {exc}") from exc


def fingerprint(schema: Any) -> int:
    """CRC-64-AVRO of the schema's Parsing Canonical Form (unsigned)."""
    return crc64_avro(canonical_form(schema).encode("utf-8"))


@dataclass(frozen=True)
class RecordSchema:
    """One top-level record type: its expanded JSON schema, fastavro parse, canonical form, fingerprint."""

    full_name: str
    schema: dict[str, Any]
    parsed: Any = field(repr=False)
    canonical_form: str = field(repr=False)
    fingerprint: int
    source: str = ""

    @property
    def single_object_header(self) -> bytes:
        """``C3 01`` followed by the 8-byte little-endian fingerprint."""
        return SINGLE_OBJECT_MAGIC + self.fingerprint.to_bytes(8, "little")

    @property
    def schema_json(self) -> str:
        """The expanded schema as compact JSON (what gets registered)."""
        return json.dumps(self.schema, separators=(",", ":"))


def record_schema(schema: Any, source: str = "") -> RecordSchema:
    """Parse one fully expanded top-level record schema (a dict, or its JSON text)."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"{source or 'schema'} is not valid JSON: {exc}") from exc
    if not isinstance(schema, dict) or schema.get("type") not in ("record", "error"):
        raise SchemaError(f"{source or 'schema'} is not a record schema")
    name = definition_name(schema, "")
    try:
        parsed = fastavro.parse_schema(schema, named_schemas={})
    except Exception as exc:
        raise SchemaError(f"{source or name}: invalid Avro schema: {exc}") from exc
    canonical = canonical_form(schema)
    return RecordSchema(
        full_name=name,
        schema=schema,
        parsed=parsed,
        canonical_form=canonical,
        fingerprint=crc64_avro(canonical.encode("utf-8")),
        source=source,
    )


class SchemaSet(Mapping[str, RecordSchema]):
    """Known top-level records by full name, with a fingerprint index for single-object decoding."""

    def __init__(self, records: Mapping[str, RecordSchema]) -> None:
        self._records = dict(records)
        self._by_fingerprint = {rec.fingerprint: rec for rec in self._records.values()}

    def __getitem__(self, name: str) -> RecordSchema:
        return self._records[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def record(self, name: str) -> RecordSchema:
        """The record called ``name``; :class:`SchemaError` if unknown."""
        try:
            return self._records[name]
        except KeyError:
            known = ", ".join(sorted(self._records))
            raise SchemaError(f"unknown record type {name!r} (known: {known})") from None

    def by_fingerprint(self, fp: int) -> RecordSchema | None:
        return self._by_fingerprint.get(fp)


def schema_dir() -> Traversable:
    """``<repo>/schemas/avro`` in a checkout, else ``tracekit/_schemas/avro`` from the wheel."""
    source = Path(__file__).resolve().parents[2] / "schemas" / "avro"
    if source.is_dir():
        return source
    return importlib.resources.files("tracekit") / "_schemas" / "avro"


def read_schema_files(directory: Traversable | None = None) -> dict[str, Any]:
    """The JSON of every ``*.avsc`` file in ``directory`` (default :func:`schema_dir`), by file name."""
    root = schema_dir() if directory is None else directory
    if not root.is_dir():
        raise SchemaError(f"Avro schema directory {root} does not exist")
    files: dict[str, Any] = {}
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".avsc"):
            continue
        try:
            files[entry.name] = json.loads(entry.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise SchemaError(f"cannot read Avro schema {entry.name}: {exc}") from exc
    if not files:
        raise SchemaError(f"no .avsc files in {root}")
    return files


def expand_files(files: Mapping[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Expand the top-level record of each file: ``{full name: (file name, expanded schema)}``."""
    named: dict[str, Any] = {}
    tops: dict[str, str] = {}
    for source, schema in files.items():
        if not isinstance(schema, dict) or schema.get("type") not in ("record", "error"):
            raise SchemaError(f"{source}: the top-level schema must be a record")
        try:
            defined = collect_named(schema)
        except SchemaError as exc:
            raise SchemaError(f"{source}: {exc}") from exc
        for name in defined:
            if name in named:
                raise SchemaError(f"{source}: named type {name} is also defined in another file")
        named.update(defined)
        top = definition_name(schema, "")
        if top in tops.values():
            raise SchemaError(f"{source}: record {top} is defined by two files")
        tops[source] = top
    expanded: dict[str, tuple[str, dict[str, Any]]] = {}
    for source, schema in files.items():
        try:
            expanded[tops[source]] = (source, expand(schema, named))
        except SchemaError as exc:
            raise SchemaError(f"{source}: {exc}") from exc
    return expanded


def build_schema_set(files: Mapping[str, Any]) -> SchemaSet:
    """Expand, parse and fingerprint the top-level records of ``{file name: schema JSON}``."""
    return SchemaSet(
        {name: record_schema(schema, source) for name, (source, schema) in expand_files(files).items()}
    )


def load_schemas(directory: Traversable | None = None) -> SchemaSet:
    """Load the schema files of ``directory`` (default: the packaged contracts, cached)."""
    if directory is None:
        return default_schemas()
    return build_schema_set(read_schema_files(directory))


@functools.cache
def default_schemas() -> SchemaSet:
    """The repository's contracts (``schemas/avro``), loaded once per process."""
    return build_schema_set(read_schema_files())
