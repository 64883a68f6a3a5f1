"""A minimal Confluent Schema Registry client (the two endpoints the codec needs), over httpx.

* ``register(subject, schema)``: ``POST /subjects/{subject}/versions`` -> schema id (idempotent on
  the registry side: the same schema under the same subject returns the existing id);
* ``get_schema(schema_id)``: ``GET /schemas/ids/{id}`` -> the writer schema.

Subjects follow the TopicRecordNameStrategy, ``{topic}-{record full name}``, so one topic carries
several record types. Results are cached per client; calls are rare (once per schema per
process), so the client is synchronous.

Errors: unreachable registry, HTTP 408/429/5xx -> :class:`RegistryUnavailable` (retryable);
unknown schema id -> :class:`SchemaNotFound`; 409 -> :class:`IncompatibleSchema`; 422 (invalid
schema) -> :class:`tracekit.errors.SchemaError`; 401/403 -> :class:`tracekit.errors.ConfigError`;
any other unexpected reply -> :class:`RegistryError`.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any

import httpx

from tracekit.errors import ConfigError, RetryableError, SchemaError, TraceError

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryError(TraceError):
    """The schema registry answered something unexpected."""


class RegistryUnavailable(RetryableError):
    """The schema registry cannot be reached."""


class SchemaNotFound(SchemaError):
    """The schema registry does not know this schema."""


class IncompatibleSchema(SchemaError):
    """The schema registry rejected the schema as incompatible with the subject's history."""


def subject_name(topic: str, record_full_name: str) -> str:
    """The TopicRecordNameStrategy subject: ``{topic}-{record full name}``."""
    return f"{topic}-{record_full_name}"


def _redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


class SchemaRegistryClient:
    """Register and fetch Avro schemas; ``with SchemaRegistryClient(url) as registry: ...``."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._label = _redact(self.url)
        self._http = httpx.Client(
            base_url=self.url,
            timeout=timeout,
            transport=transport,
            headers={"Accept": CONTENT_TYPE, "Content-Type": CONTENT_TYPE},
        )
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> SchemaRegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        what = f"schema registry {self._label}: {method} {path}"
        try:
            response = self._http.request(
                method, path, content=None if body is None else json.dumps(body).encode()
            )
        except httpx.TransportError as exc:
            raise RegistryUnavailable(f"{what} failed, the registry is unreachable: {exc!r}") from exc
        status = response.status_code
        if 200 <= status < 300:
            try:
                return response.json()
            except ValueError as exc:
                raise RegistryError(f"{what} returned invalid JSON") from exc
        detail = self._error_detail(response)
        if status in (408, 429) or status >= 500:
            raise RegistryUnavailable(f"{what} answered HTTP {status}: {detail}")
        if status in (401, 403):
            raise ConfigError(f"{what} refused the credentials (HTTP {status}): {detail}")
        if status == 404:
            raise SchemaNotFound(f"{what}: not found: {detail}")
        if status == 409:
            raise IncompatibleSchema(f"{what}: schema is incompatible: {detail}")
        if status == 422:
            raise SchemaError(f"{what}: schema rejected as invalid: {detail}")
        raise RegistryError(f"{what} answered HTTP {status}: {detail}")

    @staticmethod
    def _error_detail(response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            return response.text[:200] or "(empty body)"
        if isinstance(body, dict) and "message" in body:
            return f"{body.get('message')} (error_code {body.get('error_code')})"
        return str(body)[:200]

    def register(self, subject: str, schema: Mapping[str, Any] | str) -> int:
        """Register ``schema`` (a JSON value or its text) under ``subject``; return its global id."""
        text = schema if isinstance(schema, str) else json.dumps(schema, separators=(",", ":"))
        key = (subject, text)
        with self._lock:
            cached = self._ids.get(key)
        if cached is not None:
            return cached
        path = f"/subjects/{urllib.parse.quote(subject, safe='')}/versions"
        reply = self._request("POST", path, {"schema": text})
        schema_id = reply.get("id") if isinstance(reply, dict) else None
        if not isinstance(schema_id, int) or isinstance(schema_id, bool):
            raise RegistryError(
                f"schema registry {self._label}: POST {path} returned no integer id: {reply!r}"
            )
        with self._lock:
            self._ids[key] = schema_id
            self._schemas.setdefault(schema_id, json.loads(text))
        return schema_id

    def get_schema(self, schema_id: int) -> dict[str, Any]:
        """The schema registered under ``schema_id`` (parsed JSON); :class:`SchemaNotFound` if none."""
        with self._lock:
            cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        path = f"/schemas/ids/{int(schema_id)}"
        reply = self._request("GET", path)
        text = reply.get("schema") if isinstance(reply, dict) else None
        if not isinstance(text, str):
            raise RegistryError(f"schema registry {self._label}: GET {path} returned no schema: {reply!r}")
        schema_type = reply.get("schemaType", "AVRO")
        if schema_type != "AVRO":
            raise SchemaError(f"schema id {schema_id} is a {schema_type} schema, not Avro")
        if reply.get("references"):
            raise SchemaError(f"schema id {schema_id} uses schema references, which are not supported")
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RegistryError(f"schema id {schema_id}: the registry's schema is not JSON") from exc
        if not isinstance(schema, dict):
            raise SchemaError(f"schema id {schema_id} is not a record schema")
        with self._lock:
            self._schemas[schema_id] = schema
        return schema
