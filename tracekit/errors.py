"""Trace's exception tree.

One root, :class:`TraceError`. Each subclass's docstring is its default message. Errors a retry
can cure derive from :class:`RetryableError`; the rest are permanent. Driver errors are mapped
at the adapter that meets them (``raise ... from exc``), so callers never match on text.
"""

from __future__ import annotations

from pydantic import ValidationError


class TraceError(Exception):
    """Trace failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class RetryableError(TraceError):
    """A transient failure; the same call may succeed later."""


class ConfigError(TraceError):
    """The configuration is invalid."""


class RpcError(TraceError):
    """The JSON-RPC endpoint returned an error."""


class RpcUnavailable(RetryableError):
    """The JSON-RPC endpoint cannot be reached."""


class BadRpcData(TraceError):
    """The JSON-RPC endpoint returned data that does not have the expected shape."""


class ChainMismatch(ConfigError):
    """The node serves a different chain id than configured."""


class SchemaError(TraceError):
    """An Avro schema is invalid or incompatible."""


class DecodeError(TraceError):
    """A message could not be decoded."""


class StackError(TraceError):
    """The local stack could not be started or inspected."""


class ObjectStoreError(TraceError):
    """The object store refused the request."""


class ObjectStoreUnavailable(RetryableError, ObjectStoreError):
    """The object store cannot be reached."""


class ObjectStoreUrlError(ConfigError, ObjectStoreError):
    """The object store URL is malformed: use s3://BUCKET[/PREFIX], file:///DIR or a directory path."""


class ObjectNotFound(ObjectStoreError):
    """No object has this key."""


class ObjectExists(ObjectStoreError):
    """An object with this key exists already."""


def first_problem(exc: ValidationError) -> tuple[str, str]:
    """``(where, what)`` of a pydantic validation error's first problem: the dotted location
    (``config.chunk_size``) and its message, for one-line errors."""
    first = exc.errors()[0]
    return ".".join(str(part) for part in first["loc"]), first["msg"]


class ContractError(ConfigError):
    """A dataset contract file is invalid."""


class ConformError(TraceError):
    """The rows do not fit the dataset's contract."""


class SchemaChangeError(TraceError):
    """The new dataset schema drops, renames or narrows a column: an incompatible change."""


class CatalogError(TraceError):
    """The dataset catalog refused the request."""


class CatalogUnavailable(RetryableError, CatalogError):
    """The dataset catalog (Postgres) cannot be reached."""


class CommitConflict(RetryableError, CatalogError):
    """Another writer committed to the table first; reload it and apply the change again."""
