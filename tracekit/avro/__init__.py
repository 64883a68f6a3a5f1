"""Trace's Avro wire contracts (``schemas/avro``) and their codec.

* :mod:`tracekit.avro.schemas`: load, expand, canonicalise and fingerprint the contracts;
* :mod:`tracekit.avro.wire`: :class:`AvroCodec`, single-object or Confluent framing;
* :mod:`tracekit.avro.registry`: a minimal Confluent Schema Registry client;
* :mod:`tracekit.avro.compat`: BACKWARD compatibility by the Avro schema resolution rules.
"""

from __future__ import annotations

from tracekit.avro.compat import backward_problems, is_backward_compatible
from tracekit.avro.registry import SchemaRegistryClient, subject_name
from tracekit.avro.schemas import (
    RecordSchema,
    SchemaSet,
    default_schemas,
    load_schemas,
)
from tracekit.avro.wire import AvroCodec
from tracekit.names import BLOCK, LOG, REORG, TRANSACTION

__all__ = [
    "BLOCK",
    "LOG",
    "REORG",
    "TRANSACTION",
    "AvroCodec",
    "RecordSchema",
    "SchemaRegistryClient",
    "SchemaSet",
    "backward_problems",
    "default_schemas",
    "is_backward_compatible",
    "load_schemas",
    "subject_name",
]
