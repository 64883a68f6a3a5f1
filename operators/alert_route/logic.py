"""Pure delivery logic: ids, route matching, payloads, signatures, backoff, the next state.

No I/O here; :mod:`operators.alert_route.store` and :mod:`operators.alert_route.sender` do it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from operators.alert_route.config import SEVERITIES, Match, Retry, Route, RoutesConfig, WebhookChannel

Status = Literal["pending", "delivered", "dead"]
Outcome = Literal[
    "ok",            # 2xx / SMTP accepted
    "http_error",    # non-2xx HTTP status
    "timeout",       # no answer within timeout_s
    "refused",       # connection refused / unreachable
    "network_error", # other transport failure
    "smtp_error",    # SMTP transient (4xx) or transport failure
    "smtp_rejected", # SMTP permanent (5xx)
    "not_allowed",   # URL not on the allowlist (re-checked before every call)
    "no_route",      # the route is no longer configured
    "interrupted",   # the process stopped during the attempt (found on the next claim)
]
PERMANENT_OUTCOMES: frozenset[str] = frozenset({"smtp_rejected", "not_allowed", "no_route"})
RETRYABLE_4XX = frozenset({408, 429})


def delivery_id(alert_id: str, kind: str, route: str) -> str:
    """``sha256(alert_id \\0 kind \\0 route)`` hex: one delivery per alert, kind and route."""
    return hashlib.sha256(f"{alert_id}\0{kind}\0{route}".encode()).hexdigest()


def severity_rank(severity: str) -> int:
    """Position in :data:`SEVERITIES`; an unknown label ranks highest (never silently dropped)."""
    label = severity.lower()
    return SEVERITIES.index(label) if label in SEVERITIES else len(SEVERITIES)


def matches(match: Match, alert: Mapping[str, Any]) -> bool:
    if match.rule_ids is not None and alert["rule_id"] not in match.rule_ids:
        return False
    if match.min_severity is not None:
        return severity_rank(str(alert.get("severity", "info"))) >= severity_rank(match.min_severity)
    return True


def matching_routes(config: RoutesConfig, alert: Mapping[str, Any]) -> list[Route]:
    return [route for route in config.routes if matches(route.match, alert)]


def channel_target(route: Route) -> tuple[str, str]:
    """``(channel, target)`` recorded on the delivery row: the URL, or the comma-joined recipients."""
    if isinstance(route.channel, WebhookChannel):
        return "webhook", route.channel.url
    return "email", ",".join(route.channel.to)


def _kind(value: Any) -> str:
    return str(value)


def build_payload(alert: Mapping[str, Any], route: str, delivery: str) -> dict[str, Any]:
    """The JSON document sent for ``alert`` (an ALERT or a RETRACTION) on ``route``."""
    try:
        details: Any = json.loads(alert["details_json"])
    except (TypeError, ValueError):
        details = alert.get("details_json")
    return {
        "kind": _kind(alert["kind"]),
        "alert_id": alert["alert_id"],
        "delivery_id": delivery,
        "route": route,
        "rule": {"id": alert["rule_id"], "version": alert.get("rule_version")},
        "tier": alert.get("tier"),
        "severity": alert.get("severity", "info"),
        "summary": alert["summary"],
        "chain_id": alert["chain_id"],
        "block": {"number": alert["block_number"], "hash": alert["block_hash"]},
        "event": {"key": alert["event_key"], "type": alert["event_type"]},
        "details": details,
        "fired_at_ms": alert["fired_at_ms"],
        "observed_at_ms": alert.get("observed_at_ms", 0),
    }


def body_bytes(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes POSTed (and signed): compact JSON with sorted keys, UTF-8."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signature(secret: str | bytes, body: bytes) -> str:
    """``X-Trace-Signature`` value: ``sha256=<hex HMAC-SHA256 of the raw body>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, body: bytes, header: str) -> bool:
    return hmac.compare_digest(signature(secret, body), header)


def backoff_s(retry: Retry, attempt: int) -> float:
    """Delay after failed attempt number ``attempt`` (1-based): ``min(cap, base * factor**(n-1))``."""
    return float(min(retry.cap_s, retry.base_s * retry.factor ** max(0, attempt - 1)))


def email_subject(payload: Mapping[str, Any]) -> str:
    prefix = "[trace] RETRACTED: " if payload["kind"] == "RETRACTION" else "[trace] "
    return f"{prefix}{payload['severity']} {payload['rule']['id']}: {payload['summary']}"


@dataclass(frozen=True)
class Decision:
    status: Status
    retry_in_s: float | None = None  # when status is pending
    dead_letter: bool = False


def is_permanent(outcome: str, http_status: int | None) -> bool:
    if outcome in PERMANENT_OUTCOMES:
        return True
    return (outcome == "http_error" and http_status is not None and 400 <= http_status < 500
            and http_status not in RETRYABLE_4XX)


def decide(outcome: str, http_status: int | None, attempt: int, max_attempts: int, retry: Retry) -> Decision:
    """The delivery's next state after attempt number ``attempt`` ended with ``outcome``.

    ``ok`` (2xx) -> delivered; a permanent failure (4xx but 408/429, SMTP 5xx, not allowed, no route)
    -> dead at once; otherwise pending after :func:`backoff_s`, or dead once ``max_attempts`` are spent.
    """
    if outcome == "ok":
        return Decision("delivered")
    if is_permanent(outcome, http_status) or attempt >= max_attempts:
        return Decision("dead", dead_letter=True)
    return Decision("pending", retry_in_s=backoff_s(retry, attempt))


def classify_http(status: int) -> str:
    return "ok" if 200 <= status < 300 else "http_error"
