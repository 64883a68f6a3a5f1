"""Deterministic alert ids.

``alert_id(rule_id, rule_version, event_key)`` is the lower-case hex sha256 of::

    b"trace-alert-id/v1\\n" + netstring(rule_id) + netstring(str(rule_version)) + netstring(event_key)

where ``netstring(s) = f"{len(b)}:".encode() + b + b","`` with ``b = s.encode("utf-8")``. Every
part is length-prefixed, so no choice of ids or keys can make two different triples hash the same
input (``("a:b", 1, "c")`` and ``("a", 1, "b:c")`` differ). The same triple always gives the same
id, so a redelivered event or a replayed batch never makes a second alert, and a retraction
names the alert it retracts by the same id.
"""

from __future__ import annotations

import hashlib

_PREFIX = b"trace-alert-id/v1\n"


def _netstring(text: str) -> bytes:
    data = text.encode("utf-8")
    return b"%d:%s," % (len(data), data)


def alert_id(rule_id: str, rule_version: int, event_key: str) -> str:
    """The id of the alert ``rule_id`` (of rule set ``rule_version``) fires on ``event_key``."""
    if isinstance(rule_version, bool) or not isinstance(rule_version, int):
        raise TypeError("rule_version must be an int")
    payload = _PREFIX + _netstring(rule_id) + _netstring(str(rule_version)) + _netstring(event_key)
    return hashlib.sha256(payload).hexdigest()
