"""Encode and decode Trace's Avro events; every message names its schema on the wire.

Two framings:

* Avro single-object encoding (no schema registry configured): ``C3 01``, the writer schema's
  8-byte little-endian CRC-64-AVRO fingerprint, then the Avro binary body;
* Confluent wire format (a registry URL is configured): ``00``, the 4-byte big-endian registry
  schema id, then the body. Schemas are registered on first use under the subject
  ``{topic}-{record full name}`` (TopicRecordNameStrategy).

:meth:`AvroCodec.decode` accepts both framings whatever the configuration. A payload it cannot
decode raises :class:`tracekit.errors.DecodeError` naming the problem; a datum that does not fit
its schema raises :class:`tracekit.errors.SchemaError` naming the field. A registry that is needed
but unreachable raises :class:`tracekit.avro.registry.RegistryUnavailable` (retryable).
"""

from __future__ import annotations

import io
from typing import Any, Literal, NamedTuple

from fastavro import schemaless_reader, schemaless_writer

from tracekit.avro.compat import backward_problems
from tracekit.avro.registry import SchemaNotFound, SchemaRegistryClient, subject_name
from tracekit.avro.schemas import SINGLE_OBJECT_MAGIC, RecordSchema, SchemaSet, default_schemas, record_schema
from tracekit.avro.validate import explain
from tracekit.errors import ConfigError, DecodeError, SchemaError

CONFLUENT_MAGIC = 0
SINGLE_OBJECT_HEADER_SIZE = 10
CONFLUENT_HEADER_SIZE = 5

Framing = Literal["single-object", "confluent"]


class _Reader(NamedTuple):
    name: str
    writer: Any
    reader: Any  # None when the writer schema is the current one


class AvroCodec:
    """Encode dicts to framed Avro messages and back. One instance per process is enough.

    Without a registry the codec is pure and thread-safe. With one (``registry_url`` or an
    injected ``registry`` client) it needs the ``topic`` to build subject names.
    """

    def __init__(
        self,
        registry_url: str | None = None,
        *,
        topic: str | None = None,
        registry: SchemaRegistryClient | None = None,
        schemas: SchemaSet | None = None,
        strict: bool = True,
    ) -> None:
        self.schemas = default_schemas() if schemas is None else schemas
        self._owns_registry = registry is None and bool(registry_url)
        if registry is None and registry_url:
            registry = SchemaRegistryClient(registry_url)
        if registry is not None and not topic:
            raise ConfigError("a schema registry needs the topic: subjects are named {topic}-{record}")
        self.registry = registry
        self.topic = topic
        self.strict = strict
        self._headers: dict[str, bytes] = {}
        self._by_fingerprint = {
            rec.fingerprint: _Reader(rec.full_name, rec.parsed, None) for rec in self.schemas.values()
        }
        self._by_id: dict[int, _Reader] = {}
        self._bad_ids: dict[int, str] = {}

    @property
    def framing(self) -> Framing:
        return "single-object" if self.registry is None else "confluent"

    def __enter__(self) -> AvroCodec:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_registry and self.registry is not None:
            self.registry.close()

    # -- encoding -----------------------------------------------------------------------------

    def schema_id(self, record_name: str) -> int:
        """The registry id of ``record_name``'s current schema, registering it if needed."""
        if self.registry is None or self.topic is None:
            raise ConfigError("no schema registry is configured")
        rec = self.schemas.record(record_name)
        schema_id = self.registry.register(subject_name(self.topic, rec.full_name), rec.schema_json)
        self._by_id.setdefault(schema_id, _Reader(rec.full_name, rec.parsed, None))
        return schema_id

    def register_all(self) -> dict[str, int]:
        """Register every known record (fail fast at start-up); returns ids by record name."""
        return {name: self.schema_id(name) for name in self.schemas}

    def _header(self, rec: RecordSchema) -> bytes:
        header = self._headers.get(rec.full_name)
        if header is None:
            if self.registry is None:
                header = rec.single_object_header
            else:
                header = bytes([CONFLUENT_MAGIC]) + self.schema_id(rec.full_name).to_bytes(4, "big")
            self._headers[rec.full_name] = header
        return header

    def encode(self, record_name: str, datum: dict[str, Any]) -> bytes:
        """Frame and encode ``datum`` as ``record_name`` (a full name such as ``trace.chain.Block``)."""
        rec = self.schemas.get(record_name)
        if rec is None:
            rec = self.schemas.record(record_name)  # raises SchemaError naming the known records
        out = io.BytesIO()
        out.write(self._header(rec))
        try:
            schemaless_writer(out, rec.parsed, datum, strict_allow_default=self.strict)
        except Exception as exc:
            detail = explain(rec.schema, datum) or f"{record_name}: {type(exc).__name__}: {exc}"
            raise SchemaError(f"cannot encode {detail}") from exc
        return out.getvalue()

    # -- decoding -----------------------------------------------------------------------------

    def decode(self, payload: bytes | bytearray | memoryview) -> tuple[str, dict[str, Any]]:
        """``(record full name, datum)`` of a message in either framing; :class:`DecodeError` if bad."""
        data = payload if isinstance(payload, bytes) else bytes(payload)
        size = len(data)
        if size == 0:
            raise DecodeError("empty message: no framing header")
        if data[0] == SINGLE_OBJECT_MAGIC[0] and data[1:2] in (SINGLE_OBJECT_MAGIC[1:], b""):
            if size < SINGLE_OBJECT_HEADER_SIZE:
                raise DecodeError(
                    f"truncated single-object header: {size} bytes, need {SINGLE_OBJECT_HEADER_SIZE}"
                )
            fp = int.from_bytes(data[2:SINGLE_OBJECT_HEADER_SIZE], "little")
            reader = self._by_fingerprint.get(fp)
            if reader is None:
                raise DecodeError(f"unknown schema fingerprint 0x{fp:016x} (single-object encoding)")
            return self._body(data, SINGLE_OBJECT_HEADER_SIZE, reader, "single-object")
        if data[0] == CONFLUENT_MAGIC:
            if size < CONFLUENT_HEADER_SIZE:
                raise DecodeError(f"truncated Confluent header: {size} bytes, need {CONFLUENT_HEADER_SIZE}")
            schema_id = int.from_bytes(data[1:CONFLUENT_HEADER_SIZE], "big")
            reader = self._by_id.get(schema_id) or self._resolve_id(schema_id)
            return self._body(data, CONFLUENT_HEADER_SIZE, reader, f"Confluent schema id {schema_id}")
        raise DecodeError(
            f"unknown magic byte(s) 0x{data[:2].hex()}: neither Avro single-object (0xc301) "
            "nor Confluent (0x00) framing"
        )

    @staticmethod
    def _body(data: bytes, offset: int, reader: _Reader, framing: str) -> tuple[str, dict[str, Any]]:
        size = len(data)
        if offset == size:
            raise DecodeError(f"truncated {reader.name} message ({framing}): header only, no body")
        fo = io.BytesIO(data)
        fo.seek(offset)
        try:
            datum = schemaless_reader(fo, reader.writer, reader.reader)
        except EOFError as exc:
            raise DecodeError(
                f"truncated {reader.name} body ({framing}): ran out of bytes after {size - offset}"
            ) from exc
        except Exception as exc:
            raise DecodeError(
                f"malformed {reader.name} body ({framing}): {type(exc).__name__}: {exc}"
            ) from exc
        end = fo.tell()
        if end != size:
            raise DecodeError(f"{size - end} trailing byte(s) after the {reader.name} body ({framing})")
        if not isinstance(datum, dict):
            raise DecodeError(f"{reader.name} body ({framing}) did not decode to a record")
        return reader.name, datum

    def _resolve_id(self, schema_id: int) -> _Reader:
        if schema_id in self._bad_ids:
            raise DecodeError(self._bad_ids[schema_id])
        if self.registry is None:
            raise DecodeError(
                f"unknown schema id {schema_id}: no schema registry is configured to look it up"
            )
        try:
            writer = record_schema(self.registry.get_schema(schema_id), f"schema id {schema_id}")
        except SchemaNotFound as exc:
            reason = f"unknown schema id {schema_id}: the registry does not know it"
            self._bad_ids[schema_id] = reason
            raise DecodeError(reason) from exc
        except SchemaError as exc:
            reason = f"schema id {schema_id} is unusable: {exc}"
            self._bad_ids[schema_id] = reason
            raise DecodeError(reason) from exc
        current = self.schemas.get(writer.full_name)
        if current is None:
            reason = f"schema id {schema_id} is record {writer.full_name}, which this codec does not know"
        elif writer.fingerprint == current.fingerprint:
            return self._by_id.setdefault(schema_id, _Reader(current.full_name, current.parsed, None))
        else:
            problems = backward_problems(current.schema, writer.schema)
            if not problems:
                reader = _Reader(current.full_name, writer.parsed, current.parsed)
                return self._by_id.setdefault(schema_id, reader)
            reason = (
                f"schema id {schema_id} ({writer.full_name}) cannot be read with the current schema: "
                + "; ".join(problems)
            )
        self._bad_ids[schema_id] = reason
        raise DecodeError(reason)
