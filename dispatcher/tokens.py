"""Short-lived per-task tokens for the worker endpoints (``/internal/*``).

A token names one attempt of one task and the datasets it may read and write; it is signed with
HMAC-SHA256 under the dispatcher's secret and expires after ``ttl``. The dispatcher still fences
every call against Postgres: a valid token of a stale attempt is refused all the same. Pure.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from tracekit.errors import TraceError


class InvalidToken(TraceError):
    """The task token is missing, malformed, forged or expired."""


@dataclass(frozen=True, slots=True)
class TaskClaims:
    task_id: uuid.UUID
    attempt: int
    org_id: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    expires_at: float  # unix seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(secret: bytes, *, task_id: uuid.UUID, attempt: int, org_id: str, reads: Sequence[str],
          writes: Sequence[str], now: float, ttl: float) -> str:
    body = orjson.dumps({"t": str(task_id), "a": attempt, "o": org_id, "r": list(reads), "w": list(writes),
                         "e": now + ttl})
    sig = hmac.new(secret, body, hashlib.sha256).digest()
    return f"tt1.{_b64(body)}.{_b64(sig)}"


def verify(secret: bytes, token: str, *, now: float) -> TaskClaims:
    try:
        version, body_b64, sig_b64 = token.split(".")
        body, sig = _unb64(body_b64), _unb64(sig_b64)
    except ValueError as exc:
        raise InvalidToken("task token is malformed") from exc
    if version != "tt1" or not hmac.compare_digest(sig, hmac.new(secret, body, hashlib.sha256).digest()):
        raise InvalidToken("task token signature does not match")
    try:
        raw = orjson.loads(body)
        claims = TaskClaims(uuid.UUID(raw["t"]), int(raw["a"]), str(raw["o"]), tuple(raw["r"]),
                            tuple(raw["w"]), float(raw["e"]))
    except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
        raise InvalidToken("task token claims are malformed") from exc
    if claims.expires_at <= now:
        raise InvalidToken("task token has expired")
    return claims
