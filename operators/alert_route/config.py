"""Route configuration: a YAML file (``TRACE_ALERT_ROUTES``) validated into frozen models.

Every problem is one :class:`tracekit.errors.ConfigError` line, ``file:line: where: what``. A
webhook URL that no ``allowlist`` prefix covers is rejected here, and re-checked before every call.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from tracekit.errors import ConfigError
from tracekit.yamlfile import YamlDoc, load_yaml, read_yaml

SEVERITIES = ("debug", "info", "low", "medium", "warning", "high", "error", "critical")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Match(_Frozen):
    """Which alerts a route takes: all of ``rule_ids`` (any when absent) at ``min_severity`` or above."""

    rule_ids: tuple[str, ...] | None = None
    min_severity: str | None = None

    @field_validator("min_severity")
    @classmethod
    def _known_severity(cls, value: str | None) -> str | None:
        if value is not None and value.lower() not in SEVERITIES:
            raise ValueError(f"unknown severity {value!r}; one of {', '.join(SEVERITIES)}")
        return None if value is None else value.lower()


class WebhookChannel(_Frozen):
    type: Literal["webhook"] = "webhook"
    url: str
    secret_env: str = Field(description="Name of the env var holding the HMAC-SHA256 key")
    timeout_s: float = Field(10.0, gt=0)
    max_attempts: int = Field(8, ge=1)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {value!r}")
        if parts.username or parts.password:
            raise ValueError(f"credentials in a webhook URL are not allowed: {value!r}")
        return value


class EmailChannel(_Frozen):
    type: Literal["email"] = "email"
    to: tuple[str, ...] = Field(min_length=1)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(25, gt=0, lt=65536)
    from_: str = Field(alias="from")
    timeout_s: float = Field(10.0, gt=0)
    max_attempts: int = Field(8, ge=1)


Channel = Annotated[WebhookChannel | EmailChannel, Field(discriminator="type")]


class Route(_Frozen):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    match: Match = Match()
    channel: Channel


class Retry(_Frozen):
    """Backoff before attempt n+1: ``min(cap_s, base_s * factor**(n-1))`` seconds, no jitter."""

    base_s: float = Field(1.0, gt=0)
    factor: float = Field(2.0, ge=1)
    cap_s: float = Field(300.0, gt=0)
    lease_grace_s: float = Field(
        5.0, ge=0, description="A claimed delivery is due again after timeout_s + this (crash recovery)"
    )


class RoutesConfig(_Frozen):
    allowlist: tuple[str, ...] = ()
    retry: Retry = Retry()
    routes: tuple[Route, ...] = Field(min_length=1)

    @field_validator("allowlist")
    @classmethod
    def _prefixes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for prefix in value:
            parts = urlsplit(prefix)
            if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
                raise ValueError(f"allowlist entry is not an http(s) URL prefix: {prefix!r}")
        return value

    @field_validator("routes")
    @classmethod
    def _unique_names(cls, value: tuple[Route, ...]) -> tuple[Route, ...]:
        seen: set[str] = set()
        for route in value:
            if route.name in seen:
                raise ValueError(f"duplicate route name {route.name!r}")
            seen.add(route.name)
        return value

    def route(self, name: str) -> Route | None:
        return next((r for r in self.routes if r.name == name), None)


def url_allowed(url: str, allowlist: tuple[str, ...] | list[str]) -> bool:
    """True when some prefix has ``url``'s scheme, host and port, and a path prefix of it.

    Paths match on segment boundaries: ``/hooks`` allows ``/hooks`` and ``/hooks/x``, not ``/hooksx``.
    """
    try:
        parts = urlsplit(url)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return False
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username or parts.password:
        return False
    for prefix in allowlist:
        allowed = urlsplit(prefix)
        try:
            allowed_port = allowed.port or _DEFAULT_PORTS.get(allowed.scheme)
        except ValueError:
            continue
        if (allowed.scheme, (allowed.hostname or "").lower(), allowed_port) != (
            parts.scheme, parts.hostname.lower(), port
        ):
            continue
        base = allowed.path or "/"
        path = parts.path or "/"
        if base.endswith("/"):
            if path.startswith(base) or path == base.rstrip("/"):
                return True
        elif path == base or path.startswith(base + "/"):
            return True
    return False


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_routes(text: str, source: str = "<routes>",
                 environ: dict[str, str] | None = None) -> tuple[RoutesConfig, dict[str, SecretStr]]:
    """``(config, webhook secrets by route name)`` from YAML text; :class:`ConfigError` if bad."""
    return _validate(load_yaml(text, source, scalars="yaml1.1"), environ)


def load_routes(path: str | Path, environ: dict[str, str] | None = None,
                ) -> tuple[RoutesConfig, dict[str, SecretStr]]:
    """Read and validate the routes file at ``path``."""
    return _validate(read_yaml(path, scalars="yaml1.1"), environ)


def _validate(doc: YamlDoc, environ: dict[str, str] | None) -> tuple[RoutesConfig, dict[str, SecretStr]]:
    env = dict(os.environ) if environ is None else environ
    source = doc.source

    def fail(loc: tuple[int | str, ...], msg: str) -> ConfigError:
        return ConfigError(f"{source}:{doc.value_line(loc)}: {_where(loc)}: {msg}")

    if not isinstance(doc.data, dict):
        raise ConfigError(f"{source}:1: the routes file must be a mapping with a `routes:` list")
    if doc.issues:
        issue = doc.issues[0]
        raise ConfigError(f"{source}:{issue.line}: {_where(issue.loc)}: {issue.message}")

    try:
        config = RoutesConfig.model_validate(doc.data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(p for p in first["loc"] if p not in ("webhook", "email"))
        msg = first["msg"].removeprefix("Value error, ")
        raise fail(loc, msg) from exc

    secrets: dict[str, SecretStr] = {}
    for i, route in enumerate(config.routes):
        channel = route.channel
        if isinstance(channel, WebhookChannel):
            if not url_allowed(channel.url, config.allowlist):
                raise fail(("routes", i, "channel", "url"),
                           f"webhook URL {channel.url} of route {route.name!r} is not on the allowlist")
            secret = env.get(channel.secret_env)
            if not secret:
                raise fail(("routes", i, "channel", "secret_env"),
                           f"env var {channel.secret_env} (the HMAC secret of route {route.name!r}) "
                           "is not set")
            secrets[route.name] = SecretStr(secret)
    return config, secrets

